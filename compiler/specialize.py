"""`specialize(graph, N=64)`: a symbolic graph (compiler/shapes.py) made concrete, every
dimension name replaced by a size: the oracle the tests compile against, and what the checks
that need concrete shapes (SymPy, finite differences) run on."""
from __future__ import annotations

import numbers

from .ir import Graph, GradcError, Node, ShapeError, Value, verify
from .ops import OPS
from .shapes import DimError, bind_dims, dims_of, graph_dims, resolve_attrs, resolve_type


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
    new = Graph(graph.name)     # (no origin: retracing it would give the symbolic graph)
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


CHECK_SIZE = 3      # the size each dimension name gets in the checks (SymPy, finite differences)


def for_checks(graph: Graph) -> Graph:
    """`graph` itself, or, when it has dimension names, `graph` specialized to CHECK_SIZE
    for each: the checks evaluate on concrete arrays (the gate rules are the same for every
    N; `size` nodes count the N of the specialized graph)."""
    names = list(graph_dims(graph))
    return specialize(graph, {d: CHECK_SIZE for d in names}) if names else graph


_CHECKED = 64       # sets of sizes a graph remembers as fitting its shape rules


def call_dims(graph: Graph, args) -> dict:
    """The sizes of the dimension names in a call with `args` (the inputs' arrays, in order):
    `bind_dims` (inputs sharing a name agree), and, the first time a set of sizes occurs, the
    op rules at those sizes (what a concrete graph's trace would refuse, e.g. a max over
    N = 0 elements, is a ShapeError naming the sizes).  Cached on the graph."""
    axes = graph.__dict__.get("_dim_axes")
    if axes is None:             # (input position, axis, name) of every named axis
        axes = graph.__dict__["_dim_axes"] = [(k, ax, d) for k, v in enumerate(graph.inputs)
                                              for ax, d in enumerate(v.shape)
                                              if isinstance(d, str)]
    if not axes:
        return {}
    dims: dict = {}
    for k, ax, d in axes:
        n = args[k].shape[ax]
        if dims.setdefault(d, n) != n:
            return bind_dims(graph.inputs, args)      # raises the DimError naming both
    seen = graph.__dict__.setdefault("_sizes_fit", set())
    key = tuple(dims.items())    # (names in a fixed order: their first axes')
    if key not in seen:
        try:
            verify(specialize(graph, dims))
        except GradcError as e:
            sizes = ", ".join(f"{d} = {n}" for d, n in key)
            raise ShapeError(f"{graph.name}: with {sizes}: {e}") from None
        if len(seen) >= _CHECKED:
            seen.clear()
        seen.add(key)
    return dims
