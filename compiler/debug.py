"""Debugging aids: the broadcast guard (a warning, or an error, at the model line where both
operands of an elementwise op are expanded) and `debug_nans` (which node first produced a NaN
or an inf, in the forward graph and in its gradient).

    g = dsl.trace(model, x=f64[4])               # warns: BroadcastWarning at model.py:7
    print(compiler.debug_nans(g, x=np.array([-1., 0., 1., 4.])))
"""
from __future__ import annotations

import os
import sys
import warnings
from dataclasses import dataclass, field

import numpy as np

from .autodiff import grad
from .interpret import interpret
from .ir import GradcError, Graph, Node, ShapeError
from .ops import OPS
from .passes import canonicalize


class BroadcastWarning(UserWarning):
    """Both operands of an elementwise op were expanded by broadcasting, and one of them by
    gaining an axis it did not have: the [n,1] against [n] case, which quietly becomes [n,n]."""


# ---- the broadcast guard ------------------------------------------------------------------


def expansion(shape: tuple, out: tuple) -> tuple:
    """(grown, stretched) of one operand broadcast to `out`: grown = it gains a leading axis of
    size > 1 that it did not have; stretched = one of its own size-1 axes becomes > 1."""
    lead = len(out) - len(shape)
    grown = any(_many(d) for d in out[:lead])
    stretched = any(s == 1 and _many(d) for s, d in zip(shape, out[lead:]))
    return grown, stretched


def _many(d) -> bool:
    return isinstance(d, str) or d > 1        # a dimension name (compiler/shapes.py) may be


def suspicious_broadcast(node: Node) -> bool:
    """True when at least two operands are expanded and one of them gained an axis; an explicit
    outer broadcast ([n,1] against [1,d]) and a scalar operand are fine."""
    rec = OPS.get(node.op)         # (None: an op `verify` will refuse)
    if rec is None or not (rec.elementwise and len(node.inputs) > 1):     # not broadcasting
        return False
    out = node.out.shape
    kinds = [expansion(v.shape, out) for v in node.inputs if v.shape != ()]
    expanded = [g or s for g, s in kinds]
    return sum(expanded) >= 2 and any(g for g, _ in kinds)


def broadcast_message(node: Node) -> str:
    shapes = " and ".join(str(v.shape) for v in node.inputs)
    where = f" at {node.loc}" if node.loc else ""
    return (f"{node.op}: shapes {shapes} broadcast to {node.out.shape}: both operands are "
            f"expanded{where} (is a [n,1] meeting a [n]?); if this is meant, say so with "
            "x[:, None] / x[None, :] or reshape, else fix the shapes (e.g. y.reshape(-1) or "
            "keepdims=False)")


def broadcast_guard(strict: bool = False):
    """A `Builder.on_node` callback: warn (BroadcastWarning, attributed to the model's line) or,
    when `strict`, raise ShapeError on a suspicious broadcast."""
    def on_node(node: Node) -> None:
        if not suspicious_broadcast(node):
            return
        msg = broadcast_message(node)
        if strict:
            raise ShapeError(msg + " [strict_broadcast=True]")
        frame = _user_frame()
        if frame is None:
            warnings.warn(msg, BroadcastWarning, stacklevel=2)
        else:
            filename = frame.f_code.co_filename
            # module_globals lets the warning show the source line of a module whose file
            # linecache cannot read (a zip import); the loader of `python -c`, stdin and the
            # REPL (BuiltinImporter) raises ImportError when asked, so pass it only for files
            source = None if filename.startswith("<") else frame.f_globals
            warnings.warn_explicit(msg, BroadcastWarning, filename, frame.f_lineno,
                                   module=frame.f_globals.get("__name__"),
                                   registry=frame.f_globals.setdefault("__warningregistry__", {}),
                                   module_globals=source)
    return on_node


_HERE = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _user_frame():
    dsl = sys.modules.get("frontends.dsl")    # not loaded: no DSL frame can be on the stack
    in_dsl = dsl._is_gradc if dsl is not None else (lambda filename: False)
    f = sys._getframe(1)
    while f is not None and (in_dsl(f.f_code.co_filename)
                             or os.path.abspath(f.f_code.co_filename).startswith(_HERE)):
        f = f.f_back
    return f


# ---- debug_nans -----------------------------------------------------------------------------
@dataclass
class Culprit:
    """One value holding a NaN or inf: the node that made it (None for a graph input)."""
    name: str
    node: Node | None
    count: int
    size: int
    index: tuple
    value: float
    operands: list = field(default_factory=list)   # "x: f64[4] in [-1, 4]" per node input
    inherited: bool = False     # its operands already held NaN/inf (no node made one afresh)

    def __str__(self) -> str:
        what = "input" if self.node is None else f"{self.node.op}("
        if self.node is not None:
            what += ", ".join(v.name for v in self.node.inputs) + ")"
        where = f" at {self.node.loc}" if self.node is not None and self.node.loc else ""
        rule = f" [{self.node.rule}]" if self.node is not None and self.node.rule else ""
        at = f" at index {self.index}" if self.index != () else ""
        ops = f"; operands: {', '.join(self.operands)}" if self.operands else ""
        verb = "passed on" if self.inherited else "produced"
        return (f"{self.name} = {what}{where}{rule} {verb} {self.value}{at} "
                f"({self.count} of {self.size} values){ops}")


