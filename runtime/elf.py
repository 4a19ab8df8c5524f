"""Structural check of a relocatable ELF object before the JIT links it.

    defined, undefined = elf.symbols(obj)     # ObjectError if `obj` is not a sound object

LLVM's object loader trusts its input: a truncated or garbage object given to the execution
engine reads and writes out of bounds (a SIGSEGV, not an exception).  So an object that comes
from the disk cache is parsed here first, in Python, and every offset the linker would follow
is checked against the object's size: the header, each section's extent, the symbol table
(names inside the string table, section indices in range, each defined symbol inside its
section) and each relocation (its symbol in range, its target bytes inside the section, and on
x86-64 its type one the JIT applies).  Only a relocatable object for the host's class,
byte order and machine passes.  The check is about soundness of structure, not intent: the
keyed hash of runtime/cache.py is what says who wrote the object.
"""
from __future__ import annotations

import struct
import sys
from dataclasses import dataclass


class ObjectError(ValueError):
    """An object file that the JIT must not be given (what is wrong is in the message)."""


# e_machine of the hosts LLVM's triple names (the first part of the triple)
_MACHINES = {"x86_64": 62, "i386": 3, "i686": 3, "aarch64": 183, "arm64": 183, "arm": 40,
             "powerpc64le": 21, "powerpc64": 21, "ppc64le": 21, "s390x": 22, "riscv64": 243}
# x86-64 relocation types the JIT's ELF linker applies, with the width each one writes
_X86_64_RELOCS = {1: 8, 2: 4, 4: 4, 9: 4, 10: 4, 11: 4, 24: 8, 41: 4, 42: 4}
_SHT_SYMTAB, _SHT_STRTAB, _SHT_RELA, _SHT_NOBITS, _SHT_REL = 2, 3, 4, 8, 9
_SHN_LORESERVE, _SHN_ABS, _SHN_COMMON, _SHN_XINDEX = 0xFF00, 0xFFF1, 0xFFF2, 0xFFFF


def host_machine(triple: str) -> int | None:
    return _MACHINES.get(triple.split("-", 1)[0])


def _c_string(table: bytes, offset: int, what: str) -> str:
    if offset >= len(table):
        raise ObjectError(f"{what}: name offset {offset} outside the string table")
    end = table.find(b"\0", offset)
    if end < 0:
        raise ObjectError(f"{what}: name not terminated inside the string table")
    return table[offset:end].decode("latin-1")


@dataclass(frozen=True)
class Section:
    name: str
    type: int
    flags: int
    offset: int
    size: int
    align: int


@dataclass(frozen=True)
class Symbol:
    name: str
    bind: int        # 0 local, 1 global, 2 weak
    kind: int        # st_type: 0 none, 1 object, 2 function, 3 section, 4 file
    section: int     # 0: undefined; >= 0xFF00: special (absolute, common)
    value: int


@dataclass(frozen=True)
class Object:
    """A checked relocatable object: its sections, its symbol table and, per section index,
    the relocations applied to it as (offset, type, symbol index, addend)."""
    machine: int
    sections: tuple
    symbols: tuple
    relocations: dict

    def section_data(self, obj: bytes, i: int) -> bytes:
        s = self.sections[i]
        return b"" if s.type in (0, _SHT_NOBITS) else obj[s.offset:s.offset + s.size]


def symbols(obj: bytes, machine: int | None = None) -> tuple:
    """(defined, undefined) global symbol names of the relocatable object `obj`, after checking
    its structure; `machine` is the host's e_machine (None: not checked)."""
    return global_names(parse(obj, machine))


def global_names(parsed: Object) -> tuple:
    """(defined, undefined) global or weak symbol names of a parsed object."""
    defined, undefined = [], []
    for s in parsed.symbols:
        if s.bind in (1, 2) and s.name:
            (undefined if s.section == 0 else defined).append(s.name)
    return defined, undefined


