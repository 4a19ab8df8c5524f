"""Adversarial checks of run-time sizes (issue 17.3 part 3): models the feature's own tests
never built, sizes at the edges (N = 0, 1, 2, 3, 7, 64, 1000), two dimension names, a name off
the leading axis, bad arguments, threads alternating sizes on one function, copy=False outputs
across size changes, f32.  Oracles: the NumPy backend compiled at the concrete sizes
(compiler.specialize), central differences in float64, plain NumPy written here."""
from __future__ import annotations

import threading

import numpy as np
import pytest

import compiler
from compiler.shapes import DimError
from compiler.specialize import specialize
from frontends import dsl
from frontends.dsl import f32, f64, i64

SIZES = (1, 2, 3, 7, 64, 1000)


def _arrays(specs: dict, dims: dict, rng, labels: int = 3) -> dict:
    out = {}
    for k, s in specs.items():
        shape = tuple(dims[d] if isinstance(d, str) else d for d in s.shape)
        if s.dtype == "i64":
            out[k] = rng.integers(0, labels, shape)
        else:
            out[k] = rng.normal(size=shape).astype(np.float32 if s.dtype == "f32" else float)
    return out


def _agree(got: dict, want: dict, rtol: float, what) -> None:
    assert set(got) == set(want), what
    for k in want:
        w, g = np.asarray(want[k]), np.asarray(got[k])
        assert g.shape == w.shape and g.dtype == w.dtype, (k, what, g.shape, w.shape, g.dtype)
        scale = max(1.0, float(np.max(np.abs(w)))) if w.size else 1.0
        np.testing.assert_allclose(g, w, rtol=rtol, atol=rtol * scale, err_msg=f"{k} {what}")


# ---- models no other test builds -------------------------------------------------------
def softmax_over_n(x, w):
    return dsl.sum(dsl.softmax(x * w, axis=0) * x)


def mean_over_two_axes(x):
    return dsl.sum(dsl.mean(x * x, axis=(0, 2)) ** 2) + dsl.mean(x)


def n_on_the_last_axis(x, w):
    return dsl.sum(dsl.tanh(w @ x) ** 2)


def transposed_rows(x, w):
    y = (x @ w).T                                        # [3, N]
    return dsl.sum(dsl.softmax(y, axis=1) * y) + dsl.sum(y.reshape(3, -1) ** 2)


def column_times_row(a, b):
    return dsl.sum(dsl.tanh(a * b + a / (b * b + 1)))   # [N, 1] against [1, C]


def where_and_maximum(x, y):
    return dsl.sum(dsl.where(x > y, x * y, dsl.maximum(x, 0.3 * y)) + dsl.minimum(x, y))


def label_losses(x, w, y):
    s = x @ w
    return (dsl.softmax_cross_entropy(s, y) + dsl.svm_loss(s, y)
            + dsl.sum(dsl.log_softmax(s, axis=1) * dsl.onehot(y, 3)))


def concatenated_columns(a, b, w):
    return dsl.sum(dsl.tanh(dsl.concatenate([a, b], axis=1) @ w))


def contraction_over_n(a, b):
    return dsl.sum((a.T @ b) ** 2)


def n_by_n(a, b):
    return dsl.sum(dsl.tanh(a @ b.T))


def strided_conv(x, w, b):
    h = dsl.relu(dsl.conv2d(x, w, stride=2, padding=1) + b.reshape(1, -1, 1, 1))
    return (dsl.sum(dsl.tanh(dsl.max_pool2d(h, 2))) + dsl.mean(dsl.avg_pool2d(h, 2) ** 2)
            + dsl.sum(dsl.global_avg_pool(h)))


def embedded_attention(tok, E, Wq, Wk, Wv, y):
    h = E[tok]                                           # [N, 5, 6]
    q, k, v = h @ Wq, h @ Wk, h @ Wv
    a = dsl.softmax(q @ dsl.transpose(k, (0, 2, 1)) / 2.0, axis=-1)
    return dsl.softmax_cross_entropy(dsl.sum(a @ v, axis=1), y)


