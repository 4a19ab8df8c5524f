"""Convolution and pooling (compiler/ops/conv.py): both backends and the interpreter against an
independent loop reference, gradients against finite differences of that reference, the LLVM
column tiles at their edges, the max-pool tie rule, and the shape errors."""
import os
import threading

import numpy as np
import pytest

import compiler
from compiler.codegen import llvm_conv
from compiler.ir import ShapeError
from frontends import dsl
from frontends.dsl import f32, f64

BACKENDS = ("numpy", "llvm")


def loop_conv(x, w, stride, padding, dilation, groups):
    """The definition, one output element at a time (PyTorch's cross-correlation)."""
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    oh = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    ow = (wd + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    y = np.zeros((n, o, oh, ow))
    og = o // groups
    for b in range(n):
        for f in range(o):
            g = f // og
            for i in range(oh):
                for j in range(ow):
                    acc = 0.0
                    for k in range(cg):
                        for p in range(kh):
                            for q in range(kw):
                                ih, iw = i * sh - ph + p * dh, j * sw - pw + q * dw
                                if 0 <= ih < h and 0 <= iw < wd:
                                    acc += x[b, g * cg + k, ih, iw] * w[f, k, p, q]
                    y[b, f, i, j] = acc
    return y


def fd_grad(fn, a, h=1e-6):
    out = np.zeros_like(a)
    for idx in np.ndindex(*a.shape):
        old = a[idx]
        a[idx] = old + h
        up = fn()
        a[idx] = old - h
        down = fn()
        a[idx] = old
        out[idx] = (up - down) / (2 * h)
    return out


# (x shape, w shape, stride, padding, dilation, groups): odd sizes, every knob
CASES = [
    ((2, 3, 7, 5), (4, 3, 3, 2), (2, 1), (1, 0), (1, 2), 1),
    ((1, 4, 6, 6), (6, 2, 3, 3), (1, 1), (1, 1), (1, 1), 2),
    ((2, 2, 5, 5), (3, 2, 1, 1), (1, 1), (0, 0), (1, 1), 1),       # 1x1: the direct path
    ((1, 4, 9, 9), (4, 1, 3, 3), (2, 2), (1, 1), (1, 1), 4),       # depthwise
    ((1, 1, 3, 3), (2, 1, 3, 3), (1, 1), (2, 2), (1, 1), 1),       # padding > kernel/2
]


def _conv_model(stride, padding, dilation, groups):
    def model(x, w, c):
        y = dsl.conv2d(x, w, stride=stride, padding=padding, dilation=dilation, groups=groups)
        return dsl.sum(y * c)
    return model


@pytest.mark.parametrize("case", CASES, ids=[f"case{k}" for k in range(len(CASES))])
def test_conv2d_and_gradients_vs_loop_reference(case, rng):
    xs, ws, s, p, d, groups = case
    x, w = rng.standard_normal(xs), rng.standard_normal(ws)
    want = loop_conv(x, w, s, p, d, groups)
    c = rng.standard_normal(want.shape)
    g = dsl.trace(_conv_model(s, p, d, groups), x=f64[xs], w=f64[ws], c=f64[want.shape])
    dg = compiler.grad(g, wrt=["x", "w"])
    dx = fd_grad(lambda: np.sum(loop_conv(x, w, s, p, d, groups) * c), x)
    dw = fd_grad(lambda: np.sum(loop_conv(x, w, s, p, d, groups) * c), w)
    ref = compiler.interpret(dg, x=x, w=w, c=c)
    for be in BACKENDS:
        out = compiler.compile(dg, backend=be)(x=x, w=w, c=c)
        assert out["out"] == pytest.approx(np.sum(want * c), rel=1e-12), be
        np.testing.assert_allclose(out["dx"], dx, rtol=1e-6, atol=1e-8, err_msg=be)
        np.testing.assert_allclose(out["dw"], dw, rtol=1e-6, atol=1e-8, err_msg=be)
        np.testing.assert_allclose(out["dx"], ref["dx"], rtol=1e-12, atol=1e-12, err_msg=be)
    y = compiler.compile(dsl.trace(lambda x, w: dsl.conv2d(x, w, s, p, d, groups),
                                   x=f32[xs], w=f32[ws]), backend="llvm")
    np.testing.assert_allclose(y(x=x.astype(np.float32), w=w.astype(np.float32))["out"], want,
                               rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("tile", [2 * 18 * 6 * 8, 4 * 18 * 8], ids=["rows", "row-segments"])
def test_llvm_column_tiles_at_their_edges(tile, rng, monkeypatch):
    """A tile smaller than the output: several row tiles with a short last one (rows), or
    one row split into segments (a row's columns exceed the tile) with padding at both ends.
    Here K = C·KH·KW = 18 and the output is 7×6: tiles of 2 rows (2, 2, 2, 1), or segments of
    4 columns (4, 2)."""
    monkeypatch.setattr(llvm_conv, "TILE_BYTES", tile)
    xs, ws, s, p, d = (2, 2, 7, 9), (3, 2, 3, 3), (1, 2), (1, 2), (1, 1)
    x, w = rng.standard_normal(xs), rng.standard_normal(ws)
    want = loop_conv(x, w, s, p, d, 1)
    c = rng.standard_normal(want.shape)
    g = dsl.trace(_conv_model(s, p, d, 1), name=f"tiles_{tile}", x=f64[xs], w=f64[ws],
                  c=f64[want.shape])
    dg = compiler.grad(g, wrt=["x", "w"])
    with_tiles = compiler.compile(dg, backend="llvm")
    out = with_tiles(x=x, w=w, c=c)
    ref = compiler.interpret(dg, x=x, w=w, c=c)
    for k in ("out", "dx", "dw"):
        np.testing.assert_allclose(out[k], ref[k], rtol=1e-12, atol=1e-12, err_msg=k)


def test_conv1d_is_the_1d_correlation(rng):
    x, w = rng.standard_normal((2, 3, 11)), rng.standard_normal((4, 3, 3))
    want = np.zeros((2, 4, 6))
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1)))
    for b in range(2):
        for o in range(4):
            for c in range(3):       # stride 2, padding 1: np.correlate, every second value
                want[b, o] += np.correlate(xp[b, c], w[o, c], mode="valid")[::2]
    g = dsl.trace(lambda x, w: dsl.conv1d(x, w, stride=2, padding=1), x=f64[2, 3, 11],
                  w=f64[4, 3, 3])
    assert [n.op for n in g.nodes].count("conv2d") == 1
    for be in BACKENDS:
        np.testing.assert_allclose(compiler.compile(g, backend=be)(x=x, w=w)["out"], want,
                                   rtol=1e-12, atol=1e-12)


