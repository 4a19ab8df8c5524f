"""Reductions (sum, mean, max over `axes`, with `keepdims`) and broadcast_to, their transpose.

Gate rules: sum broadcasts G back over the reduced axes; mean does the same divided by the count;
max routes G to the elements equal to the maximum, split evenly between tied elements (so the
gradient of a sum of maxima is still exact); broadcast_to sums G over the broadcast axes.
"""
from __future__ import annotations

import numpy as np
from ..lazy import sympy as sp

from .. import builder as B
from ..codegen import llvm_reduce as LR, llvm_shape as LS
from ..codegen.forms import Expr, call, into_reduction, reduction
from ..ir import NUMPY_DTYPE, ShapeError, TensorType
from ..shapes import count_text
from .record import OPS, declare, gate
from .attrs import BOOL, DTYPE, INTS, SHAPE
from .common import broadcast_shapes, check_axes, reduced_shape


def _reduce_type(op):
    def rule(ins, axes, keepdims):
        (t,) = ins
        check_axes(op, axes, t.ndim)
        if op != "sum" and t.dtype not in ("f32", "f64"):
            raise ShapeError(f"{op}: needs a float operand, got {t}")
        if op == "max" and any(t.shape[a] == 0 for a in axes):   # (a named size may be 0:
                                                                 # NumPy's error at run time)
            raise ShapeError(f"max: reduction over an empty axis of shape {t.shape}")
        return TensorType(t.dtype, reduced_shape(t.shape, axes, keepdims))
    return rule


def _keep(g, x, axes, keepdims):
    """G reshaped to keepdims form, then broadcast to x's shape."""
    if not keepdims:
        g = B.reshape(g, reduced_shape(x.shape, axes, True))
    return B.broadcast_to(g, x.shape)


def _count(shape, axes) -> int:
    n = 1
    for a in axes:
        n *= shape[a]
    return n


def count(x, axes):
    """The number of elements of x over `axes`: an int for concrete sizes, else a `size` node
    (the run-time N of a symbolic dimension: mean over N divides by the batch's N)."""
    if any(isinstance(x.shape[a], str) for a in axes):
        return x.b.emit("size", [x], axes=tuple(axes), dtype=x.dtype)
    return _count(x.shape, axes)


def _size_type(ins, axes, dtype):
    (t,) = ins
    check_axes("size", axes, t.ndim)
    if dtype not in ("f32", "f64"):
        raise ShapeError(f"size: counts as a float (f32 or f64), got dtype {dtype}")
    return TensorType(dtype, ())


def _sym_reduce(fn):
    def rule(x, axes, keepdims):
        out = x
        for a in sorted(axes, reverse=True):
            out = fn.reduce(out, axis=a) if out.shape[a] else np.full(
                out.shape[:a] + out.shape[a + 1:], sp.Integer(0), dtype=object)
            out = np.asarray(out, dtype=object)
        if keepdims:
            out = out.reshape(reduced_shape(x.shape, axes, True))
        return np.asarray(out, dtype=object)
    return rule


def _max_gate(g, out, x, axes, keepdims):
    peak = B.broadcast_to(out if keepdims else B.reshape(out, reduced_shape(x.shape, axes, True)),
                          x.shape)
    mask = B.cast(B.equal(x, peak), x.dtype)
    ties = B.broadcast_to(B.sum(mask, axes, keepdims=True), x.shape)
    return _keep(g, x, axes, keepdims) * mask / ties


declare("sum",
        shape=_reduce_type("sum"),
        attrs={"axes": INTS, "keepdims": BOOL},
        eval=lambda x, axes, keepdims: np.sum(x, axis=axes, keepdims=keepdims),
        gate=gate("dx = G broadcast over the summed axes",
                  lambda g, out, x, axes, keepdims: _keep(g, x, axes, keepdims)),
        sympy=_sym_reduce(np.frompyfunc(lambda a, b: a + b, 2, 1)),
        numpy=reduction("sum"),
        llvm=LR.Reduce("sum"),
        into=into_reduction("sum"),
        reduction=True, plannable=True, multilinear=True)

