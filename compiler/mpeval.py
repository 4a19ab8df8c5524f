"""High-precision numeric evaluation of SymPy expression DAGs with mpmath.

A memoized walk over `expr.args`: shared subexpressions (SymPy hash-conses identical
subtrees, and gradc's renderings share them heavily) are evaluated once, so the cost is linear
in the DAG's size, unlike printing the expression tree to source (lambdify).

`ChainRule` is the 30-digit reference gradient of the SymPy check: the chain rule applied in
numbers over the graph's own DAG, with each node's local derivatives taken by SymPy (`sp.diff`
of the op's SymPy meaning on one symbol per input element).  No whole-model expression is ever
built, so its cost grows with the graph, not with the size of the model's expression tree."""
from __future__ import annotations

import functools
import time

from .lazy import mpmath
import numpy as np
from .lazy import sympy as sp

from .custom import custom_gate_of
from .ir import GradcError, Graph
from .ops import OPS
from .symbolic import _as_objects, render


class Unevaluable(ValueError):
    """A SymPy function this evaluator has no mpmath counterpart for."""

@functools.cache
def _funcs() -> dict:
    """SymPy function -> its mpmath counterpart (built at first use: SymPy loads lazily)."""
    return {
        sp.exp: mpmath.exp, sp.log: mpmath.log, sp.tanh: mpmath.tanh, sp.sin: mpmath.sin,
        sp.cos: mpmath.cos, sp.Abs: abs, sp.sign: mpmath.sign, sp.sinh: mpmath.sinh,
        sp.cosh: mpmath.cosh,
    }


def _heaviside(x, h0=None):
    return mpmath.mpf(1) if x > 0 else mpmath.mpf(0) if x < 0 else (
        mpmath.mpf(0.5) if h0 is None else h0)


@functools.cache
def _rel() -> dict:
    """SymPy relation class -> its comparison on numbers (built at first use)."""
    return {sp.StrictGreaterThan: lambda a, b: a > b, sp.GreaterThan: lambda a, b: a >= b,
            sp.StrictLessThan: lambda a, b: a < b, sp.LessThan: lambda a, b: a <= b,
            sp.Eq: lambda a, b: a == b, sp.Ne: lambda a, b: a != b}


def evaluate(exprs, subs: dict, dps: int = 30, memo: dict | None = None) -> list:
    """The values of `exprs` with symbols replaced by `subs` (symbol -> number), as mpmath
    numbers (bools for conditions).  `memo` (subexpression -> value) may be passed in: it keeps
    every subexpression evaluated, children before parents."""
    memo = {} if memo is None else memo

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
        if node.is_Float:
            return mpmath.mpf(node._mpf_)
        if node is sp.oo:
            return mpmath.inf
        if node is -sp.oo or node == -sp.oo:
            return -mpmath.inf
        if node is sp.nan or node is sp.zoo:
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
    if isinstance(node, sp.DiracDelta):   # 0 away from its kink; at the kink it has no value
        if len(args) == 1 and args[0] != 0:
            return mpmath.mpf(0)
        raise ZeroDivisionError("DiracDelta at its kink")
    rel = _rel().get(type(node))
    if rel is not None:
        return rel(*args)
    if isinstance(node, sp.And):
        return all(args)
    if isinstance(node, sp.Or):
        return any(args)
    if isinstance(node, sp.Not):
        return not args[0]
    if isinstance(node, sp.ITE):
        return args[1] if args[0] else args[2]
    fn = _funcs().get(node.func) or getattr(node.func, "mpmath", None)   # an op's own function
    if fn is None:                                                     # (ops/special.py)
        raise Unevaluable(f"cannot evaluate SymPy function {node.func}")
    return fn(*args)


# ---- the chain rule in numbers over the graph's DAG ----------------------------------------
def number(x, dps: int = 30):
    """A rendered value (SymPy number, bool or Python number) as an mpmath number with `dps`
    digits (mpmath rounds a new number to the working precision)."""
    if isinstance(x, (bool, sp.logic.boolalg.BooleanAtom)):
        return bool(x)
    x = sp.sympify(x)
    if not x.is_Number:   # log(-1.5) = log(1.5) + iπ, √-2, ...: not a real number
        return mpmath.nan if x.has(sp.I) else evaluate([x], {}, dps)[0]
    with mpmath.workdps(max(dps, mpmath.mp.dps)):
        return _one(x, {}, {})


