"""The label checks of an LLVM module: every label operand of a label op (the op table's
`OPS[op].label`; compiler/ops/labels.py) must lie in [0, classes), checked natively.

Labels that are graph inputs: the module gets a second function, `symbol` + "_labels", that
only reads them; the kernel (runtime/llvm_kernel.py) calls it before the graph's function.

Labels the graph computes (y - 1, a cast of a comparison): the graph's function first computes
the values they depend on (`label_cone`), then checks them (`emit_computed_checks`), and only
then every other node.  A bad label returns 1 + the index of the failed check before any other
value is written; the kernel then raises the LabelError of compiler/ops/labels.py, built from
the label buffer, with the message the NumPy backend and the interpreter give.
"""
from __future__ import annotations

from llvmlite import ir

from ..ir import Graph
from ..ops.labels import label_checks as _all_checks
from .llvm_dims import emitting
from .llvm_types import I64, PTR, const_i64


def label_checks(graph: Graph, lowerings: dict | None = None) -> list:
    """[(input slot, LabelCheck)] for every label operand that is a graph input
    (one per input: the fewest classes among the ops reading it)."""
    slots = {v.name: k for k, v in enumerate(graph.inputs)}
    return [(slots[c.value.name], c) for c in _all_checks(graph) if c.source is None]


def computed_checks(graph: Graph) -> list:
    """[LabelCheck] for every label operand the graph computes, in the order of the first
    label op reading it (the order the NumPy code and the interpreter check them in)."""
    return [c for c in _all_checks(graph) if c.source is not None]


def label_cone(graph: Graph, checks) -> set:
    """Names of the nodes the computed labels of `checks` depend on (their producers too)."""
    producers = graph.producers()
    todo = [c.value.name for c in checks]
    cone: set = set()
    while todo:
        name = todo.pop()
        n = producers.get(name)
        if n is None or name in cone:
            continue
        cone.add(name)
        todo.extend(v.name for v in n.inputs)
    return cone


def _max_label(b: ir.IRBuilder, fn: ir.Function, p, count: int, name: str):
    """The largest of the `count` i64 labels at `p`, read as unsigned (a negative label is
    huge), from a loop the vectorizer turns into a max reduction."""
    pre = b.block
    loop = fn.append_basic_block(f"{name}.check")
    after = fn.append_basic_block(f"{name}.check.done")
    b.branch(loop)
    b.position_at_end(loop)
    i = b.phi(I64, name=f"{name}.i")
    acc = b.phi(I64, name=f"{name}.max")
    y = b.load(b.gep(p, [i], inbounds=True, source_etype=I64), typ=I64)
    nacc = b.select(b.icmp_unsigned(">", y, acc), y, acc)
    nxt = b.add(i, const_i64(1), flags=("nuw", "nsw"))
    i.add_incoming(const_i64(0), pre)
    i.add_incoming(nxt, loop)
    acc.add_incoming(const_i64(0), pre)
    acc.add_incoming(nacc, loop)
    b.cbranch(b.icmp_signed("<", nxt, const_i64(count)), loop, after)
    b.position_at_end(after)
    return nacc


def emit_label_check(module: ir.Module, symbol: str, graph: Graph, checks, ident=None,
                     dims=()) -> None:
    """`i64 @symbol(ptr %buffers)`: 0 if every input label of `checks` (`label_checks`) is in
    [0, classes), else 1 + the index of the first failing check.  It only reads the labels,
    so the kernel runs it before the graph's function.  `ident`: value name -> LLVM name.
    `dims`: run-time sizes (llvm_dims.py), read from the slots after the graph's buffers."""
    fn = ir.Function(module, ir.FunctionType(I64, [PTR]), name=symbol)
    fn.args[0].name = "buffers"
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    if dims:       # the label counts are products of the sizes: an emitter-like holder of them
        nbuf = len(graph.inputs) + len(graph.nodes)
        holder = type("Sizes", (), {})()
        holder.b = b
        holder.dimvals = {d: b.load(b.gep(fn.args[0], [const_i64(nbuf + j)], inbounds=True,
                                          source_etype=PTR), typ=I64, name=d)
                          for j, d in enumerate(dims)}
        with emitting(holder):
            _label_body(b, fn, checks, ident)
        return
    _label_body(b, fn, checks, ident)


def _label_body(b, fn, checks, ident) -> None:
    fail = fn.append_basic_block("fail")
    exits = []
    for j, (slot, c) in enumerate(checks):
        if c.value.type.size == 0:
            continue
        name = (ident or {}).get(c.value.name, f"labels{slot}")
        p = b.load(b.gep(fn.args[0], [const_i64(slot)], inbounds=True, source_etype=PTR),
                   typ=PTR, name=name)
        top = _max_label(b, fn, p, c.value.type.size, f"{name}{j}")
        ok = fn.append_basic_block(f"{name}{j}.ok")
        exits.append((b.block, j + 1))
        b.cbranch(b.icmp_unsigned(">=", top, const_i64(c.classes)), fail, ok)
        b.position_at_end(ok)
    b.ret(const_i64(0))
    b.position_at_end(fail)
    if exits:
        code = b.phi(I64, name="failed")
        for blk, v in exits:
            code.add_incoming(const_i64(v), blk)
        b.ret(code)
    else:
        b.unreachable()


def emit_computed_checks(em, checks) -> None:
    """At the builder's position in the graph's function (after the label cone): for each
    computed LabelCheck, return 1 + its index when a label is outside [0, classes)."""
    b, fn = em.b, em.fn
    for j, c in enumerate(checks):
        if c.value.type.size == 0:
            continue
        b.comment(f"computed labels {j} in [0, {c.classes}) (the {c.op} op), else return {j + 1}")
        top = _max_label(b, fn, em.ptr(c.value), c.value.type.size, f"labels{j}")
        bad = fn.append_basic_block(f"labels{j}.bad")
        ok = fn.append_basic_block(f"labels{j}.ok")
        b.cbranch(b.icmp_unsigned(">=", top, const_i64(c.classes)), bad, ok)
        b.position_at_end(bad)
        b.ret(const_i64(j + 1))
        b.position_at_end(ok)