def _pool_grad(op, x, kernel, stride, backend):
    fn = getattr(dsl, op)
    g = dsl.trace(lambda x: dsl.sum(fn(x, kernel, stride)), x=f64[x.shape])
    return compiler.compile(compiler.grad(g), backend=backend)(x=x)


@pytest.mark.parametrize("backend", BACKENDS)
def test_max_pool_tie_rule(backend):
    """Each window splits its gradient evenly between the elements equal to its maximum;
    overlapping windows add their shares (documented in compiler/ops/conv.py)."""
    x = np.zeros((1, 1, 4, 4))
    x[0, 0, :2, 2:] = [[5.0, 5.0], [1.0, 2.0]]          # window (0, 1): a tie of two
    x[0, 0, 2:, 2:] = [[3.0, 1.0], [0.0, 0.5]]          # window (1, 1): one maximum
    out = _pool_grad("max_pool2d", x, 2, 2, backend)      # window (0, 0), (1, 0): four zeros
    want = np.zeros((1, 1, 4, 4))
    want[0, 0, :2, :2] = want[0, 0, 2:, :2] = 0.25
    want[0, 0, 0, 2:] = 0.5
    want[0, 0, 2, 2] = 1.0
    np.testing.assert_array_equal(out["dx"], want)
    assert out["out"] == 0 + 5 + 0 + 3
    flat = np.full((1, 1, 3, 3), 7.0)          # overlapping 2x2 windows, stride 1, all tied
    got = _pool_grad("max_pool2d", flat, 2, 1, backend)["dx"][0, 0]
    np.testing.assert_array_equal(got, np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]]) / 4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_pools_vs_loops(backend, rng):
    x = rng.standard_normal((2, 3, 7, 5))
    for op, red in (("max_pool2d", np.max), ("avg_pool2d", np.mean)):
        want = np.array([[[[red(x[b, c, i * 2:i * 2 + 3, j:j + 3]) for j in range(3)]
                           for i in range(3)] for c in range(3)] for b in range(2)])
        g = dsl.trace(lambda x: getattr(dsl, op)(x, 3, (2, 1)), x=f64[2, 3, 7, 5])
        got = compiler.compile(g, backend=backend)(x=x)["out"]
        np.testing.assert_allclose(got, want, rtol=1e-14, err_msg=op)
    g = dsl.trace(lambda x: dsl.global_avg_pool(x), x=f64[2, 3, 7, 5])
    np.testing.assert_allclose(compiler.compile(g, backend=backend)(x=x)["out"],
                               x.mean(axis=(2, 3)), rtol=1e-14)
    x[0, 1, 3, 3] = np.nan          # NaN propagates through max, as np.max
    g = dsl.trace(lambda x: dsl.max_pool2d(x, 2, 1), x=f64[2, 3, 7, 5])
    got = compiler.compile(g, backend=backend)(x=x)["out"]
    assert np.isnan(got[0, 1, 2:4, 2:4]).all() and np.isfinite(got[0, 0]).all()


