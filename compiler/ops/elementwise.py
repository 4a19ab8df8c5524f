"""Elementwise ops: unary math and activations, binary arithmetic, comparisons, where, cast,
constants.  Binary ops broadcast as NumPy does; their gate rules return gradients in the
output's (broadcast) shape and the autodiff pass sums them back to each input's shape.

Tie rules (documented in docs and tested): relu/leaky_relu/elu route the gradient of x = 0 to
the negative side (relu'(0) = 0); maximum/minimum split a tie evenly (½ to each operand).
"""
from __future__ import annotations

import numpy as np
from ..lazy import sympy as sp

from .. import builder as B
from ..codegen import llvm_lower as LL, llvm_math as M
from ..codegen.llvm_lower import Elementwise
from ..codegen.forms import (ADD, ATOM, CMP, MUL, POW, Expr, attr_text, call, helper, infix,
                             into_call, into_cast, into_where, literal, prefix, template,
                             where_form, wrap)
from ..ir import DTYPES, NUMPY_DTYPE, ShapeError, TensorType
from .record import OPS, declare, gate
from .attrs import DTYPE, NUMBER, REAL, SHAPE
from .common import (arith_binary, broadcast_shapes, compare, elementwise, float_binary,
                     float_unary, sym_bool_to_number, sym_where)


# ---- reference implementations shared with the emitted module (keep them self-contained) ---
def sigmoid(x):
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def swish(x):
    return x * sigmoid(x)


def elu(x, alpha):
    return np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0)))


def _zeros_like(v):
    return v.b.const(0, v.dtype, v.shape)


# ---- zero-safe gates (docs/numerics.md) ---------------------------------------------------
# An op with the `zero_safe` trait has gate rules of the form G·f'(x) (linear in the upstream
# gradient G, a factor computed from forward values).  They are plain rules here; where G can
# be a zero chosen by a selecting gate (the `selects` trait), the pass
# compiler/passes/selected_zeros.py wraps their result in where(G == 0, 0, G·f'(x)).


# ---- unary --------------------------------------------------------------------------------
declare("neg",
        shape=lambda ins: _numeric(ins[0], "neg"),
        eval=np.negative,
        gate=gate("dx = −G", lambda g, out, x: -g),
        sympy=elementwise(lambda x: -x),
        numpy=prefix("-"),
        llvm=Elementwise(LL.scalar_neg),
        elementwise=True, ufunc="np.negative", plannable=True, through=True)

declare("exp",
        shape=float_unary("exp"),
        eval=np.exp,
        gate=gate("dx = G·exp(x)", lambda g, out, x: g * out),
        sympy=elementwise(lambda x: sp.exp(x)),
        numpy=call("np.exp"),
        llvm=LL.via_math(M.exp),
        zero_safe=True, elementwise=True, ufunc="np.exp", plannable=True, nonneg=True)

declare("log",
        shape=float_unary("log"),
        eval=np.log,
        gate=gate("dx = G/x", lambda g, out, x: g / x),
        sympy=elementwise(lambda x: sp.log(x)),
        numpy=call("np.log"),
        llvm=LL.via_math(M.log),
        zero_safe=True, elementwise=True, ufunc="np.log", plannable=True)

declare("log1p",
        shape=float_unary("log1p"),
        eval=np.log1p,
        gate=gate("dx = G/(1+x)", lambda g, out, x: g / (1 + x)),
        sympy=elementwise(lambda x: sp.log(1 + x)),
        numpy=call("np.log1p"),
        llvm=LL.via_math(M.log1p),
        zero_safe=True, elementwise=True, ufunc="np.log1p", plannable=True)

declare("sqrt",
        shape=float_unary("sqrt"),
        eval=np.sqrt,
        gate=gate("dx = G/(2·√x)", lambda g, out, x: g / (2 * out)),
        sympy=elementwise(lambda x: sp.sqrt(x)),
        numpy=call("np.sqrt"),
        llvm=LL.libm_call("llvm.sqrt"),
        zero_safe=True, elementwise=True, ufunc="np.sqrt", plannable=True, nonneg=True)

