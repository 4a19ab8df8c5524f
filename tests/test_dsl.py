"""The tracing front end (frontends/dsl.py): names from the model's source, specs from keywords
or annotations, NumPy semantics of traced arithmetic (checked against NumPy itself), clear
errors for what cannot be traced, and argument checks of compiled functions."""
import inspect
import re

import numpy as np
import pytest

import compiler
from compiler import ShapeError, UnsupportedError
from frontends import dsl
from frontends.dsl import f32, f64, i64


def _names(g):
    return [n.out.name for n in g.nodes]


def _line_of(fn, text):
    """`test_dsl.py:N` of the line of fn's source containing `text`."""
    lines, start = inspect.getsourcelines(fn)
    k = next(i for i, ln in enumerate(lines) if text in ln)
    return f"test_dsl.py:{start + k}"


# ---- names ---------------------------------------------------------------------------------
def mlp(X, W1, W2):
    h = dsl.relu(X @ W1)
    scores = h @ W2
    h = dsl.tanh(scores)            # a rebinding gets its own value: h_1
    return dsl.sum(h)


def test_values_are_named_after_the_source():
    g = dsl.trace(mlp, X=f64[4, 3], W1=f64[3, 5], W2=f64[5, 2])
    names = _names(g)
    assert "h" in names and "scores" in names and "h_1" in names, names
    assert g.outputs["out"].temp          # the unnamed return value
    dg = compiler.grad(g)
    assert {"dh", "dscores", "dW1", "dW2", "dX"} <= set(_names(dg)) | set(dg.outputs)
    src = compiler.compile(dg, passes=[]).source
    assert re.search(r"^\s+h = np\.maximum\(X @ W1, 0\.0\)", src, re.M), src
    assert re.search(r"^\s+scores = h @ W2", src, re.M), src


def test_lambda_traces_with_generated_names(rng):
    g = dsl.trace(lambda x, y: dsl.sum(dsl.exp(x) * y + 1.0), x=f64[3], y=f64[3])
    assert g.name.isidentifier()
    assert all(re.fullmatch(r"t\d+", n) for n in _names(g)), _names(g)
    fn = compiler.compile(compiler.grad(g))
    x, y = rng.standard_normal(3), rng.standard_normal(3)
    out = fn(x=x, y=y)
    assert out["out"] == pytest.approx(np.sum(np.exp(x) * y + 1.0), rel=1e-14)
    np.testing.assert_allclose(out["dx"], np.exp(x) * y, rtol=1e-14)
    np.testing.assert_allclose(out["dy"], np.exp(x), rtol=1e-14)


def test_exec_function_with_string_annotations_traces(rng):
    ns = {"dsl": dsl, "f64": f64}
    exec("from __future__ import annotations\n"
         "def model(x: f64[2, 2], s: f64[()]):\n"
         "    z = dsl.tanh(x) * s\n"
         "    return dsl.mean(z)\n", ns)
    g = dsl.trace(ns["model"])
    assert [(v.name, str(v.type)) for v in g.inputs] == [("x", "f64[2,2]"), ("s", "f64[]")]
    assert all(n.isidentifier() for n in _names(g))
    x = rng.standard_normal((2, 2))
    out = compiler.compile(compiler.grad(g))(x=x, s=2.0)
    np.testing.assert_allclose(out["dx"], 2.0 * (1 - np.tanh(x) ** 2) / 4, rtol=1e-14)
    assert out["ds"] == pytest.approx(np.mean(np.tanh(x)), rel=1e-14)


def annotated(w: f64[3], x: f64[3], y: i64[2], alpha=0.5):
    return dsl.sum(dsl.leaky_relu(w * x, alpha))          # y: an unused input is fine


def test_annotations_are_specs_and_defaults_are_hyperparameters():
    g = dsl.trace(annotated)
    assert [str(v.type) for v in g.inputs] == ["f64[3]", "f64[3]", "i64[2]"]
    assert any(n.attrs.get("alpha") == 0.5 for n in g.nodes)
    g32 = dsl.trace(annotated, w=f32[3], x=f32[3])       # keywords override annotations
    assert [v.dtype for v in g32.inputs] == ["f32", "f32", "i64"]


def test_spec_errors_name_the_parameter():
    with pytest.raises(UnsupportedError, match=r"'x'.*f64\[\.\.\.\]"):
        dsl.trace(lambda x: x)
    with pytest.raises(UnsupportedError, match="no parameter z"):
        dsl.trace(lambda x: x, x=f64[2], z=f64[2])
    with pytest.raises(UnsupportedError, match="'x'"):
        dsl.trace(lambda x: x, x=(2, 3))


