"""Run-time batch size for the index and array ops (issue 17.3 part 3): a graph whose inputs
have a dimension name N compiles on the LLVM backend to ONE native function that reads N when
it runs (compiler/codegen/llvm_array.py, llvm_shape.py's getitem/putitem, llvm_const.py,
llvm_dims.py) for gather, take_along_axis, their scatter-add transposes, concatenate, basic
indexing and its transpose, and array constants; the index bound checks still refuse a bad
index natively at every N, with the NumPy backend's LabelError.  Oracles: the NumPy backend,
central finite differences in float64 of the LLVM forward itself, and a NumPy-backend train
step fed the same batches."""
from __future__ import annotations

import numpy as np
import pytest

import compiler
from compiler.codegen import llvm_array, llvm_emit
from compiler.ir import TensorType
from compiler.ops import OPS
from compiler.ops.labels import LabelError
from compiler.passes import optimize
from frontends import dsl
from frontends.dsl import f64, i64
from graphs import check_central_differences

SIZES = (1, 5, 17)
V, E = 7, 4                  # an embedding table: V rows of E
# the ops this file covers, read off the op table: every op lowered in llvm_array.py, basic
# indexing and its transpose, and array constants
INDEX_OPS = sorted({op for op, rec in OPS.items()
                    if type(rec.llvm).__module__ == llvm_array.__name__}
                   | {"getitem", "putitem", "const_array"})
BIAS = np.array([0.5, -1.0, 0.25, 2.0])      # captured by `embedding`: a const_array


def embedding(T, ids, W):
    """Token rows of a table (gather along the fixed axis 0, a 2-D index [N, 2]); its
    gradient is a scatter-add of an [N, 2, E] gradient into the table; a captured constant."""
    h = dsl.tanh(T[ids] + BIAS)                      # [N, 2, E]
    return dsl.sum(dsl.sum(h, axis=1) @ W) + dsl.sum(h * h)


def columns(X, cols, j):
    """Columns of every row: a gather along axis 1 of X [N, 6] (P = N rows before the axis)
    and a take_along_axis with [N, 2] indices (its transpose: scatter_add_along_axis into
    shape (N, 6))."""
    a = dsl.sin(X[:, cols])                          # [N, 3]
    b = dsl.take_along_axis(X, j, axis=1)            # [N, 2]
    return dsl.sum(a * a) + dsl.sum(dsl.exp(0.3 * b)) + dsl.sum(a[:, :2] * b)


def slices(X, Y):
    """Slices across N (X[:, 2:5], a step −1, an int, a new axis), concatenate along the
    fixed axis, and pad (putitem) around N's rows; the gradient puts each slice back."""
    a = X[:, 2:5] * dsl.flip(X, axis=1)[:, 1:4]      # [N, 3]
    c = dsl.concatenate([a, Y, X[:, 1][:, None]], axis=1)      # [N, 6]
    p = dsl.pad(dsl.tanh(c), ((0, 0), (1, 2)))       # [N, 9]
    return dsl.sum(p * X[:, None, 4:5].reshape(-1, 1) * 0.7) + dsl.sum(dsl.sigmoid(p) ** 2)


def middle(Z, U, k):
    """N in the middle of [2, N, 5]: slice offsets and strides that are multiples of N
    (Z[1, :, 1:4] starts at 5·N + 1), concatenate along axis 0 (the second block starts at
    element 2·5·N), a gather along the last axis (P = 2·N) and stack."""
    z = dsl.concatenate([Z, U], axis=0)              # [3, N, 5]
    g = z[:, :, k] * 0.5                             # a gather of 3 of the 5 columns
    s = dsl.stack([Z[1, :, 1:4], Z[0, :, :3]], axis=0)        # [2, N, 3]
    return dsl.sum(dsl.tanh(g) * z[2, :, 2:]) + dsl.sum(s * s * g[:2])


# (model, {float input: shape with "N"}, {i64 index input: (shape, the axis size it indexes)})
MODELS = {
    "embedding": (embedding, {"T": (V, E), "W": (E, 3)}, {"ids": (("N", 2), V)}),
    "columns": (columns, {"X": ("N", 6)}, {"cols": ((3,), 6), "j": (("N", 2), 6)}),
    "slices": (slices, {"X": ("N", 6), "Y": ("N", 2)}, {}),
    "middle": (middle, {"Z": (2, "N", 5), "U": (1, "N", 5)}, {"k": ((3,), 5)}),
}


def floats(name) -> list:
    return list(MODELS[name][1])


