"""The LLVM module emitter: a graph becomes one function `i64 @f(ptr %buffers)` whose
argument is an array of buffer pointers, one per value of the graph (inputs first, then every
node's output, in graph order; see `buffer_values`).  Every buffer is C-contiguous.  It calls
one kernel function per piece of code (a fusion group, a node; llvm_kernels.py), which
structurally identical pieces share (identical layers compile once).  It returns
0, or 1 + the index of a computed label check that failed (llvm_labels.py): labels the graph
computes are checked right after the values they depend on, before any other node runs.

Loops: each node is lowered (by its op record's `llvm` lowering, compiler/ops/) to a nest of
counted loops over its output; a fusion group (compiler/passes/fusion.py: elementwise nodes of one
shape whose intermediates have no other reader, maybe closed by a reduction) is one loop nest
whose intermediates stay in registers.  An operand is read through a strided *view*: an element
offset and one stride per loop dimension (0 along a broadcast axis), so broadcasting,
transposes and slices are strides, never copies.  Dimensions of size 1 are dropped and adjacent
dimensions merged where every view is contiguous across them, so a same-shape elementwise op
is one flat loop.  y = A·B + u writes u into y's buffer and lets gemm add the product onto it.
A group closed by a reduction and an elementwise group over the same shape that read a common
input share one loop where the later one reads only graph inputs (`sibling_plan`: Σ W² and
2λ·W of weight decay read W once; llvm_plan.py).  A group that is the only reader of a node
with the `epilogue` trait runs inside that node's lowering, on each tile it writes
(`epilogue_plan`: relu(conv2d(x, w) + b) is one pass over the output).

Aliasing: a kernel's buffer arguments are `noalias`, so loops vectorize without runtime
overlap checks; buffers never overlap (each value owns its buffer, inputs are only read).

Names: the buffer pointers carry the value names of the model (`%h`, `%dW1`), loop counters
`%h.i0`, blocks `h.loop0`.
"""
from __future__ import annotations

from contextlib import contextmanager

from llvmlite import ir

from ..ir import Graph, Node, Value
from ..ops import OPS
from ..passes.fusion import fusion_groups
from .llvm_dims import emitting
from .llvm_kernels import inline_single_calls, new_kernel, piece_key, piece_values
from .llvm_types import (I8, I32, I64, LL_TYPES, PTR, VOID, View,  # noqa: F401  (used by callers)
                         const_i64, contiguous_strides)
from .llvm_plan import accumulation_plan, epilogue_plan, read_through, sibling_plan
from .llvm_labels import (computed_checks, emit_computed_checks, emit_label_check, label_checks,
                          label_cone)
from .quote import comment as quoted, identifier, identifiers

def broadcast_strides(shape, out_shape) -> tuple:
    """Strides (in elements) that read a contiguous `shape` broadcast to `out_shape`."""
    own = contiguous_strides(shape)
    lead = len(out_shape) - len(shape)
    out = []
    for k, n in enumerate(out_shape):
        j = k - lead
        out.append(0 if j < 0 or (shape[j] == 1 and n != 1) else own[j])
    return tuple(out)


def collapse(shape, strides_list) -> tuple:
    """(shape, strides_list) with size-1 dimensions dropped and adjacent dimensions merged
    where every view steps across them as one (stride[k] = stride[k+1]·shape[k+1])."""
    dims = [k for k, n in enumerate(shape) if n != 1]
    new_shape = [shape[k] for k in dims]
    new_strides = [[s[k] for k in dims] for s in strides_list]
    k = len(new_shape) - 2
    while k >= 0:
        if all(s[k] == s[k + 1] * new_shape[k + 1] for s in new_strides):
            new_shape[k] *= new_shape[k + 1]
            del new_shape[k + 1]
            for s in new_strides:
                s[k] = s[k + 1]
                del s[k + 1]
        k -= 1
    return tuple(new_shape), [tuple(s) for s in new_strides]


def lowerings() -> dict:
    """op -> its LLVM lowering, from the op records."""
    return {op: rec.llvm for op, rec in OPS.items()}


def buffer_values(graph: Graph) -> list:
    """The values that own a buffer, in slot order: inputs, then node outputs."""
    return list(graph.inputs) + [n.out for n in graph.nodes]


