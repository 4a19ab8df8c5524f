"""The SymPy renderer: a graph becomes SymPy expressions, one per output element.

Each float input element is a real symbol named after the input and its index (`W1_0_1`; a
scalar input `x` is the symbol `x`).  Integer inputs (labels) take concrete values, since
`onehot(y)` of a symbolic class index has no closed form.  Each node is rendered with its op's
SymPy meaning from the op table (`OPS[op].sympy`), on NumPy object arrays of expressions.
Non-smooth ops render as `Max`, `Piecewise` and relationals.
"""
from __future__ import annotations

import numpy as np
from .lazy import sympy as sp

from .ir import GradcError, Graph
from .ops import OPS


def input_symbols(graph: Graph, names=None) -> dict:
    """Input name -> object array of real symbols (`W1_0_1`), for the float inputs."""
    out = {}
    for v in graph.inputs:
        if not v.type.is_float or (names is not None and v.name not in names):
            continue
        arr = np.empty(v.shape, dtype=object)
        for idx in np.ndindex(*v.shape):
            label = v.name + "".join(f"_{i}" for i in idx)
            arr[idx] = sp.Symbol(label, real=True)
        out[v.name] = arr
    return out


def _as_objects(value, shape) -> np.ndarray:
    arr = np.empty(shape, dtype=object)
    src = np.asarray(value)
    for idx in np.ndindex(*shape):
        x = src[idx]
        arr[idx] = sp.Integer(int(x)) if src.dtype.kind in "iub" else sp.Float(float(x), 30)
    return arr


def render(graph: Graph, values: dict | None = None, symbols: dict | None = None,
           each=None) -> dict:
    """Every value of `graph` as an object array of SymPy expressions.  Float inputs are
    symbols (or the numbers in `values`: then every node is a 30-digit number, evaluated once);
    integer inputs must be given in `values`.  `each(k, n, node)` is called before node k of n
    (progress reports)."""
    values = dict(values or {})
    symbols = input_symbols(graph) if symbols is None else symbols
    env = {}
    for v in graph.inputs:
        if v.name in values:
            env[v.name] = _as_objects(values[v.name], v.shape)
        elif v.name in symbols:
            env[v.name] = symbols[v.name]
        else:
            raise GradcError(f"to_sympy: input {v.name!r} is {v.type}; integer inputs need "
                             f"concrete values: pass values={{{v.name!r}: array}}")
    for k, n in enumerate(graph.nodes):
        if each is not None:
            each(k, len(graph.nodes), n)
        args = [env[v.name] for v in n.inputs]
        try:
            r = OPS[n.op].sympy(*args, **n.attrs)
        except Exception as e:
            raise GradcError(f"to_sympy: rendering {n.out.name} = {n.op}(...) failed: "
                             f"{type(e).__name__}: {e}") from e
        r = np.asarray(r, dtype=object)
        if r.shape != n.out.shape:
            r = np.broadcast_to(r, n.out.shape).copy()
        env[n.out.name] = r
    return env


def to_public(arr: np.ndarray):
    """An object array as the user sees it: an expression, a column Matrix, a Matrix, or an
    N-d Array."""
    if arr.ndim == 0:
        return arr[()]
    if arr.ndim == 1:
        return sp.Matrix(list(arr))
    if arr.ndim == 2:
        return sp.Matrix(arr.tolist())
    return sp.Array(arr.tolist())


def to_sympy(graph: Graph, values: dict | None = None) -> dict:
    """The graph's outputs as SymPy objects, by output name (scalars as expressions, vectors
    as column matrices, matrices as matrices)."""
    env = render(graph, values)
    return {k: to_public(env[v.name]) for k, v in graph.outputs.items()}
