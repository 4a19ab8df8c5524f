"""Array ops: concatenate, and gathers by integer indices with their scatter-add transposes.

    concatenate(x₀, …, xₘ; axis)              the xₖ joined along axis
                                              dxₖ = G[…, offₖ : offₖ + nₖ, …] (xₖ's slab)
    gather(x, idx; axis)                      out = np.take(x, idx, axis): x[idx], x[:, idx];
                                              shape x.shape[:axis] + idx.shape + x.shape[axis+1:]
                                              dx = scatter_add(G, idx; axis, x.shape)
    scatter_add(g, idx; axis, shape)          out = zeros(shape); out[…, idx[j], …] += g[…, j, …]
                                              (repeated indices add up); dg = gather(G, idx)
    take_along_axis(x, idx; axis)             out = np.take_along_axis(x, idx, axis), idx of
                                              x's shape but along axis; dx = its scatter-add
    scatter_add_along_axis(g, idx; axis, shape)   the transpose; dg = take_along_axis(G, idx)

Each pair is a linear map and its transpose, so each gate rule is the other op of its pair and
both differentiate to any order.  stack, split, pad and flip are DSL functions over these and
the shape ops (compiler/builder_array.py).

Indices are i64; each must lie in [0, n) for the size n of the axis it indexes.  They are
checked at run time on every backend with the label machinery (compiler/ops/labels.py: the
record's `label` rule names the index operand and n), before the op reads them, and a bad one
is a LabelError naming the value, the index, its position and the op with its model line.
Negative indices are refused, not wrapped around as NumPy does (a −1 in token ids is a bug far
more often than a wish for the last row); a Python int index (x[-1]) is basic indexing and
keeps NumPy's meaning.
"""
from __future__ import annotations

import numpy as np

from .. import builder as B
from ..codegen import llvm_array as LA
from ..codegen.forms import ATOM, Expr, Stmt, attr_text, call, helper, wrap
from ..ir import NUMPY_DTYPE, ShapeError, TensorType
from .attrs import INT, SHAPE
from .common import obj_array
from .record import Each, declare, gate


# ---- reference implementations (scatter_add_along_axis is also the emitted module's helper) --
def concatenate(*xs, axis):
    return np.concatenate(xs, axis=axis)


def scatter_add(g, idx, axis, shape):
    out = np.zeros(shape, dtype=np.asarray(g).dtype)
    np.add.at(out, (slice(None),) * axis + (idx,), g)
    return out


def scatter_add_along_axis(g, idx, axis, shape):
    """zeros(shape) with g[i] added at i with its axis coordinate replaced by idx[i]."""
    out = np.zeros(shape, dtype=np.asarray(g).dtype)
    where = list(np.ix_(*(np.arange(n) for n in np.shape(idx))))
    where[axis] = idx
    np.add.at(out, tuple(where), g)
    return out


# ---- shape rules --------------------------------------------------------------------------
def _axis_of(op, t, axis, indexed=False):
    if not 0 <= axis < t.ndim:
        raise ShapeError(f"{op}: axis {axis} is out of range for a value of shape {t.shape}")
    if indexed and not isinstance(t.shape[axis], int):
        raise ShapeError(f"{op}: axis {axis} of shape {t.shape} has a size known only at run "
                         "time; indices are checked against a fixed size (index another axis)")


def _indices(op, t):
    if t.dtype != "i64":
        raise ShapeError(f"{op}: indices must be i64, got {t} (cast with dsl.cast(idx, i64); a "
                         "bool mask selects through dsl.where)")


def _concatenate_type(ins, axis):
    if not ins:
        raise ShapeError("concatenate: needs at least one value")
    first = ins[0]
    _axis_of("concatenate", first, axis)
    shapes = " and ".join(str(t.shape) for t in ins)
    for t in ins[1:]:
        if t.dtype != first.dtype:
            raise ShapeError(f"concatenate: dtypes {', '.join(t.dtype for t in ins)} differ "
                             f"(shapes {shapes})")
        if t.ndim != first.ndim or any(a != b for k, (a, b) in enumerate(zip(t.shape, first.shape))
                                       if k != axis):
            raise ShapeError(f"concatenate: shapes {shapes} must agree except on axis {axis}")
    if not all(isinstance(t.shape[axis], int) for t in ins):
        raise ShapeError(f"concatenate: shapes {shapes}: axis {axis} has a size known only at "
                         "run time; concatenate along an axis of fixed size")
    size = sum(t.shape[axis] for t in ins)
    return TensorType(first.dtype, first.shape[:axis] + (size,) + first.shape[axis + 1:])


