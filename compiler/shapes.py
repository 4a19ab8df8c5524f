"""Symbolic dimensions (DESIGN.md principle 13): a shape entry is an int or a dimension name.

    f64["N", 784]        TensorType("f64", ("N", 784)), printed f64[N,784]

A dimension name is an identifier (not a Python keyword) that stands for one size, the same
wherever it appears in a graph: every input of shape [N, ...] must have the same N at call
time, and the compiled function reads N from its arguments (`bind_dims`).  Sizes are products
of ints and names; two sizes are equal when their int factors and names agree (`size_of`), which
is all the shape rules need (broadcasting, matmul chaining, reshape keeping N).

`specialize(graph, N=64)` (compiler/specialize.py) substitutes sizes and returns the concrete
graph (the oracle the tests compile against, and what checks that need concrete shapes run on).
"""
from __future__ import annotations

import numbers

from .ir import GradcError, Graph, ShapeError, TensorType, is_dim_name  # noqa: F401

NOMINAL = 128       # the size a dimension name counts as where only an estimate is needed
                    # (memory planning's small-array threshold, byte reports)


class DimError(GradcError, ValueError):
    """Arguments disagree on a named dimension, or a name cannot be a dimension."""




def check_dim(d, where: str = "shape"):
    """`d` as a dimension: a non-negative int or a dimension name; else a ShapeError."""
    if isinstance(d, str):
        if not is_dim_name(d):
            raise ShapeError(f"{where}: dimension {d!r} is not a name (an identifier that is "
                             "not a Python keyword) nor a non-negative int")
        return d
    if isinstance(d, bool) or not isinstance(d, numbers.Integral):
        raise ShapeError(f"{where}: dimension {d!r} must be an int or a name such as 'N'")
    if d < 0:
        raise ShapeError(f"negative dimension in shape {where}")
    return int(d)


def symbolic(shape) -> bool:
    return any(isinstance(d, str) for d in shape)


def dims_of(shape) -> tuple:
    """The dimension names in `shape`, in order, without repeats."""
    return tuple(dict.fromkeys(d for d in shape if isinstance(d, str)))


def size_of(shape) -> tuple:
    """The number of elements as (int factor, sorted names): equal sizes have equal keys."""
    k, names = 1, []
    for d in shape:
        if isinstance(d, str):
            names.append(d)
        else:
            k *= d
    return (k, tuple(sorted(names)) if k else ())


def nominal_size(t: TensorType) -> int:
    """Elements of `t`, each dimension name counted as NOMINAL (an estimate for planning)."""
    n = 1
    for d in t.shape:
        n *= NOMINAL if isinstance(d, str) else d
    return n


def larger_than(t: TensorType, limit: int) -> bool:
    """Whether `t` may have more than `limit` elements (a symbolic size may: its N is any)."""
    return t.symbolic or t.size > limit


def dim_text(d) -> str:
    return str(d)


def shape_text(shape) -> str:
    """Python source of a shape tuple: `(N, 10)`; names are validated identifiers (the
    emitted code defines a local variable of each dimension it uses)."""
    inner = ", ".join(dim_text(d) for d in shape)
    return f"({inner},)" if len(shape) == 1 else f"({inner})"


def count_text(shape, axes) -> str:
    """Source of the number of elements over `axes`: `N`, `N * 3`, `12`."""
    k, names = 1, []
    for a in axes:
        if isinstance(shape[a], str):
            names.append(shape[a])
        else:
            k *= shape[a]
    parts = names + ([str(k)] if k != 1 or not names else [])
    return " * ".join(parts)


def fits(shape: tuple, spec: tuple) -> bool:
    """Whether an array's `shape` fits the declared `spec`, whose dimension names stand for
    any size (their agreement across arguments is `bind_dims`'s)."""
    return len(shape) == len(spec) and all(isinstance(d, str) or d == n
                                           for n, d in zip(shape, spec))


def graph_dims(graph: Graph) -> dict:
    """Dimension name -> (input position, axis) of its first appearance among the inputs."""
    found: dict = {}
    for k, v in enumerate(graph.inputs):
        for ax, d in enumerate(v.shape):
            if isinstance(d, str) and d not in found:
                found[d] = (k, ax)
    return found


def is_symbolic_graph(graph: Graph) -> bool:
    return any(symbolic(v.shape) for v in graph.inputs) or any(
        symbolic(n.out.shape) for n in graph.nodes)


def bind_dims(inputs, arrays) -> dict:
    """Dimension name -> its size in this call, read from `arrays` (in the order of `inputs`,
    whose ranks were checked).  Two arguments that disagree on a name: a DimError naming both
    arguments, the axes and the sizes."""
    dims: dict = {}
    where: dict = {}
    for v, a in zip(inputs, arrays):
        shape = a.shape
        for ax, d in enumerate(v.shape):
            if not isinstance(d, str):
                continue
            n = shape[ax]
            if d not in dims:
                dims[d], where[d] = n, (v.name, ax)
            elif dims[d] != n:
                other, oax = where[d]
                raise DimError(f"argument {v.name!r} has {d} = {n} (axis {ax} of shape "
                               f"{tuple(shape)}) but argument {other!r} has {d} = {dims[d]} "
                               f"(axis {oax}); inputs sharing the dimension {d!r} must agree")
    return dims


def resolve(shape, dims: dict) -> tuple:
    """`shape` with each dimension name replaced by its size in `dims`."""
    return tuple(dims[d] if isinstance(d, str) else d for d in shape)


def resolve_type(t: TensorType, dims: dict) -> TensorType:
    return t if not symbolic(t.shape) else TensorType(t.dtype, resolve(t.shape, dims))


def resolve_attrs(attrs: dict, kinds, dims: dict) -> dict:
    """A node's attributes with dimension names replaced by sizes, in the attributes whose
    kind (`kinds`: the op record's `attrs`) holds sizes (`Kind.dims`: shapes, indices)."""
    out = None
    for k, v in attrs.items():
        kind = kinds.get(k)
        if kind is not None and getattr(kind, "dims", False):
            new = _subst(v, dims)
            if new != v:
                out = dict(attrs) if out is None else out
                out[k] = new
    return attrs if out is None else out


def _subst(v, dims):
    if isinstance(v, str):
        return dims[v] if v in dims else v
    if isinstance(v, (tuple, list)):
        return tuple(_subst(x, dims) for x in v)
    return v


def infer_dim(have, shape, where="") -> tuple:
    """`shape` with its -1 replaced by what makes its size that of `have` (sizes are products
    of ints and dimension names: compiler/shapes.py): an int, or a dimension name."""
    (k, names), (known, kept) = size_of(have), size_of([d for d in shape if d != -1])
    left = list(names)
    for d in kept:
        if d not in left:
            left = None
            break
        left.remove(d)
    if left is None or known == 0 or k % known or (left and (len(left) > 1 or k != known)):
        raise ShapeError(f"reshape: cannot reshape {have} into {shape}{where}")
    return tuple((left[0] if left else k // known) if d == -1 else d for d in shape)


def whole_axis(n) -> tuple:
    """The index entry (start, stop, step) taking all of an axis of size `n`."""
    return (0, n, 1) if isinstance(n, str) else tuple(slice(None).indices(n))
