"""LLVM lowerings of the array ops (compiler/ops/array.py): concatenate, the gathers by integer
indices and their scatter-add transposes.

concatenate copies each operand into its slab of the output (a strided copy: the output's
strides, offset by the operand's start along the axis).  The others are plain loops over
(P, I, Q): P the elements before the axis, I the indices along it, Q the elements after it,
reading (or adding into) row `idx` of the operand's N rows:

    gather                  out[p, j, q]  = x[p, idx[j], q]            (j over all of idx)
    scatter_add             out[p, idx[j], q] += g[p, j, q]            (out zeroed first)
    take_along_axis         out[p, j, q]  = x[p, idx[p, j, q], q]
    scatter_add_along_axis  out[p, idx[p, j, q], q] += g[p, j, q]

Every index is checked to lie in [0, N) before the graph's function reads it (the label checks,
llvm_labels.py, from the records' `label` rules); as a second guard the loops read row 0 for an
index outside [0, N) (and add 0), so no bad index ever reaches memory.

Run-time sizes (llvm_dims.py): every lowering here takes them.  The indexed axis N is always
a fixed size (the shape rules refuse a dimension name there: an index is checked against a
known bound), so the bound each index is compared with is a constant; P, I and Q, and
concatenate's strides and slab offsets, may be Dims: trip counts, strides and offsets then
come from the sizes, computed once before the loops (`const_i64`).
"""
from __future__ import annotations

from dataclasses import dataclass
from math import prod

from llvmlite import ir

from .llvm_types import View, const_i64, contiguous_strides


@dataclass(frozen=True)
class Lowering:
    fn: object
    runtime_sizes = True         # sizes may be Dims (module docstring)

    def lower(self, em, node):
        self.fn(em, node)


def lower_concatenate(em, node):
    out, axis = node.out, node.attrs["axis"]
    strides = contiguous_strides(out.shape)
    start = 0
    for x in node.inputs:
        em.copy(View(out, start * strides[axis], strides), em.view(x), x.shape)
        start += x.shape[axis]


def _index(em, idx, at, n):
    """idx[at] where it lies in [0, n), else 0 (unsigned: a negative index is huge); and
    whether it did."""
    b = em.b
    t = em.load(idx, at)
    ok = b.icmp_unsigned("<", t, const_i64(n))
    return b.select(ok, t, const_i64(0)), ok


def _add(em, dtype, a, v):
    return em.b.fadd(a, v) if dtype in ("f32", "f64") else em.b.add(a, v)


def _zero(em, value):
    return ir.Constant(em.ll(value.dtype), 0.0 if value.type.is_float else 0)


def _pnq(shape, axis):
    return prod(shape[:axis]), shape[axis], prod(shape[axis + 1:])


def lower_gather(em, node):
    x, idx = node.inputs
    p_, n, q_ = _pnq(x.shape, node.attrs["axis"])
    _gather_loops(em, node.out, x, idx, p_, n, q_, scatter=False)


def lower_scatter_add(em, node):
    g, idx = node.inputs
    p_, n, q_ = _pnq(node.attrs["shape"], node.attrs["axis"])
    em.fill(node.out, _zero(em, node.out))
    _gather_loops(em, node.out, g, idx, p_, n, q_, scatter=True)


def _gather_loops(em, out, src, idx, p_, n, q_, scatter):
    """gather (src = x [P, N, Q], out [P, I, Q]) or scatter_add (src = g [P, I, Q] added
    into out [P, N, Q])."""
    b = em.b
    if n == 0:                  # no valid index: the checks refuse every call with one
        return
    i_, q_ = const_i64(idx.type.size), const_i64(q_)       # (a Dim: its value, once)
    with em.loop(p_, "p") as p:
        with em.loop(i_, "j") as j:
            t, ok = _index(em, idx, j, n)
            wide = b.mul(b.add(b.mul(p, const_i64(n)), t), q_)
            narrow = b.mul(b.add(b.mul(p, i_), j), q_)
            with em.loop(q_, "q") as q:
                if scatter:
                    at = b.add(wide, q)
                    v = b.select(ok, em.load(src, b.add(narrow, q)), _zero(em, out))
                    em.store(_add(em, out.dtype, em.load(out, at), v), out, at)
                else:
                    em.store(em.load(src, b.add(wide, q)), out, b.add(narrow, q))


def lower_take_along_axis(em, node):
    x, idx = node.inputs
    p_, n, q_ = _pnq(x.shape, node.attrs["axis"])
    _along_loops(em, node.out, x, idx, (p_, n, idx.shape[node.attrs["axis"]], q_), False)


def lower_scatter_add_along_axis(em, node):
    g, idx = node.inputs
    p_, n, q_ = _pnq(node.attrs["shape"], node.attrs["axis"])
    em.fill(node.out, _zero(em, node.out))
    _along_loops(em, node.out, g, idx, (p_, n, idx.shape[node.attrs["axis"]], q_), True)


def _along_loops(em, out, src, idx, sizes, scatter):
    """take_along_axis (src = x [P, N, Q], out and idx [P, I, Q]) or scatter_add_along_axis
    (src = g and idx [P, I, Q] added into out [P, N, Q])."""
    b = em.b
    p_, n, i_, q_ = sizes
    if n == 0:
        return
    i_, q_ = const_i64(i_), const_i64(q_)                  # (a Dim: its value, once)
    with em.loop(p_, "p") as p:
        with em.loop(i_, "j") as j:
            row = b.mul(b.add(b.mul(p, i_), j), q_)
            with em.loop(q_, "q") as q:
                at = b.add(row, q)
                t, ok = _index(em, idx, at, n)
                wide = b.add(b.mul(b.add(b.mul(p, const_i64(n)), t), q_), q)
                if scatter:
                    v = b.select(ok, em.load(src, at), _zero(em, out))
                    em.store(_add(em, out.dtype, em.load(out, wide), v), out, wide)
                else:
                    em.store(em.load(src, wide), out, at)
