"""Common subexpression elimination: two nodes with the same op, the same inputs and the same
attrs compute the same value (every op is pure and deterministic), so the second is replaced by
the first.  Constants merge too: the many `0.0` and `1.0` scalars that gate rules build become
one node each.

The surviving node is the first one (it is defined before every use of either) and keeps its
name; the dropped node's name becomes an alias of it (an output under that name still exists).
"""
from __future__ import annotations

from ..ir import Graph, _freeze
from .rewrite import Rewriter


def cse(graph: Graph) -> Graph:
    """The graph with each repeated computation done once."""
    rw = Rewriter(graph)
    seen: dict = {}
    for n in graph.nodes:
        rw.current = n
        ins = [rw.new(v) for v in n.inputs]
        # repr keeps -0.0 apart from 0.0 (equal as floats, different constants)
        key = (n.op, tuple([id(v) for v in ins]), _attrs_key(n.attrs), n.out.type)
        if key in seen:
            rw.replace(n, seen[key])
        else:
            seen[key] = rw.keep(n)
    return rw.finish()


def _attrs_key(attrs: dict) -> str:
    return repr(_freeze(attrs)) if attrs else "()"     # (repr(_freeze({})) is "()")


def cse_idle(graph: Graph) -> bool:
    """Whether `cse(graph)` would copy the graph unchanged: no two nodes have one key.  (Of a
    copy, the new inputs are one value per name: comparing names is comparing them.)"""
    seen = set()
    for n in graph.nodes:
        key = (n.op, tuple([v.name for v in n.inputs]), _attrs_key(n.attrs), n.out.type)
        if key in seen:
            return False
        seen.add(key)
    return True
