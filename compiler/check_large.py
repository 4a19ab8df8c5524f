"""check_against_sympy on models too large to render in SymPy: the 30-digit comparison still
runs, on the model itself; symbolic proofs are left to a reduced copy when one can be traced.

For each gradient dx, gradc's value (its gradient graph run by the reference interpreter) is
compared along directions v, sampled as check_finite_differences samples them: every element
for an input of at most `max_elements` elements, `directions` random unit vectors for a larger
one.  The reference is the directional derivative of the *forward* graph at 60 digits:

    D_v f(p) = (f(p + t·v) − f(p − t·v)) / 2t,   t = 2^-70,

each f evaluated node by node over the graph's DAG by `mpeval.graph_numbers` (the op table's
SymPy meanings applied to mpmath numbers, contractions in exact integers); only the nodes that
depend on x are evaluated again.  The error, t²·|f'''|/6 + 10^-60·|f|/t, is below 10^-35 where
f is smooth within t of p: 30 correct digits, and no derivative rule of any op is involved, so
the reference is independent of the gate rules and of the autodiff pass.  The first point
compares at least one direction of every gradient; further directions and points run until
half the time budget is spent, and the symbolic proofs on the reduced copy get the rest."""
from __future__ import annotations

import time

from .lazy import mpmath
import numpy as np

from .autodiff import _pick_output, _wrt_list, grad, gradient_name
from .interpret import interpret
from .ir import GradcError
from .mpeval import graph_numbers
from .report import CheckReport, GradientRow

DPS = 60            # digits of the forward evaluations
STEP = -70          # t = 2^STEP


def float_symbols(graph) -> int:
    return sum(v.type.size for v in graph.inputs if v.type.is_float)


def _random_point(graph, rng, tries):
    """A random point of the float inputs (every second try shifted positive), as both
    check_against_sympy's comparisons sample it."""
    scale = rng.uniform(0.5, 1.5)
    point = {}
    for v in graph.inputs:
        if v.type.is_float:
            x = rng.standard_normal(v.shape) * scale
            point[v.name] = np.abs(x) + 0.1 if tries % 2 == 0 else x
    return point


def numeric_large(graph, dg, wrt, names, target, labels, rng, points, tol, rows, compiled,
                  deadline, say, max_elements: int = 16, directions: int = 2) -> tuple:
    """Compare every gradient along sampled directions at `points` points (fewer when the
    deadline passes; the first point always compares one direction of each).  Returns (points
    compared, directional derivatives compared)."""
    done = compared = tries = 0
    cache: dict = {}
    said = time.perf_counter()
    while done < points and tries < 20 * points:
        if done and time.perf_counter() > deadline:
            break
        tries += 1
        point = _random_point(graph, rng, tries)       # as the small models' check samples
        point.update(labels)
        with np.errstate(all="ignore"):
            mine = interpret(dg, point)
        if not all(np.all(np.isfinite(np.asarray(mine[names[x]], dtype=float))) for x in wrt):
            continue
        base = graph_numbers(graph, point, DPS, cache=cache)
        f0 = base[target.name][()]
        if not (isinstance(f0, mpmath.mpf) and mpmath.isfinite(f0)):
            continue
        theirs = {name: fn(**point) for name, fn in compiled.items()}
        plan = {x: _directions(graph.input(x).shape, rng, max_elements, directions) for x in wrt}
        for j in range(max(len(d) for d in plan.values())):
            if (done or j) and time.perf_counter() > deadline:
                break
            for x, row in zip(wrt, rows):
                if j >= len(plan[x]):
                    continue
                k, v = plan[x][j]
                ref = _central(graph, point, base, x, k, v, target.name, cache)
                g = np.asarray(mine[names[x]], dtype=np.float64)
                got = float(np.sum(g * v))
                with mpmath.workdps(30):
                    err = mpmath.mpf(got) - ref
                row.add_numeric(float(ref), got, tol, where=(done, k), err=float(err))
                for name, out in theirs.items():
                    row.add_backend(name, [float(np.sum(np.asarray(out[names[x]]) * v))],
                                    [float(ref)])
                compared += 1
            if time.perf_counter() - said > 1.0:
                said = time.perf_counter()
                say(f"  30-digit comparison: point {done + 1}/{points}, {compared} directional "
                    "derivatives so far")
        done += 1
        say(f"  30-digit comparison: point {done}/{points} done ({compared} directional "
            "derivatives so far)")
    if not done:
        raise GradcError(f"check_against_sympy: found no point where {graph.name} and its "
                         "gradient are finite")
    return done, compared


