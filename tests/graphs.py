"""Shared test graphs: the lecture's two examples, the two-layer net (cross-entropy and SVM),
broadcasting and fan-out models, a model using most DSL functions, and one *sample* per op of
the op table (input types, attrs, a value generator that keeps away from kinks).

`EXAMPLES[name]` is an `Example(build, inputs)`: `build(dtype)` traces the model for a float
dtype ("f32"/"f64"), `inputs(rng, dtype)` gives keyword arrays for it.
`OP_SAMPLES[op]` is an `OpSample`: `op_graph(sample, case, dtype)` builds the single-op graph
`loss = Σ c·op(inputs)` (c a fixed weight input), the unit the per-op tests differentiate.
A newly registered op must add a sample here; tests/test_op_table.py fails until it does.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest
import sympy as sp

from compiler.builder import Builder
from compiler.constants import ConstData
from compiler.ir import NUMPY_DTYPE, Graph, TensorType
from compiler.ops import OPS
from frontends import dsl
from frontends.dsl import f32, f64, i64

SPEC = {"f32": f32, "f64": f64}


# ---- example models ------------------------------------------------------------------------
def lecture_f(x, y, z):
    """The lecture's first circuit: f = (x + y)·z."""
    q = x + y
    f = q * z
    return f


def neuron(w, x):
    """The lecture's sigmoid neuron: σ(w0·x0 + w1·x1 + w2)."""
    return dsl.sigmoid(w[0] * x[0] + w[1] * x[1] + w[2])


def two_layer(W1, b1, W2, b2, X, y, reg=1e-3):
    """relu hidden layer, softmax cross-entropy + reg·(ΣW1² + ΣW2²) (CS231n's two-layer net)."""
    h = dsl.relu(X @ W1 + b1)
    scores = h @ W2 + b2
    data_loss = dsl.softmax_cross_entropy(scores, y)
    reg_loss = reg * (dsl.sum(W1 * W1) + dsl.sum(W2 * W2))
    loss = data_loss + reg_loss
    return loss


def two_layer_svm(W1, b1, W2, b2, X, y, reg=1e-3):
    """The same net with the multiclass hinge loss."""
    h = dsl.relu(X @ W1 + b1)
    scores = h @ W2 + b2
    loss = dsl.svm_loss(scores, y) + reg * (dsl.sum(W1 * W1) + dsl.sum(W2 * W2))
    return loss


def broadcasting(a, b, c):
    """(3,1) ⊙ (4,) + scalar, then (3,4) - (4,) and a (3,1) divisor."""
    m = a * b + c
    n = m - b / (a * a + 1)
    return dsl.sum(dsl.tanh(n))


def fan_out(x, w):
    """x feeds four uses; y feeds three."""
    y = dsl.tanh(x * w)
    z = y * y + y * x + dsl.exp(-x)
    return dsl.mean(z)


def many_ops(x, W, m):
    """Most DSL functions in one model (slicing, .T, reshape, where, reductions, activations)."""
    a = dsl.leaky_relu(x @ W, 0.1) + dsl.elu(x[:, :2] @ W[:2], 0.5)
    b = dsl.swish(a).T
    c = dsl.where(b > 0, dsl.softplus(b), dsl.sigmoid(b) * 2.0)
    d = dsl.softmax(c, axis=0) + dsl.log_softmax(c.reshape(6, 2), axis=1).reshape(3, 4)
    e = dsl.maximum(d, m) - dsl.minimum(d, 0.5) + dsl.sqrt(dsl.abs(d) + 1.0) ** 1.5
    f = dsl.max(e, axis=1) + dsl.mean(e, axis=1) + dsl.log1p(dsl.abs(e[::-1, 1:3])).sum(axis=1)
    return dsl.sum(f * f) / 3.0


def matvec(W, v, u):
    """1-D operands of @: matrix·vector, vector·matrix, vector·vector."""
    return dsl.sum(dsl.tanh(W @ v)) + (u @ W) @ v


