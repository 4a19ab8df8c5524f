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
    env = rw.env             # (rw.new(v) is env[v.name])
    for n in graph.nodes:
        rw.current = n
        ins = [env[v.name] for v in n.inputs]
        # repr keeps -0.0 apart from 0.0 (equal as floats, different constants); the type
        # as its (dtype, shape), which is what its equality compares
        t = n.out.type
        key = (n.op, tuple(map(id, ins)), _attrs_key(n.attrs), t.dtype, t.shape)
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
        t = n.out.type
        key = (n.op, tuple([v.name for v in n.inputs]), _attrs_key(n.attrs), t.dtype, t.shape)
        if key in seen:
            return False
        seen.add(key)
    return True