MODELS = {
    "softmax_over_n": (softmax_over_n, dict(x=f64["N", 4], w=f64[4]), {}),
    "mean_over_two_axes": (mean_over_two_axes, dict(x=f64["N", 3, 5]), {}),
    "n_on_the_last_axis": (n_on_the_last_axis, dict(x=f64[4, "N"], w=f64[3, 4]), {}),
    "transposed_rows": (transposed_rows, dict(x=f64["N", 4], w=f64[4, 3]), {}),
    "column_times_row": (column_times_row, dict(a=f64["N", 1], b=f64[1, 5]), {}),
    "where_and_maximum": (where_and_maximum, dict(x=f64["N", 3], y=f64["N", 3]), {}),
    "label_losses": (label_losses, dict(x=f64["N", 4], w=f64[4, 3], y=i64["N"]), {}),
    "concatenated_columns": (concatenated_columns,
                             dict(a=f64["N", 2], b=f64["N", 3], w=f64[5, 2]), {}),
    "contraction_over_n": (contraction_over_n, dict(a=f64["N", 3], b=f64["N", 4]), {}),
    "n_by_n": (n_by_n, dict(a=f64["N", 2], b=f64["N", 2]), {}),
    "strided_conv": (strided_conv, dict(x=f64["N", 2, 11, 11], w=f64[3, 2, 3, 3], b=f64[3]),
                     {}),
    "embedded_attention": (embedded_attention,
                           dict(tok=i64["N", 5], E=f64[10, 6], Wq=f64[6, 4], Wk=f64[6, 4],
                                Wv=f64[6, 4], y=i64["N"]), dict(labels=4)),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_one_native_function_agrees_with_the_concrete_compile(name):
    """The symbolic gradient on LLVM and on NumPy against the NumPy compile at each size."""
    fn, specs, opts = MODELS[name]
    dg = compiler.grad(dsl.trace(fn, **specs))
    llvm, numpy_ = (compiler.compile(dg, backend=b) for b in ("llvm", "numpy"))
    sizes = SIZES if name not in ("n_by_n", "strided_conv", "embedded_attention") else SIZES[:5]
    for n in sizes:
        args = _arrays(specs, {"N": n}, np.random.default_rng(n), **opts)
        want = compiler.compile(specialize(dg, N=n), backend="numpy")(**args)
        _agree(llvm(**args), want, 1e-9, ("llvm", n))
        _agree(numpy_(**args), want, 1e-9, ("numpy", n))
    assert llvm.specializations == 1


def two_names(x, z, w):
    return dsl.sum(dsl.tanh(x @ w)) * dsl.mean(z) + dsl.sum(x) * dsl.sum(z * z)


def two_names_on_one_array(x, w):
    h = dsl.tanh(x @ w)                                  # [N, T, 3]
    return dsl.sum(dsl.softmax(h, axis=1) * h) + dsl.mean(dsl.sum(h, axis=(0, 1)))


@pytest.mark.parametrize("fn, specs", [
    (two_names, dict(x=f64["N", 4], z=f64["T", 2], w=f64[4, 3])),
    (two_names_on_one_array, dict(x=f64["N", "T", 4], w=f64[4, 3])),
    (lambda a, b: dsl.sum(dsl.tanh(a @ b)), dict(a=f64["N", 3, "T"], b=f64["N", "T", 2])),
], ids=["separate", "one_array", "batched_contraction"])
def test_two_dimension_names(fn, specs):
    dg = compiler.grad(dsl.trace(fn, **specs))
    llvm = compiler.compile(dg, backend="llvm")
    for n, t in ((1, 7), (7, 1), (3, 3), (64, 2), (2, 300)):
        args = _arrays(specs, {"N": n, "T": t}, np.random.default_rng(n * 1000 + t))
        want = compiler.compile(specialize(dg, N=n, T=t), backend="numpy")(**args)
        _agree(llvm(**args), want, 1e-9, (n, t))
    assert llvm.specializations == 1


def test_gradients_against_central_differences_at_n_1():
    """N = 1 (a softmax over a single row, a mean over one element) against central
    differences of the NumPy forward, an oracle the gradient graph does not share."""
    def f(x, z, w):
        h = dsl.tanh(x @ w)
        return (dsl.sum(dsl.softmax(h, axis=0) * h) + dsl.mean(h) * dsl.sum(dsl.mean(z, axis=0))
                + dsl.sum(dsl.maximum(h, 0.1)))
    specs = dict(x=f64["N", 4], z=f64["T", 2], w=f64[4, 3])
    g = dsl.trace(f, **specs)
    llvm, fwd = compiler.compile(compiler.grad(g), backend="llvm"), compiler.compile(g)
    for n, t in ((1, 1), (1, 5), (3, 2)):
        args = _arrays(specs, {"N": n, "T": t}, np.random.default_rng(n + 7 * t))
        got = llvm(**args)
        for k, a in args.items():
            num = np.zeros_like(a)
            for i in np.ndindex(a.shape):
                hi, lo = dict(args, **{k: a.copy()}), dict(args, **{k: a.copy()})
                hi[k][i] += 1e-6
                lo[k][i] -= 1e-6
                num[i] = (fwd(**hi)["out"] - fwd(**lo)["out"]) / 2e-6
            np.testing.assert_allclose(got["d" + k], num, rtol=1e-5, atol=1e-7,
                                       err_msg=f"d{k} at N={n}, T={t}")


def test_numpy_reference_for_a_softmax_over_the_batch():
    """Plain NumPy: softmax over axis 0 of x*w (columns), its sum with x, and the gradient."""
    dg = compiler.grad(dsl.trace(softmax_over_n, x=f64["N", 4], w=f64[4]))
    llvm = compiler.compile(dg, backend="llvm")
    for n in (1, 2, 1000):
        rng = np.random.default_rng(n)
        x, w = rng.normal(size=(n, 4)), rng.normal(size=4)
        z = x * w
        s = np.exp(z - z.max(axis=0))
        s /= s.sum(axis=0)
        gs = x                                       # d out / d s
        gz = s * (gs - (gs * s).sum(axis=0))         # softmax's vector-Jacobian product
        out = llvm(x=x, w=w)
        assert out["out"] == pytest.approx(np.sum(s * x), rel=1e-12)
        np.testing.assert_allclose(out["dx"], s + gz * w, rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(out["dw"], (gz * x).sum(axis=0), rtol=1e-10, atol=1e-13)


# ---- bad arguments ---------------------------------------------------------------------
def _loss(x, w, y):
    return dsl.softmax_cross_entropy(dsl.tanh(x @ w), y)


@pytest.fixture(scope="module")
def loss_fns():
    g = compiler.grad(dsl.trace(_loss, x=f64["N", 4], w=f64[4, 3], y=i64["N"]), wrt=["x", "w"])
    return {b: compiler.compile(g, backend=b) for b in ("llvm", "numpy")}


def _good(n=7):
    rng = np.random.default_rng(n)
    return dict(x=rng.normal(size=(n, 4)), w=rng.normal(size=(4, 3)), y=rng.integers(0, 3, n))


@pytest.mark.parametrize("backend", ["llvm", "numpy"])
@pytest.mark.parametrize("bad, err, match", [
    (dict(y=np.zeros(5, np.int64)), DimError, "argument 'y' has N = 5"),
    (dict(x=np.zeros((1, 7, 4))), ValueError, "argument 'x'"),
    (dict(y=np.array(2)), ValueError, r"argument 'y': shape \(\)"),
    (dict(x=np.array(1.0)), ValueError, r"argument 'x': shape \(\)"),
    (dict(y=np.zeros(7)), TypeError, "argument 'y'"),
    (dict(w=np.zeros((3, 3))), ValueError, "argument 'w'"),
    (dict(y=np.where(np.arange(7) == 6, 3, 0)), compiler.GradcError, "label 3"),
], ids=["mismatched_n", "rank", "0d_labels", "0d_named", "float_labels", "fixed_dim",
        "label_range"])
def test_bad_arguments_after_a_good_call(loss_fns, backend, bad, err, match):
    """Refused with the argument's name, also once the size's kernel is kept (the fast
    path that reads sizes off the arrays)."""
    fn = loss_fns[backend]
    fn(**_good())
    with pytest.raises(err, match=match):
        fn(**dict(_good(), **bad))


@pytest.mark.parametrize("backend", ["llvm", "numpy"])
def test_odd_layouts_and_lists_are_read_right(loss_fns, backend):
    """Fortran order, negative strides, a strided row view, a list: the same numbers."""
    fn, good = loss_fns[backend], _good()
    want = loss_fns["numpy"](**good)
    x, y = good["x"], good["y"]
    for args in (dict(x=np.asfortranarray(x)), dict(x=x[::-1].copy()[::-1]),
                 dict(x=np.repeat(x, 2, axis=0)[::2]), dict(x=np.repeat(x, 2, axis=1)[:, ::2]),
                 dict(x=x.tolist(), y=y.tolist()), dict(x=x.astype(np.float32).astype(float))):
        _agree(fn(**dict(good, **args)), want, 1e-6, list(args))


# ---- threads, copy=False, eviction -----------------------------------------------------
def _step_model(x, w, b, y):
    h = dsl.relu(x @ w + b)
    return dsl.softmax_cross_entropy(h, y) + dsl.mean(dsl.softmax(h, axis=0))


@pytest.mark.parametrize("max_sizes", [8, 1])
def test_eight_threads_alternating_sizes_on_one_function(max_sizes):
    """8 threads cycle N over 8 sizes (with copy=False every other call), the function keeping
    all or one of them: every result equals the NumPy backend's."""
    g = compiler.grad(dsl.trace(_step_model, x=f64["N", 6], w=f64[6, 3], b=f64[3],
                                y=i64["N"]), wrt=["x", "w", "b"])
    llvm, ref_fn = compiler.compile(g, backend="llvm"), compiler.compile(g, backend="numpy")
    llvm.max_sizes = max_sizes
    sizes = (1, 2, 3, 7, 64, 1000, 5, 9)
    data = {n: _arrays(dict(x=f64["N", 6], w=f64[6, 3], b=f64[3], y=i64["N"]), {"N": n},
                       np.random.default_rng(n)) for n in sizes}
    ref = {n: ref_fn(**data[n]) for n in sizes}
    bad, barrier = [], threading.Barrier(8)

    def work(t):
        barrier.wait()
        for it in range(24):
            n = sizes[(t + it) % len(sizes)]
            out = llvm(**data[n], copy=bool(it % 2))
            if not all(np.allclose(out[k], ref[n][k], rtol=1e-10, atol=1e-12) for k in ref[n]):
                bad.append((t, it, n))
    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert bad == []
    assert llvm.specializations == 1


def test_copy_false_outputs_survive_size_changes_and_eviction():
    g = compiler.grad(dsl.trace(_step_model, x=f64["N", 6], w=f64[6, 3], b=f64[3],
                                y=i64["N"]), wrt=["x", "w", "b"])
    llvm = compiler.compile(g, backend="llvm")
    specs = dict(x=f64["N", 6], w=f64[6, 3], b=f64[3], y=i64["N"])
    d7, d64 = (_arrays(specs, {"N": n}, np.random.default_rng(n)) for n in (7, 64))
    o7 = llvm(**d7, copy=False)
    kept = {k: np.array(v) for k, v in o7.items()}
    o64 = llvm(**d64, copy=False)
    llvm.max_sizes = 1                         # drops 7 (and then 64) while their views live
    for n in (3, 5):
        llvm(**_arrays(specs, {"N": n}, np.random.default_rng(n)), copy=False)
    for k in kept:
        np.testing.assert_array_equal(o7[k], kept[k])
    _agree(o64, compiler.compile(g, backend="numpy")(**d64), 1e-10, 64)
    # a copy=False output fed back in (reversed, too) is copied first
    o = llvm(**d7, copy=False)
    dx = np.array(o["dx"])
    for view in (lambda a: a, lambda a: a[::-1]):
        o = llvm(**d7, copy=False)
        got = llvm(**dict(d7, x=view(o["dx"])), copy=False)
        _agree(got, compiler.compile(g, backend="numpy")(**dict(d7, x=view(dx))), 1e-10, "back")


# ---- f32 -------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(5000, 5), (5000, 6), ("N", 5)])
@pytest.mark.parametrize("backend", ["numpy", "llvm"])
def test_f32_relu_gradient_of_a_large_array(backend, shape):
    """sum(relu(x)) in f32: the sum's gate broadcasts the constant 1.0 (a Python float, so an
    f64 array in NumPy) into the relu gate's planned f32 buffer; the NumPy backend raised a
    ValueError (view of an f32 buffer as int64) at [5000, 5] and a broadcast error at [5000, 6]."""
    g = compiler.grad(dsl.trace(lambda x: dsl.sum(dsl.relu(x)), x=f32[shape]))
    x = np.random.default_rng(0).normal(size=(5000, shape[1])).astype(np.float32)
    out = compiler.compile(g, backend=backend)(x=x)
    assert out["dx"].dtype == np.float32
    np.testing.assert_array_equal(out["dx"], (x > 0).astype(np.float32))


@pytest.mark.parametrize("loss", [lambda s, y: dsl.softmax_cross_entropy(s, y),
                                  lambda s, y: dsl.svm_loss(s, y),
                                  lambda s, y: dsl.sum(dsl.pick(s, y))],
                         ids=["cross_entropy", "svm", "pick"])
def test_a_named_class_axis_is_a_shape_error(loss):
    """Labels are checked against a fixed number of classes: a named class axis (scores
    f64[4, N]) was accepted by the trace and then failed in compile and grad with a bare
    ValueError (int('N') in the label checks, the cross entropy's onehot)."""
    with pytest.raises(compiler.ShapeError, match="class"):
        dsl.trace(loss, s=f64[4, "N"], y=i64[4])


@pytest.mark.parametrize("op", [dsl.softmax, dsl.log_softmax], ids=["softmax", "log_softmax"])
@pytest.mark.parametrize("spec", [f64["N", 3], f64[0, 3]], ids=["named", "fixed"])
def test_softmax_over_an_empty_axis_agrees_on_every_backend(op, spec):
    """A softmax over the batch axis at N = 0 is an empty array (its sum 0, an empty
    gradient), as LLVM said; the NumPy backend and the interpreter raised NumPy's bare
    'zero-size array to reduction operation maximum'."""
    g = compiler.grad(dsl.trace(lambda x: dsl.sum(op(x, axis=0) * x), x=spec))
    x = np.zeros((0, 3))
    outs = [compiler.compile(g, backend=b)(x=x) for b in ("numpy", "llvm")]
    outs.append(compiler.interpret(g, x=x))
    for out in outs:
        assert out["out"] == 0.0 and out["dx"].shape == (0, 3)


def _against_concrete(fn, specs, sizes, rtol=1e-9):
    dg = compiler.grad(dsl.trace(fn, **specs))
    llvm = compiler.compile(dg, backend="llvm")
    for dims in sizes:
        args = _arrays(specs, dims, np.random.default_rng(sum(dims.values())))
        want = compiler.compile(specialize(dg, **dims), backend="numpy")(**args)
        _agree(llvm(**args), want, rtol, dims)
    return llvm


@pytest.mark.parametrize("specs", [
    dict(z=f64["T", 2], x=f64["N", 4], w=f64[4, 3]),         # T's slot before N's
    dict(z=f64["b", 2], x=f64["a", 4], w=f64[4, 3]),
], ids=["T_first", "b_first"])
def test_dimension_slots_follow_the_inputs_not_the_alphabet(specs):
    (t, _), (n, _) = (s.shape for s in list(specs.values())[:2])

    def f(z, x, w):
        return (dsl.sum(dsl.tanh(x @ w)) * dsl.mean(z) + dsl.sum(dsl.softmax(z, axis=0) * z)
                + dsl.sum(x) * dsl.sum(z * z))
    llvm = _against_concrete(f, specs, [{n: a, t: b} for a, b in ((1, 7), (7, 1), (64, 2))])
    assert llvm.specializations == 1


@pytest.mark.parametrize("a, b", [(4, 3), (40, 30), (2, 200)])
def test_accumulated_products_on_both_sides_of_the_inline_gemm_choice(a, b):
    """W's gradient adds two products contracting over N and over T (gemm's beta or the
    inline loops' accumulation, chosen when the kernel runs)."""
    def f(x, z, W):
        return dsl.sum(dsl.tanh(x @ W)) + dsl.sum(dsl.sin(z @ W)) + dsl.sum(dsl.tanh(z @ W) * 0.5)
    sizes = [dict(N=n, T=t) for n, t in ((1, 300), (300, 1), (9, 1000))]
    assert _against_concrete(f, dict(x=f64["N", a], z=f64["T", a], W=f64[a, b]),
                             sizes).specializations == 1


@pytest.mark.parametrize("index", [lambda x: x[:, ::-1], lambda x: x[:, 5:1:-2],
                                   lambda x: x[:, 3:3], lambda x: x[..., -1],
                                   lambda x: x[:, None, 2:4]],
                         ids=["reversed", "back_step", "empty", "last", "new_axis"])
def test_slices_of_a_fixed_axis_beside_n(index):
    def f(x):
        return dsl.sum(dsl.tanh(index(x)) * index(x)) + dsl.sum(x * x)
    assert _against_concrete(f, dict(x=f64["N", 7]), [dict(N=n) for n in (1, 3, 64)]
                             ).specializations == 1


def test_misaligned_byteswapped_and_broadcast_arguments(loss_fns):
    """Arrays the native code must not read as they are: an f64 array at an odd address, a
    big-endian one, a 0-stride broadcast, a half-precision one."""
    good = _good(64)
    want = loss_fns["numpy"](**good)

    def misaligned(a):
        v = np.zeros(a.nbytes + 1, np.uint8)[1:].view(a.dtype).reshape(a.shape)
        v[...] = a
        return v
    x, y = good["x"], good["y"]
    for fn in loss_fns.values():
        for args in (dict(x=misaligned(x)), dict(y=misaligned(y)), dict(x=x.astype(">f8")),
                     dict(y=y.astype(">i8"))):
            _agree(fn(**dict(good, **args)), want, 1e-12, list(args))
        row = dict(good, x=np.broadcast_to(x[:1], x.shape))
        _agree(fn(**row), loss_fns["numpy"](**dict(row, x=np.array(row["x"]))), 1e-12, "0-stride")


_C = np.array([0.5, -1.0, 2.0])      # a captured constant (const_array) broadcast over N


def _elementwise(x, y):
    a = dsl.elu(x, 0.7) + dsl.leaky_relu(y, 0.1) + dsl.softplus(x) + dsl.swish(y)
    b = dsl.log(dsl.abs(x) + 1.0) + dsl.log1p(y * y) + dsl.abs(y) * x
    m = (x >= y) * 1.0 + (x < y) * 2.0 + (x <= 0.1) * 3.0 + (x != y) * 0.5
    return dsl.sum(a * b + m * x) + dsl.sum((x * _C) ** 2)


def test_elementwise_ops_and_a_constant_the_other_tests_skip():
    assert _against_concrete(_elementwise, dict(x=f64["N", 3], y=f64["N", 3]),
                             [dict(N=n) for n in (1, 7, 1000)], rtol=1e-8).specializations == 1


@pytest.mark.parametrize("backend", ["llvm", "numpy"])
def test_dropout_mask_of_n_rows(backend):
    """dropout's keep mask is an input bool[N, 5]: out and dx follow it (plain NumPy), and a
    mask of the wrong N or dtype is refused."""
    g = compiler.grad(dsl.trace(lambda x, c: dsl.sum(dsl.dropout(x, 0.3) * c),
                                x=f64["N", 5], c=f64[5]), wrt=["x"])
    fn, rng = compiler.compile(g, backend=backend), np.random.default_rng(0)
    for n in (1, 7, 1000):
        x, c, keep = rng.normal(size=(n, 5)), rng.normal(size=5), rng.random((n, 5)) < 0.7
        out = fn(x=x, c=c, dropout_keep=keep)
        assert out["out"] == pytest.approx(np.sum(np.where(keep, x / 0.7, 0) * c), rel=1e-12)
        np.testing.assert_allclose(out["dx"], np.where(keep, c / 0.7, 0), rtol=1e-12)
    with pytest.raises(DimError, match="dropout_keep"):
        fn(x=x, c=c, dropout_keep=keep[:3])
    with pytest.raises(TypeError, match="dropout_keep"):
        fn(x=x, c=c, dropout_keep=keep * 2.0)
