"""Run-time batch size for convolution and pooling (issue 17.3 part 3): a graph with x: f64["N",
C, H, W] compiles on the LLVM backend to ONE native function that reads N when it runs
(compiler/codegen/llvm_conv.py, llvm_dims.py), for the forward ops and the ops their gate rules
are made of.  Oracles: the NumPy backend, central finite differences in float64 of the NumPy
backend's forward, and a NumPy-backend train step fed the same batches."""
from __future__ import annotations

import threading

import numpy as np
import pytest

import compiler
from compiler.codegen import llvm_conv, llvm_emit
from compiler.ops import OPS
from frontends import dsl
from frontends.dsl import f32, f64, i64
from graphs import check_central_differences

SIZES = (1, 3, 8)
# the ops lowered in llvm_conv.py, read off the op table
CONV_OPS = sorted(op for op, rec in OPS.items() if type(rec.llvm).__module__ == llvm_conv.__name__)


def strided(x, w, c, s):
    """Stride, padding, dilation, an epilogue (per-image shift s [N, 4, 1, 1], bias, relu),
    overlapping max windows, avg pool, global average pool."""
    y = dsl.relu(dsl.conv2d(x, w, stride=(2, 1), padding=(1, 0), dilation=(1, 2)) + s
                 + c.reshape(1, 4, 1, 1))
    a = dsl.max_pool2d(y, 2, stride=1)
    return dsl.sum(a * a) + dsl.sum(dsl.global_avg_pool(dsl.avg_pool2d(y, (2, 1))) ** 2)


def grouped(x, w, v):
    """Groups = 2, then a 1×1 convolution (the direct path: the image is its own columns)."""
    y = dsl.tanh(dsl.conv2d(x, w, padding=1, groups=2))
    z = dsl.conv2d(y, v)
    return dsl.sum(dsl.max_pool2d(z, 3, stride=(2, 1)) ** 2) + dsl.sum(dsl.tanh(z))


def depthwise_wide(x, w):
    """Depthwise (groups = C) and a pooling window larger than UNROLL_WINDOW (a loop)."""
    y = dsl.conv2d(x, w, stride=2, padding=1, groups=4)
    return (dsl.sum(dsl.sigmoid(dsl.max_pool2d(y, (5, 4), 2)))
            + dsl.sum(dsl.avg_pool2d(y, (5, 4), 2) ** 2))


# (model, {input: shape after N}, inputs with the batch axis)
MODELS = {
    "strided": (strided, {"x": (3, 7, 5), "w": (4, 3, 3, 2), "c": (4,), "s": (4, 1, 1)},
                ("x", "s")),
    "grouped": (grouped, {"x": (4, 5, 5), "w": (6, 2, 3, 3), "v": (2, 6, 1, 1)}, ("x",)),
    "depthwise_wide": (depthwise_wide, {"x": (4, 17, 15), "w": (4, 1, 3, 3)}, ("x",)),
}


def trace(name, t=f64, batch="N"):
    fn, shapes, batched = MODELS[name]
    return dsl.trace(fn, **{k: t[((batch,) if k in batched else ()) + s]
                            for k, s in shapes.items()})


def arrays(name, n, rng, dtype=np.float64):
    _, shapes, batched = MODELS[name]
    return {k: rng.standard_normal(((n,) if k in batched else ()) + s).astype(dtype)
            for k, s in shapes.items()}


def fd_check(forward, args, grads, rng, picks=24):
    """Central differences (tests/graphs.py) at `picks` random entries of every input, and at
    the first and last entries (the last image: the end of the run-time batch loop)."""
    def entries(size):
        idx = set(rng.choice(size, min(picks, size), replace=False).tolist())
        return sorted(idx | {0, size - 1})
    check_central_differences(forward, args, grads, entries=entries)


def test_every_conv_lowering_takes_run_time_sizes_and_is_covered():
    """Each op lowered in llvm_conv.py declares runtime_sizes, and the gradient graphs of the
    models here hold every one of them (so the tests below run each lowering at run-time N)."""
    assert len(CONV_OPS) == 8, CONV_OPS
    lows = llvm_emit.lowerings()
    assert [op for op in CONV_OPS if not getattr(lows[op], "runtime_sizes", False)] == []
    seen = set()
    for name in MODELS:
        seen |= {n.op for n in compiler.grad(trace(name)).nodes}
    assert sorted(seen & set(CONV_OPS)) == CONV_OPS


