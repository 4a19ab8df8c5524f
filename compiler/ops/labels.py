"""Class labels: the one check every backend makes on the label operand of a label op.

A label op (pick, onehot, softmax_cross_entropy, svm_loss) declares in the op table which of
its operands holds class indices and how many classes there are (its record's `label`:
`OPS[op].label(node) -> (operand position, classes)`, beside the op's other rules in
compiler/ops/loss.py).  Every label must lie in [0, classes): NumPy would wrap −1 around to
the last class and the native code would read NaN.  `label_checks(graph)` lists the checks;
where the labels come from decides where the check runs, always before the op reads them:

    a graph input    runtime/checks.py, before any compiled code runs (the LLVM kernel: the
                     module's `_labels` function, which only reads the labels)
    a computed value the emitted NumPy code (`checked_labels` around the operand), the LLVM
                     module's graph function (natively, right after the values the labels
                     depend on and before any other node: compiler/codegen/llvm_labels.py),
                     and the reference interpreter, node by node

An index op (gather, take_along_axis and their scatter-add transposes, compiler/ops/array.py)
declares its integer index operand the same way, `(position, axis size, "index")`: each index
must lie in [0, size) (negative indices are refused, not wrapped), and the message says
"index" and the axis size instead of "label" and classes.

Every backend raises the same `LabelError` with the same message, made by `label_error`:
which value (an argument, or the op that computed it), the bad label, the range, the row (the
index, for labels of rank ≠ 1) and the label op with its model line.  `label_error` and
`checked_labels` are also copied, as source, into the emitted NumPy module, which imports
only numpy: keep them self-contained.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..ir import GradcError, Graph, Value
from .record import OPS


class LabelError(GradcError, ValueError):
    """A class label outside [0, classes) of the op that reads it."""


class LabelCheck(NamedTuple):
    value: Value            # the labels
    classes: int            # the fewest classes among the label ops reading them
    op: str                 # that op
    loc: str | None         # its model line
    source: str | None      # None for a graph input, else the op computing the labels
    first: str              # the output name of the first label op reading them
    noun: str = "label"     # "index" for an index op's operand (the error's wording)


def label_checks(graph: Graph) -> list:
    """One LabelCheck per value used as labels, in the order of their first label op (so the
    first failing check is the one the NumPy code and the interpreter hit first).  Cached on
    the graph."""
    cached = graph.__dict__.get("_label_uses")
    if cached is not None and cached[0] == len(graph.nodes):
        return cached[1]
    producers = graph.producers()
    found: dict = {}
    for n in graph.nodes:
        rule = getattr(OPS.get(n.op), "label", None)     # (an unknown op: verify's error)
        if rule is None:
            continue
        k, classes, *noun = rule(n)
        v = n.inputs[k]
        old = found.get(v.name)
        if old is None or classes < old.classes:
            src = producers.get(v.name)
            found[v.name] = LabelCheck(v, int(classes), n.op, n.loc,
                                       src.op if src is not None else None,
                                       old.first if old is not None else n.out.name,
                                       *noun)
    checks = list(found.values())
    graph.__dict__["_label_uses"] = (len(graph.nodes), checks)
    return checks


def error_for(check: LabelCheck, labels) -> "LabelError":
    """The LabelError of `check` for the array of labels it found out of range."""
    return label_error(labels, check.classes, check.value.name, check.op, check.source,
                       check.loc, check.noun)


# ---- copied into the emitted NumPy module (numpy only, no other global but LabelError) ----
def label_error(labels, classes, value, op, source, loc, noun="label"):
    """The LabelError for the first label of `labels` outside [0, classes): `value` is the
    labels' name, `source` the op that computed them (None: they are an argument), `op` the
    label op with `classes` classes, `loc` its model line (or None); `noun` "index" for the
    indices of an index op (`classes` is then the size of the axis they index)."""
    labels = np.asarray(labels)
    bad = np.argwhere((labels < 0) | (labels >= classes))
    idx = tuple(int(i) for i in bad[0]) if len(bad) else ()
    what = f"argument {value!r}" if source is None else f"value {value!r} computed by {source}"
    where = f" at row {idx[0]}" if len(idx) == 1 else f" at index {idx}" if idx else ""
    at = f" at {loc}" if loc else ""
    has = (f"indexes an axis of size {classes}" if noun == "index" else
           f"has {classes} class{'es' if classes != 1 else ''}")
    return LabelError(f"{what}: {noun} {int(labels[idx])} is outside [0, {classes}){where} "
                      f"(the {op} op{at} {has})")


def checked_labels(labels, classes, value, op, source, loc, noun="label"):
    """`labels` (an integer array) when every label lies in [0, classes); else raises
    label_error(...).  One reduction: a negative label read as unsigned is huge."""
    lab = labels if type(labels) is np.ndarray else np.asarray(labels)   # or a literal
    if lab.size and lab.view(np.uint64).max() >= classes:
        raise label_error(lab, classes, value, op, source, loc, noun)
    return labels