def trace(name):
    fn, fl, ix = MODELS[name]
    return dsl.trace(fn, **{k: f64[s] for k, s in fl.items()},
                     **{k: i64[s] for k, (s, _) in ix.items()})


def arrays(name, n, rng):
    """Inputs at N = n: normal floats, indices uniform in [0, axis size)."""
    _, fl, ix = MODELS[name]

    def at(shape):
        return tuple(n if d == "N" else d for d in shape)
    out = {k: rng.standard_normal(at(s)) for k, s in fl.items()}
    out.update({k: rng.integers(0, top, size=at(s)) for k, (s, top) in ix.items()})
    return out


def fd_check(forward, args, grads):
    """Central differences (tests/graphs.py) of the LLVM function at the same run-time N, at
    every entry of every float input."""
    check_central_differences(forward, args, grads)


def agree(got, want, n):
    assert set(got) == set(want)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-11, atol=1e-12,
                                   err_msg=f"{k} at N={n}")


def test_every_index_lowering_takes_run_time_sizes_and_is_covered():
    """Each index/array op declares runtime_sizes, and the gradient graphs of the models here
    hold every one of them with an N-sized operand (so the tests below run each lowering at
    run-time N)."""
    assert len(INDEX_OPS) == 8, INDEX_OPS
    lows = llvm_emit.lowerings()
    assert [op for op in INDEX_OPS if not getattr(lows[op], "runtime_sizes", False)] == []
    seen = set()
    for name in MODELS:               # the graphs compile lowers (after the passes)
        for n in optimize(compiler.grad(trace(name))).nodes:
            if n.out.type.symbolic or any(v.type.symbolic for v in n.inputs):
                seen.add(n.op)
            elif n.op == "const_array":      # fixed by nature: in a graph with N
                seen.add(n.op)
    assert sorted(seen & set(INDEX_OPS)) == INDEX_OPS


@pytest.mark.parametrize("name", sorted(MODELS))
def test_gradient_at_run_time_batch_sizes(name, rng):
    """compile(grad(g)) with a symbolic N: one native function for N = 1, 5, 17 (and 5
    again), reading N when it runs; values are the NumPy backend's and the central
    differences of the LLVM forward at that N."""
    g = trace(name)
    dg = compiler.grad(g, wrt=floats(name))
    fl, fn = compiler.compile(dg, backend="llvm"), compiler.compile(dg, backend="numpy")
    fwd = compiler.compile(g, backend="llvm")
    for n in SIZES + (5,):
        args = arrays(name, n, rng)
        got = fl(**args)
        agree(got, fn(**args), n)
        fd_check(lambda **a: float(fwd(**a)["out"]), args, got)
    assert fl.specializations == 1 and fwd.specializations == 1
    assert "a run-time size" in fl.source


@pytest.mark.parametrize("name", sorted(MODELS))
def test_zero_rows_specialize_as_before(name, rng):
    """N = 0 gets native code of its own (llvm_dims.py: loops with a run-time count assume a
    row), with the NumPy backend's values, and the run-time kernel still serves N = 5."""
    dg = compiler.grad(trace(name), wrt=floats(name))
    fl, fn = compiler.compile(dg, backend="llvm"), compiler.compile(dg, backend="numpy")
    for n in (5, 0, 5):
        args = arrays(name, n, rng)
        agree(fl(**args), fn(**args), n)
    assert fl.specializations == 2


def _error(fn, args):
    with pytest.raises(LabelError) as e:
        fn(**args)
    return str(e.value)


@pytest.mark.parametrize("name, key, bad", [("embedding", "ids", V), ("embedding", "ids", -1),
                                            ("columns", "j", 6), ("columns", "j", -3),
                                            ("columns", "cols", 6)])
