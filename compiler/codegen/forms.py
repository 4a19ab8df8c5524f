"""How the NumPy source emitter writes one op: the forms the `numpy` field of an op record takes.

An `Expr` renders the node as one Python expression (so a single-use temporary can be inlined
into its consumer); `Stmt` renders it as statements assigned to the node's name.  Python
operator precedence decides parentheses, so inlined code reads as a person would write it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from .numpy_helpers import where_or_zero

from ..shapes import count_text

ATOM, POW, UNARY, MUL, ADD, CMP = 100, 16, 15, 14, 13, 10


@dataclass(frozen=True)
class Expr:
    render: object          # (args: list[(text, prec)], attrs: dict, node) -> str
    prec: int = ATOM
    helpers: tuple = field(default=())   # functions whose source the module must define
    cheap: bool = False     # cheap to recompute: inline at every use (scalar constants)
    prec_of: object = None  # (attrs) -> precedence, when it depends on the attrs
    helpers_of: object = None   # (args, node) -> the helpers this node's text calls, when
                                # only some of `helpers` (all it may call) are

    def precedence(self, attrs) -> int:
        return self.prec_of(attrs) if self.prec_of else self.prec

    def helpers_for(self, args, node) -> tuple:
        return self.helpers_of(args, node) if self.helpers_of else self.helpers


@dataclass(frozen=True)
class Stmt:
    render: object          # (name: str, args: list[str], attrs: dict, node) -> list[str]
    helpers: tuple = field(default=())


def _text(arg) -> str:
    return arg[0]


def wrap(arg, need: int, strict: bool) -> str:
    text, prec = arg
    return f"({text})" if (prec < need or (strict and prec == need)) else text


def infix(symbol: str, prec: int) -> Expr:
    """`a <symbol> b`; left-associative, so an equal-precedence right operand is wrapped."""
    right_strict = prec != POW
    return Expr(lambda args, attrs, node: f"{wrap(args[0], prec, prec == POW)} {symbol} "
                                          f"{wrap(args[1], prec, right_strict)}", prec)


def prefix(symbol: str) -> Expr:
    return Expr(lambda args, attrs, node: f"{symbol}{wrap(args[0], UNARY, False)}", UNARY)


def call(fn: str, *attr_names: str, helpers: tuple = (), **fixed) -> Expr:
    """`fn(arg0, arg1, attr=value, ...)` with the named attrs passed as keywords."""
    def render(args, attrs, node):
        parts = [_text(a) for a in args]
        parts += [f"{k}={attr_text(attrs[k])}" for k in attr_names]
        parts += [f"{k}={v}" for k, v in fixed.items()]
        return f"{fn}({', '.join(parts)})"
    return Expr(render, ATOM, helpers)


def attr_text(v) -> str:
    """An attribute value as Python source: `repr`, except that a string inside a tuple is a
    dimension name (only shapes and indices hold strings in tuples, and their kind admits only
    identifiers: ops/attrs.py), written as the name of the local that holds its size:
    `(N, 10)`."""
    if isinstance(v, tuple):
        inner = ", ".join(x if isinstance(x, str) else attr_text(x) for x in v)
        return f"({inner},)" if len(v) == 1 else f"({inner})"
    return repr(v)


def template(fmt: str, prec: int = ATOM, helpers: tuple = ()) -> Expr:
    """A format string over the arguments ({0}, {1}) and attrs ({alpha}); arguments are
    parenthesized unless atomic, so the template needs no knowledge of what is inlined."""
    def render(args, attrs, node):
        return fmt.format(*[wrap(a, ATOM, False) for a in args], **attrs)
    return Expr(render, prec, helpers)


def helper(fn, *attr_names: str, also: tuple = ()) -> Expr:
    """A call of a small NumPy function defined at the top of the emitted module (the op's
    reference evaluation itself, so the module and the interpreter share one definition)."""
    return call(fn.__name__, *attr_names, helpers=tuple(also) + (fn,))


def literal(value) -> tuple:
    """Python source for a scalar constant, with its precedence."""
    if isinstance(value, bool):
        return repr(value), ATOM
    if isinstance(value, float):
        if value != value:
            return "np.nan", ATOM
        if value in (float("inf"), float("-inf")):
            return ("np.inf", ATOM) if value > 0 else ("-np.inf", UNARY)
    text = repr(value)
    return text, (UNARY if text.startswith("-") else ATOM)


def reduction(method: str) -> Expr:
    """A reduction (`sum`, `mean`, `max` over `axes`, with `keepdims`) written as the array's
    method, `dscores.sum(axis=0)`: about a microsecond cheaper per call than `np.sum(...)`,
    which dispatches through Python first.  A mean of n elements is written `x.sum() / n`, the
    same arithmetic as `np.mean` (a float sum, then one division) without its bookkeeping.  A
    scalar operand may be a literal, which has no methods: `np.sum(x)` then."""
    def render(args, attrs, node):
        axes, ndim = tuple(attrs["axes"]), node.inputs[0].type.ndim
        parts = []
        if axes != tuple(range(ndim)):
            parts.append(f"axis={axes[0] if len(axes) == 1 else axes!r}")
        if attrs["keepdims"]:
            parts.append("keepdims=True")
        if ndim == 0:
            return f"np.{method}({', '.join([args[0][0]] + parts)})"
        name = "sum" if method == "mean" else method
        text = f"{wrap(args[0], ATOM, False)}.{name}({', '.join(parts)})"
        if method == "mean":     # `/ N` for a dimension name: the size of this call
            count = count_text(node.inputs[0].shape, axes)
            text += f" / {count}" if " " not in count else f" / ({count})"
        return text

    return Expr(render, MUL if method == "mean" else ATOM)


def zero_else(args, node) -> bool:
    """Whether where(cond, x, else) is the gate rules' `x where cond, else 0` over whole
    arrays (cond and x of the result's shape, x of its dtype, a float zero literal): then
    `where_or_zero(cond, x)` (codegen/numpy_helpers.py) computes it without branches."""
    c, x, _ = node.inputs
    return (args[2][0] == "0.0" and node.out.dtype in ("f32", "f64") and node.out.shape != ()
            and c.dtype == "bool" and c.shape == node.out.shape and x.type == node.out.type)


def where_form() -> Expr:
    """`np.where(c, a, b)`; `where_or_zero(c, a)` for a float select against zero (a relu's
    gate), which np.where computes with a branch per element, slow on a random mask."""

    def render(args, attrs, node):
        if zero_else(args, node):
            return f"where_or_zero({args[0][0]}, {args[1][0]})"
        return f"np.where({', '.join(a[0] for a in args)})"
    return Expr(render, ATOM, (where_or_zero,),
                helpers_of=lambda args, node: (where_or_zero,) if zero_else(args, node) else ())


@dataclass(frozen=True)
class Into:
    """How the planned emitter writes an op into a preallocated buffer (the record's `into`):
    `render(name, args, buf, node, over)` -> the statements computing node `node` into the
    buffer named `buf` and naming the result `name`; `args` are the operands' (text,
    precedence), `over` the operand value whose buffer `buf` is (memory planning wrote the
    result in place of it), or None.  `overwrites`: the operand positions the result may be
    written over (None: any, for an elementwise kernel that reads each element before writing
    it; matmul and reductions read all of an operand while writing: none)."""
    render: object
    overwrites: tuple | None = ()
    helpers_of: object = None   # (args, node) -> the helpers the statements call

    def helpers_for(self, args, node) -> tuple:
        return self.helpers_of(args, node) if self.helpers_of else ()


def into_call(fn: str, *extra: str, overwrites: tuple | None = None) -> Into:
    """`name = fn(arg0, ..., *extra, out=buf)`: a ufunc (`np.add`), or one with fixed trailing
    operands (relu: `np.maximum(x, 0.0, out=buf)`)."""
    return Into(lambda name, args, buf, node, over:
                [f"{name} = {fn}({', '.join([a[0] for a in args] + list(extra))}, out={buf})"],
                overwrites)


def into_matmul() -> Into:
    """`np.matmul(X.T, W, out=buf)`: a transpose flag becomes a view handed to BLAS."""
    def render(name, args, buf, node, over):
        x, y = args[0][0], args[1][0]
        x = f"{x}.T" if node.attrs.get("transpose_a") else x
        y = f"{y}.T" if node.attrs.get("transpose_b") else y
        return [f"{name} = np.matmul({x}, {y}, out={buf})"]
    return Into(render)


def into_reduction(method: str) -> Into:
    """`x.sum(axis=0, keepdims=True, out=buf)`: the array's method, no Python-level dispatch."""
    def render(name, args, buf, node, over):
        axes = tuple(node.attrs["axes"])
        keep = ", keepdims=True" if node.attrs["keepdims"] else ""
        return [f"{name} = {args[0][0]}.{method}(axis={axes[0] if len(axes) == 1 else axes!r}"
                f"{keep}, out={buf})"]
    return Into(render)


def into_where() -> Into:
    """`where_or_zero(c, x, out=buf)` for a relu's gate (see zero_else); else the else-operand
    copied in (unless the buffer already holds it: planned in place of it), then the selected
    elements over it.  Only the last operand may be overwritten: the others are read after."""

    def render(name, args, buf, node, over):
        if zero_else(args, node):
            return [f"{name} = where_or_zero({args[0][0]}, {args[1][0]}, out={buf})"]
        lines = [] if over == node.inputs[2].name else [f"np.copyto({buf}, {args[2][0]})"]
        return lines + [f"np.copyto({buf}, {args[1][0]}, where={args[0][0]})", f"{name} = {buf}"]
    return Into(render, (2,),
                lambda args, node: (where_or_zero,) if zero_else(args, node) else ())


def into_cast() -> Into:
    """`np.copyto(buf, x, casting='unsafe')`: astype into the buffer."""
    return Into(lambda name, args, buf, node, over:
                [f"np.copyto({buf}, {args[0][0]}, casting='unsafe')", f"{name} = {buf}"], None)
