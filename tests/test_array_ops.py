"""The DSL's array functions and integer-array indexing (issue 18.2; compiler/ops/array.py,
compiler/builder_array.py, compiler/builder_index.py): values against NumPy's own functions,
gradients against float64 finite differences, the interpreter against both backends, and the
errors (bad axis, mismatched shapes, an index out of range at run time) naming the user's line.
The per-op tests (finite differences, SymPy, second order, both backends) cover the primitives
through their samples in tests/graphs.py."""
from __future__ import annotations

import numpy as np
import pytest

import compiler
from compiler import LabelError, ShapeError, UnsupportedError
from frontends import dsl
from frontends.dsl import f64, i64
from graphs import assert_close_grad, numeric_grad

BACKENDS = ("numpy", "llvm")
rng = np.random.default_rng(18)


def _x(*shape):
    return rng.standard_normal(shape)


def _same_everywhere(g, args, want=None):
    """Interpreter = NumPy backend = LLVM backend (= `want` for `out` when given)."""
    ref = compiler.interpret(g, **args)
    if want is not None:
        np.testing.assert_allclose(ref["out"], want, rtol=1e-15, atol=0)
    for backend in BACKENDS:
        got = compiler.compile(g, backend=backend)(**args)
        for k in ref:
            np.testing.assert_allclose(got[k], ref[k], rtol=1e-13, atol=1e-14,
                                       err_msg=f"{backend} {k}")
    return ref


def _grads_vs_fd(fn, args, **specs):
    """d Σ c·fn(a, b) against finite differences, on all three executors."""
    def loss(a, b, c):
        return dsl.sum(fn(a, b) * c)
    probe = compiler.interpret(dsl.trace(fn, **specs), **args)["out"]
    args = dict(args, c=rng.uniform(0.5, 1.5, np.shape(probe)))
    g = dsl.trace(loss, c=f64[np.shape(probe)], **specs)
    wrt = [k for k, t in specs.items() if t.dtype == "f64"]
    dg = compiler.grad(g, wrt=wrt)
    got = _same_everywhere(dg, args)
    for k in wrt:
        assert_close_grad(got["d" + k], numeric_grad(g, args, k, "out"), f"d{k}")


# ---- values against NumPy -------------------------------------------------------------------
def test_concatenate_stack_split_pad_flip_match_numpy():
    a, b, c = _x(2, 3), _x(2, 1), _x(2, 3)
    args = {"a": a, "b": b, "c": c}
    cases = [
        (lambda a, b, c: dsl.concatenate([a, b, c], axis=-1), np.concatenate([a, b, c], -1)),
        (lambda a, b, c: dsl.concatenate((a, c), axis=0), np.concatenate([a, c], 0)),
        (lambda a, b, c: dsl.stack([a, c], axis=1), np.stack([a, c], 1)),
        (lambda a, b, c: dsl.stack([a, c, a], axis=-1), np.stack([a, c, a], -1)),
        (lambda a, b, c: dsl.split(a, 3, axis=1)[2], np.split(a, 3, 1)[2]),
        (lambda a, b, c: dsl.split(a, [1, 2], axis=-1)[1], np.split(a, [1, 2], -1)[1]),
        (lambda a, b, c: dsl.pad(a, 1), np.pad(a, 1)),
        (lambda a, b, c: dsl.pad(a, ((0, 2), (1, 0))), np.pad(a, ((0, 2), (1, 0)))),
        (lambda a, b, c: dsl.pad(b, (1, 2), constant_values=-1.5),
         np.pad(b, (1, 2), constant_values=-1.5)),
        (lambda a, b, c: dsl.flip(a, axis=1), np.flip(a, 1)),
        (lambda a, b, c: dsl.flip(a), np.flip(a)),
    ]
    for fn, want in cases:
        g = dsl.trace(fn, a=f64[2, 3], b=f64[2, 1], c=f64[2, 3])
        _same_everywhere(g, args, want)