def _directions(shape, rng, max_elements, directions) -> list:
    """(element index or -1, unit direction) pairs: each element of a small input, random unit
    vectors for a large one."""
    n = int(np.prod(shape))
    if n <= max_elements:
        return [(k, np.eye(1, n, k).reshape(shape)) for k in range(n)]
    out = []
    for _ in range(directions):
        d = rng.standard_normal(shape)
        out.append((-1, d / np.linalg.norm(d)))
    return out


def _central(graph, point, base, x, k, v, target, cache):
    """(f(p + t·v) − f(p − t·v)) / 2t at DPS digits, re-evaluating only what depends on x."""
    with mpmath.workdps(DPS):
        vals = []
        for moved_x in _moved(base[x], np.asarray(point[x], dtype=np.float64), k, v):
            moved = dict(point, **{x: moved_x})
            vals.append(graph_numbers(graph, moved, DPS, base=base, cache=cache)[target][()])
        return (vals[0] - vals[1]) * mpmath.ldexp(1, -STEP - 1)


def _moved(xs, p, k, v):
    """p + t·v and p − t·v as object arrays of DPS-digit numbers, exact (p and v are float64:
    integers below 2^53 times powers of two)."""
    if k >= 0:
        out = []
        for sign in (1, -1):
            o = xs.copy()
            o.flat[k] = o.flat[k] + sign * mpmath.ldexp(1, STEP)
            out.append(o)
        return out
    mp_, ep = np.frexp(p.ravel())
    mv, ev = np.frexp(v.ravel())
    ip, iv = (mp_ * 2.0 ** 53).astype(np.int64), (mv * 2.0 ** 53).astype(np.int64)
    ep, ev = ep.astype(np.int64) - 53, ev.astype(np.int64) - 53 + STEP
    e = int(min(ep.min(), ev.min()))
    sp_, sv = (ep - e).tolist(), (ev - e).tolist()
    a = [int(m) << s for m, s in zip(ip.tolist(), sp_)]
    b = [int(m) << s for m, s in zip(iv.tolist(), sv)]
    make, prec = mpmath.mp.make_mpf, mpmath.mp.prec
    from mpmath.libmp import from_man_exp
    out = []
    for sign in (1, -1):
        o = np.empty(p.shape, dtype=object)
        o.flat[:] = [make(from_man_exp(x + sign * y, e, prec, "n")) for x, y in zip(a, b)]
        out.append(o)
    return out


BYTES_PER_NUMBER = 150     # an mpmath number in an object array, with its integer mantissa


def _fits_in_memory(graph) -> None:
    """A clear error, before anything runs, when three evaluations of every value of the graph
    in mpmath numbers (the point and its two neighbours) would not fit in the memory free now."""
    import os
    cells = sum(v.type.size for v in graph.values().values() if v.type.is_float)
    need = 3 * cells * BYTES_PER_NUMBER
    try:
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return
    if need > free // 2:
        raise GradcError(f"check_against_sympy: {graph.name} has {cells} float values; "
                         f"comparing them at 30 digits needs about {need / 2 ** 30:.3g} GiB, "
                         f"more than half the {free / 2 ** 30:.3g} GiB of memory free; use "
                         "check_finite_differences for a model this size")


def mark_unproven(rows, nsym: int, limit: int) -> None:
    for r in rows:
        r.symbolic = (0, int(np.prod(r.shape)))
        r.why = f"model too large to render ({nsym} float input symbols > limit {limit})"


