"""Custom gate rules (issue 18.6): an op defined by DSL code, with a gate rule of the user's,
as JAX's custom_vjp.

    @dsl.custom_gate
    def ste_clip(x):                 # forward, in the DSL
        return dsl.minimum(dsl.maximum(x, -1.0), 1.0)

    @ste_clip.gate
    def _(g, out, x):                # gate rule, built from DSL ops: dx
        return g                     # straight-through

A call traces to ONE node whose op is the gate's name (`y: f64[3] = ste_clip(x)`), so the IR
text, the DOT picture and the gradient's rule comments show it by name.  Its op record (an
`OpRecord` like a primitive's, found by name through `OPS` but not one of the table's items:
walking the table walks the primitives only) has:

    shape    the forward traced once per input types into a sub-graph (cached)
    eval     that sub-graph run by the reference interpreter
    gate     the user's rule, called with the upstream gradient G, the op's result and its
             inputs as traced values: it builds IR like any gate rule; it returns one gradient
             per input (a tuple, or the value itself for one input; None for "no gradient"),
             each of its input's shape and dtype, else an error naming the op and the rule's line
    sympy    the sub-graph rendered in SymPy: the TRUE forward (the checks compare the rule
             with its derivative: compiler/check_custom.py)
    numpy, llvm   none of their own: `inline_custom` (which compiler.compile runs first)
             replaces each custom node by its forward sub-graph, every node of it commented
             `<name>: forward of the custom gate`, so both backends compile it from primitives

The text form round-trips in any process where the gate is defined (the module defining it
imported); elsewhere parsing says the op is no primitive and no custom gate defined there.
Names are unique per process: a second gate named `ste_clip` becomes `ste_clip_1`.
"""
from __future__ import annotations

import dataclasses
import inspect
import os
import threading

import numpy as np

from .builder import Builder, Var
from .interpret import interpret
from .ir import (NUMPY_DTYPE, GradcError, Graph, Namer, Node, ShapeError, TensorType,
                 UnsupportedError, Value, verify)
from .ops.record import OPS, OpRecord
from .symbolic import render

_DTYPE_OF = {v: k for k, v in NUMPY_DTYPE.items()}      # "float64" -> "f64"
_LOCK = threading.Lock()
_GATES: dict = {}        # name -> CustomGate (its record is OPS.custom[name])


class CustomGateError(GradcError, ValueError):
    """A custom gate's forward or gate rule does not fit (its message names the op and the
    user's line)."""


def _where(fn) -> str:
    code = getattr(fn, "__code__", None)
    if code is None:
        return "<unknown>"
    return f"{os.path.basename(code.co_filename)}:{code.co_firstlineno}"


def custom_gate_of(op: str):
    """The CustomGate named `op`, or None for a primitive (or an unknown name)."""
    return _GATES.get(op)


