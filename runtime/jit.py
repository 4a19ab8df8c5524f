"""The JIT: one LLVM execution engine per process, native target for the host CPU.

    compile_object(ir_text)   optimized object code (O3, loop and SLP vectorization)
    load(obj, symbol)         adds an object to the engine, checks its externals, returns the
                              entry's address
    assembly(ir_text)         the optimized module as assembly text (for `fn.asm`)

External symbols (BLAS, libm) are checked with `address_of_symbol` before code is loaded: an
unresolved symbol would otherwise bind to address 0 and crash at call time.
"""
from __future__ import annotations

import threading

from llvmlite import binding as llvm

from . import elf

_lock = threading.RLock()
_state: dict = {}
_loaded: dict = {}      # symbol -> address (an object is added once per process)



def _init() -> dict:
    with _lock:
        if not _state:
            llvm.initialize_native_target()
            llvm.initialize_native_asmprinter()
            from . import blas
            blas.bind()
            triple = llvm.get_process_triple()
            target = llvm.Target.from_triple(triple)
            cpu = llvm.get_host_cpu_name()
            features = llvm.get_host_cpu_features().flatten()
            tm = target.create_target_machine(cpu=cpu, features=features, opt=3,
                                              reloc="default", codemodel="jitdefault")
            backing = llvm.parse_assembly("")
            backing.triple = triple
            engine = llvm.create_mcjit_compiler(backing, tm)
            _state.update(tm=tm, engine=engine, triple=triple, cpu=cpu, features=features,
                          layout=str(tm.target_data))
        return _state


def target_key() -> str:
    """What object code depends on besides the IR: llvmlite/LLVM versions, CPU name, features."""
    import llvmlite
    s = _init()
    return (f"llvmlite {llvmlite.__version__}; llvm {'.'.join(map(str, llvm.llvm_version_info))}; "
            f"{s['triple']}; {s['cpu']}; {s['features']}")


def _optimized(ir_text: str):
    s = _init()
    mod = llvm.parse_assembly(ir_text)
    mod.triple = s["triple"]
    mod.data_layout = s["layout"]
    mod.verify()
    pto = llvm.create_pipeline_tuning_options(speed_level=3)
    pto.loop_vectorization = True
    pto.slp_vectorization = True
    pb = llvm.create_pass_builder(s["tm"], pto)
    pb.getModulePassManager().run(mod, pb)
    return mod


_LIBC = {"llvm.memset": "memset", "llvm.memcpy": "memcpy", "llvm.memmove": "memmove"}


def externals(mod) -> list:
    """Names of the functions the module declares but does not define (a memset/memcpy/memmove
    intrinsic becomes a libc call in code generation, so those count too)."""
    out = []
    for f in mod.functions:
        if not f.is_declaration:
            continue
        if not f.name.startswith("llvm."):
            out.append(f.name)
        for prefix, libc in _LIBC.items():
            if f.name.startswith(prefix) and libc not in out:
                out.append(libc)
    return out


def check_externals(names) -> None:
    _init()
    missing = [n for n in names if not llvm.address_of_symbol(n)]
    if missing:
        raise RuntimeError(f"native code needs symbols that the process does not provide: "
                           f"{', '.join(missing)}")


def compile_object(ir_text: str) -> tuple:
    """(object bytes, external symbol names) of the optimized module."""
    with _lock:
        mod = _optimized(ir_text)
        ext = externals(mod)
        check_externals(ext)
        return _state["tm"].emit_object(mod), ext


def checks_objects() -> bool:
    """Whether `check_object` can parse this host's objects (ELF); elsewhere the disk cache is
    not read, since an object that cannot be checked is not linked from disk."""
    return elf.host_machine(_init()["triple"]) is not None and not any(
        os_name in _state["triple"] for os_name in ("apple", "darwin", "windows", "msvc"))


def check_object(obj: bytes, symbol: str, ext) -> None:
    """Refuse (ObjectError, RuntimeError) an object the engine must not link: one whose
    structure is unsound (LLVM's loader would read out of bounds), that does not define
    `symbol` or defines anything but `symbol` and its `symbol_...` companions, or that needs a
    symbol the process does not provide."""
    defined, undefined = elf.symbols(obj, elf.host_machine(_init()["triple"]))
    if symbol not in defined:
        raise elf.ObjectError(f"object does not define {symbol!r}")
    other = [d for d in defined if d != symbol and not d.startswith(symbol + "_")]
    if other:
        raise elf.ObjectError(f"object for {symbol!r} also defines {', '.join(other[:3])}")
    check_externals(list(dict.fromkeys([*ext, *undefined])))


def load(obj: bytes, symbol: str, ext) -> int:
    """Add `obj` to the engine (once per symbol) after `check_object`, and return the address
    of `symbol`."""
    with _lock:
        if symbol in _loaded:
            return _loaded[symbol]
        engine = _init()["engine"]
        if checks_objects():
            check_object(obj, symbol, ext)
        else:
            check_externals(ext)
        engine.add_object_file(llvm.ObjectFileRef.from_data(obj))
        engine.finalize_object()
        addr = engine.get_function_address(symbol)
        if not addr:
            raise RuntimeError(f"native entry {symbol!r} not found after loading its object")
        _loaded[symbol] = addr
        return addr


def address(symbol: str) -> int:
    """The address of another function of an object already loaded by `load`."""
    with _lock:
        if symbol in _loaded:
            return _loaded[symbol]
        addr = _init()["engine"].get_function_address(symbol)
        if not addr:
            raise RuntimeError(f"native function {symbol!r} not found in the loaded code")
        _loaded[symbol] = addr
        return addr


def loaded(symbol: str) -> int | None:
    return _loaded.get(symbol)


def assembly(ir_text: str) -> str:
    """The optimized module as the host's assembly text."""
    with _lock:
        return _init()["tm"].emit_assembly(_optimized(ir_text))
