"""The LLVM types and small helpers the lowerings share with the emitter (llvm_emit.py).

The op records (compiler/ops/) hold their LLVM lowerings; the lowering modules (llvm_lower,
llvm_reduce, llvm_shape, llvm_math) import these from here, never the emitter, so declaring the
ops does not load the emitter or the passes it uses.
"""
from __future__ import annotations

from typing import NamedTuple

from llvmlite import ir

from ..ir import Value
from .llvm_dims import dim_value

VOID = ir.VoidType()
PTR = ir.PointerType()
I64 = ir.IntType(64)
I8 = ir.IntType(8)
I32 = ir.IntType(32)
LL_TYPES = {"f64": ir.DoubleType(), "f32": ir.FloatType(), "i64": I64, "bool": I8}


def const_i64(v):
    """The i64 constant v; a run-time size (a Dim: llvm_dims.py) becomes its value in the
    function being emitted."""
    if type(v) is not int and hasattr(v, "terms"):
        return dim_value(v)
    return ir.Constant(I64, int(v))


def contiguous_strides(shape) -> tuple:
    strides, acc = [], 1
    for d in reversed(shape):
        strides.append(acc)
        acc *= d
    return tuple(reversed(strides))


class View(NamedTuple):
    """Element (offset + Σ iₖ·strides[k]) of the buffer `value`."""
    value: Value
    offset: int
    strides: tuple
