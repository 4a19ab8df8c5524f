"""Issue 14, part 1: the stability rewrites reach the gradient.

The property: wherever the compiled loss is finite, every compiled gradient is finite and agrees
with a high-precision reference.  The reference is independent of gate rules and of the
rewrites: the *naive* forward graph, as written, rendered in SymPy (compiler/symbolic.py) and
evaluated with mpmath (compiler/mpeval.py) at 60 digits more than 1.25·|x|·log10(e) for the
largest value |x| ≤ 1e5 in the graph (as float64 computes it), so
that 1 − σ(x) = e^−x/(1 + e^−x) keeps 60 digits even at x = 1e4, differentiated by central
differences with a step of 1e-30.

1. Every unstable spelling a user writes, at logits of ±40, ±800, ±1e3 and ±1e4 on the
   interpreter and both backends (±1e6 against the hand-derived limits: an mpmath reference
   there needs 434,000 digits); a train step, hvp and debug_nans on the textbook BCE.
2. Hypothesis: random losses built from those spellings (shared logits: fan-out), random
   values up to ±1e3 (times up to 3), both backends.
"""
import math

import mpmath
import numpy as np
import pytest
from hypothesis import given, strategies as st

import hypothesis_profiles  # noqa: F401  (registers and loads the profiles)

import compiler
from compiler import builder as B
from compiler import mpeval
from compiler.builder import Builder
from compiler.ir import Graph, TensorType
from compiler.symbolic import input_symbols, render
from frontends import dsl
from frontends.dsl import f64, i64

BACKENDS = ("interpret", "numpy", "llvm")
EXTREMES = [-1e4, -1e3, -800.0, -40.0, -3.0, 0.5, 3.0, 40.0, 800.0, 1e3, 1e4, -2e3]


# ---- the independent reference ---------------------------------------------------------------
def reference(graph: Graph, args: dict, dps: int | None = None):
    """(loss, {"d<x>": gradient}) of the naive graph's only output, at `dps` digits (default:
    enough for e^−|x| beside 1): mpmath evaluation of the SymPy rendering, central differences
    with step 1e-30·max(1, |x|)."""
    if dps is None:     # the largest magnitude up to 1e5 (an exponent; larger ones are exp's
        # results, e.g. e^700) of any value, as float64 computes it, sets the precision
        biggest = 0.0
        with np.errstate(all="ignore"):
            for v in compiler.interpret(graph, args, all_values=True).values():
                a = np.abs(np.asarray(v, dtype=float))
                biggest = max(biggest, float(np.max(a[a <= 1e5], initial=0)))
        dps = 60 + math.ceil(1.25 * biggest * math.log10(math.e))
    symbols = input_symbols(graph)
    ints = {v.name: args[v.name] for v in graph.inputs if not v.type.is_float}
    env = render(graph, ints, symbols)
    expr = env[next(iter(graph.outputs.values())).name][()]
    subs = {}
    for name, arr in symbols.items():
        for idx in np.ndindex(*arr.shape):
            subs[arr[idx]] = mpmath.mpf(float(args[name][idx]))
    with mpmath.workdps(dps):
        loss = mpeval.evaluate([expr], subs, dps)[0]
        grads = {}
        for name, arr in symbols.items():
            d = np.zeros(arr.shape)
            for idx in np.ndindex(*arr.shape):
                s = arr[idx]
                x = subs[s]
                h = mpmath.mpf(10) ** -30 * max(1, abs(x))
                hi, lo = dict(subs), dict(subs)
                hi[s], lo[s] = x + h, x - h
                f_hi = mpeval.evaluate([expr], hi, dps)[0]
                f_lo = mpeval.evaluate([expr], lo, dps)[0]
                d[idx] = float((f_hi - f_lo) / (2 * h))
            grads["d" + name] = d
        return float(loss), grads


def run(dg: Graph, backend: str, args: dict) -> dict:
    if backend == "interpret":
        return compiler.interpret(dg, **args)
    return compiler.compile(dg, backend=backend)(**args)


