"""The NumPy source emitter: a graph becomes a Python module that imports only numpy.

The module reads like a hand-written forward/backward pass: one statement per gate (a
temporary used once, inside the same source line or the same gate rule, is inlined into its
consumer), names from the model (`h`, `scores`, `dscores`, `dW1`), each gradient line commented
with the gate rule that produced it, the forward value whose gate it was (`[of h]`, or the
inlined expression `[of h @ W2]`) and the model line it belongs to, and a docstring header
holding the graph's IR.  Ops are written through their records only (forms.py): `numpy`, and
`into` (the `out=` form) for planned code.

Given a memory plan (compiler/passes/memory.py: buffers, which value goes in which, and which
operand a result overwrites), the same loop writes the function against preallocated buffers:
a node the plan gives a buffer is written with its op's `out=` form, so no array is allocated
per call, and the buffers arrive as the keyword argument `_buf` (the calling thread's set: the
kernel allocates one per thread):

    t0 = np.matmul(X, W1, out=_b0)
    t1 = np.add(t0, b1, out=_b0)          # [in place of t0]: t0 dies here
    h = np.maximum(t1, 0.0, out=_b0)      # relu, in place
    dW1 = np.matmul(X.T, dt1, out=_b5)    # transpose flag: a view handed to BLAS

A chain of elementwise nodes (a fusion group, compiler/passes/fusion.py) thus becomes a
sequence of in-place ufunc calls on one buffer.  Nodes without a buffer (small, or ops without
an `out=` form: softmax, the losses, indexing) are written as in plain code; only scalar
constants are inlined, so each planned statement is one node.
"""
from __future__ import annotations

import inspect
import textwrap

from ..constants import module_definitions, module_names
from ..ir import Graph, Node, UnsupportedError
from ..ops import OPS
from ..ops.labels import checked_labels, label_checks, label_error
from ..passes.fusion import fusion_groups
from ..passes.memory import MemoryPlan
from ..shapes import graph_dims
from .forms import ATOM, Expr, Stmt
from .numpy_helpers import LabelError
from ..text import print_graph
from .quote import comment as _quoted, docstring, identifier, identifiers


# the module-level names a guarded label op's check calls (see guard_labels)
LABEL_HELPERS = (LabelError, label_error, checked_labels)
_LABEL_NAMES = frozenset(h.__name__ for h in LABEL_HELPERS)


MAX_INLINE_DEPTH = 16   # an expression nests at most this many inlined nodes: a longer chain of
                        # single-use temporaries is cut into statements (a 20k-node chain stays
                        # within Python's parser and recursion limits, and readable)


def plan_inlining(graph: Graph) -> set:
    """Names of the values written inline into their single consumer instead of assigned
    (nested at most MAX_INLINE_DEPTH deep)."""
    users = graph.users()
    outputs = {v.name for v in graph.outputs.values()}
    inline = set()
    depth: dict = {}        # inlined value -> how many inlined nodes its expression nests
    for n in graph.nodes:
        form = OPS[n.op].numpy
        name = n.out.name
        if not isinstance(form, Expr) or name in outputs:
            continue
        if form.cheap and n.out.shape == ():
            inline.add(name)
            continue
        uses = users.get(name)
        if uses is None or len(uses) != 1 or not n.out.temp:
            continue
        u = uses[0]
        if u.loc == n.loc and u.rule == n.rule and u.of == n.of \
                and isinstance(OPS[u.op].numpy, Expr):    # same provenance: one comment
            d = 1               # 1 + the deepest inlined input
            for v in n.inputs:
                e = depth.get(v.name, 0)
                if e >= d:
                    d = e + 1
            if d <= MAX_INLINE_DEPTH:
                inline.add(name)
                depth[name] = d
    return inline


def _comment(n: Node, of: str | None = None) -> str:
    """`# <gate rule> [of <forward value>]  (<model line>)`; `of` is the forward value as the
    code shows it (its name, or its inlined expression), None when it is not worth showing."""
    if n.rule:
        text = f"{n.rule}" + (f" [of {of}]" if of else "") + (f"  ({n.loc})" if n.loc else "")
        return "# " + _quoted(text)
    return "# " + _quoted(n.loc) if n.loc else ""


