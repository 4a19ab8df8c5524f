"""Transpose folding: a 2-D transpose feeding a matmul becomes a flag of the matmul.

    matmul(transpose(A, (1, 0)), B)  →  matmul(A, B) {transpose_a=True}
    matmul(A, transpose(B, (1, 0)))  →  matmul(A, B) {transpose_b=True}

(flags toggle: a transpose of an operand already flagged clears the flag, since (Aᵀ)ᵀ = A).  The
NumPy emitter then writes `X.T @ dscores` (a strided view handed to BLAS) and the LLVM backend
passes BLAS transpose flags; no transposed copy is made.  The transpose node itself is left in
place: dead code elimination drops it when the matmul was its only reader.
"""
from __future__ import annotations

from ..ir import Graph
from .rewrite import Reader, Rewriter


def _is_swap(rw, v) -> bool:
    n = rw.node_of(v)
    return n is not None and n.op == "transpose" and tuple(n.attrs["perm"]) == (1, 0)


def transpose_fold(graph: Graph) -> Graph:
    """The graph with every transpose that feeds a matmul folded into the matmul's flags."""
    rw = Rewriter(graph)
    for n in graph.nodes:
        rw.current = n
        if n.op != "matmul":
            rw.keep(n)
            continue
        a, b = (rw.new(v) for v in n.inputs)
        ta, tb = bool(n.attrs.get("transpose_a")), bool(n.attrs.get("transpose_b"))
        if not (_is_swap(rw, a) or _is_swap(rw, b)):
            rw.keep(n)
            continue
        if _is_swap(rw, a):
            a, ta = rw.node_of(a).inputs[0], not ta
        if _is_swap(rw, b):
            b, tb = rw.node_of(b).inputs[0], not tb
        attrs = {k: v for k, v in (("transpose_a", ta), ("transpose_b", tb)) if v}
        rw.replace(n, rw.emit("matmul", [a, b], name=None, **attrs))
    return rw.finish()


def transpose_fold_idle(graph: Graph) -> bool:
    """Whether `transpose_fold(graph)` would copy the graph unchanged (no matmul reads a
    2-D transpose)."""
    r = Reader(graph)
    return not any(n.op == "matmul" and (_is_swap(r, n.inputs[0]) or _is_swap(r, n.inputs[1]))
                   for n in graph.nodes)
