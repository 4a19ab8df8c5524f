"""Custom gate rules, checked (issue 18.6): `@dsl.custom_gate` defines an op from DSL code,
`@op.gate` gives it a gate rule of the user's.  Oracles: hand-derived gradients (the
straight-through estimator passes G through), central differences of the forward in NumPy,
the reference interpreter, the other backend, and the checks' own verdicts on rules known to
agree or to differ."""
import threading

import numpy as np
import pytest

import compiler
from compiler import dot
from compiler.custom import CustomGateError
from compiler.ir import ShapeError, UnsupportedError
from frontends import dsl
from frontends.dsl import f64
from graphs import set_gate

BACKENDS = ("numpy", "llvm")


@dsl.custom_gate
def ste_clip(x):                      # forward, in the DSL
    return dsl.minimum(dsl.maximum(x, -1.0), 1.0)


@ste_clip.gate
def _(g, out, x):                     # straight-through
    return g


@dsl.custom_gate
def soft(x):                          # softplus written out; its rule is the true derivative
    return dsl.log(1.0 + dsl.exp(x))


@soft.gate
def _(g, out, x):
    return g * dsl.sigmoid(x)


@dsl.custom_gate
def scaled(a, b):                     # two inputs; no gradient for the scale b
    return a * dsl.sum(b)


@scaled.gate
def _(g, out, a, b):
    return g * dsl.sum(b), None


def clip_model(w, x):
    y = ste_clip(w * x)
    return dsl.sum(y * x)


W = np.array([0.3, 2.0, -1.5, 0.1])
X = np.array([1.0, 1.0, 1.0, 2.0])


def test_traces_to_one_named_node_in_ir_dot_and_code():
    g = dsl.trace(clip_model, w=f64[4], x=f64[4])
    assert [n.op for n in g.nodes].count("ste_clip") == 1
    assert "y: f64[4] = ste_clip(t0)" in compiler.print_graph(g)
    assert "= ste_clip\\n" in dot.to_dot(g)
    dg = compiler.grad(g)
    np_src = compiler.compile(dg, backend="numpy").source
    assert "ste_clip: forward of the custom gate" in np_src
    assert "np.minimum(np.maximum(" in np_src
    assert "ste_clip: forward of the custom gate" in compiler.compile(dg, backend="llvm").source


def test_text_form_round_trips_and_an_undefined_gate_is_a_clear_parse_error():
    dg = compiler.grad(dsl.trace(clip_model, w=f64[4], x=f64[4]))
    assert compiler.parse_graph(compiler.print_graph(dg)) == dg
    text = compiler.print_graph(dg).replace("ste_clip(", "gate_nobody_defined(")
    with pytest.raises(compiler.ParseError, match="neither a primitive nor a custom gate"):
        compiler.parse_graph(text)


def test_straight_through_gradient_on_both_backends():
    dg = compiler.grad(dsl.trace(clip_model, w=f64[4], x=f64[4]))
    y = np.clip(W * X, -1, 1)
    want = {"out": np.sum(y * X), "dw": X * X, "dx": y + X * W}   # d clip := 1 (by hand)
    for backend in BACKENDS:
        got = compiler.compile(dg, backend=backend)(w=W, x=X)
        for k in want:
            np.testing.assert_allclose(got[k], want[k], rtol=1e-13, err_msg=f"{k} {backend}")
    ref = compiler.interpret(dg, {"w": W, "x": X})
    np.testing.assert_allclose(ref["dw"], want["dw"], rtol=1e-13)


def test_exact_rule_against_finite_differences_and_sympy():
    g = dsl.trace(lambda w, x: dsl.sum(soft(w * x) * x), w=f64[3], x=f64[3])
    assert compiler.check_finite_differences(g).ok
    rep = compiler.check_against_sympy(g)
    assert rep.ok and len(rep.custom_gates) == 1
    c = rep.custom_gates[0]
    assert c.name == "soft" and not c.differs and c.points == 3
    assert "equals the derivative of its forward" in str(rep)
    w, x = np.array([0.5, -1.0, 2.0]), np.array([1.5, 0.3, -0.7])
    want = (np.log1p(np.exp(w * x)) + x * w / (1 + np.exp(-w * x)))   # d/dx by hand
    for backend in BACKENDS:
        got = compiler.compile(compiler.grad(g), backend=backend)(w=w, x=x)
        np.testing.assert_allclose(got["dx"], want, rtol=1e-12)


