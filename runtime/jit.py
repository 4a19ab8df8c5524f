"""The JIT: LLVM execution engines (MCJIT), native target for the host CPU.

    compile_object(ir_text)   optimized object code (O3, loop and SLP vectorization)
    load(obj, symbol)         loads an object into an engine of its own, checks its externals,
                              returns its `Code` (`code.address(name)`, `code.function(...)`)
    assembly(ir_text)         the optimized module as assembly text (for `fn.asm`)

External symbols (BLAS, libm) are checked with `address_of_symbol` before code is loaded: an
unresolved symbol would otherwise bind to address 0 and crash at call time.

On x86-64 Linux an object is loaded by gradc's own loader (runtime/loader.py: map, relocate,
protect; no LLVM), so a warm cache hit in a new process never imports llvmlite.binding: the
target key is remembered in the cache under the host's identity (`host_identity`: the CPU's
identification and feature flags from /proc/cpuinfo, the llvmlite build), written by the first
process that asked LLVM.  An object the loader does not handle (`loader.Unsupported`), and
every object elsewhere or with GRADC_NATIVE_LOADER=0 (or no, off), goes to MCJIT as before.

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
import os
import sys
import threading
import weakref

from compiler.lazy import llvm_binding as llvm    # llvmlite loads when a kernel is built or loaded

from . import blas, cache, elf, llvm_opt, loader

_lock = threading.RLock()
_state: dict = {}
_loaded = weakref.WeakValueDictionary()     # symbol -> its Code, while anything holds it


def _reset_lock_in_child() -> None:
    """A child forked while another thread held `_lock` (it is held for a whole compile,
    seconds) inherited it held by a thread that does not exist there: its first compile or
    load waited forever.  The child gets a free lock (the compile worker's pipes are the
    parent's: llvm_opt.Worker starts the child its own)."""
    global _lock
    _lock = threading.RLock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_lock_in_child)


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
    """One loaded object and its engine (MCJIT) or image (runtime/loader.py); the engine is
    closed, the image unmapped, when the Code is garbage-collected, so anything that may call
    into the code must hold the Code: the functions made by `function` do.  `native`: loaded
    by gradc's loader."""

    def __init__(self, engine, symbol: str, image=None):
        self.symbol = symbol
        self._engine = engine
        self._image = image
        self.native = image is not None
        self._addresses: dict = {}
        if image is not None:
            weakref.finalize(self, image.close).atexit = False
        else:
            weakref.finalize(self, _close, engine).atexit = False   # at exit the process unmaps

    def address(self, name: str) -> int:
        """The address of function `name` of this object."""
        with _lock:
            addr = self._addresses.get(name) or (
                self._image.address(name) if self._image is not None
                else self._engine.get_function_address(name))
            if not addr:
                raise RuntimeError(f"native function {name!r} not found in the loaded code")
            self._addresses[name] = addr
            return addr

    def function(self, name: str, restype, *argtypes):
        """A ctypes function for `name` that keeps this Code (so the code) alive."""
        fn = ctypes.CFUNCTYPE(restype, *argtypes)(self.address(name))
        fn.code = self
        return fn


def _llvm_target_key() -> str:
    import llvmlite
    s = _init()
    return (f"llvmlite {llvmlite.__version__}; llvm {'.'.join(map(str, llvm.llvm_version_info))}; "
            f"{s['triple']}; {s['cpu']}; {s['features']}")


# /proc/cpuinfo fields that decide LLVM's host CPU name and features (x86, then Arm): not the
# clock, core numbering or bug list
_CPU_FIELDS = ("vendor_id", "cpu family", "model", "model name", "stepping", "microcode",
               "flags", "CPU implementer", "CPU architecture", "CPU variant", "CPU part",
               "CPU revision", "Features")
_target: list = []


