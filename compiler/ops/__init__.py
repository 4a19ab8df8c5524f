"""The op table: every primitive is declared once, as one record `OPS[name]` (an `OpRecord`,
compiler/ops/record.py), on consecutive lines of its family module (elementwise, reduce,
linalg, shape, loss).  The record holds the op's rules (shape/dtype rule, reference
evaluation, gate rule, SymPy meaning, NumPy emitter, LLVM lowering, attributes, label operand)
and the traits the rest of the compiler asks about (elementwise, view, reduction, selects,
NumPy `out=` ufunc, plannable, bounded, ...).  Passes, backends, the runtime and the checks ask
the record (`OPS[n.op].view`); `tests/test_op_table.py` walks every field and trait of every
record and fails on a missing or inconsistent one.

The LLVM lowerings are objects from compiler/codegen/llvm_lower.py, llvm_reduce.py and
llvm_shape.py, which import only llvmlite and codegen/llvm_types.py (never the emitter), so
declaring the ops loads neither the emitter nor the passes.
"""
from __future__ import annotations

from .record import OPS, RULES, TRAITS, Each, OpRecord, declare, gate, known_ops  # noqa: F401

from . import elementwise, reduce, linalg, shape, loss  # noqa: E402,F401  (declares the records)
from . import array  # noqa: E402,F401  (concatenate, gathers and their scatter-add transposes)
from . import special  # noqa: E402,F401  (stop_gradient, const_array)
from . import conv  # noqa: E402,F401  (convolution, pooling and their gate convolutions)
