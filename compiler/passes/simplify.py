"""Algebraic simplification: a table of local rewrite rules, one function per identity.

Each rule looks at one node (its new-graph inputs already simplified) and answers a value of the
new graph that equals it, or None.  The rule's docstring states the identity and where it holds;
tests/test_simplify_rules.py proves each identity with SymPy and checks each rule on a golden
graph.  Rules keep the node's dtype and shape: where an identity drops an operand that was being
broadcast (x·1 with a bigger 1), the survivor is broadcast (`broadcast_to`, a view).

IEEE caveats, decided once here:
  * x + 0 → x and 0 − x → −x ignore the sign of zero (−0.0 + 0.0 is +0.0); values compare equal.
  * x·0 → 0 is NOT an identity in floating point: inf·0 and nan·0 are nan.  The rule fires only
    where x cannot be inf or nan: integer x, or x bounded by construction (see `bounded`).
  * exp(log x) → x holds for x ≥ 0 (and nan); for x < 0 the left side is nan.  The rule fires
    only where x is non-negative by construction (see `nonneg`).
Rules never reassociate sums or products (that would change rounding).
"""
from __future__ import annotations

import math

from ..ir import Graph
from ..ops import OPS
from ..shapes import larger_than
from .fold import BIG, uniform_of
from .rewrite import Reader, Rewriter, Rewrites

RULES: dict = {}          # op -> [rule, ...] in the order they are tried


def rule(*ops):
    def register(fn):
        fn.ops = ops
        for op in ops:
            RULES.setdefault(op, []).append(fn)
        return fn
    return register


def all_rules() -> list:
    seen = []
    for fns in RULES.values():
        seen += [f for f in fns if f not in seen]
    return seen


# ---- helpers ------------------------------------------------------------------------------
def fit(rw: Rewriter, x, n):
    """`x` as a value of node `n`'s type: itself, or broadcast to n's shape; None if it cannot."""
    t = n.out.type
    if x.type == t:
        return x
    if x.dtype != t.dtype or len(x.shape) > len(t.shape):
        return None
    lead = len(t.shape) - len(x.shape)
    if any(d not in (1, e) for d, e in zip(x.shape, t.shape[lead:])):
        return None
    return rw.emit("broadcast_to", [x], shape=t.shape)


def filled(rw: Rewriter, value, n):
    """A constant of node n's type (a broadcast view of a scalar when large)."""
    t = n.out.type
    if larger_than(t, BIG):
        return rw.emit("broadcast_to", [rw.const(value, t.dtype)], shape=t.shape)
    return rw.const(value, t.dtype, t.shape)


def is_value(rw, v, target) -> bool:
    c = uniform_of(rw, v)
    return c is not None and not isinstance(c, bool) and c == target


def op_of(rw, v):
    n = rw.node_of(v)
    return n.op if n is not None else None


def bounded(rw, v, depth: int = 8) -> bool:
    """True when `v` can never be inf or nan: an integer or bool value, a finite constant, a
    value in [−1, 1] by construction (sigmoid, tanh, softmax, onehot, sign, sin, cos, a cast
    of a bool), or one moved by neg/abs/relu/views/where/products of such values."""
    if v.dtype in ("i64", "bool"):
        return True
    n = rw.node_of(v)
    if n is None or depth == 0:
        return False
    if n.op == "const":
        return math.isfinite(n.attrs["value"])
    if OPS[n.op].bounded:
        return True
    if n.op == "cast":
        return n.inputs[0].dtype == "bool"
    if OPS[n.op].through:
        return bounded(rw, n.inputs[0], depth - 1)
    if n.op == "where":
        return bounded(rw, n.inputs[1], depth - 1) and bounded(rw, n.inputs[2], depth - 1)
    if n.op == "mul":     # |a|,|b| ≤ 1 stays ≤ 1; a finite constant times such a value is finite
        a, b = n.inputs
        return all(_in_unit(rw, x, depth - 1) for x in (a, b)) or (
            any(_in_unit(rw, x, depth - 1) for x in (a, b)) and bounded(rw, a, depth - 1)
            and bounded(rw, b, depth - 1))
    return False


def _in_unit(rw, v, depth) -> bool:
    n = rw.node_of(v)
    if n is None or depth == 0:
        return False
    if OPS[n.op].bounded or (n.op == "cast" and n.inputs[0].dtype == "bool"):
        return True
    if n.op == "const":
        return abs(n.attrs["value"]) <= 1
    if OPS[n.op].view or n.op in ("neg", "abs"):
        return _in_unit(rw, n.inputs[0], depth - 1)
    return False


