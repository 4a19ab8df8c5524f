"""A symbolic batch dimension (issue 17.3, DESIGN.md principle 13): `f64["N", 784]` specs, the
shape rules, the text form, grad, the passes, memory planning, both backends and the argument
checks.  The oracle throughout is the same graph made concrete (compiler.specialize.specialize)
and compiled as before, plus float64 central differences and hand-derived numbers."""
from __future__ import annotations

import threading

import numpy as np
import pytest

import compiler
from compiler.interpret import interpret
from compiler.ir import ShapeError, TensorType, UnsupportedError, verify
from compiler.shapes import DimError
from compiler.specialize import specialize
from compiler.text import parse_graph
from frontends import cli, dsl
from frontends.dsl import f64, i64

BACKENDS = ("numpy", "llvm")
SIZES = (1, 17, 300)


def model(W, b, V, X, Z, y):
    """matmul, broadcasting over N, relu, a reshape keeping N, a slice of a fixed axis, a sum
    over N, a mean over N and the cross entropy (which divides by N)."""
    h = dsl.relu(X @ W + b)                               # [N, 4]
    z = Z.reshape(Z.shape[0], -1)[:, 1:5]                 # [N, 2, 3] -> [N, 6] -> [N, 4]
    s = (h * z) @ V                                       # [N, 3]
    return (dsl.softmax_cross_entropy(s, y) + 0.1 * dsl.mean(h * h)
            + 0.01 * dsl.sum(dsl.sum(s, axis=0) ** 2))


SPECS = dict(W=f64[2, 4], b=f64[4], V=f64[4, 3], X=f64["N", 2], Z=f64["N", 2, 3], y=i64["N"])


def data(n, seed=0):
    rng = np.random.default_rng(seed + n)
    return dict(W=rng.normal(size=(2, 4)), b=rng.normal(size=4), V=rng.normal(size=(4, 3)),
                X=rng.normal(size=(n, 2)), Z=rng.normal(size=(n, 2, 3)),
                y=rng.integers(0, 3, n))


@pytest.fixture(scope="module")
def dg():
    return compiler.grad(dsl.trace(model, **SPECS), wrt=["W", "b", "V", "X"])


@pytest.fixture(scope="module", params=BACKENDS)
def compiled(request, dg):
    return compiler.compile(dg, backend=request.param)


def close(got: dict, want: dict, rtol=1e-10):
    assert set(got) == set(want)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=rtol, atol=1e-12, err_msg=k)


def test_spec_types_and_text_round_trip(dg):
    assert SPECS["X"] == TensorType("f64", ("N", 2)) and str(SPECS["X"]) == "f64[N,2]"
    text = str(dg)
    assert "X: f64[N,2]" in text and "dX: f64[N,2]" in text
    assert parse_graph(text) == dg
    g = parse_graph("graph f(x: f64[N,784], w: f64[784]) {\n  t0: f64[N,784] = mul(x, w)\n"
                    "  t1: f64[] = mean(t0) {axes=(0, 1), keepdims=False}\n  return out=t1\n}")
    assert g.inputs[0].shape == ("N", 784) and parse_graph(str(g)) == g


@pytest.mark.parametrize("n", SIZES)
def test_one_function_every_size_against_the_concrete_compile(compiled, dg, n):
    args = data(n)
    want = compiler.compile(specialize(dg, N=n), backend="numpy")(**args)
    close(compiled(**args), want)
    close(interpret(dg, args), want)


def test_gradients_against_finite_differences(dg):
    fn = compiler.compile(dg, backend="numpy")
    args = data(5, seed=3)
    got = fn(**args)
    loss = compiler.compile(dsl.trace(model, **SPECS), backend="numpy")
    for x in ("W", "b", "V", "X"):
        num = np.zeros_like(args[x])
        for i in np.ndindex(args[x].shape):
            hi, lo = dict(args), dict(args)
            hi[x], lo[x] = args[x].copy(), args[x].copy()
            hi[x][i] += 1e-6
            lo[x][i] -= 1e-6
            num[i] = (loss(**hi)["out"] - loss(**lo)["out"]) / 2e-6
        np.testing.assert_allclose(got["d" + x], num, rtol=1e-5, atol=1e-7, err_msg=x)


def test_mean_over_n_divides_by_the_calls_n():
    """d/dx mean(x) = 1/N for the N of each call (hand-derived), on both backends."""
    g = compiler.grad(dsl.trace(lambda x: dsl.mean(x), x=f64["N"]))
    for backend in BACKENDS:
        fn = compiler.compile(g, backend=backend)
        for n in (1, 4, 10):
            out = fn(x=np.arange(n, dtype=float))
            assert out["out"] == pytest.approx((n - 1) / 2)
            np.testing.assert_array_equal(out["dx"], np.full(n, 1 / n))


