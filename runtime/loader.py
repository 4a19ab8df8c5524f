"""A loader for gradc's own object code on x86-64 Linux, without LLVM: what lets a warm cache
hit run in a new process without importing llvmlite.binding (~20 ms of a ~40 ms warm start).

    image = loader.load(obj, resolve)    # obj: checked by elf.parse; resolve(name) -> address
    image.address("gradc_f_...")         # a function's address; image.close() unmaps it

What it links is what gradc's code generator emits for LLVM's JIT code model on x86-64 (the
large model): sections `.ltext`/`.text` (code), `.rodata.*` (constant pools), possibly `.data`
and `.bss`, and relocations R_X86_64_64 (an absolute address), R_X86_64_PC32/PLT32 and PC64
(pc-relative, when the target is within reach).  Anything else (another relocation type, a
section kind it does not know, a TLS or COMMON symbol, an external the process does not
provide) raises `Unsupported`, and the caller loads the object with LLVM's MCJIT instead, so
the loader never guesses.  The object has passed `elf.parse` first: every offset it follows
lies inside the object.

Memory: one anonymous mapping, code pages first, then read-only data, then writable data,
each part page-aligned; it is written and relocated while read-write, then the code pages are
made read+execute and the constants read-only (never writable and executable at once).
"""
from __future__ import annotations

import ctypes
import mmap
import os
import struct
import sys

from . import elf

_SHT_PROGBITS, _SHT_NOBITS = 1, 8
_SHF_WRITE, _SHF_ALLOC, _SHF_EXEC, _SHF_TLS = 0x1, 0x2, 0x4, 0x400
# sections that hold no code or data the program reads (allocated or not)
_IGNORED = (".note.GNU-stack", ".llvm_addrsig", ".comment")
_R_64, _R_PC32, _R_PLT32, _R_PC64 = 1, 2, 4, 24
_PROT_READ, _PROT_WRITE, _PROT_EXEC = 1, 2, 4
_PAGE = mmap.PAGESIZE


class Unsupported(Exception):
    """This object needs something the loader does not do (the message says what): load it
    with MCJIT."""


def supported_host() -> bool:
    """x86-64 Linux, little-endian (where gradc's objects are ELF with the relocations above)."""
    return (sys.platform.startswith("linux") and os.uname().machine in ("x86_64", "amd64")
            and sys.byteorder == "little")


_libc = None


def _c():
    global _libc
    if _libc is None:
        lib = ctypes.CDLL(None, use_errno=True)
        lib.mmap.restype = ctypes.c_void_p
        lib.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                             ctypes.c_int, ctypes.c_long]
        lib.mprotect.restype = ctypes.c_int
        lib.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        lib.munmap.restype = ctypes.c_int
        lib.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        _libc = lib
    return _libc


def process_symbol(name: str) -> int:
    """The address of `name` in the process's global symbols (libc, libm, ...), else 0.
    By dlsym only (`CDLL[name]`): getattr would also find the CDLL's own attributes
    (`_handle`, `_func_flags_`: a bogus address to link against)."""
    try:
        return ctypes.cast(_c()[name], ctypes.c_void_p).value or 0
    except (AttributeError, ValueError):     # not defined; a name with a NUL byte
        return 0


def _up(n: int, align: int) -> int:
    return (n + align - 1) // align * align


class Image:
    """One loaded object: its mapping, and the address of each global symbol it defines."""

    def __init__(self, base: int, size: int, symbols: dict):
        self.base, self.size, self._symbols = base, size, symbols

    def address(self, name: str) -> int:
        return self._symbols.get(name, 0)

    def close(self) -> None:
        if self.base:
            _c().munmap(self.base, self.size)
            self.base = 0