def _local_names(graph: Graph) -> dict:
    """Value name -> the Python name it gets (codegen/quote.py): the model's own name where it
    is a plain identifier; keywords, builtins, `np` and the helpers the module defines get a
    `_` suffix (`sigmoid = sigmoid(x)` would shadow the helper it calls), other text is
    spelled out as an identifier, and no two values share a name."""
    module = {h.__name__ for n in graph.nodes
              for h in getattr(OPS[n.op].numpy, "helpers", ())} | _LABEL_NAMES | set(
        graph_dims(graph))            # a dimension name is the local holding its size
    module |= module_names(graph)     # the module-level arrays of array constants
    return identifiers([v.name for v in graph.inputs] + [n.out.name for n in graph.nodes],
                       reserved=module)


def label_guards(graph: Graph, inline: frozenset = frozenset()) -> dict:
    """{label op's output name: (operand position, LabelCheck)} for the labels the graph
    computes (compiler/ops/labels.py): of the label ops reading them, the one whose statement
    runs first (an `inline`d node runs in its consumer's statement) gets its operand written
    `checked_labels(y - 1, 3, ...)`, which raises the LabelError every backend raises.  (Labels
    that are arguments are checked by the runtime before the code runs.)"""
    checks = {c.value.name: c for c in label_checks(graph) if c.source is not None}
    if not checks:
        return {}
    users = graph.users()
    order = {n.out.name: k for k, n in enumerate(graph.nodes)}

    def statement(name: str) -> int:
        while name in inline:
            name = users[name][0].out.name
        return order[name]
    out, seen = {}, set()
    readers = [n for n in graph.nodes if OPS[n.op].label is not None]
    for n in sorted(readers, key=lambda n: (statement(n.out.name), order[n.out.name])):
        k = OPS[n.op].label(n)[0]
        c = checks.get(n.inputs[k].name)
        if c is not None and c.value.name not in seen:
            seen.add(c.value.name)
            out[n.out.name] = (k, c)
    return out


def guard_labels(n: Node, args: list, guards: dict, helpers: list) -> list:
    """`args` (rendered operands of node n) with the computed labels of a guarded label op
    wrapped in their check; the check's helpers join `helpers`.  Names and the model line go
    in as `repr` literals."""
    got = guards.get(n.out.name)
    if got is None:
        return args
    k, c = got
    for h in LABEL_HELPERS:
        if h not in helpers:
            helpers.append(h)
    noun = "" if c.noun == "label" else f", {c.noun!r}"
    text = (f"checked_labels({args[k][0]}, {c.classes}, {c.value.name!r}, {c.op!r}, "
            f"{c.source!r}, {c.loc!r}{noun})")
    return args[:k] + [(text, ATOM)] + args[k + 1:]


def donations(graph: Graph, donate: dict | None, inline: frozenset = frozenset()) -> dict:
    """The value names, among `donate` (output key -> input name), that may be computed into
    their input's array: `W1_next = np.subtract(W1, lr * dW1, out=W1)`, for a caller that owns
    the input and wants the output there (a train step's update).  A value qualifies when its
    node is an elementwise ufunc (an `out=` form) of the input's type and nothing reads the
    input's memory (the input, or a view of it) after that node's statement (an `inline`d node
    counts at its consumer's statement), nor does the function return it.
    value name -> input name."""
    if not donate:
        return {}
    producers, inputs = graph.producers(), {v.name: v for v in graph.inputs}
    users = graph.users()
    order = {n.out.name: k for k, n in enumerate(graph.nodes)}

    def statement(name: str) -> int:     # where a node's value is computed in the code
        while name in inline:
            name = users[name][0].out.name
        return order[name]
    returned = {v.name for v in graph.outputs.values()}
    # one walk for every input: the values sharing its memory (itself and views of it: value ->
    # input) and the last statement reading that memory, so n nodes and p donations cost O(n + p)
    memory = {v.name: v.name for v in graph.inputs}
    last: dict = {}
    for m in graph.nodes:
        if OPS[m.op].view and m.inputs[0].name in memory:
            memory[m.out.name] = memory[m.inputs[0].name]
        read = {memory[x.name] for x in m.inputs if x.name in memory}
        if read:
            at = statement(m.out.name)
            for r in read:
                last[r] = max(last.get(r, -1), at)
    returned_memory = {memory[r] for r in returned if r in memory}
    found: dict = {}
    used: set = set()
    for key, inp in donate.items():
        v = graph.outputs.get(key)
        n = producers.get(v.name) if v is not None else None
        if (n is None or OPS[n.op].ufunc is None or inp not in inputs or inputs[inp].type != n.out.type
                or inp in used or v.name in found or n.out.name in inline):
            continue
        if inp in returned_memory or last.get(inp, -1) > order[v.name]:
            continue
        found[v.name] = inp
        used.add(inp)
    return found