def test_integer_array_indexing_and_take_along_axis_match_numpy():
    x, E = _x(3, 4), _x(5, 2)
    tok, idx = rng.integers(0, 3, (2, 3)), np.array([2, 0, 2])
    rows = rng.integers(0, 4, (3, 2))
    args = {"x": x, "E": E, "tok": tok, "idx": idx, "rows": rows}
    specs = {"x": f64[3, 4], "E": f64[5, 2], "tok": i64[2, 3], "idx": i64[3], "rows": i64[3, 2]}
    cases = [
        (lambda x, E, tok, idx, rows: E[tok], E[tok]),
        (lambda x, E, tok, idx, rows: x[:, idx], x[:, idx]),
        (lambda x, E, tok, idx, rows: x[idx[:2], 1:3], x[idx[:2], 1:3]),
        (lambda x, E, tok, idx, rows: x[None, idx[1:]], x[None, idx[1:]]),
        (lambda x, E, tok, idx, rows: x[..., idx], x[..., idx]),
        (lambda x, E, tok, idx, rows: dsl.take(x, tok, axis=1), np.take(x, tok, axis=1)),
        (lambda x, E, tok, idx, rows: dsl.take_along_axis(x, rows, axis=1),
         np.take_along_axis(x, rows, axis=1)),
        (lambda x, E, tok, idx, rows: dsl.take_along_axis(x, idx[:1][None, :] + 0, axis=0),
         np.take_along_axis(x, idx[:1][None, :], axis=0)),       # idx broadcast over columns
    ]
    for fn, want in cases:
        _same_everywhere(dsl.trace(fn, **specs), args, want)


# ---- gradients ------------------------------------------------------------------------------
def test_gradients_of_the_compositions_vs_finite_differences():
    a, b = _x(2, 3), _x(2, 2)
    specs = {"a": f64[2, 3], "b": f64[2, 2]}
    args = {"a": a, "b": b}
    _grads_vs_fd(lambda a, b: dsl.tanh(dsl.concatenate([a, b, a], axis=1)), args, **specs)
    _grads_vs_fd(lambda a, b: dsl.stack([b, b * b], axis=0), args, **specs)
    _grads_vs_fd(lambda a, b: dsl.split(a, [1], axis=1)[1] * dsl.split(a, 3, axis=1)[0], args,
                 **specs)
    _grads_vs_fd(lambda a, b: dsl.exp(dsl.pad(a, ((1, 0), (0, 2)), constant_values=0.5)), args,
                 **specs)
    _grads_vs_fd(lambda a, b: dsl.flip(a, axis=(0, 1)) * a, args, **specs)


def test_embedding_gradient_adds_repeated_tokens():
    """dE of Σ c·E[tok] puts c's rows into the rows tok names, twice where tok repeats: the
    scatter-add by hand."""
    E, tok = _x(4, 3), np.array([[1, 3], [1, 1]])
    c = rng.uniform(0.5, 1.5, (2, 2, 3))
    g = compiler.grad(dsl.trace(lambda E, tok, c: dsl.sum(E[tok] * c), E=f64[4, 3],
                                tok=i64[2, 2], c=f64[2, 2, 3]), wrt=["E"])
    want = np.zeros((4, 3))
    for i in range(2):
        for j in range(2):
            want[tok[i, j]] += c[i, j]
    got = _same_everywhere(g, {"E": E, "tok": tok, "c": c})
    np.testing.assert_allclose(got["dE"], want, rtol=1e-15)


def test_gather_gradients_of_second_order_vs_finite_differences():
    """grad of (grad of a model with a gather): the scatter-add's own gate rule (a gather)."""
    E, tok = _x(4, 2), np.array([2, 0, 2])
    g = dsl.trace(lambda E, tok: dsl.sum(dsl.tanh(E[tok]) ** 2), E=f64[4, 2], tok=i64[3])
    v = _x(4, 2)
    hv = compiler.hvp(g, wrt=["E"])
    got = _same_everywhere(hv, {"E": E, "tok": tok, "v_E": v})
    dg = compiler.grad(g, wrt=["E"])
    h = 1e-5
    num = (compiler.interpret(dg, E=E + h * v, tok=tok)["dE"]
           - compiler.interpret(dg, E=E - h * v, tok=tok)["dE"]) / (2 * h)
    assert_close_grad(got["hv_E"], num, "Hv")


