"""Attribute kinds: what each op's attributes may hold (`OPS[op].attrs`, declared in the op's
record in its family module beside its other rules).

    declare("leaky_relu", ..., attrs={"alpha": REAL}, ...)
    declare("matmul", ..., attrs={"transpose_a": optional(BOOL), "transpose_b": optional(BOOL)})

An op declared without attrs takes none.  `check_attrs` (called by `ir.verify`, so by the
text parser, the passes' verifier and every compile) refuses an attribute the op does not
declare, a missing required one, and a value of the wrong kind, so that only plain literals of
the declared kind reach a shape rule or an emitter (which writes them with `repr`).
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from ..ir import DTYPES, GradcError, is_dim_name


class AttrError(GradcError, TypeError):
    """An op's attribute is unknown to the op, missing, or of the wrong kind."""


def _int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _real(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _seq(v, item) -> bool:
    return isinstance(v, (tuple, list)) and all(item(x) for x in v)


def _dim(v) -> bool:          # a size: an int, or a dimension name (compiler/shapes.py)
    return _int(v) or is_dim_name(v)


def _entry(e) -> bool:       # an index entry: int, None, or (start, stop, step); the stop of
    return e is None or _int(e) or (isinstance(e, (tuple, list)) and len(e) == 3  # a full
                                    and _int(e[0]) and _dim(e[1]) and _int(e[2]))  # slice of N: N


class Kind:
    """`dims`: the values hold sizes that may be dimension names (shapes.resolve_attrs)."""

    def __init__(self, what: str, test, required: bool = True, dims: bool = False):
        self.what, self.test, self.required, self.dims = what, test, required, dims


BOOL = Kind("a bool", lambda v: isinstance(v, (bool, np.bool_)))
INT = Kind("an integer", _int)
REAL = Kind("a finite real number", lambda v: _real(v) and math.isfinite(v))
NUMBER = Kind("a number or bool (inf and nan allowed)", lambda v: _real(v) or BOOL.test(v))
DTYPE = Kind(f"a dtype name ({', '.join(DTYPES)})", lambda v: isinstance(v, str) and v in DTYPES)
INTS = Kind("a tuple of integers", lambda v: _seq(v, _int))
SHAPE = Kind("a tuple of sizes (integers or dimension names)", lambda v: _seq(v, _dim),
             dims=True)
INDEX = Kind("a tuple of index entries (int, None or (start, stop, step))",
             lambda v: _seq(v, _entry), dims=True)


def optional(kind: Kind) -> Kind:
    return Kind(kind.what, kind.test, required=False, dims=kind.dims)


def check_attrs(op: str, attrs, declared: dict) -> None:
    """Raise AttrError unless `attrs` fits `declared` (OPS[op].attrs)."""
    if not isinstance(attrs, dict):
        raise AttrError(f"{op}: attributes must be a dict, got {type(attrs).__name__}")
    for name, value in attrs.items():
        kind = declared.get(name) if isinstance(name, str) else None
        if kind is None:
            known = ", ".join(declared) or "none"
            raise AttrError(f"{op}: unknown attribute {name!r} (its attributes: {known})")
        if not kind.test(value):
            raise AttrError(f"{op}: attribute {name}={_short(value)} must be {kind.what}")
    missing = [k for k, kind in declared.items() if kind.required and k not in attrs]
    if missing:
        raise AttrError(f"{op}: missing attribute {', '.join(missing)}")


def _short(value) -> str:
    plain = (int, float, str, bool, tuple, list, type(None), np.generic)
    text = repr(value) if isinstance(value, plain) else f"<{type(value).__name__} object>"
    return text if len(text) <= 60 else text[:57] + "..."
