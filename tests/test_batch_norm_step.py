"""batch_norm's running statistics in compiler.train_step: updated inside the compiled step by
the momentum rule (an oracle that needs no gradients: batch_norm reads the data directly, so
the running statistics depend only on the batches), read by `evaluate`, and checkpointed."""
import numpy as np
import pytest

import compiler
from frontends import dsl
from frontends.dsl import f64, i64

EPS, MOMENTUM = 1e-5, 0.2


def model(gamma, beta, W, X, y):
    z = dsl.batch_norm(X, gamma, beta, eps=EPS, momentum=MOMENTUM, name="bn")
    scores = z @ W
    return {"loss": dsl.softmax_cross_entropy(scores, y), "scores": scores}


def make(backend):
    rng = np.random.default_rng(3)
    params = {"gamma": np.ones(4), "beta": np.zeros(4), "W": rng.standard_normal((4, 3))}
    return compiler.train_step(model, params=params, inputs={"X": f64[8, 4], "y": i64[8]},
                               optimizer=compiler.optim.Adam(lr=1e-2), backend=backend)


def batches(k, seed=5):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((8, 4)) * 3 + 7, rng.integers(0, 3, 8)) for _ in range(k)]


@pytest.mark.parametrize("backend", ["numpy", "llvm"])
def test_running_statistics_follow_the_batches_and_evaluate_reads_them(backend):
    step = make(backend)
    assert set(step.stats) == {"bn_running_mean", "bn_running_var"}
    rm, rv = np.zeros(4), np.ones(4)
    for X, y in batches(5):
        step(X=X, y=y)
        rm = (1 - MOMENTUM) * rm + MOMENTUM * X.mean(axis=0)
        rv = (1 - MOMENTUM) * rv + MOMENTUM * X.var(axis=0, ddof=1)
    np.testing.assert_allclose(step.stats["bn_running_mean"], rm, rtol=1e-13)
    np.testing.assert_allclose(step.stats["bn_running_var"], rv, rtol=1e-13)
    X, y = batches(1, seed=9)[0]
    P = step.params
    want = ((X - rm) / np.sqrt(rv + EPS) * P["gamma"] + P["beta"]) @ P["W"]
    np.testing.assert_allclose(step.evaluate(X=X, y=y)["scores"], want, rtol=1e-12)


def test_checkpoint_restores_the_running_statistics(tmp_path):
    a = make("numpy")
    data = batches(6)
    for X, y in data[:3]:
        a(X=X, y=y)
    path = tmp_path / "bn.npz"
    a.save(path)
    saved = {k: v.copy() for k, v in a.stats.items()}
    for X, y in data[3:]:
        a(X=X, y=y)
    b = make("numpy").load(path)
    for k in saved:
        np.testing.assert_array_equal(b.stats[k], saved[k])
    for X, y in data[3:]:
        b(X=X, y=y)
    for k in a.stats:
        np.testing.assert_array_equal(b.stats[k], a.stats[k])
    for k in a.params:
        np.testing.assert_array_equal(b.params[k], a.params[k])
