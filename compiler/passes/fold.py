"""Constant folding: a node whose inputs are all constants is evaluated at compile time with its
op's reference rule (the interpreter's own, so the folded value is bit-for-bit what the
unfolded graph computes), when the result is uniform: the IR's `const` holds one scalar.

Large uniform results stay cheap: a folded value of more than `BIG` elements is written as
`broadcast_to(c, shape)` of a scalar constant (a read-only view, no allocation), never as a full
array built on every call.  Elementwise and shape ops are evaluated on one scalar (every element
of a uniform input gives the same element); other ops are evaluated in full only when small.
Non-uniform results (onehot of constant labels, say) are left alone.
"""
from __future__ import annotations

import numpy as np

from ..ir import NUMPY_DTYPE, Graph
from ..ops import OPS
from ..shapes import larger_than
from .rewrite import Reader, Rewriter

BIG = 1 << 12     # elements; above this a folded constant is a broadcast view of a scalar



def uniform_of(rw: Rewriter, v):
    """The scalar every element of `v` equals, when `v` is a constant or a broadcast view of
    one; else None."""
    n = rw.producer.get(v.name)          # (rw.node_of(v), without the call)
    if n is None:
        return None
    if OPS[n.op].literal:
        return n.attrs["value"]
    if n.op == "broadcast_to":
        return rw.const_of(n.inputs[0])
    return None


def _scalar(value, dtype):
    return np.asarray(value, dtype=NUMPY_DTYPE[dtype])


def evaluate(n, values):
    """The uniform value of old node `n` given its inputs' uniform values, or None."""
    rec = OPS[n.op]
    if rec.elementwise or rec.view:
        if rec.view:
            return values[0]
        r = np.asarray(OPS[n.op].eval(*(_scalar(c, v.dtype) for c, v in zip(values, n.inputs)),
                                        **n.attrs))
        return r.reshape(()).item()
    if any(t.symbolic for t in [n.out.type] + [v.type for v in n.inputs]) or \
            sum(v.type.size for v in n.inputs) + n.out.type.size > BIG:
        return None           # (a symbolic size is not folded: its N is known at run time)
    rule = OPS[n.op].label
    if rule is not None and not 0 <= values[rule(n)[0]] < rule(n)[1]:
        return None     # a constant label out of range: left to the LabelError of every backend
    arrays = [np.full(v.shape, c, dtype=NUMPY_DTYPE[v.dtype]) for c, v in zip(values, n.inputs)]
    with np.errstate(all="ignore"):
        r = np.asarray(OPS[n.op].eval(*arrays, **n.attrs))
    if r.size == 0:
        return None
    flat = r.reshape(-1)
    first = flat[0]
    same = np.all(flat == first) or (first != first and np.all(flat != flat))
    return first.item() if same else None


def _folded(rw, n):
    """The uniform value old node `n` folds to, or None when it is kept as it is."""
    if not n.inputs:          # a constant already
        return None
    values = []
    for v in n.inputs:                  # (most nodes stop at their first operand)
        c = uniform_of(rw, rw.new(v))
        if c is None:
            return None
        values.append(c)
    if n.op == "broadcast_to" and OPS[rw.node_of(rw.new(n.inputs[0])).op].literal \
            and not rw.new(n.inputs[0]).shape and larger_than(n.out.type, BIG):
        return None           # already the canonical form of a large constant
    with np.errstate(all="ignore"):
        return evaluate(n, values)


def fold(graph: Graph) -> Graph:
    """The graph with every all-constant node with a uniform result replaced by a constant."""
    rw = Rewriter(graph)
    for n in graph.nodes:
        rw.current = n
        value = _folded(rw, n)
        if value is None:
            rw.keep(n)
            continue
        t = n.out.type
        if larger_than(t, BIG):
            c = rw.const(value, t.dtype)
            rw.replace(n, rw.emit("broadcast_to", [c], shape=t.shape))
        else:
            rw.replace(n, rw.const(value, t.dtype, t.shape))
    return rw.finish()


def fold_idle(graph: Graph) -> bool:
    """Whether `fold(graph)` would copy the graph unchanged (no node folds)."""
    r = Reader(graph)
    return all(_folded(r, n) is None for n in graph.nodes)
