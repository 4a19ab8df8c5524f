"""Elementwise ops: unary math and activations, binary arithmetic, comparisons, where, cast,
constants.  Binary ops broadcast as NumPy does; their gate rules return gradients in the
output's (broadcast) shape and the autodiff pass sums them back to each input's shape.

Tie rules (documented in docs and tested): relu/leaky_relu/elu route the gradient of x = 0 to
the negative side (relu'(0) = 0); maximum/minimum split a tie evenly (½ to each operand).
"""
from __future__ import annotations

import numpy as np
import sympy as sp

from .. import builder as B
from ..codegen.forms import (ADD, ATOM, CMP, MUL, POW, Expr, call, helper, infix, literal, prefix,
                             template, where_form, wrap)
from ..ir import DTYPES, NUMPY_DTYPE, ShapeError, TensorType
from . import EVAL_RULES, GATE_RULES, NUMPY_EMITTERS, SHAPE_RULES, SYMPY_RULES, gate
from .attrs import ATTRS, DTYPE, INTS, NUMBER, REAL
from .common import (arith_binary, compare, elementwise, float_binary, float_unary,
                     sym_bool_to_number, sym_where)


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
# Gradients are linear in the upstream gradient G, so a gate rule of the form G·f'(x) must give 0
# where G = 0; in floating point it gives NaN where f'(x) is inf or NaN (0·inf, 0/0).  Such
# zeros come from a gate that selects: the inactive branch of where(x > 0, sqrt(x), 0), relu,
# maximum, max, pick, getitem, dropout.  A gate wrapped by `zero_safe` answers
# where(G == 0, 0, G·f'(x)) when G descends from a selecting gate (the test is on the graph,
# so models without one get exactly the plain rule and the same code).
SELECTING_OPS = frozenset({"where", "putitem", "onehot", "dropout", "greater", "greater_equal",
                           "less", "less_equal", "equal", "not_equal"})


def may_carry_selected_zeros(g) -> bool:
    """Whether the upstream gradient `g` is computed (in the gradient part of the graph: nodes
    that carry a gate rule) from a selecting op.  Memoized per builder, incrementally."""
    b = g.b
    memo = b.__dict__.setdefault("_selected_zeros", [0, set()])
    nodes, marked = b.graph.nodes, memo[1]
    for n in nodes[memo[0]:]:
        if n.rule is not None and (n.op in SELECTING_OPS
                                   or any(id(v) in marked for v in n.inputs)):
            marked.add(id(n.out))
    memo[0] = len(nodes)
    return id(g.value) in marked


def zero_safe(*pairs):
    """`gate(...)` whose rules give exactly 0 where the upstream gradient is 0 (see above)."""
    import functools

    def wrap(fn):
        @functools.wraps(fn)      # autodiff reads the rule's signature for its attrs
        def rule(g, out, *ins, **attrs):
            d = fn(g, out, *ins, **attrs)
            return B.where(B.equal(g, 0), 0, d) if may_carry_selected_zeros(g) else d
        return rule
    return gate(*(wrap(p) if callable(p) else p for p in pairs))


# ---- unary --------------------------------------------------------------------------------
SHAPE_RULES["neg"] = lambda ins: _numeric(ins[0], "neg")
EVAL_RULES["neg"] = np.negative
GATE_RULES["neg"] = gate("dx = −G", lambda g, out, x: -g)
SYMPY_RULES["neg"] = elementwise(lambda x: -x)
NUMPY_EMITTERS["neg"] = prefix("-")

SHAPE_RULES["exp"] = float_unary("exp")
EVAL_RULES["exp"] = np.exp
GATE_RULES["exp"] = zero_safe("dx = G·exp(x)", lambda g, out, x: g * out)
SYMPY_RULES["exp"] = elementwise(sp.exp)
NUMPY_EMITTERS["exp"] = call("np.exp")

SHAPE_RULES["log"] = float_unary("log")
EVAL_RULES["log"] = np.log
GATE_RULES["log"] = zero_safe("dx = G/x", lambda g, out, x: g / x)
SYMPY_RULES["log"] = elementwise(sp.log)
NUMPY_EMITTERS["log"] = call("np.log")

SHAPE_RULES["log1p"] = float_unary("log1p")
EVAL_RULES["log1p"] = np.log1p
GATE_RULES["log1p"] = zero_safe("dx = G/(1+x)", lambda g, out, x: g / (1 + x))
SYMPY_RULES["log1p"] = elementwise(lambda x: sp.log(1 + x))
NUMPY_EMITTERS["log1p"] = call("np.log1p")

