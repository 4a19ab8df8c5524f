"""Shape ops: reshape, transpose, basic indexing (getitem) and its transpose (putitem).

Each is linear, and each gate rule is the transpose of the op: reshape back, transpose by the
inverse permutation, and put the upstream gradient back where getitem took the values from.
An index is a tuple of entries: an int (takes one position, drops the axis), a triple
(start, stop, step) as `slice.indices` gives it, or None (a new axis of size 1).
"""
from __future__ import annotations

import numpy as np

from .. import builder as B
from ..codegen import llvm_shape as LS
from ..codegen.forms import ATOM, Expr, Stmt, attr_text, wrap
from ..ir import NUMPY_DTYPE, ShapeError, TensorType
from ..shapes import size_of
from .common import obj_array
from .record import declare, gate
from .attrs import INDEX, INTS, SHAPE


def to_python_index(index) -> tuple:
    """The attr form of an index as a Python index (a negative stop means 'to the start'; a
    dimension name as the stop is a whole axis of that size, `:`)."""
    return tuple(slice(e[0], None if isinstance(e[1], str) or e[1] < 0 else e[1], e[2])
                 if isinstance(e, tuple) else e for e in index)


def index_text(index, shape) -> str:
    parts, dim = [], 0
    for e in index:
        if e is None:
            parts.append("None")
            continue
        if isinstance(e, tuple):
            start, stop, step = e
            n = shape[dim]
            s = "" if start == (0 if step > 0 else n - 1) else str(start)
            t = "" if stop == (n if step > 0 else -1) or stop < 0 else str(stop)
            parts.append(f"{s}:{t}" + ("" if step == 1 else f":{step}"))
        else:
            parts.append(str(e))
        dim += 1
    while len(parts) > 1 and parts[-1] == ":":
        parts.pop()
    return ", ".join(parts)


def _index_type(op, t, index):
    """The shape `index` selects from `t`.  A dimension name (a size known at run time) takes
    only the full slice (0, N, 1) and stays in the result; other axes are probed."""
    shape, probe_index, names, dim = list(t.shape), [], [], 0
    for e in index:
        if e is not None and dim < len(shape) and isinstance(shape[dim], str):
            if not (isinstance(e, tuple) and e == (0, shape[dim], 1)):
                raise ShapeError(f"{op}: index {index} does not fit shape {t.shape}: axis {dim} "
                                 f"of size {shape[dim]} (known at run time) takes only ':'")
            names.append(shape[dim])
            shape[dim], e = 1, (0, 1, 1)
        elif isinstance(e, tuple) and isinstance(e[1], str):
            raise ShapeError(f"{op}: index {index} does not fit shape {t.shape}: the stop "
                             f"{e[1]!r} of axis {dim} is not its size")
        probe_index.append(e)
        dim += e is not None
    try:
        probe = np.empty(shape, dtype=np.int8)[to_python_index(probe_index)]
    except (IndexError, TypeError, ValueError) as e:
        raise ShapeError(f"{op}: index {index} does not fit shape {t.shape}: {e}") from None
    out, k = list(probe.shape), 0
    for e, original in zip(probe_index, index):      # each kept slice is one result axis
        if e is None or isinstance(e, tuple):
            if isinstance(original, tuple) and isinstance(original[1], str):
                out[k] = original[1]
            k += 1
    if dim < len(shape):                             # axes the index leaves whole
        out[len(out) - (len(shape) - dim):] = t.shape[dim:]
    return tuple(out)


def _getitem_type(ins, index):
    return TensorType(ins[0].dtype, _index_type("getitem", ins[0], index))


def _putitem_type(ins, index, shape):
    got = _index_type("putitem", TensorType(ins[0].dtype, shape), index)
    if got != ins[0].shape:
        raise ShapeError(f"putitem: a value of shape {ins[0].shape} does not fill index {index} "
                         f"of shape {tuple(shape)} (needs {got})")
    return TensorType(ins[0].dtype, shape)


def _putitem_eval(g, index, shape):
    out = np.zeros(shape, dtype=np.asarray(g).dtype)
    out[to_python_index(index)] = g
    return out


