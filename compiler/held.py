"""Values no gradient flows through (`stop_gradient`, ops/special.py), held constant for the
finite-difference check: its central differences are taken of the function autodiff
differentiates, in which such a value is a constant at the point, not the function the forward
pass computes.  Which nodes: those whose op has a float operand and a float result but no gate
rule for any operand (the op table says so; comparisons, with bool results, are not held)."""
from __future__ import annotations

from .interpret import interpret
from .ir import Graph
from .ops import OPS


def held_nodes(graph: Graph) -> list:
    return [n for n in graph.nodes
            if n.inputs and n.out.type.is_float and any(v.type.is_float for v in n.inputs)
            and all(r is None for r in OPS[n.op].gate_rules(len(n.inputs)))]


def holding(graph: Graph, point: dict) -> tuple:
    """(graph', values): graph' reads each held node's value as an input instead, and values
    are those inputs at `point` (graph and {} when nothing is held)."""
    held = held_nodes(graph)
    if not held:
        return graph, {}
    env = interpret(graph, point, all_values=True)
    names = {id(n) for n in held}
    g = Graph(graph.name, list(graph.inputs) + [n.out for n in held],
              [n for n in graph.nodes if id(n) not in names], dict(graph.outputs))
    return g, {n.out.name: env[n.out.name] for n in held}
