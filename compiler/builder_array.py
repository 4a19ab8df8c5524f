"""The DSL's array functions (re-exported by frontends/dsl.py), NumPy's names and meanings:

    concatenate(xs, axis=0)          one `concatenate` node (compiler/ops/array.py)
    stack(xs, axis=0)                each x given a new axis of size 1 (reshape), concatenated
    split(x, sections, axis=0)       a list of slices (getitem): `sections` equal parts, or the
                                     split points [i, j, ...] as np.split takes them
    pad(x, pad_width, constant_values=0)   x written into a larger array of constant_values
                                     (putitem: zeros outside x; a nonzero constant is added
                                     where x is not, from a constant)
    flip(x, axis=None)               a getitem with step −1 on the axes
    take(x, idx, axis=0)             one `gather` node: np.take (x[idx] when axis is 0)
    take_along_axis(x, idx, axis)    one `take_along_axis` node, idx and x broadcast against
                                     each other except along axis

Only concatenate, take and take_along_axis add primitives; the others are compositions of
shape ops, so their gradients are the shape ops' own gate rules.  Indices are i64 arrays in
[0, size) (checked at run time; negative ones are refused, compiler/ops/array.py).
"""
from __future__ import annotations

import numbers

from .builder import Var, _at, broadcast_to, getitem, normalize_axes, reshape
from .ir import ShapeError, UnsupportedError


def _values(op: str, xs) -> list:
    if isinstance(xs, Var) or not isinstance(xs, (list, tuple)) or not xs:
        raise UnsupportedError(f"{op} takes a non-empty list or tuple of traced values, got "
                               f"{type(xs).__name__}" + (_at(xs) if isinstance(xs, Var) else ""))
    bad = [type(x).__name__ for x in xs if not isinstance(x, Var)]
    if bad:
        first = next(x for x in xs if isinstance(x, Var)) if len(bad) < len(xs) else None
        raise UnsupportedError(f"{op}: every value must be traced, got a {bad[0]}"
                               + (_at(first) if first is not None else ""))
    return list(xs)


def _axis(op: str, x: Var, axis, ndim: int) -> int:
    if not isinstance(axis, numbers.Integral) or isinstance(axis, bool):
        raise UnsupportedError(f"{op}: axis must be an int, got {axis!r}{_at(x)}")
    if ndim == 0:
        raise ShapeError(f"{op}: needs values of rank >= 1, got shape {x.shape}{_at(x)}")
    return normalize_axes(int(axis), ndim, _at(x), op)[0]


def _fixed(op: str, x: Var, axes) -> None:
    """A ShapeError unless x's sizes along `axes` are numbers (not dimension names)."""
    named = [k for k in axes if not isinstance(x.shape[k], int)]
    if named:
        raise ShapeError(f"{op}: axis {named[0]} of {x.name} {x.shape} has a size known only "
                         f"at run time; {op} needs a fixed size there{_at(x)}")


def concatenate(xs, axis=0) -> Var:
    """The values joined along `axis`; shapes must agree on every other axis."""
    xs = _values("concatenate", xs)
    k = _axis("concatenate", xs[0], axis, xs[0].ndim)
    if len(xs) == 1:
        return xs[0]
    return xs[0].b.emit("concatenate", xs, axis=k)


def stack(xs, axis=0) -> Var:
    """The values (all of one shape) joined along a new axis."""
    xs = _values("stack", xs)
    shape = xs[0].shape
    if any(x.shape != shape for x in xs):
        raise ShapeError(f"stack: all values must have one shape, got "
                         f"{' and '.join(str(x.shape) for x in xs)}{_at(xs[0])}")
    if not isinstance(axis, numbers.Integral) or isinstance(axis, bool):
        raise UnsupportedError(f"stack: axis must be an int, got {axis!r}{_at(xs[0])}")
    k = normalize_axes(int(axis), len(shape) + 1, _at(xs[0]), "stack")[0]
    new = shape[:k] + (1,) + shape[k:]
    parts = [reshape(x, new) for x in xs]
    return parts[0] if len(parts) == 1 else parts[0].b.emit("concatenate", parts, axis=k)