def test_check_flags_a_rule_that_differs_on_purpose_with_the_first_point():
    g = dsl.trace(clip_model, w=f64[4], x=f64[4])
    rep = compiler.check_against_sympy(g)
    assert rep.ok, str(rep)             # flagged, not failed: the rule is taken as given
    (c,) = rep.custom_gates
    assert c.differs and c.name == "ste_clip"
    assert "test_custom_gate.py" in c.defined_at and "test_custom_gate.py" in c.rule_at
    text = str(rep)
    assert "FLAGGED custom gate ste_clip" in text and "first at x = [" in text
    assert "by the rule, 0 by the derivative of the forward" in text
    fd = compiler.check_finite_differences(g)
    assert fd.ok and fd.custom_gates[0].differs and "expected, not failed" in str(fd)


def test_the_model_check_still_catches_a_wrong_primitive_rule_beside_a_custom_gate(monkeypatch):
    g = dsl.trace(clip_model, w=f64[4], x=f64[4])
    from compiler.ops import OPS
    (ta, fa), (tb, fb) = OPS["mul"].gate
    set_gate(monkeypatch, "mul", ((ta, lambda g_, out, a, b: fa(g_, out, a, b) * 2.0), (tb, fb)))
    assert not compiler.check_against_sympy(g, localize=False).ok


def test_a_wrong_rule_is_flagged_at_the_right_element():
    @dsl.custom_gate
    def cube(x):
        return x * x * x

    @cube.gate
    def _(g, out, x):
        return g * 3.0 * x          # should be 3x²
    g = dsl.trace(lambda x: dsl.sum(cube(x)), x=f64[2])
    (c,) = compiler.check_against_sympy(g).custom_gates
    assert c.differs and "dx[0]" in c.first


def test_two_inputs_and_no_gradient_for_one():
    g = dsl.trace(lambda a, b: dsl.sum(scaled(a, b) * a), a=f64[3], b=f64[2])
    dg = compiler.grad(g)
    a, b = np.array([1.0, -2.0, 0.5]), np.array([0.25, 2.0])
    for backend in BACKENDS:
        got = compiler.compile(dg, backend=backend)(a=a, b=b)
        np.testing.assert_allclose(got["da"], 2 * a * b.sum(), rtol=1e-13)
        np.testing.assert_allclose(got["db"], np.zeros(2))        # the rule says none
    (c,) = compiler.check_against_sympy(g).custom_gates
    assert c.differs and "db[0]" in c.first                         # true d/db ≠ 0


def test_a_custom_gate_inside_another_ones_forward_compiles():
    @dsl.custom_gate
    def outer(x):
        return soft(x) * 2.0

    @outer.gate
    def _(g, out, x):
        return g * 2.0 * dsl.sigmoid(x)
    g = dsl.trace(lambda x: dsl.sum(outer(x)), x=f64[3])
    x = np.array([0.1, -3.0, 2.0])
    for backend in BACKENDS:
        got = compiler.compile(compiler.grad(g), backend=backend)(x=x)
        assert got["out"] == pytest.approx(np.sum(2 * np.log1p(np.exp(x))), rel=1e-13)
        np.testing.assert_allclose(got["dx"], 2 / (1 + np.exp(-x)), rtol=1e-13)
    assert not compiler.check_against_sympy(g).custom_gates[0].differs


def test_second_order_through_a_custom_rule():
    g = dsl.trace(lambda x: dsl.sum(soft(x)), x=f64[3])
    h = compiler.hessian(g, "x")
    x = np.array([0.2, -1.0, 1.5])
    s = 1 / (1 + np.exp(-x))
    out = compiler.compile(h)(x=x)
    hess = next(v for k, v in out.items() if np.shape(v) == (3, 3))
    np.testing.assert_allclose(hess, np.diag(s * (1 - s)), rtol=1e-12, atol=1e-15)


# ---- errors name the custom op and the user's line ------------------------------------------
def _bad_rule(returns):
    @dsl.custom_gate
    def twice(x):
        return x * 2.0

    @twice.gate
    def _(g, out, x):
        return returns(g, x)
    return twice


