"""`specialize(graph, N=64)`: a symbolic graph (compiler/shapes.py) made concrete, every
dimension name replaced by a size: the oracle the tests compile against, and what the checks
that need concrete shapes (SymPy, finite differences) run on."""
from __future__ import annotations

import numbers

from .ir import Graph, Node, Value
from .ops import OPS
from .shapes import DimError, dims_of, graph_dims, resolve_attrs, resolve_type


def specialize(graph: Graph, dims: dict | None = None, **sizes) -> Graph:
    """A concrete copy of `graph`: every dimension name replaced by its size (`dims` or
    keywords: `specialize(g, N=64)`).  A name left without a size is a DimError."""
    dims = dict(dims or {}, **sizes)
    for d, n in dims.items():
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
            raise DimError(f"specialize: the size of {d!r} must be a non-negative int, got {n!r}")
    names = set(graph_dims(graph)) | {d for n in graph.nodes for d in dims_of(n.out.shape)}
    missing = sorted(names - set(dims))
    if missing:
        raise DimError(f"specialize: graph {graph.name!r} has dimension(s) "
                       f"{', '.join(missing)} without a size; give them, e.g. "
                       f"specialize(g, {missing[0]}=64)")
    new = Graph(graph.name, origin=graph.origin)
    env: dict = {}
    for v in graph.inputs:
        env[v.name] = Value(v.name, resolve_type(v.type, dims))
        new.inputs.append(env[v.name])
    for n in graph.nodes:
        out = Value(n.out.name, resolve_type(n.out.type, dims))
        env[out.name] = out
        new.nodes.append(Node(n.op, tuple(env[v.name] for v in n.inputs),
                              dict(resolve_attrs(n.attrs, OPS[n.op].attrs, dims)), out, n.loc, n.rule,
                              n.of))
    new.outputs = {k: env[v.name] for k, v in graph.outputs.items()}
    return new
