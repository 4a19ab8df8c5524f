"""Reverse mode as a pass: `grad(graph, wrt)` returns a new Graph that computes the original
outputs and, for each input x in `wrt`, `dx` = ∂(output)/∂x.

The walk is iterative, over the forward nodes in reverse topological order (the node list
order, reversed).  Each node that lies on a path from a `wrt` input to the differentiated output
receives the sum of its upstream gradients (fan-out is summed with `add`: the lecture's copy
gate), then its op's gate rule builds the downstream gradient of each input as ordinary IR.
Binary ops' gate rules answer in the broadcast output shape; `unbroadcast` (the one place where
broadcasting is undone: broadcast_to's gate rule, compiler/ops/reduce.py) sums over the
broadcast axes.  Integer and bool inputs get no gradient.
"""
from __future__ import annotations

import inspect
from collections import Counter

from . import trees
from .builder import Builder, Var
from .gc_pause import paused
from .ir import GradcError, Graph, Namer, Node, UnsupportedError, Value
from .ops import OPS
from .ops.reduce import unbroadcast   # broadcast_to's gate rule (re-exported as compiler's)
from .passes import canonicalize
from .passes.selected_zeros import guard_selected_zeros


_RULE_PARAMS: dict = {}   # gate rule -> None (it takes **attrs) or the attribute names it takes


def _call_rule(fn, g, out, inputs, attrs):
    try:
        params = _RULE_PARAMS[fn]
    except KeyError:
        sig = inspect.signature(fn).parameters
        params = _RULE_PARAMS[fn] = (None if any(p.kind is p.VAR_KEYWORD for p in sig.values())
                                     else frozenset(sig))
    if params is None:
        return fn(g, out, *inputs, **attrs)
    return fn(g, out, *inputs, **{k: v for k, v in attrs.items() if k in params})


def _copy_forward(graph: Graph, name: str):
    """A new graph with the same inputs and nodes (fresh Value objects, same names)."""
    new = Graph(name)
    env: dict = {}
    for v in graph.inputs:
        env[v.name] = Value(v.name, v.type)
        new.inputs.append(env[v.name])
    for n in graph.nodes:
        out = Value(n.out.name, n.out.type)
        env[out.name] = out
        new.nodes.append(Node(n.op, tuple(env[v.name] for v in n.inputs), dict(n.attrs), out,
                              n.loc, n.rule, n.of))
    return new, env


def _wrt_list(graph: Graph, wrt) -> list:
    if wrt is None:
        return [v.name for v in graph.inputs if v.type.is_float]
    wrt = [wrt] if isinstance(wrt, str) else list(wrt)
    count = Counter(name for name in wrt if isinstance(name, str))   # O(1) per name, not
    inputs = {v.name: v for v in graph.inputs}                       # a scan of wrt/inputs
    for name in wrt:
        if not isinstance(name, str):
            raise GradcError(f"grad: wrt holds {name!r}; give input names (strings), e.g. "
                             f"wrt=[{', '.join(repr(v.name) for v in graph.inputs[:2])}]")
        if count[name] > 1:
            raise GradcError(f"grad: input {name!r} is named twice in wrt={wrt!r}")
        v = inputs[name] if name in inputs else graph.input(name)   # graph.input: the error
        if not v.type.is_float:
            raise UnsupportedError(f"grad: input {name!r} is {v.type}; only float inputs have "
                                   "gradients (integer labels get none)")
    return wrt


def _pick_output(graph: Graph, of):
    if of is None:
        if len(graph.outputs) != 1:
            raise GradcError(f"grad: graph {graph.name!r} has outputs {list(graph.outputs)}; "
                             "say which to differentiate with of='name'")
        of = next(iter(graph.outputs))
    if of not in graph.outputs:
        raise GradcError(f"grad: no output {of!r}; outputs are {list(graph.outputs)}")
    out = graph.outputs[of]
    if out.shape != () or not out.type.is_float:
        hint = (" or, for the second derivative of a gradient, compiler.hvp(graph, wrt) or "
                "compiler.hessian(graph, wrt)" if of.startswith("d") and out.type.is_float else "")
        raise GradcError(f"grad: output {of!r} is {out.type}; reverse mode needs a float scalar "
                         f"(reduce it, e.g. dsl.sum(y) or dsl.mean(y){hint})")
    return of, out


def gradient_name(outputs: dict, of: str, x: str) -> str:
    """The output name of ∂(of)/∂x: `d<x>`, or `d<of>_d<x>` when `d<x>` is taken (the graph
    is itself a gradient graph: grad(grad(g), of="dx", wrt="y") names ∂²f/∂x∂y `ddx_dy`)."""
    return "d" + x if "d" + x not in outputs else f"d{of}_d{x}"