def _local_symbols(v) -> np.ndarray:
    arr = np.empty(v.shape, dtype=object)
    for idx in np.ndindex(*v.shape):
        arr[idx] = sp.Symbol(v.name + (f"[{','.join(map(str, idx))}]" if idx else ""), real=True)
    return arr


class ChainRule:
    """d target / d wrt at a point, by reverse accumulation over `graph`'s nodes in
    `dps`-digit numbers:  adj[input] += adj[out] · ∂out/∂input,  last node first.

    ∂out/∂input of each node comes from SymPy: the node's SymPy meaning is rendered on one real
    symbol per element of its float inputs (integer and bool inputs take their values at the
    point), once per node, and each point sweeps that small expression DAG backwards with the
    sum, product and power rules and SymPy's own derivative of every function in it (`fdiff`:
    tanh, exp, log, Max, Abs, ...).  Gate rules and the autodiff pass are not involved, which
    makes this an oracle for both.  `switches(exprs)` names the expressions whose sign switches
    a node (Max ties, comparisons): their values come back with the gradient, so that points
    near a kink can be avoided."""

    def __init__(self, graph: Graph, target: str, wrt, switches=lambda exprs: []):
        self.graph, self.target, self.wrt = graph, target, list(wrt)
        self.switches = switches
        live, need = set(self.wrt), {target}
        for n in graph.nodes:
            if any(v.name in live for v in n.inputs):
                live.add(n.out.name)
        for n in reversed(graph.nodes):
            if n.out.name in need:
                need.update(v.name for v in n.inputs)
        self.types = graph.values()
        self.on_path = {n.out.name for n in graph.nodes
                        if n.out.name in live and n.out.name in need and n.out.type.is_float}
        self.live = live
        self.nodes = [n for n in graph.nodes if any(v.type.is_float for v in n.inputs)]
        self._local: dict = {}
        self._fdiff: dict = {}

    def local(self, node, env):
        """(symbols by input name, output expressions, switch expressions) of one node, cached
        on the values of its non-float inputs."""
        fixed = tuple((v.name, tuple(np.ravel(env[v.name]))) for v in node.inputs
                      if not v.type.is_float)
        key = (node.out.name, fixed)
        hit = self._local.get(key)
        if hit is not None:
            return hit
        syms, args = {}, []
        for v in node.inputs:
            if v.type.is_float:
                if v.name not in syms:
                    syms[v.name] = _local_symbols(v)
                args.append(syms[v.name])
            else:
                args.append(env[v.name])
        try:
            out = np.asarray(OPS[node.op].sympy(*args, **node.attrs), dtype=object)
        except Exception as e:
            raise GradcError(f"check_against_sympy: the SymPy meaning of {node.op} failed on "
                             f"symbols at {node.out.name}: {type(e).__name__}: {e}") from e
        if out.shape != node.out.shape:
            out = np.broadcast_to(out, node.out.shape)
        exprs = [sp.sympify(e) for e in out.ravel()]
        entry = (syms, exprs, list(self.switches(exprs)))
        self._local[key] = entry
        return entry

    def at(self, point: dict, dps: int = 30):
        """(target value, {wrt name: object array of gradient values}, switch values) at
        `point` (input name -> array, every input)."""
        env = render(self.graph, values=point, symbols={})
        with mpmath.workdps(dps):
            adj = {self.target: np.full((), mpmath.mpf(1), dtype=object)}
            switched = []
            for n in reversed(self.nodes):
                syms, exprs, kinks = self.local(n, env)
                a = adj.pop(n.out.name, None)
                subs = {s: number(env[name][idx]) for name, arr in syms.items()
                        for idx, s in np.ndenumerate(arr)}
                memo: dict = {}
                switched += evaluate(kinks, subs, dps, memo)
                if a is None or n.out.name not in self.on_path:
                    continue
                custom = custom_gate_of(n.op)
                if custom is not None:  # a user's gate rule is taken as given: whether it is
                    # the derivative of its forward is compiler/check_custom.py's report
                    self._add_rule(adj, n, custom.adjoint_at(n, env, _as_sympy(a, dps)))
                    continue
                evaluate(exprs, subs, dps, memo)
                seeds = {}
                for e, g in zip(exprs, a.ravel()):
                    if g != 0:      # a zero adjoint selects nothing (no 0·inf)
                        seeds[e] = seeds.get(e, 0) + g
                back = self._sweep(seeds, memo, subs, dps)
                for name, arr in syms.items():
                    if name not in self.live:
                        continue
                    acc = adj.get(name)
                    for k, sym in enumerate(arr.flat):
                        if sym in back:
                            if acc is None:
                                acc = adj[name] = _zeros(self.types[name].shape)
                            acc.flat[k] += back[sym]
            grads = {x: adj.get(x, _zeros(self.graph.input(x).shape)) for x in self.wrt}
            value = number(env[self.target][()]) if env[self.target].shape == () else None
        return value, grads, switched

    def _add_rule(self, adj: dict, node, grads) -> None:
        """adj[input] += the gradient a custom gate's rule gives that input (rendered numbers)."""
        for v, d in zip(node.inputs, grads):
            if v.name not in self.live or not v.type.is_float:
                continue
            acc = adj.get(v.name)
            if acc is None:
                acc = adj[v.name] = _zeros(self.types[v.name].shape)
            for k, x in enumerate(np.broadcast_to(np.asarray(d, dtype=object), v.shape).flat):
                acc.flat[k] += number(x)

    def _sweep(self, seeds: dict, memo: dict, subs: dict, dps: int) -> dict:
        """Adjoints of the symbols: the seeds (expression -> adjoint) pushed back through the
        expression DAG in `memo` (its values, children before parents), parents first."""
        bar = dict(seeds)
        for e in reversed(list(memo)):
            g = bar.pop(e, None)
            if g is None or g == 0 or e.is_Atom:     # symbols keep theirs; numbers have none
                if g is not None and e.is_Symbol:
                    bar[e] = g
                continue
            args = e.args
            if e.is_Add:
                parts = [(x, g) for x in args]
            elif e.is_Mul:
                vals = [memo[x] for x in args]
                parts = [(x, g * _product(vals[:k] + vals[k + 1:])) for k, x in enumerate(args)]
            elif e.is_Pow:
                b, p = args
                parts = [(b, g * memo[p] * memo[b] ** (memo[p] - 1))]
                if p.free_symbols:
                    parts.append((p, g * memo[e] * mpmath.log(memo[b])))
            elif isinstance(e, sp.Piecewise):
                taken = next((x for x, c in args if memo.get(c) is True or c is sp.true), None)
                parts = [] if taken is None else [(taken, g)]
            elif isinstance(e, (sp.logic.boolalg.Boolean, sp.core.relational.Relational)):
                parts = []      # conditions: no gradient flows through them
            elif callable(getattr(e, "fdiff", None)):   # tanh, exp, log, Max, Abs, ...
                parts = []
                for k, x in enumerate(args):
                    if x.free_symbols:
                        d = self._fdiff.get((e, k))
                        if d is None:
                            d = self._fdiff[(e, k)] = _fdiff(e, k)
                        parts.append((x, g * evaluate([d], subs, dps, memo)[0]))
            else:
                raise Unevaluable(f"no derivative rule for SymPy {type(e).__name__}")
            for x, d in parts:
                if x.free_symbols:
                    bar[x] = bar[x] + d if x in bar else d
        return {s: g for s, g in bar.items() if s.is_Symbol}


