"""Argument checks done before any compiled code runs: names, dtypes (no silent downcast),
shapes.  Every message names the argument."""
from __future__ import annotations

import numbers

import numpy as np

from compiler.ir import NUMPY_DTYPE


def check_arguments(graph, kwargs: dict) -> list:
    """The graph's inputs in order, as arrays of exactly the declared dtype and shape.
    Python numbers are accepted for any numeric dtype they convert to exactly; arrays must
    already have the declared dtype or one that converts to it without loss."""
    names = [v.name for v in graph.inputs]
    missing = [n for n in names if n not in kwargs]
    extra = [n for n in kwargs if n not in names]
    sig = ", ".join(f"{v.name}: {v.type}" for v in graph.inputs)
    if missing or extra:
        what = []
        if missing:
            what.append(f"missing {', '.join(map(repr, missing))}")
        if extra:
            what.append(f"unexpected {', '.join(map(repr, extra))}")
        raise TypeError(f"{graph.name}(): {'; '.join(what)}; it takes ({sig})")
    out = []
    for v in graph.inputs:
        out.append(_convert(v.name, kwargs[v.name], v.type))
    return out


def _convert(name, x, t):
    want = np.dtype(NUMPY_DTYPE[t.dtype])
    if isinstance(x, numbers.Number) and not isinstance(x, np.generic):
        if isinstance(x, bool) and t.dtype != "bool":
            raise TypeError(f"argument {name!r}: got a bool, expected {t}")
        if isinstance(x, float) and t.dtype in ("i64", "bool"):
            raise TypeError(f"argument {name!r}: got float {x!r}, expected {t}")
        arr = np.asarray(x, dtype=want)
    else:
        try:
            arr = np.asarray(x)
        except Exception as e:
            raise TypeError(f"argument {name!r}: cannot make an array of {type(x).__name__}: {e}")
        if arr.dtype == object or not np.can_cast(arr.dtype, want, casting="safe"):
            raise TypeError(f"argument {name!r}: dtype {arr.dtype} does not convert to {t} "
                            "without loss; convert it explicitly (e.g. x.astype(np."
                            f"{want.name}))")
        arr = arr.astype(want, copy=False)
    if arr.shape != t.shape:
        raise ValueError(f"argument {name!r}: shape {arr.shape} does not match the declared "
                         f"{t} (shape {t.shape})")
    return arr