# ---- errors naming the user's line ----------------------------------------------------------
def test_bad_axis_and_mismatched_shapes_name_the_shapes_and_the_line():
    with pytest.raises(ShapeError, match=r"concatenate: shapes \(2, 3\) and \(3, 3\) must agree "
                                         r"except on axis 1 at .*test_array_ops.py:\d+"):
        dsl.trace(lambda a, b: dsl.concatenate([a, b], axis=1), a=f64[2, 3], b=f64[3, 3])
    with pytest.raises(ShapeError, match=r"concatenate: axis 2 is out of range for a value of "
                                         r"rank 2 at .*test_array_ops.py:\d+"):
        dsl.trace(lambda a: dsl.concatenate([a, a], axis=2), a=f64[2, 3])
    with pytest.raises(ShapeError, match=r"stack: all values must have one shape.*\(2, 3\) and "
                                         r"\(3, 2\) at .*test_array_ops.py"):
        dsl.trace(lambda a, b: dsl.stack([a, b]), a=f64[2, 3], b=f64[3, 2])
    with pytest.raises(ShapeError, match=r"split: axis 1 of shape \(2, 3\).*2 equal parts at "
                                         r".*test_array_ops.py"):
        dsl.trace(lambda a: dsl.split(a, 2, axis=1)[0], a=f64[2, 3])
    with pytest.raises(ShapeError, match=r"pad: .*negative width at .*test_array_ops.py"):
        dsl.trace(lambda a: dsl.pad(a, ((0, -1), (0, 0))), a=f64[2, 3])
    with pytest.raises(ShapeError, match=r"take_along_axis: indices of shape \(2, 2\) do not "
                                         r"broadcast.*\(3, 4\) on axis 0 at .*test_array_ops"):
        dsl.trace(lambda x, i: dsl.take_along_axis(x, i, axis=1), x=f64[3, 4], i=i64[2, 2])
    with pytest.raises(ShapeError, match=r"gather: indices must be i64, got f64\[2\].* at "
                                         r".*test_array_ops.py"):
        dsl.trace(lambda x, i: x[i], x=f64[3], i=f64[2])
    with pytest.raises(ShapeError, match=r"flip: axis 3 is out of range"):
        dsl.trace(lambda x: dsl.flip(x, 3), x=f64[3])


def test_unsupported_index_forms_are_refused_with_the_reason():
    with pytest.raises(UnsupportedError, match=r"x\[i, j\] at .*test_array_ops.py:\d+: gradc "
                                               r"indexes with one integer array"):
        dsl.trace(lambda x, i, j: x[i, j], x=f64[3, 3], i=i64[2], j=i64[2])
    with pytest.raises(UnsupportedError, match=r"int index together with an integer array"):
        dsl.trace(lambda x, i: x[0, i], x=f64[3, 3], i=i64[2])
    with pytest.raises(UnsupportedError, match="concatenate takes a non-empty list"):
        dsl.trace(lambda x: dsl.concatenate(x), x=f64[3])
    with pytest.raises(UnsupportedError, match="pad: mode 'edge' is not supported"):
        dsl.trace(lambda x: dsl.pad(x, 1, mode="edge"), x=f64[3])


def _embed(E, tok):
    return dsl.sum(E[tok] * E[tok])


@pytest.mark.parametrize("where", ["interpret", "numpy", "llvm"])
@pytest.mark.parametrize("bad", [5, -1])
def test_an_index_out_of_range_is_an_error_on_every_backend(where, bad):
    """An argument index ≥ the axis size, or negative (refused, not wrapped), is a LabelError
    naming the argument, the index, its position, the op and the model's line, before any
    value is computed; the gradient graph's scatter-add is checked the same way."""
    g = compiler.grad(dsl.trace(_embed, E=f64[5, 2], tok=i64[2, 3]), wrt=["E"])
    tok = np.array([[0, 1, 2], [3, bad, 4]])
    run = (lambda **a: compiler.interpret(g, **a)) if where == "interpret" else \
        compiler.compile(g, backend=where)
    with pytest.raises(LabelError, match=rf"argument 'tok': index {bad} is outside \[0, 5\) at "
                                         r"index \(1, 1\) \(the gather op at .*test_array_ops.py:"
                                         r"\d+ indexes an axis of size 5\)"):
        run(E=_x(5, 2), tok=tok)


@pytest.mark.parametrize("where", ["interpret", "numpy", "llvm"])
def test_a_computed_index_out_of_range_is_an_error_on_every_backend(where):
    """Indices the model computes (t + 1) are checked where they are computed, natively too."""
    def model(x, t):
        s = t + 1
        return dsl.sum(dsl.take_along_axis(x, s, axis=1))
    g = compiler.grad(dsl.trace(model, x=f64[2, 3], t=i64[2, 2]))
    run = (lambda **a: compiler.interpret(g, **a)) if where == "interpret" else \
        compiler.compile(g, backend=where)
    ok = run(x=np.arange(6.0).reshape(2, 3), t=np.array([[0, 1], [1, 0]]))
    assert ok["out"] == 1 + 2 + 5 + 4
    np.testing.assert_array_equal(ok["dx"], [[0, 1, 1], [0, 1, 1]])
    with pytest.raises(LabelError, match=r"value 's' computed by add: index 3 is outside "
                                         r"\[0, 3\) at index \(0, 1\) \(the take_along_axis op "
                                         r"at .*test_array_ops.py:\d+ indexes an axis of size 3"):
        run(x=_x(2, 3), t=np.array([[0, 2], [1, 0]]))


