"""Elementwise fusion groups: an analysis (it never changes the graph) that the backends read.

A group is a set of elementwise nodes, all of one iteration shape, whose internal values are
read only inside the group (one reader, not an output), optionally closed by one reduction
(sum, mean, max) of the group's last value.  The LLVM backend emits a group as one loop nest
(no intermediate arrays); the NumPy emitter given a memory plan (codegen/numpy_emit.py) emits
it as a sequence of in-place ufunc calls into one buffer (`np.multiply(a, b, out=buf)`).

    groups = fusion_groups(graph)        # [FusionGroup, ...] in graph order
    group_of(graph)                      # value name -> group index, for members

Running a group at the position of its last member is always valid: its external inputs are
defined before their readers in the group, hence before the last member; its internal values
have no reader outside.  Scalar (shape ()) nodes and constants are not members: they are
inputs of the loop.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..ir import Graph
from ..ops import OPS


@dataclass(frozen=True)
class FusionGroup:
    nodes: tuple          # member value names, in graph order
    output: str           # the value the group produces (its last member)
    inputs: tuple         # values read from outside the group, in first-use order
    shape: tuple          # the loop's iteration shape (of the elementwise members)
    reduction: str | None = None   # the closing reduction's value name, if any


def fusion_groups(graph: Graph) -> list:
    """The fusion groups of `graph` with two or more members, in graph order."""
    users = graph.users()
    outputs = {v.name for v in graph.outputs.values()}
    index = {n.out.name: k for k, n in enumerate(graph.nodes)}
    producers = graph.producers()
    group: dict = {}          # member name -> group id
    members: dict = {}        # group id -> [names]
    shape: dict = {}          # group id -> iteration shape
    closed: set = set()       # groups ended by a reduction

    def private(name) -> bool:
        return name not in outputs and len(users.get(name, [])) == 1

    for n in graph.nodes:
        name = n.out.name
        if OPS[n.op].elementwise and n.out.shape != ():
            joinable = [group[v.name] for v in n.inputs
                        if v.name in group and group[v.name] not in closed
                        and shape[group[v.name]] == n.out.shape and private(v.name)]
            # the largest joinable group absorbs the others (moving the smaller lists keeps
            # the merging O(n log n) over the graph)
            gid = max(joinable, key=lambda j: len(members[j])) if joinable else name
            members.setdefault(gid, [])
            shape[gid] = n.out.shape
            for other in dict.fromkeys(joinable):
                if other != gid:
                    for m in members.pop(other):
                        group[m] = gid
                        members[gid].append(m)
            members[gid].append(name)
            group[name] = gid
        elif OPS[n.op].reduction and len(n.inputs) == 1:
            v = n.inputs[0]
            gid = group.get(v.name)
            if gid is not None and gid not in closed and private(v.name) \
                    and producers[v.name].out.shape == shape[gid]:
                members[gid].append(name)
                group[name] = gid
                closed.add(gid)
    out = []
    for gid, names in members.items():
        if len(names) < 2:
            continue
        names = sorted(names, key=index.get)
        inside = set(names)
        ins: dict = {}                 # ordered set: first-use order
        for m in names:
            for v in producers[m].inputs:
                if v.name not in inside:
                    ins.setdefault(v.name)
        red = names[-1] if OPS[producers[names[-1]].op].reduction else None
        out.append(FusionGroup(tuple(names), names[-1], tuple(ins), shape[gid], red))
    out.sort(key=lambda g: index[g.output])
    return out


def group_of(graph: Graph) -> dict:
    """Value name -> index into `fusion_groups(graph)`, for every member."""
    return {m: k for k, g in enumerate(fusion_groups(graph)) for m in g.nodes}


def epilogue_heads(graph: Graph, groups=None) -> dict:
    """{group output: (head node's value name, group)} where the head's op has the `epilogue`
    trait (its LLVM lowering writes the result tile by tile: conv2d) and its result, of the
    group's shape, is read only by the group (not an output): the group then runs on each
    tile as the head writes it (relu(conv2d(x, w) + b) in one pass over the output).  `groups`:
    the fusion groups to consider (default `fusion_groups(graph)`); an elementwise node that
    is in none of them is a group of one here.  Groups closed by a reduction take no head."""
    users = graph.users()
    outputs = {v.name for v in graph.outputs.values()}
    producers = graph.producers()
    groups = list(fusion_groups(graph) if groups is None else groups)
    members = {m for g in groups for m in g.nodes}
    for n in graph.nodes:
        if OPS[n.op].elementwise and n.out.shape != () and n.out.name not in members:
            groups.append(FusionGroup((n.out.name,), n.out.name,
                                      tuple(dict.fromkeys(v.name for v in n.inputs)),
                                      n.out.shape))
    heads = {}
    for g in groups:
        if g.reduction:
            continue
        for name in g.inputs:
            p = producers.get(name)
            if p is not None and OPS[p.op].epilogue and name not in outputs \
                    and p.out.shape == tuple(g.shape) and len(users.get(name, [])) == 1 \
                    and p.out.dtype == producers[g.output].out.dtype:
                heads[g.output] = (name, g)
                break
    return heads
