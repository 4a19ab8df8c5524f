"""Second-order checks: gradc's Hessians and Hessian-vector products against SymPy and against
finite differences of the gradient.

`check_hessian_against_sympy(graph, wrt)` renders the forward output f with SymPy
(compiler/symbolic.render), lets SymPy form the Hessian (`sympy.hessian`, ∂²f/∂z_i∂z_j over the
elements z of every input in `wrt`), renders gradc's graphs too (compiler.hessian for each input:
the diagonal blocks; compiler.hvp over all of `wrt` with symbolic directions v: every block),
and compares them at random points away from kinks with 30-digit evaluation (compiler/mpeval),
plus each compiled backend in float64.  Away from kinks SymPy's DiracDelta terms (the second
derivative of Max, Abs, Heaviside) are 0.

`check_hessian_finite_differences(graph, wrt)` compares H·v from compiler.hvp with central
differences of the gradient along v:  (∇f(z + εv) − ∇f(z − εv)) / 2ε  →  H·v  as ε → 0.
"""
from __future__ import annotations

import time

import numpy as np
from .lazy import sympy as sp

from .autodiff import _pick_output, _wrt_list, grad, gradient_name
from .backends import BACKENDS, compile as compile_graph
from .check import (KINK_MARGIN, _sample, _simplifies_to_zero, as_float64, kinks, label_values,
                    renderable)
from .higher import hessian, hvp
from .held import holding
from .interpret import interpret
from .ir import Graph
from .report import CheckReport, GradientRow
from .symbolic import input_symbols, render


def _no_delta(expr):
    """DiracDelta(u) is 0 wherever u ≠ 0, which is every sampled point (kinks are avoided)."""
    return expr.replace(lambda e: isinstance(e, sp.DiracDelta), lambda e: sp.Integer(0)) \
        if expr.has(sp.DiracDelta) else expr


_REWRITES = (   # forms SymPy's derivatives take (sp.<name>), in terms compiler/mpeval evaluates
    # ITE(c, a, b) (boolean if-then-else, from Piecewise conditions) = (c ∧ a) ∨ (¬c ∧ b)
    ("ITE", lambda e: sp.Or(sp.And(e.args[0], e.args[1]), sp.And(sp.Not(e.args[0]), e.args[2]))),
    ("cosh", lambda e: (sp.exp(e.args[0]) + sp.exp(-e.args[0])) / 2),
    ("sinh", lambda e: (sp.exp(e.args[0]) - sp.exp(-e.args[0])) / 2),
)


def _evaluable(expr):
    """`expr` rewritten (same value) so that compiler/mpeval can evaluate it."""
    if not isinstance(expr, sp.Basic):
        return expr
    for name, fn in _REWRITES:
        kind = getattr(sp, name)
        if expr.has(kind):
            expr = expr.replace(lambda e, k=kind: isinstance(e, k), fn)
    return expr


def _deltas(exprs) -> list:
    return [d.args[0] for e in exprs for d in e.atoms(sp.DiracDelta)]


