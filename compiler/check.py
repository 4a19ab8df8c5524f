"""Gradient checks as a user feature: against SymPy, and against finite differences.

`check_against_sympy(graph)` compares gradc's gradient with SymPy's derivative, within one time
budget that covers everything it does:
1. numerically, at random points with 30-digit evaluation (mpmath): gradc's gradient graph is
   evaluated node by node, and the reference is the chain rule over the forward graph with
   SymPy's derivative of each node's op (compiler/mpeval.ChainRule).  Nothing here builds the
   model's whole expression, so this part scales like the graph; it always runs to the end,
   and its time counts against the budget.  Each compiled backend is compared in float64 at
   the same points.
2. symbolically, with the time left: SymPy renders the whole forward output and gradc's
   gradient graph, and `simplify(sympy.diff(forward) − gradc)` per element (each element gets
   its share of the remaining time).  Past the budget the report says, per gradient, how many
   elements were proven, and why the rest were checked numerically only.
Points are sampled away from kinks (Max/Min ties, Heaviside/Piecewise/Abs/sign switches).
Models with more than `max_symbols` float input elements are too large to render: the 30-digit
comparison still runs on the model itself, along sampled directions against a 60-digit
directional derivative of the forward graph (compiler/check_large.py); nothing is claimed
proven there, and the symbolic proofs run, with the time left, on a reduced copy traced from
the same function with small dimensions (the report says so).  When a gradient disagrees, each gate rule on the path
is checked on its own against SymPy and the first one that disagrees is named.
"""
from __future__ import annotations

import time

from .lazy import mpmath
import numpy as np
from .lazy import sympy as sp

from .autodiff import _pick_output, _wrt_list, grad, gradient_name
from .backends import BACKENDS, compile as compile_graph
from .budget import _Budget, time_limit
from .builder import dsl_module
from .check_custom import check_custom_gates
from . import trees
from .check_large import _random_point, check_large, float_symbols
from .held import holding
from .interpret import interpret
from .ir import GradcError, Graph, TensorType
from .ops.labels import label_checks
from .report import BACKEND_TOL, CheckReport, GradientRow
from .mpeval import ChainRule, evaluate, number
from .singleop import gate_disagreement
from .specialize import for_checks
from .symbolic import input_symbols, render
from .text import parse_graph, print_graph

KINK_MARGIN = 1e-3


# ---- sampling ------------------------------------------------------------------------------
def label_values(graph: Graph, rng) -> dict:
    """Random integer inputs (bounded by the class count their consumers imply) and random
    bool inputs (dropout masks)."""
    bound = {}
    for n in graph.nodes:
        for k, v in enumerate(n.inputs):
            if v.dtype != "i64":
                continue
            if k == 1 and n.inputs[0].ndim == 2:
                bound[v.name] = n.inputs[0].shape[1]
    bound.update({c.value.name: c.classes for c in label_checks(graph)})   # labels, indices
    out = {v.name: rng.integers(0, bound.get(v.name, 2), size=v.shape)
           for v in graph.inputs if v.dtype == "i64"}
    out.update({v.name: rng.random(v.shape) < 0.5 for v in graph.inputs if v.dtype == "bool"})
    return out


def kinks(exprs) -> list:
    """Expressions whose sign switches a non-smooth function: a point is 'at a kink' when one
    of them is (nearly) zero."""
    found = []
    for e in exprs:
        for node in sp.preorder_traversal(e):
            if isinstance(node, (sp.Max, sp.Min)):
                a = node.args
                found += [a[i] - a[j] for i in range(len(a)) for j in range(i + 1, len(a))]
            elif isinstance(node, (sp.Heaviside, sp.Abs, sp.sign)):
                found.append(node.args[0])
            elif isinstance(node, sp.core.relational.Relational):
                diff = node.lhs - node.rhs
                # a comparison of a Max/Min/Piecewise against a constant can be flat (relu's
                # `out > 0` is false on a whole region): its switch is one of their kinks
                if not diff.has(sp.Max, sp.Min, sp.Piecewise, sp.Heaviside):
                    found.append(diff)
    return list(dict.fromkeys(found))