class ModuleEmitter:
    """Builds the module of one graph.  Lowerings use `b` (the IRBuilder), `ptr`, `view`,
    `nest`, `loop`, `load`, `store`, `elementwise` and `fill`."""

    def __init__(self, graph: Graph, symbol: str, lowerings: dict, fuse: bool = True,
                 dims=()):
        """`dims`: the dimension names of a graph with run-time sizes (llvm_dims.py; its
        types hold Dims), read from the pointer array's slots after the buffers."""
        self.graph = graph
        self.fuse = fuse
        self.lowerings = lowerings
        # LLVM names and comments are made from the model's names only through quote.py
        self.ident = identifiers([v.name for v in graph.inputs] + [n.out.name for n in graph.nodes])
        self.module = ir.Module(name=identifier(graph.name))
        self.fn = ir.Function(self.module, ir.FunctionType(I64, [PTR]), name=symbol)
        self.fn.args[0].name = "buffers"
        self.b = ir.IRBuilder(self.fn.append_basic_block("entry"))
        self.producers = graph.producers()
        self.slots = {v.name: k for k, v in enumerate(buffer_values(graph))}
        self.dims = list(dims)
        self.dimvals: dict = {}          # dimension name -> its i64 in the current function
        for j, d in enumerate(self.dims):
            slot = self.b.gep(self.fn.args[0], [const_i64(len(self.slots) + j)], inbounds=True,
                              source_etype=PTR, name=f"{d}.slot")
            self.dimvals[d] = self.b.load(slot, typ=I64, name=d)
        self.ptrs: dict | None = None    # a kernel's buffer arguments (None: the graph's function)
        self._labels = 0
        self.node: Node | None = None
        self.kernels: dict = {}         # structural key -> (entry, loops) (llvm_kernels.py)
        self.calls: dict = {}           # structural key -> how many pieces call its kernel
        self.through: dict = {}         # broadcast value -> the operand its readers read

    # ---- types and memory -------------------------------------------------------------
    @staticmethod
    def ll(dtype: str):
        return LL_TYPES[dtype]

    def ptr(self, value: Value):
        """The buffer of `value`: a kernel's argument, or in the graph's function its pointer
        read from its slot right where it is used (a pointer live across the whole function
        would make code generation superlinear in the number of calls)."""
        if self.ptrs is not None:
            return self.ptrs[value.name]
        slot = self.b.gep(self.fn.args[0], [const_i64(self.slots[value.name])], inbounds=True,
                          source_etype=PTR, name=f"{self.ident[value.name]}.slot")
        return self.b.load(slot, typ=PTR, name=self.ident[value.name])

    def view(self, value: Value, out_shape=None) -> View:
        """`value` read in loops over `out_shape` (broadcast), or over its own shape; a
        broadcast read through (`through`) is its operand's view."""
        shape = value.shape if out_shape is None else out_shape
        value = self.through.get(value.name, value)
        return View(value, 0, broadcast_strides(value.shape, shape))

    def address(self, value: Value, index):
        value = self.through.get(value.name, value)
        return self.b.gep(self.ptr(value), [index], inbounds=True,
                          source_etype=self.ll(value.dtype))

    def load(self, value: Value, index, name: str = ""):
        return self.b.load(self.address(value, index), typ=self.ll(value.dtype), name=name)

    def store(self, x, value: Value, index):
        self.b.store(x, self.address(value, index))

    def immediate(self, value: Value):
        """A constant standing for every element of `value`, if its lowering gives one."""
        node = self.producers.get(value.name)
        if node is None:
            return None
        fn = getattr(self.lowerings[node.op], "immediate", None)
        return fn(self, node) if fn else None

    def comment(self, text: str) -> None:
        """A `; text` line in the IR (free text, quoted: it cannot end the comment)."""
        self.b.comment(quoted(text))

    def var(self, ty, init, name: str = ""):
        """A scalar variable (an entry-block alloca, promoted to a register by the optimizer)
        holding `init` from here on."""
        with self.b.goto_block(self.fn.entry_basic_block):
            slot = self.b.alloca(ty, name=name)
        self.b.store(init, slot)
        return slot

    def get(self, slot, ty, name: str = ""):
        return self.b.load(slot, typ=ty, name=name)

    # ---- control flow -----------------------------------------------------------------
    def _label(self, what: str) -> str:
        self._labels += 1
        base = self.ident[self.node.out.name] if self.node is not None else "f"
        return f"{base}.{what}{self._labels}"

    @contextmanager
    def loop(self, count, name: str = "i"):
        """for i in range(count): the body runs at the yielded index (an i64)."""
        b = self.b
        count = count if isinstance(count, ir.Value) else const_i64(count)
        label = self._label("loop")
        pre = b.block
        head = b.append_basic_block(label)
        body = b.append_basic_block(label + ".body")
        done = b.append_basic_block(label + ".done")
        b.branch(head)
        b.position_at_end(head)
        base = self.ident[self.node.out.name] if self.node is not None else "f"
        i = b.phi(I64, name=f"{base}.{name}")
        i.add_incoming(const_i64(0), pre)
        b.cbranch(b.icmp_signed("<", i, count), body, done)
        b.position_at_end(body)
        yield i
        nxt = b.add(i, const_i64(1), flags=("nuw", "nsw"))
        i.add_incoming(nxt, b.block)
        b.branch(head)
        b.position_at_end(done)

    def nest(self, shape, views, body, inner=None) -> None:
        """Loops over `shape`; `body(indices)` gets each view's element index (an i64).
        With `inner`, the innermost (collapsed) dimension is left to `inner(indices, count,
        strides)`, called once per outer iteration with the views' base indices."""
        cshape, cstrides = collapse(tuple(shape), [v.strides for v in views])
        if 0 in tuple(shape):
            return
        offsets = [const_i64(v.offset) for v in views]
        depth = len(cshape) - (1 if inner is not None and cshape else 0)

        def rec(k, idx):
            if k == depth:
                if inner is not None:
                    if cshape:
                        inner(idx, cshape[-1], [s[-1] for s in cstrides])
                    else:
                        inner(idx, 1, [0] * len(views))
                else:
                    body(idx)
                return
            with self.loop(cshape[k], f"i{k}") as i:
                rec(k + 1, [ix if s[k] == 0 else self.b.add(ix, self.b.mul(i, const_i64(s[k])))
                            for ix, s in zip(idx, cstrides)])
        rec(0, offsets)

    # ---- common lowerings -------------------------------------------------------------
    def elementwise(self, node: Node, scalar) -> None:
        """out[i] = scalar(self, [operand values at i], node) over the output's shape, operands
        broadcast; an operand with a constant lowering is an immediate, not a load."""
        out = node.out
        views = [self.view(out)] + [self.view(v, out.shape) for v in node.inputs]
        imms = [self.immediate(v) for v in node.inputs]

        def body(idx):
            args = [imm if imm is not None else self.load(v, ix)
                    for v, imm, ix in zip(node.inputs, imms, idx[1:])]
            self.store(scalar(self, args, node), out, idx[0])
        self.nest(out.shape, views, body)

    def copy(self, dst: View, src: View, shape) -> None:
        """dst[…] = src[…] over `shape` (both views have strides for `shape`)."""
        def body(idx):
            self.store(self.load(src.value, idx[1]), dst.value, idx[0])
        self.nest(shape, [dst, src], body)

    def fill(self, value: Value, x) -> None:
        self.nest(value.shape, [self.view(value)], lambda idx: self.store(x, value, idx[0]))

    # ---- driver -----------------------------------------------------------------------
    def skipped(self) -> set:
        """Values nobody needs in memory: every user reads them folded into its own lowering
        (a transpose read by gemm through its flag, a broadcast read through by loop nests:
        sets `through`), and they are not outputs."""
        folded: dict = {}
        for n in self.graph.nodes:
            fn = getattr(self.lowerings[n.op], "folds", None)
            for v in (fn(self, n) if fn else ()):
                folded.setdefault(v.name, set()).add(id(n))
        through = read_through(self, folded) if self.fuse else {}
        outputs = {v.name for v in self.graph.outputs.values()}
        users = self.graph.users()
        skip = {name for name, by in folded.items() if name not in outputs
                and all(id(u) in by for u in users.get(name, []))}
        self.through = {k: v for k, v in through.items() if k in skip}
        return skip

    def fusion_plan(self) -> tuple:
        """({last member: group}, {members emitted inside a later group loop}) for the fusion
        groups (compiler/passes/fusion.py) whose members all have scalar rules and whose
        closing reduction, if any, can take computed values."""
        last, inside = {}, set()
        for g in fusion_groups(self.graph):
            nodes = [self.producers[m] for m in g.nodes]
            ew = nodes[:-1] if g.reduction else nodes
            ok = all(hasattr(self.lowerings[n.op], "scalar") for n in ew)
            if g.reduction:
                ok = ok and hasattr(self.lowerings[nodes[-1].op], "reduce_with")
            if ok:
                last[g.output] = g
                inside.update(g.nodes[:-1])
        return last, inside

    def _group_loop(self, group, store: str | None = None, alias=None) -> tuple:
        """(nodes, reduction node or None, views of the loaded inputs, compute(indices) -> the
        last elementwise value, value stored or None) of a fusion group; with `store`, the
        group stops before its last member and `store`'s value is written to the last
        member's buffer.  `alias` (name -> None): inputs loaded from the group output's
        buffer instead of their own (an epilogue's head, `epilogue`)."""
        nodes = [self.producers[m] for m in group.nodes]
        red = nodes[-1] if group.reduction else None
        ew = nodes[:-1] if red is not None else nodes
        values = self.graph.values()
        ins = [values[name] for name in group.inputs]
        imms = {v.name: self.immediate(v) for v in ins}
        loaded = [v for v in ins if imms[v.name] is None]
        out = ew[-1].out if red is None else None
        if store is not None:       # stop before the last member, keep `store` in its buffer
            ew = ew[:-1]
            assert ew[-1].out.name == store, (ew[-1].out.name, store)

        def compute(idx):
            env = {k: c for k, c in imms.items() if c is not None}
            env.update({v.name: self.load(out if v.name in (alias or ()) else v, ix)
                        for v, ix in zip(loaded, idx)})
            for n in ew:
                self.node = n
                env[n.out.name] = self.lowerings[n.op].scalar(
                    self, [env[v.name] for v in n.inputs], n)
            self.node = nodes[-1]
            return env[ew[-1].out.name]
        shape = tuple(group.shape)
        return nodes, red, [self.view(v, shape) for v in loaded], compute, out

    def fused(self, group, store: str | None = None, sibling=None) -> None:
        """One loop nest for a fusion group: external inputs loaded (or immediates), member
        values kept in registers, the last elementwise value stored or reduced.  `sibling`:
        (elementwise group, its store) computed and stored in the same loop (`sibling_plan`)."""
        nodes, red, sources, compute, out = self._group_loop(group, store)
        self.node = nodes[-1]
        shape = tuple(group.shape)
        if red is None:
            self.nest(shape, [self.view(out)] + sources,
                      lambda idx: self.store(compute(idx[1:]), out, idx[0]))
            return
        value = compute
        if sibling is not None:
            _, _, s_sources, s_compute, s_out = self._group_loop(*sibling)
            k = len(sources)
            sources = sources + s_sources + [self.view(s_out)]

            def value(idx):
                self.store(s_compute(idx[k:-1]), s_out, idx[-1])
                self.node = nodes[-1]
                return compute(idx[:k])
        self.lowerings[red.op].reduce_with(self, red, sources, value)

    def plan(self) -> tuple:
        """(skipped values, fusion groups, members inside them, accumulation plan); sets
        `untouched`, the values whose buffers the code never reads nor writes."""
        skip = self.skipped()
        groups, inside = self.fusion_plan() if self.fuse else ({}, set())
        accum = accumulation_plan(self, groups, inside) if self.fuse else {}
        self.heads = epilogue_plan(self, groups, inside, accum) if self.fuse else {}
        self.untouched = skip | inside | {prod.out.name for prod, _ in accum.values()}
        return skip, groups, inside, accum

    def epilogue(self, group, head) -> tuple:
        """(group output, views of its loaded inputs, compute(indices) -> its value) of a
        fusion group run on the tiles its head writes into the group output's buffer: the
        head's value is loaded from there (same shape, contiguous, so the same index)."""
        _, _, sources, compute, out = self._group_loop(group, alias={head.out.name: None})
        return out, sources, compute

    def _piece(self, node, groups, siblings, accum, done) -> None:
        """The code of `node` (and of its fusion group, sibling group, accumulated product),
        as a call of a kernel function (`kernel`), after a comment saying what it computes."""
        name = node.out.name
        members = [self.producers[m] for m in groups[name].nodes] if name in groups else [node]
        if name in siblings:
            guest, rname, sib = siblings[name]
            nodes = members + [self.producers[m] for m in groups[guest].nodes]
            prod = accum[name][0] if name in accum else None
            self.comment("one loop for two fused groups: " + "; ".join(
                _describe(self.producers[m]) for m in groups[name].nodes + groups[guest].nodes))
            done.add(guest)

            def body():
                self.fused(groups[rname], sibling=sib)
                if prod is not None:
                    self.node = prod
                    self.lowerings[prod.op].accumulate_into(self, prod, node.out)
            self.kernel(nodes + ([prod] if prod else []), lambda k: (
                "siblings", _group_key(groups[rname], k), _group_key(sib[0], k),
                k.get(sib[1]), prod is not None), body)
        elif name in accum:
            prod, other = accum[name]
            fuse = name in groups and name not in done
            self.comment(f"{_describe(node)}: {other.name} into {name}, then "
                         f"{_describe(prod)} added onto it")

            def body():
                if fuse:
                    self.fused(groups[name], store=other.name)
                elif name not in groups:
                    self.copy(self.view(node.out), self.view(other, node.out.shape),
                              node.out.shape)
                self.node = prod
                self.lowerings[prod.op].accumulate_into(self, prod, node.out)
            nodes = members if name in groups else [node]
            self.kernel(nodes + [prod], lambda k: (
                "accumulate", k[other.name], fuse, name in groups,
                _group_key(groups[name], k) if name in groups else None), body)
        elif name in self.heads:
            head = self.heads[name]
            self.comment(f"{_describe(head)}, with its only reader fused into each tile: "
                         + "; ".join(_describe(n) for n in members))
            self.kernel([head] + members, lambda k: ("epilogue", _group_key(groups[name], k)),
                        lambda: self.lowerings[head.op].lower_with_epilogue(
                            self, head, groups[name]))
        elif name in groups:
            self.comment("fused loop: " + "; ".join(_describe(n) for n in members))
            self.kernel(members, lambda k: ("fused", _group_key(groups[name], k)),
                        lambda: self.fused(groups[name]))
        else:
            self.comment(_describe(node))
            self.kernel([node], lambda k: ("node",),
                        lambda: self.lowerings[node.op].lower(self, node))

    def kernel(self, nodes, tag, body) -> None:
        """`body()`, the lowering of `nodes`, as a kernel function taking the buffers it may
        touch, called here; a piece with the structural key of an earlier one calls that
        one's kernel instead (llvm_kernels.py).  `tag(numbers)`: how the piece is lowered."""
        values = piece_values(self, nodes)
        key = piece_key(self, nodes, values, tag)
        made = self.kernels.get(key)
        if made is None:
            name = f"k{len(self.kernels)}.{self.ident[nodes[0].out.name]}"
            made = self.kernels[key] = new_kernel(self.module, name, values, self.ident,
                                                  self.dims)
            loops = made[1]
            outer = self.b, self.fn, self.ptrs, self.node, self.dimvals
            self.fn, self.ptrs = loops, dict(zip(values, loops.args))
            self.dimvals = dict(zip(self.dims, loops.args[len(values):]))
            self.b = ir.IRBuilder(loops.append_basic_block("entry"))
            try:
                body()
                self.b.ret_void()
            finally:
                self.b, self.fn, self.ptrs, self.node, self.dimvals = outer
        # the kernel's entry gets the buffer array, the slot of each of its buffers and the sizes
        self.b.call(made[0], [self.fn.args[0]] + [const_i64(self.slots[v]) for v in values]
                    + [self.dimvals[d] for d in self.dims])
        self.calls[key] = self.calls.get(key, 0) + 1

    def emit(self) -> str:
        with emitting(self):
            return self._emit()

    def _emit(self) -> str:
        skip, groups, inside, accum = self.plan()
        deferred = {prod.out.name for prod, _ in accum.values()}
        siblings = sibling_plan(self, {k: g for k, g in groups.items() if k not in self.heads},
                                accum) if self.fuse else {}
        # computed labels: the nodes they depend on first (a fusion group, a deferred product
        # and its sum lie wholly inside or outside that cone), then their check (None), then
        # the rest; two sibling groups on either side of it are emitted apart
        checks = computed_checks(self.graph)
        cone = label_cone(self.graph, checks)
        siblings = {h: s for h, s in siblings.items() if (h in cone) == (s[0] in cone)}
        order = [n for n in self.graph.nodes if n.out.name in cone] + [None] + [
            n for n in self.graph.nodes if n.out.name not in cone]
        done = set()
        for node in order:
            if node is None:
                self.node = None
                if checks:
                    emit_computed_checks(self, checks)
                continue
            name = node.out.name
            if name in skip or name in inside or name in deferred or (
                    name in done and name not in accum):
                continue
            self.node = node
            self._piece(node, groups, siblings, accum, done)
        self.node = None
        self.b.ret(const_i64(0))
        inline_single_calls(self.kernels, self.calls)
        return str(self.module)