def _as_sympy(arr, dps: int) -> np.ndarray:
    """An object array of mpmath numbers as SymPy numbers (what the renderer computes on)."""
    out = np.empty(np.shape(arr), dtype=object)
    for idx, x in np.ndenumerate(np.asarray(arr, dtype=object)):
        out[idx] = sp.Float(x, dps) if isinstance(x, mpmath.mpf) else sp.sympify(x)
    return out


def _fdiff(e, k: int):
    """SymPy's derivative of function e with respect to its k-th argument, in terms of e's
    arguments (fdiff; through a real dummy variable when fdiff leaves a Derivative)."""
    d = e.fdiff(k + 1)
    if d.has(sp.Derivative):
        u = sp.Dummy("u", real=True)
        d = sp.diff(e.func(*e.args[:k], u, *e.args[k + 1:]), u).subs(u, e.args[k])
    if d.has(sp.Derivative):
        raise Unevaluable(f"SymPy has no derivative of {e.func} in argument {k + 1}")
    return d


def _product(vals):
    out = mpmath.mpf(1)
    for v in vals:
        out *= v
    return out


def _zeros(shape) -> np.ndarray:
    out = np.empty(shape, dtype=object)
    out[...] = mpmath.mpf(0)
    return out


# ---- a whole graph in numbers, node by node (models too large for SymPy) --------------------
def graph_numbers(graph: Graph, point: dict, dps: int = 30, base: dict | None = None,
                  cache: dict | None = None) -> dict:
    """Every value of `graph` at `point` as an object array of `dps`-digit mpmath numbers,
    node by node over the graph's DAG with the op table's SymPy meanings applied to numbers (no
    symbol, no expression is built).  Float inputs may be float64 arrays or object arrays of
    mpmath numbers; integer and bool inputs are given as the renderer takes them.

    The op whose SymPy meaning costs a Python multiplication per term of a contraction, the
    bilinear matmul, is given integers instead: each operand as integers times one power of
    two (`_fixed`), so NumPy's object dot is exact integer arithmetic, about 20 times faster than
    on mpmath numbers (the same SymPy meaning, on another number type; its result is rounded
    once, to `dps` digits); so is sum, linear in its operand.  With `base` (the values at a point that differs from this one
    only in the float inputs given as object arrays), the nodes that do not depend on those
    inputs keep their `base` values.  A node whose SymPy meaning was slow on numbers (SymPy
    functions: softmax_cross_entropy's exp and log) is rendered once on one symbol per input
    element and evaluated by `evaluate` from then on, when `cache` (a dict kept by the caller
    between calls on this graph) is given: the same meaning, only faster."""
    to_mp = np.frompyfunc(lambda x: _mp(x, dps), 1, 1)
    env, changed = {}, set()
    with mpmath.workdps(dps), np.errstate(all="ignore"):
        for v in graph.inputs:
            x = point[v.name]
            if base is not None and not (v.type.is_float and np.asarray(x).dtype == object):
                env[v.name] = base[v.name]
            elif not v.type.is_float:
                env[v.name] = _as_objects(x, v.shape)
            else:
                x = np.asarray(x)
                env[v.name] = np.asarray(to_mp(x) if x.dtype != object else x, dtype=object)
                changed.add(v.name)
        for n in graph.nodes:
            if base is not None and not any(v.name in changed for v in n.inputs):
                env[n.out.name] = base[n.out.name]
                continue
            changed.add(n.out.name)
            args = [env[v.name] for v in n.inputs]
            r = None
            if OPS[n.op].multilinear and all(v.type.is_float for v in n.inputs):
                r = _exact_product(n, args, dps, cache)
            elif OPS[n.op].elementwise and n.inputs and all(v.type.is_float for v in n.inputs):
                r = np.asarray(np.frompyfunc(_scalar(n), len(args), 1)(*args), dtype=object)
            local = None if cache is None else cache.get(_local_key(n, env))
            if r is None and local is not None:
                syms, exprs = local
                subs = {sym: env[name][idx] for name, arr in syms.items()
                        for idx, sym in np.ndenumerate(arr)}
                r = np.empty(n.out.shape, dtype=object)
                r.flat[:] = evaluate(exprs, subs, dps)
            if r is None:
                t = time.perf_counter()
                try:
                    r = OPS[n.op].sympy(*args, **n.attrs)
                except Exception as e:
                    raise GradcError(f"check_against_sympy: evaluating {n.out.name} = "
                                     f"{n.op}(...) at {dps} digits failed: "
                                     f"{type(e).__name__}: {e}") from e
                r = np.asarray(r, dtype=object)
                slow = time.perf_counter() - t > 0.02       # SymPy functions on numbers
                if (cache is not None and slow and n.out.type.is_float
                        and sum(v.type.size for v in n.inputs) <= 20000):
                    cache[_local_key(n, env)] = _render_local(n, env)
            if n.out.type.is_float and not all(type(x) is mpmath.mpf for x in r.flat):
                r = np.asarray(to_mp(r), dtype=object)
            if r.shape != n.out.shape:
                r = np.broadcast_to(r, n.out.shape).copy()
            env[n.out.name] = r
    return env


