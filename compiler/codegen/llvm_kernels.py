"""Kernels: each piece of the graph's code (a fusion group's loop nest, one node's lowering, a
product accumulated onto a sum) is a function of its own, `void @kN.name(ptr noalias ...)`,
taking the buffers it touches as arguments; the graph's function calls them in order.

Why: LLVM's pipeline and code generation cost grows faster than the size of one function (an
L-layer MLP as one function took about L^1.6), and identical layers would be optimized L times.
A piece's *structural key* (`piece_key`) names its ops, attributes, types and how its values
connect, with values numbered by first appearance instead of named; two pieces with one key
lower to the same code up to which buffers they are given, so they share one kernel (64
identical layers compile each of their loops once).  The kernels are `noinline`: the graph's
function stays a list of calls, and every kernel is optimized once, however often it is called.

What a lowering may touch: the buffers of the piece's operands and results, and of the
operands of its operands' producers (a transpose read by gemm through its flag, a constant read
as an immediate); the key covers those producers' ops and attributes.  A lowering asking for
any other buffer is an error (`KeyError` naming it), not a silent wrong read.

Aliasing: every argument is `noalias` (each value owns its buffer, inputs are only read), so
loops vectorize without runtime overlap checks.
"""
from __future__ import annotations

from llvmlite import ir

from .llvm_types import PTR, VOID


def piece_values(em, nodes) -> dict:
    """name -> Value of the buffers a piece lowering `nodes` may touch, in first-use order."""
    members = {n.out.name for n in nodes}
    values: dict = {}
    for n in nodes:
        for v in n.inputs:
            values.setdefault(v.name, v)
        values.setdefault(n.out.name, n.out)
    for n in nodes:
        for v in n.inputs:
            p = em.producers.get(v.name)
            if p is not None and v.name not in members:
                for u in p.inputs:
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


def new_kernel(module, name: str, values: dict, ident: dict) -> ir.Function:
    """`void @name(ptr noalias %value, ...)`: an internal, never inlined function taking the
    buffers `values` (arguments named after the model's values)."""
    fn = ir.Function(module, ir.FunctionType(VOID, [PTR] * len(values)), name=name)
    fn.linkage = "internal"
    fn.attributes.add("noinline")
    fn.attributes.add("nounwind")
    for arg, value in zip(fn.args, values):
        arg.name = ident[value]
        arg.add_attribute("noalias")
    return fn
