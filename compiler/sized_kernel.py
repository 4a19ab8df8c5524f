"""A compiled function of a symbolic graph (f64[N,784]: compiler/shapes.py) on the LLVM
backend: one callable for every N, which makes the kernel of the call's sizes the first time
they occur and keeps the kernels of the `max_sizes` most recently used sets of sizes.  Where
every lowering takes run-time sizes (codegen/llvm_dims.py) those kernels share ONE native
function, which reads the sizes when it runs (each kernel is then only its buffers and call
states at those sizes); otherwise, and at a size of 0, each set of sizes gets native code
specialized to it.

    fn = compiler.compile(grad(g), backend="llvm")      # g has X: f64[N,784]
    fn(X=X64, ...); fn(X=X17, ...)                      # one native function, two call states
    fn.specializations                                  # 1 (per size where a lowering cannot take N)
    fn.max_sizes = 32                                   # keep 32 sets of sizes (default 8)

Bounded: a loop over variable-length batches (N = 1..5000) keeps at most `max_sizes` kernels
(MAX_SIZES, 8, unless set on the function, `fn.max_sizes`, also for one taking trees); the
least recently used one is dropped when a new set of sizes arrives, its buffers freed once no
thread is in a call of it (a call in progress holds it).  A set of sizes seen again after being
dropped is built again: cheap where the native function is shared (the kept kernels hold it
loaded, runtime/jit.py `loaded`: only the buffers are new), a load of its per-size object
(from the disk cache, runtime/cache.py) otherwise.

The arguments are checked against the symbolic graph first (shapes, dtypes, labels, and that
inputs sharing a dimension name agree: a DimError naming both), so every backend refuses the
same calls with the same errors.  Safe to call from any thread: the kernels are built under a
lock, each set of sizes once while it is kept, and each kernel is itself thread-safe.
"""
from __future__ import annotations

import os
import threading
import weakref
from collections import OrderedDict

import numpy as np

from .ir import GradcError
from .shapes import bind_dims

MAX_SIZES = 8     # sets of sizes whose kernels a function keeps (the most recently used)
_ALL: "weakref.WeakSet" = weakref.WeakSet()     # every SizedKernel, for the fork hook


def _fresh_locks_in_child() -> None:
    """A forked child's SizedKernels get new locks: `_lock` is held across a build, and a
    child forked while another thread built a size would wait for it forever."""
    for k in list(_ALL):
        k._lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_fresh_locks_in_child)


