"""The planned NumPy emitter: the graph's function written against preallocated buffers.

Where the memory plan (compiler/passes/memory.py) gives a node a buffer, the node is written as
a call with `out=`, so no array is allocated per call:

    t0 = np.matmul(X, W1, out=_b0)
    t1 = np.add(t0, b1, out=_b0)          # in place: t0 dies here
    h = np.maximum(t1, 0.0, out=_b0)      # relu, in place
    dW1 = np.matmul(X.T, dt1, out=_b5)    # transpose flag: a view handed to BLAS

A chain of elementwise nodes (a fusion group, compiler/passes/fusion.py) thus becomes a
sequence of in-place ufunc calls on one buffer.  Nodes without an `out=` form (softmax, the
losses, indexing) are written as in the plain emitter and allocate as before.  The buffers
arrive as the keyword argument `_buf` (the calling thread's set: the kernel allocates one per
thread).  Scalar
constants are written inline as literals.  One statement per node, the model's names, the
gate rule comments and the IR header are kept, as in codegen/numpy_emit.py.
"""
from __future__ import annotations


from ..ir import Graph
from ..ops import OPS
from ..passes.fusion import fusion_groups
from ..passes.memory import MemoryPlan
from .forms import ATOM, Expr, zero_else
from .numpy_emit import (_LABEL_NAMES, _comment, _local_names, donations, guard_labels,
                         label_guards, module_text)
from .quote import identifier


def _planned_lines(n, name, args, buf, plan) -> list | None:
    """Statements computing node n (as Python name `name`) into buffer `buf` (None: the op
    has no out= form)."""
    op, a = n.op, n.attrs
    if OPS[op].ufunc is not None:
        return [f"{name} = {OPS[op].ufunc}({', '.join(args)}, out={buf})"]
    if op == "relu":
        return [f"{name} = np.maximum({args[0]}, 0.0, out={buf})"]
    if op == "matmul":
        x = f"{args[0]}.T" if a.get("transpose_a") else args[0]
        y = f"{args[1]}.T" if a.get("transpose_b") else args[1]
        return [f"{name} = np.matmul({x}, {y}, out={buf})"]
    if OPS[op].reduction:     # the array's method: no Python-level dispatch
        axes = tuple(a["axes"])
        keep = ", keepdims=True" if a["keepdims"] else ""
        return [f"{name} = {args[0]}.{op}(axis={axes[0] if len(axes) == 1 else axes!r}{keep}, "
                f"out={buf})"]
    if op == "where" and zero_else([(t, ATOM) for t in args], n):   # a relu's gate
        return [f"{name} = where_or_zero({args[0]}, {args[1]}, out={buf})"]
    if op == "where":
        lines = [] if plan.inplace.get(n.out.name) == n.inputs[2].name else [
            f"np.copyto({buf}, {args[2]})"]
        return lines + [f"np.copyto({buf}, {args[1]}, where={args[0]})", f"{name} = {buf}"]
    if op == "cast":
        return [f"np.copyto({buf}, {args[0]}, casting='unsafe')", f"{name} = {buf}"]
    return None


def emit_planned(graph: Graph, plan: MemoryPlan, name: str | None = None,
                 donate: dict | None = None) -> str:
    """Python source of `name(*inputs, _buf) -> dict` computing the graph with `plan`;
    `donate` (output key -> input name): outputs computed into their input's array instead
    of a buffer (see numpy_emit.donations)."""
    fname = name or graph.name
    into = donations(graph, donate)
    producers = graph.producers()
    helpers: list = []
    ident = _local_names(graph)          # values named like a helper or `np` get a suffix
    module = {"np"} | {h.__name__ for n in graph.nodes for h in OPS[n.op].numpy.helpers}
    fname = identifier(fname, reserved=module | _LABEL_NAMES)
    guards = label_guards(graph)      # computed labels: checked where first read

    def py(vname: str) -> str:
        return ident.get(vname, vname)
    groups = {g.output: (k, g) for k, g in enumerate(fusion_groups(graph))}

    def need(form, args=None, n=None):
        for h in (form.helpers_for(args, n) if isinstance(form, Expr) else form.helpers):
            if h not in helpers:
                helpers.append(h)

    def arg(v) -> tuple:
        n = producers.get(v.name)
        if n is not None and n.op == "const" and n.out.shape == ():
            form = OPS["const"].numpy
            return form.render([], n.attrs, n), form.precedence(n.attrs)
        return py(v.name), ATOM

    body = []
    for n in graph.nodes:
        if n.op == "const" and n.out.shape == ():
            continue
        args = guard_labels(n, [arg(v) for v in n.inputs], guards, helpers)
        lines = None
        out = py(n.out.name)
        if n.out.name in into:
            lines = [f"{out} = {OPS[n.op].ufunc}({', '.join(t for t, _ in args)}, "
                     f"out={py(into[n.out.name])})"]
        elif n.out.name in plan.assign:
            lines = _planned_lines(n, out, [t for t, _ in args],
                                   f"_b{plan.assign[n.out.name]}", plan)
            if lines is not None and n.op == "where":
                need(OPS["where"].numpy, args, n)
        if lines is None:
            form = OPS[n.op].numpy
            need(form, args, n)
            if isinstance(form, Expr):
                lines = [f"{out} = " + form.render(args, n.attrs, n)]
            else:
                lines = form.render(out, [t for t, _ in args], n.attrs, n)
        comment = _comment(n, n.of if n.of and n.of != n.out.name else None)
        if n.out.name in into:
            comment = (comment + "  " if comment else "# ") + f"[into {py(into[n.out.name])}]"
        elif n.out.name in plan.inplace:
            comment = (comment + "  " if comment else "# ") + \
                f"[in place of {py(plan.inplace[n.out.name])}]"
        if comment:
            lines[0] = f"{lines[0]}  {comment}"
        if n.out.name in groups:
            k, g = groups[n.out.name]
            lines.append(f"# fusion group {k}: {', '.join(py(m) for m in g.nodes)} "
                         "(one loop in the LLVM backend)")
        body += lines
    outs = ", ".join(f"{k!r}: {arg(v)[0]}" for k, v in graph.outputs.items())
    body.append(f"return {{{outs}}}")
    if plan.buffers:
        names = [f"_b{k}" for k in range(len(plan.buffers))]
        body.insert(0, f"{', '.join(names)}{',' if len(names) == 1 else ''} = _buf")

    params = ", ".join([py(v.name) for v in graph.inputs] + ["_buf=()"])
    bufs = "\n".join(f"        _b{k}: {d}{list(s)}" for k, (d, s) in enumerate(plan.buffers))
    return module_text(graph, fname, params, helpers, body, entry=fname != (name or graph.name),
                       title=" (memory-planned)",
                       doc_extra=f"    Buffers (_buf: the calling thread's, reused by its calls):"
                                 f"\n{bufs}\n")
