"""Gradient checks as a user feature: against SymPy, and against finite differences.

`check_against_sympy(graph)` renders the forward output with SymPy, lets SymPy differentiate it
(`sympy.diff`), renders gradc's own gradient graph too, and compares the two:
symbolically (simplify of the difference, within a time budget) and numerically at random
points with 30-digit evaluation (mpmath), plus each available compiled backend in float64.
Points are sampled away from kinks (Max/Min ties, Heaviside/Piecewise/Abs/sign switches).
Models too large to render are checked on a reduced copy traced from the same function with
small dimensions (the report says so).  When a gradient disagrees, each gate rule on the path
is checked on its own against SymPy and the first one that disagrees is named.
"""
from __future__ import annotations

import signal
import threading
import time

import mpmath
import numpy as np
import sympy as sp

from .autodiff import _pick_output, _wrt_list, grad, gradient_name
from .ir import GradcError, Graph
from .report import CheckReport, GradientRow
from .mpeval import evaluate
from .symbolic import input_symbols, render

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
            if n.op == "onehot":
                bound[v.name] = n.attrs["depth"]
            elif k == 1 and n.inputs[0].ndim == 2:
                bound[v.name] = n.inputs[0].shape[1]
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
class _Budget(Exception):
    pass


def _simplifies_to_zero(expr, seconds: float) -> bool | None:
    """True if SymPy proves expr == 0 within `seconds`; None when it ran out of time."""
    if expr == 0:
        return True
    if seconds <= 0:
        return None
    in_main = threading.current_thread() is threading.main_thread() and hasattr(signal, "SIGALRM")
    if in_main:
        def stop(*_):
            raise _Budget()
        old = signal.signal(signal.SIGALRM, stop)
        signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        return bool(sp.simplify(expr) == 0) or None
    except _Budget:
        return None
    finally:
        if in_main:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)


# ---- reduced copies ------------------------------------------------------------------------
def reduced_copy(graph: Graph, limit: int):
    """Retrace the graph's source function with every dimension mapped to a small size (equal
    sizes stay equal, distinct sizes stay distinct).  Returns (graph, note) or (None, why)."""
    origin = getattr(graph, "origin", None)
    if origin is None:
        return None, "the graph has no source function to retrace with small dimensions"
    fn, specs, _defaults = origin
    sizes = sorted({d for t in specs.values() for d in t.shape})
    mapping, nxt = {}, 2
    for d in sizes:
        if d <= 3:
            mapping[d] = d
            nxt = max(nxt, d + 1)
        else:
            mapping[d] = nxt
            nxt += 1
    from .ir import TensorType
    small = {k: TensorType(t.dtype, tuple(mapping[d] for d in t.shape)) for k, t in specs.items()}
    try:
        from frontends.dsl import trace
        g = trace(fn, name=graph.name, **small)   # defaults (hyperparameters) apply again
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
                        backends=None, localize: bool = True) -> CheckReport:
    """Compare gradc's gradient of output `of` w.r.t. `wrt` with SymPy's derivative."""
    started = time.perf_counter()
    notes = []
    graph = renderable(graph, max_symbols, notes, "check_against_sympy",
                       "check_finite_differences")
    wrt = _wrt_list(graph, wrt)
    of, target = _pick_output(graph, of)
    dg = grad(graph, wrt, of)
    names = {x: gradient_name(graph.outputs, of, x) for x in wrt}
    rng = np.random.default_rng(seed)
    labels = label_values(graph, rng)
    syms = input_symbols(graph)
    fwd = render(graph, labels, syms)[target.name][()]
    mine_env = render(dg, labels, syms)
    theirs, mine = {}, {}
    for x in wrt:
        theirs[x] = np.vectorize(lambda s: sp.diff(fwd, s), otypes=[object])(syms[x]) \
            if syms[x].size else syms[x]
        mine[x] = mine_env[dg.outputs[names[x]].name]
    flat = [fwd] + [e for x in wrt for e in list(theirs[x].ravel()) + list(mine[x].ravel())]
    kink_exprs = kinks(flat)
    samples, skipped = _sample(graph, syms, rng, points, flat, kink_exprs, labels)
    if skipped:
        notes.append(f"sampled away from kinks: {skipped} candidate point(s) within "
                     f"{KINK_MARGIN} of a Max/Piecewise/Heaviside switch were skipped")
    compiled = _compiled(dg, backends, notes)
    rows = []
    budget_end = started + time_budget
    offset = 1
    for x in wrt:
        n = syms[x].size
        row = GradientRow(names[x], syms[x].shape)
        for p, (point, vals) in enumerate(samples):
            ref = vals[offset:offset + n]
            got = vals[offset + n:offset + 2 * n]
            for k in range(n):
                row.add_numeric(float(ref[k]), float(got[k]), tol, where=(p, k),
                                exprs=(theirs[x].ravel()[k], mine[x].ravel()[k]),
                                err=float(got[k] - ref[k]))
            for name, fn in compiled.items():
                out = fn(**point)[names[x]]
                row.add_backend(name, np.ravel(out), [float(r) for r in ref])
        proven = unknown = 0
        for k in range(n):
            res = _simplifies_to_zero(theirs[x].ravel()[k] - mine[x].ravel()[k],
                                      budget_end - time.perf_counter())
            proven += res is True
            unknown += res is None
        row.symbolic = (proven, n)
        rows.append(row)
        offset += 2 * n
    report = CheckReport(f"check_against_sympy: {graph.name}, d{of}/d({', '.join(wrt)}), "
                         f"{len(samples)} points", rows, notes, oracle="SymPy")
    if not report.ok and localize:
        report.suspect = find_suspect(graph, seed)
    report.seconds = time.perf_counter() - started
    return report


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


def _compiled(dg, backends, notes) -> dict:
    from . import BACKENDS, compile as compile_graph
    names = BACKENDS if backends is None else backends
    out = {}
    for name in names:
        try:
            out[name] = compile_graph(dg, backend=name)
        except Exception as e:  # a backend that cannot compile this graph is reported
            notes.append(f"backend {name} could not compile the gradient: {e}")
    return out


def find_suspect(graph: Graph, seed: int = 0) -> str | None:
    """The first gate rule (walking back from the output) that disagrees with SymPy on its
    own node: a single-op graph with the node's input types, checked with a random upstream G."""
    from .singleop import gate_disagreement
    for n in reversed(graph.nodes):
        msg = gate_disagreement(n, seed)
        if msg:
            return msg
    return None


def as_float64(graph: Graph) -> Graph:
    """A copy of the graph with every f32 value (and dtype attribute) made f64."""
    from .text import parse_graph, print_graph
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
    from .interpret import interpret
    started = time.perf_counter()
    graph = as_float64(graph)
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

        def f(pt):
            return float(interpret(graph, pt)[of])
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
    report = CheckReport(f"check_finite_differences: {graph.name}, d{of}/d({', '.join(wrt)}), "
                         f"{points} points, eps={eps:g}", list(rows.values()), notes,
                         oracle="central differences")
    report.seconds = time.perf_counter() - started
    return report


def _central(f, point, x, direction, eps):
    plus = dict(point, **{x: point[x] + eps * direction})
    minus = dict(point, **{x: point[x] - eps * direction})
    return (f(plus) - f(minus)) / (2 * eps)
