"""Randomized differential tests (hypothesis).

1. Random well-typed graphs (random ops from the table, random shapes with broadcasting,
   random fan-out) and their gradients, checked four ways: the reference interpreter, the NumPy
   backend, the LLVM backend, and float64 central finite differences.
2. The IR text parser fed random and mutated text: it returns a verified graph or raises
   ParseError with a line number; never another exception, never evaluating code.

Profiles (tests/hypothesis_profiles.py): 'ci' by default, `--hypothesis-profile=long` for more.
"""
import builtins
import warnings

import numpy as np
import pytest
from hypothesis import given, strategies as st

import hypothesis_profiles  # noqa: F401  (registers and loads the profiles)

import compiler
from compiler import builder as B
from compiler.builder import Builder
from compiler.ir import Graph, TensorType

# ---- random programs -------------------------------------------------------------------------
# Each entry builds IR from Vars.  Domain-restricted ops get arguments inside their domain
# (log(x² + 1)); kinks (relu, abs, maximum, where) are hit with probability ~0 by the random
# inputs, so finite differences apply to them too.
UNARY = {
    "tanh": B.tanh, "sigmoid": B.sigmoid, "softplus": B.softplus, "sin": B.sin, "cos": B.cos,
    "swish": B.swish, "elu": B.elu, "neg": lambda x: -x, "relu": B.relu, "abs": B.abs,
    "leaky_relu": lambda x: B.leaky_relu(x, 0.1),
    "exp": lambda x: B.exp(B.tanh(x)), "log": lambda x: B.log(x * x + 1),
    "log1p": lambda x: B.log1p(x * x), "sqrt": lambda x: B.sqrt(x * x + 0.5),
    "pow": lambda x: (x * x + 1) ** 1.5, "square": lambda x: x * x,
    "sum": lambda x: B.sum(x, axis=-1, keepdims=True) if x.ndim else x,
    "mean": lambda x: B.mean(x, axis=0) if x.ndim else x,
    "max": lambda x: B.max(x, axis=-1) if x.ndim else x,
    "softmax": lambda x: B.softmax(x) if x.ndim else x,
    "log_softmax": lambda x: B.log_softmax(x) if x.ndim else x,
    "transpose": lambda x: x.T,
    "getitem": lambda x: x[..., :1] if x.ndim else x,
    "reshape": lambda x: x.reshape(-1),
}
BINARY = {
    "add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
    "div": lambda a, b: a / (b * b + 1), "maximum": B.maximum, "minimum": B.minimum,
    "where": lambda a, b: B.where(a > b, a * 2, b),
    "matmul": lambda a, b: a @ b.T if a.ndim == 2 and b.ndim == 2 and a.shape[1] == b.shape[1]
    else a * b,
}
UNARY_NAMES, BINARY_NAMES = sorted(UNARY), sorted(BINARY)
SHAPES = [lambda r, c: (r, c), lambda r, c: (c,), lambda r, c: (r, 1), lambda r, c: (1, c),
          lambda r, c: ()]


def _broadcasts(a, b) -> bool:
    try:
        np.broadcast_shapes(a.shape, b.shape)
        return True
    except ValueError:
        return False