def _finite(vals) -> bool:
    return all(isinstance(v, mpmath.mpf) and mpmath.isfinite(v) for v in vals)


# ---- time budget ---------------------------------------------------------------------------
def _simplifies_to_zero(expr, seconds: float) -> bool | None:
    """True if SymPy proves expr == 0 within `seconds`; None when it ran out of time (or
    simplify did not reach 0)."""
    if expr == 0:
        return True
    if seconds <= 0:
        return None
    try:
        with time_limit(seconds):
            return bool(sp.simplify(expr) == 0) or None
    except _Budget:
        return None


# ---- reduced copies ------------------------------------------------------------------------
def reduced_copy(graph: Graph, limit: int):
    """Retrace the graph's source function with every dimension mapped to a small size (equal
    sizes stay equal, distinct sizes stay distinct).  Returns (graph, note) or (None, why)."""
    origin = getattr(graph, "origin", None)
    if origin is None:
        return None, "the graph has no source function to retrace with small dimensions"
    fn, specs, _defaults = origin
    types = {k: [t for _, t in trees.leaves(spec)] for k, spec in specs.items()}   # trees too
    sizes = sorted({d for ts in types.values() for t in ts for d in t.shape})
    mapping, nxt = {}, 2
    for d in sizes:
        if d <= 3:
            mapping[d] = d
            nxt = max(nxt, d + 1)
        else:
            mapping[d] = nxt
            nxt += 1
    small = {k: trees.rebuild(spec, iter(TensorType(t.dtype, tuple(mapping[d] for d in t.shape))
                                         for t in types[k])) for k, spec in specs.items()}
    try:
        # origin is set by dsl.trace: the DSL is loaded
        g = dsl_module("a reduced copy").trace(fn, name=graph.name, **small)   # defaults
        # (hyperparameters) apply again
    except Exception as e:
        return None, f"retracing with small dimensions failed ({type(e).__name__}: {e})"
    n = sum(v.type.size for v in g.inputs if v.type.is_float)
    if n > limit:
        return None, f"even the reduced copy has {n} float input elements"
    changed = ", ".join(f"{d}→{mapping[d]}" for d in sizes if mapping[d] != d)
    return g, f"checked on a reduced copy of the model (same code, dimensions {changed})"


def renderable(graph: Graph, max_symbols: int, notes: list, check: str, instead: str) -> Graph:
    """The graph in float64, or its reduced copy when it has more than `max_symbols` float
    input elements (a note says so); an error naming `instead` when it cannot be reduced."""
    nsym = sum(v.type.size for v in graph.inputs if v.type.is_float)
    if nsym > max_symbols:
        small, why = reduced_copy(graph, max_symbols)
        if small is None:
            raise GradcError(f"{check}: {graph.name} has {nsym} float input elements (limit "
                             f"{max_symbols}) and {why}; use {instead} for a model this size")
        graph = small
        notes.append(why)
    return as_float64(graph)


