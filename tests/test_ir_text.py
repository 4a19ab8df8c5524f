"""The IR's text form: parse_graph(print_graph(g)) == g for every test graph (forward, gradient,
and the compiled graph), random graphs (hypothesis), malformed text raises ParseError naming
the line, and parsing never evaluates code."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import compiler
from compiler import ParseError, parse_graph, print_graph
from compiler.builder import Builder
from compiler.ir import Graph, TensorType
from graphs import EXAMPLES, all_cases, op_graph


def _round_trip(g):
    text = print_graph(g)
    back = parse_graph(text)
    assert back == g, f"round trip changed the graph:\n{text}\n---\n{print_graph(back)}"
    assert print_graph(back) == text
    return back


@pytest.mark.parametrize("dtype", ["f64", "f32"])
@pytest.mark.parametrize("name", list(EXAMPLES))
def test_round_trip_examples(name, dtype):
    g = EXAMPLES[name].build(dtype)
    _round_trip(g)
    dg = compiler.grad(g)
    back = _round_trip(dg)
    assert [n.rule for n in back.nodes] == [n.rule for n in dg.nodes]   # provenance survives
    assert [n.loc for n in back.nodes] == [n.loc for n in dg.nodes]
    _round_trip(parse_graph(compiler.compile(dg).ir))


def test_round_trip_keeps_meaning(rng):
    ex = EXAMPLES["two_layer"]
    dg = compiler.grad(ex.build("f64"))
    ins = ex.inputs(rng, "f64")
    want = compiler.interpret(dg, ins)
    got = compiler.interpret(parse_graph(str(dg)), ins)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k])


@pytest.mark.parametrize("op,case", all_cases(), ids=[f"{o}-{c.label}" for o, c in all_cases()])
def test_round_trip_every_op(op, case):
    g = op_graph(op, case)
    _round_trip(g)
    wrt = [v.name for v in g.inputs if v.type.is_float and v.name != "c"]
    if wrt and "loss" in g.outputs:
        _round_trip(compiler.grad(g, wrt=wrt, of="loss"))


# ---- random graphs ------------------------------------------------------------------------
_UNARY = ["neg", "exp", "tanh", "sigmoid", "relu", "abs", "sqrt"]
_BINARY = ["add", "sub", "mul", "div", "maximum"]
_FLOATS = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=64),
                    st.sampled_from([0.0, -0.0, 1e-300, 5e-324, 1.7976931348623157e308, 0.1]))


@st.composite
def random_graphs(draw):
    dtype = draw(st.sampled_from(["f32", "f64"]))
    shape = tuple(draw(st.lists(st.integers(1, 3), max_size=2)))
    g = Graph(draw(st.sampled_from(["g", "model_1", "_x"])))
    b = Builder(g)
    vals = [b.add_input(n, TensorType(dtype, shape)) for n in ("x", "y")]
    for k in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["unary", "binary", "const"]))
        b.loc = draw(st.one_of(st.none(), st.sampled_from(["m.py:3", "a b.py:10", "<stdin>:1"])))
        b.rule = draw(st.one_of(st.none(), st.sampled_from(
            ["mul gate: dA = G·B", "seed: ∂out/∂out = 1", "fan-out: summed [twice]"])))
        b.of = "x" if b.rule else None
        name = draw(st.one_of(st.none(), st.sampled_from(["h", "dh", "scores", "t"])))
        if kind == "const":
            v = b.emit("const", [], name=name, value=draw(_FLOATS), dtype=dtype, shape=shape)
        elif kind == "unary":
            v = b.emit(draw(st.sampled_from(_UNARY)), [draw(st.sampled_from(vals))], name=name)
        else:
            v = b.emit(draw(st.sampled_from(_BINARY)),
                       [draw(st.sampled_from(vals)), draw(st.sampled_from(vals))], name=name)
        vals.append(v)
    for k in range(draw(st.integers(1, 3))):
        g.outputs[f"out{k}"] = draw(st.sampled_from(vals)).value
    return g


@settings(max_examples=60, deadline=None)
@given(random_graphs())
def test_round_trip_random_graphs(g):
    _round_trip(g)


# ---- malformed text -----------------------------------------------------------------------
GOOD = """graph f(x: f64[], y: f64[2]) {
  q: f64[2] = add(x, y)  @ m.py:3
  f: f64[] = sum(q) {axes=(0,), keepdims=False}  @ m.py:4
  return out=f
}"""


def _mutate(line_no: int, new: str | None) -> str:
    lines = GOOD.splitlines()
    if new is None:
        del lines[line_no - 1]
    else:
        lines[line_no - 1] = new
    return "\n".join(lines)


def test_good_text_parses():
    g = parse_graph(GOOD)
    assert [n.out.name for n in g.nodes] == ["q", "f"]
    assert float(compiler.interpret(g, x=1.0, y=np.array([2.0, 3.0]))["out"]) == 7.0


@pytest.mark.parametrize("text,line,words", [
    (_mutate(1, "graf f(x: f64[]) {"), 1, "graph"),
    (_mutate(1, "graph f(x: f65[], y: f64[2]) {"), 1, "x: f65"),
    (_mutate(1, "graph f(x: f64[], x: f64[2]) {"), 1, "twice"),
    (_mutate(2, "  q: f64[2] = add(x, z)  @ m.py:3"), 2, "'z'"),
    (_mutate(2, "  q f64[2] = add(x, y)"), 2, "cannot read"),
    (_mutate(3, "  q: f64[] = sum(q) {axes=(0,), keepdims=False}"), 3, "twice"),
    (_mutate(3, "  f: f64[] = sum(q) {axes=(0,), keepdims=False"), 3, ""),
    (_mutate(3, "  f: f64[] = sum(q) {axes=(0,) keepdims=False}"), 3, "attributes"),
    (_mutate(4, "  return out=g"), 4, "'g'"),
    (_mutate(4, "  return out=f, out=q"), 4, "twice"),
    (_mutate(5, None), 4, "'}'"),
    (GOOD + "\n  extra", 6, "after"),
    ("", 1, "empty"),
    (GOOD.replace("graph f(", "graph lambda("), 1, "keyword"),
])
def test_malformed_text_names_the_line(text, line, words):
    with pytest.raises(ParseError) as e:
        parse_graph(text)
    assert e.value.line == line, str(e.value)
    assert str(e.value).startswith(f"line {line}:")
    assert words in str(e.value)


@pytest.mark.parametrize("new", [
    "  q: f64[3] = add(x, y)  @ m.py:3",            # wrong declared type
    "  q: f64[2] = frobnicate(x, y)  @ m.py:3",     # unknown op
    "  q: f64[2] = add(x)  @ m.py:3",               # wrong arity
    "  q: i64[2] = add(x, y)  @ m.py:3",            # wrong dtype
])
def test_ill_typed_text_raises_parse_error(new):
    with pytest.raises(ParseError) as e:
        parse_graph(_mutate(2, new))
    assert isinstance(e.value.line, int) and str(e.value).startswith("line ")


@pytest.mark.parametrize("attrs", [
    "{axes=__import__('os').system('touch {marker}'), keepdims=False}",
    "{axes=(0,), keepdims=open('{marker}', 'w')}",
    "{axes=[x for x in (0,)], keepdims=False}",
    "{axes=(0,), keepdims=(lambda: False)()}",
    "{axes=().__class__, keepdims=False}",
    "{axes=(0,), keepdims=False, **{'a': 1}}",
    "{axes=(0,), keepdims=1+1}",
])
def test_parsing_never_evaluates_code(attrs, tmp_path):
    marker = tmp_path / "evaluated"
    line = "  f: f64[] = sum(q) " + attrs.replace("{marker}", str(marker)) + "  @ m.py:4"
    with pytest.raises(ParseError) as e:
        parse_graph(_mutate(3, line))
    assert e.value.line == 3
    assert not marker.exists()
