"""The reference interpreter: evaluates a graph node by node with each op's NumPy reference
rule.  It is the spec that both backends and the SymPy renderer are tested against, and the
fallback executor.  Every result is checked against the node's declared type, and every label
operand against its class count (a LabelError, as on both backends: compiler/ops/labels.py)."""
from __future__ import annotations

import numpy as np

from .ir import NUMPY_DTYPE, GradcError, Graph
from .ops import OPS
from .ops.labels import checked_labels, label_checks
from .shapes import resolve, resolve_attrs
from .specialize import call_dims


def interpret(graph: Graph, inputs: dict | None = None, *, all_values: bool = False,
              **kw) -> dict:
    """Run `graph` on `inputs` (a dict, or keyword arrays).  Returns the outputs by name, or
    with `all_values=True` every value by name (inputs included), in definition order."""
    # runtime/ imports compiler.ir, whose package __init__ imports this module: the argument
    # checks (shared with both kernels) load at the first call
    from runtime.checks import check_arguments
    args = check_arguments(graph, dict(inputs or {}, **kw))
    env = {v.name: a for v, a in zip(graph.inputs, args)}
    dims = call_dims(graph, args)      # the sizes of the dimension names (shapes.py)
    computed = {c.first: c for c in label_checks(graph) if c.source is not None}
    with np.errstate(all="ignore"):
        for n in graph.nodes:
            c = computed.get(n.out.name)      # n is the first label op reading computed labels
            if c is not None:
                checked_labels(env[c.value.name], c.classes, c.value.name, c.op, c.source, c.loc,
                               c.noun)
            try:
                attrs = resolve_attrs(n.attrs, OPS[n.op].attrs, dims) if dims else n.attrs
                r = np.asarray(OPS[n.op].eval(*(env[v.name] for v in n.inputs), **attrs))
            except Exception as e:  # a reference rule failing is a bug or a bad input value
                where = f" ({n.loc})" if n.loc else ""
                raise GradcError(f"evaluating {n.out.name} = {n.op}(...){where} failed: "
                                 f"{type(e).__name__}: {e}") from e
            want = NUMPY_DTYPE[n.out.dtype]
            if r.shape != resolve(n.out.shape, dims) or r.dtype != np.dtype(want):
                raise GradcError(f"internal: {n.op} gave {r.dtype}{list(r.shape)} for "
                                 f"{n.out.name}, declared {n.out.type}")
            env[n.out.name] = r
    if all_values:
        return env
    return {k: env[v.name] for k, v in graph.outputs.items()}
