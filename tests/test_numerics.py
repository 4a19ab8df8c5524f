"""Numerical safety on both backends (and the reference interpreter), each against hand-derived
values: cross-entropy and log_softmax at logits of ±1e4, saturating activations at ±1000,
NaN-free gradients through `where` and other selecting gates (docs/numerics.md), log 0 = -inf,
the tie rules of relu / maximum / minimum / max, and debug_nans."""
import warnings

import numpy as np
import pytest

import compiler
from frontends import dsl
from frontends.dsl import f64, i64

BACKENDS = ["interpret", "numpy", "llvm"]


def run(graph, backend, **args):
    if backend == "interpret":
        return compiler.interpret(graph, **args)
    with warnings.catch_warnings():
        warnings.simplefilter("error")         # the NumPy backend computes silently, like LLVM
        return compiler.compile(graph, backend=backend)(**args)


def grad_of(fn, **specs):
    return compiler.grad(dsl.trace(fn, **specs))


# ---- cross-entropy, log_softmax ---------------------------------------------------------------
LOGITS = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4], [0.0, 0.0, -1e4]])
LABELS = np.array([0, 0, 2])


@pytest.mark.parametrize("backend", BACKENDS)
def test_cross_entropy_at_huge_logits(backend):
    out = run(grad_of(lambda s, y: dsl.softmax_cross_entropy(s, y), s=f64[3, 3], y=i64[3]),
              backend, s=LOGITS, y=LABELS)
    # by hand: row 0 loss log(1 + e^-2e4 + e^-1e4) = 0; row 1: 1e4 + log 2; row 2: 1e4 + log 2
    want = (0.0 + (2e4 + np.log(2)) + (1e4 + np.log(2))) / 3
    assert np.isclose(out["out"], want, rtol=1e-15)
    soft = np.array([[1, 0, 0], [0, .5, .5], [.5, .5, 0]])
    hot = np.eye(3)[LABELS]
    assert np.all(np.isfinite(out["ds"]))
    assert np.allclose(out["ds"], (soft - hot) / 3, atol=1e-300)


@pytest.mark.parametrize("backend", BACKENDS)
def test_log_softmax_at_huge_logits(backend):
    g = grad_of(lambda s: dsl.sum(dsl.log_softmax(s)[:, 0]), s=f64[3, 3])
    out = run(g, backend, s=LOGITS)
    # column 0 of log_softmax: 0, -2e4 - log 2, -log 2
    assert np.isclose(out["out"], -2e4 - 2 * np.log(2), rtol=1e-15)
    soft = np.array([[1, 0, 0], [0, .5, .5], [.5, .5, 0]])
    want = -soft.copy()
    want[:, 0] += 1                                 # d/ds of log_softmax(s)_0 = e_0 − softmax
    assert np.all(np.isfinite(out["ds"])) and np.allclose(out["ds"], want, atol=1e-300)


# ---- saturating activations ------------------------------------------------------------------
X1000 = np.array([-1000.0, -40.0, 0.0, 40.0, 1000.0])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name,value,slope", [
    ("sigmoid", lambda x: 1 / (1 + np.exp(-np.clip(x, -700, 700))),
     lambda x: np.exp(-np.abs(x)) / (1 + np.exp(-np.abs(x))) ** 2),
    ("tanh", np.tanh, lambda x: 1 / np.cosh(np.clip(x, -300, 300)) ** 2),
    ("softplus", lambda x: np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x))),
     lambda x: 1 / (1 + np.exp(-np.clip(x, -700, 700)))),
])
def test_activations_at_1000(backend, name, value, slope):
    fn = getattr(dsl, name)
    out = run(compiler.grad(dsl.trace(lambda x: dsl.sum(fn(x)), x=f64[5]), wrt=["x"]),
              backend, x=X1000)
    assert np.isfinite(out["out"]) and np.all(np.isfinite(out["dx"]))
    assert np.isclose(out["out"], np.sum(value(X1000)), rtol=1e-14)
    # at |x| = 40 the exact slope (4e-18 for σ) rounds to 0 through σ·(1−σ): absolute 1e-16
    assert np.allclose(out["dx"], slope(X1000), rtol=1e-12, atol=1e-16)


