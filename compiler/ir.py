"""The gradc IR: an SSA graph of typed values.

A `Graph` has typed inputs, a list of `Node`s in topological order (each node defines exactly one
new `Value`), and named outputs that refer to values.  Every value has a `TensorType`: a dtype
(`f32`, `f64`, `i64`, `bool`) and a shape (a tuple of ints; `()` is a scalar).

Nodes carry provenance: `loc` is the model's source location (`lecture.py:12`); nodes built by the
autodiff pass also carry `rule` (the gate rule that produced them) and `of` (the forward value
whose gate it was).  Provenance is part of the text form and survives a round trip.

Invariants (checked by `verify`): names are unique; every node input is defined before use;
every output type equals what the op's shape rule says.
"""
from __future__ import annotations

import keyword
import re
from dataclasses import dataclass, field

DTYPES = ("bool", "i64", "f32", "f64")
FLOAT_DTYPES = ("f32", "f64")
NUMPY_DTYPE = {"bool": "bool", "i64": "int64", "f32": "float32", "f64": "float64"}

TEMP_NAME = re.compile(r"^t\d+\Z")                 # \Z: `$` also matches before a final "\n"
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")
_SUFFIXED = re.compile(r"^(.*)_([1-9][0-9]*)\Z", re.S)   # a name `fresh` made: base_i


class GradcError(Exception):
    """Base class of the errors gradc raises for user mistakes."""


class ShapeError(GradcError, ValueError):
    """An op was applied to operands whose shapes or dtypes do not fit its rule."""


class UnsupportedError(GradcError, TypeError):
    """An op, a Python construct or an argument kind that gradc does not support."""


