"""The label check of an LLVM module: integer-label inputs (cross-entropy, svm, pick, onehot)
must lie in [0, classes).  The module of a graph with label inputs gets a second function that
only reads the labels; the kernel (runtime/llvm_kernel.py) calls it before the graph's function
and raises a Python error naming the argument and the bad label.
"""
from __future__ import annotations

from llvmlite import ir

from ..ir import Graph
from .llvm_emit import I64, PTR, const_i64


def label_checks(graph: Graph, lowerings: dict) -> list:
    """[(input slot, input name, classes, op)] for every integer-label input of a label op
    (cross-entropy, svm, pick, onehot), once per (input, classes)."""
    slots = {v.name: k for k, v in enumerate(graph.inputs)}
    out = []
    for n in graph.nodes:
        fn = getattr(lowerings[n.op], "labels", None)
        got = fn(n) if fn else None
        if got is not None and got[0].name in slots and got[0].dtype == "i64":
            item = (slots[got[0].name], got[0].name, int(got[1]), n.op)
            if all(item[:3] != o[:3] for o in out):
                out.append(item)
    return out


def emit_label_check(module: ir.Module, symbol: str, graph: Graph, checks) -> None:
    """`i64 @symbol(ptr %buffers)`: 0 if every label of `checks` is in [0, classes), else
    1 + the index of the first failing check.  It only reads the labels (max as unsigned:
    a negative label is huge), so the kernel runs it before the graph's function."""
    fn = ir.Function(module, ir.FunctionType(I64, [PTR]), name=symbol)
    fn.args[0].name = "buffers"
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    fail = fn.append_basic_block("fail")
    exits = []
    for j, (slot, name, classes, _) in enumerate(checks):
        count = graph.inputs[slot].type.size
        if count == 0:
            continue
        p = b.load(b.gep(fn.args[0], [const_i64(slot)], inbounds=True, source_etype=PTR),
                   typ=PTR, name=name)
        pre = b.block
        loop = fn.append_basic_block(f"{name}.check{j}")
        after = fn.append_basic_block(f"{name}.check{j}.done")
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
        nxt_block = fn.append_basic_block(f"{name}.check{j}.ok")
        b.cbranch(b.icmp_unsigned(">=", nacc, const_i64(classes)), fail, nxt_block)
        exits.append((after, j + 1))
        b.position_at_end(nxt_block)
    b.ret(const_i64(0))
    b.position_at_end(fail)
    if exits:
        code = b.phi(I64, name="failed")
        for blk, v in exits:
            code.add_incoming(const_i64(v), blk)
        b.ret(code)
    else:
        b.unreachable()