def _local_key(node, env):
    return (node.out.name, tuple((v.name, tuple(np.ravel(env[v.name]))) for v in node.inputs
                                 if not v.type.is_float))


def _render_local(node, env):
    """(symbols by input name, output expressions) of one node on one symbol per element of
    its float inputs (its other inputs at their values)."""
    syms, args = {}, []
    for v in node.inputs:
        if v.type.is_float:
            syms.setdefault(v.name, _local_symbols(v))
            args.append(syms[v.name])
        else:
            args.append(env[v.name])
    out = np.asarray(OPS[node.op].sympy(*args, **node.attrs), dtype=object)
    out = np.broadcast_to(out, node.out.shape)
    return syms, [sp.sympify(e) for e in out.ravel()]


_SCALARS: dict = {}


def _scalar(node):
    """An elementwise op's SymPy meaning on one element of each input, as an mpmath function
    (SymPy's own functions are slow on numbers: Max(x, 0) takes 300 µs)."""
    key = (node.op, repr(sorted(node.attrs.items())), len(node.inputs))
    fn = _SCALARS.get(key)
    if fn is None:
        syms = sp.symbols(f"a0:{len(node.inputs)}", real=True)
        expr = np.asarray(OPS[node.op].sympy(*(np.array(a, dtype=object) for a in syms),
                                               **node.attrs), dtype=object)[()]
        fn = _SCALARS[key] = sp.lambdify(syms, expr, modules="mpmath")
    return fn


