"""A compiled function of a symbolic graph (f64[N,784]: compiler/shapes.py) on the LLVM
backend: one callable for every N, which makes the kernel of the call's sizes the first time
they occur and keeps it.  Where every lowering takes run-time sizes (codegen/llvm_dims.py)
those kernels share ONE native function, which reads the sizes when it runs (each kernel is
then only its buffers and call state at those sizes); otherwise, and at a size of 0, each
set of sizes gets native code specialized to it.

    fn = compiler.compile(grad(g), backend="llvm")      # g has X: f64[N,784]
    fn(X=X64, ...); fn(X=X17, ...)                      # one native function, two call states
    fn.specializations                                  # 1 (2 with a slice: per size)

The arguments are checked against the symbolic graph first (shapes, dtypes, labels, and that
inputs sharing a dimension name agree: a DimError naming both), so every backend refuses the
same calls with the same errors.  Safe to call from any thread: the kernels are built under a
lock, each once, and each kernel is itself thread-safe.
"""
from __future__ import annotations

import threading

import numpy as np

from .shapes import bind_dims


class SizedKernel:
    """`build(dims) -> kernel` makes the kernel of one set of sizes (compiler/backends.py passes
    a function compiling the graph specialized to them); `graph` is the symbolic graph;
    `check(graph, kwargs, check_finite=...)` is the runtime's argument check
    (runtime/checks.py check_arguments, passed in: the runtime imports compiler)."""

    check_finite = False

    def __init__(self, graph, build, backend: str, check):
        self.graph = graph
        self.backend = backend
        self._check = check
        self._named = [(v.name, v.ndim, [(ax, d) for ax, d in enumerate(v.shape)
                                         if isinstance(d, str)])
                       for v in graph.inputs if v.type.symbolic]
        self.ir = str(graph)
        self._build = build
        self._kernels: dict = {}         # sorted (name, size) pairs -> kernel
        self._lock = threading.Lock()
        self._last = None

    @property
    def specializations(self) -> int:
        """How many native kernels were built: one for every set of sizes, or one for all of
        them where the kernel takes the sizes at run time (codegen/llvm_dims.py; its call
        states per set of sizes share the native code)."""
        return len({k.symbol for k in self._kernels.values()})

    @property
    def source(self) -> str:
        """The code of the kernel built last (its sizes are fixed), or the IR before a call."""
        return self._last.source if self._last is not None else self.ir

    def kernel_for(self, dims: dict):
        key = tuple(sorted(dims.items()))
        k = self._kernels.get(key)
        if k is None:
            with self._lock:
                k = self._kernels.get(key)
                if k is None:
                    k = self._build(dict(dims))
                    k.check_finite = self.check_finite
                    self._kernels[key] = k
        self._last = k
        return k

    def __call__(self, **kwargs) -> dict:
        k = self._known(kwargs)
        if k is not None:            # sizes seen before, read off the arrays: that kernel
            return k(**kwargs)       # (which checks its arguments as always)
        args = {k: v for k, v in kwargs.items() if k != "copy" or
                any(v.name == "copy" for v in self.graph.inputs)}
        checked = self._check(self.graph, args, check_finite=self.check_finite)
        dims = bind_dims(self.graph.inputs, checked)
        return self.kernel_for(dims)(**kwargs)

    def _known(self, kwargs):
        """The kernel already built for the sizes of ndarray arguments of the declared ranks
        (arguments that agree on every name), else None (the full checks then run)."""
        dims: dict = {}
        for name, rank, named in self._named:
            a = kwargs.get(name)
            if type(a) is not np.ndarray or a.ndim != rank:
                return None
            for ax, d in named:
                n = a.shape[ax]
                if dims.setdefault(d, n) != n:
                    return None
        return self._kernels.get(tuple(sorted(dims.items())))

    def bind(self, fixed: dict, donate=None):
        return None          # the caller calls the function as usual (compiler/train.py)

    def __repr__(self) -> str:
        sig = ", ".join(f"{v.name}: {v.type}" for v in self.graph.inputs)
        return (f"<gradc {self.backend} function {self.graph.name}({sig}) -> "
                f"{list(self.graph.outputs)}, {self.specializations} size(s) built>")