declare("tanh",
        shape=float_unary("tanh"),
        eval=np.tanh,
        gate=gate("dx = G·(1−tanh²x)", lambda g, out, x: g * (1 - out * out)),
        sympy=elementwise(lambda x: sp.tanh(x)),
        numpy=call("np.tanh"),
        llvm=LL.via_math(M.tanh),
        zero_safe=True, elementwise=True, ufunc="np.tanh", plannable=True, bounded=True)

declare("sin",
        shape=float_unary("sin"),
        eval=np.sin,
        gate=gate("dx = G·cos(x)", lambda g, out, x: g * B.unary("cos", x)),
        sympy=elementwise(lambda x: sp.sin(x)),
        numpy=call("np.sin"),
        llvm=LL.libm_call("llvm.sin"),
        zero_safe=True, elementwise=True, ufunc="np.sin", plannable=True, bounded=True)

declare("cos",
        shape=float_unary("cos"),
        eval=np.cos,
        gate=gate("dx = −G·sin(x)", lambda g, out, x: -(g * B.unary("sin", x))),
        sympy=elementwise(lambda x: sp.cos(x)),
        numpy=call("np.cos"),
        llvm=LL.libm_call("llvm.cos"),
        zero_safe=True, elementwise=True, ufunc="np.cos", plannable=True, bounded=True)

declare("sigmoid",
        shape=float_unary("sigmoid"),
        eval=sigmoid,
        gate=gate("dx = G·σ(x)(1−σ(x))", lambda g, out, x: g * (out * (1 - out))),
        sympy=elementwise(lambda x: 1 / (1 + sp.exp(-x))),
        numpy=helper(sigmoid),
        llvm=LL.via_math(LL.sigmoid64),
        zero_safe=True, elementwise=True, bounded=True, nonneg=True)

declare("softplus",
        shape=float_unary("softplus"),
        eval=lambda x: np.logaddexp(0, x),
        gate=gate("dx = G·σ(x)", lambda g, out, x: g * B.sigmoid(x)),
        sympy=elementwise(lambda x: sp.log(1 + sp.exp(x))),
        numpy=template("np.logaddexp(0, {0})"),
        llvm=LL.via_math(LL.softplus64),
        zero_safe=True, elementwise=True, nonneg=True)

declare("swish",
        shape=float_unary("swish"),
        eval=swish,
        gate=gate("dx = G·(σ(x) + x·σ(x)(1−σ(x)))",
                  lambda g, out, x: g * _swish_slope(x, out)),
        sympy=elementwise(lambda x: x / (1 + sp.exp(-x))),
        numpy=helper(swish, also=(sigmoid,)),
        llvm=LL.via_math(LL.swish64),
        zero_safe=True, elementwise=True)

declare("relu",
        shape=float_unary("relu"),
        eval=lambda x: np.maximum(x, 0),
        gate=gate("dx = G·[x > 0]", lambda g, out, x: B.where(out > 0, g, 0)),
        sympy=elementwise(lambda x: sp.Max(x, 0)),
        numpy=Expr(lambda args, attrs, node: f"np.maximum({args[0][0]}, 0.0)"),
        llvm=Elementwise(LL.scalar_relu),
        into=into_call("np.maximum", "0.0"),
        elementwise=True, plannable=True, through=True, nonneg=True)

declare("leaky_relu",
        shape=float_unary("leaky_relu"),
        attrs={"alpha": REAL},
        eval=lambda x, alpha: np.where(x > 0, x, alpha * x),
        gate=gate("dx = G·(1 if x > 0 else α)",
                  lambda g, out, x, alpha: B.where(x > 0, g, alpha * g)),
        sympy=elementwise(lambda x, alpha: sp.Piecewise((x, x > 0), (alpha * x, True))),
        numpy=template("np.where({0} > 0, {0}, {alpha!r} * {0})"),
        llvm=Elementwise(LL.scalar_leaky_relu),
        elementwise=True)