@dataclass(frozen=True)
class Example:
    build: object     # (dtype) -> Graph
    inputs: object    # (rng, dtype) -> dict of arrays


def _meant(fn, **specs):
    """Trace a model whose (3,1)-with-(4,) broadcasting is intended (no BroadcastWarning)."""
    import warnings
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*both operands are expanded")
        return dsl.trace(fn, **specs)


def _f(rng, shape, dtype, scale=1.0):
    return (scale * rng.standard_normal(shape)).astype(NUMPY_DTYPE[dtype])


def _two_layer_inputs(rng, dtype, n=6, d=4, hdim=5, c=3):
    return {"W1": _f(rng, (d, hdim), dtype, 0.5), "b1": _f(rng, (hdim,), dtype, 0.1),
            "W2": _f(rng, (hdim, c), dtype, 0.5), "b2": _f(rng, (c,), dtype, 0.1),
            "X": _f(rng, (n, d), dtype), "y": rng.integers(0, c, n)}


def _two_layer_build(fn):
    def build(dtype, n=6, d=4, hdim=5, c=3):
        t = SPEC[dtype]
        return dsl.trace(fn, W1=t[d, hdim], b1=t[hdim], W2=t[hdim, c], b2=t[c], X=t[n, d], y=i64[n])
    return build


EXAMPLES = {
    "lecture_f": Example(
        lambda dt: dsl.trace(lecture_f, x=SPEC[dt][()], y=SPEC[dt][()], z=SPEC[dt][()]),
        lambda rng, dt: {k: _f(rng, (), dt) for k in "xyz"}),
    "neuron": Example(
        lambda dt: dsl.trace(neuron, w=SPEC[dt][3], x=SPEC[dt][2]),
        lambda rng, dt: {"w": _f(rng, 3, dt), "x": _f(rng, 2, dt)}),
    "two_layer": Example(_two_layer_build(two_layer), _two_layer_inputs),
    "two_layer_svm": Example(_two_layer_build(two_layer_svm), _two_layer_inputs),
    "broadcasting": Example(
        lambda dt: _meant(broadcasting, a=SPEC[dt][3, 1], b=SPEC[dt][4], c=SPEC[dt][()]),
        lambda rng, dt: {"a": _f(rng, (3, 1), dt), "b": _f(rng, 4, dt), "c": _f(rng, (), dt)}),
    "fan_out": Example(
        lambda dt: dsl.trace(fan_out, x=SPEC[dt][2, 3], w=SPEC[dt][3]),
        lambda rng, dt: {"x": _f(rng, (2, 3), dt), "w": _f(rng, 3, dt)}),
    "matvec": Example(
        lambda dt: dsl.trace(matvec, W=SPEC[dt][3, 4], v=SPEC[dt][4], u=SPEC[dt][3]),
        lambda rng, dt: {"W": _f(rng, (3, 4), dt), "v": _f(rng, 4, dt), "u": _f(rng, 3, dt)}),
    "many_ops": Example(
        lambda dt: dsl.trace(many_ops, x=SPEC[dt][4, 3], W=SPEC[dt][3, 3], m=SPEC[dt][3, 1]),
        lambda rng, dt: {"x": _f(rng, (4, 3), dt), "W": _f(rng, (3, 3), dt),
                         "m": _f(rng, (3, 1), dt)}),
}


# ---- value generators (kinks avoided: no ties, no zeros where an op bends) -----------------
def _away(lo=0.2, hi=2.0):
    """Magnitudes in [lo, hi] with random signs: away from a kink at 0."""
    def gen(rng, types, attrs):
        return [rng.uniform(lo, hi, t.shape) * rng.choice([-1.0, 1.0], t.shape) for t in types]
    return gen


def _uniform(lo, hi):
    return lambda rng, types, attrs: [rng.uniform(lo, hi, t.shape) for t in types]


def _normal(rng, types, attrs):
    return [rng.standard_normal(t.shape) for t in types]


