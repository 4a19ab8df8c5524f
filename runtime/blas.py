"""BLAS for native code: the addresses of SciPy's Fortran `dgemm`/`sgemm` (LP64), bound to the
JIT's symbol table under gradc's own names so that emitted code calls them by name.

The addresses come from `scipy.linalg.cython_blas.__pyx_capi__` (PyCapsules), so emitted
objects never hold an absolute address: a cached object is relinked by name in each process.

Fortran convention: every argument by pointer; column-major.  A row-major C[M,N] = A[M,K]·B[K,N]
is the column-major Cᵀ = Bᵀ·Aᵀ, i.e. gemm('N', 'N', N, M, K, 1, B, N, A, K, 0, C, N); a
transposed operand flips its flag and its leading dimension.
"""
from __future__ import annotations

import ctypes

SYMBOLS = {"gradc_dgemm": "dgemm", "gradc_sgemm": "sgemm"}

_bound: dict = {}


def _capsule_address(capsule) -> int:
    get_name = ctypes.pythonapi.PyCapsule_GetName
    get_name.restype = ctypes.c_char_p
    get_name.argtypes = [ctypes.py_object]
    get_ptr = ctypes.pythonapi.PyCapsule_GetPointer
    get_ptr.restype = ctypes.c_void_p
    get_ptr.argtypes = [ctypes.py_object, ctypes.c_char_p]
    return get_ptr(capsule, get_name(capsule))


def addresses() -> dict:
    """{gradc symbol: address} of the BLAS routines (imported from SciPy on first use)."""
    if not _bound:
        try:
            from scipy.linalg import cython_blas
        except ImportError as e:  # pragma: no cover - scipy is a dependency
            raise ImportError("the LLVM backend calls BLAS through SciPy; install scipy>=1.9") from e
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
