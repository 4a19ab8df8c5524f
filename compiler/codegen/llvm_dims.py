"""Run-time sizes in the LLVM module (issue 17.3): a graph with dimension names (`f64[N, 784]`,
compiler/shapes.py) lowers to ONE native function for every N.  The lowerings see each
dimension name as a `Dim`, an integer polynomial in the names (N, 784·N, N·C + 3) that keeps
Python's arithmetic (strides, products, offsets), compares structurally (collapse, broadcast
strides) and becomes an i64 LLVM value where code needs it (`const_i64`, a loop's trip count,
a BLAS integer, mean's divisor).  Fixed dimensions stay ints, so they stay constants in the IR.

The sizes reach the code through the pointer array: slot len(buffers) + j holds dimension j
(in `dim_names` order) as an integer; the graph's function reads them once and passes them to
every kernel as i64 arguments after the buffer slots (llvm_kernels.new_kernel).

A lowering says it handles run-time sizes with `runtime_sizes = True` (the op record's
lowering; `runtime_capable` asks every node's).  A graph with any other lowering keeps the
per-size specialization (compiler/sized_kernel.py), and so does a call with a size of 0
(loops with a run-time count assume at least one row; zero-size shapes specialize).
Every dimension is at least 1 here, so `Dim` answers the comparisons that follow from that
(N > 0, N ≠ 0) and refuses the others (N ≤ 8: a TypeError naming the size).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

from llvmlite import ir

from ..ir import FLOAT_DTYPES, Graph, Node, Value
from ..ops.record import OPS
from ..shapes import graph_dims, resolve, resolve_attrs


class Dim:
    """An integer polynomial in dimension names with int coefficients: {monomial: coef}, a
    monomial a sorted tuple of names.  Arithmetic with ints and Dims; a constant result is an
    int.  Never equal to an int (a Dim is never constant)."""

    __slots__ = ("terms",)

    def __init__(self, terms):
        self.terms = terms

    @staticmethod
    def of(name: str) -> "Dim":
        return Dim({(name,): 1})

    @staticmethod
    def _make(terms):
        terms = {m: c for m, c in terms.items() if c != 0}
        if not terms:
            return 0
        if set(terms) == {()}:
            return terms[()]
        return Dim(terms)

    @staticmethod
    def _terms(x):
        if isinstance(x, Dim):
            return x.terms
        if isinstance(x, int) and not isinstance(x, bool):
            return {(): x} if x else {}
        return None

    def __add__(self, other):
        t = Dim._terms(other)
        if t is None:
            return NotImplemented
        out = dict(self.terms)
        for m, c in t.items():
            out[m] = out.get(m, 0) + c
        return Dim._make(out)

    __radd__ = __add__

    def __mul__(self, other):
        t = Dim._terms(other)
        if t is None:
            return NotImplemented
        out: dict = {}
        for m1, c1 in self.terms.items():
            for m2, c2 in t.items():
                m = tuple(sorted(m1 + m2))
                out[m] = out.get(m, 0) + c1 * c2
        return Dim._make(out)

    __rmul__ = __mul__

    def __neg__(self):
        return self * -1

    def __sub__(self, other):
        return self + (-other)

    def __rsub__(self, other):
        return (-self) + other

    def __eq__(self, other):
        return isinstance(other, Dim) and self.terms == other.terms

    def __ne__(self, other):
        return not self == other

    def __hash__(self):
        return hash(tuple(sorted(self.terms.items())))

    def lower_bound(self):
        """The least value with every name ≥ 1, or None when a coefficient is negative."""
        if any(c < 0 for m, c in self.terms.items() if m):
            return None
        return sum(self.terms.values())

    def _decide(self, op, other):
        low = self.lower_bound() if isinstance(other, int) else None
        if low is not None:
            if op == ">" and low > other or op == ">=" and low >= other:
                return True
            if op == "<" and low >= other or op == "<=" and low > other:
                return False
        raise TypeError(f"{self} {op} {other}: {self} is a run-time size (known only when the "
                        "kernel runs); a lowering comparing it must declare runtime_sizes = False")

    def __gt__(self, other):
        return self._decide(">", other)

    def __ge__(self, other):
        return self._decide(">=", other)

    def __lt__(self, other):
        return self._decide("<", other)

    def __le__(self, other):
        return self._decide("<=", other)

    def __bool__(self):
        return True          # every dimension is ≥ 1 in the run-time kernel

    def __index__(self):
        raise TypeError(f"{self} is a run-time size, not a Python int")

    def __int__(self):
        raise TypeError(f"{self} is a run-time size, not a Python int")

    def __float__(self):
        raise TypeError(f"{self} is a run-time size, not a Python float")

    def __str__(self):
        parts = []
        for m, c in sorted(self.terms.items()):
            names = "·".join(m)
            parts.append(names if c == 1 and m else f"{c}·{names}" if m else str(c))
        return " + ".join(parts)

    __repr__ = __str__


@dataclass(frozen=True)
class DimType:
    """A TensorType whose dimensions may be Dims (the types of a `sized_graph`)."""
    dtype: str
    shape: tuple
    text: str

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self):
        n = 1
        for d in self.shape:
            n = n * d
        return n

    @property
    def is_float(self) -> bool:
        return self.dtype in FLOAT_DTYPES

    symbolic = False

    def __str__(self) -> str:
        return self.text


def dim_names(graph: Graph) -> list:
    """The dimension names of `graph`, in the order of their slots after the buffers."""
    return list(graph_dims(graph))


def sized_graph(graph: Graph) -> Graph:
    """A copy of `graph` whose types and size attributes hold Dims for the dimension names."""
    dims = {d: Dim.of(d) for d in dim_names(graph)}
    env: dict = {}

    def value(v):
        env[v.name] = Value(v.name, DimType(v.dtype, resolve(v.shape, dims), str(v.type)))
        return env[v.name]
    new = Graph(graph.name)
    new.inputs = [value(v) for v in graph.inputs]
    for n in graph.nodes:
        out = value(n.out)
        new.nodes.append(Node(n.op, tuple(env[v.name] for v in n.inputs),
                              dict(resolve_attrs(n.attrs, OPS[n.op].attrs, dims)), out, n.loc,
                              n.rule, n.of))
    new.outputs = {k: env[v.name] for k, v in graph.outputs.items()}
    return new


def runtime_capable(graph: Graph, lowerings: dict) -> bool:
    """Whether every node's lowering handles run-time sizes (`runtime_sizes`)."""
    return all(getattr(lowerings[n.op], "runtime_sizes", False) for n in graph.nodes)