# ---- the check -----------------------------------------------------------------------------
def check_against_sympy(graph: Graph, wrt=None, of=None, *, points: int = 3, seed: int = 0,
                        tol: float = 1e-9, time_budget: float = 10.0, max_symbols: int = 150,
                        backends=None, localize: bool = True, progress=None) -> CheckReport:
    """Compare gradc's gradient of output `of` w.r.t. `wrt` with SymPy's derivative.

    `time_budget` (seconds) covers the whole check, counted from the start: the 30-digit
    comparison at `points` points and the backends' comparison always run to the end (their
    cost grows with the graph, never with the model's expression); localizing a disagreement
    and the symbolic proofs get the time left and stop when it runs out.  Past `max_symbols`
    float input elements, compiler/check_large.py compares along sampled directions instead
    (at least one per gradient; more while the budget lasts).
    `progress(line)` is called as the check goes (`gradc check` prints the lines to stderr)."""
    if not isinstance(time_budget, (int, float)) or not time_budget >= 0:
        raise ValueError(f"check_against_sympy: time_budget must be a number of seconds >= 0, "
                         f"got {time_budget!r}")
    graph = for_checks(graph)      # f64[N, 2]: checked at N = specialize.CHECK_SIZE
    started = time.perf_counter()

    def say(line: str) -> None:
        if progress is not None:
            progress(f"[{time.perf_counter() - started:5.1f} s] {line}")
    deadline = started + max(time_budget, 0.0) * 0.97   # the rest: writing the report
    notes = []
    if float_symbols(graph) > max_symbols:    # too large for SymPy: numbers over the DAG
        report = check_large(graph, wrt, of, points=points, seed=seed, tol=tol,
                             time_budget=time_budget, max_symbols=max_symbols,
                             backends=backends, localize=localize, say=say, started=started)
        report.custom_gates = check_custom_gates(graph, kinks, seed=seed)
        _expected(report.rows, report.notes, report.custom_gates,
                  "the directional derivatives differentiate")
        return report
    graph = renderable(graph, max_symbols, notes, "check_against_sympy",
                       "check_finite_differences")
    wrt = _wrt_list(graph, wrt)
    of, target = _pick_output(graph, of)
    dg = grad(graph, wrt, of)
    names = {x: gradient_name(graph.outputs, of, x) for x in wrt}
    rng = np.random.default_rng(seed)
    labels = label_values(graph, rng)
    say(f"check_against_sympy: {graph.name}: {len(graph.nodes)} forward nodes, "
        f"{len(dg.nodes)} gradient nodes, time budget {time_budget:g} s")
    rows = [GradientRow(names[x], graph.input(x).shape) for x in wrt]
    stages = {}
    custom = check_custom_gates(graph, kinks, seed=seed)   # each rule vs its forward's derivative
    compiled = _compiled(dg, backends, notes, say)
    stages["compile"] = time.perf_counter() - started
    done = _numeric(graph, dg, wrt, names, target, labels, rng, points, tol, rows, compiled,
                    notes, say)
    stages["numeric"] = time.perf_counter() - started - stages["compile"]
    if time.perf_counter() > deadline:
        notes.append(f"compiling and the 30-digit comparison took {sum(stages.values()):.1f} "
                     f"s, past the {time_budget:g} s time budget")
    report = CheckReport(f"check_against_sympy: {graph.name}, d{of}/d({', '.join(wrt)}), "
                         f"{done} points", rows, notes, oracle="SymPy")
    report.budget = time_budget
    report.custom_gates = custom
    if not report.ok:
        for r in rows:
            r.symbolic = (0, int(np.prod(r.shape)))
            r.why = "not attempted: the 30-digit comparison already disagrees"
        if localize:
            say("  localizing: checking each gate rule on its own")
            report.suspect = find_suspect(graph, seed, deadline)
            if report.suspect is None and time.perf_counter() > deadline:
                notes.append("no gate rule was named: the time budget ran out while "
                             "checking them one by one")
    elif any(c.differs for c in custom):       # SymPy's derivative of the forward is not
        for r in rows:                         # what the flagged rule computes, on purpose
            r.symbolic = (0, int(np.prod(r.shape)))
            r.why = ("not attempted: a custom gate's rule differs from the derivative of its "
                     "forward (flagged below), so the 30-digit comparison takes its rule as given")
    else:
        t = time.perf_counter()
        _symbolic(graph, dg, wrt, names, target, labels, rows, deadline, time_budget, say)
        stages["symbolic"] = time.perf_counter() - t
    report.stages = stages
    report.seconds = time.perf_counter() - started
    say(f"check_against_sympy: done in {report.seconds:.1f} s")
    return report


