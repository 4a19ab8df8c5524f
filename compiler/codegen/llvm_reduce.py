"""LLVM lowerings of the reductions (sum, mean, max over axes, keepdims), softmax and
log-softmax along an axis, the two losses and the label ops (pick, onehot).

A reduction loops over its operand in memory order, accumulating into the output through a
view with stride 0 along the reduced axes.  Where the innermost (collapsed) axis is reduced,
the accumulator is a register for that loop (`reassoc` lets the vectorizer split the sum).
sum/mean start at 0, max at −inf with a NaN-propagating maximum (NaN propagates, as np.max); mean divides
by the count at the end.

softmax(x)ᵢ = e^(xᵢ−m)/Σⱼe^(xⱼ−m), log_softmax(x)ᵢ = (xᵢ − m) − log Σⱼe^(xⱼ−m), m = maxⱼ xⱼ.
softmax_cross_entropy = −(1/N)·Σᵣ log_softmax(scoresᵣ)[yᵣ];
svm_loss = (1/N)·Σᵣ Σ_{j≠yᵣ} max(0, s_rj − s_ryᵣ + margin).
A label outside [0, C) reads nothing (NaN, or an all-zero row for onehot); no such label gets
here: inputs are checked before the graph's function runs, computed labels right after the
values they depend on (llvm_labels.py), from the op records' `label` rules.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from llvmlite import ir

from . import llvm_math as M
from .llvm_dims import count_value
from .llvm_types import View, const_i64, contiguous_strides

REASSOC = ("reassoc", "contract")


@dataclass(frozen=True)
class Lowering:
    fn: object

    @property
    def runtime_sizes(self) -> bool:
        """Whether the lowering takes run-time sizes (llvm_dims.py): its function says so."""
        return getattr(self.fn, "runtime_sizes", False)

    def lower(self, em, node):
        self.fn(em, node)


def runtime_sized(fn):
    """Marks a lowering function as handling run-time sizes (llvm_dims.py)."""
    fn.runtime_sizes = True
    return fn


def _is_float(v) -> bool:
    return v.dtype in ("f32", "f64")


def _combine(kind, em, acc, x):
    b = em.b
    if kind == "max":
        return M.maximum(b, acc, x)
    if isinstance(x.type, ir.IntType):
        return b.add(acc, x)
    return b.fadd(acc, x, flags=REASSOC)


class Size:
    """size(x; axes): the number of elements over `axes` (a constant; a product of the call's
    sizes for dimension names), filled into the scalar output."""
    runtime_sizes = True

    def lower(self, em, node):
        x, ty = node.inputs[0], em.ll(node.out.dtype)
        n = 1
        for a in node.attrs["axes"]:
            n *= x.shape[a]
        em.fill(node.out, count_value(em, n, ty))


class Reduce:
    """sum, mean or max over `axes`.  `reduce_with` also serves a fusion group closed by the
    reduction: the reduced values are computed in the loop instead of loaded."""
    runtime_sizes = True

    def __init__(self, kind: str):
        self.kind = kind

    def lower(self, em, node):
        x = node.inputs[0]
        self.reduce_with(em, node, [View(x, 0, contiguous_strides(x.shape))],
                         lambda idx: em.load(x, idx[0]))

    def reduce_with(self, em, node, sources, value):
        """out = reduce(value(indices of `sources` at each element of the operand's shape));
        `sources` are views with strides over the reduction operand's shape."""
        x, out = node.inputs[0], node.out
        axes = tuple(node.attrs["axes"])
        ty = em.ll(out.dtype)
        init = (ir.Constant(ty, -math.inf) if self.kind == "max"
                else ir.Constant(ty, 0.0 if _is_float(out) else 0))
        em.fill(out, init)
        keep = tuple(1 if k in axes else d for k, d in enumerate(x.shape))
        ostr = tuple(0 if k in axes else s for k, s in enumerate(contiguous_strides(keep)))
        views = [View(out, 0, ostr)] + list(sources)
        op = "max" if self.kind == "max" else "sum"

        def inner(idx, count, strides):
            b = em.b

            def at(i):
                return [ix if st == 0 else b.add(ix, b.mul(i, const_i64(st)))
                        for ix, st in zip(idx, strides)]
            if strides[0] == 0:            # innermost axis reduced: accumulate in a register
                acc = em.var(ty, em.load(out, idx[0]))
                with em.loop(count, "r") as i:
                    b.store(_combine(op, em, em.get(acc, ty), value(at(i)[1:])), acc)
                em.store(em.get(acc, ty), out, idx[0])
                return
            with em.loop(count, "j") as i:
                ix = at(i)
                em.store(_combine(op, em, em.load(out, ix[0]), value(ix[1:])), out, ix[0])
        em.nest(x.shape, views, None, inner=inner)
        if self.kind == "mean":
            count = 1
            for a in axes:
                count *= x.shape[a]
            n = count_value(em, count, ty)
            em.nest(out.shape, [em.view(out)],
                    lambda idx: em.store(em.b.fdiv(em.load(out, idx[0]), n), out, idx[0]))


# ---- softmax and log-softmax --------------------------------------------------------------
def _rows(em, shape, axis, body):
    """For every line along `axis`: body(base index, count, stride)."""
    outer = 1
    for d in shape[:axis]:
        outer *= d
    inner = 1
    for d in shape[axis + 1:]:
        inner *= d
    n = shape[axis]
    if outer == 0 or inner == 0:
        return
    b = em.b
    with em.loop(outer, "o") as o:
        with em.loop(inner, "k") as k:
            base = b.add(b.mul(o, const_i64(n * inner)), k)
            body(base, n, inner)


def _line_max(em, x, base, n, stride):
    b = em.b
    ty = em.ll(x.dtype)
    m = em.var(ty, ir.Constant(ty, -math.inf))
    with em.loop(n, "j") as j:
        v = em.load(x, b.add(base, b.mul(j, const_i64(stride))))
        b.store(M.maximum(b, em.get(m, ty), v), m)
    return em.get(m, ty)


def lower_softmax(log: bool):
    @runtime_sized
    def lower(em, node):
        x, out = node.inputs[0], node.out
        ty = em.ll(x.dtype)
        exp, logf = M.widened(M.exp), M.widened(M.log)

        def body(base, n, stride):
            b = em.b
            m = _line_max(em, x, base, n, stride)
            s = em.var(ty, ir.Constant(ty, 0.0))
            with em.loop(n, "j") as j:
                at = b.add(base, b.mul(j, const_i64(stride)))
                e = exp(b, b.fsub(em.load(x, at), m))
                if not log:
                    em.store(e, out, at)
                b.store(b.fadd(em.get(s, ty), e, flags=REASSOC), s)
            total = em.get(s, ty, name=f"{em.ident[out.name]}.sum")
            lse = logf(b, total) if log else None
            with em.loop(n, "j") as j:
                at = b.add(base, b.mul(j, const_i64(stride)))
                y = (b.fsub(b.fsub(em.load(x, at), m), lse) if log
                     else b.fdiv(em.load(out, at), total))
                em.store(y, out, at)
        _rows(em, x.shape, node.attrs["axis"], body)
    return Lowering(lower)


# ---- losses and label ops -----------------------------------------------------------------
def _label_at(em, labels, r, c):
    """(in range?, a safe index) of labels[r] for c classes."""
    b = em.b
    y = em.load(labels, r)
    ok = b.and_(b.icmp_signed(">=", y, const_i64(0)), b.icmp_signed("<", y, const_i64(c)))
    return ok, b.select(ok, y, const_i64(0))


def _pick_row(em, x, r, ok, y, c):
    b = em.b
    v = em.load(x, b.add(b.mul(r, const_i64(c)), y))
    return b.select(ok, v, ir.Constant(v.type, math.nan))


@runtime_sized
def lower_xent(em, node):
    scores, labels = node.inputs
    out = node.out
    n, c = scores.shape
    ty = em.ll(out.dtype)
    exp, logf = M.widened(M.exp), M.widened(M.log)
    b = em.b
    total = em.var(ty, ir.Constant(ty, 0.0))
    with em.loop(n, "r") as r:
        base = b.mul(r, const_i64(c))
        m = _line_max(em, scores, base, c, 1)
        s = em.var(ty, ir.Constant(ty, 0.0))
        with em.loop(c, "j") as j:
            e = exp(b, b.fsub(em.load(scores, b.add(base, j)), m))
            b.store(b.fadd(em.get(s, ty), e, flags=REASSOC), s)
        ok, y = _label_at(em, labels, r, c)
        logp = b.fsub(b.fsub(_pick_row(em, scores, r, ok, y, c), m), logf(b, em.get(s, ty)))
        b.store(b.fadd(em.get(total, ty), logp), total)
    loss = b.fdiv(b.fneg(em.get(total, ty)), count_value(em, n, ty),
                  name=em.ident[out.name] + ".value")
    em.store(loss, out, const_i64(0))


@runtime_sized
def lower_svm(em, node):
    scores, labels = node.inputs
    out = node.out
    n, c = scores.shape
    ty = em.ll(out.dtype)
    b = em.b
    zero = ir.Constant(ty, 0.0)
    margin = ir.Constant(ty, float(node.attrs["margin"]))
    total = em.var(ty, zero)
    with em.loop(n, "r") as r:
        ok, y = _label_at(em, labels, r, c)
        correct = _pick_row(em, scores, r, ok, y, c)
        base = b.mul(r, const_i64(c))
        with em.loop(c, "j") as j:
            d = b.fadd(b.fsub(em.load(scores, b.add(base, j)), correct), margin)
            h = M.maximum(b, zero, d)
            h = b.select(b.icmp_signed("==", j, y), zero, h)
            b.store(b.fadd(em.get(total, ty), h), total)
    em.store(b.fdiv(em.get(total, ty), count_value(em, n, ty)), out, const_i64(0))


@runtime_sized
def lower_pick(em, node):
    x, labels = node.inputs
    n, c = x.shape
    with em.loop(n, "r") as r:
        ok, y = _label_at(em, labels, r, c)
        em.store(_pick_row(em, x, r, ok, y, c), node.out, r)


@runtime_sized
def lower_onehot(em, node):
    labels = node.inputs[0]
    depth = node.attrs["depth"]
    out = node.out
    ty = em.ll(out.dtype)
    one = ir.Constant(ty, 1.0 if _is_float(out) else 1)
    zero = ir.Constant(ty, 0.0 if _is_float(out) else 0)
    b = em.b
    with em.loop(labels.type.size, "r") as r:
        y = em.load(labels, r)
        with em.loop(depth, "k") as k:
            v = b.select(b.icmp_signed("==", y, k), one, zero)
            em.store(v, out, b.add(b.mul(r, const_i64(depth)), k))
