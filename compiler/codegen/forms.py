"""How the NumPy source emitter writes one op: the forms an entry of `NUMPY_EMITTERS` takes.

An `Expr` renders the node as one Python expression (so a single-use temporary can be inlined
into its consumer); `Stmt` renders it as statements assigned to the node's name.  Python
operator precedence decides parentheses, so inlined code reads as a person would write it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

ATOM, POW, UNARY, MUL, ADD, CMP = 100, 16, 15, 14, 13, 10


@dataclass(frozen=True)
class Expr:
    render: object          # (args: list[(text, prec)], attrs: dict, node) -> str
    prec: int = ATOM
    helpers: tuple = field(default=())   # functions whose source the module must define
    cheap: bool = False     # cheap to recompute: inline at every use (scalar constants)
    prec_of: object = None  # (attrs) -> precedence, when it depends on the attrs

    def precedence(self, attrs) -> int:
        return self.prec_of(attrs) if self.prec_of else self.prec


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
        parts += [f"{k}={attrs[k]!r}" for k in attr_names]
        parts += [f"{k}={v}" for k, v in fixed.items()]
        return f"{fn}({', '.join(parts)})"
    return Expr(render, ATOM, helpers)


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
