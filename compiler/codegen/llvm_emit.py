"""The LLVM module emitter: a graph becomes one function `void @f(ptr %buffers)` whose
argument is an array of buffer pointers, one per value of the graph (inputs first, then every
node's output, in graph order; see `buffer_values`).  Every buffer is C-contiguous.

Loops: each node is lowered (through `LLVM_LOWERINGS`, llvm_lower.py) to a nest of counted
loops over its output; a fusion group (compiler/passes/fusion.py: elementwise nodes of one
shape whose intermediates have no other reader, maybe closed by a reduction) is one loop nest
whose intermediates stay in registers.  An operand is read through a strided *view*: an element offset and one
stride per loop dimension (0 along a broadcast axis), so broadcasting, transposes and slices are
strides, never copies.  Dimensions of size 1 are dropped and adjacent dimensions merged where
every view is contiguous across them, so a same-shape elementwise op is one flat loop.

Names: the buffer pointers carry the value names of the model (`%h`, `%dW1`), loop counters
`%h.i0`, blocks `h.loop0`.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import NamedTuple

from llvmlite import ir

from ..ir import Graph, Node, Value

VOID = ir.VoidType()
PTR = ir.PointerType()
I64 = ir.IntType(64)
I8 = ir.IntType(8)
I32 = ir.IntType(32)
LL_TYPES = {"f64": ir.DoubleType(), "f32": ir.FloatType(), "i64": I64, "bool": I8}


def const_i64(v: int) -> ir.Constant:
    return ir.Constant(I64, int(v))


def contiguous_strides(shape) -> tuple:
    strides, acc = [], 1
    for d in reversed(shape):
        strides.append(acc)
        acc *= d
    return tuple(reversed(strides))


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


class View(NamedTuple):
    """Element (offset + Σ iₖ·strides[k]) of the buffer `value`."""
    value: Value
    offset: int
    strides: tuple


def buffer_values(graph: Graph) -> list:
    """The values that own a buffer, in slot order: inputs, then node outputs."""
    return list(graph.inputs) + [n.out for n in graph.nodes]


class ModuleEmitter:
    """Builds the module of one graph.  Lowerings use `b` (the IRBuilder), `ptr`, `view`,
    `nest`, `loop`, `load`, `store`, `elementwise` and `fill`."""

    def __init__(self, graph: Graph, symbol: str, lowerings: dict, fuse: bool = True):
        self.graph = graph
        self.fuse = fuse
        self.lowerings = lowerings
        self.module = ir.Module(name=graph.name)
        self.fn = ir.Function(self.module, ir.FunctionType(VOID, [PTR]), name=symbol)
        self.fn.args[0].name = "buffers"
        self.b = ir.IRBuilder(self.fn.append_basic_block("entry"))
        self.producers = graph.producers()
        self.slots: dict = {}
        self.ptrs: dict = {}
        for k, v in enumerate(buffer_values(graph)):
            self.slots[v.name] = k
            slot = self.b.gep(self.fn.args[0], [const_i64(k)], inbounds=True,
                              source_etype=PTR, name=f"{v.name}.slot")
            self.ptrs[v.name] = self.b.load(slot, typ=PTR, name=v.name)
        self._labels = 0
        self.node: Node | None = None

    # ---- types and memory -------------------------------------------------------------
    @staticmethod
    def ll(dtype: str):
        return LL_TYPES[dtype]

    def ptr(self, value: Value):
        return self.ptrs[value.name]

    def view(self, value: Value, out_shape=None) -> View:
        """`value` read in loops over `out_shape` (broadcast), or over its own shape."""
        shape = value.shape if out_shape is None else out_shape
        return View(value, 0, broadcast_strides(value.shape, shape))

    def address(self, value: Value, index):
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
        base = self.node.out.name if self.node is not None else "f"
        return f"{base}.{what}{self._labels}"

    @contextmanager
    def loop(self, count, name: str = "i"):
        """for i in range(count): the body runs at the yielded index (an i64)."""
        b = self.b
        count = const_i64(count) if isinstance(count, int) else count
        label = self._label("loop")
        pre = b.block
        head = b.append_basic_block(label)
        body = b.append_basic_block(label + ".body")
        done = b.append_basic_block(label + ".done")
        b.branch(head)
        b.position_at_end(head)
        base = self.node.out.name if self.node is not None else "f"
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
        (a transpose read by gemm through its flag), and they are not outputs."""
        folded: dict = {}
        for n in self.graph.nodes:
            fn = getattr(self.lowerings[n.op], "folds", None)
            for v in (fn(self, n) if fn else ()):
                folded.setdefault(v.name, set()).add(id(n))
        outputs = {v.name for v in self.graph.outputs.values()}
        users = self.graph.users()
        return {name for name, by in folded.items() if name not in outputs
                and all(id(u) in by for u in users.get(name, []))}

    def fusion_plan(self) -> tuple:
        """({last member: group}, {members emitted inside a later group loop}) for the fusion
        groups (compiler/passes/fusion.py) whose members all have scalar rules and whose
        closing reduction, if any, can take computed values."""
        try:
            from ..passes.fusion import fusion_groups
        except ImportError:          # no fusion analysis: one loop per node
            return {}, set()
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

    def fused(self, group) -> None:
        """One loop nest for a fusion group: external inputs loaded (or immediates), member
        values kept in registers, the last elementwise value stored or reduced."""
        nodes = [self.producers[m] for m in group.nodes]
        red = nodes[-1] if group.reduction else None
        ew = nodes[:-1] if red is not None else nodes
        values = self.graph.values()
        ins = [values[name] for name in group.inputs]
        imms = {v.name: self.immediate(v) for v in ins}
        loaded = [v for v in ins if imms[v.name] is None]
        shape = tuple(group.shape)

        def compute(idx):
            env = {k: c for k, c in imms.items() if c is not None}
            env.update({v.name: self.load(v, ix) for v, ix in zip(loaded, idx)})
            for n in ew:
                self.node = n
                env[n.out.name] = self.lowerings[n.op].scalar(
                    self, [env[v.name] for v in n.inputs], n)
            self.node = nodes[-1]
            return env[ew[-1].out.name]
        self.node = nodes[-1]
        sources = [self.view(v, shape) for v in loaded]
        if red is None:
            out = ew[-1].out
            self.nest(shape, [self.view(out)] + sources,
                      lambda idx: self.store(compute(idx[1:]), out, idx[0]))
        else:
            self.lowerings[red.op].reduce_with(self, red, sources, compute)

    def emit(self) -> str:
        skip = self.skipped()
        groups, inside = self.fusion_plan() if self.fuse else ({}, set())
        for node in self.graph.nodes:
            if node.out.name in skip or node.out.name in inside:
                continue
            self.node = node
            if node.out.name in groups:
                self.fused(groups[node.out.name])
                continue
            self.lowerings[node.op].lower(self, node)
        self.node = None
        self.b.ret_void()
        return str(self.module)


def emit_llvm(graph: Graph, symbol: str, fuse: bool = True) -> str:
    """The LLVM IR module of `graph`: one function `void @symbol(ptr %buffers)`, headed by the
    graph's text form as comments and the buffer slot of every value."""
    from .llvm_lower import LLVM_LOWERINGS
    body = ModuleEmitter(graph, symbol, LLVM_LOWERINGS, fuse).emit()
    head = [f"; gradc: graph {graph.name!r} lowered to LLVM IR", ";"]
    head += ["; " + line for line in str(graph).splitlines()]
    head += [";", "; buffers (slot: value):"]
    head += [f";   {k}: %{v.name}: {v.type}" for k, v in enumerate(buffer_values(graph))]
    return "\n".join(head) + "\n" + body
