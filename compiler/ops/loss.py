"""Softmax, log-softmax and the lecture's two losses, plus the label ops their gate rules use.

Stable by construction: softmax and log-softmax subtract the maximum before exp, and the cross
entropy goes through log-softmax (log-sum-exp), so logits of ±1e4 give finite losses and exact
gradients.  Both losses average over the N rows of `scores` [N, C] with `labels` i64[N].
"""
from __future__ import annotations

import numpy as np
from ..lazy import sympy as sp

from .. import builder as B
from ..codegen import llvm_reduce as LR
from ..codegen import numpy_helpers as H
from ..codegen.forms import ATOM, Expr, helper, wrap
from ..ir import NUMPY_DTYPE, ShapeError, TensorType
from .attrs import DTYPE, INT, REAL
from .record import declare, gate
from .reduce import count


# ---- reference implementations shared with the emitted module (keep them self-contained) ---
def softmax(x, axis=-1):     # initial: an empty axis (N = 0) gives an empty result
    e = np.exp(x - np.max(x, axis=axis, keepdims=True, initial=-np.inf))
    return e / np.sum(e, axis=axis, keepdims=True)


def log_softmax(x, axis=-1):
    z = x - np.max(x, axis=axis, keepdims=True, initial=-np.inf)
    return z - np.log(np.sum(np.exp(z), axis=axis, keepdims=True))


def softmax_cross_entropy(scores, labels):
    logp = log_softmax(scores, axis=1)
    return -np.mean(logp[np.arange(len(labels)), labels])


def svm_loss(scores, labels, margin=1.0):
    n = len(labels)
    correct = scores[np.arange(n), labels][:, None]
    margins = np.maximum(0, scores - correct + margin)
    margins[np.arange(n), labels] = 0
    return np.sum(margins) / n


# ---- shape rules --------------------------------------------------------------------------
def _axis_type(op):
    def rule(ins, axis):
        (t,) = ins
        if t.dtype not in ("f32", "f64") or not 0 <= axis < t.ndim:
            raise ShapeError(f"{op}: needs a float value with axis {axis}, got {t}")
        return t
    return rule


def _labels_check(op, scores, labels):
    if scores.ndim != 2 or scores.dtype not in ("f32", "f64"):
        raise ShapeError(f"{op}: scores must be a float [N, C] matrix, got {scores}")
    if not isinstance(scores.shape[1], int):
        raise ShapeError(f"{op}: the number of classes (axis 1 of scores {scores.shape}) is "
                         "known only at run time; labels are checked against a fixed number of "
                         "classes")
    if labels.dtype != "i64" or labels.shape != scores.shape[:1]:
        raise ShapeError(f"{op}: labels must be i64[{scores.shape[0]}] (one class index per row "
                         f"of scores {scores.shape}), got {labels}")


def _loss_type(op):
    def rule(ins, **attrs):
        _labels_check(op, *ins)
        return TensorType(ins[0].dtype, ())
    return rule


def _pick_type(ins):
    _labels_check("pick", *ins)
    return TensorType(ins[0].dtype, ins[0].shape[:1])


def _onehot_type(ins, depth, dtype):
    (t,) = ins
    if t.dtype != "i64":
        raise ShapeError(f"onehot: labels must be i64, got {t}")
    return TensorType(dtype, t.shape + (depth,))


# ---- gate rules ---------------------------------------------------------------------------
def _n_rows(scores) -> int:
    return scores.shape[0]


def _xent_gate(g, out, scores, labels):
    n, c = scores.shape
    return (B.softmax(scores, axis=1) - B.onehot(labels, c, scores.dtype)) * (g / count(scores, (0,)))


def _svm_gate(g, out, scores, labels, margin):
    n, c = scores.shape
    hot = B.onehot(labels, c, scores.dtype)
    margins = scores - B.reshape(B.pick(scores, labels), (n, 1)) + margin
    active = B.cast(margins > 0, scores.dtype) * (1 - hot)
    return (active - hot * B.sum(active, axis=1, keepdims=True)) * (g / count(scores, (0,)))


def _pick_gate(g, out, x, labels):
    n, c = x.shape
    return B.onehot(labels, c, x.dtype) * B.reshape(g, (n, 1))


# ---- SymPy meanings (labels arrive as concrete integers) ----------------------------------
def _sym_softmax(x, axis):
    e = np.vectorize(sp.exp, otypes=[object])(x)
    return e / np.sum(e, axis=axis, keepdims=True)