def assert_trustworthy(graph: Graph, args: dict, backends=BACKENDS, where="", dps=None):
    """The property of issue 14 part 1 on every backend."""
    dg = compiler.grad(graph)
    want_loss, want = reference(graph, args, dps)
    for backend in backends:
        got = run(dg, backend, args)
        loss = float(got["out"])
        if not math.isfinite(loss):
            assert not math.isfinite(want_loss), (backend, where, loss, want_loss)
            continue
        assert math.isclose(loss, want_loss, rel_tol=1e-9, abs_tol=1e-12), \
            (backend, where, loss, want_loss)
        for k, ref in want.items():
            g = np.asarray(got[k])
            assert np.all(np.isfinite(g)), (backend, where, k, g, str(dg))
            scale = max(1.0, float(np.max(np.abs(ref), initial=0)))
            assert np.allclose(g, ref, rtol=1e-7, atol=1e-9 * scale), (backend, where, k, g, ref)


# ---- 1. every spelling, by hand ---------------------------------------------------------------
def _z_graph(head) -> Graph:
    g = Graph("loss")
    b = Builder(g)
    z = b.add_input("z", TensorType("f64", (3,)))
    g.outputs["out"] = B.sum(head(z)).value
    return g


ELEMENTWISE_SPELLINGS = {
    "log(sigmoid(z))": lambda z: B.log(B.sigmoid(z)),
    "log(sigmoid(-z))": lambda z: B.log(B.sigmoid(-z)),
    "log(1 - sigmoid(z))": lambda z: B.log(1.0 - B.sigmoid(z)),
    "log1p(-sigmoid(z))": lambda z: B.log1p(-B.sigmoid(z)),
    "log(1 + exp(z))": lambda z: B.log(1.0 + B.exp(z)),
    "log(exp(z) + 1)": lambda z: B.log(B.exp(z) + 1.0),
    "log1p(exp(z))": lambda z: B.log1p(B.exp(z)),
    "log(1 / (1 + exp(-z)))": lambda z: B.log(1.0 / (1.0 + B.exp(-z))),
    "log(1 - 1 / (1 + exp(-z)))": lambda z: B.log(1.0 - 1.0 / (1.0 + B.exp(-z))),
}


@pytest.mark.parametrize("spelling", sorted(ELEMENTWISE_SPELLINGS))
def test_each_spelling_has_a_finite_exact_gradient(spelling):
    g = _z_graph(ELEMENTWISE_SPELLINGS[spelling])
    for lo in range(0, len(EXTREMES), 3):
        z = np.array((EXTREMES * 2)[lo:lo + 3])
        assert_trustworthy(g, {"z": z}, where=f"{spelling} at {z}")