def _layout(parsed: elf.Object) -> tuple:
    """({section index: offset in the mapping}, [(start, end, prot)] of the three parts,
    total size): code, then constants, then writable data, each part page-aligned."""
    parts = ([], [], [])
    for i, s in enumerate(parsed.sections):
        if not s.flags & _SHF_ALLOC or s.name in _IGNORED or s.size == 0:
            continue
        if s.flags & _SHF_TLS or s.type not in (_SHT_PROGBITS, _SHT_NOBITS):
            raise Unsupported(f"section {s.name!r} (type {s.type}, flags {s.flags:#x})")
        if s.align > _PAGE:
            raise Unsupported(f"section {s.name!r} aligned to {s.align} bytes")
        parts[0 if s.flags & _SHF_EXEC else 2 if s.flags & _SHF_WRITE else 1].append(i)
    place, ranges, at = {}, [], 0
    for part, prot in zip(parts, (_PROT_READ | _PROT_EXEC, _PROT_READ,
                                  _PROT_READ | _PROT_WRITE)):
        start = at
        for i in part:
            at = _up(at, max(1, parsed.sections[i].align))
            place[i] = at
            at += parsed.sections[i].size
        at = _up(at, _PAGE)
        if at > start:
            ranges.append((start, at, prot))
    return place, ranges, max(at, _PAGE)


def load(obj: bytes, parsed: elf.Object, resolve) -> Image:
    """Map, relocate and protect `obj` (already `elf.parse`d into `parsed`); `resolve(name)`
    gives an external's address (0: not provided).  Unsupported: use MCJIT."""
    if parsed.machine != 62:
        raise Unsupported(f"ELF machine {parsed.machine}")
    place, ranges, size = _layout(parsed)
    libc = _c()
    base = libc.mmap(None, size, _PROT_READ | _PROT_WRITE,
                     mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0)
    if base in (None, ctypes.c_void_p(-1).value):
        raise MemoryError(f"mmap of {size} bytes for native code failed "
                          f"(errno {ctypes.get_errno()})")
    image = Image(base, size, {})
    try:
        _fill(obj, parsed, place, base, resolve, image)
        for start, end, prot in ranges:
            if libc.mprotect(base + start, end - start, prot) != 0:
                raise Unsupported(f"mprotect failed (errno {ctypes.get_errno()}): the system "
                                  "refuses executable anonymous memory")
    except BaseException:
        image.close()
        raise
    return image


def _fill(obj: bytes, parsed: elf.Object, place: dict, base: int, resolve, image) -> None:
    """Copy the sections in, give every symbol its address, apply the relocations."""
    for i, at in place.items():
        s = parsed.sections[i]
        if s.type == _SHT_PROGBITS:
            ctypes.memmove(base + at, obj[s.offset:s.offset + s.size], s.size)
        # NOBITS: the anonymous mapping is already zero
    addrs = []
    for sym in parsed.symbols:
        if sym.kind == 6:                       # STT_TLS
            raise Unsupported(f"thread-local symbol {sym.name!r}")
        if sym.section == 0:
            addr = resolve(sym.name) if sym.name else 0
            if sym.name and not addr:
                raise Unsupported(f"external symbol {sym.name!r} not in the process")
        elif sym.section == 0xFFF1:            # SHN_ABS
            addr = sym.value
        elif sym.section >= 0xFF00:
            raise Unsupported(f"symbol {sym.name!r} in special section {sym.section:#x}")
        elif sym.section in place:
            addr = base + place[sym.section] + sym.value
        else:
            addr = None                         # in a section not loaded: refused if used
        addrs.append(addr)
        if sym.bind in (1, 2) and sym.name and sym.section != 0 and addr:
            image._symbols[sym.name] = addr
    for i, relocs in parsed.relocations.items():
        if i not in place:
            if parsed.sections[i].flags & _SHF_ALLOC and parsed.sections[i].name not in _IGNORED:
                raise Unsupported(f"relocations for section {parsed.sections[i].name!r}")
            continue                            # debug or unwind data: not loaded
        where = base + place[i]
        for offset, kind, k, addend in relocs:
            s = addrs[k]
            if s is None:
                raise Unsupported(f"relocation against an unloaded section ({kind})")
            if addend is None:
                raise Unsupported("REL relocations (no addend)")
            p = where + offset
            if kind == _R_64:
                struct.pack_into("<Q", (ctypes.c_char * 8).from_address(p), 0,
                                 (s + addend) & 0xFFFFFFFFFFFFFFFF)
            elif kind in (_R_PC32, _R_PLT32):
                v = s + addend - p
                if not -2**31 <= v < 2**31:
                    raise Unsupported(f"pc-relative relocation out of reach ({v:#x})")
                struct.pack_into("<i", (ctypes.c_char * 4).from_address(p), 0, v)
            elif kind == _R_PC64:
                struct.pack_into("<q", (ctypes.c_char * 8).from_address(p), 0, s + addend - p)
            else:
                raise Unsupported(f"relocation type {kind}")
