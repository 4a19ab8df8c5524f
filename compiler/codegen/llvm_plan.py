"""Where the LLVM emitter (llvm_emit.py) shares work between fusion groups: `sibling_plan`
(two groups over one shape read a common input in one loop), `accumulation_plan` (a
product that gemm adds onto the other operand of its sum), `epilogue_plan` (a group run
on each tile of the node it reads, inside that node's lowering) and `read_through` (loop
nests reading a broadcast's operand instead of the broadcast).  Functions of the emitter `em`
(its graph, producers, lowerings and immediates)."""
from __future__ import annotations

from ..ops import OPS
from ..passes.fusion import epilogue_heads


def sibling_plan(em, groups, accum) -> dict:
    """{reduction group's output: (elementwise group, its store)} for two fusion groups
    over the same shape where the later one loads only graph inputs (so it can run at the
    earlier one's place): one loop computes both, reading shared inputs once (e.g.
    Σ W1² and 2·λ·W1 of weight decay)."""
    inputs = {v.name for v in em.graph.inputs}
    order = {n.out.name: k for k, n in enumerate(em.graph.nodes)}
    reds, elems = [], []
    for name, g in groups.items():
        if g.reduction:
            if name not in accum:
                reds.append((name, g))
        else:
            store = accum[name][1].name if name in accum else None
            elems.append((name, g, store))

    vals = em.graph.values()

    def reads(g, store=None):       # the values a group's loop loads
        members = g.nodes[:-1] if store is not None else g.nodes
        got = {v.name for m in members for v in em.producers[m].inputs} - set(members)
        return {v for v in got if em.immediate(vals[v]) is None}
    plan, used = {}, set()
    for rname, rg in reds:
        red_in = em.producers[rname].inputs[0].shape
        for ename, eg, store in elems:
            if ename in used or tuple(eg.shape) != tuple(red_in) or ename in accum and (
                    store is None or accum[ename][1].name not in eg.nodes):
                continue
            later = (eg, store) if order[ename] > order[rname] else (rg,)
            if not reads(*later) <= inputs or not reads(rg) & reads(eg, store):
                continue
            host, guest = (rname, ename) if order[rname] < order[ename] else (ename, rname)
            plan[host] = (guest, rname, (eg, store))
            used.add(ename)
            break
    return plan


def accumulation_plan(em, groups, inside) -> dict:
    """{sum node: (product node, other operand)} for y = P + u where P's lowering can add
    into a buffer (`accumulate_into`: gemm with beta = 1), P has no other reader, and u has
    y's shape or broadcasts to it: u is written into y's buffer (by u's fusion group, or a
    copy) and P accumulates onto it, saving a pass over y."""
    outputs = {v.name for v in em.graph.outputs.values()}
    users = em.graph.users()
    plan = {}
    for n in em.graph.nodes:
        if not getattr(em.lowerings[n.op], "accumulates", False) or n.out.name in inside:
            continue
        group = groups.get(n.out.name)
        if group is not None and group.reduction:
            continue
        for k, v in enumerate(n.inputs):
            prod = em.producers.get(v.name)
            other = n.inputs[1 - k]
            if (prod is None or other is v or v.name in outputs or v.shape != n.out.shape
                    or len(users.get(v.name, [])) != 1 or v.name in inside):
                continue
            can = getattr(em.lowerings[prod.op], "can_accumulate", None)
            if can is None or not can(em, prod):
                continue
            if group is not None:
                internal = other.name in group.nodes
                if not internal or other.shape != n.out.shape:
                    continue
            plan[n.out.name] = (prod, other)
            break
    return plan


def epilogue_plan(em, groups, inside, accum) -> dict:
    """{group output: head node} for the fusion groups (or single elementwise nodes) run
    inside the lowering of the node that writes their input tile by tile (fusion.py
    `epilogue_heads`; the lowering's `lower_with_epilogue`): relu(conv2d(x, w) + b) is one
    pass over the output.  Updates `groups` and `inside` (the head's result is never
    stored)."""
    plan = {}
    for out, (head, g) in epilogue_heads(em.graph, list(groups.values())).items():
        node = em.producers[head]
        if out in accum or head in inside \
                or not hasattr(em.lowerings[node.op], "lower_with_epilogue") \
                or not all(hasattr(em.lowerings[em.producers[m].op], "scalar") for m in g.nodes):
            continue
        groups[out] = g
        inside.update(g.nodes[:-1])
        inside.add(head)
        plan[out] = node
    return plan


def read_through(em, folded) -> dict:
    """{broadcast value: its operand} for the readers that are loop nests (elementwise nodes
    with scalar rules, alone or in a fusion group) of a value whose lowering `reads_through`
    (broadcast_to): they read the operand with stride 0 instead; adds them to `folded`
    (value -> ids of the nodes that fold it, ModuleEmitter.skipped)."""
    through = {}
    for n in em.graph.nodes:
        if OPS[n.op].elementwise and hasattr(em.lowerings[n.op], "scalar"):
            for v in n.inputs:
                p = em.producers.get(v.name)
                if p is not None and getattr(em.lowerings[p.op], "reads_through", False):
                    folded.setdefault(v.name, set()).add(id(n))
                    through[v.name] = p.inputs[0]
    return through