LIMITS = {   # d/dz of each spelling at z = −1e6 and 1e6, by hand: σ(−1e6) = 1, σ(1e6) = 1
    "log(sigmoid(z))": (1.0, 0.0), "log(sigmoid(-z))": (-0.0, -1.0),
    "log(1 - sigmoid(z))": (-0.0, -1.0), "log1p(-sigmoid(z))": (-0.0, -1.0),
    "log(1 + exp(z))": (0.0, 1.0), "log(exp(z) + 1)": (0.0, 1.0), "log1p(exp(z))": (0.0, 1.0),
    "log(1 / (1 + exp(-z)))": (1.0, 0.0), "log(1 - 1 / (1 + exp(-z)))": (-0.0, -1.0),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("spelling", sorted(ELEMENTWISE_SPELLINGS))
def test_each_spelling_at_a_million(spelling, backend):
    g = _z_graph(ELEMENTWISE_SPELLINGS[spelling])
    out = run(compiler.grad(g), backend, {"z": np.array([-1e6, 1e6, 1e6])})
    assert math.isfinite(float(out["out"]))
    lo, hi = LIMITS[spelling]
    np.testing.assert_array_equal(out["dz"], [lo, hi, hi])


def test_the_issue_example():
    """-sum(log(sigmoid(z))) at z = [-800, -40, 3]: dz = -σ(-z) = [-1, -1, -0.0474...]."""
    def f(z: f64[3]):
        return -dsl.sum(dsl.log(dsl.sigmoid(z)))
    z = np.array([-800., -40., 3.])
    want = -1 / (1 + np.exp(z))               # hand-derived: d/dz −log σ(z) = −(1 − σ(z))
    for backend in ("numpy", "llvm"):
        out = compiler.compile(compiler.grad(dsl.trace(f)), backend=backend)(z=z)
        assert out["out"] == pytest.approx(800 + 40 + math.log1p(math.exp(-3)), rel=1e-12)
        np.testing.assert_allclose(out["dz"], want, rtol=1e-12)


def _bce_a(X, w, t):
    p = dsl.sigmoid(X @ w)
    return -dsl.mean(t * dsl.log(p) + (1 - t) * dsl.log(1 - p))


def _bce_b(X, w, t):
    p = dsl.sigmoid(X @ w)
    return -dsl.mean(t * dsl.log(p) + (1 - t) * dsl.log1p(-p))


def _bce_c(X, w, t):
    p = 1 / (1 + dsl.exp(-(X @ w)))
    return -(dsl.mean(t * dsl.log(p)) + dsl.mean((1 - t) * dsl.log(1 - p)))


BCE = {"t*log(p) + (1-t)*log(1-p)": _bce_a, "t*log(p) + (1-t)*log1p(-p)": _bce_b,
       "p = 1/(1+exp(-Xw)), two means": _bce_c}
BCE_SPECS = dict(X=f64[4, 2], w=f64[2], t=f64[4])


def _bce_args():
    X = np.array([[1.0, 2.0], [-3.0, 1.0], [2.0, 2.0], [0.5, -1.0]])
    return dict(X=X, w=np.array([300.0, 200.0]), t=np.array([0.0, 1.0, 1.0, 0.0]))


@pytest.mark.parametrize("spelling", sorted(BCE))
def test_binary_cross_entropy_at_saturated_logits(spelling):
    g = dsl.trace(BCE[spelling], **BCE_SPECS)
    args = _bce_args()                      # logits X@w = 700, -700, 1000, -50: every one wrong
    assert_trustworthy(g, args, where=spelling)
    args["w"] = -args["w"]                  # and every one right: loss ≈ 0, gradient ≈ 0
    assert_trustworthy(g, args, where=spelling)


@pytest.mark.parametrize("backend", ["numpy", "llvm"])
@pytest.mark.parametrize("spelling", sorted(BCE))
def test_binary_cross_entropy_train_step_stays_finite(spelling, backend):
    """The issue's report: loss 6.6e-27 and w = NaN after one step.  One SGD step must move w by
    −lr·∇, with ∇ from the independent reference."""
    args = _bce_args()
    w0 = args.pop("w")
    step = compiler.train_step(BCE[spelling], params={"w": w0.copy()},
                               inputs={"X": f64[4, 2], "t": f64[4]},
                               optimizer=compiler.optim.SGD(lr=0.1), backend=backend)
    loss = step(**args)
    want_loss, want = reference(dsl.trace(BCE[spelling], **BCE_SPECS), dict(args, w=w0))
    assert float(loss) == pytest.approx(want_loss, rel=1e-9)
    np.testing.assert_allclose(step.params["w"], w0 - 0.1 * want["dw"], rtol=1e-12)


def _scores_graph(head) -> Graph:
    g = Graph("loss")
    b = Builder(g)
    s = b.add_input("s", TensorType("f64", (2, 3)))
    y = b.add_input("y", TensorType("i64", (2,)))
    g.outputs["out"] = head(s, y).value
    return g


def _lse_max(s, y):
    m = B.max(s, axis=1, keepdims=True)
    return B.sum(m + B.log(B.sum(B.exp(s - m), axis=1, keepdims=True)))


def _log_softmax_by_hand(s, y):
    m = B.max(s, axis=1, keepdims=True)
    logp = s - m - B.log(B.sum(B.exp(s - m), axis=1, keepdims=True))
    return -B.mean(B.pick(logp, y))


SCORE_SPELLINGS = {
    "-mean(pick(log(softmax(s)), y))": lambda s, y: -B.mean(B.pick(B.log(B.softmax(s, 1)), y)),
    "-sum(onehot(y) * log(softmax(s)))": lambda s, y: -B.sum(
        B.onehot(y, 3) * B.log(B.softmax(s, 1))),
    "-mean(log(pick(softmax(s), y)))": lambda s, y: -B.mean(B.log(B.pick(B.softmax(s, 1), y))),
    "log-sum-exp with the max subtracted": _lse_max,
    "log_softmax by hand": _log_softmax_by_hand,
    "softmax_cross_entropy(s, y)": lambda s, y: B.softmax_cross_entropy(s, y),
}


@pytest.mark.parametrize("spelling", sorted(SCORE_SPELLINGS))
def test_softmax_losses_at_extreme_scores(spelling):
    g = _scores_graph(SCORE_SPELLINGS[spelling])
    y = np.array([0, 2])
    for scale in (1.0, 1e3, 1e4, 1e6):
        s = np.array([[3.0, -1.0, 0.5], [-2.0, 1.0, 0.25]]) * scale
        # 100 digits are exact to float64 here: every term is s_i − logsumexp(s), with no
        # 1 − tiny cancellation, and a probability below 1e-60 is 0 in float64 too
        assert_trustworthy(g, {"s": s, "y": y}, where=f"{spelling} ×{scale}", dps=100)


def test_debug_nans_sees_the_stable_form():
    """On the naive BCE at saturated logits the compiled loss and gradient are finite, and
    debug_nans (which interprets the same canonical graph) reports nothing; a real NaN is still
    found at the node that makes it."""
    g = dsl.trace(_bce_a, **BCE_SPECS)
    assert not compiler.debug_nans(g, _bce_args())

    def bad(z: f64[3]):
        return dsl.sum(dsl.log(z - 5.0) * dsl.sigmoid(z))
    report = compiler.debug_nans(dsl.trace(bad), z=np.array([1.0, 7.0, 8.0]))
    assert report and report.forward is not None and report.forward.node.op == "log"


def test_hvp_of_the_naive_form_is_the_stable_second_derivative():
    """d²/dz² −log σ(z) = σ(z)σ(−z), finite (and ≈ 0) at z = −1000, 1000."""
    def f(z: f64[3]):
        return -dsl.sum(dsl.log(dsl.sigmoid(z)))
    z = np.array([-1000.0, 0.3, 1000.0])
    hv = compiler.hvp(dsl.trace(f), wrt=["z"])
    for backend in ("numpy", "llvm"):
        out = compiler.compile(hv, backend=backend)(z=z, v_z=np.ones(3))
        s = np.array([0.0, 1 / (1 + math.exp(-0.3)), 1.0])       # σ(∓1000) in float64
        np.testing.assert_allclose(out["hv_z"], s * (1 - s), rtol=1e-12, atol=1e-300)


# ---- 2. the property, over random losses -------------------------------------------------------
def _affine(z, c):
    return z * c + 0.5


LOGITS = [lambda z, c: z, lambda z, c: _affine(z, c), lambda z, c: -z,
          lambda z, c: B.tanh(z) * c * 100.0]
HEADS = sorted(ELEMENTWISE_SPELLINGS) + ["tanh", "softplus", "sigmoid", "bce"]


def _head(name, u, t):
    if name in ELEMENTWISE_SPELLINGS:
        return ELEMENTWISE_SPELLINGS[name](u)
    if name == "bce":
        p = B.sigmoid(u)
        return t * B.log(p) + (1.0 - t) * B.log(1.0 - p)
    return {"tanh": B.tanh, "softplus": B.softplus, "sigmoid": B.sigmoid}[name](u)


def build(n, logits, heads, score_heads, scale) -> Graph:
    g = Graph("loss")
    b = Builder(g)
    z = b.add_input("z", TensorType("f64", (n,)))
    t = b.add_input("t", TensorType("f64", (n,))) if "bce" in heads else None
    if score_heads:
        s = b.add_input("s", TensorType("f64", (2, 3)))
        y = b.add_input("y", TensorType("i64", (2,)))
    u = LOGITS[logits](z, scale)                       # shared by every head: fan-out
    total = None
    for k, name in enumerate(heads):
        term = _head(name, u, t)
        term = B.sum(term) if k % 2 == 0 else B.mean(term) * 2.0
        total = term if total is None else total + term
    for name in score_heads:
        term = SCORE_SPELLINGS[name](s * scale, y)
        total = term if total is None else total - term
    g.outputs["out"] = total.value
    compiler.verify(g)
    return g


values = st.one_of(st.sampled_from([x for x in EXTREMES if abs(x) <= 1e3]),
                   st.floats(-60, 60, allow_nan=False))
losses = st.tuples(
    st.integers(1, 3), st.integers(0, len(LOGITS) - 1),
    st.lists(st.sampled_from(HEADS), min_size=1, max_size=3),
    st.lists(st.sampled_from(sorted(SCORE_SPELLINGS)), max_size=2),
    st.sampled_from([1.0, 3.0, -1.5]),
    st.lists(values, min_size=9, max_size=9),
    st.lists(st.sampled_from([0.0, 1.0, 0.25]), min_size=3, max_size=3),
    st.lists(st.integers(0, 2), min_size=2, max_size=2))


@given(losses)
def test_finite_loss_means_finite_exact_gradient(spec):
    n, logits, heads, score_heads, scale, vals, ts, ys = spec
    g = build(n, logits, heads, score_heads, scale)
    given_values = {"z": np.array(vals[:n]), "t": np.array(ts[:n]),
                    "s": np.array(vals[3:9]).reshape(2, 3), "y": np.array(ys)}
    args = {v.name: given_values[v.name] for v in g.inputs}
    assert_trustworthy(g, args, backends=("numpy", "llvm"), where=str(g))


# ---- the rewrites are identities (SymPy), and the golden form ----------------------------------
IDENTITIES = {   # naive spelling -> the op the canonical graph computes it with
    "log1p(exp(z))": "softplus", "log1p(-sigmoid(z))": "softplus",
    "log(1 / (1 + exp(-z)))": "softplus", "log(1 - 1 / (1 + exp(-z)))": "softplus",
    "log(sigmoid(-z))": "softplus",
}


@pytest.mark.parametrize("spelling", sorted(IDENTITIES))
def test_canonical_form_is_the_same_function(spelling):
    """SymPy proves naive == canonical (after rewriting both in exp/log), and the canonical graph
    uses the stable primitive."""
    import sympy as sp
    g = _z_graph(ELEMENTWISE_SPELLINGS[spelling])
    c = compiler.passes.canonicalize(g)
    assert IDENTITIES[spelling] in {n.op for n in c.nodes}
    assert "log" not in {n.op for n in compiler.optimize(c, ["dce"]).nodes}
    naive, stable = (compiler.to_sympy(x)["out"] for x in (g, c))
    diff = sp.simplify(sp.expand_log(sp.powsimp(naive - stable), force=True))
    assert diff == 0, diff


def test_log_of_picked_softmax_is_pick_of_log_softmax():
    import sympy as sp
    g = _scores_graph(SCORE_SPELLINGS["-mean(log(pick(softmax(s), y)))"])
    c = compiler.passes.canonicalize(g)
    ops = [n.op for n in compiler.optimize(c, ["dce"]).nodes]
    assert "log_softmax" in ops and "softmax" not in ops and "log" not in ops
    y = {"y": np.array([2, 0])}
    naive, stable = (compiler.to_sympy(x, y)["out"] for x in (g, c))
    assert sp.simplify(sp.expand_log(naive - stable, force=True)) == 0
