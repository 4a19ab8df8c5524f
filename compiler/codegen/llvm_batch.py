"""LLVM lowering of batch_matmul: C[t] = op(A[t])·op(B[t]) for every batch index t.

A loop over the output's batch axes calls BLAS gemm once per matrix (runtime/blas.py binds
the symbols; the row-major/column-major swap of codegen/llvm_shape.py), with each operand's
pointer advanced by its own batch strides, 0 along an axis it broadcasts (size 1).  An
operand produced by a transpose that swaps the last two axes (the gate rules' Bᵀ and Aᵀ) is
read from that transpose's operand with gemm's 'T' flag, so no transposed copy is made
(`folds`).  A product of at most SMALL_PRODUCT multiply-adds is inline loops instead, cheaper
than a call per matrix (attention over a few short heads).

Run-time sizes (llvm_dims.py; `runtime_sizes`): any axis may be a Dim, the batch axes (the
loop's trip counts, the operands' batch strides) and the rows or columns of the matrices
(gemm's integers and leading dimensions, the inline loops' trip counts).  Where m·n·k then
depends on a run-time size, the kernel tests it against SMALL_PRODUCT when it runs and takes
the inline loops or the gemm calls (llvm_shape.size_test, `branch`), the choice the fixed
sizes make when the kernel is emitted.
"""
from __future__ import annotations

from llvmlite import ir

from .llvm_dims import Dim
from .llvm_shape import (BLAS_INT, Lowering, _gemm_decl, blas_or_loops, branch, check_blas_ints,
                         gemm_cell, size_test)
from .llvm_types import I8, View, const_i64, contiguous_strides

SMALL_PRODUCT = 1 << 11     # m·n·k up to this: inline loops per matrix instead of gemm


def swapped_source(em, value):
    """The value whose last two axes `value` swaps (the producer's lowering says), or None."""
    node = em.producers.get(value.name)
    fn = getattr(em.lowerings[node.op], "swap_of", None) if node is not None else None
    return fn(node) if fn else None


def _operand(em, value):
    """(buffer value, flag): the value read as is ('N'), or its swapped source ('T')."""
    src = swapped_source(em, value)
    return (value, "N") if src is None else (src, "T")


def _batch_strides(src, batch) -> tuple:
    """Element strides of `src` (a row-major stack of matrices) along the output's batch axes:
    0 where `src` broadcasts (size 1 against a longer axis)."""
    per = contiguous_strides(src.shape[:-2])
    mat = src.shape[-2] * src.shape[-1]
    return tuple(0 if d == 1 and t != 1 else s * mat
                 for d, t, s in zip(src.shape[:-2], batch, per))


def lower_batch_matmul(em, node):
    out = node.out
    (asrc, aflag), (bsrc, bflag) = _operand(em, node.inputs[0]), _operand(em, node.inputs[1])
    m, n = out.shape[-2:]
    k = node.inputs[0].shape[-1]
    batch = out.shape[:-2]
    if 0 in out.shape:
        return
    if k == 0:
        em.fill(out, ir.Constant(em.ll(out.dtype), 0.0))
        return
    views = [View(out, 0, _batch_strides(out, batch)), View(asrc, 0, _batch_strides(asrc, batch)),
             View(bsrc, 0, _batch_strides(bsrc, batch))]
    lda, ldb, ldc = (_ld(d) for d in (asrc.shape[-1], bsrc.shape[-1], n))
    check_blas_ints(out.name, node.loc, m=n, n=m, k=k, lda=ldb, ldb=lda, ldc=ldc)
    branch(em, blas_or_loops(size_test((m, n, k), SMALL_PRODUCT, em),
                             (m, n, k, lda, ldb, ldc), em),
           lambda: em.nest(batch, views, lambda idx: _small(em, out, (asrc, aflag),
                                                            (bsrc, bflag), m, n, k, idx)),
           lambda: _gemms(em, out, (asrc, aflag, lda), (bsrc, bflag, ldb), m, n, k, ldc, views))


def _ld(d):
    """A leading dimension for gemm: at least 1 (a Dim is: every run-time size is ≥ 1)."""
    return d if isinstance(d, Dim) else max(1, d)


def _gemms(em, out, a, bm, m, n, k, ldc, views):
    """One gemm call per batch element, C[t] = op(A[t])·op(B[t])."""
    (asrc, aflag, lda), (bsrc, bflag, ldb) = a, bm
    ty = em.ll(out.dtype)

    def cell(t, v, name):
        return gemm_cell(em, t, v, f"{em.ident[out.name]}.{name}")
    # gemm's own argument names: C[t] is column-major C[t]ᵀ = op(B[t])ᵀ·op(A[t])ᵀ
    head = [cell(I8, ord(bflag), "transa"), cell(I8, ord(aflag), "transb"),
            cell(BLAS_INT, n, "m"), cell(BLAS_INT, m, "n"), cell(BLAS_INT, k, "k"),
            cell(ty, 1.0, "alpha")]
    ld_b, ld_a = cell(BLAS_INT, ldb, "lda"), cell(BLAS_INT, lda, "ldb")
    beta, ldc = cell(ty, 0.0, "beta"), cell(BLAS_INT, ldc, "ldc")
    gemm = _gemm_decl(em, out.dtype)

    def body(idx):
        c, a, b = (em.address(v, i) for v, i in zip((out, asrc, bsrc), idx))
        em.b.call(gemm, head + [b, ld_b, a, ld_a, beta, c, ldc])
    em.nest(out.shape[:-2], views, body)


def _small(em, out, a, bm, m, n, k, idx):
    """C[t] = op(A[t])·op(B[t]) as loops over i, j and p, at the batch element's offsets."""
    b = em.b
    ty = em.ll(out.dtype)
    base_c, base_a, base_b = idx

    def elem(operand, base, rows, cols, r, c):   # op(X)[r, c], op(X) of shape (rows, cols)
        value, flag = operand
        at = (b.add(b.mul(r, const_i64(cols)), c) if flag == "N"
              else b.add(b.mul(c, const_i64(rows)), r))
        return em.load(value, b.add(base, at))
    zero = ir.Constant(ty, 0.0)
    with em.loop(m, "i") as i:
        with em.loop(n, "j") as j:
            acc = em.var(ty, zero)
            with em.loop(k, "p") as p:
                prod = b.fmul(elem(a, base_a, m, k, i, p), elem(bm, base_b, k, n, p, j),
                              flags=("contract",))
                b.store(b.fadd(em.get(acc, ty), prod, flags=("reassoc", "contract")), acc)
            em.store(em.get(acc, ty), out, b.add(base_c, b.add(b.mul(i, const_i64(n)), j)))


class BatchMatmul(Lowering):
    """batch_matmul; `folds(node)` names the operands read through gemm's transpose flag."""
    runtime_sizes = True          # any axis may be a run-time size (module docstring)

    def folds(self, em, node):
        return [v for v in node.inputs if swapped_source(em, v) is not None]
