"""Checking one op's gate rule on its own: a graph holding just that op, reduced to a scalar
with a random upstream gradient G (loss = Σ G·op(inputs)), checked against SymPy."""
from __future__ import annotations

from .builder import Builder
from .ir import Graph, Node, TensorType
from .ops import OPS


def single_op_graph(op: str, in_types, attrs: dict) -> Graph | None:
    """`loss = sum(G * op(a0, a1, ...))` with inputs a0.. of `in_types` and G of the op's
    output type; None when the op's output has no gradient (not a float)."""
    g = Graph(f"{op}_gate")
    b = Builder(g)
    ins = [b.add_input(f"a{k}", TensorType("f64" if t.dtype == "f32" else t.dtype, t.shape))
           for k, t in enumerate(in_types)]
    attrs = {k: ("f64" if v == "f32" else v) for k, v in attrs.items()}
    out = b.emit(op, ins, **attrs)
    if not out.value.type.is_float:
        return None
    upstream = b.add_input("G", out.value.type)
    loss = (out * upstream).sum()
    g.outputs["out"] = loss.value
    return g


def gate_disagreement(node: Node, seed: int = 0, max_elements: int = 60) -> str | None:
    """A message naming the op when its gate rule disagrees with SymPy at this node's types."""
    # check_against_sympy names a failing gate rule by checking each op alone with this
    # function: mutual recursion, so compiler.check is read here
    from .check import check_against_sympy
    rules = (OPS[node.op].gate_rules(len(node.inputs)) if node.op in OPS else ())
    if not any(rules) or sum(v.type.size for v in node.inputs) + node.out.type.size > max_elements:
        return None
    g = single_op_graph(node.op, [v.type for v in node.inputs], node.attrs)
    if g is None:
        return None
    wrt = [f"a{k}" for k, v in enumerate(node.inputs) if v.type.is_float and rules[k]]
    if not wrt:
        return None
    try:
        rep = check_against_sympy(g, wrt=wrt, points=2, seed=seed, time_budget=0, backends=(),
                                  localize=False)
    except Exception:   # a point could not be found etc.: no verdict on this node
        return None
    if rep.ok:
        return None
    bad = [k for k, r in enumerate(rep.rows) if not r.ok]
    texts = "; ".join(rules[int(wrt[k][1:])][0] for k in bad)
    where = f" ({node.loc})" if node.loc else ""
    return (f"the {node.op} gate rule ({texts}) disagrees with SymPy at node "
            f"{node.out.name}{where}")
