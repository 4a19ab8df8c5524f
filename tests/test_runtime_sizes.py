"""Run-time sizes in the LLVM kernel (issue 17.3 part 3): a graph with a dimension name
compiles to ONE native function that reads the sizes when it runs (compiler/codegen/
llvm_dims.py); its fixed dimensions stay constants.  Oracle: the same step compiled with
concrete shapes (the per-size native code) and the NumPy backend."""
from __future__ import annotations

import numpy as np
import pytest

import compiler
from compiler.codegen import llvm_shape
from frontends import dsl
from frontends.dsl import f64, i64

D, H, C = 5, 7, 3


def mlp(W1, b1, W2, b2, X, y):
    h = dsl.relu(X @ W1 + b1)
    s = dsl.tanh(h) @ W2 + b2
    return dsl.softmax_cross_entropy(s, y) + 0.1 * dsl.mean(h * h)


def mlp_svm(W1, b1, W2, b2, X, y):
    h = dsl.sigmoid(X @ W1 + b1)
    return dsl.svm_loss(h @ W2 + b2, y) + 0.01 * dsl.sum(dsl.sum(h, axis=0) ** 2)


def params(seed=0):
    rng = np.random.default_rng(seed)
    return dict(W1=rng.normal(size=(D, H)), b1=rng.normal(size=H),
                W2=rng.normal(size=(H, C)), b2=rng.normal(size=C))


def batch(n, seed=0):
    rng = np.random.default_rng(100 + n + seed)
    return rng.normal(size=(n, D)), rng.integers(0, C, n)


def step(fn, p, n, opt=None):
    return compiler.train_step(fn, params=dict(p), inputs={"X": f64[n, D], "y": i64[n]},
                               optimizer=opt or compiler.optim.SGD(lr=0.1), backend="llvm")


@pytest.mark.parametrize("fn", [mlp, mlp_svm])
def test_one_native_kernel_agrees_with_concrete_compiles(fn):
    """N = 1, 17, 300 (and 17 again): one native function for all; each step's loss and
    updated parameters equal the step compiled at that N (per-size native code)."""
    sym = step(fn, params(), "N")
    for n in (1, 17, 300, 17):
        X, y = batch(n)
        fixed = step(fn, sym.params, n)
        want = fixed(X=X, y=y)
        got = sym(X=X, y=y)
        assert got == pytest.approx(want, rel=1e-12)
        for k in fixed.params:
            np.testing.assert_allclose(sym.params[k], fixed.params[k], rtol=1e-12,
                                       atol=1e-14, err_msg=f"{k} at N={n}")
    kernel = sym._last.kernel
    assert kernel.specializations == 1
    assert "a run-time size" in kernel.source     # the sizes are read, not baked in


def test_run_time_kernel_is_the_gradient():
    """compile(grad) with X: f64[N, D] against the NumPy backend at N = 1, 17, 300, and the
    fixed dimensions stay constants (784-wide rows would be `mul ..., 5` here)."""
    g = compiler.grad(dsl.trace(mlp, X=f64["N", D], y=i64["N"], W1=f64[D, H], b1=f64[H],
                                W2=f64[H, C], b2=f64[C]), wrt=["W1", "b1", "W2", "b2", "X"])
    fl, fn = compiler.compile(g, backend="llvm"), compiler.compile(g, backend="numpy")
    for n in (1, 17, 300):
        X, y = batch(n)
        args = dict(params(), X=X, y=y)
        want, got = fn(**args), fl(**args)
        for k in want:
            np.testing.assert_allclose(got[k], want[k], rtol=1e-10, atol=1e-12, err_msg=k)
    assert fl.specializations == 1


def test_bad_labels_at_every_size():
    """A label out of range is refused by the native check at every N (its loop reads N
    from the sizes: the last row of 17 and the first of 300), after good calls at both."""
    sym = step(mlp, params(), "N")
    for n, row, bad in ((17, 16, C), (300, 0, -1)):
        X, y = batch(n)
        sym(X=X, y=y)
        y[row] = bad
        with pytest.raises(compiler.GradcError, match="label"):
            sym(X=X, y=y)
    assert sym._last.kernel.specializations == 1


def test_fallback_graph_specializes_per_size(monkeypatch):
    """A graph with a lowering that does not take run-time sizes (forced here: the slice's
    `getitem` takes them, tests/test_runtime_sizes_index.py) keeps one native kernel per
    size, with the NumPy backend's results."""
    monkeypatch.setattr(llvm_shape.lower_getitem, "runtime_sizes", False)

    def f(X, W):
        return dsl.sum(dsl.tanh(X[:, 1:] @ W))
    g = compiler.grad(dsl.trace(f, X=f64["N", D], W=f64[D - 1, 2]), wrt=["W"])
    fl, fn = compiler.compile(g, backend="llvm"), compiler.compile(g, backend="numpy")
    rng = np.random.default_rng(3)
    W = rng.normal(size=(D - 1, 2))
    for n in (1, 17, 300):
        X = rng.normal(size=(n, D))
        want, got = fn(X=X, W=W), fl(X=X, W=W)
        for k in want:
            np.testing.assert_allclose(got[k], want[k], rtol=1e-12, err_msg=k)
    assert fl.specializations == 3