def test_inputs_sharing_n_must_agree(compiled):
    args = data(6)
    args["y"] = args["y"][:5]
    with pytest.raises(DimError, match=r"argument 'y' has N = 5 .*argument 'X' has N = 6"):
        compiled(**args)
    args = data(6)
    args["Z"] = np.zeros((6, 3, 2))
    with pytest.raises(ValueError, match=r"argument 'Z': shape \(6, 3, 2\) does not match the "
                                         r"declared f64\[N,2,3\] \(shape \(N, 2, 3\)\)"):
        compiled(**args)
    with pytest.raises(ValueError, match="argument 'X'"):
        compiled(**dict(data(6), X=np.zeros(6)))


def test_empty_batch_n0_is_ieee_on_every_backend():
    """N = 0 is allowed: a sum over N is 0 and a mean over N is nan (0/0), as NumPy and the
    concrete compile of f64[0] say."""
    g = compiler.grad(dsl.trace(lambda w, x: dsl.mean(x @ w) + dsl.sum(x @ w),
                                w=f64[2], x=f64["N", 2]))
    args = dict(w=np.ones(2), x=np.zeros((0, 2)))
    want = compiler.compile(specialize(g, N=0), backend="numpy")(**args)
    assert np.isnan(want["out"])
    for backend in BACKENDS:
        got = compiler.compile(g, backend=backend)(**args)
        assert np.isnan(got["out"]) and got["dx"].shape == (0, 2)
        np.testing.assert_array_equal(np.isnan(got["dw"]), np.isnan(want["dw"]))