SHAPE_RULES["sqrt"] = float_unary("sqrt")
EVAL_RULES["sqrt"] = np.sqrt
GATE_RULES["sqrt"] = zero_safe("dx = G/(2·√x)", lambda g, out, x: g / (2 * out))
SYMPY_RULES["sqrt"] = elementwise(sp.sqrt)
NUMPY_EMITTERS["sqrt"] = call("np.sqrt")

SHAPE_RULES["tanh"] = float_unary("tanh")
EVAL_RULES["tanh"] = np.tanh
GATE_RULES["tanh"] = zero_safe("dx = G·(1−tanh²x)", lambda g, out, x: g * (1 - out * out))
SYMPY_RULES["tanh"] = elementwise(sp.tanh)
NUMPY_EMITTERS["tanh"] = call("np.tanh")

SHAPE_RULES["sin"] = float_unary("sin")
EVAL_RULES["sin"] = np.sin
GATE_RULES["sin"] = zero_safe("dx = G·cos(x)", lambda g, out, x: g * B.unary("cos", x))
SYMPY_RULES["sin"] = elementwise(sp.sin)
NUMPY_EMITTERS["sin"] = call("np.sin")

SHAPE_RULES["cos"] = float_unary("cos")
EVAL_RULES["cos"] = np.cos
GATE_RULES["cos"] = zero_safe("dx = −G·sin(x)", lambda g, out, x: -(g * B.unary("sin", x)))
SYMPY_RULES["cos"] = elementwise(sp.cos)
NUMPY_EMITTERS["cos"] = call("np.cos")

SHAPE_RULES["sigmoid"] = float_unary("sigmoid")
EVAL_RULES["sigmoid"] = sigmoid
GATE_RULES["sigmoid"] = zero_safe("dx = G·σ(x)(1−σ(x))", lambda g, out, x: g * (out * (1 - out)))
SYMPY_RULES["sigmoid"] = elementwise(lambda x: 1 / (1 + sp.exp(-x)))
NUMPY_EMITTERS["sigmoid"] = helper(sigmoid)

SHAPE_RULES["softplus"] = float_unary("softplus")
EVAL_RULES["softplus"] = lambda x: np.logaddexp(0, x)
GATE_RULES["softplus"] = zero_safe("dx = G·σ(x)", lambda g, out, x: g * B.sigmoid(x))
SYMPY_RULES["softplus"] = elementwise(lambda x: sp.log(1 + sp.exp(x)))
NUMPY_EMITTERS["softplus"] = template("np.logaddexp(0, {0})")

SHAPE_RULES["swish"] = float_unary("swish")
EVAL_RULES["swish"] = swish
GATE_RULES["swish"] = zero_safe("dx = G·(σ(x) + x·σ(x)(1−σ(x)))",
                           lambda g, out, x: g * _swish_slope(x, out))
SYMPY_RULES["swish"] = elementwise(lambda x: x / (1 + sp.exp(-x)))
NUMPY_EMITTERS["swish"] = helper(swish, also=(sigmoid,))

SHAPE_RULES["relu"] = float_unary("relu")
EVAL_RULES["relu"] = lambda x: np.maximum(x, 0)
GATE_RULES["relu"] = gate("dx = G·[x > 0]", lambda g, out, x: B.where(out > 0, g, 0))
SYMPY_RULES["relu"] = elementwise(lambda x: sp.Max(x, 0))
NUMPY_EMITTERS["relu"] = Expr(lambda args, attrs, node: f"np.maximum({args[0][0]}, 0.0)")

SHAPE_RULES["leaky_relu"] = float_unary("leaky_relu")
ATTRS["leaky_relu"] = {"alpha": REAL}
EVAL_RULES["leaky_relu"] = lambda x, alpha: np.where(x > 0, x, alpha * x)
GATE_RULES["leaky_relu"] = gate("dx = G·(1 if x > 0 else α)",
                                lambda g, out, x, alpha: B.where(x > 0, g, alpha * g))
SYMPY_RULES["leaky_relu"] = elementwise(lambda x, alpha: sp.Piecewise((x, x > 0), (alpha * x, True)))
NUMPY_EMITTERS["leaky_relu"] = template("np.where({0} > 0, {0}, {alpha!r} * {0})")