@pytest.mark.parametrize("name", sorted(MODELS))
def test_gradient_at_run_time_batch_sizes_f64(name, rng):
    """compile(grad(g)) with a symbolic N: one native function for N = 1, 3, 8, 3, which reads
    N when it runs; its values are the NumPy backend's and the central differences of the
    NumPy forward."""
    g = trace(name)
    dg = compiler.grad(g)
    fl, fn = compiler.compile(dg, backend="llvm"), compiler.compile(dg, backend="numpy")
    fwd = compiler.compile(g, backend="numpy")
    for n in SIZES + (3,):
        args = arrays(name, n, rng)
        got, want = fl(**args), fn(**args)
        assert set(got) == set(want)
        for k in want:
            np.testing.assert_allclose(got[k], want[k], rtol=1e-11, atol=1e-12,
                                       err_msg=f"{k} at N={n}")
        fd_check(lambda **a: float(fwd(**a)["out"]), args, got, rng)
    assert fl.specializations == 1
    assert "a run-time size" in fl.source
    if name == "strided":         # the shift, bias and relu run on each tile of the conv
        assert "fused into each tile" in fl.source


@pytest.mark.parametrize("name", sorted(MODELS))
def test_gradient_at_run_time_batch_sizes_f32(name, rng):
    """The f32 gradient with a symbolic N, against the f64 NumPy backend's gradient of the
    same (f32-rounded) arguments."""
    dg32, dg64 = compiler.grad(trace(name, f32)), compiler.grad(trace(name))
    fl, fn = compiler.compile(dg32, backend="llvm"), compiler.compile(dg64, backend="numpy")
    for n in SIZES:
        args = arrays(name, n, rng, np.float32)
        got, want = fl(**args), fn(**{k: a.astype(np.float64) for k, a in args.items()})
        for k in want:
            assert got[k].dtype == np.float32
            scale = max(1.0, float(np.max(np.abs(want[k]))))
            np.testing.assert_allclose(got[k], want[k], rtol=1e-4, atol=1e-4 * scale,
                                       err_msg=f"{k} at N={n}")
    assert fl.specializations == 1


@pytest.mark.parametrize("tile", [2 * 18 * 6 * 8, 4 * 18 * 8], ids=["rows", "row-segments"])
def test_column_tiles_at_run_time_batch_sizes(tile, rng, monkeypatch):
    """Column tiles smaller than the output (several row tiles with a short last one, or one
    row in segments) with padding at both ends, at N = 1, 3, 8 of one native function."""
    monkeypatch.setattr(llvm_conv, "TILE_BYTES", tile)

    def model(x, w, c):
        return dsl.sum(dsl.conv2d(x, w, stride=(1, 2), padding=(1, 2)) * c)
    g = dsl.trace(model, name=f"rt_tiles_{tile}", x=f64["N", 2, 7, 9], w=f64[3, 2, 3, 3],
                  c=f64["N", 3, 7, 6])
    dg = compiler.grad(g)
    fl, fn = compiler.compile(dg, backend="llvm"), compiler.compile(dg, backend="numpy")
    w = rng.standard_normal((3, 2, 3, 3))
    for n in SIZES:
        args = dict(x=rng.standard_normal((n, 2, 7, 9)), w=w,
                    c=rng.standard_normal((n, 3, 7, 6)))
        got, want = fl(**args), fn(**args)
        for k in want:
            np.testing.assert_allclose(got[k], want[k], rtol=1e-12, atol=1e-12,
                                       err_msg=f"{k} at N={n}")
    assert fl.specializations == 1


def test_two_dimension_names_and_an_empty_batch(rng):
    """Two batch names (N, M: two size slots), then N = 0: a zero size specializes (a second
    native function, llvm_dims.py) and gives the NumPy backend's empty dx and zero dw."""
    def two(x, z, w):
        return (dsl.sum(dsl.conv2d(x, w, padding=1) ** 2)
                + dsl.sum(dsl.avg_pool2d(dsl.relu(dsl.conv2d(z, w)), 2)))
    dg = compiler.grad(dsl.trace(two, x=f64["N", 2, 4, 4], z=f64["M", 2, 6, 6],
                                 w=f64[3, 2, 3, 3]))
    fl, fn = compiler.compile(dg, backend="llvm"), compiler.compile(dg, backend="numpy")
    w = rng.standard_normal((3, 2, 3, 3))
    for n, m in ((1, 3), (3, 1), (8, 2), (0, 2)):
        args = dict(x=rng.standard_normal((n, 2, 4, 4)), z=rng.standard_normal((m, 2, 6, 6)),
                    w=w)
        got, want = fl(**args), fn(**args)
        for k in want:
            assert got[k].shape == want[k].shape
            np.testing.assert_allclose(got[k], want[k], rtol=1e-12, atol=1e-12,
                                       err_msg=f"{k} at N={n}, M={m}")
        assert fl.specializations == (1 if n else 2)