def _reject(gen, ok, tries=2000):
    """Draw from `gen` until `ok(values)`: keeps every pair of compared values apart."""
    def draw(rng, types, attrs):
        for _ in range(tries):
            vals = gen(rng, types, attrs)
            if ok(vals, attrs):
                return vals
        raise RuntimeError("no sample away from the kinks found")
    return draw


def _apart(vals, attrs):
    a, b = vals[0], vals[-1]
    return vals[0] is vals[-1] or np.min(np.abs(np.subtract(a, b))) > 0.1


def _distinct(rng, types, attrs):
    """Values spaced ≥ 0.25 apart (a unique maximum along every axis)."""
    (t,) = types
    n = int(np.prod(t.shape))
    v = rng.permutation(n) * 0.3 - 0.15 * n + rng.uniform(-0.02, 0.02, n)
    return [v.reshape(t.shape)]


def _labelled(c_margin=None):
    """Scores [N, C] and i64 labels; with a margin, every hinge s_j − s_y + margin is ≥ 0.05
    away from 0."""
    def gen(rng, types, attrs):
        s, y = types
        for _ in range(2000):
            scores = rng.standard_normal(s.shape)
            labels = rng.integers(0, s.shape[1], s.shape[0])
            if c_margin is None:
                return [scores, labels]
            m = scores - scores[np.arange(len(labels)), labels][:, None] + attrs["margin"]
            m[np.arange(len(labels)), labels] = 1.0
            if np.min(np.abs(m)) > 0.05:
                return [scores, labels]
        raise RuntimeError("no svm sample away from the hinge")
    return gen


def _where_gen(rng, types, attrs):
    c, a, b = types
    return [rng.random(c.shape) > 0.5, rng.standard_normal(a.shape), rng.standard_normal(b.shape)]


def _mixed_gen(rng, types, attrs):
    """Normal floats, random bool masks, small ints: by each input's dtype."""
    return [rng.random(t.shape) > 0.5 if t.dtype == "bool" else
            rng.integers(-3, 4, t.shape) if t.dtype == "i64" else
            rng.standard_normal(t.shape) for t in types]


def _cast_gen(rng, types, attrs):
    (t,) = types
    if t.dtype == "bool":
        return [rng.random(t.shape) > 0.5]
    if t.dtype == "i64":
        return [rng.integers(-3, 4, t.shape)]
    return [rng.standard_normal(t.shape)]


def _compare_gen(rng, types, attrs):
    """Small integers as floats, so that ties (equal) happen too."""
    return [rng.integers(-2, 3, t.shape).astype(float) for t in types]


def _labels_gen(rng, types, attrs):
    (t,) = types
    return [rng.integers(0, attrs["depth"], t.shape)]


def _indexed(bound):
    """Floats, and i64 indices in [0, bound(types, attrs)) with the first index repeated last
    (so the scatter-adds add two upstream gradients into one place)."""
    def gen(rng, types, attrs):
        out = []
        for t in types:
            if t.dtype != "i64":
                out.append(rng.standard_normal(t.shape))
                continue
            idx = rng.integers(0, bound(types, attrs), t.shape)
            if idx.size > 1:
                idx.flat[-1] = idx.flat[0]
            out.append(idx)
        return out
    return gen


_gathered = _indexed(lambda types, attrs: types[0].shape[attrs["axis"]])
_scattered = _indexed(lambda types, attrs: attrs["shape"][attrs["axis"]])


