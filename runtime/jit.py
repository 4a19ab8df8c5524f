"""The JIT: LLVM execution engines (MCJIT), native target for the host CPU.

    compile_object(ir_text)   optimized object code (O3, loop and SLP vectorization)
    load(obj, symbol)         loads an object into an engine of its own, checks its externals,
                              returns its `Code` (`code.address(name)`, `code.function(...)`)
    assembly(ir_text)         the optimized module as assembly text (for `fn.asm`)

External symbols (BLAS, libm) are checked with `address_of_symbol` before code is loaded: an
unresolved symbol would otherwise bind to address 0 and crash at call time.

Lifetime: each object gets an engine of its own (~1 ms to create) so that its memory can be
given back: when the last reference to its `Code` goes (the kernels built on it, and the ctypes
functions `code.function` made, which hold it), a finalizer closes the engine, which unmaps the
object's code and data (one shared engine never frees an object).  An object is loaded once
while anything holds its Code: `loaded(symbol)` finds it.  The O3 pipeline runs in a worker
process (runtime/llvm_opt.py), since llvmlite's pass manager leaks memory on every run.
"""
from __future__ import annotations

import atexit
import ctypes
import threading
import weakref

from compiler.lazy import llvm_binding as llvm    # llvmlite loads when a kernel is built or loaded

from . import blas, elf, llvm_opt

_lock = threading.RLock()
_state: dict = {}
_loaded = weakref.WeakValueDictionary()     # symbol -> its Code, while anything holds it



def _init() -> dict:
    with _lock:
        if not _state:
            llvm.initialize_native_target()
            llvm.initialize_native_asmprinter()
            blas.bind()
            triple = llvm.get_process_triple()
            target = llvm.Target.from_triple(triple)
            cpu = llvm.get_host_cpu_name()
            features = llvm.get_host_cpu_features().flatten()
            tm = target.create_target_machine(cpu=cpu, features=features, opt=3,
                                              reloc="default", codemodel="jitdefault")
            backing = llvm.parse_assembly("")
            backing.triple = triple
            # never given code: creating an engine makes the process's own symbols (libm,
            # libc) resolvable, which check_externals relies on
            engine = llvm.create_mcjit_compiler(backing, tm)
            _state.update(tm=tm, engine=engine, triple=triple, cpu=cpu, features=features,
                          layout=str(tm.target_data))
        return _state


def _new_engine():
    """An empty MCJIT engine for one object (it owns its target machine and backing module)."""
    s = _init()
    tm = llvm.Target.from_triple(s["triple"]).create_target_machine(
        cpu=s["cpu"], features=s["features"], opt=3, reloc="default", codemodel="jitdefault")
    backing = llvm.parse_assembly("")
    backing.triple = s["triple"]
    return llvm.create_mcjit_compiler(backing, tm)


def _close(engine) -> None:
    with _lock:
        engine.close()


class Code:
    """One loaded object and its engine; the engine is closed (the code unmapped) when the Code
    is garbage-collected, so anything that may call into the code must hold the Code: the
    functions made by `function` do."""

    def __init__(self, engine, symbol: str):
        self.symbol = symbol
        self._engine = engine
        self._addresses: dict = {}
        weakref.finalize(self, _close, engine).atexit = False   # at exit the process unmaps

    def address(self, name: str) -> int:
        """The address of function `name` of this object."""
        with _lock:
            addr = self._addresses.get(name) or self._engine.get_function_address(name)
            if not addr:
                raise RuntimeError(f"native function {name!r} not found in the loaded code")
            self._addresses[name] = addr
            return addr

    def function(self, name: str, restype, *argtypes):
        """A ctypes function for `name` that keeps this Code (so the code) alive."""
        fn = ctypes.CFUNCTYPE(restype, *argtypes)(self.address(name))
        fn.code = self
        return fn


def target_key() -> str:
    """What object code depends on besides the IR: llvmlite/LLVM versions, CPU name, features."""
    import llvmlite
    s = _init()
    return (f"llvmlite {llvmlite.__version__}; llvm {'.'.join(map(str, llvm.llvm_version_info))}; "
            f"{s['triple']}; {s['cpu']}; {s['features']}")


def _optimized(ir_text: str):
    s = _init()
    return llvm_opt.optimized(ir_text, s["tm"], s["triple"], s["layout"])


externals = llvm_opt.externals


def check_externals(names) -> None:
    _init()
    missing = [n for n in names if not llvm.address_of_symbol(n)]
    if missing:
        raise RuntimeError(f"native code needs symbols that the process does not provide: "
                           f"{', '.join(missing)}")


def compile_object(ir_text: str) -> tuple:
    """(object bytes, external symbol names) of the optimized module, built by the compile
    worker (runtime/llvm_opt.py: llvmlite's pass manager leaks memory on every run), else
    in-process."""
    with _lock:
        s = _init()
        if "worker" not in s:
            s["worker"] = llvm_opt.Worker(s["triple"], s["cpu"], s["features"])
            atexit.register(s["worker"].close)
        built = s["worker"].compile(ir_text)
        if built is not None:
            check_externals(built[1])
            return built
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


def load(obj: bytes, symbol: str, ext) -> Code:
    """Load `obj` (once per symbol while its Code lives) after `check_object` into an engine of
    its own, and return its Code."""
    with _lock:
        code = _loaded.get(symbol)
        if code is not None:
            return code
        if checks_objects():
            check_object(obj, symbol, ext)
        else:
            check_externals(ext)
        engine = _new_engine()
        engine.add_object_file(llvm.ObjectFileRef.from_data(obj))
        engine.finalize_object()
        code = Code(engine, symbol)
        if not engine.get_function_address(symbol):
            raise RuntimeError(f"native entry {symbol!r} not found after loading its object")
        _loaded[symbol] = code
        return code


def loaded(symbol: str) -> Code | None:
    """The Code of `symbol` if it is loaded (and something still holds it), else None."""
    return _loaded.get(symbol)


def assembly(ir_text: str) -> str:
    """The optimized module as the host's assembly text."""
    with _lock:
        return _init()["tm"].emit_assembly(_optimized(ir_text))