def _putitem_lines(name, args, attrs, node):
    dt = NUMPY_DTYPE[node.out.dtype]
    return [f"{name} = np.zeros({attr_text(tuple(attrs['shape']))}, dtype=np.{dt})",
            f"{name}[{index_text(attrs['index'], attrs['shape'])}] = {args[0]}"]


def _sym_putitem(g, index, shape):
    out = obj_array(shape)
    g = np.asarray(g, dtype=object)
    out[to_python_index(index)] = g[()] if g.ndim == 0 else g   # not the 0-d array itself
    return out


def _reshape_type(ins, shape):
    (t,) = ins
    if size_of(TensorType(t.dtype, shape).shape) != size_of(t.shape):
        raise ShapeError(f"reshape: cannot reshape {t.shape} ({_elements(t.shape)} elements) "
                         f"into {tuple(shape)}")
    return TensorType(t.dtype, shape)


def _elements(shape) -> str:
    k, names = size_of(shape)
    return " * ".join(list(names) + ([str(k)] if k != 1 or not names else []))


def _transpose_type(ins, perm):
    (t,) = ins
    if sorted(perm) != list(range(t.ndim)):
        raise ShapeError(f"transpose: {perm} is not a permutation of the axes of {t.shape}")
    return TensorType(t.dtype, tuple(t.shape[p] for p in perm))


def _transpose_text(args, attrs, node):
    x = wrap(args[0], ATOM, False)
    perm = tuple(attrs["perm"])
    return f"{x}.T" if perm == tuple(range(len(perm)))[::-1] else f"np.transpose({x}, {perm!r})"


def _reshape_text(args, attrs, node):
    shape = tuple(attrs["shape"])
    if not node.inputs[0].shape:   # a scalar may be a Python number: no .reshape method
        return f"np.reshape({args[0][0]}, {shape!r})"
    dims = ", ".join(str(d) for d in shape) if shape else "()"
    return f"{wrap(args[0], ATOM, False)}.reshape({dims})"


def _inverse(perm) -> tuple:
    inv = [0] * len(perm)
    for i, p in enumerate(perm):
        inv[p] = i
    return tuple(inv)


declare("reshape",
        shape=_reshape_type,
        attrs={"shape": SHAPE},
        eval=lambda x, shape: np.reshape(x, shape),
        gate=gate("dx = G reshaped back", lambda g, out, x, shape: B.reshape(g, x.shape)),
        sympy=lambda x, shape: np.reshape(x, shape),
        numpy=Expr(_reshape_text),
        llvm=LS.Lowering(LS.lower_reshape),
        view=True, through=True)

declare("transpose",
        shape=_transpose_type,
        attrs={"perm": INTS},
        eval=lambda x, perm: np.transpose(x, perm),
        gate=gate("dx = G transposed back (inverse permutation)",
                  lambda g, out, x, perm: B.transpose(g, _inverse(perm))),
        sympy=lambda x, perm: np.transpose(x, perm),
        numpy=Expr(_transpose_text),
        llvm=LS.Transpose(LS.lower_transpose),
        view=True, through=True)

declare("getitem",
        shape=_getitem_type,
        attrs={"index": INDEX},
        eval=lambda x, index: x[to_python_index(index)],
        gate=gate("dx = G put back at the index",
                  lambda g, out, x, index: g.b.emit("putitem", [g], index=index,
                                                    shape=x.shape)),
        sympy=lambda x, index: np.asarray(x[to_python_index(index)], dtype=object),
        numpy=Expr(lambda args, attrs, node:
                   f"{wrap(args[0], ATOM, False)}"
                   f"[{index_text(attrs['index'], node.inputs[0].shape)}]"),
        llvm=LS.Lowering(LS.lower_getitem),
        view=True, through=True)

declare("putitem",
        shape=_putitem_type,
        attrs={"index": INDEX, "shape": SHAPE},
        eval=_putitem_eval,
        gate=gate("dg = G taken at the index",
                  lambda g, out, x, index, shape: B.getitem(g, to_python_index(index))),
        sympy=_sym_putitem,
        numpy=Stmt(_putitem_lines),
        llvm=LS.Lowering(LS.lower_putitem),
        selects=True, through=True)