def _sym_log_softmax(x, axis):
    e = np.vectorize(sp.exp, otypes=[object])(x)
    return x - np.vectorize(sp.log, otypes=[object])(np.sum(e, axis=axis, keepdims=True))


def _sym_pick(x, labels):
    return np.asarray([x[i, int(labels[i])] for i in range(x.shape[0])], dtype=object)


def _sym_xent(scores, labels):
    logp = _sym_log_softmax(scores, 1)
    return np.asarray(-np.sum(_sym_pick(logp, labels)) / scores.shape[0], dtype=object)


def _sym_svm(scores, labels, margin):
    n, c = scores.shape
    total = sp.Integer(0)
    for i in range(n):
        y = int(labels[i])
        total += sum(sp.Max(0, scores[i, j] - scores[i, y] + sp.nsimplify(margin))
                     for j in range(c) if j != y)
    return np.asarray(total / n, dtype=object)


def _sym_onehot(labels, depth, dtype):
    out = np.empty(labels.shape + (depth,), dtype=object)
    for idx in np.ndindex(*labels.shape):
        for k in range(depth):
            out[idx + (k,)] = sp.Integer(1 if int(labels[idx]) == k else 0)
    return out


# ---- label operands: (position, classes); the labels index the columns of scores [N, C] ----
def _row_labels(node):
    return 1, node.inputs[0].shape[1]


def _onehot_labels(node):
    return 0, node.attrs["depth"]


def _pick_text(args, attrs, node):
    return f"{wrap(args[0], ATOM, False)}[np.arange({node.inputs[0].shape[0]}), {args[1][0]}]"


def _onehot_text(args, attrs, node):
    return (f"np.eye({attrs['depth']}, dtype=np.{NUMPY_DTYPE[attrs['dtype']]})"
            f"[{args[0][0]}]")


declare("softmax",
        shape=_axis_type("softmax"),
        attrs={"axis": INT},
        eval=softmax,
        gate=gate("dx = y·(G − Σ G·y)",
                  lambda g, out, x, axis: out * (g - B.sum(g * out, axis, keepdims=True))),
        sympy=_sym_softmax,
        numpy=helper(H.softmax, "axis"),
        llvm=LR.lower_softmax(False),
        bounded=True, nonneg=True)

declare("log_softmax",
        shape=_axis_type("log_softmax"),
        attrs={"axis": INT},
        eval=log_softmax,
        gate=gate("dx = G − softmax(x)·Σ G",
                  lambda g, out, x, axis: g - B.exp(out) * B.sum(g, axis, keepdims=True)),
        sympy=_sym_log_softmax,
        numpy=helper(H.log_softmax, "axis"),
        llvm=LR.lower_softmax(True))

declare("softmax_cross_entropy",
        shape=_loss_type("softmax_cross_entropy"),
        eval=softmax_cross_entropy,
        gate=gate("dscores = (softmax(scores) − onehot(labels))·G/N",
                  _xent_gate, None),
        sympy=_sym_xent,
        numpy=helper(H.softmax_cross_entropy,
                     also=(H.log_softmax,)),
        llvm=LR.Lowering(LR.lower_xent),
        label=_row_labels,
        ordered=True)

declare("svm_loss",
        shape=_loss_type("svm_loss"),
        attrs={"margin": REAL},
        eval=svm_loss,
        gate=gate("dscores = ([margin > 0] − onehot·Σ[margin > 0])·G/N",
                  _svm_gate, None),
        sympy=_sym_svm,
        numpy=helper(svm_loss, "margin"),
        llvm=LR.Lowering(LR.lower_svm),
        label=_row_labels,
        ordered=True)

declare("pick",
        shape=_pick_type,
        eval=lambda x, labels: x[np.arange(len(labels)), labels],
        gate=gate("dx = onehot(labels)·G", _pick_gate, None),
        sympy=_sym_pick,
        numpy=Expr(_pick_text),
        llvm=LR.Lowering(LR.lower_pick),
        label=_row_labels,
        ordered=True)

declare("onehot",
        shape=_onehot_type,
        attrs={"depth": INT, "dtype": DTYPE},
        eval=lambda labels, depth, dtype: np.eye(depth, dtype=NUMPY_DTYPE[dtype])[labels],
        gate=gate(None),
        sympy=_sym_onehot,
        numpy=Expr(_onehot_text),
        llvm=LR.Lowering(LR.lower_onehot),
        label=_onehot_labels,
        selects=True, bounded=True, nonneg=True)
