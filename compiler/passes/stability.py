"""Stability rewrites: compositions that lose precision or overflow in floating point become the
primitive that computes the same function stably.

    log(softmax(x, axis))   →  log_softmax(x, axis)    log of an underflowed 0 is −inf
    log(sigmoid(x))         →  −softplus(−x)           σ(x) underflows to 0 for x ≲ −745
    log(1 − sigmoid(x))     →  −softplus(x)            1 − σ(x) rounds to 0 for x ≳ 37
    log(1 + exp(x))         →  softplus(x)             exp overflows for x ≳ 709
    log(1 + x), log(x + 1)  →  log1p(x)                1 + x rounds away x for |x| ≲ 1e-16
    log(exp(x))             →  x                       exp overflows for x ≳ 709

Each identity holds exactly over the reals (tests prove them with SymPy); where the old form was
finite the values agree to rounding, and where it overflowed or underflowed the new form gives
the right finite value.  The intermediate (the softmax, the sigmoid) is left for other readers;
dead code elimination drops it when the log was its only one.
"""
from __future__ import annotations

from ..ir import Graph
from .simplify import fit, is_value, op_of
from .rewrite import Rewriter


def _one_plus(rw, v):
    """x when v = 1 + x or v = x + 1 with x of v's type (the constant may be broadcast)."""
    n = rw.node_of(v)
    if n is None or n.op != "add":
        return None
    a, b = n.inputs
    if is_value(rw, a, 1) and b.type == v.type:
        return b
    if is_value(rw, b, 1) and a.type == v.type:
        return a
    return None


def _one_minus(rw, v):
    n = rw.node_of(v)
    if n is not None and n.op == "sub" and is_value(rw, n.inputs[0], 1) \
            and n.inputs[1].type == v.type:
        return n.inputs[1]
    return None


def _log_rule(rw, n, x):
    src = rw.node_of(x)
    if src is None:
        return None
    if src.op == "softmax":
        return rw.emit("log_softmax", [src.inputs[0]], axis=src.attrs["axis"])
    if src.op == "sigmoid":
        return rw.emit("neg", [rw.emit("softplus", [rw.emit("neg", [src.inputs[0]])])])
    if src.op == "exp":
        return src.inputs[0]
    y = _one_minus(rw, x)
    if y is not None and op_of(rw, y) == "sigmoid":
        return rw.emit("neg", [rw.emit("softplus", [rw.node_of(y).inputs[0]])])
    y = _one_plus(rw, x)
    if y is not None and op_of(rw, y) == "exp":
        return rw.emit("softplus", [rw.node_of(y).inputs[0]])
    if y is not None:
        return rw.emit("log1p", [y])
    return None


def stability(graph: Graph) -> Graph:
    """The graph with each unstable log composition replaced by its stable primitive."""
    rw = Rewriter(graph)
    for n in graph.nodes:
        rw.current = n
        r = _log_rule(rw, n, rw.new(n.inputs[0])) if n.op == "log" else None
        if r is not None:
            r = fit(rw, r, n)
        if r is None:
            rw.keep(n)
        else:
            rw.replace(n, r)
    return rw.finish()
