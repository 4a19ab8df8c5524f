"""Passes: named pure functions `Graph -> Graph`, run as a list (the pipeline).

    optimize(graph)                       the default pipeline, repeated until nothing changes
    optimize(graph, passes=["dce"])       a chosen list (names or functions)
    optimize(graph, trace=True)           (graph, [(pass name, graph after it), ...])

No pass mutates its input: each builds a new graph (rewrite.py).  Every pass keeps the output
names, the provenance (loc, rule, of) of the nodes that survive, and the values the graph
computes (to rounding; the stability rewrites also fix overflow and underflow).

The default pipeline:
    stability       log(softmax) → log_softmax, log(σ) → −softplus(−x), log(1+x) → log1p ...
    share_softmax   a cross-entropy loss and its gradient share one log_softmax (losses.py)
    simplify        the rule table: x·1, x+0, −(−x), (Aᵀ)ᵀ, exp(log x) where valid, ...
    fold            constant folding (uniform results only)
    cse             common subexpression elimination
    transpose_fold  transpose feeding matmul → matmul flag (`X.T @ dscores`)
    dce             dead code elimination
The forward canonicalization (`canonicalize`: the stability rewrites) runs before `grad` builds
any gate rule, so every derivative gradc takes is the derivative of the stable form.

Fusion groups (fusion.py) and memory planning (memory.py) are analyses read by the emitters,
not rewrites: they annotate, never change, the graph.
"""
from __future__ import annotations

from collections.abc import Iterable

from ..gc_pause import paused
from ..ir import GradcError, Graph, verify
from .cse import cse, cse_idle
from .dce import dce, dce_idle
from .fold import fold, fold_idle
from .losses import share_softmax, share_softmax_idle
from .rewrite import Rewriter
from .simplify import simplify, simplify_idle
from .stability import stability, stability_idle
from .transpose import transpose_fold, transpose_fold_idle

PASSES = {"stability": stability, "share_softmax": share_softmax, "simplify": simplify,
          "fold": fold, "cse": cse, "transpose_fold": transpose_fold, "dce": dce}
DEFAULT_PIPELINE = ["stability", "share_softmax", "simplify", "fold", "cse", "transpose_fold",
                    "dce"]
CANONICAL_PIPELINE = ["stability"]
MAX_ROUNDS = 8
# pass -> idle(graph): True only when the pass would return a copy equal to `graph`, found
# without copying it (a deep model's second round changes nothing: it costs a walk, not a copy)
IDLE = {stability: stability_idle, share_softmax: share_softmax_idle, simplify: simplify_idle,
        fold: fold_idle, cse: cse_idle, transpose_fold: transpose_fold_idle, dce: dce_idle}


def _resolve(passes) -> list:
    if isinstance(passes, str) or not isinstance(passes, Iterable):
        raise GradcError(f"passes={passes!r} must be a list of pass names (e.g. ['cse', 'dce']), "
                         "[] for none, or None for the default pipeline")
    out = []
    for p in passes:
        if callable(p):
            out.append((getattr(p, "__name__", "pass"), p))
        elif p in PASSES:
            out.append((p, PASSES[p]))
        else:
            raise GradcError(f"unknown pass {p!r}; passes are {', '.join(PASSES)}")
    return out


def optimize(graph: Graph, passes=None, trace: bool = False, check: bool = False):
    """Run `passes` (default: DEFAULT_PIPELINE) over `graph`, repeating the list until a round
    changes nothing (at most MAX_ROUNDS rounds).  Returns the new graph, or with `trace=True`
    the pair (graph, [(pass name, graph after that pass), ...]).  `check=True` runs the
    verifier after every pass."""
    steps = _resolve(DEFAULT_PIPELINE if passes is None else passes)
    with paused():        # the copies are freed by reference counting (compiler/gc_pause.py)
        return _rounds(graph, steps, trace, check)


def _rounds(graph: Graph, steps: list, trace: bool, check: bool):
    history = []
    g = graph
    borrowed = False     # g is still `graph`, where a pass it skipped would have copied it
    for _ in range(MAX_ROUNDS):
        before = g
        for name, fn in steps:
            idle = IDLE.get(fn)
            # (a pass's copy has no parameter trees: a graph with trees is copied for real;
            # `trace` shows every pass's own graph)
            if not (trace or idle is None or g.input_trees or g.output_trees) and idle(g):
                borrowed = borrowed or g is graph
            else:
                if idle is None and borrowed and g is graph:
                    g = _copy(graph)          # the caller's pass gets a copy, as it did
                g = fn(g)
            if check:
                try:
                    verify(g)
                except GradcError as e:
                    raise GradcError(f"pass {name!r} broke the graph: {e}") from None
            if trace:
                history.append((name, g))
        if g == before or not steps:
            break
    if borrowed and g is graph:   # a new graph, as the skipped passes would have given
        g = _copy(graph)
    return (g, history) if trace else g


def _copy(graph: Graph) -> Graph:
    """A new graph equal to `graph` without parameter trees: what a pass that changes nothing
    returns."""
    rw = Rewriter(graph)
    for n in graph.nodes:
        rw.keep(n)
    return rw.finish()


def canonicalize(graph: Graph) -> Graph:
    """The forward graph that every derivative is taken of: `graph` with its unstable
    compositions replaced by their stable primitives (stability.py: log∘σ → −softplus(−x),
    log∘softmax → log_softmax, ...).  It computes the same function exactly over the reals, so
    the derivative is unchanged in meaning; in floating point the gate rules then never divide
    by an underflowed σ or softmax.  `grad` calls it first.  Every value keeps its name and no
    node is dropped (the intermediates a rewrite bypasses stay, dead, for dce to remove later),
    and a graph with nothing to rewrite is returned as it is."""
    idle = [IDLE.get(PASSES[p]) for p in CANONICAL_PIPELINE]
    if all(f is not None and f(graph) for f in idle) and not (
            graph.input_trees or graph.output_trees):
        return graph                 # (nothing to rewrite: no copy made to compare)
    out = optimize(graph, CANONICAL_PIPELINE)
    return graph if out == graph else out


__all__ = ["optimize", "canonicalize", "CANONICAL_PIPELINE", "PASSES", "DEFAULT_PIPELINE", "stability", "share_softmax", "simplify",
           "fold", "cse", "transpose_fold", "dce"]
