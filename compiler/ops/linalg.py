"""Linear algebra: the 2-D matmul primitive (`@` on 1-D operands reshapes around it) and
batch_matmul, np.matmul on stacks of matrices (`@` with an operand of rank >= 3; the DSL's
builder_linalg.py pads ranks, and a stack times one matrix is one 2-D matmul instead).

Matmul is bilinear, so both of its gate rules come from one declaration: for Y = A·B,
dA = G·Bᵀ and dB = Aᵀ·G (the lecture's dX = dY·Wᵀ, dW = Xᵀ·dY).  No Jacobian is formed.

Two optional bool attrs, `transpose_a` and `transpose_b` (absent = False), make the primitive
Y = op(A)·op(B) with op(X) = Xᵀ when the flag is set.  The model and the gate rules never set
them; the transpose-folding pass (compiler/passes/transpose.py) does, so the NumPy code reads
`X.T @ dscores` (a view) and the LLVM backend passes BLAS transpose flags instead of copying.
"""
from __future__ import annotations

import numpy as np

from .. import builder as B
from ..codegen import llvm_batch as LB
from ..codegen import llvm_shape as LS
from ..codegen.forms import ATOM, MUL, Expr, into_matmul, wrap
from ..ir import ShapeError, TensorType
from .record import declare, gate
from .attrs import BOOL, optional
from .common import broadcast_shapes


def bilinear(product, transpose, names=("A", "B")):
    """Gate rules of a bilinear Y = product(op(A), op(B)): dA = product(G, op(B)ᵀ) and
    dB = product(op(A)ᵀ, G); with a transpose flag set the rule is transposed too:
    dA = product(op(B), Gᵀ) when Y = Aᵀ·op(B), and dB = product(Gᵀ, op(A)) when Y = op(A)·Bᵀ."""
    a, b = names

    def op(x, flag):        # op(X): the operand as the product sees it
        return transpose(x) if flag else x

    def op_t(x, flag):      # op(X)ᵀ, written without a double transpose
        return x if flag else transpose(x)

    def d_a(g, out, x, y, transpose_a=False, transpose_b=False):
        if transpose_a:
            return product(op(y, transpose_b), transpose(g))
        return product(g, op_t(y, transpose_b))

    def d_b(g, out, x, y, transpose_a=False, transpose_b=False):
        if transpose_b:
            return product(transpose(g), op(x, transpose_a))
        return product(op_t(x, transpose_a), g)
    return gate(f"dA = G·{b}ᵀ", d_a, f"dB = {a}ᵀ·G", d_b)


def _flagged(x, flag):
    return x.T if flag else x


def _matmul_type(ins, transpose_a=False, transpose_b=False):
    a, b = ins
    if transpose_a and a.ndim == 2:
        a = TensorType(a.dtype, a.shape[::-1])
    if transpose_b and b.ndim == 2:
        b = TensorType(b.dtype, b.shape[::-1])
    if a.ndim != 2 or b.ndim != 2:
        raise ShapeError(f"matmul: the primitive takes 2-D operands, got {a.shape} and {b.shape}")
    if a.shape[1] != b.shape[0]:
        raise ShapeError(f"matmul: shapes {a.shape} and {b.shape} do not chain "
                         f"({a.shape[1]} != {b.shape[0]})")
    if a.dtype != b.dtype or a.dtype not in ("f32", "f64"):
        raise ShapeError(f"matmul: needs two float operands of one dtype, got {a} and {b}")
    return TensorType(a.dtype, (a.shape[0], b.shape[1]))


declare("matmul",
        shape=_matmul_type,
        attrs={"transpose_a": optional(BOOL), "transpose_b": optional(BOOL)},
        eval=lambda a, b, transpose_a=False, transpose_b=False: np.matmul(
_flagged(a, transpose_a), _flagged(b, transpose_b)),
        gate=bilinear(B.matmul, B.transpose),
        sympy=lambda a, b, transpose_a=False, transpose_b=False: np.asarray(
_flagged(a, transpose_a).dot(_flagged(b, transpose_b)), dtype=object),
        numpy=Expr(lambda args, attrs, node: _matmul_text(args, attrs), MUL),
        llvm=LS.Matmul(LS.lower_matmul),
        into=into_matmul(),
        plannable=True, multilinear=True, ordered=True)


def _matmul_text(args, attrs) -> str:
    """`a @ b`, with `.T` on a flagged operand (`X.T @ dscores`: a view, never a copy)."""
    a, b = args
    left = (f"{wrap(a, ATOM, False)}.T" if attrs.get("transpose_a") else wrap(a, MUL, False))
    right = (f"{wrap(b, ATOM, False)}.T" if attrs.get("transpose_b") else wrap(b, MUL, True))
    return f"{left} @ {right}"


# ---- batched matmul: np.matmul for operands of rank >= 3 ----------------------------------
def swap_last(x):
    """Xᵀ of a stack of matrices: the last two axes swapped (a view in NumPy; a BLAS flag in
    LLVM, codegen/llvm_batch.py), the batch axes kept."""
    r = x.ndim
    return x.b.emit("transpose", [x], perm=tuple(range(r - 2)) + (r - 1, r - 2))


def batch_product(x, y):
    return x.b.emit("batch_matmul", [x, y])


def _batch_matmul_type(ins):
    a, b = ins
    if a.ndim < 3 or a.ndim != b.ndim:
        raise ShapeError(f"batch_matmul: the primitive takes two operands of one rank >= 3 "
                         f"(dsl's @ pads the batch axes), got {a.shape} and {b.shape}")
    if a.dtype != b.dtype or a.dtype not in ("f32", "f64"):
        raise ShapeError(f"batch_matmul: needs two float operands of one dtype, got {a} and {b}")
    if a.shape[-1] != b.shape[-2]:
        raise ShapeError(f"batch_matmul: shapes {a.shape} and {b.shape} do not chain "
                         f"({a.shape[-1]} != {b.shape[-2]})")
    batch = broadcast_shapes("batch_matmul", a.shape[:-2], b.shape[:-2])
    return TensorType(a.dtype, batch + (a.shape[-2], b.shape[-1]))


# Y[t] = A[t]·B[t] for every batch index t (a batch axis of size 1 broadcasts): the gate rules
# are matmul's, dA = G·Bᵀ and dB = Aᵀ·G per batch element; where an operand was broadcast
# along a batch axis, the autodiff pass sums its gradient over that axis (unbroadcast).
declare("batch_matmul",
        shape=_batch_matmul_type,
        eval=np.matmul,
        gate=bilinear(batch_product, swap_last),
        sympy=lambda a, b: np.asarray(np.matmul(a, b), dtype=object),
        numpy=Expr(lambda args, attrs, node: f"{wrap(args[0], MUL, False)} @ "
                                             f"{wrap(args[1], MUL, True)}", MUL),
        llvm=LB.BatchMatmul(LB.lower_batch_matmul),
        into=into_matmul(),
        plannable=True, multilinear=True, ordered=True)