def test_gradient_graph_is_convolutions_and_round_trips(rng):
    g = dsl.trace(_conv_model((2, 1), (1, 0), (1, 1), 1), x=f64[1, 2, 5, 4], w=f64[3, 2, 3, 2],
                  c=f64[1, 3, 3, 3])
    dg = compiler.grad(g, wrt=["x", "w"])
    ops = [n.op for n in dg.nodes]
    assert "conv2d_input_grad" in ops and "conv2d_weight_grad" in ops
    assert compiler.parse_graph(str(dg)) == dg
    src = compiler.compile(dg, backend="numpy").source
    assert "conv2d_input_grad(" in src and "the transposed convolution of G with w" in src


def _here(fn):
    return f"{os.path.basename(__file__)}:{fn.__code__.co_firstlineno + 1}"


def test_errors_name_shapes_and_the_model_line():
    def too_big(x, w):
        return dsl.conv2d(x, w, padding=1)
    with pytest.raises(ShapeError, match=r"larger than the padded input.*x \(1, 1, 2, 2\), "
                                         r"w \(1, 1, 5, 5\).*" + _here(too_big)):
        dsl.trace(too_big, x=f64[1, 1, 2, 2], w=f64[1, 1, 5, 5])

    def mismatch(x, w):
        return dsl.conv2d(x, w)
    with pytest.raises(ShapeError, match=r"channel mismatch: x \(1, 3, 4, 4\) has 3 channels, "
                                         r"w \(2, 2, 3, 3\).*" + _here(mismatch)):
        dsl.trace(mismatch, x=f64[1, 3, 4, 4], w=f64[2, 2, 3, 3])

    def fractional(x, w):
        return dsl.conv2d(x, w, stride=2)
    with pytest.raises(ShapeError, match=r"not a whole number.*\(6 \+ 2·0 − 3\)/2 \+ 1 = 2\.5.*"
                                         r"x \(1, 1, 6, 6\), w \(1, 1, 3, 3\).*"
                                         + _here(fractional)):
        dsl.trace(fractional, x=f64[1, 1, 6, 6], w=f64[1, 1, 3, 3])

    def odd_pool(x):
        return dsl.max_pool2d(x, 2)
    with pytest.raises(ShapeError, match=r"max_pool2d.*not a whole number.*" + _here(odd_pool)):
        dsl.trace(odd_pool, x=f64[1, 1, 5, 4])
    with pytest.raises(ShapeError, match="groups=2"):
        dsl.trace(lambda x, w: dsl.conv2d(x, w, groups=2), x=f64[1, 4, 3, 3], w=f64[3, 2, 1, 1])
    with pytest.raises(ShapeError, match="pair of ints"):
        dsl.trace(lambda x, w: dsl.conv2d(x, w, stride=(1, 2, 3)), x=f64[1, 1, 3, 3],
                  w=f64[1, 1, 1, 1])
    with pytest.raises(ShapeError, match="4-D float"):
        dsl.trace(lambda x, w: dsl.conv2d(x, w), x=f64[1, 3, 3], w=f64[1, 1, 1, 1])