def _gather_type(ins, axis):
    x, idx = ins
    _axis_of("gather", x, axis, indexed=True)
    _indices("gather", idx)
    return TensorType(x.dtype, x.shape[:axis] + idx.shape + x.shape[axis + 1:])


def _scatter_type(ins, axis, shape):
    g, idx = ins
    shape = tuple(shape)
    _indices("scatter_add", idx)
    _axis_of("scatter_add", TensorType(g.dtype, shape), axis, indexed=True)
    if g.dtype == "bool":
        raise ShapeError(f"scatter_add: adds numbers, got {g}")
    want = shape[:axis] + idx.shape + shape[axis + 1:]
    if g.shape != want:
        raise ShapeError(f"scatter_add: a value of shape {g.shape} with indices {idx.shape} "
                         f"does not fill axis {axis} of {shape} (needs {want})")
    return TensorType(g.dtype, shape)


def _along_check(op, x_shape, idx, axis):
    _indices(op, idx)
    if idx.ndim != len(x_shape) or any(a != b for k, (a, b) in enumerate(zip(idx.shape, x_shape))
                                       if k != axis):
        raise ShapeError(f"{op}: indices of shape {idx.shape} must have the shape "
                         f"{tuple(x_shape)} of the value except on axis {axis}")


def _take_along_type(ins, axis):
    x, idx = ins
    _axis_of("take_along_axis", x, axis, indexed=True)
    _along_check("take_along_axis", x.shape, idx, axis)
    return TensorType(x.dtype, idx.shape)


def _scatter_along_type(ins, axis, shape):
    g, idx = ins
    shape = tuple(shape)
    _axis_of("scatter_add_along_axis", TensorType(g.dtype, shape), axis, indexed=True)
    _along_check("scatter_add_along_axis", shape, idx, axis)
    if g.shape != idx.shape or g.dtype == "bool":
        raise ShapeError(f"scatter_add_along_axis: needs numbers of the indices' shape "
                         f"{idx.shape}, got {g}")
    return TensorType(g.dtype, shape)


# ---- gate rules ---------------------------------------------------------------------------
def _concatenate_gate(k, g, out, *xs, axis):
    start = sum(x.shape[axis] for x in xs[:k])
    index = tuple(slice(start, start + xs[k].shape[axis]) if d == axis else slice(None)
                  for d in range(g.ndim))
    return B.getitem(g, index)


def _gather_gate(g, out, x, idx, axis):
    return g.b.emit("scatter_add", [g, idx], axis=axis, shape=x.shape)


def _scatter_gate(g, out, gv, idx, axis, shape):
    return g.b.emit("gather", [g, idx], axis=axis)


def _take_along_gate(g, out, x, idx, axis):
    return g.b.emit("scatter_add_along_axis", [g, idx], axis=axis, shape=x.shape)


def _scatter_along_gate(g, out, gv, idx, axis, shape):
    return g.b.emit("take_along_axis", [g, idx], axis=axis)


# ---- SymPy meanings (indices arrive as concrete integers) -----------------------------------
def _ints(idx):
    a = np.asarray(idx, dtype=object)
    return np.array([int(v) for v in a.flat], dtype=np.int64).reshape(a.shape)


def _sym_concatenate(*xs, axis):
    return np.concatenate([np.asarray(x, dtype=object) for x in xs], axis=axis)


def _sym_gather(x, idx, axis):
    return np.asarray(np.take(np.asarray(x, dtype=object), _ints(idx), axis=axis), dtype=object)


def _sym_scatter(g, idx, axis, shape):
    out, g, idx = obj_array(tuple(shape)), np.asarray(g, dtype=object), _ints(idx)
    for pos in np.ndindex(*g.shape):
        at = pos[:axis] + (int(idx[pos[axis:axis + idx.ndim]]),) + pos[axis + idx.ndim:]
        out[at] = out[at] + g[pos]
    return out