# ---- Dims as LLVM values ------------------------------------------------------------------
_CURRENT = threading.local()     # .em: the emitter whose builder and dimension values apply


class emitting:
    """`with emitting(em):` Dims become LLVM values at `em.b` from `em.dimvals`."""

    def __init__(self, em):
        self.em = em

    def __enter__(self):
        self.outer = getattr(_CURRENT, "em", None)
        _CURRENT.em = self.em

    def __exit__(self, *exc):
        _CURRENT.em = self.outer


def dim_value(d: Dim):
    """The i64 value of `d` in the current function of the current emitter."""
    em = getattr(_CURRENT, "em", None)
    if em is None or not em.dimvals:
        raise TypeError(f"{d} is a run-time size, but no function has the sizes")
    b, i64 = em.b, ir.IntType(64)
    total = None
    for m, c in sorted(d.terms.items()):
        term = ir.Constant(i64, c) if not m or c != 1 else None
        for name in m:
            term = em.dimvals[name] if term is None else b.mul(term, em.dimvals[name])
        total = term if total is None else b.add(total, term)
    return total


def count_value(em, n, ty):
    """The float `ty` constant n, or the conversion of a run-time size n."""
    if isinstance(n, Dim):
        return em.b.sitofp(dim_value(n), ty)
    return ir.Constant(ty, float(n))