def grad(graph: Graph, wrt=None, of=None) -> Graph:
    """∂(output `of`)/∂(each input in `wrt`) as a new graph.  `wrt` defaults to every float
    input; `of` defaults to the only output.  Outputs: the original ones, then `d<input>`
    (`d<of>_d<input>` when the graph already has an output `d<input>`: see gradient_name).
    The gate rules are applied to `canonicalize(graph)`, the stable form of the forward graph
    (log∘σ → −softplus(−x), ...): the gradient is the gradient of the function the compiled
    code evaluates, finite wherever that is.  The graph returned is guarded against selected
    zeros (compiler/passes/selected_zeros.py), so every consumer sees the same finite values."""
    if not isinstance(graph, Graph):
        hint = (" (trace it first: compiler.grad(dsl.trace(fn, x=f64[...])))"
                if callable(graph) else "")
        raise GradcError(f"grad takes a compiler.Graph, got {type(graph).__name__}{hint}")
    flat, groups = trees.resolve_wrt(graph, wrt)     # a tree or a path (params.l1): its leaves
    with paused():         # nodes freed by reference counting (compiler/gc_pause.py)
        new = guard_selected_zeros(*reverse_mode(graph, flat, of))
    return trees.attach_gradients(graph, new, flat, groups)   # dparams as a tree


def reverse_mode(graph: Graph, wrt=None, of=None):
    """grad before the selected-zero pass: (graph, sites, first), where sites are the (G name,
    result name) pairs of the zero-safe gate rules applied and `first` the index of the first
    gradient node (the arguments of guard_selected_zeros)."""
    graph = canonicalize(graph)
    wrt = _wrt_list(graph, wrt)
    of, target = _pick_output(graph, of)
    new, env = _copy_forward(graph, graph.name)
    namer = Namer(env)
    for k in list(graph.outputs):
        new.outputs[k] = env[graph.outputs[k].name]
    b = Builder(new, namer)
    made = _Made(new)
    first = len(new.nodes)           # the nodes from here on are the gradient's
    sites: list = []                 # (G, result) of each zero-safe gate rule applied

    # which values depend on a wrt input (forward), and which reach the target (backward)
    live = set(wrt)
    for n in graph.nodes:
        if any(v.name in live for v in n.inputs) and n.out.type.is_float:
            live.add(n.out.name)
    useful = {target.name}
    for n in reversed(graph.nodes):
        if n.out.name in useful:
            useful.update(v.name for v in n.inputs)

    pending: dict = {}   # value name -> list of upstream gradient Vars
    b.loc, b.rule, b.of = None, "seed: ∂out/∂out = 1", target.name
    pending[target.name] = [b.const(1.0, target.dtype)]
    grads: dict = {}

    for n in reversed(graph.nodes):
        name = n.out.name
        if name not in pending or name not in live:
            continue
        g = _accumulate(b, name, pending.pop(name), made, n.loc)
        rules = OPS[n.op].gate_rules(len(n.inputs))
        ins = [Var(b, env[v.name]) for v in n.inputs]
        out = Var(b, env[name])
        for k, v in enumerate(n.inputs):
            if v.name not in live or v.name not in useful or not v.type.is_float:
                continue
            if rules[k] is None:
                continue
            text, fn = rules[k]
            b.loc, b.rule, b.of = n.loc, f"{n.op} gate: {text}", name
            try:
                dv = _call_rule(fn, g, out, ins, n.attrs)
                if OPS[n.op].zero_safe:
                    sites.append((g.value, dv.value))
                dv = unbroadcast(dv, v.shape)
            except GradcError as e:
                raise type(e)(f"while building the {n.op} gate rule of {name}: {e}") from None
            pending.setdefault(v.name, []).append(dv)
    for x in wrt:
        contributions = pending.pop(x, None)
        if contributions is None:
            b.loc, b.rule, b.of = None, "no path from this input to the output: gradient 0", x
            grads[x] = b.const(0, env[x].dtype, env[x].shape)
        else:
            grads[x] = _accumulate(b, x, contributions, made)
    for x in wrt:
        key = gradient_name(new.outputs, of, x)
        if key in new.outputs:
            raise GradcError(f"grad: output name {key!r} is taken; rename the input {x!r} or the "
                             "output")
        new.outputs[key] = grads[x].value
    return new, [(g.name, d.name) for g, d in sites], first


class _Made:
    """The values this pass added to `graph` (after the forward copy): id(value) -> its node's
    loc.  Brought up to date by `sync`, which reads only the nodes appended since its last call,
    so the whole pass stays linear in the number of nodes."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.seen = len(graph.nodes)
        self.loc: dict = {}

    def sync(self) -> dict:
        nodes = self.graph.nodes
        for n in nodes[self.seen:]:
            self.loc[id(n.out)] = n.loc
        self.seen = len(nodes)
        return self.loc


def _accumulate(b: Builder, name: str, parts: list, made: _Made, loc=None) -> Var:
    """Sum the upstream gradients of one value (fan-out: the copy gate), and name the result
    `d<name>` when this pass created it as a temporary.  The sum cites `loc`, the model line of
    the value fanned out; a value without one (a graph input) cites the line of its uses when
    they share one line, else none: never merely the line of the last gate built."""
    new = made.sync()
    total = parts[0]
    if len(parts) > 1:
        if loc is None:
            uses = {new.get(id(p.value)) for p in parts}
            loc = uses.pop() if len(uses) == 1 else None
        for k, p in enumerate(parts, 1):      # the contribution of each use: dW1_1, dW1_2, ...
            if p.value.temp and id(p.value) in new:
                b.rename(p, f"d{name}_{k}")
        b.loc, b.rule, b.of = loc, "fan-out: the gradients of every use are summed", name
        for p in parts[1:]:
            total = total + p
        new = made.sync()
    if total.value.temp and id(total.value) in new:
        b.rename(total, "d" + name)
    return total
