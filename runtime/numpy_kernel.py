"""A compiled function backed by emitted NumPy source."""
from __future__ import annotations

import linecache

import numpy as np

from compiler.ir import NUMPY_DTYPE

from .checks import check_arguments, check_labels


class NumpyKernel:
    """Call with keyword arrays; returns a dict of outputs.  `.source` is the generated module,
    `.ir` the graph's text form, `.graph` the graph it was compiled from.

    Outputs are fresh arrays owned by the caller (scalars come back as NumPy scalars).

    Memory-planned kernels (`plan` given: see compiler/passes/memory.py) write intermediates
    and outputs into buffers allocated on the first call and reused by every later call.
    They still return fresh copies by default; `fn(..., copy=False)` returns the buffers
    themselves (no copy; the next call overwrites them).  A planned kernel is not re-entrant:
    one call at a time per kernel object.  `memory_report()` gives the planned and unplanned
    byte counts."""

    backend = "numpy"
    check_finite = False     # compile(..., check_finite=True): NaN/inf inputs are refused

    def __init__(self, graph, source: str, fname: str, plan=None):
        self.graph = graph
        self.plan = plan
        self._buffers = None
        self.source = source
        self.ir = str(graph)
        filename = f"<gradc:{graph.name}:{id(self):x}>"
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
        namespace = {"__name__": f"gradc_generated_{graph.name}"}
        exec(compile(source, filename, "exec"), namespace)  # our own emitted code
        self._fn = namespace[namespace.get("__all__", [fname])[0]]   # the emitter may rename
        self._out_types = [(k, v.type) for k, v in graph.outputs.items()]
        self._copy_keys = _aliasing_outputs(graph)
        self._specs = [(v.name, np.dtype(NUMPY_DTYPE[v.dtype]), v.shape) for v in graph.inputs]
        self._out_specs = [(k, np.dtype(NUMPY_DTYPE[t.dtype]), t.shape == ())
                           for k, t in self._out_types]

    def _exact_arguments(self, kwargs: dict):
        """The arguments in order when each already is an ndarray of exactly the declared
        dtype and shape (the hot path of a training loop: what check_arguments would return
        unchanged); None sends the call through the full checks, which phrase the errors."""
        if len(kwargs) != len(self._specs):
            return None
        out = []
        for name, dt, shape in self._specs:
            a = kwargs.get(name)
            if type(a) is not np.ndarray or a.dtype != dt or a.shape != shape:
                if shape != () or type(a) is not dt.type:   # a NumPy scalar of the dtype
                    return None
            out.append(a)
        check_labels(self.graph, out)     # labels in [0, C) (NumPy would wrap -1 around)
        return out

    def __call__(self, **kwargs) -> dict:
        copy = True
        if "copy" in kwargs and not any(v.name == "copy" for v in self.graph.inputs):
            copy = bool(kwargs.pop("copy"))      # an input named `copy` keeps its name
        args = None if self.check_finite else self._exact_arguments(kwargs)
        if args is None:
            args = check_arguments(self.graph, kwargs, check_finite=self.check_finite)
        with np.errstate(all="ignore"):   # IEEE results (log 0 = -inf), as the LLVM backend
            if self.plan is None:
                raw = self._fn(*args)
            else:
                if self._buffers is None:
                    self._buffers = [np.empty(s, dtype=NUMPY_DTYPE[d])
                                     for d, s in self.plan.buffers]
                raw = self._fn(*args, _buf=self._buffers)
        fresh = self._copy_keys if (self.plan is None or not copy) else None
        out = {}
        for k, dt, scalar in self._out_specs:
            val = raw[k]
            out[k] = dt.type(val) if scalar else (
                np.array(val, dtype=dt) if fresh is None or k in fresh
                else np.asarray(val, dtype=dt))
        return out

    def memory_report(self) -> dict:
        """Bytes: allocated per call without planning, their peak while live, the planned
        buffers (allocated once) and what the planned code still allocates per call."""
        from compiler.passes.memory import plan_memory
        plan = self.plan if self.plan is not None else plan_memory(self.graph)
        return dict(plan.report(), planned=self.plan is not None)

    def __repr__(self) -> str:
        sig = ", ".join(f"{v.name}: {v.type}" for v in self.graph.inputs)
        return f"<gradc {self.backend} function {self.graph.name}({sig}) -> {list(self.graph.outputs)}>"


_VIEW_OPS = frozenset({"reshape", "transpose", "broadcast_to", "getitem"})


def _aliasing_outputs(graph) -> set:
    """Output keys whose array could alias a caller's input or another output (an input
    returned as is, a view op's result, a value returned under two names): copied on return,
    so outputs are always fresh arrays owned by the caller."""
    producers = graph.producers()
    inputs = {v.name for v in graph.inputs}
    seen, keys = set(), set()
    for k, v in graph.outputs.items():
        n = producers.get(v.name)
        if v.name in inputs or v.name in seen or (n is not None and n.op in _VIEW_OPS):
            keys.add(k)
        seen.add(v.name)
    return keys