def test_threads_calling_at_different_batch_sizes(rng):
    """6 threads making the first calls of one function at N = 1, 3, 8 at once (the call
    states are built under the lock, the native code once): each thread's results equal the
    serial ones."""
    dg = compiler.grad(trace("strided"))
    fl, fn = compiler.compile(dg, backend="llvm"), compiler.compile(dg, backend="numpy")
    cases = [arrays("strided", n, rng) for n in SIZES * 2]
    want = [fn(**a) for a in cases]
    got: list = [None] * len(cases)
    start = threading.Barrier(len(cases))

    def run(k):
        start.wait()
        for _ in range(3):
            got[k] = fl(**cases[k])
    threads = [threading.Thread(target=run, args=(k,)) for k in range(len(cases))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for w, g in zip(want, got):
        for k in w:
            np.testing.assert_allclose(g[k], w[k], rtol=1e-11, atol=1e-12, err_msg=k)
    assert fl.specializations == 1


def cnn(K1, c1, K2, c2, W, b, X, y):
    h1 = dsl.max_pool2d(dsl.relu(dsl.conv2d(X, K1, padding=1) + c1.reshape(1, 4, 1, 1)), 2)
    h2 = dsl.relu(dsl.conv2d(h1, K2, padding=1) + c2.reshape(1, 6, 1, 1))
    s = dsl.global_avg_pool(dsl.avg_pool2d(h2, 2)) @ W + b
    return {"loss": dsl.softmax_cross_entropy(s, y), "scores": s}


def cnn_params(seed=0):
    rng = np.random.default_rng(seed)
    return {"K1": rng.standard_normal((4, 1, 3, 3)) * 0.5, "c1": rng.standard_normal(4) * 0.1,
            "K2": rng.standard_normal((6, 4, 3, 3)) * 0.3, "c2": rng.standard_normal(6) * 0.1,
            "W": rng.standard_normal((6, 3)), "b": np.zeros(3)}


def test_cnn_train_step_compiles_once_for_every_batch_size(rng):
    """A CNN train step with X: f64["N", 1, 8, 8] (the last partial batch, the evaluation
    pass): step.compilations == 1 and one native function over batches of 8, 8, 3, 5, with the
    losses and parameters of the NumPy-backend step fed the same batches; the evaluation at two
    more sizes adds one compiled function, also one native function."""
    inputs = {"X": f64["N", 1, 8, 8], "y": i64["N"]}
    steps = [compiler.train_step(cnn, params=cnn_params(), inputs=inputs,
                                 optimizer=compiler.optim.Adam(lr=1e-2), backend=be)
             for be in ("llvm", "numpy")]
    for n in (8, 8, 3, 5):
        X, y = rng.random((n, 1, 8, 8)), rng.integers(0, 3, n)
        got, want = (s(X=X, y=y) for s in steps)
        assert got == pytest.approx(want, rel=1e-10), n
    sym = steps[0]
    assert sym.compilations == 1
    assert sym._last.kernel.specializations == 1
    for k in sym.params:
        np.testing.assert_allclose(sym.params[k], steps[1].params[k], rtol=1e-9, atol=1e-12,
                                   err_msg=k)
    for n in (11, 2):
        X, y = rng.random((n, 1, 8, 8)), rng.integers(0, 3, n)
        got, want = (s.evaluate(X=X, y=y) for s in steps)
        np.testing.assert_allclose(got["scores"], want["scores"], rtol=1e-10, atol=1e-12)
    assert sym.compilations == 2
    assert [c.kernel.specializations for c in sym._eval.values()] == [1]


BAD_GRAPHS = {      # the gate-rule ops read from text, a dimension name off the batch axis
    "conv2d_input_grad": "g: f64[N,C,2,2], w: f64[3,2,3,3]",
    "conv2d_weight_grad": "x: f64[N,C,4,4], g: f64[N,3,2,2]",
    "pool_fold": "g: f64[N,C,2,2,2,2]",
}
BAD_ATTRS = {
    "conv2d_input_grad": "size=(4, 4), stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1",
    "conv2d_weight_grad": "kernel=(3, 3), stride=(1, 1), padding=(0, 0), dilation=(1, 1), "
                          "groups=1",
    "pool_fold": "size=(4, 4), kernel=(2, 2), stride=(2, 2)",
}


@pytest.mark.parametrize("op", sorted(BAD_GRAPHS))
def test_a_dimension_name_off_the_batch_axis_is_a_shape_error(op):
    """Only the batch axis may be a name: a parsed graph with a named channel axis is refused
    with the shape rule's message (it was a TypeError from `"C" % groups` inside the rule)."""
    args = BAD_GRAPHS[op]
    names = ", ".join(a.split(":")[0] for a in args.split(", ") if ":" in a)
    text = (f"graph f({args}) {{\n  t0: f64[N,1,4,4] = {op}({names}) {{{BAD_ATTRS[op]}}}\n"
            "  return out=t0\n}")
    with pytest.raises(compiler.GradcError, match=rf"{op}: \w+ .* must have a known size "
                                                  r"along axis 1 \(only the batch axis"):
        compiler.parse_graph(text)
