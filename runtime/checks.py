"""Argument checks done before any compiled code runs: names, dtypes (no silent downcast),
shapes.  Every message names the argument."""
from __future__ import annotations

import numbers

import numpy as np

from compiler.ir import NUMPY_DTYPE, UnsupportedError
from compiler.ops.labels import error_for, label_checks as all_label_checks


def check_arguments(graph, kwargs: dict, check_finite: bool = False) -> list:
    """The graph's inputs in order, as arrays of exactly the declared dtype and shape.
    Python numbers are accepted for any numeric dtype they convert to exactly; arrays must
    already have the declared dtype or one that converts to it without loss.  Any memory layout
    is accepted (the LLVM kernel makes a C-contiguous copy of a non-contiguous array); read-only
    arrays are accepted (no backend writes into its arguments).  `check_finite`: a NaN or inf
    in a float argument is a ValueError naming the argument and the first bad index."""
    names = [v.name for v in graph.inputs]
    missing = [n for n in names if n not in kwargs]
    extra = [n for n in kwargs if n not in names]
    if missing or extra:
        sig = ", ".join(f"{v.name}: {v.type}" for v in graph.inputs)
        what = []
        if missing:
            what.append(f"missing {', '.join(map(repr, missing))}")
        if extra:
            what.append(f"unexpected {', '.join(map(repr, extra))}")
        raise TypeError(f"{graph.name}(): {'; '.join(what)}; it takes ({sig})")
    out = []
    for v in graph.inputs:
        out.append(_convert(v.name, kwargs[v.name], v.type))
        if check_finite and v.type.is_float:
            _check_finite(v.name, out[-1])
    check_labels(graph, out)
    return out


def check_labels(graph, args) -> None:
    """Every class label of an argument in [0, C): a LabelError naming the argument, the row
    and the op (compiler/ops/labels.py), before the call."""
    for k, check in input_label_checks(graph):
        lab = args[k]
        if lab.size and lab.view(np.uint64).max() >= check.classes:   # negatives are huge
            raise error_for(check, lab)


def input_label_checks(graph) -> list:
    """[(input position, LabelCheck)] for every argument used as class labels (ops/labels.py),
    so that a label out of range is an error on every backend (NumPy would wrap -1 around)."""
    pos = {v.name: k for k, v in enumerate(graph.inputs)}
    return [(pos[c.value.name], c) for c in all_label_checks(graph) if c.source is None]


def label_checks(graph) -> list:
    """(input position, name, class count, op) for every argument used as class labels."""
    return [(k, c.value.name, c.classes, c.op) for k, c in input_label_checks(graph)]


def _check_finite(name, arr) -> None:
    ok = np.isfinite(arr)
    if not ok.all():
        idx = tuple(int(i) for i in np.argwhere(~ok)[0])
        bad = arr[idx]
        where = f" at index {idx if len(idx) != 1 else idx[0]}" if idx else ""
        raise ValueError(f"argument {name!r}: contains {bad}{where} ({int((~ok).sum())} of "
                         f"{arr.size} values are not finite); check_finite=True refuses NaN and "
                         "inf inputs")


def refuse_masked(what: str, x) -> None:
    """A masked array is refused: every backend reads an array's data, so its mask would be
    silently ignored (masked entries read as the numbers under them)."""
    if isinstance(x, np.ma.MaskedArray):
        masked = int(np.ma.count_masked(x))
        raise UnsupportedError(
            f"{what}: a masked array (numpy.ma.MaskedArray, {masked} of {x.size} entries "
            "masked); gradc does not read masks: pass x.filled(value) to choose what the "
            "masked entries are, or np.asarray(x) to use the data under the mask")


def _convert(name, x, t):
    refuse_masked(f"argument {name!r}", x)
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