def split(x: Var, sections, axis=0) -> list:
    """np.split: `sections` equal parts (the axis must divide), or the split points."""
    if not isinstance(x, Var):
        raise UnsupportedError(f"split expects a traced value, got {type(x).__name__}")
    k = _axis("split", x, axis, x.ndim)
    _fixed("split", x, (k,))
    n = x.shape[k]
    if isinstance(sections, numbers.Integral) and not isinstance(sections, bool):
        if sections <= 0 or n % sections:
            raise ShapeError(f"split: axis {k} of shape {x.shape} (size {n}) does not split "
                             f"into {sections} equal parts{_at(x)}")
        points = [n // sections * j for j in range(1, sections)]
    elif isinstance(sections, (list, tuple)) and all(
            isinstance(p, numbers.Integral) and not isinstance(p, bool) for p in sections):
        points = [int(p) for p in sections]
    else:
        raise UnsupportedError(f"split: sections must be an int or a list of ints, got "
                               f"{sections!r}{_at(x)}")
    bounds = [None] + points + [None]
    lead = (slice(None),) * k
    return [getitem(x, lead + (slice(a, b),)) for a, b in zip(bounds[:-1], bounds[1:])]


def _pad_widths(x: Var, pad_width) -> list:
    def ints(v):
        return all(isinstance(p, numbers.Integral) and not isinstance(p, bool) for p in v)
    w = pad_width
    if isinstance(w, numbers.Integral) and not isinstance(w, bool):
        pairs = [(w, w)] * x.ndim
    elif isinstance(w, (list, tuple)) and len(w) == 2 and ints(w):
        pairs = [tuple(w)] * x.ndim
    elif isinstance(w, (list, tuple)) and all(isinstance(p, (list, tuple)) and len(p) == 2
                                               and ints(p) for p in w) and len(w) in (1, x.ndim):
        pairs = [tuple(p) for p in w] * (x.ndim if len(w) == 1 else 1)
    else:
        raise ShapeError(f"pad: pad_width {pad_width!r} is not an int, a (before, after) pair "
                         f"or one pair per axis of shape {x.shape}{_at(x)}")
    if any(p < 0 for pair in pairs for p in pair):
        raise ShapeError(f"pad: pad_width {pad_width!r} has a negative width{_at(x)}")
    return [(int(a), int(b)) for a, b in pairs]


def pad(x: Var, pad_width, mode="constant", constant_values=0) -> Var:
    """np.pad with mode="constant": x surrounded by `constant_values` (a number)."""
    if not isinstance(x, Var):
        raise UnsupportedError(f"pad expects a traced value, got {type(x).__name__}")
    if mode != "constant":
        raise UnsupportedError(f"pad: mode {mode!r} is not supported (only 'constant'){_at(x)}")
    if not isinstance(constant_values, numbers.Real) or isinstance(constant_values, bool):
        raise UnsupportedError(f"pad: constant_values must be one number, got "
                               f"{constant_values!r}{_at(x)}")
    pairs = _pad_widths(x, pad_width)
    if all(p == (0, 0) for p in pairs):
        return x
    _fixed("pad", x, [k for k, p in enumerate(pairs) if p != (0, 0)])
    shape = tuple(n if (a, b) == (0, 0) else a + n + b for (a, b), n in zip(pairs, x.shape))
    index = tuple((a, n if a == 0 else a + n, 1) for (a, _), n in zip(pairs, x.shape))
    out = x.b.emit("putitem", [x], index=index, shape=shape)
    if constant_values == 0:
        return out
    c = x.b.const(constant_values, x.dtype, x.shape)           # c where x is, then c − c = 0
    inside = x.b.emit("putitem", [c], index=index, shape=shape)
    return out + (x.b.const(constant_values, x.dtype, shape) - inside)


def flip(x: Var, axis=None) -> Var:
    """np.flip: the order of the elements reversed along `axis` (all axes when None)."""
    if not isinstance(x, Var):
        raise UnsupportedError(f"flip expects a traced value, got {type(x).__name__}")
    axes = normalize_axes(axis, x.ndim, _at(x), "flip")
    return getitem(x, tuple(slice(None, None, -1) if d in axes else slice(None)
                            for d in range(x.ndim)))


def take(x: Var, idx: Var, axis=0) -> Var:
    """np.take(x, idx, axis): the rows idx of x along axis (x[idx] for axis 0)."""
    if not isinstance(x, Var) or not isinstance(idx, Var):
        raise UnsupportedError("take expects a traced value and traced i64 indices, got "
                               f"{type(x).__name__} and {type(idx).__name__}")
    return x.b.emit("gather", [x, idx], axis=_axis("take", x, axis, x.ndim))


def take_along_axis(x: Var, idx: Var, axis) -> Var:
    """np.take_along_axis: out[..., j, ...] = x[..., idx[..., j, ...], ...] along axis; x and
    idx broadcast against each other on the other axes."""
    if not isinstance(x, Var) or not isinstance(idx, Var):
        raise UnsupportedError("take_along_axis expects a traced value and traced i64 "
                               f"indices, got {type(x).__name__} and {type(idx).__name__}")
    k = _axis("take_along_axis", x, axis, x.ndim)
    if idx.ndim != x.ndim:
        raise ShapeError(f"take_along_axis: indices of shape {idx.shape} must have the rank of "
                         f"the value's shape {x.shape}{_at(x)}")
    both = []
    for d, (a, b) in enumerate(zip(x.shape, idx.shape)):
        if d != k and a != b and 1 not in (a, b):
            raise ShapeError(f"take_along_axis: indices of shape {idx.shape} do not broadcast "
                             f"against the value's shape {x.shape} on axis {d}{_at(x)}")
        both.append(b if a == 1 else a)
    x = broadcast_to(x, tuple(x.shape[d] if d == k else n for d, n in enumerate(both)))
    idx = broadcast_to(idx, tuple(idx.shape[d] if d == k else n for d, n in enumerate(both)))
    return x.b.emit("take_along_axis", [x, idx], axis=k)
