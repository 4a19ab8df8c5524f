"""Argument checks done before any compiled code runs: names, dtypes (no silent downcast),
shapes.  Every message names the argument."""
from __future__ import annotations

import numbers
import sys

import numpy as np

from compiler.ir import NUMPY_DTYPE, UnsupportedError
from compiler.shapes import fits
from compiler.specialize import call_dims
from compiler.ops.labels import error_for, label_checks as all_label_checks


def check_arguments(graph, kwargs: dict, check_finite: bool = False) -> list:
    """The graph's inputs in order, as arrays of exactly the declared dtype and shape.
    A Python int is accepted for an i64 or float input that holds it exactly, a Python float
    for a float input (an f32 one takes the nearest f32; a float beyond the f32 range, which
    would become inf or 0, is refused), a bool only for a bool input, a complex number never.
    Arrays must already have the declared dtype or one that converts to it without loss
    (integer arrays converted to a float dtype are checked value by value).  Any memory layout
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
    call_dims(graph, out)     # inputs sharing a dimension name agree (a DimError), and the
                              # op rules hold at the call's sizes
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
    ma = sys.modules.get("numpy.ma")      # none exists unless numpy.ma was imported (and
    if ma is not None and isinstance(x, ma.MaskedArray):   # importing it costs ~15 ms)
        masked = int(ma.count_masked(x))
        raise UnsupportedError(
            f"{what}: a masked array (numpy.ma.MaskedArray, {masked} of {x.size} entries "
            "masked); gradc does not read masks: pass x.filled(value) to choose what the "
            "masked entries are, or np.asarray(x) to use the data under the mask")


def _convert(name, x, t):
    refuse_masked(f"argument {name!r}", x)
    want = np.dtype(NUMPY_DTYPE[t.dtype])
    if isinstance(x, numbers.Number) and not isinstance(x, np.generic):
        arr = np.asarray(_python_number(name, x, t, want), dtype=want)
    else:
        try:
            arr = np.asarray(x)
        except Exception as e:
            raise TypeError(f"argument {name!r}: cannot make an array of {type(x).__name__}: {e}")
        if arr.dtype == object or not np.can_cast(arr.dtype, want, casting="safe"):
            raise TypeError(f"argument {name!r}: dtype {arr.dtype} does not convert to {t} "
                            "without loss; convert it explicitly (e.g. x.astype(np."
                            f"{want.name}))")
        if arr.dtype.kind in "iu" and want.kind == "f":
            _exact_integers(name, arr, want, t)
        arr = arr.astype(want, copy=False)
    if arr.shape != t.shape and not (t.symbolic and fits(arr.shape, t.shape)):
        raise ValueError(f"argument {name!r}: shape {arr.shape} does not match the declared "
                         f"{t} (shape {_spec_text(t.shape)})")
    return arr


def _spec_text(shape) -> str:
    """(N, 3): a declared shape, dimension names unquoted."""
    inner = ", ".join(map(str, shape))
    return f"({inner},)" if len(shape) == 1 else f"({inner})"


def copy_flag(value) -> bool:
    """The `copy=` keyword of a compiled call: True or False (a NumPy bool too), nothing else
    (copy="no" would read as True)."""
    if type(value) is bool or type(value) is np.bool_:
        return bool(value)
    raise TypeError(f"copy must be True or False, got {value!r} (a {type(value).__name__}, "
                    "not a bool)")


_I64 = (-(2 ** 63), 2 ** 63 - 1)


def _python_number(name, x, t, want):
    """A Python number as the input's dtype, or an error naming the argument: an int becomes
    an i64 or a float only when that dtype holds it exactly, a float becomes a float dtype
    (rounded to the nearest f32, refused where that would be inf or 0), a bool only a bool,
    and a complex number nothing."""
    if isinstance(x, numbers.Complex) and not isinstance(x, numbers.Real):
        raise TypeError(f"argument {name!r}: got complex {x!r}, expected {t}; gradc computes "
                        "with real numbers")
    if not isinstance(x, numbers.Real):
        raise TypeError(f"argument {name!r}: got {type(x).__name__} {x!r}, expected {t}; pass "
                        "a float or an int")
    if isinstance(x, bool) or t.dtype == "bool":
        if t.dtype == "bool" and (isinstance(x, bool) or (isinstance(x, numbers.Integral)
                                                         and x in (0, 1))):
            return bool(x)
        raise TypeError(f"argument {name!r}: got {'a bool' if isinstance(x, bool) else repr(x)}"
                        f", expected {t}")
    if t.dtype == "i64":
        if not isinstance(x, numbers.Integral):
            raise TypeError(f"argument {name!r}: got {type(x).__name__} {x!r}, expected {t}")
        if not _I64[0] <= x <= _I64[1]:
            raise ValueError(f"argument {name!r}: {_show(x)} is outside the i64 range "
                             f"[-2**63, 2**63 - 1]")
        return int(x)
    try:
        f = float(x)
    except OverflowError:
        raise ValueError(f"argument {name!r}: {_show(x)} is too large for {t} (beyond the "
                         "largest float)") from None
    with np.errstate(over="ignore", under="ignore"):
        v = want.type(f)
    if isinstance(x, numbers.Integral):
        if not np.isfinite(v) or int(v) != x:
            raise ValueError(f"argument {name!r}: the integer {_show(x)} is not exactly "
                             f"representable as {t} (nearest: {float(v)!r}); pass a float if "
                             "rounding is meant")
    elif f != x and isinstance(x, numbers.Rational):      # a Fraction that f64 does not hold
        raise ValueError(f"argument {name!r}: {x} is not exactly representable as {t}; pass "
                         "float(x) if rounding is meant")
    elif np.isfinite(f) and (not np.isfinite(v) or (v == 0 and f != 0)):
        raise ValueError(f"argument {name!r}: {x!r} is outside the {t.dtype} range (it would "
                         f"become {float(v)!r}); use an f64 input or scale the value")
    return v


def _show(x) -> str:
    text = str(x)
    return text if len(text) <= 40 else f"an integer of {len(text.lstrip('-'))} digits"


def _exact_integers(name, arr, want, t) -> None:
    """An integer array converted to a float dtype keeps every value (int64 beyond 2**53 does
    not fit f64 exactly, though NumPy calls the cast safe): a ValueError at the first loss."""
    if arr.size == 0 or np.iinfo(arr.dtype).max <= 2 ** (np.finfo(want).nmant + 1):
        return
    limit = 2 ** (np.finfo(want).nmant + 1)
    big = np.flatnonzero((arr > limit) | (arr < -limit) if arr.dtype.kind == "i" else arr > limit)
    flat = arr.reshape(-1)
    for i in big:                 # few values are this large: compare them as Python ints
        v = int(flat[i])
        if int(want.type(v)) != v:
            idx = np.unravel_index(i, arr.shape)
            where = f" at index {tuple(int(k) for k in idx)}" if arr.ndim else ""
            raise ValueError(f"argument {name!r}: the {arr.dtype} value {v}{where} is not exactly "
                             f"representable as {t}; convert it explicitly (x.astype(np."
                             f"{want.name})) if rounding is meant")
