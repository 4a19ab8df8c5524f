"""Shared pieces of the op table: shape/dtype rules and SymPy helpers used by several ops."""
from __future__ import annotations

import numpy as np
from ..lazy import sympy as sp

from ..ir import FLOAT_DTYPES, ShapeError, TensorType


# ---- shape rules ---------------------------------------------------------------------------
def broadcast_shapes(op: str, *shapes) -> tuple:
    """NumPy broadcasting; the error names the op and every shape."""
    if len(shapes) == 2 and shapes[0] == shapes[1]:
        return tuple(shapes[0])         # (the common case: what the loop below gives)
    ndim = max((len(s) for s in shapes), default=0)
    out = []
    for k in range(ndim):
        dims = {s[len(s) - ndim + k] for s in shapes if len(s) - ndim + k >= 0}
        dims.discard(1)
        if len(dims) > 1:
            raise ShapeError(f"{op}: shapes {' and '.join(str(tuple(s)) for s in shapes)} do "
                             f"not broadcast (axis {k - ndim}: sizes "
                             f"{', '.join(sorted(map(str, dims)))})")
        out.append(dims.pop() if dims else 1)
    return tuple(out)


def _need_float(op: str, t: TensorType) -> None:
    if t.dtype not in FLOAT_DTYPES:
        raise ShapeError(f"{op}: needs a float operand (f32 or f64), got {t}")


def float_unary(op: str):
    def rule(ins, **attrs):
        _need_float(op, ins[0])
        return ins[0]
    return rule


def arith_binary(op: str):
    def rule(ins, **attrs):
        a, b = ins
        if a.dtype != b.dtype or a.dtype == "bool":
            raise ShapeError(f"{op}: dtypes {a.dtype} and {b.dtype} must be equal numbers")
        return TensorType(a.dtype, broadcast_shapes(op, a.shape, b.shape))
    return rule


def float_binary(op: str):
    inner = arith_binary(op)

    def rule(ins, **attrs):
        _need_float(op, ins[0])
        return inner(ins)
    return rule


def compare(op: str):
    def rule(ins, **attrs):
        a, b = ins
        if a.dtype != b.dtype:
            raise ShapeError(f"{op}: dtypes {a.dtype} and {b.dtype} differ")
        return TensorType("bool", broadcast_shapes(op, a.shape, b.shape))
    return rule


def check_axes(op: str, axes, ndim: int) -> None:
    if any(not 0 <= a < ndim for a in axes) or list(axes) != sorted(set(axes)):
        raise ShapeError(f"{op}: axes {axes} are not sorted distinct axes of a rank-{ndim} value")


def reduced_shape(shape, axes, keepdims) -> tuple:
    if keepdims:
        return tuple(1 if k in axes else d for k, d in enumerate(shape))
    return tuple(d for k, d in enumerate(shape) if k not in axes)


# ---- SymPy helpers -------------------------------------------------------------------------
def elementwise(fn):
    """Lift a scalar SymPy function to broadcasting object arrays."""
    vec = np.vectorize(fn, otypes=[object])

    def rule(*arrays, **attrs):
        return np.asarray(vec(*arrays, **attrs) if attrs else vec(*arrays), dtype=object)
    return rule


def sym_bool_to_number(c):
    """A SymPy condition as 1/0 (a Piecewise while it is still symbolic)."""
    if c is True or c == sp.true:
        return sp.Integer(1)
    if c is False or c == sp.false:
        return sp.Integer(0)
    return sp.Piecewise((1, c), (0, True), evaluate=False)


def sym_where(c, a, b):
    if c is True or c == sp.true:
        return a
    if c is False or c == sp.false:
        return b
    # evaluate=False: SymPy's Piecewise folding of nested conditions (simplify_logic, trigsimp)
    # took minutes on the zero-safe gate guards; the unevaluated form means the same
    return sp.Piecewise((a, c), (b, True), evaluate=False)


def obj_array(shape, fill=0):
    out = np.empty(shape, dtype=object)
    out[...] = sp.Integer(fill) if isinstance(fill, int) else fill
    return out