def _numeric(graph, dg, wrt, names, target, labels, rng, points, tol, rows, compiled,
             notes, say) -> int:
    """The 30-digit comparison at `points` random points away from kinks; returns how many
    points were compared.  It always runs to the end (its cost grows with the graph, and the
    check means nothing without it); its time counts against the budget."""
    chain = ChainRule(graph, target.name, wrt, switches=kinks)
    done = skipped = tries = 0
    while done < points and tries < 40 * points:
        tries += 1
        point = _random_point(graph, rng, tries)
        point.update(labels)
        try:
            value, ref, switches = chain.at(point)
        except (ZeroDivisionError, OverflowError, ArithmeticError):
            continue
        ref_ok = value is not None and _finite([value] + [e for x in wrt for e in ref[x].flat])
        if not ref_ok:
            continue
        if any(isinstance(z, mpmath.mpf) and 0 < abs(z) < KINK_MARGIN for z in switches):
            skipped += 1    # exactly 0 is a flat tie (relu's 0), the same in every precision
            continue
        env = render(dg, values=point, symbols={})
        with mpmath.workdps(30):
            for x, row in zip(wrt, rows):
                mine = env[dg.outputs[names[x]].name]
                for k, r in enumerate(ref[x].flat):
                    got = number(mine.flat[k])
                    bad = not isinstance(got, mpmath.mpf) or not mpmath.isfinite(got)
                    row.add_numeric(float(r), float("nan") if bad else float(got), tol,
                                    where=(done, k), err=float("inf") if bad else float(got - r))
                for name, fn in compiled.items():
                    row.add_backend(name, np.ravel(fn(**point)[names[x]]),
                                    [float(r) for r in ref[x].flat])
        done += 1
        say(f"  30-digit comparison: point {done}/{points} done")
    if not done:
        raise GradcError(f"check_against_sympy: found no point where {graph.name} and its "
                         "gradient are finite and away from kinks")
    if skipped:
        notes.append(f"sampled away from kinks: {skipped} candidate point(s) within "
                     f"{KINK_MARGIN} of a Max/Piecewise/Heaviside switch were skipped")
    return done


def _symbolic(graph, dg, wrt, names, target, labels, rows, deadline, budget, say) -> None:
    """Per element, simplify(SymPy's derivative − gradc's gradient) == 0, until `deadline`;
    each row's `symbolic` counts the proofs and `why` says what happened to the rest."""
    sizes = [int(np.prod(r.shape)) for r in rows]
    for r, n in zip(rows, sizes):
        r.symbolic = (0, n)
    if time.perf_counter() >= deadline:
        for r in rows:
            r.why = (f"not attempted: the {budget:g} s time budget was spent on the "
                     "30-digit comparison")
        return
    syms = input_symbols(graph)
    state = "SymPy rendered the forward graph"
    try:
        with time_limit(deadline - time.perf_counter()):
            say("  symbolic: rendering the forward graph in SymPy")
            fwd = render(graph, labels, syms, each=_every(say, "forward"))[target.name][()]
            state = "SymPy rendered the gradient graph"
            say("  symbolic: rendering the gradient graph in SymPy")
            mine = render(dg, labels, syms, each=_every(say, "gradient"))
    except _Budget:
        for r in rows:
            r.why = f"the {budget:g} s time budget ran out while {state}"
        say(f"  symbolic: stopped at the time budget while {state}")
        return
    pending = [(r, x, k) for r, x, n in zip(rows, wrt, sizes) for k in range(n)]
    timed_out, no_zero = {}, {}
    for j, (r, x, k) in enumerate(pending):
        left = deadline - time.perf_counter()
        if left <= 0:
            for r2, _, _ in pending[j:]:
                timed_out.setdefault(r2.name, [0, 0])[1] += 1
            break
        share = min(left, max(2 * left / (len(pending) - j), 1.0))   # easy ones leave theirs
        res = _prove(fwd, syms[x].flat[k], mine[dg.outputs[names[x]].name].flat[k], share)
        if res is True:
            r.symbolic = (r.symbolic[0] + 1, r.symbolic[1])
        elif res is None:
            timed_out.setdefault(r.name, [0, 0])[0] += 1
        else:
            no_zero[r.name] = no_zero.get(r.name, 0) + 1
        if k == 0 or res is not True:
            say(f"  symbolic: {r.name} {r.symbolic[0]}/{r.symbolic[1]} proven so far")
    for r in rows:
        why = []
        slow, unreached = timed_out.get(r.name, (0, 0))
        if slow:
            why.append(f"simplify did not reach 0 within the element's share of the "
                       f"{budget:g} s time budget")
        if unreached:
            why.append(f"the {budget:g} s time budget ran out before SymPy got to some")
        if no_zero.get(r.name):
            why.append("SymPy's simplify finished without showing the difference is 0")
        r.why = "; ".join(why) or None