# ---- per-op samples -----------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    """One way to call an op: input types ("F" = the float dtype under test), attrs, and
    `same` (a binary op reads one input twice: fan-out), `fd` (finite differences apply)."""
    types: tuple
    attrs: dict = field(default_factory=dict)
    label: str = ""
    same: bool = False
    fd: bool = True


@dataclass(frozen=True)
class OpSample:
    cases: tuple
    gen: object = _normal     # (rng, [TensorType], attrs) -> list of arrays


F = "F"
UNARY_SHAPES = (Case(((F, ()),), label="scalar"), Case(((F, (2, 3)),), label="2x3"))
BINARY_SHAPES = (Case(((F, (2, 3)), (F, (2, 3))), label="same-shape"),
                 Case(((F, (3, 1)), (F, (4,))), label="bcast-3x1-4"),
                 Case(((F, ()), (F, (2, 2))), label="bcast-scalar"),
                 Case(((F, (3,)), (F, (3,))), label="fan-out", same=True))
COMPARE_SHAPES = BINARY_SHAPES[:3]


def _unary(gen=_normal, **attrs):
    return OpSample(tuple(Case(c.types, dict(attrs), c.label) for c in UNARY_SHAPES), gen)


OP_SAMPLES = {
    "neg": _unary(), "exp": _unary(), "tanh": _unary(), "sigmoid": _unary(),
    "softplus": _unary(), "swish": _unary(), "sin": _unary(), "cos": _unary(),
    "log": _unary(_uniform(0.3, 3.0)), "sqrt": _unary(_uniform(0.3, 3.0)),
    "log1p": _unary(_uniform(-0.6, 3.0)),
    "relu": _unary(_away()), "abs": _unary(_away()), "sign": _unary(_away()),
    "leaky_relu": _unary(_away(), alpha=0.1), "elu": _unary(_away(), alpha=0.7),
    "add": OpSample(BINARY_SHAPES), "sub": OpSample(BINARY_SHAPES),
    "mul": OpSample(BINARY_SHAPES),
    "div": OpSample(BINARY_SHAPES, _away(0.5, 2.0)),
    "pow": OpSample(BINARY_SHAPES, _uniform(0.5, 1.8)),
    "maximum": OpSample(BINARY_SHAPES, _reject(_normal, _apart)),
    "minimum": OpSample(BINARY_SHAPES, _reject(_normal, _apart)),
    **{op: OpSample(COMPARE_SHAPES, _compare_gen) for op in (
        "greater", "greater_equal", "less", "less_equal", "equal", "not_equal")},
    "where": OpSample((Case((("bool", (2, 3)), (F, (2, 3)), (F, (2, 3))), label="same-shape"),
                       Case((("bool", (3, 1)), (F, (4,)), (F, ())), label="bcast")), _where_gen),
    "dropout": OpSample((Case(((F, (2, 3)), ("bool", (2, 3))), {"p": 0.25}, "2x3"),
                         Case(((F, ()), ("bool", ())), {"p": 0.5}, "scalar")), _mixed_gen),
    "cast": OpSample((Case(((F, (2, 3)),), {"dtype": F}, "float-identity"),
                      Case((("f64", (2, 3)),), {"dtype": "f32"}, "f64-to-f32", fd=False),
                      Case((("bool", (4,)),), {"dtype": F}, "bool-to-float"),
                      Case((("i64", (4,)),), {"dtype": F}, "int-to-float")), _cast_gen),
    "const": OpSample((Case((), {"value": 2.5, "dtype": F, "shape": (2, 3)}, "full"),
                       Case((), {"value": -1.0, "dtype": F, "shape": ()}, "scalar"))),
    **{op: OpSample((Case(((F, (2, 3)),), {"axes": (1,), "keepdims": False}, "axis1"),
                     Case(((F, (2, 3)),), {"axes": (0,), "keepdims": True}, "axis0-keep"),
                     Case(((F, (2, 3)),), {"axes": (0, 1), "keepdims": False}, "all"),
                     Case(((F, (4,)),), {"axes": (0,), "keepdims": True}, "1d-keep")),
                    _distinct if op == "max" else _normal) for op in ("sum", "mean", "max")},
    "broadcast_to": OpSample((Case(((F, (3, 1)),), {"shape": (2, 3, 4)}, "3x1-to-2x3x4"),
                              Case(((F, (4,)),), {"shape": (3, 4)}, "4-to-3x4"),
                              Case(((F, ()),), {"shape": (2,)}, "scalar"))),
    "matmul": OpSample((Case(((F, (3, 4)), (F, (4, 2))), label="3x4@4x2"),
                        Case(((F, (3, 3)), (F, (3, 3))), label="fan-out", same=True),
                        Case(((F, (1, 2)), (F, (2, 1))), label="row@col"))),
    "reshape": OpSample((Case(((F, (2, 3)),), {"shape": (3, 2)}, "2x3-to-3x2"),
                         Case(((F, (6,)),), {"shape": (1, 2, 3)}, "6-to-1x2x3"),
                         Case(((F, (1,)),), {"shape": ()}, "1-to-scalar"))),
    "transpose": OpSample((Case(((F, (2, 3)),), {"perm": (1, 0)}, "2d"),
                           Case(((F, (2, 3, 4)),), {"perm": (2, 0, 1)}, "3d"))),
    "getitem": OpSample((Case(((F, (3,)),), {"index": (1,)}, "int"),
                         Case(((F, (3, 4)),), {"index": ((0, 3, 2), (1, 4, 1))}, "slices"),
                         Case(((F, (3, 4)),), {"index": (None, (2, -1, -1), 2)}, "rev-newaxis"))),
    "putitem": OpSample((Case(((F, ()),), {"index": (1,), "shape": (3,)}, "int"),
                         Case(((F, (2, 3)),), {"index": ((0, 3, 2), (1, 4, 1)), "shape": (3, 4)},
                              "slices"))),
    "softmax": OpSample((Case(((F, (2, 3)),), {"axis": 1}, "rows"),
                         Case(((F, (3, 2)),), {"axis": 0}, "cols"))),
    "log_softmax": OpSample((Case(((F, (2, 3)),), {"axis": 1}, "rows"),
                             Case(((F, (3, 2)),), {"axis": 0}, "cols"))),
    "softmax_cross_entropy": OpSample((Case(((F, (4, 3)), ("i64", (4,))), label="4x3"),),
                                      _labelled()),
    "svm_loss": OpSample((Case(((F, (4, 3)), ("i64", (4,))), {"margin": 1.0}, "margin1"),
                          Case(((F, (3, 4)), ("i64", (3,))), {"margin": 0.5}, "margin0.5")),
                         _labelled(True)),
    "pick": OpSample((Case(((F, (4, 3)), ("i64", (4,))), label="4x3"),), _labelled()),
    "onehot": OpSample((Case((("i64", (4,)),), {"depth": 3, "dtype": F}, "4x3"),), _labels_gen),
    "concatenate": OpSample((Case(((F, (2, 3)), (F, (2, 1)), (F, (2, 2))), {"axis": 1}, "three"),
                             Case(((F, (1, 2)), (F, (2, 2))), {"axis": 0}, "axis0"),
                             Case(((F, (3,)), (F, (3,))), {"axis": 0}, "fan-out", same=True))),
    "gather": OpSample((Case(((F, (4, 2)), ("i64", (3,))), {"axis": 0}, "rows"),
                        Case(((F, (2, 3)), ("i64", (2, 2))), {"axis": 1}, "cols-2d"),
                        Case(((F, (3,)), ("i64", ())), {"axis": 0}, "0d-index")), _gathered),
    "scatter_add": OpSample((Case(((F, (3, 2)), ("i64", (3,))), {"axis": 0, "shape": (4, 2)},
                                  "rows"),
                             Case(((F, (2, 2, 2)), ("i64", (2, 2))), {"axis": 1, "shape": (2, 3)},
                                  "cols-2d")), _scattered),
    "take_along_axis": OpSample((Case(((F, (3, 4)), ("i64", (3, 2))), {"axis": 1}, "axis1"),
                                 Case(((F, (3, 2)), ("i64", (2, 2))), {"axis": 0}, "axis0")),
                                _gathered),
    "scatter_add_along_axis": OpSample((Case(((F, (3, 2)), ("i64", (3, 2))),
                                             {"axis": 1, "shape": (3, 4)}, "axis1"),), _scattered),
    "batch_matmul": OpSample((Case(((F, (2, 2, 3)), (F, (2, 3, 2))), label="2x2x3@2x3x2"),
                              Case(((F, (1, 2, 2)), (F, (2, 2, 1))), label="bcast-batch"),
                              Case(((F, (2, 2, 2)), (F, (2, 2, 2))), label="fan-out",
                                   same=True))),
    "size": OpSample((Case(((F, (2, 3)),), {"axes": (0,), "dtype": F}, "rows"),
                      Case(((F, (2, 3)),), {"axes": (0, 1), "dtype": F}, "all"))),
}


_GEO = {"stride": (1, 1), "padding": (0, 0), "dilation": (1, 1), "groups": 1}
_POOL = {"kernel": (2, 2), "stride": (2, 2)}
OP_SAMPLES.update({    # compiler/ops/conv.py: tiny NCHW/OIHW shapes (SymPy renders every sum)
    "conv2d": OpSample((
        Case(((F, (1, 1, 2, 2)), (F, (2, 1, 2, 2))), {**_GEO, "padding": (1, 1)}, "pad1"),
        Case(((F, (1, 1, 5, 5)), (F, (1, 1, 2, 2))), {**_GEO, "stride": (2, 2),
                                                      "dilation": (2, 2)}, "stride2-dil2"),
        Case(((F, (1, 2, 2, 2)), (F, (2, 1, 2, 2))), {**_GEO, "groups": 2}, "groups2"),
        Case(((F, (1, 1, 3, 2)), (F, (2, 1, 2, 1))), {**_GEO, "padding": (0, 1)}, "odd"))),
    "conv2d_input_grad": OpSample((
        Case(((F, (1, 2, 3, 3)), (F, (2, 1, 2, 2))), {**_GEO, "padding": (1, 1),
                                                      "size": (2, 2)}, "pad1"),
        Case(((F, (1, 1, 2, 2)), (F, (1, 1, 2, 2))), {**_GEO, "stride": (2, 2),
                                                      "dilation": (2, 2), "size": (5, 5)},
             "stride2-dil2"))),
    "conv2d_weight_grad": OpSample((
        Case(((F, (1, 1, 2, 2)), (F, (1, 2, 3, 3))), {**_GEO, "padding": (1, 1),
                                                      "kernel": (2, 2)}, "pad1"),
        Case(((F, (1, 2, 2, 2)), (F, (1, 2, 1, 1))), {**_GEO, "groups": 2, "kernel": (2, 2)},
             "groups2"))),
    "max_pool2d": OpSample((Case(((F, (1, 1, 4, 4)),), _POOL, "2x2"),
                            Case(((F, (1, 1, 3, 3)),), {**_POOL, "stride": (1, 1)}, "overlap")),
                           _distinct),
    "avg_pool2d": OpSample((Case(((F, (1, 1, 4, 4)),), _POOL, "2x2"),
                            Case(((F, (1, 1, 3, 3)),), {**_POOL, "stride": (1, 1)}, "overlap"))),
    "global_avg_pool": OpSample((Case(((F, (2, 3, 2, 2)),), label="2x3x2x2"),)),
    "pool_windows": OpSample((Case(((F, (1, 1, 3, 3)),), {**_POOL, "stride": (1, 1)},
                                   "overlap"),)),
    "pool_fold": OpSample((Case(((F, (1, 1, 2, 2, 2, 2)),), {**_POOL, "stride": (1, 1),
                                                             "size": (3, 3)}, "overlap"),)),
})
OP_SAMPLES.update({    # compiler/ops/special.py: the identity without a gradient, an array constant
    "stop_gradient": OpSample((Case(((F, (2, 3)),), label="2x3"),
                               Case(((F, ()),), label="scalar"))),
    "const_array": OpSample((
        Case((), {"data": ConstData(np.array([[1.5, -2.0, 0.25], [3.0, 0.0, -0.5]])),
                  "dtype": F}, "2x3"),
        Case((), {"data": ConstData(np.array([1, -2, 3])), "dtype": "i64"}, "i64"))),
})

def case_types(case: Case, dtype: str) -> list:
    return [TensorType(dtype if d == F else d, s) for d, s in case.types]


def case_attrs(case: Case, dtype: str) -> dict:
    return {k: (dtype if v == F else v) for k, v in case.attrs.items()}


def case_ids(op: str) -> list:
    return [f"{op}-{c.label}" for c in OP_SAMPLES[op].cases]


def all_cases() -> list:
    """(op, case) for every case of every op in the table order of OP_SAMPLES."""
    return [(op, c) for op, s in OP_SAMPLES.items() for c in s.cases]


def op_graph(op: str, case: Case, dtype: str = "f64", weighted: bool = True) -> Graph:
    """`out = op(inputs)` and, if the output is a float and `weighted`, `loss = Σ c·out` with
    a weight input `c` of out's type (so every output element gets its own upstream gradient).
    Inputs are named x0, x1, ... (a binary op with `same` reads `x0` twice)."""
    g = Graph(f"{op}_sample")
    b = Builder(g)
    types = case_types(case, dtype)
    if case.same:
        ins = [b.add_input("x0", types[0])] * len(types)
    else:
        ins = [b.add_input(f"x{k}", t) for k, t in enumerate(types)]
    out = b.emit(op, ins, name="out", **case_attrs(case, dtype))
    g.outputs["out"] = out.value
    if weighted and out.value.type.is_float:
        c = b.add_input("c", out.value.type)
        loss = b.emit("mul", [out, c])
        axes = tuple(range(out.ndim))
        g.outputs["loss"] = b.emit("sum", [loss], name="loss", axes=axes, keepdims=False).value
    return g


def op_inputs(op: str, case: Case, graph: Graph, rng, dtype: str = "f64") -> dict:
    """Values for `op_graph`'s inputs: the sample's generator, then a random weight `c`."""
    types = case_types(case, dtype)
    vals = OP_SAMPLES[op].gen(rng, types, case_attrs(case, dtype))
    names = ["x0"] if case.same else [f"x{k}" for k in range(len(types))]
    out = {}
    for name, v in zip(names, vals):
        t = graph.input(name).type
        out[name] = np.asarray(v).astype(NUMPY_DTYPE[t.dtype])
    if any(v.name == "c" for v in graph.inputs):
        t = graph.input("c").type
        out["c"] = rng.uniform(0.5, 1.5, t.shape).astype(NUMPY_DTYPE[t.dtype])
    return out


# ---- a minimal SymPy renderer (independent of compiler/symbolic.py) -----------------------
def symbols_for(graph: Graph, names) -> dict:
    """Input name -> object array of real symbols `a_0_1` for the named float inputs."""
    out = {}
    for v in graph.inputs:
        if v.name in names:
            arr = np.empty(v.shape, dtype=object)
            for idx in np.ndindex(*v.shape):
                arr[idx] = sp.Symbol(v.name + "".join(f"_{i}" for i in idx), real=True)
            out[v.name] = arr
    return out


def sympy_values(graph: Graph, symbols: dict, numbers: dict) -> dict:
    """Render every value of `graph` with the op records' SymPy meanings: symbolic inputs from
    `symbols`, the others as exact numbers from `numbers` (bools as sp.true/sp.false)."""
    env = {}
    for v in graph.inputs:
        if v.name in symbols:
            env[v.name] = symbols[v.name]
            continue
        src = np.asarray(numbers[v.name])
        arr = np.empty(v.shape, dtype=object)
        for idx in np.ndindex(*v.shape):
            x = src[idx]
            arr[idx] = (sp.true if x else sp.false) if src.dtype == bool else (
                sp.Integer(int(x)) if src.dtype.kind == "i" else sp.Float(float(x), 30))
        env[v.name] = arr
    for n in graph.nodes:
        env[n.out.name] = np.asarray(
            OPS[n.op].sympy(*(env[v.name] for v in n.inputs), **n.attrs), dtype=object)
    return env



# ---- central finite differences (float64) -------------------------------------------------
def numeric_grad(graph: Graph, inputs: dict, wrt: str, of: str, h: float = 1e-5) -> np.ndarray:
    """∂(output `of`)/∂(input `wrt`) by central differences, (L(x+h) − L(x−h)) / 2h per element,
    evaluated with the reference interpreter."""
    from compiler import interpret
    x = np.array(inputs[wrt], dtype=np.float64)
    out = np.zeros_like(x)
    for idx in np.ndindex(*x.shape):
        vals = []
        for step in (h, -h):
            xp = x.copy()
            xp[idx] += step
            vals.append(float(interpret(graph, dict(inputs, **{wrt: xp}))[of]))
        out[idx] = (vals[0] - vals[1]) / (2 * h)
    return out


def assert_close_grad(analytic, numeric, what: str, rel: float = 1e-6, floor: float = 1e-3):
    """Relative error |a − n| / max(|a|, |n|, floor) below `rel` for every element, and for the
    whole array in norm.  The floor keeps near-zero entries (where finite differences carry
    ~1e-10 of rounding noise) to an absolute error of rel·floor."""
    a, n = np.asarray(analytic, np.float64), np.asarray(numeric, np.float64)
    assert a.shape == n.shape, f"{what}: shape {a.shape} vs finite differences {n.shape}"
    scale = np.maximum(np.maximum(np.abs(a), np.abs(n)), floor)
    err = np.abs(a - n) / scale
    worst = np.unravel_index(np.argmax(err), err.shape) if err.size else ()
    assert err.size == 0 or err.max() < rel, (
        f"{what}: relative error {err.max():.2e} at {worst}: gradient {a[worst]!r} vs finite "
        f"differences {n[worst]!r}")
    norm = np.linalg.norm(a - n) / max(np.linalg.norm(a), np.linalg.norm(n), floor)
    assert norm < rel, f"{what}: relative error in norm {norm:.2e}"


def set_gate(monkeypatch, op: str, rules) -> None:
    """Replace op's gate rule for one test (a deliberately wrong rule the checks must catch):
    the op's record is swapped for a copy with `gate=rules`, undone after the test."""
    import dataclasses
    monkeypatch.setitem(OPS, op, dataclasses.replace(OPS[op], gate=rules))


