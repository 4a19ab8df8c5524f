"""Dead code elimination: drop every node whose value no output needs.

A value is live when an output refers to it or a live node reads it; one backward walk over the
node list (reverse topological order) finds them all.  Every op is pure, so a node nobody reads
can go.  Graph inputs are kept even when unused: they are the function's signature.
"""
from __future__ import annotations

from ..ir import Graph
from .rewrite import Rewriter


def _live(graph: Graph) -> set:
    live = {v.name for v in graph.outputs.values()}
    for n in reversed(graph.nodes):
        if n.out.name in live:
            live.update([v.name for v in n.inputs])
    return live


def dce(graph: Graph) -> Graph:
    """The graph without the nodes no output depends on."""
    live = _live(graph)
    rw = Rewriter(graph)
    for n in graph.nodes:
        if n.out.name in live:
            rw.keep(n)
    return rw.finish()


def dce_idle(graph: Graph) -> bool:
    """Whether `dce(graph)` would copy the graph unchanged (every node is live)."""
    live = _live(graph)
    return all(n.out.name in live for n in graph.nodes)