def _prove(fwd, s, mine, seconds) -> bool | None:
    """True: SymPy proved ∂fwd/∂s − mine = 0; None: out of time; False: simplify finished
    without reaching 0."""
    try:
        with time_limit(seconds):
            d = sp.diff(fwd, s) - mine
            return d == 0 or sp.simplify(d) == 0
    except _Budget:
        return None


def _every(say, what: str, step: int = 25):
    def each(k: int, n: int, node) -> None:
        if k and k % step == 0:
            say(f"  symbolic: {what} graph, node {k}/{n} ({node.out.name} = {node.op})")
    return each


def _sample(graph, syms, rng, points, exprs, kink_exprs, labels):
    """Random points where every expression is finite and no kink expression is near 0."""
    samples, skipped, tries = [], 0, 0
    while len(samples) < points and tries < 40 * points:
        tries += 1
        scale = rng.uniform(0.5, 1.5)
        point = {}
        for v in graph.inputs:
            if v.name in syms:
                x = rng.standard_normal(v.shape) * scale
                point[v.name] = np.abs(x) + 0.1 if tries % 2 == 0 else x
        subs = {s: float(a) for v in graph.inputs if v.name in syms
                for s, a in zip(syms[v.name].ravel(), np.ravel(point[v.name]))}
        try:
            vals = evaluate(exprs + kink_exprs, subs)
        except (ZeroDivisionError, ValueError, TypeError, OverflowError):
            continue
        vals, k = vals[:len(exprs)], vals[len(exprs):]
        if not _finite(vals):
            continue
        if any(abs(z) < KINK_MARGIN for z in k):
            skipped += 1
            continue
        point.update(labels)
        samples.append((point, vals))
    if not samples:
        raise GradcError(f"check_against_sympy: found no point where {graph.name} and its "
                         "gradient are finite and away from kinks")
    return samples, skipped


def _compiled(dg, backends, notes, say=lambda line: None) -> dict:
    names = BACKENDS if backends is None else backends
    out = {}
    for name in names:
        say(f"  compiling the gradient with the {name} backend")
        try:
            out[name] = compile_graph(dg, backend=name)
        except Exception as e:  # a backend that cannot compile this graph is reported
            notes.append(f"backend {name} could not compile the gradient: {e}")
    return out


def find_suspect(graph: Graph, seed: int = 0, deadline: float | None = None) -> str | None:
    """The first gate rule (walking back from the output) that disagrees with SymPy on its
    own node: a single-op graph with the node's input types, checked with a random upstream G.
    None also when `deadline` (perf_counter) passes first."""
    for n in reversed(graph.nodes):
        if deadline is not None and time.perf_counter() > deadline:
            return None
        msg = gate_disagreement(n, seed)
        if msg:
            return msg
    return None


def as_float64(graph: Graph) -> Graph:
    """A copy of the graph with every f32 value (and dtype attribute) made f64."""
    if all(v.dtype != "f32" for v in graph.values().values()):
        return graph
    text = print_graph(graph).replace("f32[", "f64[").replace("dtype='f32'", "dtype='f64'")
    g = parse_graph(text)
    g.origin = getattr(graph, "origin", None)
    return g


