"""The helper functions an emitted NumPy module defines at its top (their source is copied in).

The same math as the ops' reference evaluations (compiler/ops/loss.py), written with array
methods (`x.max(axis=axis, keepdims=True)`), which skip the Python-level dispatch of `np.max`
and `np.sum`: about a microsecond per reduction, which is most of a small softmax's cost.  The
tests compare every emitted module against the reference interpreter.
"""
from __future__ import annotations

import numpy as np


def softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True, initial=-np.inf))   # an empty axis: empty
    return e / e.sum(axis=axis, keepdims=True)


def log_softmax(x, axis=-1):
    z = x - x.max(axis=axis, keepdims=True, initial=-np.inf)
    return z - np.log(np.exp(z).sum(axis=axis, keepdims=True))


def softmax_cross_entropy(scores, labels):
    logp = log_softmax(scores, axis=1)
    return -logp[np.arange(len(labels)), labels].sum() / len(labels)


def where_or_zero(cond, x, out=None):
    """np.where(cond, x, 0.0), bit for bit, selected through the bits: `x & -cond` on the
    integer view (a kept element keeps every bit, NaN and inf included; a dropped one becomes
    +0.0).  No branch per element, so a random mask (a relu's) costs what a multiply does, 4×
    less than np.where's select; `out` (x's dtype and shape) receives the result."""
    if out is not None and x.dtype != out.dtype:   # x is a broadcast Python float (f64) in
        x = x.astype(out.dtype)                    # an f32 graph (a sum gate's 1.0)
    bits = np.int64 if x.itemsize == 8 else np.int32      # f64 or f32
    got = np.bitwise_and(x.view(bits), -cond.view(np.int8),
                         out=None if out is None else out.view(bits))
    return got.view(x.dtype)


class LabelError(ValueError):
    """A class label outside [0, classes) of the op that reads it (in a module gradc runs, this
    name is compiler.LabelError; see compiler/ops/labels.py, which raises it)."""