SHAPE_RULES["elu"] = float_unary("elu")
ATTRS["elu"] = {"alpha": REAL}
EVAL_RULES["elu"] = elu
GATE_RULES["elu"] = zero_safe("dx = G·(1 if x > 0 else elu(x) + α)",
                         lambda g, out, x, alpha: B.where(x > 0, g, g * (out + alpha)))
SYMPY_RULES["elu"] = elementwise(
    lambda x, alpha: sp.Piecewise((x, x > 0), (alpha * (sp.exp(x) - 1), True)))
NUMPY_EMITTERS["elu"] = helper(elu, "alpha")

SHAPE_RULES["abs"] = lambda ins: _numeric(ins[0], "abs")
EVAL_RULES["abs"] = np.abs
GATE_RULES["abs"] = zero_safe("dx = G·sign(x)", lambda g, out, x: g * B.unary("sign", x))
SYMPY_RULES["abs"] = elementwise(sp.Abs)
NUMPY_EMITTERS["abs"] = call("np.abs")

SHAPE_RULES["sign"] = lambda ins: _numeric(ins[0], "sign")
EVAL_RULES["sign"] = np.sign
GATE_RULES["sign"] = gate("dx = 0 (sign is flat)", lambda g, out, x: _zeros_like(x))
SYMPY_RULES["sign"] = elementwise(sp.sign)
NUMPY_EMITTERS["sign"] = call("np.sign")


# ---- binary arithmetic --------------------------------------------------------------------
SHAPE_RULES["add"] = arith_binary("add")
EVAL_RULES["add"] = np.add
GATE_RULES["add"] = gate("dA = G", lambda g, out, a, b: g,
                         "dB = G", lambda g, out, a, b: g)
SYMPY_RULES["add"] = elementwise(lambda a, b: a + b)
NUMPY_EMITTERS["add"] = infix("+", ADD)

SHAPE_RULES["sub"] = arith_binary("sub")
EVAL_RULES["sub"] = np.subtract
GATE_RULES["sub"] = gate("dA = G", lambda g, out, a, b: g,
                         "dB = −G", lambda g, out, a, b: -g)
SYMPY_RULES["sub"] = elementwise(lambda a, b: a - b)
NUMPY_EMITTERS["sub"] = infix("-", ADD)

SHAPE_RULES["mul"] = arith_binary("mul")
EVAL_RULES["mul"] = np.multiply
GATE_RULES["mul"] = zero_safe("dA = G·B", lambda g, out, a, b: g * b,
                         "dB = G·A", lambda g, out, a, b: g * a)
SYMPY_RULES["mul"] = elementwise(lambda a, b: a * b)
NUMPY_EMITTERS["mul"] = infix("*", MUL)

SHAPE_RULES["div"] = float_binary("div")
EVAL_RULES["div"] = np.divide
GATE_RULES["div"] = zero_safe("dA = G/B", lambda g, out, a, b: g / b,
                         "dB = −G·(A/B)/B", lambda g, out, a, b: -(g * out) / b)
SYMPY_RULES["div"] = elementwise(lambda a, b: a / b)
NUMPY_EMITTERS["div"] = infix("/", MUL)

SHAPE_RULES["pow"] = float_binary("pow")
EVAL_RULES["pow"] = np.power
GATE_RULES["pow"] = zero_safe("dA = G·B·A^(B−1)", lambda g, out, a, b: g * (b * a ** (b - 1)),
                         "dB = G·A^B·log A", lambda g, out, a, b: g * (out * B.log(a)))
SYMPY_RULES["pow"] = elementwise(lambda a, b: a ** b)
NUMPY_EMITTERS["pow"] = infix("**", POW)

SHAPE_RULES["maximum"] = float_binary("maximum")
EVAL_RULES["maximum"] = np.maximum
GATE_RULES["maximum"] = gate(
    "dA = G routed to the winner (½ at a tie)", lambda g, out, a, b: _route(g, a, b),
    "dB = G routed to the winner (½ at a tie)", lambda g, out, a, b: _route(g, b, a))
SYMPY_RULES["maximum"] = elementwise(sp.Max)
NUMPY_EMITTERS["maximum"] = call("np.maximum")

SHAPE_RULES["minimum"] = float_binary("minimum")
EVAL_RULES["minimum"] = np.minimum
GATE_RULES["minimum"] = gate(
    "dA = G routed to the winner (½ at a tie)", lambda g, out, a, b: _route(g, b, a),
    "dB = G routed to the winner (½ at a tie)", lambda g, out, a, b: _route(g, a, b))