@pytest.mark.parametrize("returns,match", [
    (lambda g, x: (g, g), r"returned 2 gradient\(s\) for 1 input\(s\) \(x\)"),
    (lambda g, x: dsl.sum(g), r"returned dx of type f64\[\], but x is f64\[3\]"),
    (lambda g, x: np.ones(3), r"returned a ndarray as dx"),
])
def test_a_bad_rule_names_the_op_and_the_rule_line(returns, match):
    twice = _bad_rule(returns)
    g = dsl.trace(lambda x: dsl.sum(twice(x)), x=f64[3])
    with pytest.raises(CustomGateError, match=match) as e:
        compiler.grad(g)
    assert f"custom gate {twice.name}" in str(e.value)
    assert "gate rule at test_custom_gate.py:" in str(e.value)
    assert "for the node at test_custom_gate.py:" in str(e.value)


def test_definition_errors():
    @dsl.custom_gate
    def norule(x):
        return x * 2.0
    g = dsl.trace(lambda x: dsl.sum(norule(x)), x=f64[2])
    with pytest.raises(CustomGateError, match="norule .* has no gate rule.*@norule.gate"):
        compiler.grad(g)
    with pytest.raises(CustomGateError, match=r"must take \(g, out, x\)"):
        norule.gate(lambda g, x: g)
    with pytest.raises(UnsupportedError, match="'relu' is a primitive op"):
        dsl.custom_gate(lambda x: x, name="relu")
    with pytest.raises(UnsupportedError, match="called on traced values"):
        ste_clip(np.ones(3))
    with pytest.raises(CustomGateError, match="already has a gate rule"):
        ste_clip.gate(lambda g, out, x: g)
    with pytest.raises(ShapeError, match="custom gates take float inputs"):
        dsl.trace(lambda n: ste_clip(n), n=dsl.i64[3])


def test_a_forward_reading_a_value_traced_outside_is_refused():
    def model(x, w):
        @dsl.custom_gate
        def leaky(v):
            return v * w            # w belongs to the outer trace
        return dsl.sum(leaky(x))
    with pytest.raises(CustomGateError, match="traced outside the gate must be passed in"):
        dsl.trace(model, x=f64[2], w=f64[2])


def test_names_are_unique_per_process():
    a = dsl.custom_gate(lambda x: x * 2.0, name="twice_again")
    b = dsl.custom_gate(lambda x: x * 3.0, name="twice_again")
    assert a.name == "twice_again" and b.name == "twice_again_1"


def test_tracing_and_compiling_from_threads():
    errors, results = [], []

    def work(k):
        try:
            x = np.linspace(-2, 2, 5) * (k + 1)
            g = dsl.trace(lambda x: dsl.sum(ste_clip(x) * soft(x)), x=f64[5])
            results.append((x, compiler.compile(compiler.grad(g), backend="numpy")(x=x)["dx"]))
        except Exception as e:     # reported below
            errors.append(e)
    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for x, dx in results:
        c, s = np.clip(x, -1, 1), 1 / (1 + np.exp(-x))
        np.testing.assert_allclose(dx, np.log1p(np.exp(x)) + c * s, rtol=1e-12)


def test_export_inlines_the_gate():
    from compiler.export import export_module
    dg = compiler.grad(dsl.trace(clip_model, w=f64[4], x=f64[4]))
    src = export_module(dg)
    assert "ste_clip: forward of the custom gate" in src
    env: dict = {}
    exec(compile(src, "<exported>", "exec"), env)
    got = env["clip_model"](w=W, x=X)
    np.testing.assert_allclose(got["dw"], X * X, rtol=1e-13)


def test_gradc_check_flags_the_gate_and_passes(tmp_path, capsys):
    from frontends import cli
    (tmp_path / "stemodel.py").write_text(
        "from frontends import dsl\n"
        "from frontends.dsl import f64\n\n\n"
        "@dsl.custom_gate(name='ste')\n"
        "def ste(x):\n"
        "    return dsl.minimum(dsl.maximum(x, -1.0), 1.0)\n\n\n"
        "@ste.gate\n"
        "def _(g, out, x):\n"
        "    return g\n\n\n"
        "def model(w: f64[4], x: f64[4]):\n"
        "    return dsl.sum(ste(w * x) * x)\n")
    rc = cli.main(["check", f"{tmp_path / 'stemodel.py'}:model"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "FLAGGED custom gate ste" in out and "stemodel.py:5; gate rule stemodel.py:10" in out


def test_a_model_too_large_for_sympy_flags_the_gate_and_passes():
    g = dsl.trace(clip_model, w=f64[4], x=f64[4])
    rep = compiler.check_against_sympy(g, max_symbols=4, time_budget=5)
    assert rep.ok, str(rep)
    assert rep.custom_gates[0].differs and "expected, not failed" in str(rep)