def _sym_take_along(x, idx, axis):
    return np.take_along_axis(np.asarray(x, dtype=object), _ints(idx), axis=axis)


def _sym_scatter_along(g, idx, axis, shape):
    out, g, idx = obj_array(tuple(shape)), np.asarray(g, dtype=object), _ints(idx)
    for pos in np.ndindex(*g.shape):
        at = pos[:axis] + (int(idx[pos]),) + pos[axis + 1:]
        out[at] = out[at] + g[pos]
    return out


# ---- index operands: (position, size of the indexed axis, "index") -------------------------
def _gather_index(node):
    return 1, node.inputs[0].shape[node.attrs["axis"]], "index"


def _scatter_index(node):
    return 1, tuple(node.attrs["shape"])[node.attrs["axis"]], "index"


# ---- NumPy forms --------------------------------------------------------------------------
def _concatenate_text(args, attrs, node):
    return f"np.concatenate([{', '.join(a[0] for a in args)}], axis={attrs['axis']})"


def _gather_text(args, attrs, node):
    x, idx = wrap(args[0], ATOM, False), args[1][0]
    if not node.inputs[1].shape:        # a 0-d index array would be basic indexing: a view
        return f"np.take({x}, {idx}, axis={attrs['axis']})"
    return f"{x}[{':, ' * attrs['axis']}{idx}]"


def _scatter_lines(name, args, attrs, node):
    dt = NUMPY_DTYPE[node.out.dtype]
    axis = attrs["axis"]
    at = args[1] if axis == 0 else f"({'slice(None), ' * axis}{args[1]})"
    return [f"{name} = np.zeros({attr_text(tuple(attrs['shape']))}, dtype=np.{dt})",
            f"np.add.at({name}, {at}, {args[0]})"]


declare("concatenate",
        shape=_concatenate_type,
        attrs={"axis": INT},
        eval=concatenate,
        gate=Each([("dxₖ = G[…, offₖ:offₖ+nₖ, …]", _concatenate_gate)]),
        sympy=_sym_concatenate,
        numpy=Expr(_concatenate_text),
        llvm=LA.Lowering(LA.lower_concatenate),
        through=True, ordered=True)

declare("gather",
        shape=_gather_type,
        attrs={"axis": INT},
        eval=lambda x, idx, axis: np.take(x, idx, axis=axis),
        gate=gate("dx = G added at the indices (scatter_add)", _gather_gate, None),
        sympy=_sym_gather,
        numpy=Expr(_gather_text),
        llvm=LA.Lowering(LA.lower_gather),
        label=_gather_index,
        through=True, ordered=True)

declare("scatter_add",
        shape=_scatter_type,
        attrs={"axis": INT, "shape": SHAPE},
        eval=scatter_add,
        gate=gate("dg = G gathered at the indices", _scatter_gate, None),
        sympy=_sym_scatter,
        numpy=Stmt(_scatter_lines),
        llvm=LA.Lowering(LA.lower_scatter_add),
        label=_scatter_index,
        selects=True, ordered=True)

declare("take_along_axis",
        shape=_take_along_type,
        attrs={"axis": INT},
        eval=lambda x, idx, axis: np.take_along_axis(x, idx, axis=axis),
        gate=gate("dx = G added at the indices along the axis", _take_along_gate, None),
        sympy=_sym_take_along,
        numpy=call("np.take_along_axis", "axis"),
        llvm=LA.Lowering(LA.lower_take_along_axis),
        label=_gather_index,
        through=True, ordered=True)

declare("scatter_add_along_axis",
        shape=_scatter_along_type,
        attrs={"axis": INT, "shape": SHAPE},
        eval=scatter_add_along_axis,
        gate=gate("dg = G taken along the axis at the indices", _scatter_along_gate, None),
        sympy=_sym_scatter_along,
        numpy=helper(scatter_add_along_axis, "axis", "shape"),
        llvm=LA.Lowering(LA.lower_scatter_add_along_axis),
        label=_scatter_index,
        selects=True, ordered=True)
