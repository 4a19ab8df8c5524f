"""A compiled function backed by native code: the whole graph is one LLVM function
`void f(void **buffers)` (compiler/codegen/llvm_emit.py), built through the process JIT
(runtime/jit.py) and the on-disk object cache (runtime/cache.py).

A call: check every argument (names, dtypes, shapes; runtime/checks.py) and every integer
label against its class count, all BEFORE native code runs; make inputs C-contiguous; write
their data pointers into the prepared pointer array (intermediate and output buffers are
allocated once, at compile time); one native call; copy the outputs out (so the caller owns
them and the next call cannot overwrite them).  A kernel is not re-entrant: one call at a time
per kernel object (a lock serializes calls from several threads).
"""
from __future__ import annotations

import ctypes
import threading

import numpy as np

from compiler.ir import NUMPY_DTYPE

from . import cache, jit
from .checks import _convert, check_arguments

PLACEHOLDER = "gradc_entry"


def _usable(flags) -> bool:
    return flags.c_contiguous and flags.aligned


class LLVMKernel:
    """Call with keyword arrays; returns a dict of outputs.  `.source` is the LLVM IR (value
    names from the model), `.asm` the optimized assembly, `.ir` the graph's text form,
    `.graph` the graph compiled, `.cached` whether the object code came from the disk cache
    (or was already loaded in this process)."""

    backend = "llvm"
    check_finite = False     # compile(..., check_finite=True): NaN/inf inputs are refused

    def __init__(self, graph, fname: str | None = None, fuse: bool = True):
        from compiler.codegen.llvm_emit import buffer_values, emit_llvm_plan
        from compiler.codegen.llvm_lower import LLVM_LOWERINGS
        self.graph = graph
        self.ir = str(graph)
        text, untouched = emit_llvm_plan(graph, PLACEHOLDER, fuse)
        self.key = cache.key(text, jit.target_key())
        safe = "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in (fname or graph.name))
        self.symbol = f"gradc_{safe}_{self.key[:16]}"
        self.source = text.replace(f'@"{PLACEHOLDER}"', f'@"{self.symbol}"')
        self.cached = False
        self.address = self._build()
        self._cfunc = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(self.address)
        values = buffer_values(graph)
        self._slot = {v.name: k for k, v in enumerate(values)}
        self._ptrs = (ctypes.c_void_p * max(1, len(values)))()
        self._ptrs_addr = ctypes.addressof(self._ptrs)
        self._buffers = {}
        n_in = len(graph.inputs)
        for k, v in enumerate(values[n_in:], start=n_in):
            shape = (0,) if v.name in untouched else v.shape     # never read nor written
            buf = np.empty(shape, dtype=NUMPY_DTYPE[v.dtype])
            self._buffers[v.name] = buf
            self._ptrs[k] = buf.ctypes.data
        self._in_slots = list(range(n_in))
        self._labels = []
        for n in graph.nodes:
            fn = getattr(LLVM_LOWERINGS[n.op], "labels", None)
            got = fn(n) if fn else None
            if got is not None and got[0].name in {v.name for v in graph.inputs}:
                self._labels.append((graph.inputs.index(got[0]), got[0].name, int(got[1]), n.op))
        self._names = {v.name for v in graph.inputs}
        self._specs = [(v.name, np.dtype(NUMPY_DTYPE[v.dtype]), v.shape, v.type)
                       for v in graph.inputs]
        self._last = [None] * n_in       # the arrays whose pointers are in the slots
        self._out_plan = []              # (name, own buffer or None, (scalar type, input slot))
        for k, v in graph.outputs.items():
            conv = np.dtype(NUMPY_DTYPE[v.dtype]).type if v.shape == () else None
            self._out_plan.append((k, self._buffers.get(v.name),
                                   (conv, self._slot[v.name] if v.name not in self._buffers
                                    else None)))
        self._lock = threading.Lock()
        self._asm = None

    def _build(self) -> int:
        addr = jit.loaded(self.symbol)
        if addr:
            self.cached = True
            return addr
        hit = cache.get(self.key)
        if hit is not None:
            try:
                addr = jit.load(hit[0], self.symbol, hit[1])
                self.cached = True
                return addr
            except Exception:  # an entry that does not load is rebuilt, not trusted
                pass
        obj, ext = jit.compile_object(self.source)
        cache.put(self.key, obj, ext)
        return jit.load(obj, self.symbol, ext)

    @property
    def asm(self) -> str:
        if self._asm is None:
            self._asm = jit.assembly(self.source)
        return self._asm

    def __call__(self, **kwargs) -> dict:
        """Run on keyword arrays; returns the outputs as fresh arrays, or with `copy=False` as
        views of the kernel's own buffers, which the next call overwrites."""
        copy = True
        if "copy" in kwargs and "copy" not in self._names:
            copy = bool(kwargs.pop("copy"))
        # fast path: every name present; arrays already of the declared dtype and shape,
        # C-contiguous and aligned are used as they are, anything else goes through the checks
        if len(kwargs) == len(self._specs) and not self.check_finite:
            args = []
            for name, dt, shape, t in self._specs:
                a = kwargs.get(name)
                if (type(a) is not np.ndarray or (a.dtype is not dt and a.dtype != dt)
                        or a.shape != shape or not _usable(a.flags)):
                    if a is None and name not in kwargs:
                        break
                    a = np.require(_convert(name, a, t), requirements=("C", "A"))
                args.append(a)
            else:
                return self._run(args, copy)
        args = check_arguments(self.graph, kwargs, check_finite=self.check_finite)
        return self._run([np.require(a, requirements=("C", "A")) for a in args], copy)

    def _run(self, args, copy: bool = True) -> dict:
        for k, name, depth, op in self._labels:
            lab = args[k]
            # one pass: as unsigned, a negative label is huge, so max() < depth checks both ends
            if lab.size and lab.view(np.uint64).max() >= depth:
                bad = lab[(lab < 0) | (lab >= depth)].ravel()[0]
                raise ValueError(f"argument {name!r}: label {int(bad)} is outside [0, {depth}) "
                                 f"(the {op} op has {depth} classes)")
        with self._lock:
            ptrs, last = self._ptrs, self._last
            for k, a in enumerate(args):
                if a is not last[k]:       # an array's data pointer is fixed for its lifetime
                    ptrs[k] = a.ctypes.data
                    last[k] = a
            self._cfunc(self._ptrs_addr)
            out = {}
            for key, src, scalar in self._out_plan:
                buf = src if src is not None else last[scalar[1]]
                out[key] = (scalar[0](buf[()]) if scalar[0] is not None
                            else buf.copy() if copy else buf)
        return out

    def __repr__(self) -> str:
        sig = ", ".join(f"{v.name}: {v.type}" for v in self.graph.inputs)
        return f"<gradc {self.backend} function {self.graph.name}({sig}) -> {list(self.graph.outputs)}>"