def nonneg(rw, v, depth: int = 8) -> bool:
    """True when every element of `v` is ≥ 0 (or nan) by construction."""
    n = rw.node_of(v)
    if n is None or depth == 0:
        return False
    if n.op == "const":
        return not n.attrs["value"] < 0
    if OPS[n.op].nonneg or (n.op == "cast" and n.inputs[0].dtype == "bool"):
        return True
    if OPS[n.op].view:
        return nonneg(rw, n.inputs[0], depth - 1)
    if n.op in ("mul", "add", "div", "maximum", "minimum"):
        return all(nonneg(rw, x, depth - 1) for x in n.inputs)
    return False


# ---- the rules: arithmetic ----------------------------------------------------------------
@rule("mul")
def mul_one(rw, n, a, b):
    """x·1 = 1·x = x (exact in IEEE arithmetic, inf and nan included).  This is also how the
    seed vanishes: `dq = 1.0 * z` becomes `dq = z`."""
    if is_value(rw, b, 1):
        return fit(rw, a, n)
    if is_value(rw, a, 1):
        return fit(rw, b, n)
    return None


@rule("mul")
def mul_zero(rw, n, a, b):
    """x·0 = 0·x = 0, only where x is bounded (never inf or nan: inf·0 is nan)."""
    if is_value(rw, b, 0) and bounded(rw, a):
        return filled(rw, 0, n)
    if is_value(rw, a, 0) and bounded(rw, b):
        return filled(rw, 0, n)
    return None


@rule("mul")
def mul_minus_one(rw, n, a, b):
    """x·(−1) = (−1)·x = −x (exact)."""
    for x, c in ((a, b), (b, a)):
        if is_value(rw, c, -1):
            x = fit(rw, x, n)
            return rw.emit("neg", [x]) if x is not None else None
    return None


@rule("mul")
def mul_neg_neg(rw, n, a, b):
    """(−x)·(−y) = x·y (exact: negation only flips the sign bit)."""
    if op_of(rw, a) == "neg" and op_of(rw, b) == "neg":
        return rw.emit("mul", [rw.node_of(a).inputs[0], rw.node_of(b).inputs[0]])
    return None


@rule("add", "sub", "mul", "div", "pow", "maximum", "minimum")
def scalar_operand(rw, n, a, b):
    """c·x = [c]·x for a constant operand filled with c whose shape the other operand already
    covers (likewise for +, −, /, pow, max, min): the full array of c becomes the scalar c,
    which broadcasting spreads at no cost.  The value is unchanged element by element."""
    for k, (c, x) in enumerate(((a, b), (b, a))):
        if c.shape != () and x.type == n.out.type and op_of(rw, c) in ("const", "broadcast_to"):
            value = uniform_of(rw, c)
            if value is not None:
                s = rw.const(value, c.dtype)
                return rw.emit(n.op, [s, x] if k == 0 else [x, s])
    return None


@rule("add")
def add_self(rw, n, a, b):
    """x + x = 2·x (exact: doubling only changes the exponent)."""
    if a is b:
        return rw.emit("mul", [rw.const(2, a.dtype), a])
    return None


@rule("div")
def div_one(rw, n, a, b):
    """x/1 = x (exact)."""
    return fit(rw, a, n) if is_value(rw, b, 1) else None


@rule("add")
def add_zero(rw, n, a, b):
    """x + 0 = 0 + x = x (up to the sign of zero: −0.0 + 0.0 is +0.0)."""
    if is_value(rw, b, 0):
        return fit(rw, a, n)
    if is_value(rw, a, 0):
        return fit(rw, b, n)
    return None


def _temp_neg(rw, v) -> bool:
    """v = −y with a generated name: absorbing it loses no name the model gave (a model's
    `data_loss = -mean(...)` stays a line of the generated code)."""
    return op_of(rw, v) == "neg" and v.temp


@rule("add")
def add_neg(rw, n, a, b):
    """x + (−y) = x − y and (−y) + x = x − y (exact)."""
    if _temp_neg(rw, b):
        return rw.emit("sub", [a, rw.node_of(b).inputs[0]])
    if _temp_neg(rw, a):
        return rw.emit("sub", [b, rw.node_of(a).inputs[0]])
    return None


@rule("sub")
def sub_zero(rw, n, a, b):
    """x − 0 = x (exact)."""
    return fit(rw, a, n) if is_value(rw, b, 0) else None


@rule("sub")
def zero_sub(rw, n, a, b):
    """0 − x = −x (up to the sign of zero)."""
    if is_value(rw, a, 0):
        x = fit(rw, b, n)
        return rw.emit("neg", [x]) if x is not None else None
    return None


@rule("sub")
def sub_neg(rw, n, a, b):
    """x − (−y) = x + y (exact)."""
    if _temp_neg(rw, b):
        return rw.emit("add", [a, rw.node_of(b).inputs[0]])
    return None


@rule("neg")
def neg_neg(rw, n, x):
    """−(−x) = x (exact)."""
    return rw.node_of(x).inputs[0] if op_of(rw, x) == "neg" else None


@rule("pow")
def pow_one(rw, n, a, b):
    """x¹ = x."""
    return fit(rw, a, n) if is_value(rw, b, 1) else None