def _describe(node: Node) -> str:
    """`dh = mul(ds, t3)  [mul gate: dA = G·B of s]  @ model.py:31` for a comment line of the
    IR: the same provenance as the NumPy source's comments."""
    text = f"{node.out.name} = {node.op}({', '.join(v.name for v in node.inputs)})"
    if node.rule:
        of = f" of {node.of}" if node.of and node.of != node.out.name else ""
        text += f"  [{node.rule}{of}]"
    if node.loc:
        text += f"  @ {node.loc}"
    return quoted(text)


def _group_key(group, number) -> tuple:
    """A fusion group in value numbers: its loop shape, loaded inputs, closing reduction."""
    return (tuple(group.shape), tuple(number[v] for v in group.inputs), bool(group.reduction))


def plan_untouched(graph: Graph, fuse: bool = True, dims=()) -> frozenset:
    """The values whose buffers the emitted code never touches (what `emit_llvm_plan`
    reports), found without emitting: for a kernel whose object code comes from the cache."""
    em = ModuleEmitter(graph, "plan", lowerings(), fuse, dims)
    em.plan()
    return frozenset(em.untouched)


def emit_llvm(graph: Graph, symbol: str, fuse: bool = True) -> str:
    """The LLVM IR module of `graph`: one function `i64 @symbol(ptr %buffers)`, headed by the
    graph's text form as comments and the buffer slot of every value."""
    return emit_llvm_plan(graph, symbol, fuse)[0]