def parse(obj: bytes, machine: int | None = None) -> Object:
    """The sections, symbols and relocations of the relocatable object `obj`, after checking
    every offset the linker follows (ObjectError otherwise); `machine`: the host's e_machine
    (None: not checked)."""
    if len(obj) < 52 or obj[:4] != b"\x7fELF":
        raise ObjectError("not an ELF object")
    wide = {1: False, 2: True}.get(obj[4])
    order = {1: "<", 2: ">"}.get(obj[5])
    if wide is None or order is None or obj[6] != 1:
        raise ObjectError("bad ELF identification bytes")
    if wide != (sys.maxsize > 2**32) or order != ("<" if sys.byteorder == "little" else ">"):
        raise ObjectError("ELF class or byte order is not the host's")
    head = order + ("HHIQQQIHHHHHH" if wide else "HHIIIIIHHHHHH")
    if len(obj) < 16 + struct.calcsize(head):
        raise ObjectError("ELF header truncated")
    (e_type, e_machine, e_version, _, _, e_shoff, _, _, _, _, e_shentsize, e_shnum,
     e_shstrndx) = struct.unpack_from(head, obj, 16)
    if e_type != 1 or e_version != 1:
        raise ObjectError(f"not a relocatable ELF object (type {e_type})")
    if machine is not None and e_machine != machine:
        raise ObjectError(f"ELF machine {e_machine} is not the host's ({machine})")
    shdr = order + ("IIQQQQIIQQ" if wide else "IIIIIIIIII")
    if e_shentsize != struct.calcsize(shdr) or not 0 < e_shnum < _SHN_LORESERVE:
        raise ObjectError("bad section header size or count")
    if e_shoff + e_shnum * e_shentsize > len(obj) or e_shstrndx >= e_shnum:
        raise ObjectError("section headers outside the object")
    sections = []     # (type, offset, size, link, info, entsize)
    heads = []        # (name offset, flags, alignment)
    for i in range(e_shnum):
        (sh_name, sh_type, sh_flags, _, off, size, link, info, align, entsize) = \
            struct.unpack_from(shdr, obj, e_shoff + i * e_shentsize)
        if sh_type not in (0, _SHT_NOBITS) and off + size > len(obj):
            raise ObjectError(f"section {i} extends past the end of the object")
        sections.append((sh_type, off, size, link, info, entsize))
        heads.append((sh_name, sh_flags, align))

    def data(i: int) -> bytes:
        t, off, size = sections[i][:3]
        return b"" if t in (0, _SHT_NOBITS) else obj[off:off + size]

    sym = order + ("IBBHQQ" if wide else "IIIBBH")
    symsize = struct.calcsize(sym)
    tables = [i for i, s in enumerate(sections) if s[0] == _SHT_SYMTAB]
    if len(tables) != 1:
        raise ObjectError(f"{len(tables)} symbol tables (one expected)")
    st = sections[tables[0]]
    if st[5] != symsize or st[2] % symsize or not 0 <= st[3] < e_shnum \
            or sections[st[3]][0] != _SHT_STRTAB:
        raise ObjectError("malformed symbol table")
    names, table = data(st[3]), data(tables[0])
    syms, count = [], st[2] // symsize
    for j, fields in enumerate(struct.iter_unpack(sym, table)):
        st_name, st_info, st_shndx, st_value, st_size = (
            fields[0], fields[1], fields[3], fields[4], fields[5]) if wide else (
            fields[0], fields[3], fields[5], fields[1], fields[2])
        name = _c_string(names, st_name, f"symbol {j}") if st_name else ""
        if st_shndx == _SHN_XINDEX or (st_shndx >= e_shnum and st_shndx < _SHN_LORESERVE):
            raise ObjectError(f"symbol {name or j} names a section that does not exist")
        if 0 < st_shndx < e_shnum and sections[st_shndx][0] not in (0, _SHT_NOBITS) \
                and st_value + st_size > sections[st_shndx][2]:
            raise ObjectError(f"symbol {name or j} lies outside its section")
        syms.append(Symbol(name, st_info >> 4, st_info & 0xF, st_shndx, st_value))
    relocations = {}
    for i, (t, _, size, link, info, entsize) in enumerate(sections):
        if t not in (_SHT_REL, _SHT_RELA):
            continue
        rel = order + ({(True, _SHT_RELA): "QQq", (True, _SHT_REL): "QQ",
                        (False, _SHT_RELA): "IIi", (False, _SHT_REL): "II"}[wide, t])
        if entsize != struct.calcsize(rel) or size % entsize or link != tables[0] \
                or not 0 < info < e_shnum:
            raise ObjectError(f"malformed relocation section {i}")
        target = sections[info][2]
        applied = relocations.setdefault(info, [])
        for r in struct.iter_unpack(rel, data(i)):
            r_sym, r_type = (r[1] >> 32, r[1] & 0xFFFFFFFF) if wide else (r[1] >> 8, r[1] & 0xFF)
            width = 4
            if e_machine == 62:
                if r_type not in _X86_64_RELOCS:
                    raise ObjectError(f"relocation type {r_type} is not one the JIT applies")
                width = _X86_64_RELOCS[r_type]
            if r_sym >= count or r[0] + width > target:
                raise ObjectError(f"relocation in section {i} points outside the object")
            applied.append((r[0], r_type, r_sym, r[2] if t == _SHT_RELA else None))
    names = data(e_shstrndx)
    named = tuple(Section(_c_string(names, h[0], f"section {i}") if t[0] else "", t[0], h[1],
                          t[1], t[2], h[2]) for i, (t, h) in enumerate(zip(sections, heads)))
    return Object(e_machine, named, tuple(syms), relocations)
