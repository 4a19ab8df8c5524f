"""layer_norm and batch_norm (compiler/builder_conv.py): values against the NumPy formula,
gradients against finite differences, and exactness at large means (mean 1e6, std 1): the
normalized value and its gradient are invariant under adding a constant to x, which the
two-pass variance keeps and E[x²] − E[x]² would lose."""
import numpy as np
import pytest

import compiler
from compiler.builder_conv import running_stats
from compiler.ir import ShapeError
from frontends import dsl
from frontends.dsl import f64

BACKENDS = ("numpy", "llvm")


def ln_model(x, gamma, beta, c):
    return dsl.sum(dsl.layer_norm(x, gamma, beta, eps=1e-5) * c)


def bn_model(x, gamma, beta, c):
    return dsl.sum(dsl.batch_norm(x, gamma, beta, eps=1e-5) * c)


def ln_ref(x, gamma, beta, eps=1e-5):
    mu = x.mean(axis=-1, keepdims=True)
    return (x - mu) / np.sqrt(((x - mu) ** 2).mean(axis=-1, keepdims=True) + eps) * gamma + beta


def bn_ref(x, gamma, beta, eps=1e-5):
    axes = (0, 2, 3)
    mu = x.mean(axis=axes, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=axes, keepdims=True)
    shape = (1, -1, 1, 1)
    return (x - mu) / np.sqrt(var + eps) * gamma.reshape(shape) + beta.reshape(shape)


CASES = {
    "layer_norm": (ln_model, ln_ref, (4, 5), (5,)),
    "batch_norm": (bn_model, bn_ref, (3, 2, 3, 2), (2,)),
}


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_norm_value_and_gradient_at_large_means(name, backend, rng):
    model, ref, xs, ps = CASES[name]
    z = rng.standard_normal(xs)
    gamma, beta = rng.uniform(0.5, 1.5, ps), rng.standard_normal(ps)
    c = rng.standard_normal(xs)
    g = dsl.trace(model, x=f64[xs], gamma=f64[ps], beta=f64[ps], c=f64[xs])
    fn = compiler.compile(compiler.grad(g, wrt=["x", "gamma", "beta"]), backend=backend)
    small = fn(x=z, gamma=gamma, beta=beta, c=c)
    assert small["out"] == pytest.approx(np.sum(ref(z, gamma, beta) * c), rel=1e-12)
    h = 1e-6        # central differences of the NumPy formula (float64, x near 0)
    fd = np.zeros(xs)
    for idx in np.ndindex(*xs):
        zp, zm = z.copy(), z.copy()
        zp[idx] += h
        zm[idx] -= h
        fd[idx] = (np.sum(ref(zp, gamma, beta) * c) - np.sum(ref(zm, gamma, beta) * c)) / (2 * h)
    np.testing.assert_allclose(small["dx"], fd, rtol=1e-6, atol=1e-7)
    big = fn(x=z + 1e6, gamma=gamma, beta=beta, c=c)      # mean 1e6, std 1
    # x + 1e6 rounds each element by up to 2**-33 ≈ 1.2e-10: the normalized values move by
    # about that much, and nothing else may be lost
    assert big["out"] == pytest.approx(small["out"], abs=1e-8)
    for k in ("dx", "dgamma", "dbeta"):
        np.testing.assert_allclose(big[k], small[k], rtol=1e-7, atol=1e-8, err_msg=k)


def test_one_pass_variance_would_fail_at_large_means(rng):
    """The oracle above can fail: E[x²] − E[x]² at mean 1e6 is off by ~1e-4 or worse."""
    z = rng.standard_normal((4, 5)) + 1e6
    naive = (z ** 2).mean(axis=-1) - z.mean(axis=-1) ** 2
    two_pass = ((z - z.mean(axis=-1, keepdims=True)) ** 2).mean(axis=-1)
    assert np.max(np.abs(naive - two_pass)) > 1e-5


def test_batch_norm_evaluation_reads_running_statistics(rng):
    x = rng.standard_normal((3, 2, 2, 2))
    gamma, beta = np.array([1.5, 0.5]), np.array([0.1, -0.2])
    rm, rv = np.array([0.3, -1.0]), np.array([2.0, 0.5])
    g = dsl.trace(lambda x, gamma, beta: dsl.batch_norm(x, gamma, beta, eps=1e-3),
                  training=False, x=f64[3, 2, 2, 2], gamma=f64[2], beta=f64[2])
    assert [v.name for v in g.inputs][-2:] == ["gamma_running_mean", "gamma_running_var"]
    want = ((x - rm.reshape(1, 2, 1, 1)) / np.sqrt(rv.reshape(1, 2, 1, 1) + 1e-3)
            * gamma.reshape(1, 2, 1, 1) + beta.reshape(1, 2, 1, 1))
    for be in BACKENDS:
        got = compiler.compile(g, backend=be)(x=x, gamma=gamma, beta=beta, gamma_running_mean=rm,
                                              gamma_running_var=rv)["out"]
        np.testing.assert_allclose(got, want, rtol=1e-13)


def test_running_statistics_outputs_follow_the_momentum_rule(rng):
    x = rng.standard_normal((4, 3)) * 2 + 5
    with running_stats():
        g = dsl.trace(lambda x, gamma, beta: dsl.batch_norm(x, gamma, beta, momentum=0.25,
                                                            name="bn1"),
                      x=f64[4, 3], gamma=f64[3], beta=f64[3])
    assert "bn1_running_mean_next" in g.outputs and "bn1_running_var_next" in g.outputs
    rm, rv = np.array([1.0, 2.0, 3.0]), np.array([1.0, 1.0, 4.0])
    out = compiler.compile(g)(x=x, gamma=np.ones(3), beta=np.zeros(3), bn1_running_mean=rm,
                              bn1_running_var=rv)
    np.testing.assert_allclose(out["bn1_running_mean_next"], 0.75 * rm + 0.25 * x.mean(axis=0))
    np.testing.assert_allclose(out["bn1_running_var_next"],
                               0.75 * rv + 0.25 * x.var(axis=0, ddof=1))


def test_norm_errors_name_shapes():
    with pytest.raises(ShapeError, match=r"gamma must be f64\[5\] for x f64\[4,5\]"):
        dsl.trace(lambda x, g, b: dsl.layer_norm(x, g, b), x=f64[4, 5], g=f64[4], b=f64[5])
    with pytest.raises(ShapeError, match=r"beta must be f64\[3\]"):
        dsl.trace(lambda x, g, b: dsl.batch_norm(x, g, b), x=f64[2, 3, 2, 2], g=f64[3],
                  b=f64[2])
    with pytest.raises(ShapeError, match="more than one value per channel"):
        with running_stats():
            dsl.trace(lambda x, g, b: dsl.batch_norm(x, g, b), x=f64[1, 3], g=f64[3], b=f64[3])
