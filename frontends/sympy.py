"""The SymPy frontend: a SymPy expression becomes a gradc graph, so its gradient can be
compiled to NumPy or native code.

    x, y = sympy.symbols("x y")
    g = frontends.sympy.trace(sympy.exp(x) * y**2, inputs={x: f64[100], y: f64[100]},
                              reduce="sum")
    fn = compiler.compile(compiler.grad(g))   # out = Σ f, dx[i] = ∂f/∂x at element i

Scalars, or elementwise over arrays: each symbol gets a spec (`f64[()]` or `f64[n, ...]`) and the
expression broadcasts as NumPy does.  Every SymPy node maps to an op of the table; a function
the table lacks raises an error naming it.
"""
from __future__ import annotations

import re

import sympy as sp

from compiler import builder as B
from compiler.builder import Builder
from compiler.ir import Graph, TensorType, UnsupportedError

_UNARY = {sp.exp: B.exp, sp.log: B.log, sp.tanh: B.tanh, sp.sin: B.sin, sp.cos: B.cos,
          sp.Abs: B.abs, sp.sign: lambda x: B.unary("sign", x)}
_REL = {sp.StrictGreaterThan: ">", sp.GreaterThan: ">=", sp.StrictLessThan: "<",
        sp.LessThan: "<=", sp.Eq: "==", sp.Ne: "!="}
_SUPPORTED = ("+, *, ** (sqrt, 1/x), exp, log, tanh, sin, cos, Abs, sign, Max, Min, "
              "Piecewise with comparisons, Heaviside, numbers, pi, E")


def trace(expr, inputs: dict, name: str = "sympy_expr", reduce: str | None = None) -> Graph:
    """A graph computing `expr` (or a dict/list of expressions: several outputs) with one
    input per symbol in `inputs` ({symbol: spec}); outputs are `out` (or the dict's keys, or
    `out0, out1, ...`).  `reduce="sum"` sums each output to a scalar, so that `grad` of an
    elementwise formula gives its elementwise derivative."""
    if reduce not in (None, "sum"):
        raise UnsupportedError(f"sympy.trace: reduce must be None or 'sum', got {reduce!r}")
    exprs = expr if isinstance(expr, dict) else (
        {f"out{k}": e for k, e in enumerate(expr)} if isinstance(expr, (list, tuple))
        else {"out": expr})
    for k, e in exprs.items():
        if isinstance(e, str):
            raise UnsupportedError(
                f"sympy.trace: output {k!r} is the string {e[:40]!r}; pass a SymPy expression "
                "(sympy.sympify evaluates a string as Python code, so gradc never does it for "
                "you: parse text you trust yourself, e.g. sympy.parse_expr(text))")
    try:     # strict: numbers and SymPy objects only, never a string or an object's repr
        exprs = {k: sp.sympify(e, strict=True) for k, e in exprs.items()}
    except sp.SympifyError as e:
        raise UnsupportedError(f"sympy.trace: {e}; pass SymPy expressions or numbers") from None
    free = set().union(*(e.free_symbols for e in exprs.values()))
    missing = sorted(str(s) for s in free if s not in inputs)
    if missing:
        raise UnsupportedError(f"sympy.trace: no spec for symbol(s) {', '.join(missing)}; "
                               "pass inputs={symbol: f64[...]} for every free symbol")
    graph = Graph(re.sub(r"\W", "_", name))
    b = Builder(graph)
    env = {}
    for sym, spec in inputs.items():
        if not isinstance(spec, TensorType):
            raise UnsupportedError(f"sympy.trace: the spec of {sym} must look like f64[3], "
                                   f"got {spec!r}")
        env[sym] = b.add_input(re.sub(r"\W", "_", str(sym)), spec)
    dtype = next((t.dtype for t in inputs.values() if t.is_float), "f64")
    first = next(iter(env.values()), None)
    for key, e in exprs.items():
        out = _lower(e, env, b, dtype, first)
        if not isinstance(out, B.Var):
            out = b.const(float(out), dtype)
        if reduce == "sum":
            out = B.sum(out)
        graph.outputs[key] = out.value
    return graph


def _number(e) -> float:
    return float(sp.N(e, 17))


