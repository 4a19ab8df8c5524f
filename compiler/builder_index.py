"""Indexing with an integer array on one axis (`E[tokens]`, `x[:, idx]`, `x[idx, 1:3]`): the
basic part of the index (slices, None, ...) first, then one `gather` along the array's axis
(compiler/ops/array.py), which is what NumPy's advanced indexing gives for one array among
slices.  builder.getitem calls `array_index`; this module imports nothing from builder.

Refused, with the reason: two or more arrays (x[i, j]: use dsl.take_along_axis, or index one
axis at a time), an array with an int entry (x[0, idx]: NumPy's placement of the result's axes
then depends on their adjacency; write x[0][idx]), a bool mask (its result's shape depends on
the data; use dsl.where).  Negative indices in the array are refused at run time (a LabelError,
as an index ≥ the axis size is), not wrapped around.
"""
from __future__ import annotations

import numbers

from .ir import UnsupportedError


def array_index(x, index: tuple, is_array: list, basic):
    """x[index] where `is_array[k]` marks the traced entries of `index` (Ellipsis already
    expanded); `basic(x, index)` is builder.getitem for the rest."""
    loc = x.b.where()
    at = f" at {loc}" if loc else ""
    arrays = [k for k, a in enumerate(is_array) if a]
    shown = ", ".join(index[k].name if a else _entry(index[k]) for k, a in enumerate(is_array))
    if len(arrays) > 1:
        raise UnsupportedError(f"{x.name}[{shown}]{at}: gradc indexes with one integer array "
                               "at a time; use dsl.take_along_axis, or index one axis after "
                               "another")
    k = arrays[0]
    idx = index[k]
    if idx.dtype == "bool":
        raise UnsupportedError(f"{x.name}[{shown}]{at}: indexing with a bool mask {idx.name} "
                               f"{idx.value.type} gives a shape known only from the data; use "
                               "dsl.where(mask, x, 0) instead")
    if any(isinstance(e, numbers.Integral) for e in index):
        raise UnsupportedError(f"{x.name}[{shown}]{at}: an int index together with an "
                               "integer array is not supported; index in two steps "
                               "(x[0][idx])")
    y = basic(x, index[:k] + (slice(None),) + index[k + 1:])    # k: idx's axis in y (no ints)
    return y.b.emit("gather", [y, idx], axis=k)


def _entry(e) -> str:
    if e is None:
        return "None"
    if isinstance(e, slice):
        parts = ["" if v is None else str(v) for v in (e.start, e.stop, e.step)]
        return ":".join(parts[:2]) + (f":{parts[2]}" if parts[2] else "")
    return repr(e)