def check_hessian_against_sympy(graph: Graph, wrt=None, of=None, *, points: int = 2,
                                seed: int = 0, tol: float = 1e-9, time_budget: float = 5.0,
                                max_symbols: int = 40, backends=None) -> CheckReport:
    """Compare gradc's second derivatives of output `of` w.r.t. `wrt` with SymPy's Hessian.
    Rows: `hessian_<x>` (compiler.hessian, each input's block) and `hv_<x>` (compiler.hvp over
    all of `wrt`).  Models with more than `max_symbols` float input elements are checked on a
    reduced copy (as check_against_sympy does)."""
    started = time.perf_counter()
    notes = []
    graph = renderable(graph, max_symbols, notes, "check_hessian_against_sympy",
                       "check_hessian_finite_differences")
    wrt = _wrt_list(graph, wrt)
    of, target = _pick_output(graph, of)
    hv_graph = hvp(graph, wrt, of)
    blocks = {x: hessian(graph, x, of) for x in wrt}
    # SymPy renders the graphs as reverse mode builds them, before the selected-zero pass: a
    # guard where(G == 0, 0, d) differs from d only where G is exactly 0 and d is 0·inf, which
    # no sampled point meets, and SymPy folds the guards' nested conditions very slowly
    # (minutes for a 6-element Hessian).  The compiled backends run the guarded graphs.
    plain_hv = hvp(graph, wrt, of, guard=False)
    plain_blocks = {x: hessian(graph, x, of, guard=False) for x in wrt}
    rng = np.random.default_rng(seed)
    labels = label_values(graph, rng)
    syms = input_symbols(hv_graph)                     # the inputs, and the directions v_<x>
    fwd = render(graph, labels, syms)[target.name][()]
    zs = [s for x in wrt for s in syms[x].ravel()]
    vs = [s for x in wrt for s in syms["v_" + x].ravel()]
    full = sp.hessian(fwd, zs) if zs else sp.zeros(0, 0)
    delta_kinks = _deltas(list(full))       # where a DiracDelta term would not be 0
    full = full.applyfunc(_no_delta)

    rows, pairs = [], []          # pairs: (row, their expr, my expr), in evaluation order
    start = 0
    for x in wrt:
        n = syms[x].size
        plain = plain_blocks[x]
        mine = render(plain, labels, syms)[plain.outputs["hessian_" + x].name]
        row = GradientRow("hessian_" + x, mine.shape)
        theirs = full[start:start + n, start:start + n]
        for k, e in enumerate(mine.ravel()):
            pairs.append((row, theirs[k // n, k % n] if n else 0, e))
        rows.append(row)
        start += n
    plain = plain_hv
    hv_env = render(plain, labels, syms)
    hv_ref = full * sp.Matrix(vs) if zs else sp.zeros(0, 1)
    start = 0
    for x in wrt:
        n = syms[x].size
        mine = hv_env[plain.outputs["hv_" + x].name]
        row = GradientRow("hv_" + x, mine.shape)
        for k, e in enumerate(mine.ravel()):
            pairs.append((row, hv_ref[start + k], e))
        rows.append(row)
        start += n

    flat = [_evaluable(e) for e in
            [fwd] + [e for _, a, b in pairs for e in (sp.sympify(a), sp.sympify(b))]]
    kink_exprs = [_evaluable(e) for e in dict.fromkeys(kinks(flat) + delta_kinks)]
    samples, skipped = _sample(hv_graph, syms, rng, points, flat, kink_exprs, labels)
    if skipped:
        notes.append(f"sampled away from kinks: {skipped} candidate point(s) within "
                     f"{KINK_MARGIN} of a switch were skipped")
    compiled = _compiled([blocks[x] for x in wrt] + [hv_graph], backends, notes)
    for p, (point, vals) in enumerate(samples):
        where = {}
        for i, (row, a, b) in enumerate(pairs):
            k = where.setdefault(id(row), 0)
            where[id(row)] += 1
            ref, got = vals[1 + 2 * i], vals[2 + 2 * i]
            row.add_numeric(float(ref), float(got), tol, where=(p, k), exprs=(a, b),
                            err=float(got - ref))
        for name, fns in compiled.items():
            outs = {}
            for fn in fns:
                outs.update(fn(**{k: v for k, v in point.items() if k in fn.graph_inputs}))
            for row in rows:
                ref = [float(vals[1 + 2 * i]) for i, (r, _, _) in enumerate(pairs) if r is row]
                row.add_backend(name, np.ravel(outs[row.name]), ref)

    end = started + time_budget
    for row in rows:
        mine = [(a, b) for r, a, b in pairs if r is row]
        proven = sum(_simplifies_to_zero(sp.sympify(a) - sp.sympify(b),
                                         end - time.perf_counter()) is True for a, b in mine)
        row.symbolic = (proven, len(mine))
    report = CheckReport(f"check_hessian_against_sympy: {graph.name}, d²{of}/d({', '.join(wrt)})², "
                         f"{len(samples)} points", rows, notes, oracle="SymPy")
    report.seconds = time.perf_counter() - started
    return report


class _Fn:
    """A compiled graph with the names of its inputs (the point holds every graph's inputs)."""

    def __init__(self, fn, graph):
        self.fn, self.graph_inputs = fn, {v.name for v in graph.inputs}

    def __call__(self, **kw):
        return self.fn(**kw)


def _compiled(graphs, backends, notes) -> dict:
    out = {}
    for name in (BACKENDS if backends is None else backends):
        try:
            out[name] = [_Fn(compile_graph(g, backend=name), g) for g in graphs]
        except Exception as e:  # a backend that cannot compile these graphs is reported
            notes.append(f"backend {name} could not compile the second-order graphs: {e}")
    return out


def check_hessian_finite_differences(graph: Graph, wrt=None, of=None, *, eps: float = 1e-5,
                                     points: int = 2, directions: int = 3, seed: int = 0,
                                     tol: float = 1e-6, backend: str | None = None) -> CheckReport:
    """H·v (compiler.hvp over `wrt`, run by the reference interpreter or by `backend`) against
    central differences of the gradient, (∇f(z + εv) − ∇f(z − εv)) / 2ε, in float64, for
    random points z and random unit directions v."""
    started = time.perf_counter()
    graph = as_float64(graph)
    wrt = _wrt_list(graph, wrt)
    of, _ = _pick_output(graph, of)
    dg = grad(graph, wrt, of)
    hv_graph = hvp(graph, wrt, of)
    if backend is None:
        run = lambda pt: interpret(hv_graph, pt)   # noqa: E731
    else:
        fn = compile_graph(hv_graph, backend=backend)
        run = lambda pt: fn(**pt)                 # noqa: E731
    rng = np.random.default_rng(seed)
    rows = {x: GradientRow("hv_" + x, graph.input(x).shape) for x in wrt}
    for p in range(points):
        point = {v.name: rng.standard_normal(v.shape) for v in graph.inputs if v.type.is_float}
        point.update(label_values(graph, rng))
        at, held = holding(dg, point)        # stop_gradient's values: constants at the point
        for _ in range(directions):
            v = {x: rng.standard_normal(graph.input(x).shape) for x in wrt}
            norm = np.sqrt(sum(float(np.sum(a * a)) for a in v.values())) or 1.0
            v = {x: a / norm for x, a in v.items()}
            got = run(dict(point, **{"v_" + x: v[x] for x in wrt}))
            plus = interpret(at, dict(point, **held, **{x: point[x] + eps * v[x] for x in wrt}))
            minus = interpret(at, dict(point, **held, **{x: point[x] - eps * v[x] for x in wrt}))
            for x in wrt:
                key = gradient_name(graph.outputs, of, x)
                fd = (np.asarray(plus[key]) - np.asarray(minus[key])) / (2 * eps)
                for k, (a, b) in enumerate(zip(np.ravel(fd), np.ravel(got["hv_" + x]))):
                    rows[x].add_numeric(float(a), float(b), tol, where=(p, k))
    report = CheckReport(f"check_hessian_finite_differences: {graph.name}, H·v of {of} over "
                         f"({', '.join(wrt)}), {points} points × {directions} directions, "
                         f"eps={eps:g}" + (f", backend {backend}" if backend else ""),
                         list(rows.values()), [], oracle="central differences of the gradient")
    report.seconds = time.perf_counter() - started
    return report