declare("elu",
        shape=float_unary("elu"),
        attrs={"alpha": REAL},
        eval=elu,
        gate=gate("dx = G·(1 if x > 0 else elu(x) + α)",
                  lambda g, out, x, alpha: B.where(x > 0, g, g * (out + alpha))),
        sympy=elementwise(
lambda x, alpha: sp.Piecewise((x, x > 0), (alpha * (sp.exp(x) - 1), True))),
        numpy=helper(elu, "alpha"),
        llvm=Elementwise(LL.scalar_elu),
        zero_safe=True, elementwise=True)

declare("abs",
        shape=lambda ins: _numeric(ins[0], "abs"),
        eval=np.abs,
        gate=gate("dx = G·sign(x)", lambda g, out, x: g * B.unary("sign", x)),
        sympy=elementwise(lambda x: sp.Abs(x)),
        numpy=call("np.abs"),
        llvm=Elementwise(LL.scalar_abs),
        zero_safe=True, elementwise=True, ufunc="np.absolute", plannable=True, through=True,
        nonneg=True)

declare("sign",
        shape=lambda ins: _numeric(ins[0], "sign"),
        eval=np.sign,
        gate=gate("dx = 0 (sign is flat)", lambda g, out, x: _zeros_like(x)),
        sympy=elementwise(lambda x: sp.sign(x)),
        numpy=call("np.sign"),
        llvm=Elementwise(LL.scalar_sign),
        elementwise=True, ufunc="np.sign", plannable=True, bounded=True)


# ---- binary arithmetic --------------------------------------------------------------------
declare("add",
        shape=arith_binary("add"),
        eval=np.add,
        gate=gate("dA = G", lambda g, out, a, b: g,
                  "dB = G", lambda g, out, a, b: g),
        sympy=elementwise(lambda a, b: a + b),
        numpy=infix("+", ADD),
        llvm=LL.Sum(LL.arith("fadd", "add").scalar),
        elementwise=True, ufunc="np.add", plannable=True)

declare("sub",
        shape=arith_binary("sub"),
        eval=np.subtract,
        gate=gate("dA = G", lambda g, out, a, b: g,
                  "dB = −G", lambda g, out, a, b: -g),
        sympy=elementwise(lambda a, b: a - b),
        numpy=infix("-", ADD),
        llvm=LL.arith("fsub", "sub"),
        elementwise=True, ufunc="np.subtract", plannable=True, ordered=True)

declare("mul",
        shape=arith_binary("mul"),
        eval=np.multiply,
        gate=gate("dA = G·B", lambda g, out, a, b: g * b,
                  "dB = G·A", lambda g, out, a, b: g * a),
        sympy=elementwise(lambda a, b: a * b),
        numpy=infix("*", MUL),
        llvm=LL.arith("fmul", "mul"),
        zero_safe=True, elementwise=True, ufunc="np.multiply", plannable=True)

declare("div",
        shape=float_binary("div"),
        eval=np.divide,
        gate=gate("dA = G/B", lambda g, out, a, b: g / b,
                  "dB = −G·(A/B)/B", lambda g, out, a, b: -(g * out) / b),
        sympy=elementwise(lambda a, b: a / b),
        numpy=infix("/", MUL),
        llvm=LL.arith("fdiv", "sdiv"),
        zero_safe=True, elementwise=True, ufunc="np.divide", plannable=True, ordered=True)

declare("pow",
        shape=float_binary("pow"),
        eval=np.power,
        gate=gate("dA = G·B·A^(B−1)", lambda g, out, a, b: g * (b * a ** (b - 1)),
                  "dB = G·A^B·log A", lambda g, out, a, b: g * (out * B.log(a))),
        sympy=elementwise(lambda a, b: a ** b),
        numpy=infix("**", POW),
        llvm=LL.binary_intrinsic("llvm.pow"),
        zero_safe=True, elementwise=True, ufunc="np.power", plannable=True, ordered=True)

declare("maximum",
        shape=float_binary("maximum"),
        eval=np.maximum,
        gate=gate(
"dA = G routed to the winner (½ at a tie)", lambda g, out, a, b: _route(g, a, b),
"dB = G routed to the winner (½ at a tie)", lambda g, out, a, b: _route(g, b, a)),
        sympy=elementwise(lambda a, b: sp.Max(a, b)),
        numpy=call("np.maximum"),
        llvm=Elementwise(lambda em, a, node: M.maximum(em.b, a[0], a[1])),
        elementwise=True, ufunc="np.maximum", plannable=True, ordered=True)

