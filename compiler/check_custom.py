"""Does each custom gate's rule equal the derivative of its forward? (issue 18.6)

For every custom gate in a graph (compiler/custom.py), at the input types it is used with:
the loss Σ G·gate(x…) with a random upstream G, its gradient by the user's rule (the rule's
own graph, rendered at 30 digits) against the chain rule over the gate's FORWARD (its nodes
inlined, each op's SymPy derivative: compiler/mpeval.ChainRule), at random points away from
kinks.  A rule that differs is FLAGGED, not failed: a straight-through estimator or a
surrogate gradient differs on purpose; the flag gives the first disagreeing point.  The model's
own check (compiler/check.py) takes each custom gate's rule as given, so a flagged gate does
not fail it; this report says whether that trust is the true derivative.
"""
from __future__ import annotations

from dataclasses import dataclass

from .lazy import mpmath
import numpy as np

from .builder import Builder
from .custom import custom_gate_of, inline_custom
from .ir import GradcError, Graph, TensorType
from .mpeval import ChainRule, number
from .symbolic import render


@dataclass
class CustomGateCheck:
    """The verdict on one custom gate at one set of input types."""
    name: str
    defined_at: str
    rule_at: str | None
    types: tuple
    points: int = 0                 # points compared
    first: str | None = None        # the first disagreement, in words (None: agrees)
    note: str | None = None         # why it could not be compared

    @property
    def differs(self) -> bool:
        return self.first is not None

    def __str__(self) -> str:
        head = (f"custom gate {self.name} ({self.defined_at}; gate rule "
                f"{self.rule_at or 'missing'}) on {', '.join(str(t) for t in self.types)}")
        if self.note:
            return f"{head}: not compared: {self.note}"
        if self.first:
            return (f"FLAGGED {head}: its gate rule differs from the derivative of its forward "
                    f"(flagged, not failed: a straight-through or surrogate gradient differs on "
                    f"purpose); first at {self.first}")
        return (f"{head}: its gate rule equals the derivative of its forward at {self.points} "
                "point(s) (30 digits)")


def _fmt(a) -> str:
    return np.array2string(np.asarray(a, dtype=float), precision=6, threshold=12,
                           separator=", ").replace("\n", "")


def check_custom_gates(graph: Graph, switches=lambda exprs: [], *, points: int = 3,
                       seed: int = 0, tol: float = 1e-9, margin: float = 1e-3) -> list:
    """One CustomGateCheck per (custom gate, input types) used in `graph`, in graph order.
    `switches(exprs)` names the kink expressions (compiler/check.py's `kinks`); a point where
    one is within `margin` of 0 is not used."""
    seen: dict = {}
    for n in graph.nodes:
        gate = custom_gate_of(n.op)
        if gate is not None:
            seen.setdefault((n.op, tuple(v.type for v in n.inputs)), gate)
    rng = np.random.default_rng(seed)
    return [_check_one(gate, types, switches, points, rng, tol, margin)
            for (_, types), gate in seen.items()]


def _check_one(gate, types, switches, points, rng, tol, margin) -> CustomGateCheck:
    types = tuple(TensorType("f64", t.shape) for t in types)
    out = CustomGateCheck(gate.name, gate.defined_at, gate.rule_at, types)
    if gate.rule is None:
        out.note = "it has no gate rule"
        return out
    g = Graph(f"{gate.name}_check")
    b = Builder(g)
    xs = [b.add_input(p, t) for p, t in zip(gate.params, types)]
    y = b.emit(gate.name, xs)
    up = b.add_input("G", y.value.type)
    g.outputs["loss"] = (y * up).sum().value
    names = [x.name for x in xs]
    try:
        rg = gate.rule_graph(types)
        chain = ChainRule(inline_custom(g), g.outputs["loss"].name, names, switches=switches)
    except GradcError as e:
        out.note = str(e)
        return out
    tries = 0
    while out.points < points and tries < 40 * points:
        tries += 1
        point = {x.name: 2.0 * rng.standard_normal(x.shape) for x in xs}
        point[up.name] = rng.standard_normal(up.shape)
        try:
            _, ref, kinks = chain.at(point)
        except (ZeroDivisionError, OverflowError, ArithmeticError):
            continue
        if any(isinstance(z, mpmath.mpf) and 0 < abs(z) < margin for z in kinks):
            continue
        env = render(rg, values={v.name: point[x.name] for v, x in zip(rg.inputs, xs + [up])})
        for p, x in zip(gate.params, xs):
            mine = env[rg.outputs["d" + p].name]
            for k, r in enumerate(ref[x.name].flat):
                got = number(mine.flat[k])
                if not mpmath.isfinite(r):
                    continue
                if not (isinstance(got, mpmath.mpf) and abs(got - r) <= tol * max(1, abs(r))):
                    idx = "" if not x.shape else str([int(i) for i in
                                                       np.unravel_index(k, x.shape)])
                    ins = "; ".join(f"{q} = {_fmt(point[v.name])}"
                                    for q, v in zip(gate.params, xs))
                    out.first = (f"{ins}; G = {_fmt(point[up.name])}: d{p}{idx} is "
                                 f"{float(got):.6g} by the rule, {float(r):.6g} by the "
                                 "derivative of the forward")
                    out.points += 1
                    return out
        out.points += 1
    if not out.points:
        out.note = "no point away from the forward's kinks was found"
    return out
