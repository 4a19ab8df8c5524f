"""Array constants (issue 18.4, compiler/constants.py): a NumPy array captured from the model's
scope is one const_array node, printed compactly with its digest and kept once in the text
form's constants table; NumPy emits it as a module-level read-only array, LLVM as a global.
The oracle: the same model with the array passed as an input."""
from __future__ import annotations

import numpy as np
import pytest

import compiler
from compiler.constants import ConstData
from compiler.text import ParseError, parse_graph, print_graph
from frontends import dsl
from frontends.dsl import f32, f64, i64

W = np.array([[0.5, -1.25, 2.0], [3.0, 0.125, -0.75]])     # a global: captured by name
MASK = np.array([True, False, True])


def make_model():
    b = np.array([0.1, -0.2])                               # a closure variable

    def with_const(x):
        h = dsl.tanh(W @ x + b)
        return dsl.sum(h * h) + dsl.sum(dsl.where(MASK, x, 0.0) * W[0])
    return with_const


def with_input(x, W, b, MASK):                              # the oracle: arrays as inputs
    h = dsl.tanh(W @ x + b)
    return dsl.sum(h * h) + dsl.sum(dsl.where(MASK, x, 0.0) * W[0])


def test_a_captured_array_is_one_named_const_node_printed_compactly():
    g = dsl.trace(make_model(), x=f64[3])
    consts = [n for n in g.nodes if n.op == "const_array"]
    assert [n.out.name for n in consts][:3] == ["W", "b", "MASK"]
    assert sum(n.attrs["data"] == ConstData(W) for n in consts) == 1     # W stored once
    text = print_graph(g)
    digest = ConstData(W).short
    assert f"W: f64[2,3] = const_array() {{data='{digest}', dtype='f64'}}" in text
    body, table = text.split("\n}\n")
    assert "0.5" not in body and table.startswith("constants {")
    assert table.count(digest) == 1


@pytest.mark.parametrize("backend", ["numpy", "llvm"])
def test_constants_equal_the_model_with_the_arrays_as_inputs(backend, rng):
    x = rng.standard_normal(3)
    b = np.array([0.1, -0.2])
    got = compiler.compile(compiler.grad(dsl.trace(make_model(), x=f64[3])), backend=backend)(x=x)
    ref_graph = compiler.grad(dsl.trace(with_input, x=f64[3], W=f64[2, 3], b=f64[2],
                                        MASK=compiler.TensorType("bool", (3,))), wrt=["x"])
    ref = compiler.compile(ref_graph, backend=backend)(x=x, W=W, b=b, MASK=MASK)
    np.testing.assert_allclose(got["out"], ref["out"], rtol=1e-15)
    np.testing.assert_allclose(got["dx"], ref["dx"], rtol=1e-14)
    interp = compiler.interpret(compiler.grad(dsl.trace(make_model(), x=f64[3])), x=x)
    np.testing.assert_allclose(interp["dx"], ref["dx"], rtol=1e-14)


def test_text_form_round_trips_the_data_bit_for_bit():
    tricky = np.array([np.pi, -0.0, np.inf, np.nan, 5e-324, 1e308])
    ints = np.array([1, -2**62, 7, 0, 3, -1])

    def model(x):
        counts = dsl.cast(x > 0, "i64") * ints
        return dsl.sum(dsl.where(x > 0, tricky, x)) + dsl.sum(dsl.cast(counts, "f64")) * 0.0
    g = compiler.grad(dsl.trace(model, x=f64[6]))
    back = parse_graph(print_graph(g))
    assert back == g and print_graph(back) == print_graph(g)
    stored = {n.attrs["data"].array.tobytes() for n in back.nodes if n.op == "const_array"}
    assert stored == {tricky.tobytes(), ints.tobytes()}


def test_a_damaged_constants_table_is_a_parse_error():
    text = print_graph(dsl.trace(make_model(), x=f64[3]))
    head, table = text.split("\n}\n")
    first = table.split("\n")[1]
    data = first.split("'")[1]
    flipped = ("B" if data[0] != "B" else "C") + data[1:]
    with pytest.raises(ParseError, match="its data has digest"):
        parse_graph(text.replace(data, flipped))
    with pytest.raises(ParseError, match="names no constant"):
        parse_graph(head + "\n}")                           # the table left out
    with pytest.raises(ParseError, match="defined twice"):
        parse_graph(text.replace(first, first + "\n" + first))
    with pytest.raises(ParseError, match="cannot read constant"):
        parse_graph(text.replace(first, first.replace("float64", "complex128")))
    with pytest.raises(ParseError, match="must follow"):
        parse_graph("constants {\n}\n" + text)