# ---- finite differences --------------------------------------------------------------------
def check_finite_differences(graph: Graph, wrt=None, of=None, *, eps: float = 1e-6,
                             points: int = 2, seed: int = 0, tol: float = 1e-6,
                             max_elements: int = 64, directions: int = 8) -> CheckReport:
    """Central differences in float64, per element for inputs of at most `max_elements`
    elements and along random unit directions for larger ones."""
    started = time.perf_counter()
    graph = as_float64(for_checks(graph))     # f64[N, 2]: at N = specialize.CHECK_SIZE
    wrt = _wrt_list(graph, wrt)
    of, target = _pick_output(graph, of)
    dg = grad(graph, wrt, of)
    rng = np.random.default_rng(seed)
    names = {x: gradient_name(graph.outputs, of, x) for x in wrt}
    rows = {x: GradientRow(names[x], graph.input(x).shape) for x in wrt}
    notes = []
    for p in range(points):
        point = {v.name: rng.standard_normal(v.shape) for v in graph.inputs if v.type.is_float}
        point.update(label_values(graph, rng))
        grads = interpret(dg, point)

        at, held = holding(graph, point)     # stop_gradient's values: constants at the point

        def f(pt):
            return float(interpret(at, {**pt, **held})[of])
        for x in wrt:
            g = np.asarray(grads[names[x]], dtype=np.float64)
            if g.size <= max_elements:
                for k in range(g.size):
                    fd = _central(f, point, x, np.eye(1, g.size, k).reshape(g.shape), eps)
                    rows[x].add_numeric(fd, float(g.ravel()[k]), tol, where=(p, k))
            else:
                if p == 0:
                    notes.append(f"d{x} has {g.size} elements: compared along {directions} "
                                 "random directions")
                for _ in range(directions):
                    d = rng.standard_normal(g.shape)
                    d /= np.linalg.norm(d)
                    fd = _central(f, point, x, d, eps)
                    rows[x].add_numeric(fd, float(np.sum(g * d)), tol, where=(p, -1))
    for r in rows.values():
        r.symbolic = None
    custom = check_custom_gates(graph, kinks, seed=seed)
    _expected(list(rows.values()), notes, custom, "finite differences differentiate")
    report = CheckReport(f"check_finite_differences: {graph.name}, d{of}/d({', '.join(wrt)}), "
                         f"{points} points, eps={eps:g}", list(rows.values()), notes,
                         oracle="central differences")
    report.custom_gates = custom
    report.seconds = time.perf_counter() - started
    return report


def _expected(rows, notes, custom, oracle: str) -> None:
    """Where a custom gate's rule differs from the derivative of its forward on purpose
    (flagged), an oracle that differentiates the forward disagrees as expected: its failures
    become notes, not failures."""
    flagged = [c.name for c in custom if c.differs]
    if not flagged:
        return
    for r in rows:
        if r.failure:
            idx, p, ref, got, _ = r.failure
            notes.append(f"expected, not failed: {r.name}{idx} at point {p}: the oracle "
                         f"{ref:.10g}, gradc {got:.10g}")
            r.failure = None
        for name in [b for b, e in r.backends.items() if e > BACKEND_TOL]:
            notes.append(f"expected, not failed: {r.name} by the {name} backend differs from "
                         f"the same oracle by {r.backends.pop(name):.1e}")
    notes.append(f"{oracle} the forward, and the rule of custom gate(s) {', '.join(flagged)} "
                 "differs from that derivative on purpose (flagged above): check_against_sympy "
                 "on a model small enough compares the gradient with each rule taken as given")


def _central(f, point, x, direction, eps):
    plus = dict(point, **{x: point[x] + eps * direction})
    minus = dict(point, **{x: point[x] - eps * direction})
    return (f(plus) - f(minus)) / (2 * eps)
