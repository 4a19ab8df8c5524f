"""High-precision numeric evaluation of SymPy expression DAGs with mpmath.

A memoized walk over `expr.args`: shared subexpressions (SymPy hash-conses identical
subtrees, and gradc's renderings share them heavily) are evaluated once, so the cost is linear
in the DAG's size, unlike printing the expression tree to source (lambdify)."""
from __future__ import annotations

import mpmath
import sympy as sp

_FUNCS = {
    sp.exp: mpmath.exp, sp.log: mpmath.log, sp.tanh: mpmath.tanh, sp.sin: mpmath.sin,
    sp.cos: mpmath.cos, sp.Abs: abs, sp.sign: mpmath.sign, sp.sinh: mpmath.sinh,
    sp.cosh: mpmath.cosh,
}


def _heaviside(x, h0=None):
    return mpmath.mpf(1) if x > 0 else mpmath.mpf(0) if x < 0 else (
        mpmath.mpf(0.5) if h0 is None else h0)


_REL = {sp.StrictGreaterThan: lambda a, b: a > b, sp.GreaterThan: lambda a, b: a >= b,
        sp.StrictLessThan: lambda a, b: a < b, sp.LessThan: lambda a, b: a <= b,
        sp.Eq: lambda a, b: a == b, sp.Ne: lambda a, b: a != b}


def evaluate(exprs, subs: dict, dps: int = 30) -> list:
    """The values of `exprs` with symbols replaced by `subs` (symbol -> number), as mpmath
    numbers (bools for conditions)."""
    memo: dict = {}

    def ev(e):
        hit = memo.get(e)
        if hit is not None:
            return hit
        stack = [(e, False)]
        while stack:
            node, ready = stack.pop()
            if node in memo:
                continue
            if isinstance(node, sp.Piecewise):   # lazily: only the branch that is taken
                memo[node] = _piecewise(node, ev)
                continue
            if not ready and node.args and not node.is_Number:
                stack.append((node, True))
                stack.extend((a, False) for a in node.args if a not in memo)
                continue
            memo[node] = _one(node, memo, subs)
        return memo[e]

    with mpmath.workdps(dps):
        return [ev(sp.sympify(e)) for e in exprs]


def _piecewise(node, ev):
    for expr, cond in node.args:
        if ev(cond):
            return ev(expr)
    return mpmath.nan


def _one(node, memo, subs):
    if node.is_Symbol:
        return mpmath.mpf(subs[node])
    if node.is_Number:
        if node is sp.oo:
            return mpmath.inf
        if node is -sp.oo or node == -sp.oo:
            return -mpmath.inf
        if node is sp.nan:
            return mpmath.nan
        return mpmath.mpf(node.p) / node.q if node.is_Rational else mpmath.mpf(str(node))
    if node in (sp.true, sp.false):
        return bool(node)
    if node is sp.pi:
        return mpmath.pi
    if node is sp.E:
        return mpmath.e
    args = [memo[a] for a in node.args]
    if node.is_Add:
        return mpmath.fsum(args)
    if node.is_Mul:
        out = mpmath.mpf(1)
        for a in args:
            out *= a
        return out
    if node.is_Pow:
        base, ex = args
        if ex == 0.5:
            return mpmath.sqrt(base)
        return base ** ex
    if isinstance(node, sp.Max):
        return max(args)
    if isinstance(node, sp.Min):
        return min(args)
    if isinstance(node, sp.Heaviside):
        return _heaviside(*args)
    if type(node) in _REL:
        return _REL[type(node)](*args)
    if isinstance(node, sp.And):
        return all(args)
    if isinstance(node, sp.Or):
        return any(args)
    if isinstance(node, sp.Not):
        return not args[0]
    if isinstance(node, sp.ITE):
        return args[1] if args[0] else args[2]
    fn = _FUNCS.get(node.func)
    if fn is None:
        raise ValueError(f"cannot evaluate SymPy function {node.func}")
    return fn(*args)