class SizedKernel:
    """`build(dims) -> kernel` makes the kernel of one set of sizes (compiler/backends.py passes
    a function compiling the graph specialized to them); `graph` is the symbolic graph;
    `check(graph, kwargs, check_finite=...)` is the runtime's argument check
    (runtime/checks.py check_arguments, passed in: the runtime imports compiler)."""

    check_finite = False

    def __init__(self, graph, build, backend: str, check, max_sizes: int | None = None):
        self.graph = graph
        self.backend = backend
        self._check = check
        self._named = [(v.name, v.ndim, [(ax, d) for ax, d in enumerate(v.shape)
                                         if isinstance(d, str)])
                       for v in graph.inputs if v.type.symbolic]
        self.ir = str(graph)
        self._build = build
        self._kernels: OrderedDict = OrderedDict()   # sorted (name, size) pairs -> kernel,
        self._lock = threading.Lock()                # least recently used first
        _ALL.add(self)
        self._known = self._known_function()
        self._last = None
        self._max = MAX_SIZES
        self.max_sizes = MAX_SIZES if max_sizes is None else max_sizes
        self.built = 0          # kernels made (rebuilds of dropped sets of sizes included)
        self.evicted = 0        # kernels dropped to keep `max_sizes`
        self._native = 0        # of the kernels made, those whose native code was new

    @property
    def max_sizes(self) -> int:
        """How many sets of sizes keep their kernel (the most recently used); setting it lower
        drops the least recently used ones now."""
        return self._max

    @max_sizes.setter
    def max_sizes(self, n) -> None:
        if type(n) is not int or n < 1:       # bool is not an int here
            raise GradcError(f"max_sizes={n!r}: expected an int >= 1 (how many sets of sizes "
                             f"keep their kernel; default {MAX_SIZES})")
        with self._lock:
            self._max = n
            self._trim()

    @property
    def specializations(self) -> int:
        """How many native kernels were built over this function's life: one for every set of
        sizes (counting again a set built again after being dropped), or one for all of them
        where the kernel takes the sizes at run time (codegen/llvm_dims.py; its kernels per
        set of sizes share the native code, which stays loaded while one is kept)."""
        return self._native

    @property
    def sizes(self) -> list:
        """The sets of sizes whose kernels are kept, least recently used first."""
        return [dict(key) for key in list(self._kernels)]

    @property
    def source(self) -> str:
        """The code of the kernel built last (its sizes are fixed), or the IR before a call."""
        return self._last.source if self._last is not None else self.ir

    def kernel_for(self, dims: dict):
        key = tuple(sorted(dims.items()))
        k = self._hit(key)
        if k is None:
            with self._lock:
                k = self._kernels.get(key)
                if k is None:
                    shared = {getattr(kept, "symbol", None) for kept in self._kernels.values()}
                    k = self._build(dict(dims))
                    k.check_finite = self.check_finite
                    self.built += 1
                    self._native += getattr(k, "symbol", None) not in shared
                    self._kernels[key] = k   # in before the oldest goes: the shared code stays
                    self._trim()             # loaded (the kept kernels hold it)
                else:
                    self._kernels.move_to_end(key)
        self._last = k
        return k

    def _hit(self, key):
        """The kept kernel of `key`, now the most recently used, or None."""
        k = self._kernels.get(key)
        if k is not None:
            try:
                self._kernels.move_to_end(key)
            except KeyError:      # dropped by another thread just now: the caller still has it
                pass
        return k

    def _trim(self) -> None:
        """Drop the least recently used kernels beyond `max_sizes` (under the lock).  A dropped
        kernel's call states and buffers are freed when the last reference goes (no cycles:
        runtime/llvm_kernel.py); a thread in a call of it holds it to the end of the call, and
        a `copy=False` output, a view of its buffers, keeps them."""
        while len(self._kernels) > self._max:
            self._kernels.popitem(last=False)
            self.evicted += 1

    def __call__(self, **kwargs) -> dict:
        k = self._known(kwargs)
        if k is not None:            # sizes seen before, read off the arrays: that kernel
            try:                     # (which checks its arguments as always)
                return k(**kwargs)
            except (TypeError, ValueError):
                self._arguments(kwargs)   # a bad argument: said with the symbolic types
                raise                     # (f64[N,3], not the kept kernel's f64[7,3])
        checked = self._arguments(kwargs)
        dims = bind_dims(self.graph.inputs, checked)
        return self.kernel_for(dims)(**kwargs)

    def _arguments(self, kwargs: dict) -> list:
        """The arguments checked against the symbolic graph (the error names N)."""
        args = {k: v for k, v in kwargs.items() if k != "copy" or
                any(v.name == "copy" for v in self.graph.inputs)}
        return self._check(self.graph, args, check_finite=self.check_finite)

    def _known_function(self):
        """`known(kwargs)`: the kernel kept for the sizes of ndarray arguments of the declared
        ranks (arguments that agree on every name), now the most recently used, else None
        (the full checks then run).  Straight-line Python made for this graph (the hot path
        of every call); input and dimension names are data in its namespace, never code."""
        code, first = ["def known(kw):"], {}
        for j, (_, rank, _) in enumerate(self._named):
            code += [f"    a{j} = kw.get(NAMES[{j}])",
                     f"    if type(a{j}) is not ndarray or a{j}.ndim != {int(rank)}:",
                     "        return None"]
        for j, (_, _, named) in enumerate(self._named):
            for ax, d in named:
                if d in first:
                    fj, fax = first[d]
                    code += [f"    if a{j}.shape[{int(ax)}] != a{fj}.shape[{int(fax)}]:",
                             "        return None"]
                else:
                    first[d] = (j, ax)
        dims = sorted(first)
        code += ["    key = (" + "".join(f"(DIMS[{i}], a{first[d][0]}.shape[{int(first[d][1])}]), "
                                       for i, d in enumerate(dims)) + ")",
                 "    k = kernels.get(key)",
                 "    if k is not None:",
                 "        try:",
                 "            kernels.move_to_end(key)",
                 "        except KeyError:   # dropped by another thread just now: still ours",
                 "            pass",
                 "    return k"]
        env = {"ndarray": np.ndarray, "NAMES": tuple(n for n, _, _ in self._named),
               "DIMS": tuple(dims), "kernels": self._kernels}
        exec(compile("\n".join(code), f"<gradc sizes of {self.graph.name!r}>", "exec"), env)
        return env["known"]

    def bind(self, fixed: dict, donate=None):
        return None          # the caller calls the function as usual (compiler/train.py)

    def __repr__(self) -> str:
        sig = ", ".join(f"{v.name}: {v.type}" for v in self.graph.inputs)
        return (f"<gradc {self.backend} function {self.graph.name}({sig}) -> "
                f"{list(self.graph.outputs)}, {self.specializations} size(s) built, "
                f"{len(self._kernels)} kept>")