declare("mean",
        shape=_reduce_type("mean"),
        attrs={"axes": INTS, "keepdims": BOOL},
        eval=lambda x, axes, keepdims: np.mean(x, axis=axes, keepdims=keepdims),
        gate=gate("dx = G/n broadcast over the averaged axes",
                  lambda g, out, x, axes, keepdims:
                  _keep(g, x, axes, keepdims) / count(x, axes)),
        sympy=lambda x, axes, keepdims: (
            OPS["sum"].sympy(x, axes, keepdims) / sp.Integer(_count(x.shape, axes))),
        numpy=reduction("mean"),
        llvm=LR.Reduce("mean"),
        into=into_reduction("mean"),
        reduction=True, plannable=True)

declare("max",
        shape=_reduce_type("max"),
        attrs={"axes": INTS, "keepdims": BOOL},
        eval=lambda x, axes, keepdims: np.max(x, axis=axes, keepdims=keepdims),
        gate=gate("dx = G routed to the maximum (split between ties)", _max_gate),
        sympy=_sym_reduce(np.frompyfunc(lambda a, b: sp.Max(a, b), 2, 1)),
        numpy=reduction("max"),
        llvm=LR.Reduce("max"),
        into=into_reduction("max"),
        reduction=True, plannable=True)


# size(x; axes, dtype): the number of elements of x over `axes`, as a float scalar.  Only the
# gate rules build it, for a count over a dimension name (`mean` over N divides by the N of the
# call); x's values are not read, so no gradient flows through it.
declare("size",
        shape=_size_type,
        attrs={"axes": INTS, "dtype": DTYPE},
        eval=lambda x, axes, dtype: np.asarray(_count(np.shape(x), axes),
                                               dtype=NUMPY_DTYPE[dtype]),
        gate=gate(None),
        sympy=lambda x, axes, dtype: np.asarray(sp.Integer(_count(x.shape, axes)), dtype=object),
        numpy=Expr(lambda args, attrs, node: f"np.{NUMPY_DTYPE[attrs['dtype']]}("
                   f"{count_text(node.inputs[0].shape, attrs['axes'])})"),   # N = 0: IEEE
        llvm=LR.Size(),
        nonneg=True)


def _broadcast_type(ins, shape):
    (t,) = ins
    if len(shape) < t.ndim or broadcast_shapes("broadcast_to", t.shape, shape) != tuple(shape):
        raise ShapeError(f"broadcast_to: shape {t.shape} does not broadcast to {tuple(shape)}")
    return TensorType(t.dtype, shape)


def unbroadcast(g: B.Var, shape: tuple) -> B.Var:
    """Sum G (of a broadcast shape) over the axes that broadcasting added or stretched, so the
    result has `shape`: ∂L/∂x of y = broadcast(x) is Σ over the copies.  The autodiff pass
    undoes every binary op's broadcasting with it (compiler/autodiff.py)."""
    if g.shape == tuple(shape):
        return g
    lead = g.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(lead + k for k, d in enumerate(shape)
                                      if d == 1 and g.shape[lead + k] != 1)
    if lead == 0:
        return B.sum(g, axes, keepdims=True)
    return B.reshape(B.sum(g, axes), shape)


def _unbroadcast_gate(g, out, x, shape):
    return unbroadcast(g, x.shape)


declare("broadcast_to",
        shape=_broadcast_type,
        attrs={"shape": SHAPE},
        eval=lambda x, shape: np.broadcast_to(x, shape),
        gate=gate("dx = G summed over the broadcast axes", _unbroadcast_gate),
        sympy=lambda x, shape: np.broadcast_to(x, shape).copy(),
        numpy=call("np.broadcast_to", "shape"),
        llvm=LS.ReadThrough(LS.lower_broadcast_to),
        view=True, through=True)