def host_identity() -> str | None:
    """What the target key follows from, read without LLVM: the first CPU's identification
    and feature flags (/proc/cpuinfo), the machine, and the llvmlite build (version, and its
    shared library's path, size and modification time); None where there is no /proc/cpuinfo."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        with open("/proc/cpuinfo", "rb") as f:
            text = b""
            while b"\n\n" not in text:
                chunk = f.read(8192)
                if not chunk:
                    break
                text += chunk
    except OSError:
        return None
    fields = {}
    for line in text.split(b"\n\n", 1)[0].decode("latin-1").splitlines():
        name, _, value = line.partition(":")
        if name.strip() in _CPU_FIELDS:
            fields[name.strip()] = value.strip()
    if not fields:
        return None
    import llvmlite                        # the package alone (its binding is not loaded)
    lib = os.path.join(os.path.dirname(llvmlite.__file__), "binding")
    try:
        libs = sorted(n for n in os.listdir(lib) if n.startswith("libllvmlite"))
        st = [os.stat(os.path.join(lib, n)) for n in libs]
    except OSError:
        return None
    return "; ".join([f"llvmlite {llvmlite.__version__}", os.uname().machine,
                      *(f"{n} {s.st_size} {s.st_mtime_ns}" for n, s in zip(libs, st)),
                      *(f"{k}={v}" for k, v in sorted(fields.items()))])


def target_memo_key() -> str | None:
    """The cache key under which this host's target key is remembered (None: no identity)."""
    ident = host_identity()
    return cache.key("; gradc target key of this host\n", ident) if ident else None


def target_key() -> str:
    """What object code depends on besides the IR: llvmlite/LLVM versions, CPU name, features.
    Asked of LLVM once per host identity; later processes read it from the cache."""
    if _target:
        return _target[0]
    k = target_memo_key()
    hit = cache.get(k) if k else None
    if hit is not None and not hit[1]:
        found = hit[0].decode("utf-8", "replace")
    else:
        found = _llvm_target_key()
        if k:
            cache.put(k, found.encode(), [])
    _target[:] = [found]
    return found


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


def _native() -> bool:
    return loader.supported_host() and os.environ.get(
        "GRADC_NATIVE_LOADER", "1").strip() not in ("0", "no", "off")


def _resolve(name: str) -> int:
    """An external's address for gradc's loader: a BLAS routine gradc binds, else the
    process's own symbol (libm, libc), else 0."""
    return blas.addresses().get(name) if name in blas.SYMBOLS else loader.process_symbol(name)


def checks_objects() -> bool:
    """Whether `check_object` can parse this host's objects (ELF); elsewhere the disk cache is
    not read, since an object that cannot be checked is not linked from disk."""
    if loader.supported_host():
        return True
    return elf.host_machine(_init()["triple"]) is not None and not any(
        os_name in _state["triple"] for os_name in ("apple", "darwin", "windows", "msvc"))


def check_object(obj: bytes, symbol: str, ext) -> None:
    """Refuse (ObjectError, RuntimeError) an object the engine must not link: one whose
    structure is unsound (LLVM's loader would read out of bounds), that does not define
    `symbol` or defines anything but `symbol` and its `symbol_...` companions, or that needs a
    symbol the process does not provide."""
    parsed = elf.parse(obj, elf.host_machine(_init()["triple"]))
    undefined = _check_defined(parsed, symbol)
    check_externals(list(dict.fromkeys([*ext, *undefined])))


def _check_defined(parsed, symbol: str) -> list:
    """The object's undefined names, after refusing one that does not define `symbol` or
    defines anything but `symbol` and its `symbol_...` companions."""
    defined, undefined = elf.global_names(parsed)
    if symbol not in defined:
        raise elf.ObjectError(f"object does not define {symbol!r}")
    other = [d for d in defined if d != symbol and not d.startswith(symbol + "_")]
    if other:
        raise elf.ObjectError(f"object for {symbol!r} also defines {', '.join(other[:3])}")
    return undefined


def load(obj: bytes, symbol: str, ext) -> Code:
    """Load `obj` (once per symbol while its Code lives) after `check_object` into an engine of
    its own, and return its Code."""
    with _lock:
        code = _loaded.get(symbol)
        if code is not None:
            return code
        if _native():
            parsed = elf.parse(obj, 62)
            _check_defined(parsed, symbol)
            try:
                image = loader.load(obj, parsed, _resolve)
            except loader.Unsupported:
                image = None               # MCJIT links it (below)
            if image is not None:
                code = Code(None, symbol, image)
                if not image.address(symbol):
                    raise RuntimeError(f"native entry {symbol!r} not found after loading it")
                _loaded[symbol] = code
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