def differentiable_samples() -> list:
    """(op, f64 graph with a float `loss` output, wrt) for every op sample that has a gate rule
    and a float input to differentiate (the constant `c` excluded), as pytest params: the
    cases of the SymPy checks' every-op tests."""
    import pytest
    out = []
    for op, case in all_cases():
        if not any(r is not None for r in OPS[op].gate):
            continue
        g = op_graph(op, case, "f64")
        wrt = [v.name for v in g.inputs if v.type.is_float and v.name != "c"]
        if wrt and "loss" in g.outputs:
            out.append(pytest.param(op, g, wrt, id=f"{op}-{case.label}"))
    return out


def check_central_differences(forward, args, grads, h=1e-5, entries=None):
    """The gradients `grads` ("d" + input name) against central differences of the scalar
    `forward(**args)` in every float64 input, at `entries(size)` of each (every entry where
    None); the absolute tolerance covers the rounding of f (about 1e-16·|f|/h)."""
    tol = 1e-9 * max(1.0, abs(forward(**args)))
    for k, a in args.items():
        if a.dtype != np.float64:
            continue
        flat = a.reshape(-1)
        for i in (range(flat.size) if entries is None else entries(flat.size)):
            old = flat[i]
            flat[i] = old + h
            up = forward(**args)
            flat[i] = old - h
            down = forward(**args)
            flat[i] = old
            got = grads["d" + k].reshape(-1)[i]
            assert got == pytest.approx((up - down) / (2 * h), rel=1e-6, abs=tol), (k, i)
