"""The NumPy backend's cheaper forms: method reductions, the branch-free select, the kernel's
bound call and updates computed into the caller's arrays.  Oracles: np.where / np.mean /
np.sum themselves, the reference interpreter, hand-written NumPy."""
import numpy as np
import pytest

import compiler
from compiler.codegen.numpy_emit import donations
from compiler.codegen.numpy_helpers import where_or_zero
from frontends import dsl
from frontends.dsl import f32, f64, i64


def _bits(a):
    return np.ascontiguousarray(a).view(f"i{a.dtype.itemsize}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_where_or_zero_is_np_where_bit_for_bit(dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((9, 6)).astype(dtype)
    x[0, 0], x[1, 1], x[2, 2], x[3, 3] = np.nan, np.inf, -0.0, -np.inf
    c = rng.random((9, 6)) > 0.5
    c[0, 0] = c[1, 1] = c[2, 2] = True
    for xx, cc in [(x, c), (x.T, c.T), (x[::2], c[::2])]:
        want = np.where(cc, xx, 0.0)
        got = where_or_zero(cc, xx)
        assert got.dtype == want.dtype and got.shape == want.shape
        assert (_bits(got) == _bits(want)).all()
        out = np.empty(xx.shape, dtype)
        assert where_or_zero(cc, xx, out=out) is not None and (_bits(out) == _bits(want)).all()


def test_relu_gate_is_written_branch_free_and_keeps_nan_out_of_dropped_rows():
    g = dsl.trace(lambda x, w: dsl.sum(dsl.relu(x) * w), x=f64[4, 3], w=f64[4, 3])
    fn = compiler.compile(compiler.grad(g, wrt=["x"]))
    assert "where_or_zero(" in fn.source and "def where_or_zero" in fn.source
    x = np.array([[1., -1, 2], [-3, 4, -5], [6, -7, 8], [-9, 10, 11]])
    w = np.full((4, 3), np.inf)
    w[x > 0] = 2.0                          # the upstream gradient is inf where relu is off
    got = fn(x=x, w=w)["dx"]
    np.testing.assert_array_equal(got, np.where(x > 0, 2.0, 0.0))   # 0, not inf·0 = nan
    assert "where_or_zero" not in compiler.compile(g).source        # only where it is used


@pytest.mark.parametrize("spec,dtype", [(f32, np.float32), (f64, np.float64)])
def test_reductions_as_methods_equal_numpy_functions(spec, dtype):
    def model(x):
        return {"m": dsl.mean(x), "m0": dsl.mean(x, axis=0), "s1": dsl.sum(x, axis=1),
                "mx": dsl.max(x, axis=1)}
    g = dsl.trace(model, x=spec[5, 7])
    fn = compiler.compile(g, passes=[])
    assert "np.mean(" not in fn.source and ".sum(" in fn.source
    x = np.random.default_rng(1).standard_normal((5, 7)).astype(dtype)
    out = fn(x=x)
    assert out["m"] == np.mean(x) and out["m"].dtype == dtype      # bit for bit
    np.testing.assert_array_equal(out["m0"], np.mean(x, axis=0))
    np.testing.assert_array_equal(out["s1"], np.sum(x, axis=1))
    np.testing.assert_array_equal(out["mx"], np.max(x, axis=1))


def test_donation_only_where_nothing_reads_the_input_afterwards():
    text = """graph upd(W: f64[3,2], g: f64[3,2]) {
      t0: f64[] = const() {value=0.1, dtype='f64', shape=()}
      t1: f64[3,2] = mul(t0, g)
      W_next: f64[3,2] = sub(W, t1)
      later: f64[3,2] = mul(W, g)
      return W_next=W_next, later=later
    }"""
    late = compiler.parse_graph(text)
    assert donations(late, {"W_next": "W"}) == {}          # W is read after the update
    view = compiler.parse_graph(text.replace("later: f64[3,2] = mul(W, g)",
                                             "Wt: f64[2,3] = transpose(W) {perm=(1, 0)}\n"
                                             "      later: f64[2,3] = neg(Wt)")
                                .replace("later: f64[3,2]", "later: f64[2,3]"))
    ok = compiler.parse_graph(text.replace("later: f64[3,2] = mul(W, g)",
                                           "later: f64[3,2] = mul(t1, g)"))
    assert donations(ok, {"W_next": "W"}) == {"W_next": "W"}
    assert donations(ok, {"W_next": "g"}) == {}            # g is read by `later`
    rng = np.random.default_rng(2)
    for graph in (late, view, ok):
        W, g = rng.standard_normal((3, 2)), rng.standard_normal((3, 2))
        want = compiler.interpret(graph, W=W, g=g)
        kernel = compiler.compile(graph, passes=[])
        run = kernel.bind({"W": W}, donate={"W_next": "W"})
        got = run(g=g)
        for k in want:
            np.testing.assert_allclose(got[k], want[k], rtol=1e-15)
        assert (got["W_next"] is W) == (graph is ok)
    assert "out=W)" in kernel.bound_source and "[into W]" in kernel.bound_source


def test_bound_call_checks_what_it_does_not_hold():
    def model(W, X, y):
        return dsl.softmax_cross_entropy(X @ W, y)
    g = compiler.grad(dsl.trace(model, W=f64[2, 3], X=f64[4, 2], y=i64[4]), wrt=["W"])
    kernel = compiler.compile(g)
    W = np.ones((2, 3))
    run = kernel.bind({"W": W})
    X, y = np.arange(8.).reshape(4, 2), np.array([0, 1, 2, 0])
    want = compiler.interpret(g, W=W, X=X, y=y)
    np.testing.assert_allclose(run(X=X, y=y)["dW"], want["dW"], rtol=1e-14)
    np.testing.assert_allclose(run(X=X.tolist(), y=y)["dW"], want["dW"], rtol=1e-14)
    with pytest.raises(ValueError, match="argument 'y': label 3 is outside"):
        run(X=X, y=np.array([0, 1, 3, 0]))
    with pytest.raises(ValueError, match="argument 'y': label -1"):
        run(X=X, y=np.array([0, -1, 2, 0]))
    with pytest.raises(TypeError, match="argument 'X': dtype complex128"):
        run(X=X.astype(complex), y=y)
    with pytest.raises(TypeError, match="missing 'y'"):
        run(X=X)
    assert kernel.bind({"W": W.astype(np.float32)}) is None      # not exact: no bound call


def test_train_step_updates_in_place_and_matches_hand_written_sgd():
    rng = np.random.default_rng(3)
    P = {"W": rng.standard_normal((2, 3)), "b": np.zeros(3)}

    def model(W, b, X, y):
        return dsl.softmax_cross_entropy(X @ W + b, y)
    step = compiler.train_step(model, P, {"X": f64[5, 2], "y": i64[5]},
                               compiler.optim.SGD(lr=0.5))
    W_id = id(step.params["W"])
    X, y = rng.standard_normal((5, 2)), np.array([0, 1, 2, 1, 0])
    W, b = P["W"].copy(), P["b"].copy()
    for _ in range(3):
        s = X @ W + b
        p = np.exp(s - s.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        loss = -np.log(p[np.arange(5), y]).mean()
        p[np.arange(5), y] -= 1
        dW, db = X.T @ p / 5, p.sum(0) / 5
        assert step(X=X, y=y) == pytest.approx(loss, rel=1e-13)
        W, b = W - 0.5 * dW, b - 0.5 * db
        np.testing.assert_allclose(step.params["W"], W, rtol=1e-13)
        np.testing.assert_allclose(step.params["b"], b, rtol=1e-13, atol=1e-16)
    assert id(step.params["W"]) == W_id and step.t == 3
    assert "out=W)" in step._last.kernel.bound_source