@dataclass
class NanReport:
    """`forward` / `gradient`: the first value (in the order the graph computes them) holding a
    NaN or inf, or None.  `outputs`: the outputs that hold one."""
    graph: str
    forward: Culprit | None
    gradient: Culprit | None
    outputs: list

    @property
    def found(self) -> bool:
        return self.forward is not None or self.gradient is not None

    def __bool__(self) -> bool:
        return self.found

    def __str__(self) -> str:
        if not self.found:
            return f"debug_nans({self.graph}): every value is finite"
        lines = [f"debug_nans({self.graph}):"]
        if self.forward is not None:
            lines.append(f"  forward: first non-finite value: {self.forward}")
        if self.gradient is not None:
            lines.append(f"  gradient: first non-finite value: {self.gradient}")
        lines.append("  outputs holding NaN/inf: " + (", ".join(self.outputs) or
                     "none (the non-finite values above are masked before the outputs)"))
        return "\n".join(lines)


def _bad(a) -> bool:
    return np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all()


def _culprit(name: str, node, values: dict) -> Culprit:
    a = values[name]
    mask = ~np.isfinite(a)
    idx = tuple(int(i) for i in np.argwhere(mask)[0]) if a.ndim else ()
    idx = idx[0] if len(idx) == 1 else idx
    ops = []
    for v in (node.inputs if node is not None else ()):
        x = values[v.name]
        if x.size and np.issubdtype(x.dtype, np.floating) and np.isnan(x).all():
            ops.append(f"{v.name}: {v.type} all NaN")
        elif x.size and np.issubdtype(x.dtype, np.number):
            nan = " and NaN" if np.issubdtype(x.dtype, np.floating) and np.isnan(x).any() else ""
            ops.append(f"{v.name}: {v.type} in [{np.nanmin(x):.4g}, {np.nanmax(x):.4g}]{nan}")
        else:
            ops.append(f"{v.name}: {v.type}")
    return Culprit(name, node, int(mask.sum()), int(a.size), idx,
                   float(a[idx] if idx != () else a[()]), ops)


def _first(graph: Graph, values: dict, nodes, with_inputs: bool):
    if with_inputs:
        for v in graph.inputs:
            if _bad(values[v.name]):
                return _culprit(v.name, None, values)
    bad = [n for n in nodes if _bad(values[n.out.name])]
    for n in bad:   # prefer the node that made the first one from finite operands
        if not any(_bad(values[v.name]) for v in n.inputs):
            return _culprit(n.out.name, n, values)
    if not bad:
        return None
    c = _culprit(bad[0].out.name, bad[0], values)
    c.inherited = True
    return c


def debug_nans(graph: Graph, inputs: dict | None = None, *, of=None, wrt=None,
               **kw) -> NanReport:
    """Run the reference interpreter on `graph` and on its gradient (`compiler.grad(graph,
    wrt, of)`, when the graph has a float scalar output to differentiate; a graph that already
    computes gradients is run as it is) and name the first node that produced a NaN or inf in
    each, with its op, source line, gate rule and the range of its operands.  A forward graph
    is first canonicalized (compiler.passes.canonicalize) as `grad` and the compiler do, so the
    report names the node that really overflows, not one the compiler rewrites away.  Returns a
    NanReport (falsy when every value is finite); print it."""
    args = dict(inputs or {}, **kw)
    if not any(n.rule is not None for n in graph.nodes):
        graph = canonicalize(graph)    # the forward graph that compiled code and grad see
    values = interpret(graph, args, all_values=True)
    forward = _first(graph, values, graph.nodes, with_inputs=True)
    outputs = [k for k, v in graph.outputs.items() if _bad(values[v.name])]
    gradient = None
    is_gradient = any(n.rule is not None for n in graph.nodes)
    dg = graph if is_gradient else None
    if dg is None:
        try:
            dg = grad(graph, wrt=wrt, of=of)
        except GradcError:
            if of is not None or wrt is not None:
                raise        # the caller named what to differentiate: the mistake is theirs
            dg = None        # nothing to differentiate (no float scalar output)
    if dg is not None:
        dvalues = values if dg is graph else interpret(dg, args, all_values=True)
        gradient = _first(dg, dvalues, [n for n in dg.nodes if n.rule is not None],
                          with_inputs=False)
        outputs += [k for k, v in dg.outputs.items()
                    if k not in graph.outputs and _bad(dvalues[v.name])]
    return NanReport(graph.name, forward, gradient, outputs)
