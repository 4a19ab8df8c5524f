"""The memory-planned NumPy code is written by the one NumPy emitter (codegen/numpy_emit.py)
given the plan: `emit_numpy(graph, name, donate, plan=plan)`.  This name remains for callers
not yet moved to it."""
from __future__ import annotations

from ..ir import Graph
from ..passes.memory import MemoryPlan
from .numpy_emit import emit_numpy


def emit_planned(graph: Graph, plan: MemoryPlan, name: str | None = None,
                 donate: dict | None = None) -> str:
    """`emit_numpy(graph, name, donate, plan=plan)`."""
    return emit_numpy(graph, name, donate, plan=plan)