def _pool_conv(x, w):
    return dsl.sum(dsl.max_pool2d(dsl.relu(dsl.conv2d(x, w, padding=1)), 2) ** 2)


@pytest.mark.parametrize("backend", BACKENDS)
def test_symbolic_batch_and_threads(backend, rng):
    """One compiled gradient for every batch size N, against a concrete trace per N; then 8
    threads calling one LLVM kernel (each call packs its own stack tile) agree with serial."""
    g = dsl.trace(_pool_conv, x=f64["N", 2, 4, 4], w=f64[3, 2, 3, 3])
    fn = compiler.compile(compiler.grad(g, wrt=["w"]), backend=backend)
    w = rng.standard_normal((3, 2, 3, 3))
    for n in (1, 3):
        x = rng.standard_normal((n, 2, 4, 4))
        fixed = compiler.grad(dsl.trace(_pool_conv, x=f64[n, 2, 4, 4], w=f64[3, 2, 3, 3]),
                              wrt=["w"])
        np.testing.assert_allclose(fn(x=x, w=w)["dw"], compiler.interpret(fixed, x=x, w=w)["dw"],
                                   rtol=1e-12)
    xs = [rng.standard_normal((2, 2, 4, 4)) for _ in range(8)]
    want = [fn(x=x, w=w)["dw"] for x in xs]
    got = [None] * 8

    def run(k):
        for _ in range(4):
            got[k] = fn(x=xs[k], w=w)["dw"]
    threads = [threading.Thread(target=run, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for a, b in zip(want, got):
        np.testing.assert_array_equal(a, b)


def test_llvm_conv_tile_is_not_on_a_small_thread_stack(rng):
    """The column tile (about 1 MiB here) comes from the heap: a thread with a 256 KiB stack
    runs the convolution (a stack tile of that size would overflow it)."""
    g = dsl.trace(lambda x, w: dsl.conv2d(x, w, padding=1), x=f64[1, 16, 32, 32],
                  w=f64[8, 16, 3, 3])
    fn = compiler.compile(g, backend="llvm")
    x, w = rng.standard_normal((1, 16, 32, 32)), rng.standard_normal((8, 16, 3, 3))
    got = {}
    old = threading.stack_size(1 << 18)
    try:
        t = threading.Thread(target=lambda: got.update(fn(x=x, w=w)))
        t.start()
        t.join()
    finally:
        threading.stack_size(old)
    np.testing.assert_allclose(got["out"], compiler.interpret(g, x=x, w=w)["out"], rtol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_large_pool_windows_loop_instead_of_unrolling(backend, rng):
    """A 5×4 window (20 elements, more than llvm_conv.UNROLL_WINDOW) is a loop nest."""
    x = rng.standard_normal((2, 2, 9, 8))
    assert 5 * 4 > llvm_conv.UNROLL_WINDOW
    for op, red in (("max_pool2d", np.max), ("avg_pool2d", np.mean)):
        want = np.array([[[[red(x[b, c, i * 2:i * 2 + 5, j * 2:j * 2 + 4]) for j in range(3)]
                           for i in range(3)] for c in range(2)] for b in range(2)])
        g = dsl.trace(lambda x: getattr(dsl, op)(x, (5, 4), 2), x=f64[2, 2, 9, 8])
        got = compiler.compile(g, backend=backend)(x=x)["out"]
        np.testing.assert_allclose(got, want, rtol=1e-14, err_msg=op)
