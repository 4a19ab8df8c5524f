"""The lecture's two worked examples through the public API of DESIGN.md, against the numbers
derived by hand in the lecture:

    f = (x + y)·z at (−2, 5, −4): q = 3, f = −12, ∂f/∂z = q = 3, ∂f/∂q = z = −4,
    ∂f/∂x = ∂f/∂y = ∂f/∂q · 1 = −4.

    f = σ(w0·x0 + w1·x1 + w2) at w = (2, −3, −3), x = (−1, −2): the dot product is 1,
    f = σ(1) = 0.7311, ∂f/∂(dot) = σ(1)(1 − σ(1)) = 0.1966, so ∂f/∂w = 0.1966·(x0, x1, 1)
    and ∂f/∂x = 0.1966·(w0, w1).
"""
import math
import re

import numpy as np
import pytest

import compiler
from frontends import dsl
from frontends.dsl import f64


def lecture_f(x, y, z):
    q = x + y
    f = q * z
    return f


def neuron(w, x):                       # the lecture's sigmoid neuron (DESIGN.md)
    return dsl.sigmoid(w[0] * x[0] + w[1] * x[1] + w[2])


@pytest.fixture(scope="module")
def circuit():
    g = dsl.trace(lecture_f, x=f64[()], y=f64[()], z=f64[()])
    dg = compiler.grad(g)
    return g, dg, compiler.compile(dg, backend="numpy")


@pytest.fixture(scope="module")
def circuit_unoptimized():
    """The backward pass exactly as the gate rules build it (no pass pipeline), as the lecture
    writes it: dq = z·df, dz = q·df, dx = dy = dq."""
    g = dsl.trace(lecture_f, x=f64[()], y=f64[()], z=f64[()])
    dg = compiler.grad(g)
    return g, dg, compiler.compile(dg, backend="numpy", passes=[])


@pytest.fixture(scope="module")
def sigmoid_neuron():
    g = dsl.trace(neuron, w=f64[3], x=f64[2])
    dg = compiler.grad(g)
    return g, dg, compiler.compile(dg, backend="numpy")


def test_circuit_numbers(circuit):
    _, _, fn = circuit
    out = fn(x=np.float64(-2.0), y=np.float64(5.0), z=np.float64(-4.0))
    assert out["out"] == -12.0
    assert out["dx"] == -4.0 and out["dy"] == -4.0 and out["dz"] == 3.0
    assert list(out) == ["out", "dx", "dy", "dz"]


def test_circuit_accepts_python_numbers(circuit):
    out = circuit[2](x=-2, y=5, z=-4)
    assert (out["out"], out["dx"], out["dy"], out["dz"]) == (-12.0, -4.0, -4.0, 3.0)


def test_circuit_names_in_ir_and_source(circuit_unoptimized):
    g, dg, fn = circuit_unoptimized
    assert fn(x=-2.0, y=5.0, z=-4.0) == {"out": -12.0, "dx": -4.0, "dy": -4.0, "dz": 3.0}
    assert {n.out.name for n in g.nodes} == {"q", "f"}
    text = str(dg)
    for name in ("q", "f", "dq", "dz"):
        assert re.search(rf"^  {name}: f64\[\]", text, re.M), f"no value {name} in\n{text}"
    assert re.search(r"^\s+q = x \+ y\b", fn.source, re.M), fn.source
    assert re.search(r"^\s+f = q \* z\b", fn.source, re.M), fn.source
    assert re.search(r"^\s+dq = .*\bz\b.*# mul gate: dA = G·B", fn.source, re.M), fn.source
    assert re.search(r"^\s+dz = .*\bq\b.*# mul gate: dB = G·A", fn.source, re.M), fn.source


def test_neuron_numbers(sigmoid_neuron):
    _, _, fn = sigmoid_neuron
    out = fn(w=np.array([2.0, -3.0, -3.0]), x=np.array([-1.0, -2.0]))
    s = 1 / (1 + math.exp(-1.0))              # σ(w·x + b) = σ(1)
    ds = s * (1 - s)
    assert out["out"] == pytest.approx(0.7311, abs=1e-4)
    assert out["out"] == pytest.approx(s, rel=1e-15)
    np.testing.assert_allclose(out["dw"], [-0.1966, -0.3932, 0.1966], atol=1e-4)
    np.testing.assert_allclose(out["dx"], [0.3932, -0.5898], atol=1e-4)
    np.testing.assert_allclose(out["dw"], [-ds, -2 * ds, ds], rtol=1e-14)
    np.testing.assert_allclose(out["dx"], [2 * ds, -3 * ds], rtol=1e-14)
    assert out["dw"].dtype == np.float64 and out["dw"].shape == (3,)


def test_interpreter_gives_the_lecture_numbers(sigmoid_neuron, circuit):
    got = compiler.interpret(sigmoid_neuron[1], w=np.array([2.0, -3.0, -3.0]),
                             x=np.array([-1.0, -2.0]))
    np.testing.assert_allclose(got["dx"], [0.3932, -0.5898], atol=1e-4)
    got = compiler.interpret(circuit[1], x=-2.0, y=5.0, z=-4.0)
    assert (got["out"], got["dx"], got["dy"], got["dz"]) == (-12.0, -4.0, -4.0, 3.0)


@pytest.mark.parametrize("which", ["circuit_unoptimized", "sigmoid_neuron"])
def test_every_gradient_line_carries_its_gate_rule(which, request):
    """Every statement of the generated code that computes a gradient (a node the autodiff pass
    made) ends with a comment naming the rule that produced it."""
    g, dg, fn = request.getfixturevalue(which)
    forward = {n.out.name for n in g.nodes}
    body = fn.source.split(f"def {dg.name}(", 1)[1].split('"""', 2)[2]
    stmts = [ln.strip() for ln in body.splitlines() if re.match(r"^\s+\w+(\[.*\])? = ", ln)]
    grad_stmts = [s for s in stmts if s.split(" = ")[0] not in forward and "[" not in s.split(" = ")[0]]
    assert grad_stmts, fn.source
    for s in grad_stmts:
        assert re.search(r"#\s*(\w+ gate: .+|fan-out: .+|seed: .+|no path .+)$", s), \
            f"gradient line without its gate rule: {s!r}"
    rules = {n.rule for n in dg.nodes if n.rule}
    assert any(r.startswith("sigmoid gate") or r.startswith("mul gate") for r in rules)


def test_source_imports_only_numpy_and_has_the_ir_header(sigmoid_neuron):
    g, dg, fn = sigmoid_neuron
    imports = re.findall(r"^\s*(?:import|from)\s+(\w+)", fn.source, re.M)
    assert set(imports) == {"numpy"}
    assert "graph neuron(w: f64[3], x: f64[2])" in fn.source
    assert compiler.parse_graph(fn.ir).outputs.keys() == dg.outputs.keys()
    ns: dict = {}
    exec(compile(fn.source, "<lecture>", "exec"), ns)   # the module stands on its own
    raw = ns["neuron"](np.array([2.0, -3.0, -3.0]), np.array([-1.0, -2.0]))
    np.testing.assert_allclose(raw["dw"], [-0.1966, -0.3932, 0.1966], atol=1e-4)


def test_print_graph_shows_the_ir(circuit):
    g = circuit[0]
    assert str(g).splitlines()[0] == "graph lecture_f(x: f64[], y: f64[], z: f64[]) {"
    assert "q: f64[] = add(x, y)" in str(g)
    assert str(g).splitlines()[-2].strip() == "return out=f"