def emit_numpy(graph: Graph, name: str | None = None, donate: dict | None = None,
               plan: MemoryPlan | None = None) -> str:
    """Python source of a function `name(**inputs) -> dict` computing the graph's outputs;
    `donate` (output key -> input name): see `donations`.  With a memory `plan`
    (compiler/passes/memory.py) the function is `name(*inputs, _buf)`: a node the plan gives a
    buffer is written with its op's `out=` form (`OPS[op].into`) into that buffer, one
    statement per node (only scalar constants are inlined); see the module docstring."""
    fname = name or graph.name
    producers = graph.producers()
    inline = plan_inlining(graph) if plan is None else {
        n.out.name for n in graph.nodes if getattr(OPS[n.op].numpy, "cheap", False)
        and n.out.shape == ()}
    into = donations(graph, donate, frozenset(inline))
    helpers: list = []
    ident = _local_names(graph)
    guards = label_guards(graph, frozenset(inline))
    module = {"np"} | {h.__name__ for n in graph.nodes for h in OPS[n.op].numpy.helpers}
    module |= module_names(graph)
    clash = sorted(d for d in graph_dims(graph) if d in module | _LABEL_NAMES
                   or d.startswith("_"))           # (_buf, _b0: the planned buffers)
    if clash:     # the local holding a size would replace a name the code calls
        raise UnsupportedError(f"graph {graph.name!r}: dimension name {clash[0]!r} is a name "
                               "the generated code uses; rename the dimension (e.g. 'N')")
    module |= _LABEL_NAMES | set(graph_dims(graph))
    fname = identifier(fname, reserved=module)   # a model named like a helper (`sigmoid`)
                                                 # must not replace the helper it calls

    def need(form, args=None, n=None):
        for h in (form.helpers if isinstance(form, Stmt) else form.helpers_for(args, n)):
            if h not in helpers:
                helpers.append(h)

    rendered: dict = {}     # an inlined value's expression, made once (`of` comments and
                            # its consumer read it; the helpers it needs are added the first time)

    def render(vname: str) -> tuple:
        if vname not in inline:
            return ident.get(vname, vname), ATOM
        got = rendered.get(vname)
        if got is None:
            n = producers[vname]
            form = OPS[n.op].numpy
            args = guard_labels(n, [render(v.name) for v in n.inputs], guards, helpers)
            need(form, args, n)
            got = rendered[vname] = (form.render(args, n.attrs, n), form.precedence(n.attrs))
        return got

    known = set(producers) | {v.name for v in graph.inputs}

    def of_text(n: Node) -> str | None:
        """The forward value whose gate produced n: its name, or its inlined expression when
        short; None when it no longer exists or is the value n itself defines."""
        if not n.of or n.of == n.out.name or n.of not in known:
            return None
        text = render(n.of)[0]
        return text if len(text) <= 40 else None

    # a planned function notes each fusion group (compiler/passes/fusion.py): a chain of
    # in-place ufunc calls on one buffer, which the LLVM backend computes in one loop
    groups = {} if plan is None else {g.output: (k, g)
                                      for k, g in enumerate(fusion_groups(graph))}
    body = [f"{d} = {ident.get(graph.inputs[k].name, graph.inputs[k].name)}.shape[{ax}]"
            f"  # the size {d} of this call" for d, (k, ax) in graph_dims(graph).items()]
    for n in graph.nodes:
        if n.out.name in inline:
            continue
        form = OPS[n.op].numpy
        if isinstance(form, Stmt):
            need(form)
            args = guard_labels(n, [render(v.name) for v in n.inputs], guards, helpers)
            lines = form.render(ident.get(n.out.name, n.out.name), [t for t, _ in args],
                                n.attrs, n)
        elif n.out.name in into:      # computed into the caller's array
            args = ", ".join(render(v.name)[0] for v in n.inputs)
            lines = [f"{ident.get(n.out.name, n.out.name)} = {OPS[n.op].ufunc}({args}, "
                     f"out={ident.get(into[n.out.name], into[n.out.name])})"]
        elif plan is not None and n.out.name in plan.assign and OPS[n.op].into is not None:
            out_form = OPS[n.op].into       # computed into the plan's buffer
            args = guard_labels(n, [render(v.name) for v in n.inputs], guards, helpers)
            need(out_form, args, n)
            lines = out_form.render(ident.get(n.out.name, n.out.name), args,
                                    f"_b{plan.assign[n.out.name]}", n,
                                    plan.inplace.get(n.out.name))
        else:
            args = guard_labels(n, [render(v.name) for v in n.inputs], guards, helpers)
            need(form, args, n)
            lines = [f"{ident.get(n.out.name, n.out.name)} = " + form.render(args, n.attrs, n)]
        comment = _comment(n, of_text(n))
        if n.out.name in into:
            comment = (comment + "  " if comment else "# ") + \
                f"[into {ident.get(into[n.out.name], into[n.out.name])}]"
        elif plan is not None and n.out.name in plan.inplace:
            comment = (comment + "  " if comment else "# ") + \
                f"[in place of {ident.get(plan.inplace[n.out.name], plan.inplace[n.out.name])}]"
        if comment:
            lines[0] = f"{lines[0]}  {comment}"
        if n.out.name in groups:
            k, g = groups[n.out.name]
            lines.append(f"# fusion group {k}: {', '.join(ident.get(m, m) for m in g.nodes)} "
                         "(one loop in the LLVM backend)")
        body += lines
    outs = ", ".join(f"{k!r}: {render(v.name)[0]}" for k, v in graph.outputs.items())
    body.append(f"return {{{outs}}}")

    args = ", ".join(ident.get(v.name, v.name) for v in graph.inputs)
    if plan is None:
        return module_text(graph, fname, args, helpers, body,
                           entry=fname != (name or graph.name))
    if plan.buffers:
        names = [f"_b{k}" for k in range(len(plan.buffers))]
        body.insert(0, f"{', '.join(names)}{',' if len(names) == 1 else ''} = _buf")
    bufs = "\n".join(f"        _b{k}: {d}{list(s)}" for k, (d, s) in enumerate(plan.buffers))
    return module_text(graph, fname, ", ".join(filter(None, [args, "_buf=()"])), helpers, body,
                       entry=fname != (name or graph.name), title=" (memory-planned)",
                       doc_extra=f"    Buffers (_buf: the calling thread's, reused by its calls):"
                                 f"\n{bufs}\n")


