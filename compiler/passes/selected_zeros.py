"""Selected-zero safety: a pass over the gradient graph (docs/numerics.md, "zero-safe gates").

A gradient is linear in the upstream gradient G, so where G is exactly 0 the downstream
gradient is exactly 0, whatever the local derivative.  In floating point a gate rule of the form
G·f'(x) gives NaN there when f'(x) is inf or NaN (0·inf, 0/0).  Such zeros come from a gate
that selects (an op whose record has the `selects` trait: where, relu, maximum, max, pick,
getitem, dropout, ...): the inactive branch of `where(x > 0, sqrt(x), 0)` receives G = 0.

`guard_selected_zeros(graph, sites, first)` rewrites each site (G, d) -- d the result of a gate
rule of an op with the `zero_safe` trait, G the upstream gradient it was built from -- into

    d' = where(G == 0, 0, d)          # same provenance (loc, rule, of) as d's node

when G may carry selected zeros: some node at index >= `first` (the nodes the gradient pass
built) on a path to G is a selecting op.  d' takes d's name and d becomes a temporary, so
the generated code reads `dx = np.where(dt == 0.0, 0.0, dt / (2.0 * t2))  # sqrt gate: ...`.
A model without a selecting gate gets the graph unchanged.  Gate rules stay pure functions
of their inputs; only this pass decides where a guard goes.

Where it runs: `compiler.grad` applies it to the graph it builds and returns the guarded
graph, so every consumer (compile, with or without optimization passes; interpret; hvp and
hessian, which call grad; train_step; the checks) sees the same finite gradients.

check_hessian_against_sympy renders the second-order graphs built without this pass
(`hvp(..., guard=False)`, `hessian(..., guard=False)`: autodiff.reverse_mode alone; equal
wherever no 0·inf is selected away, and SymPy's handling of the guards' conditions is far too
slow), and the compiled backends run the guarded graphs.

The pass does not mutate its input, keeps every output name, and is idempotent: a site whose
value is already a guard where(G == 0, 0, _) is left as it is.
"""
from __future__ import annotations

from ..builder import Builder, Var, equal, where
from ..ir import Graph, Namer, Node, Value
from ..ops import OPS


def carries_selected_zeros(graph: Graph, first: int) -> set:
    """Names of the values computed, through nodes at index >= `first`, from a selecting op."""
    marked: set = set()
    for n in graph.nodes[first:]:
        if OPS[n.op].selects or any(v.name in marked for v in n.inputs):
            marked.add(n.out.name)
    return marked


def _is_guard(node, g: str, producers: dict) -> bool:
    if node.op != "where":
        return False
    cond = producers.get(node.inputs[0].name)
    return (cond is not None and cond.op == "equal" and cond.inputs[0].name == g)


def guard_selected_zeros(graph: Graph, sites, first: int) -> Graph:
    """`graph` with a guard where(G == 0, 0, d) on each site (G name, d name) whose G may carry
    selected zeros (see the module docstring).  A new graph; `graph` is not changed."""
    marked = carries_selected_zeros(graph, first)
    producers = graph.producers()
    index = {n.out.name: k for k, n in enumerate(graph.nodes)}
    guard_after: dict = {}       # d name -> G name
    for g, d in sites:
        node = producers.get(d)
        if (g in marked and node is not None and index[d] >= first and d != g
                and not _is_guard(node, g, producers)):
            guard_after.setdefault(d, g)
    if not guard_after:
        return graph
    values = graph.values()
    out = Graph(graph.name, list(graph.inputs), origin=graph.origin)
    namer = Namer(values)
    b = Builder(out, namer)
    env: dict = {}               # old name -> new Value
    for v in graph.inputs:
        env[v.name] = v
    for n in graph.nodes:
        ins = tuple(env.get(v.name, v) for v in n.inputs)
        if n.out.name not in guard_after:
            new_out = Value(n.out.name, n.out.type)
            out.nodes.append(Node(n.op, ins, dict(n.attrs), new_out, n.loc, n.rule, n.of))
            env[n.out.name] = new_out
            continue
        d = Value(namer.temp(), n.out.type)      # the unguarded value becomes a temporary
        out.nodes.append(Node(n.op, ins, dict(n.attrs), d, n.loc, n.rule, n.of))
        b.loc, b.rule, b.of = n.loc, n.rule, n.of
        g = Var(b, env[guard_after[n.out.name]])
        guarded = where(equal(g, 0), 0, Var(b, d))
        namer.release(guarded.value.name)
        guarded.value.name = n.out.name
        env[n.out.name] = guarded.value
    out.outputs = {k: env.get(v.name, v) for k, v in graph.outputs.items()}
    return out