def test_numpy_emits_a_read_only_module_level_array(rng):
    fn = compiler.compile(dsl.trace(make_model(), x=f64[3]))
    name = f"_const_{ConstData(W).short[:8]}"
    assert f"{name} = np.array([0.5, -1.25, 2.0, 3.0, 0.125, -0.75], dtype=np.float64)" \
        ".reshape((2, 3))" in fn.source
    assert f"{name}.setflags(write=False)" in fn.source
    assert f"W = {name}" in fn.source
    assert "AAAA" not in fn.source            # the header shows the IR, not the base64 data
    ns: dict = {}
    exec(compile(fn.source, "<test>", "exec"), ns)
    assert not ns[name].flags.writeable
    out = fn(x=np.ones(3))
    out2 = fn(x=np.ones(3))
    assert out["out"] == out2["out"]


def test_llvm_holds_the_constant_as_a_global():
    fn = compiler.compile(dsl.trace(make_model(), x=f64[3]), backend="llvm")
    assert f"@\"const.{ConstData(W).short}.f64\" = private" in fn.source \
        or f"@const.{ConstData(W).short}.f64 = private" in fn.source


def test_f32_models_and_dtypes():
    Wf = W.astype(np.float32)

    def model(x):
        return dsl.sum(dsl.sigmoid(Wf @ x))
    g = dsl.trace(model, x=f32[3])
    x = np.array([0.3, -0.1, 0.7], dtype=np.float32)
    for backend in ("numpy", "llvm"):
        out = compiler.compile(compiler.grad(g), backend=backend)(x=x)
        ref = 1 / (1 + np.exp(-(W @ x.astype(np.float64))))
        np.testing.assert_allclose(out["dx"], W.T @ (ref * (1 - ref)), rtol=1e-5)
        assert out["dx"].dtype == np.float32
    assert compiler.check_finite_differences(g).ok      # widened to f64 through the text form
    with pytest.raises(compiler.ShapeError, match="dtypes f64 and f32 differ"):
        dsl.trace(lambda x: dsl.sum(W @ x), x=f32[3])


def test_integer_and_bool_constants_and_python_scalars(rng):
    idx = np.array([2, 0, 1], dtype=np.int32)             # widened to i64

    def model(x):
        return dsl.sum(x * dsl.cast(dsl.cast(x > 100, "i64") + idx, "f64")) + 2.5 * dsl.sum(x) + dsl.sum(x * MASK)
    g = dsl.trace(model, x=f64[3])
    assert {n.attrs["dtype"] for n in g.nodes if n.op == "const_array"} == {"i64", "bool"}
    assert any(n.op == "const" and n.attrs["value"] == 2.5 for n in g.nodes)   # as before
    out = compiler.compile(compiler.grad(g))(x=np.ones(3))
    np.testing.assert_array_equal(out["dx"], [2 + 2.5 + 1, 0 + 2.5, 1 + 2.5 + 1])
    with pytest.raises(compiler.UnsupportedError, match="float16.*constant"):
        dsl.trace(lambda x: dsl.sum(x * np.ones(3, dtype=np.float16)), x=f64[3])
    big = np.array([2**63], dtype=np.uint64)
    with pytest.raises(compiler.UnsupportedError, match="outside int64"):
        dsl.trace(lambda x: dsl.sum(x * big), x=f64[1])


def test_sympy_check_sees_the_constants():
    assert compiler.check_against_sympy(dsl.trace(make_model(), x=f64[3])).ok


@pytest.mark.parametrize("dtype", ["f32", "f64"])
def test_a_large_constant_is_emitted_as_its_bytes(dtype, rng):
    big = rng.standard_normal((40, 40)).astype(np.float32 if dtype == "f32" else np.float64)

    def model(x):
        return dsl.sum(dsl.tanh(big @ x))
    g = compiler.grad(dsl.trace(model, x=compiler.TensorType(dtype, (40,))))
    fn = compiler.compile(g)
    assert "bytes.fromhex(" in fn.source and "np.array([" not in fn.source
    x = rng.standard_normal(40).astype(big.dtype)
    ref = compiler.compile(compiler.grad(dsl.trace(lambda x, E: dsl.sum(dsl.tanh(E @ x)),
                                                   x=compiler.TensorType(dtype, (40,)),
                                                   E=compiler.TensorType(dtype, (40, 40))),
                                         wrt=["x"]))(x=x, E=big)
    np.testing.assert_array_equal(fn(x=x)["dx"], ref["dx"])


def test_the_constant_is_the_array_as_traced(rng):
    A = np.array([1.0, 2.0, 3.0])
    g = dsl.trace(lambda x: dsl.sum(A * x), x=f64[3])
    fn = compiler.compile(g, backend="llvm")
    A[:] = 100.0                       # later changes to the array do not reach the graph
    assert fn(x=np.ones(3))["out"] == 6.0 == compiler.interpret(g, x=np.ones(3))["out"]
