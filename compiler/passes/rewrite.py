"""The machinery every pass shares: copy a graph node by node into a new one, letting a rule
replace a node by a value of the new graph.

A pass never touches its input graph: the `Rewriter` gives every surviving value a fresh
`Value` object (same name, same type) and every node a fresh `Node` (same op, attrs and
provenance).  A rule answers with a value of the new graph that stands for the old node's value:
an existing value (x·1 → x), or one it built with `emit` (which runs the op's shape rule and
stamps the replaced node's provenance, so comments in generated code keep pointing at the gate
rule and model line they came from).

Names.  Output keys never change (they are dict keys).  When a node whose value carries a real
name (`dq`, `h`, a model variable or a gradient) is replaced by a generated temporary (`t5`),
the temporary takes the real name, so `dq = 1.0 * t0` becomes `dq = ...` in the IR and in the
generated code, never `t0`, provided the temporary is new or read only on the way to the replaced node (a temporary shared with other readers keeps its name, so a forward value never takes a
gradient's name).  A value built while rewriting a node takes that node's name, temporary or
not, so names stay stable from pass to pass.  A replacement that already has a real name keeps it: real names are never
renamed (`dq = 1.0 * z` with z a model variable makes dq an alias of z).
"""
from __future__ import annotations

from ..ir import GradcError, Graph, Namer, Node, Value, const_value
from ..ops import OPS


class Rewrites(Exception):
    """Raised by a `Reader`: the rule asking would rewrite the node (it builds one, or asks
    for something of the new graph a plain reading does not have)."""


class _Reading:
    """What a rule reads of the graph being built: the node defining a value, its constant."""
    producer: dict

    def node_of(self, v: Value) -> Node | None:
        """The node defining `v` (None for a graph input)."""
        return self.producer.get(v.name)

    def const_of(self, v: Value):
        """The scalar value of `v` when a `const` node defines it (any shape), else None."""
        n = self.producer.get(v.name)
        return n.attrs["value"] if n is not None and OPS[n.op].literal else None


class Reader(_Reading):
    """A graph read as a rule reads the new graph, before anything is rewritten: `new` is the
    identity.  A pass's `idle(graph)` check (compiler/passes/__init__.py) runs its rules on
    it, without copying the graph: a rule that answers a value, or that builds a node (`emit`,
    `const`) or reaches for anything else of a Rewriter (`namer`, ...: `Rewrites` is raised),
    would change the graph."""

    def __init__(self, graph: Graph):
        self.producer = graph.producers()
        self.current: Node | None = None

    def new(self, old_value: Value) -> Value:
        return old_value

    def emit(self, op: str, inputs, like: Node | None = None, name: str | None = None,
             **attrs) -> Value:
        raise Rewrites(op)

    def const(self, value, dtype: str, shape=()) -> Value:
        raise Rewrites("const")

    def __getattr__(self, name: str):
        raise Rewrites(name)


class Rewriter(_Reading):
    """Builds `self.graph`, a new graph with `old`'s name and inputs, node by node."""

    def __init__(self, old: Graph):
        self.old = old
        self.graph = Graph(old.name)
        self.env: dict = {}            # old value name -> new Value
        self.producer: dict = {}       # new value name -> new Node
        taken = {v.name for v in old.inputs}
        taken.update(n.out.name for n in old.nodes)
        self.old_names = frozenset(taken)
        # never released: a fresh name is never an old one, nor one a node's `of` refers to
        # (a removed value's name reused by a new temporary would make `[of t3]` comments lie)
        taken.update(n.of for n in old.nodes if n.of)
        self.namer = Namer(taken)
        self._uses: dict | None = None    # old value name -> readers (nodes and outputs)
        self._reader: dict | None = None  # old value name -> its last reader node
        self.changed = False
        self.current: Node | None = None   # the old node being rewritten (provenance source)
        for v in old.inputs:
            nv = Value(v.name, v.type)
            self.graph.inputs.append(nv)
            self.env[v.name] = nv

    def _count_uses(self) -> None:
        """`_uses` and `_reader`, counted at the first `replace` that asks (a pass that
        replaces nothing never needs them)."""
        uses: dict = {}
        reader: dict = {}
        for n in self.old.nodes:
            for v in n.inputs:
                uses[v.name] = uses.get(v.name, 0) + 1
                reader[v.name] = n
        for v in self.old.outputs.values():
            uses[v.name] = uses.get(v.name, 0) + 1
        self._uses, self._reader = uses, reader

    # ---- reading the new graph ------------------------------------------------------------
    def new(self, old_value: Value) -> Value:
        """The new graph's value standing for `old_value`."""
        return self.env[old_value.name]

    # ---- writing the new graph ------------------------------------------------------------
    def emit(self, op: str, inputs, like: Node | None = None, name: str | None = None,
             **attrs) -> Value:
        """Append `op(inputs) {attrs}` with `like`'s provenance (default: the node being
        rewritten).  The output is a fresh temporary unless `name` is given."""
        like = like if like is not None else self.current
        out_type = OPS[op].shape([v.type for v in inputs], **attrs)
        out = Value(name if name is not None else self.namer.temp(), out_type)
        node = Node(op, tuple(inputs), dict(attrs), out,
                    like.loc if like else None, like.rule if like else None,
                    like.of if like else None)
        self.graph.nodes.append(node)
        self.producer[out.name] = node
        return out

    def const(self, value, dtype: str, shape=()) -> Value:
        """A constant node (the value normalized as `Builder.const` does)."""
        return self.emit("const", [], value=const_value(value, dtype), dtype=dtype,
                         shape=tuple(shape))

    def keep(self, n: Node) -> Value:
        """Copy the old node `n` unchanged (inputs mapped into the new graph)."""
        env = self.env
        name = n.out.name
        out = Value(name, n.out.type)
        node = Node(n.op, tuple([env[v.name] for v in n.inputs]), dict(n.attrs), out,
                    n.loc, n.rule, n.of)
        self.graph.nodes.append(node)
        self.producer[name] = node
        env[name] = out
        return out

    def replace(self, n: Node, value: Value) -> None:
        """The old node `n` is not copied; its value is `value` (of the new graph) from now on.
        A temporary replacement takes `n`'s real name (see the module docstring)."""
        if value.type != n.out.type:
            raise GradcError(f"internal: a pass replaced {n.out.name}: {n.out.type} = "
                             f"{n.op}(...) by {value.name}: {value.type}")
        self.changed = True
        fresh = value.name not in self.old_names     # built while rewriting n
        if value.name in self.producer and (fresh or (
                not n.out.temp and value.temp and self._feeds_only(value.name, n))):
            old_name = value.name
            value.name = n.out.name
            self.producer[value.name] = self.producer.pop(old_name)
        self.env[n.out.name] = value

    def _feeds_only(self, name: str, n: Node, depth: int = 4) -> bool:
        """True when old value `name` is read by one node only, which is `n` or (through a
        chain of single readers, e.g. −(−x)) leads to `n` alone: nobody else sees the name."""
        if self._uses is None:
            self._count_uses()
        uses, reader = self._uses, self._reader
        for _ in range(depth):
            if uses.get(name, 0) != 1 or name not in reader:
                return False
            if reader[name] is n:
                return True
            name = reader[name].out.name
        return False

    def finish(self) -> Graph:
        for k, v in self.old.outputs.items():
            self.graph.outputs[k] = self.env[v.name]
        if hasattr(self.old, "origin"):
            self.graph.origin = self.old.origin
        return self.graph