def _mp(x, dps: int):
    if type(x) is mpmath.mpf:
        return x
    if isinstance(x, (float, int)) and not isinstance(x, bool):
        return mpmath.mpf(x)
    return number(x, dps)


def _fixed(arr: np.ndarray, bits: int):
    """(integers, E) with arr ≈ integers·2^E: every element kept to `bits` bits below the
    largest one (exact for mpmath numbers within that range); None for a non-finite element."""
    parts = [x._mpf_ for x in arr.flat]
    if any(m == 0 and (s, m, e, bc) != (0, 0, 0, 0) for s, m, e, bc in parts):
        return None                                   # inf or nan: mpmath's special values
    top = max((e + bc for s, m, e, bc in parts if m), default=0)
    E = top - bits
    ints = [(-m if s else m) << (e - E) if e >= E else (-m if s else m) >> (E - e)
            for s, m, e, bc in parts]
    out = np.empty(arr.shape, dtype=object)
    out.flat[:] = ints
    return out, E


def _exact_product(node, args, dps, cache=None):
    bits = mpmath.mp.prec + 64
    fixed = []
    for a in args:
        hit = None if cache is None else cache.get(("fixed", id(a), bits))
        if hit is None or hit[0] is not a:
            hit = (a, _fixed(a, bits))
            if cache is not None:
                cache[("fixed", id(a), bits)] = hit     # holds `a`: its id stays its own
        fixed.append(hit[1])
    if any(f is None for f in fixed):
        return None
    ints = np.asarray(OPS[node.op].sympy(*(f[0] for f in fixed), **node.attrs),
                      dtype=object)
    scale = sum(f[1] for f in fixed)
    prec, make = mpmath.mp.prec, mpmath.mp.make_mpf
    out = np.empty(ints.shape, dtype=object)
    out.flat[:] = [make(mpmath.libmp.from_man_exp(int(k), scale, prec, "n")) for k in ints.flat]
    return out