@rule("pow")
def pow_two(rw, n, a, b):
    """x² = x·x (one multiply instead of a call of pow)."""
    if is_value(rw, b, 2) and a.type == n.out.type:
        return rw.emit("mul", [a, a])
    return None


@rule("exp")
def exp_log(rw, n, x):
    """exp(log x) = x for x ≥ 0 (for x < 0 the left side is nan): fires only where x is
    non-negative by construction (exp, softmax, relu, ...)."""
    if op_of(rw, x) == "log" and nonneg(rw, rw.node_of(x).inputs[0]):
        return rw.node_of(x).inputs[0]
    return None


@rule("where")
def where_same(rw, n, c, a, b):
    """where(c, x, x) = x."""
    return fit(rw, a, n) if a is b else None


@rule("where")
def where_known(rw, n, c, a, b):
    """where(True, a, b) = a and where(False, a, b) = b."""
    k = uniform_of(rw, c)
    if isinstance(k, bool):
        return fit(rw, a if k else b, n)
    return None


# ---- the rules: shapes --------------------------------------------------------------------
@rule("transpose")
def transpose_transpose(rw, n, x):
    """(Aᵀ)ᵀ = A; in general transpose(transpose(A, p), q) = transpose(A, p∘q), with
    (p∘q)[i] = p[q[i]], and the identity permutation dropped."""
    if op_of(rw, x) != "transpose":
        return None
    inner = rw.node_of(x)
    p, q = inner.attrs["perm"], n.attrs["perm"]
    perm = tuple(p[i] for i in q)
    src = inner.inputs[0]
    return src if perm == tuple(range(len(perm))) else rw.emit("transpose", [src], perm=perm)


@rule("transpose")
def transpose_identity(rw, n, x):
    """transpose(A, (0, 1, ..., k)) = A."""
    return x if tuple(n.attrs["perm"]) == tuple(range(x.type.ndim)) else None


@rule("reshape", "broadcast_to")
def same_shape(rw, n, x):
    """reshape(x, shape(x)) = x and broadcast_to(x, shape(x)) = x."""
    return x if x.type == n.out.type else None


@rule("reshape")
def reshape_reshape(rw, n, x):
    """reshape(reshape(x, s), t) = reshape(x, t) (row-major order is kept by both)."""
    if op_of(rw, x) == "reshape":
        src = rw.node_of(x).inputs[0]
        return src if src.type == n.out.type else rw.emit("reshape", [src], shape=n.attrs["shape"])
    return None


@rule("broadcast_to")
def broadcast_of_lead_reshape(rw, n, x):
    """broadcast_to(reshape(x, (1,…,1) + shape(x)), S) = broadcast_to(x, S): broadcasting
    prepends those axes of size 1 itself."""
    if op_of(rw, x) != "reshape":
        return None
    src = rw.node_of(x).inputs[0]
    k = x.type.ndim - src.type.ndim
    if k >= 0 and x.shape == (1,) * k + src.shape:
        return fit(rw, src, n)
    return None


@rule("sum")
def sum_of_broadcast_scalar(rw, n, x):
    """Σ over k elements of broadcast(c) = k·c (c a scalar; rounding aside, since the sum is
    computed as one product)."""
    xn = rw.node_of(x)
    if xn is None or xn.op != "broadcast_to" or xn.inputs[0].shape != ():
        return None
    c = xn.inputs[0]
    if any(isinstance(x.shape[a], str) for a in n.attrs["axes"]):
        return None           # k is a run-time size: not folded into a constant
    k = 1
    for a in n.attrs["axes"]:
        k *= x.shape[a]
    total = rw.emit("mul", [c, rw.const(k, c.dtype)])
    return fit(rw, total, n)


@rule("mean")
def mean_of_broadcast_scalar(rw, n, x):
    """mean of broadcast(c) = c (c a scalar)."""
    xn = rw.node_of(x)
    if xn is None or xn.op != "broadcast_to" or xn.inputs[0].shape != ():
        return None
    return fit(rw, xn.inputs[0], n)


def simplify(graph: Graph) -> Graph:
    """One walk of the rule table over the graph: each node gets the first rule that fires."""
    rw = Rewriter(graph)
    for n in graph.nodes:
        rw.current = n
        ins = [rw.new(v) for v in n.inputs]
        for fn in RULES.get(n.op, ()):
            r = fn(rw, n, *ins)
            if r is not None:
                rw.replace(n, r)
                break
        else:
            rw.keep(n)
    return rw.finish()


def simplify_idle(graph: Graph) -> bool:
    """Whether `simplify(graph)` would copy the graph unchanged: no rule fires (nor builds a
    node) on the graph as it is."""
    r = Reader(graph)
    for n in graph.nodes:
        r.current = n
        for fn in RULES.get(n.op, ()):
            try:
                if fn(r, n, *n.inputs) is not None:
                    return False
            except Rewrites:
                return False
    return True
