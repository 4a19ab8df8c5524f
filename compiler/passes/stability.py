"""Stability rewrites: compositions that lose precision or overflow in floating point become the
primitive that computes the same function stably.

    log(softmax(x, axis))   →  log_softmax(x, axis)    log of an underflowed 0 is −inf
    log(sigmoid(x))         →  −softplus(−x)           σ(x) underflows to 0 for x ≲ −745
    log(1 − sigmoid(x))     →  −softplus(x)            1 − σ(x) rounds to 0 for x ≳ 37
    log(1 + exp(x))         →  softplus(x)             exp overflows for x ≳ 709
    log(1 + x), log(x + 1)  →  log1p(x)                1 + x rounds away x for |x| ≲ 1e-16
    log(exp(x))             →  x                       exp overflows for x ≳ 709
    log1p(exp(x))           →  softplus(x)             exp overflows for x ≳ 709
    log1p(−σ(x))            →  −softplus(x)            −σ(x) rounds to −1 for x ≳ 37
    log(pick(softmax(s), y))→  pick(log_softmax(s), y) the picked probability underflows to 0
    1 / (1 + exp(−x))       →  σ(x)                    the hand-written sigmoid: exp(−x)
                                                       overflows for x ≲ −709, and log(σ) needs
                                                       the σ node to be seen by the rules above

These rewrites are a canonicalization of the *forward* graph: `compiler.passes.canonicalize`
runs them before `grad` (and so before hvp, hessian, train_step, debug_nans and the checks)
builds any gate rule, so the gradient is the gradient of the stable form.  Rewriting after
differentiation would keep the loss finite while its gradient still divides by the underflowed
σ(x) (0/0 = nan).  log σ(−x) needs no rule of its own: it is −softplus(−(−x)).

Each identity holds exactly over the reals (tests prove them with SymPy); where the old form was
finite the values agree to rounding, and where it overflowed or underflowed the new form gives
the right finite value.  The intermediate (the softmax, the sigmoid) is left for other readers;
dead code elimination drops it when the log was its only one.
"""
from __future__ import annotations

from ..ir import Graph
from .simplify import fit, is_value, op_of
from .rewrite import Reader, Rewriter, Rewrites


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
    if src.op == "pick":
        probs = rw.node_of(src.inputs[0])
        if probs is not None and probs.op == "softmax" and \
                probs.attrs["axis"] in (1, probs.out.ndim - 1) and probs.out.ndim == 2:
            logp = rw.emit("log_softmax", [probs.inputs[0]], axis=probs.attrs["axis"])
            return rw.emit("pick", [logp, src.inputs[1]])
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


def _log1p_rule(rw, n, x):
    src = rw.node_of(x)
    if src is None:
        return None
    if src.op == "exp":
        return rw.emit("softplus", [src.inputs[0]])
    if src.op == "neg" and op_of(rw, src.inputs[0]) == "sigmoid":
        return rw.emit("neg", [rw.emit("softplus", [rw.node_of(src.inputs[0]).inputs[0]])])
    return None


def _sigmoid_by_hand(rw, n, num, den):
    """σ(x) when num / den is 1 / (1 + exp(−x)) (den = 1 + exp(−x) or exp(−x) + 1), σ(−x) when
    it is 1 / (1 + exp(x))."""
    if not is_value(rw, num, 1):
        return None
    e = _one_plus(rw, den)
    if e is None or op_of(rw, e) != "exp":
        return None
    arg = rw.node_of(e).inputs[0]
    if op_of(rw, arg) == "neg":
        return rw.emit("sigmoid", [rw.node_of(arg).inputs[0]])
    return rw.emit("sigmoid", [rw.emit("neg", [arg])])


_RULES = {"log": lambda rw, n: _log_rule(rw, n, rw.new(n.inputs[0])),
          "log1p": lambda rw, n: _log1p_rule(rw, n, rw.new(n.inputs[0])),
          "div": lambda rw, n: _sigmoid_by_hand(rw, n, rw.new(n.inputs[0]),
                                                rw.new(n.inputs[1]))}


def stability(graph: Graph) -> Graph:
    """The graph with each unstable log composition replaced by its stable primitive."""
    rw = Rewriter(graph)
    for n in graph.nodes:
        rw.current = n
        rule = _RULES.get(n.op)
        r = rule(rw, n) if rule is not None else None
        if r is not None:
            r = fit(rw, r, n)
        if r is None:
            rw.keep(n)
        else:
            rw.replace(n, r)
    return rw.finish()


def stability_idle(graph: Graph) -> bool:
    """Whether `stability(graph)` would copy the graph unchanged: no rule fires (nor builds a
    node) on the graph as it is."""
    r = Reader(graph)
    for n in graph.nodes:
        rule = _RULES.get(n.op)
        if rule is not None:
            r.current = n
            try:
                if rule(r, n) is not None:
                    return False
            except Rewrites:
                return False
    return True