def new_rows(graph, wrt, names) -> list:
    return [GradientRow(names[x], graph.input(x).shape) for x in wrt]


def check_large(graph, wrt, of, *, points, seed, tol, time_budget, max_symbols, backends,
                localize, say, started):
    """check_against_sympy past `max_symbols` float input elements (see the module text)."""
    # check_against_sympy calls this function past max_symbols, and this function checks the
    # reduced copy with check_against_sympy: mutual recursion, so compiler.check is read here
    from .check import _compiled, as_float64, check_against_sympy, label_values, reduced_copy
    deadline = started + max(time_budget, 0.0) * 0.97
    nsym = float_symbols(graph)
    _fits_in_memory(graph)
    origin = getattr(graph, "origin", None)
    graph = as_float64(graph)
    graph.origin = origin
    wrt = _wrt_list(graph, wrt)
    of, target = _pick_output(graph, of)
    dg = grad(graph, wrt, of)
    names = {x: gradient_name(graph.outputs, of, x) for x in wrt}
    rng = np.random.default_rng(seed)
    labels = label_values(graph, rng)
    say(f"check_against_sympy: {graph.name}: {nsym} float input elements (symbolic limit "
        f"{max_symbols}), {len(graph.nodes)} forward nodes, time budget {time_budget:g} s")
    rows, notes, stages = new_rows(graph, wrt, names), [], {}
    compiled = _compiled(dg, backends, notes, say)
    stages["compile"] = time.perf_counter() - started
    # past its first directions, the comparison may take half the budget: the rest is for
    # the symbolic proofs on a reduced copy
    half = started + max(time_budget, 0.0) * 0.5
    done, compared = numeric_large(graph, dg, wrt, names, target, labels, rng, points, tol,
                                   rows, compiled, half, say)
    stages["numeric"] = time.perf_counter() - started - stages["compile"]
    mark_unproven(rows, nsym, max_symbols)
    notes.append(f"not proven symbolically: model too large ({nsym} symbols > limit "
                 f"{max_symbols}); checked numerically at 30 digits: {compared} directional "
                 f"derivatives at {done} point(s) (each element of an input of at most 16 "
                 "elements, random unit directions otherwise), against central differences "
                 f"of the forward graph at {DPS} digits")
    if time.perf_counter() - started > time_budget:
        notes.append(f"compiling and the 30-digit comparison took {sum(stages.values()):.1f} "
                     f"s, past the {time_budget:g} s time budget")
    report = CheckReport(f"check_against_sympy: {graph.name}, d{of}/d({', '.join(wrt)}), "
                         f"{done} points", rows, notes, oracle="30-digit reference")
    report.budget = time_budget
    left = deadline - time.perf_counter()
    small, why = reduced_copy(graph, max_symbols)
    if small is None:
        notes.append(f"no symbolic proof on a reduced copy: {why}")
    elif left <= 0:
        notes.append("no symbolic proof on a reduced copy: the time budget was spent")
    else:
        say(f"  symbolic: {why}, with the {left:.1f} s left")
        t = time.perf_counter()
        try:
            sub = check_against_sympy(small, wrt=wrt, of=of, points=points, seed=seed,
                                      tol=tol, time_budget=left, max_symbols=max_symbols,
                                      backends=(), localize=localize)
        except GradcError as e:
            notes.append(f"no symbolic proof on a reduced copy: {e}")
        else:
            stages["reduced copy"] = time.perf_counter() - t
            proven = ", ".join(f"{r.name} {r.symbolic[0]}/{r.symbolic[1]}" for r in sub.rows
                               if r.symbolic)
            notes.append(f"{why}: {'OK' if sub.ok else 'FAILED'}, proven symbolically there: "
                         f"{proven or 'none'}")
            report.suspect = sub.suspect
            if not sub.ok:
                for r in sub.rows:
                    if not r.ok:
                        r.name += " (reduced copy)"
                        report.rows.append(r)
    report.stages = stages
    report.seconds = time.perf_counter() - started
    say(f"check_against_sympy: done in {report.seconds:.1f} s")
    return report
