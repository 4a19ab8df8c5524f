"""The two-layer net (relu hidden layer, biases, softmax cross-entropy or multiclass SVM loss,
plus reg·(ΣW1² + ΣW2²)) traced, differentiated and compiled by gradc, against a forward and
backward pass written by hand in NumPy here (CS231n style), in float64 to 1e-10 and float32
to ~1e-5."""
import numpy as np
import pytest

import compiler
from frontends import dsl
from frontends.dsl import f32, f64, i64

N, D, H, C = 40, 3, 16, 4
REG = 0.05


def net_softmax(W1, b1, W2, b2, X, y):
    h = dsl.relu(X @ W1 + b1)
    scores = h @ W2 + b2
    loss = dsl.softmax_cross_entropy(scores, y) + REG * (dsl.sum(W1 * W1) + dsl.sum(W2 * W2))
    return loss


def net_svm(W1, b1, W2, b2, X, y):
    h = dsl.relu(X @ W1 + b1)
    scores = h @ W2 + b2
    loss = dsl.svm_loss(scores, y) + REG * (dsl.sum(W1 * W1) + dsl.sum(W2 * W2))
    return loss


def reference(W1, b1, W2, b2, X, y, kind):
    """Hand-written forward and backward pass (float64)."""
    W1, b1, W2, b2, X = (np.asarray(a, np.float64) for a in (W1, b1, W2, b2, X))
    n = X.shape[0]
    rows = np.arange(n)
    pre = X @ W1 + b1
    h = np.maximum(0, pre)
    scores = h @ W2 + b2
    if kind == "softmax":
        shifted = scores - scores.max(axis=1, keepdims=True)
        logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        data_loss = -logp[rows, y].mean()
        probs = np.exp(logp)
        dscores = probs.copy()
        dscores[rows, y] -= 1
        dscores /= n
    else:
        correct = scores[rows, y][:, None]
        margins = np.maximum(0, scores - correct + 1.0)
        margins[rows, y] = 0
        data_loss = margins.sum() / n
        active = (margins > 0).astype(np.float64)
        active[rows, y] = -active.sum(axis=1)
        dscores = active / n
    loss = data_loss + REG * (np.sum(W1 * W1) + np.sum(W2 * W2))
    dW2 = h.T @ dscores + 2 * REG * W2
    db2 = dscores.sum(axis=0)
    dh = dscores @ W2.T
    dh[pre <= 0] = 0
    dW1 = X.T @ dh + 2 * REG * W1
    db1 = dh.sum(axis=0)
    dX = dh @ W1.T
    return {"out": loss, "dW1": dW1, "db1": db1, "dW2": dW2, "db2": db2, "dX": dX}


def _inputs(rng, dtype):
    f = lambda *s: rng.standard_normal(s).astype(dtype)  # noqa: E731
    return {"W1": 0.5 * f(D, H), "b1": 0.1 * f(H), "W2": 0.5 * f(H, C), "b2": 0.1 * f(C),
            "X": f(N, D), "y": rng.integers(0, C, N)}


MODELS = {"softmax": net_softmax, "svm": net_svm}


def _compiled(kind, spec):
    g = dsl.trace(MODELS[kind], W1=spec[D, H], b1=spec[H], W2=spec[H, C], b2=spec[C],
                  X=spec[N, D], y=i64[N])
    dg = compiler.grad(g)
    return dg, compiler.compile(dg, backend="numpy")


@pytest.mark.parametrize("kind", ["softmax", "svm"])
def test_float64_matches_hand_written_backward(kind, rng):
    dg, fn = _compiled(kind, f64)
    assert list(dg.outputs) == ["out", "dW1", "db1", "dW2", "db2", "dX"]   # labels: no dy
    for _ in range(3):
        ins = _inputs(rng, np.float64)
        want = reference(**ins, kind=kind)
        for got in (fn(**ins), compiler.interpret(dg, ins)):
            for k, w in want.items():
                assert np.asarray(got[k]).dtype == np.float64
                np.testing.assert_allclose(got[k], w, rtol=1e-10, atol=1e-12, err_msg=f"{kind} {k}")


@pytest.mark.parametrize("kind", ["softmax", "svm"])
def test_float32_matches_hand_written_backward(kind, rng):
    dg, fn = _compiled(kind, f32)
    ins = _inputs(rng, np.float32)
    want = reference(**ins, kind=kind)
    for got in (fn(**ins), compiler.interpret(dg, ins)):
        for k, w in want.items():
            assert np.asarray(got[k]).dtype == np.float32, f"{k} is {np.asarray(got[k]).dtype}"
            np.testing.assert_allclose(got[k], w, rtol=1e-4, atol=1e-5, err_msg=f"{kind} {k}")


def test_gradient_names_read_like_a_hand_written_backward_pass():
    dg, fn = _compiled("softmax", f64)
    names = {n.out.name for n in dg.nodes}
    assert {"h", "scores", "loss", "dscores", "dh", "dW1", "dW2", "db1", "db2"} <= names, names
    assert "softmax_cross_entropy gate" in fn.source


def test_stable_for_huge_scores(rng):
    """Scores of ±1e4 (after the hidden layer) give a finite loss and finite gradients."""
    dg, fn = _compiled("softmax", f64)
    ins = _inputs(rng, np.float64)
    ins["W2"] = ins["W2"] * 1e4
    got = fn(**ins)
    want = reference(**ins, kind="softmax")
    assert all(np.all(np.isfinite(v)) for v in got.values())
    for k, w in want.items():
        np.testing.assert_allclose(got[k], w, rtol=1e-9, atol=1e-9 * np.abs(w).max(), err_msg=k)


@pytest.mark.parametrize("kind", ["softmax", "svm"])
def test_spiral_sized_net_matches_and_results_stay_fresh(kind, rng):
    """300 points, 100 hidden units (the lecture's spiral net): big enough for the compiled code
    to reuse buffers between calls; a result must not change when the function runs again."""
    n, d, hdim, c = 300, 2, 100, 3
    fn_model = MODELS[kind]
    g = dsl.trace(fn_model, W1=f64[d, hdim], b1=f64[hdim], W2=f64[hdim, c], b2=f64[c],
                  X=f64[n, d], y=i64[n])
    fn = compiler.compile(compiler.grad(g), backend="numpy")

    def inputs():
        return {"W1": 0.1 * rng.standard_normal((d, hdim)), "b1": 0.1 * rng.standard_normal(hdim),
                "W2": 0.1 * rng.standard_normal((hdim, c)), "b2": 0.1 * rng.standard_normal(c),
                "X": rng.standard_normal((n, d)), "y": rng.integers(0, c, n)}
    first_in, second_in = inputs(), inputs()
    first = fn(**first_in)
    kept = {k: np.copy(v) for k, v in first.items()}
    second = fn(**second_in)
    for got, ins in ((first, first_in), (second, second_in)):
        want = reference(**ins, kind=kind)
        for k, w in want.items():
            np.testing.assert_allclose(got[k], w, rtol=1e-10, atol=1e-12, err_msg=f"{kind} {k}")
    for k in kept:
        np.testing.assert_array_equal(first[k], kept[k], err_msg=f"{k} changed by the next call")
