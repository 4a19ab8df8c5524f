"""A compiled function backed by emitted NumPy source."""
from __future__ import annotations

import linecache

import numpy as np

from compiler.ir import NUMPY_DTYPE

from .checks import check_arguments


class NumpyKernel:
    """Call with keyword arrays; returns a dict of outputs.  `.source` is the generated module,
    `.ir` the graph's text form, `.graph` the graph it was compiled from.

    Outputs are fresh arrays owned by the caller (scalars come back as NumPy scalars)."""

    backend = "numpy"

    def __init__(self, graph, source: str, fname: str):
        self.graph = graph
        self.source = source
        self.ir = str(graph)
        filename = f"<gradc:{graph.name}:{id(self):x}>"
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
        namespace = {"__name__": f"gradc_generated_{graph.name}"}
        exec(compile(source, filename, "exec"), namespace)  # our own emitted code
        self._fn = namespace[namespace.get("__all__", [fname])[0]]   # the emitter may rename
        self._out_types = [(k, v.type) for k, v in graph.outputs.items()]
        self._copy_keys = _aliasing_outputs(graph)

    def __call__(self, **kwargs) -> dict:
        args = check_arguments(self.graph, kwargs)
        raw = self._fn(*args)
        out = {}
        for k, t in self._out_types:
            dt = np.dtype(NUMPY_DTYPE[t.dtype])
            val = raw[k]
            out[k] = dt.type(val) if t.shape == () else (
                np.array(val, dtype=dt) if k in self._copy_keys else np.asarray(val, dtype=dt))
        return out

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
