"""Linear algebra: the 2-D matmul primitive (`@` on 1-D operands reshapes around it).

Matmul is bilinear, so both of its gate rules come from one declaration: for Y = A·B,
dA = G·Bᵀ and dB = Aᵀ·G (the lecture's dX = dY·Wᵀ, dW = Xᵀ·dY).  No Jacobian is formed.
"""
from __future__ import annotations

import numpy as np

from .. import builder as B
from ..codegen.forms import MUL, infix
from ..ir import ShapeError, TensorType
from . import EVAL_RULES, GATE_RULES, NUMPY_EMITTERS, SHAPE_RULES, SYMPY_RULES, gate


def bilinear(product, transpose, names=("A", "B")):
    """Gate rules of a bilinear Y = product(A, B): dA = product(G, Bᵀ), dB = product(Aᵀ, G)."""
    a, b = names
    return gate(f"dA = G·{b}ᵀ", lambda g, out, x, y: product(g, transpose(y)),
                f"dB = {a}ᵀ·G", lambda g, out, x, y: product(transpose(x), g))


def _matmul_type(ins):
    a, b = ins
    if a.ndim != 2 or b.ndim != 2:
        raise ShapeError(f"matmul: the primitive takes 2-D operands, got {a.shape} and {b.shape}")
    if a.shape[1] != b.shape[0]:
        raise ShapeError(f"matmul: shapes {a.shape} and {b.shape} do not chain "
                         f"({a.shape[1]} != {b.shape[0]})")
    if a.dtype != b.dtype or a.dtype not in ("f32", "f64"):
        raise ShapeError(f"matmul: needs two float operands of one dtype, got {a} and {b}")
    return TensorType(a.dtype, (a.shape[0], b.shape[1]))


SHAPE_RULES["matmul"] = _matmul_type
EVAL_RULES["matmul"] = np.matmul
GATE_RULES["matmul"] = bilinear(B.matmul, B.transpose)
SYMPY_RULES["matmul"] = lambda a, b: np.asarray(a.dot(b), dtype=object)
NUMPY_EMITTERS["matmul"] = infix("@", MUL)
