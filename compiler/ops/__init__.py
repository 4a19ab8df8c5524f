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

from .record import OPS, RULES, TRAITS, OpRecord, declare  # noqa: F401


def known_ops() -> str:
    return ", ".join(sorted(OPS))


def gate(*pairs):
    """`gate("dA = G·B", fa, "dB = G·A", fb)` -> ((text, fa), (text, fb)).  Pass `None` in place
    of a (text, fn) pair for an input that gets no gradient (integer labels, conditions)."""
    out, items = [], list(pairs)
    while items:
        head = items.pop(0)
        if head is None:
            out.append(None)
        else:
            out.append((head, items.pop(0)))
    return tuple(out)


from . import elementwise, reduce, linalg, shape, loss  # noqa: E402,F401  (declares the records)