class CustomGate:
    """A user's op: `fn` its forward in DSL code, `rule` its gate rule (set with `.gate`)."""

    def __init__(self, fn, name: str | None = None):
        if not callable(fn):
            raise UnsupportedError(f"custom_gate decorates a function, got {type(fn).__name__}")
        self.fn = fn
        self.defined_at = _where(fn)
        sig = inspect.signature(fn)
        self.params = [p.name for p in sig.parameters.values()]
        if not self.params or any(p.kind not in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
                                  or p.default is not p.empty for p in sig.parameters.values()):
            raise UnsupportedError(f"custom gate {fn.__name__} ({self.defined_at}): its forward "
                                   "takes one or more plain positional arrays (no defaults, "
                                   "*args or keywords)")
        self.rule = None
        self.rule_at = None
        self._forward: dict = {}
        self._adjoint: dict = {}
        base = name or getattr(fn, "__name__", "custom")
        if not (isinstance(base, str) and base.isidentifier()) or base == "<lambda>":
            raise UnsupportedError(f"custom gate ({self.defined_at}): its name {base!r} must be "
                                   "an identifier; pass name='...'")
        with _LOCK:
            self.name = base
            k = 0
            while self.name in OPS:
                if base in OPS and base not in OPS.custom:
                    raise UnsupportedError(f"custom gate {base} ({self.defined_at}): {base!r} is "
                                           "a primitive op; give the gate another name")
                k += 1
                self.name = f"{base}_{k}"
            self._register("no rule yet")
            _GATES[self.name] = self
        self.__doc__ = fn.__doc__
        self.__name__ = self.name

    def __repr__(self) -> str:
        return f"<custom gate {self.name} ({self.defined_at})>"

    def _register(self, text: str) -> None:
        """(Re)place the op record; `text` is its gate rule's text (generated code's comments)."""
        OPS.custom[self.name] = OpRecord(
            name=self.name, shape=self._shape, eval=self._eval, sympy=self._sympy,
            gate=tuple((text, self._rule_for(k)) for k in range(len(self.params))),
            numpy=_NotInlined(self.name), llvm=_NotInlined(self.name))

    # ---- the user's API --------------------------------------------------------------------
    def gate(self, rule):
        """Decorator: `rule(g, out, *inputs)` returns the downstream gradient of each input."""
        if self.rule is not None:
            raise CustomGateError(f"custom gate {self.name} already has a gate rule "
                                  f"({self.rule_at})")
        if not callable(rule):
            raise CustomGateError(f"custom gate {self.name}: .gate takes a function "
                                  f"(g, out, {', '.join(self.params)})")
        ps = list(inspect.signature(rule).parameters.values())
        varargs = any(p.kind is p.VAR_POSITIONAL for p in ps)
        positional = [p for p in ps if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        if not varargs and len(positional) != 2 + len(self.params):
            raise CustomGateError(
                f"custom gate {self.name}: its gate rule ({_where(rule)}) takes "
                f"{len(positional)} argument(s); it must take (g, out, {', '.join(self.params)})")
        self.rule, self.rule_at = rule, _where(rule)
        with _LOCK:
            self._register(f"the user's rule ({self.rule_at})")
        return rule

    def __call__(self, *args, **kwargs):
        if kwargs:
            raise UnsupportedError(f"custom gate {self.name}: pass its inputs positionally, got "
                                   f"keywords {', '.join(kwargs)}")
        like = next((a for a in args if isinstance(a, Var)), None)
        if like is None:
            raise UnsupportedError(f"custom gate {self.name} is called on traced values, inside "
                                   "a function given to dsl.trace")
        if len(args) != len(self.params):
            raise UnsupportedError(f"custom gate {self.name} takes {len(self.params)} input(s) "
                                   f"({', '.join(self.params)}), got {len(args)}")
        for p, a in zip(self.params, args):
            if not isinstance(a, Var) or a.b is not like.b:
                raise UnsupportedError(f"custom gate {self.name}: input {p} must be a traced "
                                       f"value of this trace, got {type(a).__name__}")
        return like.b.emit(self.name, list(args))

    # ---- the record's rules ----------------------------------------------------------------
    def forward(self, types) -> Graph:
        """The forward traced on inputs of `types` (cached): a graph with inputs named after the
        parameters and one output `out`."""
        types = tuple(types)
        hit = self._forward.get(types)
        if hit is not None:
            return hit
        for p, t in zip(self.params, types):
            if not t.is_float:
                raise ShapeError(f"custom gate {self.name}: input {p} is {t}; custom gates take "
                                 "float inputs")
        if len(types) != len(self.params):
            raise ShapeError(f"custom gate {self.name} takes {len(self.params)} input(s), got "
                             f"{len(types)}")
        g = Graph(self.name)
        b = Builder(g, locate=lambda: self.defined_at)
        try:
            out = self.fn(*[b.add_input(p, t) for p, t in zip(self.params, types)])
        except GradcError as e:
            raise type(e)(f"in custom gate {self.name} ({self.defined_at}): {e}") from None
        if not isinstance(out, Var) or out.b is not b:
            raise CustomGateError(f"custom gate {self.name} ({self.defined_at}): its forward "
                                  f"must return one value computed from its inputs, got "
                                  f"{type(out).__name__}")
        g.outputs["out"] = out.value
        try:
            verify(g)
        except GradcError as e:
            raise CustomGateError(f"custom gate {self.name} ({self.defined_at}): {e} (a value "
                                  "traced outside the gate must be passed in as an input)"
                                  ) from None
        self._forward[types] = g
        return g

    def _shape(self, ins, **attrs):
        return self.forward(ins).outputs["out"].type

    def _eval(self, *arrays):
        types = [TensorType(_DTYPE_OF.get(str(a.dtype), "f64"), a.shape)
                 for a in map(_array, arrays)]
        g = self.forward(types)
        return interpret(g, {v.name: a for v, a in zip(g.inputs, arrays)})["out"]

    def _sympy(self, *arrays):
        g = self.forward([TensorType("f64", a.shape) for a in map(_array, arrays)])
        env = render(g, symbols={v.name: _array(a) for v, a in zip(g.inputs, arrays)})
        return env[g.outputs["out"].name]

    def _rule_for(self, k: int):
        def rule(g, out, *inputs):
            return self.gradients(g, out, inputs)[k]
        return rule

    def gradients(self, g: Var, out: Var, inputs) -> list:
        """The user's rule applied, checked: one gradient per input, of its shape and dtype."""
        loc = g.b.where()
        at = f"gate rule at {self.rule_at}" + (f", for the node at {loc}," if loc else "")
        if self.rule is None:
            raise CustomGateError(f"custom gate {self.name} ({self.defined_at}) has no gate rule"
                                  f"{' (used at ' + loc + ')' if loc else ''}; give it one with "
                                  f"@{self.name}.gate")
        res = self.rule(g, out, *inputs)
        if not isinstance(res, (tuple, list)):
            res = (res,)
        if len(res) != len(inputs):
            raise CustomGateError(f"custom gate {self.name}: its {at} returned {len(res)} "
                                  f"gradient(s) for {len(inputs)} input(s) "
                                  f"({', '.join(self.params)})")
        grads = []
        for p, r, x in zip(self.params, res, inputs):
            if r is None:
                r = g.b.const(0, x.dtype, x.shape)
            if not isinstance(r, Var) or r.b is not g.b:
                raise CustomGateError(f"custom gate {self.name}: its {at} returned a "
                                      f"{type(r).__name__} as d{p}; return values built from "
                                      "g, out and the inputs with dsl functions (or None)")
            if r.shape != x.shape or r.dtype != x.dtype:
                raise CustomGateError(f"custom gate {self.name}: its {at} returned d{p} of "
                                      f"type {r.value.type}, but {p} is {x.value.type}")
            grads.append(r)
        return grads

    def rule_graph(self, types) -> Graph:
        """The rule on its own (cached per input types): inputs named after the parameters and
        `G` (the upstream gradient), outputs `d<param>`, what the rule returns."""
        types = tuple(types)
        rg = self._adjoint.get(types)
        if rg is None:
            rg = Graph(f"{self.name}_rule")
            b = Builder(rg)
            xs = [b.add_input(p, t) for p, t in zip(self.params, types)]
            out = b.emit(self.name, xs)
            up = b.add_input("G", out.value.type)
            for p, d in zip(self.params, self.gradients(up, out, xs)):
                rg.outputs["d" + p] = d.value
            self._adjoint[types] = rg
        return rg

    def adjoint_at(self, node, env: dict, upstream):
        """The rule's downstream gradients of `node` (a node of this gate) at the numbers in
        `env` (object arrays of SymPy numbers by value name) for the upstream gradient
        `upstream`: what the rule computes there, for compiler/mpeval.py's chain rule."""
        rg = self.rule_graph(tuple(v.type for v in node.inputs))
        syms = {x.name: env[v.name] for x, v in zip(rg.inputs, node.inputs)}
        syms[rg.inputs[-1].name] = _array(upstream)      # G
        out = render(rg, symbols=syms)
        return [out[rg.outputs["d" + p].name] for p in self.params]


def _array(x) -> np.ndarray:
    return np.asarray(x)


class _NotInlined:
    """The numpy/llvm field of a custom gate's record: compile() inlines custom gates before
    any emitter runs, so reaching this is a caller that skipped it."""

    def __init__(self, name: str):
        self.name = name

    def lower(self, em, node):
        raise UnsupportedError(f"custom gate {self.name} reached the LLVM emitter; "
                               "compiler.compile inlines custom gates first")

    def __call__(self, *args, **kwargs):
        raise UnsupportedError(f"custom gate {self.name} reached the NumPy emitter; "
                               "compiler.compile inlines custom gates first")


def custom_gate(fn=None, *, name: str | None = None):
    """`@custom_gate` (or `@custom_gate(name="clip")`) makes `fn` a CustomGate."""
    if fn is None:
        return lambda f: CustomGate(f, name)
    return CustomGate(fn, name)


# ---- inlining: what compile() runs before the passes and the emitters ---------------------------
def inline_custom(graph: Graph) -> Graph:
    """`graph` with every custom-gate node replaced by the nodes of its forward sub-graph (the
    node's own name kept for its result; the others temporaries), repeated until none is left
    (a gate's forward may call another).  The graph itself when it has none."""
    while any(n.op in OPS.custom for n in graph.nodes):
        graph = _inline_once(graph)
    return graph


def _inline_once(graph: Graph) -> Graph:
    namer = Namer(graph.values())
    inputs = [Value(v.name, v.type) for v in graph.inputs]
    env = {v.name: v for v in inputs}
    nodes = []
    for n in graph.nodes:
        ins = tuple(env[v.name] for v in n.inputs)
        gate = custom_gate_of(n.op)
        if gate is None:
            out = Value(n.out.name, n.out.type)
            nodes.append(Node(n.op, ins, dict(n.attrs), out, n.loc, n.rule, n.of))
            env[out.name] = out
            continue
        sub = gate.forward([v.type for v in n.inputs])
        rule, of = (n.rule, n.of) if n.rule else (f"{gate.name}: forward of the custom gate",
                                                  n.out.name)
        local = {p.name: x for p, x in zip(sub.inputs, ins)}
        last = sub.outputs["out"]
        for m in sub.nodes:
            name = n.out.name if m.out is last else namer.temp()
            out = Value(name, m.out.type)
            nodes.append(Node(m.op, tuple(local[v.name] for v in m.inputs), dict(m.attrs), out,
                              n.loc, rule, of))
            local[m.out.name] = out
        env[n.out.name] = local[last.name]
    outputs = {k: env[v.name] for k, v in graph.outputs.items()}
    return dataclasses.replace(graph, inputs=inputs, nodes=nodes, outputs=outputs)