def build(r, c, input_shapes, program, dtype="f64") -> Graph:
    """A graph from the drawn program: every step applies a unary op to one pool value or a
    binary op to two (pool values may be used many times: fan-out); the output sums the last
    value and a second pool value."""
    g = Graph("random")
    b = Builder(g)
    pool = [b.add_input(f"x{k}", TensorType(dtype, SHAPES[s % len(SHAPES)](r, c)))
            for k, s in enumerate(input_shapes)]
    for op_pick, i, j in program:
        a, other = pool[i % len(pool)], pool[j % len(pool)]
        if op_pick % 3 == 2:
            name = BINARY_NAMES[(op_pick // 3) % len(BINARY_NAMES)]
            if not _broadcasts(a, other):
                other = B.sum(other)
            pool.append(BINARY[name](a, other))
        else:
            pool.append(UNARY[UNARY_NAMES[(op_pick // 3) % len(UNARY_NAMES)]](a))
    out = B.sum(pool[-1]) + 0.5 * B.mean(pool[len(pool) // 2])
    g.outputs["out"] = out.value
    compiler.verify(g)
    return g


programs = st.tuples(
    st.integers(1, 3), st.integers(1, 3),
    st.lists(st.integers(0, 4), min_size=1, max_size=3),
    st.lists(st.tuples(st.integers(0, 200), st.integers(0, 20), st.integers(0, 20)),
             min_size=1, max_size=7),
    st.integers(0, 2 ** 32 - 1))


def _inputs(graph, seed):
    rng = np.random.default_rng(seed)
    return {v.name: rng.uniform(-1.5, 1.5, size=v.shape) for v in graph.inputs}


def _finite_differences(graph, args, h=1e-6):
    """Central differences of the scalar output w.r.t. every element of every input."""
    out = {}
    for v in graph.inputs:
        d = np.zeros(v.shape)
        for idx in np.ndindex(*v.shape):
            step = h * max(1.0, abs(args[v.name][idx]))
            lo, hi = dict(args), dict(args)
            lo[v.name] = args[v.name].copy()
            hi[v.name] = args[v.name].copy()
            lo[v.name][idx] -= step
            hi[v.name][idx] += step
            f_hi = compiler.interpret(graph, **hi)["out"]
            f_lo = compiler.interpret(graph, **lo)["out"]
            d[idx] = (f_hi - f_lo) / (2 * step)
        out["d" + v.name] = d
    return out


@given(programs)
def test_random_graphs_agree_four_ways(spec):
    r, c, shapes, program, seed = spec
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", compiler.BroadcastWarning)
        g = build(r, c, shapes, program)
    dg = compiler.grad(g)
    compiler.verify(dg)
    args = _inputs(g, seed)
    ref = compiler.interpret(dg, **args)
    for backend in ("numpy", "llvm"):
        got = compiler.compile(dg, backend=backend)(**args)
        assert set(got) == set(ref)
        for k in ref:
            assert np.allclose(got[k], ref[k], rtol=1e-9, atol=1e-12), (backend, k, str(dg))
    fd = _finite_differences(g, args)
    for k, want in fd.items():
        assert np.allclose(ref[k], want, rtol=1e-4, atol=1e-5), (k, ref[k], want, str(g))


@given(programs)
def test_random_graphs_round_trip_through_text(spec):
    r, c, shapes, program, _ = spec
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", compiler.BroadcastWarning)
        g = compiler.grad(build(r, c, shapes, program))
    assert compiler.parse_graph(compiler.print_graph(g)) == g


# ---- the parser under random and mutated text ------------------------------------------------
TOKENS = ["(", ")", "{", "}", "[", "]", ":", "=", ",", " ", "\n", "f64", "i64", "bool", "@",
          "#", "%", "x", "t0", "out", "return", "graph", "add", "sum", "1e309", "-", "'", "\"",
          "axes=(", "value=", "__import__('os')", "lambda: 0", "0x1f", "nan", "inf", "None",
          "dtype='f32'", "shape=(2,)", "{}", "keepdims=True", "..."]

SEED_TEXT = """graph model(x: f64[3], y: i64[3]) {
  t0: f64[3] = tanh(x)  @ model.py:4
  t1: f64[] = sum(t0) {axes=(0,), keepdims=False}  @ model.py:5
  dt1: f64[] = const() {value=1.0, dtype='f64', shape=()}  # seed: ∂out/∂out = 1 [of t1]
  dt0: f64[3] = broadcast_to(dt1) {shape=(3,)}  @ model.py:5  # sum gate [of t1]
  return out=t1, dx=dt0
}"""


def _mutate(text, edits):
    lines = text.split("\n")
    for kind, k, tok in edits:
        if kind == 0 and text:                                  # delete a character span
            p = k % max(1, len(text))
            text = text[:p] + text[p + 1 + k % 5:]
        elif kind == 1:                                         # insert a token
            p = k % (len(text) + 1)
            text = text[:p] + TOKENS[tok % len(TOKENS)] + text[p:]
        elif kind == 2 and lines:                               # duplicate / drop / swap lines
            lines = text.split("\n")
            a, b = k % len(lines), tok % len(lines)
            choice = (k + tok) % 3
            if choice == 0:
                lines.insert(a, lines[b])
            elif choice == 1:
                del lines[a]
            else:
                lines[a], lines[b] = lines[b], lines[a]
            text = "\n".join(lines)
        elif kind == 3:                                         # change a digit
            digits = [p for p, ch in enumerate(text) if ch.isdigit()]
            if digits:
                p = digits[k % len(digits)]
                text = text[:p] + str(tok % 10) + text[p + 1:]
    return text


def _parse_or_parse_error(text, monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("the parser evaluated code")
    monkeypatch.setattr(builtins, "eval", refuse)
    monkeypatch.setattr(builtins, "exec", refuse)
    try:
        g = compiler.parse_graph(text)
    except compiler.ParseError as e:
        assert isinstance(e.line, int) and 1 <= e.line <= len(text.splitlines()) + 1, (e.line, text)
        assert str(e).startswith(f"line {e.line}: ")
        return None
    finally:
        monkeypatch.undo()
    compiler.verify(g)
    assert compiler.parse_graph(compiler.print_graph(g)) == g
    return g


@given(st.text(max_size=200))
def test_parser_on_random_text(text):
    with pytest.MonkeyPatch.context() as mp:
        _parse_or_parse_error(text, mp)


@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 10 ** 6), st.integers(0, 10 ** 6)),
                min_size=1, max_size=4), st.booleans())
def test_parser_on_mutated_text(edits, gradient_text):
    base = SEED_TEXT
    if gradient_text:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", compiler.BroadcastWarning)
            base = compiler.print_graph(compiler.grad(build(2, 3, [0, 1], [(5, 0, 1), (2, 1, 0)])))
    with pytest.MonkeyPatch.context() as mp:
        _parse_or_parse_error(_mutate(base, edits), mp)


def test_parser_never_runs_attribute_code(tmp_path, monkeypatch):
    flag = tmp_path / "ran"
    text = SEED_TEXT.replace("{shape=(3,)}",
                             "{shape=__import__('pathlib').Path(%r).touch()}" % str(flag))
    assert _parse_or_parse_error(text, monkeypatch) is None
    assert not flag.exists()