def _lower(expr, env: dict, b: Builder, dtype: str, like):
    """Lower bottom-up with memoization (SymPy expressions are DAGs of shared subtrees)."""
    stack = [(expr, False)]
    while stack:
        e, ready = stack.pop()
        if e in env:
            continue
        if e.is_Number or e in (sp.pi, sp.E):
            env[e] = _number(e)
            continue
        if e in (sp.true, sp.false):
            env[e] = bool(e)
            continue
        if isinstance(e, sp.Piecewise):     # its branches are lowered by _piecewise itself
            env[e] = _piecewise(e, env, b)
            continue
        if not ready:
            stack.append((e, True))
            stack.extend((a, False) for a in e.args if a not in env and not isinstance(a, tuple))
            continue
        env[e] = _node(e, env, b)
    return env[expr]


def _node(e, env, b):
    args = [env[a] for a in e.args] if not isinstance(e, sp.Piecewise) else None
    if e.is_Add:
        return _fold(args, lambda x, y: x + y)
    if e.is_Mul:
        return _fold(args, lambda x, y: x * y)
    if e.is_Pow:
        base, ex = args
        if isinstance(ex, float):
            if ex == 0.5:
                return B.sqrt(base)
            if ex == -1:
                return 1.0 / base
            if ex == -0.5:
                return 1.0 / B.sqrt(base)
            if ex == 2:
                return base * base
            if ex == int(ex) and ex > 0:
                return base ** ex
        if isinstance(base, float) and abs(base - float(sp.E)) < 1e-15:
            return B.exp(ex)
        return base ** ex
    if e.func in _UNARY:
        return _UNARY[e.func](_var(args[0], b, env))
    if isinstance(e, (sp.Max, sp.Min)):
        fn = B.maximum if isinstance(e, sp.Max) else B.minimum
        # max(x, 0) is relu; test for the number 0 by type first (== on a traced value is a
        # traced comparison, and `in` would ask for its truth value)
        zero = [k for k, a in enumerate(args) if not isinstance(a, B.Var) and a == 0.0]
        if isinstance(e, sp.Max) and len(args) == 2 and zero:
            return B.relu(_var(args[1 - zero[0]], b, env))
        return _fold(args, fn)
    if isinstance(e, sp.Piecewise):
        return _piecewise(e, env, b)
    if type(e) in _REL:
        x, y = args
        ops = {">": lambda: x > y, ">=": lambda: x >= y, "<": lambda: x < y, "<=": lambda: x <= y,
               "==": lambda: B.equal(_var(x, b, env), y), "!=": lambda: B.binary("not_equal", x, y)}
        return ops[_REL[type(e)]]()
    if isinstance(e, sp.Heaviside):
        x = _var(args[0], b, env)
        return B.where(x > 0, 1.0, B.where(x < 0, 0.0, 0.5))
    raise UnsupportedError(f"sympy.trace: SymPy function {e.func.__name__} ({e}) has no gradc "
                           f"op; supported: {_SUPPORTED}")


def _var(x, b, env):
    if isinstance(x, B.Var):
        return x
    like = next(v for v in env.values() if isinstance(v, B.Var) and v.value.type.is_float)
    return B.lift(float(x), like)


def _fold(args, fn):
    out = args[0]
    for a in args[1:]:
        out = fn(out, a) if isinstance(out, B.Var) or isinstance(a, B.Var) else fn(out, a)
    return out


def _piecewise(e, env, b):
    """Piecewise((a, c1), (b, c2), ..., (z, True)) -> where(c1, a, where(c2, b, ... z))."""
    pieces = list(e.args)
    expr, cond = pieces[-1]
    if cond != sp.true:
        raise UnsupportedError("sympy.trace: a Piecewise needs a final (expr, True) branch")
    out = _lower(expr, env, b, None, None)
    for expr, cond in reversed(pieces[:-1]):
        c = _lower(cond, env, b, None, None)
        val = _lower(expr, env, b, None, None)
        if not isinstance(c, B.Var):
            out = val if bool(c) else out
            continue
        out = B.where(c, _var(val, b, env), _var(out, b, env))
    return out