def module_text(graph: Graph, fname: str, params: str, helpers: list, body: list, *,
                entry: bool, title: str = "", doc_extra: str = "") -> str:
    """The emitted module: the IR docstring, `import numpy`, the helpers' source, and the
    function `fname(params)` documented with its inputs and outputs; `entry` adds `__all__`
    naming it (for runtime/numpy_kernel.py, when the name had to change)."""
    sig = "\n".join(f"    {v.name}: {v.type}" for v in graph.inputs)
    ret = "\n".join(f"    {k}: {v.type}" for k, v in graph.outputs.items())
    ir = "\n".join("    " + line for line in print_graph(graph, data=False).split("\n"))
    # free text (names, locations, rule texts) enters only as docstrings whose value is the
    # text (codegen/quote.py), never as code
    parts = [docstring(f"Generated by gradc from graph {graph.name!r}{title}.\n\nIR:\n{ir}\n"),
             "import numpy as np", ""]
    consts = module_definitions(graph)      # array constants, defined once (read-only)
    if consts:
        parts += ["", *consts.values(), ""]
    for h in helpers:
        parts += ["", textwrap.dedent(inspect.getsource(h)).rstrip(), ""]
    parts += ["", f"def {fname}({params}):",
              "    " + docstring(f"Inputs:\n{sig}\n{textwrap.dedent(doc_extra)}Returns a dict:\n"
                            f"{ret}\n", indent="    ")]
    parts += ["    " + line for line in body]
    if entry:
        parts += ["", "", f"__all__ = [{fname!r}]"]
    return "\n".join(parts) + "\n"