class UnknownNameError(GradcError, KeyError):
    """A name (an input, an output) that the graph does not have.  A KeyError too, for callers
    that caught the KeyError `Graph.input` raised before; shown as its message, not its repr."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def is_dim_name(d) -> bool:
    """Whether `d` names a dimension (compiler/shapes.py): an identifier, not a keyword."""
    return isinstance(d, str) and bool(_IDENT.match(d)) and not keyword.iskeyword(d)


def _dim(d, shape):
    """A dimension: a non-negative int, or a name (an identifier that is not a keyword)."""
    if isinstance(d, str):
        if not is_dim_name(d):
            raise ShapeError(f"dimension {d!r} in shape {shape} is not a name (an identifier, "
                             "not a Python keyword) nor a non-negative int")
        return d
    d = int(d)
    if d < 0:
        raise ShapeError(f"negative dimension in shape {tuple(shape)}")
    return d


@dataclass(frozen=True)
class TensorType:
    dtype: str
    shape: tuple

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise ShapeError(f"unknown dtype {self.dtype!r}; gradc knows {', '.join(DTYPES)}")
        shape = self.shape
        if type(shape) is tuple and all(type(d) is int and d >= 0 for d in shape):
            return            # already what the conversion below gives (most shape rules)
        object.__setattr__(self, "shape", tuple(_dim(d, shape) for d in shape))

    def __hash__(self) -> int:
        # the hash dataclass would generate, kept (types are dict keys in every pass)
        h = self.__dict__.get("_hash")
        if h is None:
            h = hash((self.dtype, self.shape))
            object.__setattr__(self, "_hash", h)
        return h

    def __getstate__(self) -> dict:
        # the fields only: a string's hash differs between processes (PYTHONHASHSEED), so the
        # kept hash (and text) must not travel in a pickle or a copy
        return {"dtype": self.dtype, "shape": self.shape}

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def symbolic(self) -> bool:
        """Whether a dimension is a name (`f64[N,784]`: compiler/shapes.py)."""
        return any(isinstance(d, str) for d in self.shape)

    @property
    def size(self) -> int:
        """The number of elements; a ShapeError for a symbolic shape (its size is known only
        when the function runs: compiler/shapes.py `size_of` compares such sizes)."""
        n = 1
        for d in self.shape:
            if isinstance(d, str):
                raise ShapeError(f"{self} has a symbolic size (dimension {d!r} is known only "
                                 "at run time)")
            n *= d
        return n

    @property
    def is_float(self) -> bool:
        return self.dtype in FLOAT_DTYPES

    def __str__(self) -> str:
        text = self.__dict__.get("_text")     # (frozen: the text never changes; not a field)
        if text is None:
            text = f"{self.dtype}[{','.join(str(d) for d in self.shape)}]"
            object.__setattr__(self, "_text", text)
        return text


@dataclass(eq=False)
class Value:
    """One SSA value.  `temp` marks a generated name (`t3`) that emitters may inline away."""
    name: str
    type: TensorType

    @property
    def temp(self) -> bool:
        name = self.name
        return name[:1] == "t" and bool(TEMP_NAME.match(name))    # (most names fail at "t")

    @property
    def shape(self) -> tuple:
        return self.type.shape

    @property
    def dtype(self) -> str:
        return self.type.dtype

    @property
    def ndim(self) -> int:
        return len(self.type.shape)

    def __repr__(self) -> str:
        return f"%{self.name}: {self.type}"


@dataclass(eq=False)
class Node:
    op: str
    inputs: tuple
    attrs: dict
    out: Value
    loc: str | None = None
    rule: str | None = None
    of: str | None = None

    def key(self) -> tuple:
        """Everything that identifies the node, by names (used for structural equality)."""
        return (self.op, tuple(v.name for v in self.inputs), _freeze(self.attrs),
                self.out.name, self.out.type, self.loc, self.rule, self.of)


def _freeze(x):
    if isinstance(x, dict):
        return tuple((k, _freeze(v)) for k, v in x.items())
    if isinstance(x, (list, tuple)):
        return tuple(_freeze(v) for v in x)
    if isinstance(x, float) and x != x:
        return "nan"
    return x


@dataclass(eq=False)
class Graph:
    name: str
    inputs: list = field(default_factory=list)
    nodes: list = field(default_factory=list)
    outputs: dict = field(default_factory=dict)  # output name -> Value
    # (fn, specs, fixed kwargs) when traced from Python: lets checks retrace a reduced copy.
    # Not part of the graph's identity (equality, text form).
    origin: object = field(default=None, repr=False, compare=False)
    # parameter trees (compiler/trees.py): argument name -> tree of leaf input names, and a
    # grouped output (`dparams`) -> tree of output keys; part of the text form
    input_trees: dict = field(default_factory=dict, repr=False)
    output_trees: dict = field(default_factory=dict, repr=False)

    # ---- queries -------------------------------------------------------------------------
    def values(self) -> dict:
        """Every value by name: inputs first, then node outputs in order."""
        vals = {v.name: v for v in self.inputs}
        for n in self.nodes:
            vals[n.out.name] = n.out
        return vals

    def input(self, name: str) -> Value:
        for v in self.inputs:
            if v.name == name:
                return v
        raise UnknownNameError(f"graph {self.name!r} has no input {name!r}; inputs are "
                       f"{', '.join(v.name for v in self.inputs)}")

    def producers(self) -> dict:
        """Value name -> the node defining it."""
        return {n.out.name: n for n in self.nodes}

    def users(self) -> dict:
        """Value name -> list of nodes that read it (in order, with repeats)."""
        use: dict = {}
        for n in self.nodes:
            for v in n.inputs:
                readers = use.get(v.name)
                if readers is None:
                    use[v.name] = [n]
                else:
                    readers.append(n)
        return use

    def __eq__(self, other) -> bool:
        if not isinstance(other, Graph):
            return NotImplemented
        if self is other:
            return True
        if len(self.nodes) != len(other.nodes) or len(self.inputs) != len(other.inputs):
            return False          # (cheap answers first: a pass loop compares every round)
        return (self.name == other.name
                and [(v.name, v.type) for v in self.inputs] == [(v.name, v.type) for v in other.inputs]
                and [(k, v.name) for k, v in self.outputs.items()]
                == [(k, v.name) for k, v in other.outputs.items()]
                and self.input_trees == other.input_trees
                and self.output_trees == other.output_trees
                and all(a is b or a.key() == b.key() for a, b in zip(self.nodes, other.nodes)))

    __hash__ = None

    def __str__(self) -> str:
        from .text import print_graph   # the text form is built on this module's types
        return print_graph(self)

    def __repr__(self) -> str:
        return (f"<Graph {self.name}: {len(self.inputs)} inputs, {len(self.nodes)} nodes, "
                f"outputs {list(self.outputs)}>")


def const_value(value, dtype: str):
    """A constant's value as its dtype's Python type (float, bool or int)."""
    if dtype in FLOAT_DTYPES:
        return float(value)
    if dtype == "bool":
        return bool(value)
    return int(value)


class Namer:
    """Hands out unique, valid, non-keyword names.  Temporaries are `t0, t1, ...`; a requested
    name that is taken gets a numeric suffix (`h`, `h_1`, `h_2`)."""

    RESERVED = frozenset({"np", "math", "inputs", "outputs", "self"})

    def __init__(self, taken=()):
        self.taken = set(taken)
        self._next_temp = 0
        # base -> k such that base_1 .. base_{k-1} are all taken: `fresh` probes from there, so
        # naming n values `h` costs O(n), not O(n²); `release` lowers it again
        self._low: dict = {}

    def temp(self) -> str:
        while f"t{self._next_temp}" in self.taken:
            self._next_temp += 1
        name = f"t{self._next_temp}"
        self.taken.add(name)
        return name

    def fresh(self, hint: str) -> str:
        import keyword
        base = hint if _IDENT.match(hint or "") else "v"
        if keyword.iskeyword(base) or base in self.RESERVED or TEMP_NAME.match(base):
            base = base + "_"
        name = base
        if name in self.taken:
            i = self._low.get(base, 1)
            name = f"{base}_{i}"
            while name in self.taken:
                i += 1
                name = f"{base}_{i}"
            self._low[base] = i + 1
        self.taken.add(name)
        return name

    def release(self, name: str) -> None:
        self.taken.discard(name)
        m = _SUFFIXED.match(name)
        if m and self._low.get(m[1], 1) > int(m[2]):    # `base_i` is free again
            self._low[m[1]] = int(m[2])


def _text(what: str, text) -> None:
    """Names, keys and provenance are text that UTF-8 can hold (the IR text, the cache key and
    emitted files are UTF-8; a lone surrogate is not a character)."""
    if not isinstance(text, str):
        raise ShapeError(f"verify: {what} {text!r} is not a string")
    if text.isascii():
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ShapeError(f"verify: {what} {text!r} is not valid Unicode text (a lone "
                         "surrogate)") from None


def verify(graph: Graph) -> Graph:
    """Check SSA (unique names, defined before use), output types against the op shape rules,
    and that outputs refer to defined values; names are strings and attributes are those the
    op declares (ops/attrs.py: `AttrError`).  Returns the graph; raises `ShapeError`."""
    # the op table is declared on this module's types (TensorType, ShapeError): read at a call
    from .ops import OPS, known_ops
    from .ops.attrs import check_attrs
    defined: dict = {}
    _text("the graph's name", graph.name)
    for v in graph.inputs:
        _text("input name", v.name)
        if v.name in defined:
            raise ShapeError(f"verify: input {v.name!r} defined twice")
        defined[v.name] = v
    dims = {d for v in graph.inputs for d in v.shape if isinstance(d, str)}
    for n in graph.nodes:
        if n.op not in OPS:
            raise UnsupportedError(f"verify: unknown op {n.op!r}; ops are {known_ops()}")
        for v in n.inputs:
            if defined.get(v.name) is not v:
                raise ShapeError(f"verify: {n.out.name} = {n.op}(...) reads {v.name!r} "
                                 "before it is defined")
        _text("value name", n.out.name)
        if n.out.name in defined:
            raise ShapeError(f"verify: value {n.out.name!r} defined twice (SSA)")
        # (the message is made only for text that is not plain ASCII: see _text)
        for what, text in (("loc", n.loc), ("rule", n.rule), ("of", n.of)):
            if text is not None and not (isinstance(text, str) and text.isascii()):
                _text(f"{n.out.name}'s {what}", text)
        rec = OPS[n.op]
        check_attrs(n.op, n.attrs, rec.attrs)
        unknown = [d for d in n.out.shape if isinstance(d, str) and d not in dims]
        if unknown:       # a size the call cannot tell: no input has that dimension
            raise ShapeError(f"verify: {n.out.name} = {n.op}(...) has dimension {unknown[0]!r}, "
                             "which no input of the graph has")
        expect = rec.shape([v.type for v in n.inputs], **n.attrs)
        if expect != n.out.type:
            raise ShapeError(f"verify: {n.out.name} = {n.op}(...) has type {n.out.type} but the "
                             f"{n.op} rule gives {expect}")
        defined[n.out.name] = n.out
    for k, v in graph.outputs.items():
        _text("output key", k)
        if defined.get(v.name) is not v:
            raise ShapeError(f"verify: output {k!r} refers to undefined value {v.name!r}")
    return graph