SYMPY_RULES["minimum"] = elementwise(sp.Min)
NUMPY_EMITTERS["minimum"] = call("np.minimum")


# ---- comparisons, where, cast, constants --------------------------------------------------
for _op, _np, _sp, _sym in (("greater", np.greater, sp.StrictGreaterThan, ">"),
                            ("greater_equal", np.greater_equal, sp.GreaterThan, ">="),
                            ("less", np.less, sp.StrictLessThan, "<"),
                            ("less_equal", np.less_equal, sp.LessThan, "<="),
                            ("equal", np.equal, sp.Eq, "=="),
                            ("not_equal", np.not_equal, sp.Ne, "!=")):
    SHAPE_RULES[_op] = compare(_op)
    EVAL_RULES[_op] = _np
    GATE_RULES[_op] = gate(None, None)
    SYMPY_RULES[_op] = elementwise(_sp)
    NUMPY_EMITTERS[_op] = infix(_sym, CMP)

SHAPE_RULES["where"] = lambda ins: _where_type(ins)
EVAL_RULES["where"] = np.where
GATE_RULES["where"] = gate(None,
                           "dA = G where cond", lambda g, out, c, a, b: B.where(c, g, 0),
                           "dB = G where not cond", lambda g, out, c, a, b: B.where(c, 0, g))
SYMPY_RULES["where"] = elementwise(sym_where)
NUMPY_EMITTERS["where"] = where_form()

SHAPE_RULES["cast"] = lambda ins, dtype: _cast_type(ins[0], dtype)
ATTRS["cast"] = {"dtype": DTYPE}
EVAL_RULES["cast"] = lambda x, dtype: x.astype(NUMPY_DTYPE[dtype])
GATE_RULES["cast"] = gate("dx = G in x's dtype", lambda g, out, x, dtype: B.cast(g, x.dtype))
SYMPY_RULES["cast"] = lambda x, dtype: elementwise(_sym_cast)(x, dtype=dtype)
NUMPY_EMITTERS["cast"] = Expr(lambda args, attrs, node:   # a scalar may be a Python number
                              f"np.{NUMPY_DTYPE[attrs['dtype']]}({args[0][0]})" if not node.out.shape
                              else f"{wrap(args[0], ATOM, False)}.astype(np.{NUMPY_DTYPE[attrs['dtype']]})")

SHAPE_RULES["const"] = lambda ins, value, dtype, shape: TensorType(dtype, shape)
ATTRS["const"] = {"value": NUMBER, "dtype": DTYPE, "shape": INTS}
EVAL_RULES["const"] = lambda value, dtype, shape: np.full(shape, value, dtype=NUMPY_DTYPE[dtype])
GATE_RULES["const"] = gate()
SYMPY_RULES["const"] = lambda value, dtype, shape: _sym_const(value, shape)
NUMPY_EMITTERS["const"] = Expr(lambda args, attrs, node: _const_text(attrs)[0],
                               prec=ATOM, cheap=True, prec_of=lambda attrs: _const_text(attrs)[1])

# dropout(x, keep; p) = x/(1−p) where keep else 0 (inverted dropout; `keep` is a bool mask input
# the runtime draws with P(keep) = 1−p each step; see compiler/train.py).  Linear in x.
SHAPE_RULES["dropout"] = lambda ins, p: _dropout_type(ins, p)
ATTRS["dropout"] = {"p": REAL}
EVAL_RULES["dropout"] = lambda x, keep, p: np.where(keep, x / (1 - p), 0)
GATE_RULES["dropout"] = gate("dx = dropout(G, keep): G/(1−p) where kept, else 0",
                             lambda g, out, x, keep, p: g.b.emit("dropout", [g, keep], p=p), None)
SYMPY_RULES["dropout"] = elementwise(lambda x, keep, p: sym_where(
    bool(keep) if isinstance(keep, (bool, np.bool_)) else keep, x / (1 - sp.nsimplify(p)), 0))
NUMPY_EMITTERS["dropout"] = Expr(lambda args, attrs, node: f"np.where({args[1][0]}, "
                                 f"{wrap(args[0], MUL, False)} / {1 - attrs['p']!r}, 0)")


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
    from .common import broadcast_shapes
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
    if attrs["value"] == 0:
        return f"np.zeros({attrs['shape']!r}, dtype=np.{dt})", ATOM
    return f"np.full({attrs['shape']!r}, {text}, dtype=np.{dt})", ATOM