@pytest.mark.parametrize("backend", BACKENDS)
def test_threads_with_different_n_share_one_function(backend, dg):
    fn = compiler.compile(dg, backend=backend)
    sizes = [3, 40, 1, 17, 300, 8] * 2
    serial = [fn(**data(n)) for n in sizes]
    results: dict = {}
    barrier = threading.Barrier(len(sizes))

    def work(k, n):
        barrier.wait()
        for _ in range(3):
            results[k] = fn(**data(n))
    threads = [threading.Thread(target=work, args=(k, n)) for k, n in enumerate(sizes)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k in range(len(sizes)):
        close(results[k], serial[k], rtol=0)


def test_planned_buffers_are_sized_per_call():
    """A graph large enough for memory planning (f64[N,64]: N counts as shapes.NOMINAL) gets
    buffers of the call's N, per thread and per size, each call matching the concrete plan."""
    g = compiler.grad(dsl.trace(lambda w, x: dsl.sum(dsl.tanh(x * w) * x), w=f64[64],
                                x=f64["N", 64]))
    fn = compiler.compile(g, backend="numpy")
    assert fn.plan is not None and ("f64", ("N", 64)) in fn.plan.buffers
    for n in (200, 3, 200, 129):
        args = dict(w=np.linspace(-1, 1, 64), x=np.random.default_rng(n).normal(size=(n, 64)))
        close(fn(**args), compiler.compile(specialize(g, N=n), backend="numpy")(**args))


def test_passes_keep_symbolic_sizes():
    """Σ over N of a broadcast constant is not folded into a number (N is the call's)."""
    g = compiler.grad(dsl.trace(lambda w, x: dsl.sum(w * dsl.broadcast_to(dsl.exp(w * 0.0),
                                                                          x.shape) + x),
                                w=f64[()], x=f64["N", 3]))
    fn = compiler.compile(g, backend="numpy")
    assert "N" in fn.source
    for n in (2, 5):
        out = fn(w=np.float64(0.5), x=np.zeros((n, 3)))
        assert out["out"] == pytest.approx(0.5 * 3 * n) and out["dw"] == pytest.approx(3 * n)


def test_shape_rules_with_names():
    with pytest.raises(ShapeError, match="do not broadcast"):
        dsl.trace(lambda a, b: dsl.sum(a + b), a=f64["N", 3], b=f64[5, 3])
    with pytest.raises(ShapeError, match="do not broadcast"):
        dsl.trace(lambda a, b: dsl.sum(a + b), a=f64["N", 3], b=f64["M", 3])
    with pytest.raises(ShapeError, match="do not chain"):
        dsl.trace(lambda a, b: dsl.sum(a @ b), a=f64[3, "N"], b=f64[3, 3])
    with pytest.raises(ShapeError, match="cannot reshape"):
        dsl.trace(lambda a: dsl.sum(a.reshape(-1, 5)), a=f64["N", 3])
    with pytest.raises(UnsupportedError, match="takes only ':'"):
        dsl.trace(lambda a: dsl.sum(a[1:]), a=f64["N", 3])
    with pytest.raises(UnsupportedError, match="names of sizes"):
        f64["for", 3]
    g = dsl.trace(lambda a: a.reshape(-1, 2, 3) * 2.0, a=f64["N", 6])
    assert g.outputs["out"].shape == ("N", 2, 3)
    with pytest.raises(compiler.ParseError, match="no input of the graph has"):
        parse_graph("graph f(x: f64[3]) {\n  t0: f64[M] = const() {value=0.0, dtype='f64', "
                    "shape=('M',)}\n  return out=t0\n}")
    verify(dsl.trace(lambda a: dsl.softmax(a[:, 1:], axis=1), a=f64["N", 3]))


@pytest.mark.parametrize("backend", BACKENDS)
def test_train_step_compiles_once_for_every_batch_size(backend):
    """step.compilations == 1 after batches of 64, 64, 17 and 300, with the losses of a
    concrete-shape step fed the same batches (dropout included: the masks are drawn at the
    batch's N from the same seed)."""
    def loss(W1, b1, W2, X, y):
        return dsl.softmax_cross_entropy(dsl.dropout(dsl.tanh(X @ W1 + b1), 0.25) @ W2, y)
    rng = np.random.default_rng(1)
    params = dict(W1=rng.normal(size=(2, 8)), b1=np.zeros(8), W2=rng.normal(size=(8, 3)))
    batches = [(rng.normal(size=(n, 2)), rng.integers(0, 3, n)) for n in (64, 64, 17, 300)]
    step = compiler.train_step(loss, params=params, inputs={"X": f64["N", 2], "y": i64["N"]},
                               optimizer=compiler.optim.Adam(lr=1e-2), backend=backend)
    fixed = compiler.train_step(loss, params=params, inputs={"X": f64[64, 2], "y": i64[64]},
                                optimizer=compiler.optim.Adam(lr=1e-2), backend="numpy")
    for X, y in batches:
        assert step(X=X, y=y) == pytest.approx(fixed(X=X, y=y), rel=1e-10)
    assert step.compilations == 1
    if backend == "llvm":    # one compiled step, one native kernel taking N at run time
        assert step._last.kernel.specializations == 1            # (codegen/llvm_dims.py)
    for k in params:
        np.testing.assert_allclose(step.params[k], fixed.params[k], rtol=1e-10)


def test_concrete_shapes_compile_once_per_batch_size():
    """Part 4: without a dimension name each new batch shape compiles a variant once, and
    step.compilations counts exactly those."""
    def loss(W, X, y):
        return dsl.softmax_cross_entropy(X @ W, y)
    step = compiler.train_step(loss, params={"W": np.zeros((2, 3))},
                               inputs={"X": f64[8, 2], "y": i64[8]},
                               optimizer=compiler.optim.SGD(lr=0.1), backend="numpy")
    assert step.compilations == 1
    counts = []
    for n in (8, 8, 5, 8, 5, 9):
        step(X=np.ones((n, 2)), y=np.zeros(n, dtype=np.int64))
        counts.append(step.compilations)
    assert counts == [1, 1, 2, 2, 2, 3]


def test_rules_refusing_a_size_are_errors_at_call_time():
    """A max over N = 0 elements (refused at trace time for f64[0]) is a ShapeError naming the
    sizes on every backend and the interpreter, not NumPy's error from inside the code."""
    g = compiler.grad(dsl.trace(lambda x: dsl.max(x), x=f64["N"]))
    for run in [compiler.compile(g, backend=b) for b in BACKENDS] + [
            lambda **a: interpret(g, a)]:
        assert run(x=np.array([1.0, 3.0, 3.0]))["dx"].tolist() == [0.0, 0.5, 0.5]
        with pytest.raises(ShapeError, match=r"with N = 0: max: reduction over an empty axis"):
            run(x=np.zeros(0))


def test_checks_run_on_symbolic_graphs():
    """check_against_sympy and check_finite_differences take a symbolic graph (evaluated at
    N = specialize.CHECK_SIZE, where the concrete graph's checks would run)."""
    g = dsl.trace(lambda w, x: dsl.mean(dsl.tanh(x @ w)), w=f64[2], x=f64["N", 2])
    assert compiler.check_against_sympy(g).ok and compiler.check_finite_differences(g).ok


def test_dimension_names_the_code_uses_are_refused():
    g = compiler.grad(dsl.trace(lambda x: dsl.mean(x), x=f64["np"]))
    with pytest.raises(UnsupportedError, match="dimension name 'np'"):
        compiler.compile(g, backend="numpy")


def test_cli_takes_a_named_dimension(tmp_path, capsys):
    path = tmp_path / "m.py"
    path.write_text("from frontends import dsl\nfrom frontends.dsl import f64, i64\n\n\n"
                    "def net(W: f64[2, 3], X: f64[4, 2], y: i64[4]):\n"
                    "    return dsl.softmax_cross_entropy(X @ W, y)\n")
    assert cli.parse_spec("f64[N,2]") == TensorType("f64", ("N", 2))
    assert cli.main(["emit", f"{path}:net", "--shape", "X=f64[N,2]", "--shape", "y=i64[N]",
                     "-o", str(tmp_path / "out.py")]) == 0
    source = (tmp_path / "out.py").read_text()
    assert "N = X.shape[0]" in source and "X: f64[N,2]" in source
    assert cli.main(["check", f"{path}:net", "--shape", "X=f64[N,2]", "--shape",
                     "y=i64[N]"]) == 0
    assert cli.main(["bench", f"{path}:net", "--shape", "X=f64[N,2]", "--shape",
                     "y=i64[N]"]) == 2
    assert "needs sizes for the dimension names of X: f64[N,2]" in capsys.readouterr().err


def test_train_step_planned_and_plain_code_by_batch_size():
    """A symbolic step large enough for memory planning runs the planned code at a large N
    and the plain code at a small one (as concrete compiles of those sizes would), each
    updating the parameters in place exactly as a concrete-shape step does."""
    def loss(W, X, y):
        return dsl.softmax_cross_entropy(dsl.tanh(X @ W), y)
    rng = np.random.default_rng(2)
    W = rng.normal(size=(64, 64)) * 0.1
    step = compiler.train_step(loss, params={"W": W}, inputs={"X": f64["N", 64], "y": i64["N"]},
                               optimizer=compiler.optim.SGD(lr=0.5))
    fixed = compiler.train_step(loss, params={"W": W}, inputs={"X": f64[3, 64], "y": i64[3]},
                                optimizer=compiler.optim.SGD(lr=0.5))
    kernel = step._last.kernel
    for n in (200, 3, 200, 3):
        X, y = rng.normal(size=(n, 64)), rng.integers(0, 64, n)
        assert step(X=X, y=y) == pytest.approx(fixed(X=X, y=y), rel=1e-12)
        assert kernel._planned([W, X, y]) is (n == 200)     # (the inputs W, X, y first)
    np.testing.assert_allclose(step.params["W"], fixed.params["W"], rtol=1e-12)
    assert step.compilations == 1 and fixed.compilations == 2


def test_len_of_a_named_axis_is_refused():
    with pytest.raises(TypeError, match=r"len\(\) of traced value x f64\[N\]"):
        dsl.trace(lambda x: dsl.sum(x) * len(x), x=f64["N"])


@pytest.mark.parametrize("xshape", [("N", 3, 4), (2, "N", 4)])
@pytest.mark.parametrize("backend", ["numpy", "llvm"])
def test_a_named_stack_times_a_matrix_is_a_batched_product(xshape, backend):
    """X: f64[N, 3, 4] @ W: f64[4, 5] has no row count N·3 to name: it was refused with a
    bogus shape ('NNN', 4) (or a raw TypeError); now it is a batched product.  Oracles: NumPy's
    matmul for the value, central differences for dW."""
    def f(X, W):
        return dsl.sum(dsl.tanh(X @ W) ** 2)
    fn = compiler.compile(compiler.grad(dsl.trace(f, X=f64[xshape], W=f64[4, 5])),
                          backend=backend)
    rng = np.random.default_rng(3)
    W = rng.normal(size=(4, 5))
    for n in (1, 4, 7):
        X = rng.normal(size=tuple(n if d == "N" else d for d in xshape))
        out = fn(X=X, W=W)
        assert out["out"] == pytest.approx(np.sum(np.tanh(X @ W) ** 2), rel=1e-12)
        e = np.zeros_like(W)
        e[1, 2] = 1e-6
        fd = (np.sum(np.tanh(X @ (W + e)) ** 2) - np.sum(np.tanh(X @ (W - e)) ** 2)) / 2e-6
        assert out["dW"][1, 2] == pytest.approx(fd, rel=1e-6, abs=1e-8)


def test_errors_after_a_size_is_kept_name_the_symbolic_types():
    """Once a size's kernel is kept, a bad argument at that size is said as the numpy backend
    says it (i64[N]), not with the kept kernel's fixed type (i64[7])."""
    g = compiler.grad(dsl.trace(lambda X, y, W: dsl.softmax_cross_entropy(X @ W, y),
                                X=f64["N", 3], y=i64["N"], W=f64[3, 4]))
    X, y, W = np.ones((7, 3)), np.zeros(7, np.int64), np.ones((3, 4))
    said = {}
    for backend in ("numpy", "llvm"):
        fn = compiler.compile(g, backend=backend)
        fn(X=X, y=y, W=W)
        with pytest.raises(TypeError) as e:
            fn(X=X, y=y.astype(np.float64), W=W)
        said[backend] = str(e.value)
    assert "i64[N]" in said["llvm"] and said["llvm"] == said["numpy"]