declare("minimum",
        shape=float_binary("minimum"),
        eval=np.minimum,
        gate=gate(
"dA = G routed to the winner (½ at a tie)", lambda g, out, a, b: _route(g, b, a),
"dB = G routed to the winner (½ at a tie)", lambda g, out, a, b: _route(g, a, b)),
        sympy=elementwise(lambda a, b: sp.Min(a, b)),
        numpy=call("np.minimum"),
        llvm=Elementwise(lambda em, a, node: M.minimum(em.b, a[0], a[1])),
        elementwise=True, ufunc="np.minimum", plannable=True, ordered=True)


# ---- comparisons, where, cast, constants --------------------------------------------------
def _sym_relation(name: str):
    """The SymPy relation `sp.<name>` as a function of two scalars (SymPy loads at first use)."""
    return lambda a, b: getattr(sp, name)(a, b)


for _op, _np, _sp, _sym in (("greater", np.greater, "StrictGreaterThan", ">"),
                            ("greater_equal", np.greater_equal, "GreaterThan", ">="),
                            ("less", np.less, "StrictLessThan", "<"),
                            ("less_equal", np.less_equal, "LessThan", "<="),
                            ("equal", np.equal, "Eq", "=="),
                            ("not_equal", np.not_equal, "Ne", "!=")):
    declare(_op,
            shape=compare(_op),
            eval=_np,
            gate=gate(None, None),
            sympy=elementwise(_sym_relation(_sp)),
            numpy=infix(_sym, CMP),
            llvm=LL.compare(_sym),
            elementwise=True, selects=True, ufunc=f"np.{_np.__name__}", plannable=True,
            ordered=_op not in ("equal", "not_equal"))

declare("where",
        shape=lambda ins: _where_type(ins),
        eval=np.where,
        gate=gate(None,
                  "dA = G where cond", lambda g, out, c, a, b: B.where(c, g, 0),
                  "dB = G where not cond", lambda g, out, c, a, b: B.where(c, 0, g)),
        sympy=elementwise(sym_where),
        numpy=where_form(),
        llvm=Elementwise(LL.scalar_where),
        into=into_where(),
        elementwise=True, selects=True, plannable=True, ordered=True)

declare("cast",
        shape=lambda ins, dtype: _cast_type(ins[0], dtype),
        attrs={"dtype": DTYPE},
        eval=lambda x, dtype: x.astype(NUMPY_DTYPE[dtype]),
        gate=gate("dx = G in x's dtype", lambda g, out, x, dtype: B.cast(g, x.dtype)),
        sympy=lambda x, dtype: elementwise(_sym_cast)(x, dtype=dtype),
        numpy=Expr(lambda args, attrs, node:   # a scalar may be a Python number
                   f"np.{NUMPY_DTYPE[attrs['dtype']]}({args[0][0]})" if not node.out.shape
                   else f"{wrap(args[0], ATOM, False)}.astype(np.{NUMPY_DTYPE[attrs['dtype']]})"),
        llvm=Elementwise(LL.scalar_cast),
        into=into_cast(),
        elementwise=True, plannable=True)

declare("const",
        shape=lambda ins, value, dtype, shape: TensorType(dtype, shape),
        attrs={"value": NUMBER, "dtype": DTYPE, "shape": SHAPE},
        eval=lambda value, dtype, shape: np.full(shape, value, dtype=NUMPY_DTYPE[dtype]),
        gate=gate(),
        sympy=lambda value, dtype, shape: _sym_const(value, shape),
        numpy=Expr(lambda args, attrs, node: _const_text(attrs)[0],
                   prec=ATOM, cheap=True, prec_of=lambda attrs: _const_text(attrs)[1]),
        llvm=LL.Const(),
        literal=True)