def test_the_generated_numpy_code_reads_like_numpy():
    g = compiler.grad(dsl.trace(lambda E, tok, W: dsl.sum(
        dsl.concatenate([E[tok[:, 0]], E[tok[:, 1]]], axis=1) @ W),
        E=f64[5, 2], tok=i64[3, 2], W=f64[4, 1]), wrt=["E", "W"])
    src = compiler.compile(g, backend="numpy").source
    assert "np.concatenate([" in src and "axis=1)" in src
    assert "E[" in src and "np.add.at(dE" in src
    assert "concatenate gate: dxₖ = G[…, offₖ:offₖ+nₖ, …]" in src


# ---- a symbolic batch dimension (f64["N", ...]) ---------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_array_ops_serve_every_batch_size(backend):
    """One compiled function for every N: an embedding lookup with a concatenated window, a
    take_along_axis, and zero padding of the fixed axis, against NumPy at N = 1, 4, 9."""
    def model(E, tok, x, t):
        e = E[tok]
        ctx = dsl.concatenate([e[:, 0], e[:, 1]], axis=1)
        return (dsl.sum(dsl.tanh(ctx)) + dsl.sum(dsl.take_along_axis(x, t, axis=1) ** 2)
                + dsl.sum(dsl.exp(dsl.pad(x, ((0, 0), (1, 0)), constant_values=0.5))))
    g = compiler.grad(dsl.trace(model, E=f64[5, 3], tok=i64["N", 2], x=f64["N", 4],
                                t=i64["N", 2]), wrt=["E", "x"])
    fn = compiler.compile(g, backend=backend)
    for n in (1, 4, 9):
        E, x = _x(5, 3), _x(n, 4)
        tok, t = rng.integers(0, 5, (n, 2)), rng.integers(0, 4, (n, 2))
        got = fn(E=E, tok=tok, x=x, t=t)
        ctx = np.concatenate([E[tok[:, 0]], E[tok[:, 1]]], axis=1)
        want = (np.tanh(ctx).sum() + (np.take_along_axis(x, t, 1) ** 2).sum()
                + np.exp(np.pad(x, ((0, 0), (1, 0)), constant_values=0.5)).sum())
        np.testing.assert_allclose(got["out"], want, rtol=1e-13)
        dE = np.zeros_like(E)
        np.add.at(dE, tok[:, 0], 1 - np.tanh(ctx[:, :3]) ** 2)
        np.add.at(dE, tok[:, 1], 1 - np.tanh(ctx[:, 3:]) ** 2)
        dx = np.exp(x)
        np.add.at(dx, (np.arange(n)[:, None], t), 2 * np.take_along_axis(x, t, 1))
        np.testing.assert_allclose(got["dE"], dE, rtol=1e-12)
        np.testing.assert_allclose(got["dx"], dx, rtol=1e-12)


def test_symbolic_axes_an_index_cannot_be_checked_against_are_refused():
    with pytest.raises(ShapeError, match=r"gather: axis 0 of shape \('N', 5\) has a size known "
                                         r"only at run time.* at .*test_array_ops.py:\d+"):
        dsl.trace(lambda X, i: dsl.sum(X[i]), X=f64["N", 5], i=i64[3])
    with pytest.raises(ShapeError, match=r"concatenate: shapes \('N', 2\) and \(3, 2\): axis 0 "
                                         r"has a size known only at run time"):
        dsl.trace(lambda a, b: dsl.concatenate([a, b]), a=f64["N", 2], b=f64[3, 2])
    with pytest.raises(ShapeError, match=r"pad: axis 0 of a \('N', 2\) has a size known only"):
        dsl.trace(lambda a: dsl.pad(a, 1), a=f64["N", 2])


def test_second_order_through_a_whole_named_axis():
    """putitem's gate (a getitem) reads a dimension name as the stop of a whole axis: the
    Hessian-vector product of Σ exp(x[:, 1:]) at N = 3 is exp(x)·v off the first column."""
    hv = compiler.hvp(dsl.trace(lambda x: dsl.sum(dsl.exp(x[:, 1:])), x=f64["N", 3]))
    x, v = _x(3, 3), _x(3, 3)
    want = np.exp(x) * v
    want[:, 0] = 0
    for backend in BACKENDS:
        np.testing.assert_allclose(compiler.compile(hv, backend=backend)(x=x, v_x=v)["hv_x"],
                                   want, rtol=1e-13)
