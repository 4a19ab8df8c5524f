"""The op table.  Every primitive is declared once, in one family module, on consecutive lines:

    SHAPE_RULES[op]     (input types, **attrs) -> output TensorType; raises ShapeError
    EVAL_RULES[op]      (*numpy arrays, **attrs) -> numpy array: the reference meaning
    GATE_RULES[op]      one (rule text, fn) per input, or None for an input with no gradient;
                        fn(g, out, *inputs, **attrs) builds the downstream gradient as IR
    SYMPY_RULES[op]     (*object arrays of SymPy expressions, **attrs) -> object array
    NUMPY_EMITTERS[op]  how the NumPy source emitter writes the op (see codegen/numpy_emit.py)
    ATTRS[op]           ops/attrs.py: attribute name -> kind (an op without an entry takes
                        none); `ir.verify` refuses unknown, missing and ill-typed attributes
    LABEL_RULES[op]     label ops only: node -> (operand position, classes): that operand holds
                        class indices, each checked to lie in [0, classes) (ops/labels.py)

The registries are plain dicts keyed by primitive name.  `tests/test_op_table.py` walks every
primitive and fails on a missing entry.
"""
from __future__ import annotations

SHAPE_RULES: dict = {}
EVAL_RULES: dict = {}
GATE_RULES: dict = {}
SYMPY_RULES: dict = {}
NUMPY_EMITTERS: dict = {}
LABEL_RULES: dict = {}

REGISTRIES = {"shape rule": SHAPE_RULES, "reference evaluation": EVAL_RULES,
              "gate rule": GATE_RULES, "SymPy meaning": SYMPY_RULES,
              "NumPy emitter": NUMPY_EMITTERS}


def known_ops() -> str:
    return ", ".join(sorted(SHAPE_RULES))


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

# LLVM_LOWERINGS[op]: how the LLVM emitter lowers the op (compiler/codegen/llvm_lower.py, kept
# beside the emitter for now; it belongs in the family modules above)
from ..codegen.llvm_lower import LLVM_LOWERINGS  # noqa: E402
REGISTRIES["LLVM lowering"] = LLVM_LOWERINGS
