"""Sharing the softmax between a cross-entropy loss and its gradient.

The forward pass computes softmax_cross_entropy(s, y) through log-softmax; its gate rule builds
softmax(s) again for dscores.  A person writing the backward pass by hand computes the
probabilities once.  This pass does the same when both appear on the same scores:

    loss = softmax_cross_entropy(s, y)    →   logp = log_softmax(s, axis=1)
                                              loss = −mean(pick(logp, y))
    p = softmax(s, axis=1)                →   p = exp(logp)

Both identities are exact over the reals (−mean_i log softmax(s)_i,y_i is the definition of the
loss, and softmax = exp ∘ log_softmax); the values agree to rounding.  The two log_softmax nodes
the rewrite builds are merged by common subexpression elimination.  A loss without a softmax
of its scores elsewhere keeps its fused primitive.
"""
from __future__ import annotations

from ..ir import Graph
from .rewrite import Rewriter


def _shared(graph: Graph) -> set:
    """The scores that both a cross-entropy loss and a softmax (axis 1) read."""
    sce = {n.inputs[0].name for n in graph.nodes if n.op == "softmax_cross_entropy"}
    soft = {n.inputs[0].name for n in graph.nodes if n.op == "softmax" and n.attrs["axis"] == 1}
    return sce & soft


def share_softmax_idle(graph: Graph) -> bool:
    """Whether `share_softmax(graph)` would copy the graph unchanged (no shared scores)."""
    return not _shared(graph)


def share_softmax(graph: Graph) -> Graph:
    """The graph with each softmax of cross-entropy scores computed from the loss's
    log-softmax."""
    shared = _shared(graph)
    rw = Rewriter(graph)
    for n in graph.nodes:
        rw.current = n
        s = n.inputs[0].name if n.inputs else None
        if s not in shared or n.op not in ("softmax_cross_entropy", "softmax") or (
                n.op == "softmax" and n.attrs["axis"] != 1):
            rw.keep(n)
            continue
        scores = rw.new(n.inputs[0])
        logp = rw.emit("log_softmax", [scores], name=rw.namer.fresh("logp"), axis=1)
        if n.op == "softmax":
            rw.replace(n, rw.emit("exp", [logp]))
        else:
            picked = rw.emit("pick", [logp, rw.new(n.inputs[1])])
            mean = rw.emit("mean", [picked], axes=(0,), keepdims=False)
            rw.replace(n, rw.emit("neg", [mean]))
    return rw.finish()