# ---- NumPy semantics -----------------------------------------------------------------------
def numpy_like(a, b, c):
    m = (a + b) * 2.0 - c / 3.0      # (3,1) with (4,) broadcasts to (3,4); c is a scalar
    n = m.T[1:, ::2].reshape(-1) ** 2
    return {"m": m, "n": n, "shape_sum": dsl.sum(m, axis=0, keepdims=True) + m.shape[1]}


@pytest.mark.filterwarnings("ignore:.*both operands are expanded")   # meant here
def test_traced_arithmetic_follows_numpy(rng):
    g = dsl.trace(numpy_like, a=f64[3, 1], b=f64[4], c=f64[()])
    assert list(g.outputs) == ["m", "n", "shape_sum"]
    a, b, c = rng.standard_normal((3, 1)), rng.standard_normal(4), rng.standard_normal()
    out = compiler.compile(g)(a=a, b=b, c=c)
    m = (a + b) * 2.0 - c / 3.0
    np.testing.assert_allclose(out["m"], m, rtol=1e-15)
    np.testing.assert_allclose(out["n"], m.T[1:, ::2].reshape(-1) ** 2, rtol=1e-15)
    np.testing.assert_allclose(out["shape_sum"], m.sum(axis=0, keepdims=True) + 4, rtol=1e-15)


def test_python_numbers_take_the_dtype_of_the_model():
    g = dsl.trace(lambda x: dsl.sum(x * 2 + 0.5), x=f32[3])
    assert all(n.out.dtype == "f32" for n in g.nodes)
    out = compiler.compile(g)(x=np.ones(3, np.float32))
    assert isinstance(out["out"], np.float32) and out["out"] == 7.5


# ---- errors --------------------------------------------------------------------------------
def branchy(x):
    if dsl.sum(x) > 0:
        return dsl.sum(x)
    return -dsl.sum(x)


def test_data_dependent_if_is_refused_with_a_hint():
    with pytest.raises(UnsupportedError) as e:
        dsl.trace(branchy, x=f64[3])
    msg = str(e.value)
    assert "dsl.where" in msg and "if" in msg
    assert _line_of(branchy, "if dsl.sum") in msg


def test_numpy_function_on_a_traced_value_is_refused():
    with pytest.raises(UnsupportedError, match=r"np\.exp.*dsl") as e:
        dsl.trace(lambda x: np.exp(x), x=f64[3])
    assert "traced value" in str(e.value)
    with pytest.raises(UnsupportedError, match=r"np\.(sum|dot).*dsl"):
        dsl.trace(lambda x: np.sum(x), x=f64[3])
    # a captured float array is a constant now (issue 18.4, tests/test_constants.py); an array
    # no gradc dtype holds is still refused, naming its dtype
    with pytest.raises(UnsupportedError, match="NumPy array of dtype complex128.*constant"):
        dsl.trace(lambda x: x * np.ones(3, dtype=complex), x=f64[3])


def bad_matmul(X, W):
    scores = X @ W
    return dsl.sum(scores)


def test_matmul_shape_mismatch_names_both_shapes_and_the_line():
    with pytest.raises(ShapeError) as e:
        dsl.trace(bad_matmul, X=f64[4, 3], W=f64[5, 2])
    msg = str(e.value)
    assert "(4, 3)" in msg and "(5, 2)" in msg, msg
    assert _line_of(bad_matmul, "X @ W") in msg, msg


def test_broadcast_mismatch_names_both_shapes_and_the_line():
    def bad_add(a, b):
        c = a + b
        return dsl.sum(c)
    with pytest.raises(ShapeError) as e:
        dsl.trace(bad_add, a=f64[3, 2], b=f64[3])
    msg = str(e.value)
    assert "(3, 2)" in msg and "(3,)" in msg and _line_of(bad_add, "c = a + b") in msg, msg


def test_integer_labels_get_no_gradient():
    g = dsl.trace(lambda s, y: dsl.softmax_cross_entropy(s, y), s=f64[2, 3], y=i64[2])
    dg = compiler.grad(g)
    assert list(dg.outputs) == ["out", "ds"]
    with pytest.raises(UnsupportedError, match=r"'y'.*i64"):
        compiler.grad(g, wrt=["y"])


# ---- arguments of a compiled function ------------------------------------------------------
@pytest.fixture(scope="module")
def compiled():
    g = dsl.trace(lambda x, y: dsl.softmax_cross_entropy(x, y), x=f32[2, 3], y=i64[2])
    return compiler.compile(compiler.grad(g))


def test_good_arguments(compiled):
    out = compiled(x=np.zeros((2, 3), np.float32), y=np.array([0, 2]))
    assert out["out"] == pytest.approx(np.log(3.0), rel=1e-6)