# ---- where: no NaN from the inactive branch ------------------------------------------------
XS = np.array([-1.0, 0.0, 1.0, 4.0])


def safe_sqrt(x):
    return dsl.sum(dsl.where(x > 0, dsl.sqrt(x), 0))


def safe_log(x):
    return dsl.sum(dsl.where(x > 0, dsl.log(x), 0))


def safe_recip(x):
    return dsl.sum(dsl.where(x != 0, 1 / x, 0))


def entropy(x):
    return dsl.sum(dsl.where(x > 0, x * dsl.log(x), 0))


def capped_exp(x):
    return dsl.sum(dsl.where(x < 100, dsl.exp(x), 0))


def nested(x):
    return dsl.sum(dsl.where(x > 0, dsl.log(dsl.sqrt(x) / 2), 0))


WHERE_CASES = [  # model, hand-derived gradient at XS
    (safe_sqrt, np.array([0, 0, 0.5, 0.25])),
    (safe_log, np.array([0, 0, 1, 0.25])),
    (safe_recip, np.array([-1, 0, -1, -1 / 16])),
    (entropy, np.array([0, 0, 1, np.log(4) + 1])),
    (capped_exp, np.exp(XS)),
    (nested, np.array([0, 0, 0.5, 0.125])),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("model,want", WHERE_CASES, ids=[c[0].__name__ for c in WHERE_CASES])
def test_where_gradients_are_free_of_nan(backend, model, want):
    out = run(grad_of(model, x=f64[4]), backend, x=XS)
    assert np.all(np.isfinite(out["dx"])), out["dx"]
    assert np.allclose(out["dx"], want, rtol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_capped_exp_at_overflow(backend):
    out = run(grad_of(capped_exp, x=f64[2]), backend, x=np.array([1000.0, 1.0]))
    assert out["out"] == np.e and np.array_equal(out["dx"], np.array([0.0, np.e]))


@pytest.mark.parametrize("backend", BACKENDS)
def test_selecting_gates_route_zeros_through_log(backend):
    """pick and getitem select; log of the unselected zero probabilities must not poison."""
    def nll(p, y):
        return -dsl.sum(dsl.pick(dsl.log(p), y))
    p = np.array([[0.5, 0.0, 0.5], [0.0, 1.0, 0.0]])
    out = run(grad_of(nll, p=f64[2, 3], y=i64[2]), backend, p=p, y=np.array([0, 1]))
    assert np.array_equal(out["dp"], np.array([[-2.0, 0, 0], [0, -1.0, 0]]))
    out = run(grad_of(lambda x: dsl.log(x)[1], x=f64[3]), backend, x=np.array([0.0, 2.0, -1.0]))
    assert np.array_equal(out["dx"], np.array([0.0, 0.5, 0.0]))


def test_the_guard_only_appears_below_a_selecting_gate():
    """A model without a selecting gate keeps the plain gate rule (no `equal` node added)."""
    plain = grad_of(lambda x: dsl.sum(dsl.sqrt(x)), x=f64[4])
    assert not any(n.op == "equal" for n in plain.nodes)
    guarded = grad_of(safe_sqrt, x=f64[4])
    assert any(n.op == "equal" and n.rule.startswith("sqrt gate") for n in guarded.nodes)


# ---- log of zero, infinities ------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_log_of_zero_is_minus_inf(backend):
    out = run(grad_of(lambda x: dsl.sum(dsl.log(x)), x=f64[2]), backend, x=np.array([0.0, 1.0]))
    assert out["out"] == -np.inf
    assert out["dx"][0] == np.inf and out["dx"][1] == 1.0     # 1/x, IEEE


# ---- tie rules ---------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_relu_at_zero_has_slope_zero(backend):
    out = run(grad_of(lambda x: dsl.sum(dsl.relu(x)), x=f64[3]), backend,
              x=np.array([-1.0, 0.0, 2.0]))
    assert np.array_equal(out["dx"], [0.0, 0.0, 1.0])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("fn,slopes", [
    (lambda x: dsl.leaky_relu(x, 0.1), [0.1, 0.1, 1.0]),     # x = 0 takes the negative side
    (lambda x: dsl.elu(x, 0.5), [0.5 * np.exp(-1), 0.5, 1.0]),
    (dsl.abs, [-1.0, 0.0, 1.0])])                             # sign(0) = 0
def test_kinks_at_zero(backend, fn, slopes):
    out = run(grad_of(lambda x: dsl.sum(fn(x)), x=f64[3]), backend, x=np.array([-1.0, 0.0, 2.0]))
    assert np.allclose(out["dx"], slopes, rtol=1e-15)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op", ["maximum", "minimum"])
def test_maximum_and_minimum_split_a_tie(backend, op):
    g = compiler.grad(dsl.trace(lambda a, b: dsl.sum(getattr(dsl, op)(a, b)),
                                a=f64[3], b=f64[3]))
    a, b = np.array([1.0, 2.0, 3.0]), np.array([1.0, 5.0, 0.0])
    out = run(g, backend, a=a, b=b)
    win_a = (a > b) if op == "maximum" else (a < b)
    assert np.array_equal(out["da"], np.where(a == b, 0.5, win_a * 1.0))
    assert np.array_equal(out["db"], np.where(a == b, 0.5, (~win_a & (a != b)) * 1.0))


@pytest.mark.parametrize("backend", BACKENDS)
def test_reduce_max_splits_between_ties(backend):
    out = run(grad_of(lambda x: dsl.sum(dsl.max(x, axis=1)), x=f64[2, 3]), backend,
              x=np.array([[1.0, 3.0, 3.0], [2.0, 2.0, 2.0]]))
    assert np.allclose(out["dx"], [[0, 0.5, 0.5], [1 / 3, 1 / 3, 1 / 3]], rtol=1e-15)


# ---- debug_nans ----------------------------------------------------------------------------------
def wobbly(x):
    y = dsl.log(x)
    z = dsl.tanh(y) * 2
    return dsl.sum(z)


def test_debug_nans_names_the_first_node_and_its_line():
    rep = compiler.debug_nans(dsl.trace(wobbly, x=f64[3]), x=np.array([1.0, -1.0, 2.0]))
    assert rep.found
    assert rep.forward.name == "y" and rep.forward.node.op == "log"
    line = wobbly.__code__.co_firstlineno + 1
    assert rep.forward.node.loc == f"test_numerics.py:{line}"
    assert rep.forward.index == 1 and np.isnan(rep.forward.value) and rep.forward.count == 1
    text = str(rep)
    assert f"test_numerics.py:{line}" in text and "log(x)" in text and "in [-1, 2]" in text
    assert "out" in rep.outputs and "dx" in rep.outputs


def test_debug_nans_finds_a_gradient_only_nan():
    """sqrt at 0 is finite forward, but its gate divides by 2·√0: inf in the gradient only."""
    def model(x):
        r = dsl.sqrt(x)
        return dsl.sum(r)
    rep = compiler.debug_nans(dsl.trace(model, x=f64[2]), x=np.array([0.0, 4.0]))
    assert rep.forward is None and rep.gradient is not None
    assert rep.gradient.node.rule.startswith("sqrt gate") and rep.gradient.index == 0
    assert rep.gradient.node.loc == f"test_numerics.py:{model.__code__.co_firstlineno + 1}"
    assert rep.outputs == ["dx"]


def test_debug_nans_masked_and_clean():
    rep = compiler.debug_nans(dsl.trace(safe_sqrt, x=f64[4]), x=XS)
    assert rep.forward is not None and rep.forward.node.op == "sqrt"     # sqrt(-1), masked
    assert rep.outputs == []        # the gradient's NaN intermediates (2·√-1) are masked too
    assert "masked" in str(rep)
    clean = compiler.debug_nans(dsl.trace(safe_sqrt, x=f64[4]), x=np.abs(XS) + 1)
    assert not clean and "every value is finite" in str(clean)