def emit_llvm_plan(graph: Graph, symbol: str, fuse: bool = True, dims=()) -> tuple:
    """(IR text, names of the values whose buffers the code never touches: fused-away
    intermediates and transposes folded into gemm; the runtime need not allocate them).
    A graph with integer-label inputs gets a second function, `symbol` + "_labels"
    (`emit_label_check`).  `dims`: the dimension names of a graph with run-time sizes
    (its types hold Dims: llvm_dims.sized_graph), read from the slots after the buffers."""
    em = ModuleEmitter(graph, symbol, lowerings(), fuse, dims)
    checks = label_checks(graph)
    if checks:
        emit_label_check(em.module, symbol + "_labels", graph, checks, em.ident, em.dims)
    body = em.emit()
    head = [f"; gradc: graph {quoted(repr(graph.name))} lowered to LLVM IR", ";"]
    head += ["; " + quoted(line) for line in str(graph).split("\n")]   # one comment a line
    head += [";", "; buffers (slot: value):"]
    head += [f";   {len(em.slots) + j}: {d} (a run-time size)" for j, d in enumerate(em.dims)]
    head += [f";   {k}: %{em.ident[v.name]}: {v.type}"
             + ("  (unused)" if v.name in em.untouched else "")
             for k, v in enumerate(buffer_values(graph))]
    return "\n".join(head) + "\n" + body, frozenset(em.untouched)