@pytest.mark.parametrize("kwargs,exc,words", [
    ({"x": np.zeros((2, 3), np.float32)}, TypeError, ["'y'", "missing"]),
    ({"x": np.zeros((2, 3), np.float32), "y": np.array([0, 1]), "z": 1}, TypeError,
     ["'z'", "unexpected"]),
    ({"x": np.zeros((3, 2), np.float32), "y": np.array([0, 1])}, ValueError,
     ["'x'", "(3, 2)", "f32[2,3]"]),
    ({"x": np.zeros((2, 3), np.float64), "y": np.array([0, 1])}, TypeError, ["'x'", "float64"]),
    ({"x": np.zeros((2, 3), np.float32), "y": np.array([0.0, 1.0])}, TypeError, ["'y'", "i64"]),
    ({"x": np.zeros((2, 3), np.float32), "y": np.array([0, 1, 2])}, ValueError, ["'y'", "(3,)"]),
    ({"x": "abc", "y": np.array([0, 1])}, TypeError, ["'x'"]),
])
def test_wrong_arguments_name_the_argument(compiled, kwargs, exc, words):
    with pytest.raises(exc) as e:
        compiled(**kwargs)
    for w in words:
        assert w in str(e.value), str(e.value)


# ---- names that collide with the emitted module's own names --------------------------------
def helper_names(sigmoid, np_):
    sigmoid = dsl.sigmoid(sigmoid)          # a local and an input named like the helper
    softmax = dsl.softmax(sigmoid * np_, axis=0)
    np = dsl.exp(softmax)                   # noqa: F841  (a local named np)
    return dsl.sum(np * np_)


def test_values_named_like_helpers_compile(rng):
    g = dsl.trace(helper_names, sigmoid=f64[3], np_=f64[3])
    dg = compiler.grad(g)
    ins = {"sigmoid": rng.standard_normal(3), "np_": rng.standard_normal(3)}
    want = compiler.interpret(dg, ins)
    s = 1 / (1 + np.exp(-ins["sigmoid"]))
    z = s * ins["np_"]
    sm = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    assert want["out"] == pytest.approx(np.sum(np.exp(sm) * ins["np_"]), rel=1e-14)
    for passes in (None, []):
        got = compiler.compile(dg, passes=passes)(**ins)
        for k in want:
            np.testing.assert_allclose(got[k], want[k], rtol=1e-13, err_msg=k)


def test_model_named_like_a_helper_compiles():
    fn = compiler.compile(dsl.trace(dsl.sigmoid, x=f64[3]))
    np.testing.assert_allclose(fn(x=np.array([0.0, 1.0, -1.0]))["out"],
                               1 / (1 + np.exp(-np.array([0.0, 1.0, -1.0]))), rtol=1e-15)


def test_rebinding_an_input_name():
    def m(x):
        x = x * 2.0
        x = x + 1.0
        return dsl.sum(x)
    g = dsl.trace(m, x=f64[2])
    assert [v.name for v in g.inputs] == ["x"]
    assert {"x_1", "x_2"} <= set(_names(g)), _names(g)
    out = compiler.compile(compiler.grad(g))(x=np.array([1.0, 2.0]))
    assert out["out"] == 8.0 and list(out["dx"]) == [2.0, 2.0]


def test_equality_is_elementwise():
    """`x == 1.0` builds an equal node (NumPy semantics), not Python's identity test."""
    g = dsl.trace(lambda x: dsl.sum(dsl.where(x == 1.0, x, 2.0 * x))
                  + dsl.sum(dsl.where(x != 2.0, 0.0 * x, x)), x=f64[3])
    assert compiler.interpret(g, x=np.array([1.0, 2.0, 3.0]))["out"] == 1 + 4 + 6 + 2


def test_iteration_and_fancy_indexing_are_refused():
    with pytest.raises(UnsupportedError, match="iterating"):
        dsl.trace(lambda x: dsl.sum(sum(v for v in x)), x=f64[3])
    with pytest.raises(UnsupportedError, match="index"):
        dsl.trace(lambda x: dsl.sum(x[[0, 1]]), x=f64[3])
    # a traced i64 index is a gather now (tests/test_array_ops.py); a bool mask is refused
    assert compiler.interpret(dsl.trace(lambda x, i: x[i], x=f64[3], i=i64[()]),
                              x=np.array([1.0, 2.0, 3.0]), i=np.array(2))["out"] == 3.0
    with pytest.raises(UnsupportedError, match="bool mask.*dsl.where"):
        dsl.trace(lambda x, m: x[m], x=f64[3], m=compiler.ir.TensorType("bool", (3,)))
