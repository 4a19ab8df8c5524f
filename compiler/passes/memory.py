"""Memory planning: liveness over the scheduled graph (the node list order), then a buffer for
every array a node writes through `out=`, reusing the buffers of values that are dead.

An analysis, not a rewrite: `plan_memory(graph)` returns a `MemoryPlan` that the planned NumPy
emitter (codegen/numpy_emit.py, given the plan) and runtime.NumpyKernel read.

* Liveness.  A value is live from its node to its last reader; an output lives to the end of
  the call.  A view (an op with the `view` trait) shares its source's memory, so
  it extends the live range of the source's buffer (its root) rather than owning one.
* Symbolic sizes.  A buffer's shape may hold a dimension name (`f64[N,10]`): the kernel
  allocates the calling thread's buffers at the sizes of the call (runtime/numpy_kernel.py);
  the small-array threshold and the byte counts count a name as shapes.NOMINAL elements.
* Buffers.  Nodes whose op has an `out=` form (the record's `into`: ufuncs, matmul, reductions,
  where, cast) and a result of at least `MIN_ELEMENTS` elements get a buffer: a free buffer of
  the same dtype and shape if one is dead, else a new one.  Each calling thread gets its own
  set of buffers on its first call (runtime/numpy_kernel.py), reused on every later call of
  that thread.
* In place.  An elementwise node may write into the buffer of an operand that dies at that node
  and has the result's dtype and shape (`np.multiply(a, b, out=a)`): the operand's buffer is
  freed before the result's is chosen.  Which operands it may overwrite is the op's `out=` form's
  `overwrites`: operands of matmul and reductions are freed after (their kernels read all of an
  operand while writing); `where` may only overwrite its last operand.
* Outputs.  An output's buffer is never reused within a call.  The compiled function returns
  fresh copies by default; `fn(..., copy=False)` returns the calling thread's buffers
  themselves, which that thread's next call overwrites (an argument overlapping them is copied
  first).

`memory_report()` compares: bytes allocated per call without planning (every node's result a
fresh array), the peak of live intermediate bytes without planning (a lower bound for that
code, with perfect freeing), and the planned bytes (the buffers, allocated once).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..ir import NUMPY_DTYPE, Graph, TensorType
from ..ops import OPS
from ..shapes import nominal_size


_ITEMSIZE = {d: np.dtype(nd).itemsize for d, nd in NUMPY_DTYPE.items()}


def nbytes(t) -> int:
    """Bytes of a value of type `t`; a dimension name counts as shapes.NOMINAL (an estimate:
    the buffers of a symbolic plan are allocated at the call's sizes)."""
    return nominal_size(t) * _ITEMSIZE[t.dtype]


@dataclass
class MemoryPlan:
    buffers: list = field(default_factory=list)     # [(dtype, shape)] in first-use order
    assign: dict = field(default_factory=dict)      # value name -> buffer index
    inplace: dict = field(default_factory=dict)     # value name -> operand name overwritten
    unplanned_per_call: int = 0     # bytes of fresh arrays per call without planning
    unplanned_peak: int = 0         # peak live intermediate bytes without planning
    planned_per_call: int = 0       # bytes still allocated fresh per call with planning

    @property
    def buffer_bytes(self) -> int:
        return sum(nbytes(TensorType(d, s)) for d, s in self.buffers)

    def report(self) -> dict:
        return {"buffers": len(self.buffers), "buffer_bytes": self.buffer_bytes,
                "planned_fresh_bytes_per_call": self.planned_per_call,
                "unplanned_bytes_per_call": self.unplanned_per_call,
                "unplanned_peak_bytes": self.unplanned_peak,
                "in_place_nodes": len(self.inplace)}


def _inplace_operands(n) -> tuple:
    """Operand positions node n may overwrite (same dtype and shape as the result): those its
    op's `out=` form declares (`OPS[op].into.overwrites`, None: any)."""
    into = OPS[n.op].into
    if into is None:
        return ()
    cands = range(len(n.inputs)) if into.overwrites is None else into.overwrites
    return tuple(k for k in cands if n.inputs[k].type == n.out.type)


MIN_ELEMENTS = 1 << 13     # smaller results allocate as usual: NumPy's small-array path is
                           # as fast as a call with out=, and the code keeps its inlined form


def plan_memory(graph: Graph, min_elements: int = MIN_ELEMENTS) -> MemoryPlan:
    """Liveness and buffer assignment for `graph` (see the module docstring): every plannable
    node with at least `min_elements` elements gets a buffer."""
    end = len(graph.nodes)
    producers = graph.producers()
    root: dict = {}                    # value -> the value owning its memory
    for n in graph.nodes:
        src = n.inputs[0].name if OPS[n.op].view else n.out.name
        root[n.out.name] = root.get(src, src)
    last: dict = {}                    # root value -> last step its memory is read
    for k, n in enumerate(graph.nodes):
        for v in n.inputs:
            r = root.get(v.name, v.name)
            last[r] = max(last.get(r, -1), k)
    for v in graph.outputs.values():
        last[root.get(v.name, v.name)] = end

    plan = MemoryPlan()
    free: dict = {}                    # (dtype, shape) -> [buffer index]
    live = 0
    released: set = set()
    for k, n in enumerate(graph.nodes):
        name = n.out.name
        fresh = not OPS[n.op].view and n.out.shape != ()
        if fresh and not OPS[n.op].literal:
            size = nbytes(n.out.type)
            plan.unplanned_per_call += size
            live += size
            plan.unplanned_peak = max(plan.unplanned_peak, live)
        dying = [v.name for v in dict.fromkeys(n.inputs) if v.name in plan.assign
                 and root.get(v.name) == v.name and last.get(v.name) == k]
        for v in dict.fromkeys(n.inputs):       # unplanned accounting: freed when dead
            r = root.get(v.name, v.name)
            if last.get(r) == k and r not in released and r in producers \
                    and not OPS[producers[r].op].view and producers[r].out.shape != () \
                    and not OPS[producers[r].op].literal:
                live -= nbytes(producers[r].out.type)
                released.add(r)
        if OPS[n.op].plannable and n.out.shape != () and nominal_size(n.out.type) >= min_elements:
            key = (n.out.dtype, n.out.shape)
            chosen = None
            for pos in _inplace_operands(n):
                v = n.inputs[pos].name
                if v in dying:
                    chosen = plan.assign[v]
                    plan.inplace[name] = v
                    dying.remove(v)
                    break
            if chosen is None and free.get(key):
                chosen = free[key].pop()
            if chosen is None:
                chosen = len(plan.buffers)
                plan.buffers.append(key)
            plan.assign[name] = chosen
        elif fresh and not OPS[n.op].literal:
            plan.planned_per_call += nbytes(n.out.type)
        for v in dying:
            b = plan.assign[v]
            free.setdefault(plan.buffers[b], []).append(b)
    return plan