# dropout(x, keep; p) = x/(1−p) where keep else 0 (inverted dropout; `keep` is a bool mask input
# the runtime draws with P(keep) = 1−p each step; see compiler/train.py).  Linear in x.
declare("dropout",
        shape=lambda ins, p: _dropout_type(ins, p),
        attrs={"p": REAL},
        eval=lambda x, keep, p: np.where(keep, x / (1 - p), 0),
        gate=gate("dx = dropout(G, keep): G/(1−p) where kept, else 0",
                  lambda g, out, x, keep, p: g.b.emit("dropout", [g, keep], p=p), None),
        sympy=elementwise(lambda x, keep, p: sym_where(
            bool(keep) if isinstance(keep, (bool, np.bool_)) else keep,
            x / (1 - sp.nsimplify(p)), 0)),
        numpy=Expr(lambda args, attrs, node: f"np.where({args[1][0]}, "
                   f"{wrap(args[0], MUL, False)} / {1 - attrs['p']!r}, 0)"),
        llvm=Elementwise(LL.scalar_dropout),
        selects=True)


# ---- helpers used by the rules above ------------------------------------------------------
def _dropout_type(ins, p):
    x, keep = ins
    if x.dtype not in ("f32", "f64") or keep.dtype != "bool" or keep.shape != x.shape:
        raise ShapeError(f"dropout: needs a float value and a bool mask of its shape, got {x} "
                         f"and {keep}")
    if not 0 <= p < 1:
        raise ShapeError(f"dropout: the drop probability p={p!r} must be in [0, 1)")
    return x



def _numeric(t, op):
    if t.dtype == "bool":
        raise ShapeError(f"{op}: needs a number, got {t}")
    return t


def _swish_slope(x, out):
    s = B.sigmoid(x)
    return s + out * (1 - s)


def _route(g, winner, loser):
    """G where winner > loser, G/2 at a tie, 0 where it lost."""
    return B.where(winner > loser, g, B.where(B.equal(winner, loser), 0.5 * g, 0))


def _where_type(ins):
    c, a, b = ins
    if c.dtype != "bool":
        raise ShapeError(f"where: the condition must be bool, got {c}")
    if a.dtype != b.dtype:
        raise ShapeError(f"where: branches have dtypes {a.dtype} and {b.dtype}")
    return TensorType(a.dtype, broadcast_shapes("where", c.shape, a.shape, b.shape))


def _cast_type(t, dtype):
    if dtype not in DTYPES:
        raise ShapeError(f"cast: unknown dtype {dtype!r}")
    return TensorType(dtype, t.shape)


def _sym_cast(x, dtype):
    """One element cast: a condition becomes 1/0, a number becomes a condition (x ≠ 0) for bool
    and is truncated toward zero for i64; float casts keep the value."""
    if isinstance(x, bool) or not isinstance(x, (int, float, sp.Expr)):   # (a Symbol is an Expr)
        return x if dtype == "bool" else sym_bool_to_number(x)
    if dtype == "bool":
        return sp.Ne(x, 0)
    return sp.sign(x) * sp.floor(sp.Abs(x)) if dtype == "i64" else x


def _sym_const(value, shape):
    if isinstance(value, bool):
        v = sp.true if value else sp.false
    elif value in (float("inf"), float("-inf")):
        v = sp.oo if value > 0 else -sp.oo
    elif value != value:
        v = sp.nan
    elif float(value) == int(value):
        v = sp.Integer(int(value))
    else:
        v = sp.Rational(value) if abs(value) >= 1e-300 else sp.Float(value)
    out = np.empty(shape, dtype=object)
    out[...] = v
    return out


def _const_text(attrs) -> tuple:
    """(source, precedence) of a constant: a literal for a scalar, np.zeros/np.full otherwise."""
    text, prec = literal(attrs["value"])
    if attrs["shape"] == ():
        return text, prec
    dt = NUMPY_DTYPE[attrs["dtype"]]
    shape = attr_text(tuple(attrs["shape"]))     # (N, 10): a dimension name is a local
    if attrs["value"] == 0:
        return f"np.zeros({shape}, dtype=np.{dt})", ATOM
    return f"np.full({shape}, {text}, dtype=np.{dt})", ATOM