def test_bad_indices_at_every_size(name, key, bad, rng):
    """An index out of range is refused by the native check at every N (the first, a middle
    and the last row of the run-time count), after good calls, with the NumPy backend's
    LabelError message; the run-time kernel stays the only native code."""
    dg = compiler.grad(trace(name), wrt=floats(name))
    fl, fn = compiler.compile(dg, backend="llvm"), compiler.compile(dg, backend="numpy")
    for n in SIZES:
        for at in sorted({0, n // 2, -1}):
            args = arrays(name, n, rng)
            fl(**args)
            flat = args[key].reshape(-1)
            flat[at if key != "cols" else 1] = bad          # (cols has no N axis)
            message = _error(fl, args)
            assert message == _error(fn, args)
            assert f"index {bad} is outside" in message
    assert fl.specializations == 1


def computed(T, ids, W):
    """Indices the graph computes (ids + 1): checked inside the graph's function, right after
    they are computed, before any other node runs."""
    return dsl.sum(dsl.tanh(T[ids + 1]) @ W)


def test_bad_computed_indices_at_every_size(rng):
    g = dsl.trace(computed, T=f64[V, E], ids=i64["N"], W=f64[E, 3])
    dg = compiler.grad(g, wrt=["T", "W"])
    fl, fn = compiler.compile(dg, backend="llvm"), compiler.compile(dg, backend="numpy")
    T, W = rng.standard_normal((V, E)), rng.standard_normal((E, 3))
    for n in SIZES:
        ids = rng.integers(-1, V - 1, n)
        agree(fl(T=T, ids=ids, W=W), fn(T=T, ids=ids, W=W), n)
        ids[n - 1] = V - 1                            # computed: V, one past the table
        message = _error(fl, dict(T=T, ids=ids, W=W))
        assert message == _error(fn, dict(T=T, ids=ids, W=W))
        assert "computed by add" in message
    assert fl.specializations == 1


def bag(E, W, b, tokens, y):
    """A bag-of-embeddings classifier: mean of the token rows, a linear layer, cross-entropy."""
    h = dsl.mean(E[tokens], axis=1)                  # [N, 8]
    return dsl.softmax_cross_entropy(dsl.relu(h) @ W + b, y)


def test_embedding_train_step_compiles_once(rng):
    """train_step with tokens: i64[N, 3]: one compiled step, one native function, for batches
    of 1, 5, 17 and 5 rows; each loss and update is the NumPy-backend step's on the same
    batches; a bad token is refused at a new N, with the step's parameters unchanged."""
    p = dict(E=rng.standard_normal((V, 8)), W=rng.standard_normal((8, 3)),
             b=rng.standard_normal(3))
    inputs = {"tokens": i64["N", 3], "y": i64["N"]}
    steps = [compiler.train_step(bag, params=p, inputs=inputs, backend=be,
                                 optimizer=compiler.optim.Adam(lr=0.05))
             for be in ("llvm", "numpy")]
    for n in SIZES + (5,):
        tokens, y = rng.integers(0, V, (n, 3)), rng.integers(0, 3, n)
        losses = [s(tokens=tokens, y=y) for s in steps]
        assert losses[0] == pytest.approx(losses[1], rel=1e-12)
        for k in p:
            np.testing.assert_allclose(steps[0].params[k], steps[1].params[k], rtol=1e-11,
                                       atol=1e-13, err_msg=f"{k} at N={n}")
    sym = steps[0]
    before = {k: v.copy() for k, v in sym.params.items()}
    tokens = rng.integers(0, V, (9, 3))
    tokens[8, 2] = V
    with pytest.raises(LabelError, match=f"index {V} is outside"):
        sym(tokens=tokens, y=rng.integers(0, 3, 9))
    for k in before:
        np.testing.assert_array_equal(sym.params[k], before[k])
    assert sym.compilations == 1 and sym._last.kernel.specializations == 1


@pytest.mark.parametrize("index", [np.s_[3:], np.s_[:-1], np.s_[::-1], np.s_[2], np.s_[-1]])
def test_slices_of_the_run_time_axis_are_refused(index):
    """A slice of N's axis other than ':' would have a size such as N − 3 (or need N > 2),
    which a shape (products of ints and names) cannot hold: refused when tracing, on every
    backend, never a kernel reading past the end; the shape rules of getitem and putitem
    refuse the same entries in a graph built otherwise (parsed IR)."""
    with pytest.raises(compiler.GradcError, match="takes only ':'"):
        dsl.trace(lambda X: dsl.sum(X[index]), X=f64["N", 3])
    t = TensorType("f64", ("N", 3))
    entry = tuple(index.indices(5)) if isinstance(index, slice) else index
    entry = tuple("N" if d == 5 else d for d in entry) if isinstance(entry, tuple) else entry
    with pytest.raises(compiler.ShapeError, match="takes only ':'"):
        OPS["getitem"].shape([t], index=(entry,))
    with pytest.raises(compiler.ShapeError, match="takes only ':'"):
        OPS["putitem"].shape([TensorType("f64", (2, 3))], index=(entry,), shape=("N", 3))


def test_concatenate_along_the_run_time_axis_is_refused():
    """Joining along N would give a size 2·N (or N + 3), which is no dimension name."""
    with pytest.raises(compiler.ShapeError, match="known only at run time"):
        dsl.trace(lambda X: dsl.sum(dsl.concatenate([X, X])), X=f64["N", 3])
