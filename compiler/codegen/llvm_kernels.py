"""Kernels: each piece of the graph's code (a fusion group's loop nest, one node's lowering, a
product accumulated onto a sum) is a function of its own, `void @kN.name(ptr %buffers, i64
slot, ...)`, taking the slots of the buffers it touches (`new_kernel`); the graph's function
calls them in order.

Why: LLVM's pipeline and code generation cost grows faster than the size of one function (an
L-layer MLP as one function took about L^1.6), and identical layers would be optimized L times.
A piece's *structural key* (`piece_key`) names its ops, attributes, types and how its values
connect, with values numbered by first appearance instead of named; two pieces with one key
lower to the same code up to which buffers they are given, so they share one kernel (64
identical layers compile each of their loops once).  The kernels are `noinline`: the graph's
function stays a list of calls, and every kernel is optimized once, however often it is called.

What a lowering may touch: the buffers of the piece's operands and results, and of the
operands of the values its lowering `folds` (a transpose read by gemm through its flag); the
key covers the ops and attributes of its operands' producers (a fold, a constant read as an
immediate).  A lowering asking for any other buffer is an error (`KeyError` naming it), not
a silent wrong read.

Aliasing: the loops see every buffer as a `noalias` argument (each value owns its buffer,
inputs are only read), so they vectorize without runtime overlap checks.
"""
from __future__ import annotations

from llvmlite import ir

from .llvm_types import I64, PTR, VOID

INLINE_SINGLE = 32      # at most this many kernels called once are inlined (`inline_single_calls`)


def piece_values(em, nodes) -> dict:
    """name -> Value of the buffers a piece lowering `nodes` may touch, in first-use order:
    the nodes' operands and results, and the operands of the producers of the values a
    node's lowering reads through them (its `folds`: gemm reading a transpose's operand)."""
    values: dict = {}
    for n in nodes:
        for v in n.inputs:
            values.setdefault(v.name, v)
            if v.name in em.through:           # a broadcast read through: its operand
                values.setdefault(em.through[v.name].name, em.through[v.name])
        values.setdefault(n.out.name, n.out)
    for n in nodes:
        folds = getattr(em.lowerings[n.op], "folds", None)
        for v in (folds(em, n) if folds else ()):
            for u in em.producers[v.name].inputs:
                values.setdefault(u.name, u)
    return values


def piece_key(em, nodes, values: dict, tag) -> tuple:
    """The structural key of a piece: `tag` (how the emitter lowers it, in value numbers), each
    node's op, attributes, result type and operands, each value's type and, outside the piece,
    its producer's op, attributes and operands; values are numbered by position in `values`."""
    number = {name: k for k, name in enumerate(values)}
    members = {n.out.name for n in nodes}
    key = [tag(number)]
    for n in nodes:
        key.append((n.op, repr(n.attrs), str(n.out.type), number[n.out.name],
                    tuple(number[v.name] for v in n.inputs)))
    for name, v in values.items():
        p = em.producers.get(name)
        outside = None
        if p is not None and name not in members:
            outside = (p.op, repr(p.attrs), tuple(number.get(u.name) for u in p.inputs))
        key.append((str(v.type), outside))
    return tuple(key)


def new_kernel(module, name: str, values: dict, ident: dict, dims=()) -> tuple:
    """(entry, loops) of a new kernel taking the buffers `values`: `loops` is `void
    @"name.loops"(ptr noalias %value, ...)` (arguments named after the model's values), where
    the lowering writes its code; `entry` is `void @name(ptr %buffers, i64 %value.slot, ...)`,
    what the graph's function calls with its buffer array and the slot of each value: it reads
    the pointers and calls `loops`, which LLVM inlines into it (the noalias arguments become
    alias scopes).  So a call in the graph's function is one instruction with constant
    arguments, not a load per buffer.  `dims`: the run-time sizes (llvm_dims.py), i64
    arguments after the slots, passed on to `loops` after the buffers."""
    loops = ir.Function(module, ir.FunctionType(VOID, [PTR] * len(values) + [I64] * len(dims)),
                        name=name + ".loops")
    loops.linkage = "internal"
    loops.attributes.add("alwaysinline")
    loops.attributes.add("nounwind")
    for arg, value in zip(loops.args, values):
        arg.name = ident[value]
        arg.add_attribute("noalias")
    for arg, d in zip(loops.args[len(values):], dims):
        arg.name = d
    entry = ir.Function(module, ir.FunctionType(VOID, [PTR] + [I64] * (len(values) + len(dims))),
                        name=name)
    entry.linkage = "internal"
    entry.attributes.add("noinline")
    entry.attributes.add("nounwind")
    entry.args[0].name = "buffers"
    b = ir.IRBuilder(entry.append_basic_block("entry"))
    ptrs = []
    for arg, value in zip(entry.args[1:], values):
        arg.name = f"{ident[value]}.slot"
        ptrs.append(b.load(b.gep(entry.args[0], [arg], inbounds=True, source_etype=PTR),
                           typ=PTR, name=ident[value]))
    for arg, d in zip(entry.args[1 + len(values):], dims):
        arg.name = d
    b.call(loops, ptrs + list(entry.args[1 + len(values):]))
    b.ret_void()
    return entry, loops


def inline_single_calls(kernels: dict, calls: dict) -> None:
    """Kernels called from one place only are inlined into the graph's function when there are
    at most INLINE_SINGLE of them: a small graph with no repeated piece (the cifar two-layer
    step) then costs LLVM what one function did (each function costs its own prologue, code
    generation set-up and call), while a large one stays a list of calls (one function of
    hundreds of loop nests made the pipeline superlinear)."""
    single = [kernels[key][0] for key, n in calls.items() if n == 1]
    if len(single) > INLINE_SINGLE:
        return
    for entry in single:
        entry.attributes.discard("noinline")
        entry.attributes.add("alwaysinline")
