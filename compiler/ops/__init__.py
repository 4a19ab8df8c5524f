"""The op table: every primitive is declared once, as one record `OPS[name]` (an `OpRecord`,
compiler/ops/record.py), on consecutive lines of its family module (elementwise, reduce,
linalg, shape, loss).  The record holds the op's rules (shape/dtype rule, reference
evaluation, gate rule, SymPy meaning, NumPy emitter, LLVM lowering, attributes, label operand)
and the traits the rest of the compiler asks about (elementwise, view, reduction, selects,
NumPy `out=` ufunc, plannable, bounded, ...).  Passes, backends, the runtime and the checks ask
the record (`OPS[n.op].view`); `tests/test_op_table.py` walks every field and trait of every
record and fails on a missing or inconsistent one.

Transitional: SHAPE_RULES, EVAL_RULES, GATE_RULES, SYMPY_RULES, NUMPY_EMITTERS, LABEL_RULES (and
ops.attrs.ATTRS) are read-only views `op -> OPS[op].<field>` for callers not yet migrated.
"""
from __future__ import annotations

from .record import OPS, RULES, TRAITS, FieldView, OpRecord, declare  # noqa: F401

SHAPE_RULES = FieldView("shape")
EVAL_RULES = FieldView("eval")
GATE_RULES = FieldView("gate")
SYMPY_RULES = FieldView("sympy")
NUMPY_EMITTERS = FieldView("numpy")
LABEL_RULES = FieldView("label", only_set=True)


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


from . import elementwise, reduce, linalg, shape, loss  # noqa: E402,F401  (fills the tables)

# The LLVM lowerings are still tabled beside the emitter (codegen/llvm_lower.py: LLVM_LOWERINGS);
# each record's `llvm` field is filled from that table here.
from ..codegen.llvm_lower import LLVM_LOWERINGS  # noqa: E402
from dataclasses import replace as _replace  # noqa: E402
for _op, _lowering in LLVM_LOWERINGS.items():
    OPS[_op] = _replace(OPS[_op], llvm=_lowering)
