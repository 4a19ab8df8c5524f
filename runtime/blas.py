"""BLAS for native code: the addresses of SciPy's Fortran `dgemm`/`sgemm` (LP64), bound to the
JIT's symbol table under gradc's own names so that emitted code calls them by name.

The addresses come from SciPy's bundled OpenBLAS (`scipy.libs/libscipy_openblas*.so`, its
`scipy_dgemm_`/`scipy_sgemm_`: loading that library takes ~5 ms, importing scipy's extension
~25 ms or more), else from `scipy.linalg.cython_blas.__pyx_capi__` (PyCapsules that wrap the
same routines).  Emitted objects never hold an absolute address: a cached object is relinked by
name in each process.

Fortran convention: every argument by pointer; column-major.  A row-major C[M,N] = A[M,K]·B[K,N]
is the column-major Cᵀ = Bᵀ·Aᵀ, i.e. gemm('N', 'N', N, M, K, 1, B, N, A, K, 0, C, N); a
transposed operand flips its flag and its leading dimension.
"""
from __future__ import annotations

import ctypes

SYMBOLS = {"gradc_dgemm": "dgemm", "gradc_sgemm": "sgemm"}
# the width of Fortran INTEGER in these routines: SciPy's OpenBLAS is LP64 (not ILP64), so a
# dimension or leading dimension must be < 2**31 (the emitter refuses larger ones)
INT_BITS = 32

_bound: dict = {}


def _capsule_address(capsule) -> int:
    get_name = ctypes.pythonapi.PyCapsule_GetName
    get_name.restype = ctypes.c_char_p
    get_name.argtypes = [ctypes.py_object]
    get_ptr = ctypes.pythonapi.PyCapsule_GetPointer
    get_ptr.restype = ctypes.c_void_p
    get_ptr.argtypes = [ctypes.py_object, ctypes.c_char_p]
    return get_ptr(capsule, get_name(capsule))


def _cython_blas():
    """scipy.linalg.cython_blas, loaded on its own when possible: importing scipy.linalg
    costs ~0.3 s, the extension module alone a fraction of that."""
    import sys
    name = "scipy.linalg.cython_blas"
    if name in sys.modules:
        return sys.modules[name]
    try:
        import glob
        import importlib.machinery
        import importlib.util
        import os
        spec = importlib.util.find_spec("scipy")
        found = glob.glob(os.path.join(os.path.dirname(spec.origin), "linalg", "cython_blas.*"))
        found = [p for p in found if p.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))]
        loader = importlib.machinery.ExtensionFileLoader(name, found[0])
        mod = importlib.util.module_from_spec(
            importlib.util.spec_from_file_location(name, found[0], loader=loader))
        loader.exec_module(mod)
        sys.modules[name] = mod
        return mod
    except Exception:  # any layout surprise: the ordinary import
        pass
    try:
        from scipy.linalg import cython_blas
    except ImportError as e:  # pragma: no cover - scipy is a dependency
        raise ImportError("the LLVM backend calls BLAS through SciPy; install scipy>=1.9") from e
    return cython_blas


def _bundled_openblas() -> dict:
    """{gradc symbol: address} from the OpenBLAS library a SciPy wheel ships, or {}."""
    import importlib.util
    import os
    try:
        import glob
        spec = importlib.util.find_spec("scipy")
        root = os.path.dirname(os.path.dirname(spec.origin))
        found = sorted(glob.glob(os.path.join(root, "scipy.libs", "libscipy_openblas*.so*")))
        if len(found) != 1:          # none, or several and no way to tell which scipy uses
            return {}
        lib = ctypes.CDLL(found[0])
        out = {}
        for sym, fortran in SYMBOLS.items():
            addr = ctypes.cast(getattr(lib, f"scipy_{fortran}_"), ctypes.c_void_p).value
            if not addr:
                return {}
            out[sym] = addr
        return out
    except Exception:  # any layout surprise: scipy's own Cython interface
        return {}


def addresses() -> dict:
    """{gradc symbol: address} of the BLAS routines (loaded from SciPy on first use)."""
    if not _bound:
        _bound.update(_bundled_openblas())
    if not _bound:
        cython_blas = _cython_blas()
        for sym, fortran in SYMBOLS.items():
            addr = _capsule_address(cython_blas.__pyx_capi__[fortran])
            if not addr:
                raise RuntimeError(f"scipy.linalg.cython_blas.{fortran} has a null address")
            _bound[sym] = addr
    return dict(_bound)


def bind() -> None:
    """Register every BLAS symbol with LLVM's process-wide symbol table."""
    from llvmlite import binding as llvm
    for sym, addr in addresses().items():
        llvm.add_symbol(sym, addr)
