"""Every op of the table, parametrized over tests/graphs.py OP_SAMPLES (so a new op is covered
as soon as it has a sample):

* its gradient (compiler.grad + the reference interpreter, float64) against central finite
  differences, relative error < 1e-6, on several shapes including broadcasting and fan-out;
* its gate rule against sympy.diff of its SymPy meaning: the single-op forward graph and its
  gradient graph are rendered with the op records' SymPy meanings, and dL/dx from sympy.diff is compared with the
  rendered gradient at random points (away from kinks);
* its SymPy meaning against its reference evaluation;
* the interpreter against the emitted NumPy code, forward and gradient, f64 and f32;
* the documented tie rules (relu'(0) = 0, maximum splits a tie ½/½, max splits between ties),
  against hand-derived numbers.
"""
import numpy as np
import pytest
import sympy as sp

import compiler
from compiler.builder import Builder, Var
from compiler.ir import Graph, TensorType
from compiler.ops import OPS
from graphs import (EXAMPLES, OP_SAMPLES, all_cases, assert_close_grad, numeric_grad, op_graph,
                    op_inputs, symbols_for, sympy_values)


def _differentiable(op) -> bool:
    return any(r is not None for r in OPS[op].gate)


def _wrt(graph):
    return [v.name for v in graph.inputs if v.type.is_float and v.name != "c"]


GRAD_CASES = [(op, c) for op, c in all_cases() if _differentiable(op)]
ALL_IDS = [f"{o}-{c.label}" for o, c in all_cases()]
GRAD_IDS = [f"{o}-{c.label}" for o, c in GRAD_CASES]


def _grad_graph(op, case, dtype="f64"):
    g = op_graph(op, case, dtype)
    wrt = _wrt(g)
    if not wrt or "loss" not in g.outputs:
        pytest.skip(f"{op} {case.label}: no float input to differentiate")
    dg = compiler.grad(g, wrt=wrt, of="loss")
    compiler.verify(dg)
    return g, dg, wrt


def test_every_differentiable_op_has_a_gradient_case():
    ops = {op for op, _ in GRAD_CASES}
    assert ops == {op for op in OP_SAMPLES if _differentiable(op)}


# ---- finite differences -------------------------------------------------------------------
@pytest.mark.parametrize("op,case", GRAD_CASES, ids=GRAD_IDS)
def test_gradient_vs_finite_differences(op, case, rng):
    if not case.fd:
        pytest.skip(f"{case.label}: the output is not float64")
    g, dg, wrt = _grad_graph(op, case)
    for trial in range(2):
        ins = op_inputs(op, case, g, rng)
        got = compiler.interpret(dg, ins)
        for x in wrt:
            fd = numeric_grad(g, ins, x, "loss")
            assert_close_grad(got["d" + x], fd, f"{op} {case.label} d{x}")


@pytest.mark.parametrize("name", ["lecture_f", "neuron", "broadcasting", "fan_out", "matvec",
                                  "many_ops"])
def test_example_gradient_vs_finite_differences(name, rng):
    ex = EXAMPLES[name]
    g = ex.build("f64")
    ins = ex.inputs(rng, "f64")
    got = compiler.interpret(compiler.grad(g), ins)
    for v in g.inputs:
        assert_close_grad(got["d" + v.name], numeric_grad(g, ins, v.name, "out"),
                          f"{name} d{v.name}")


@pytest.mark.parametrize("op,case", GRAD_CASES, ids=GRAD_IDS)
def test_second_order_vs_finite_differences(op, case, rng):
    """The gradient graph is an ordinary graph: differentiate s = Σ v·dL/dx again (a
    Hessian-vector product) and compare with central differences of s."""
    if not case.fd:
        pytest.skip(f"{case.label}: the output is not float64")
    g, dg, wrt = _grad_graph(op, case)
    b = Builder(dg)
    total = None
    for x in wrt:
        d = Var(b, dg.outputs["d" + x])
        prod = d * b.add_input("v_" + x, d.value.type)
        s = b.emit("sum", [prod], axes=tuple(range(prod.ndim)), keepdims=False)
        total = s if total is None else total + s
    dg.outputs = {"s": total.value}
    hv = compiler.grad(dg, wrt=wrt, of="s")
    compiler.verify(hv)
    ins = op_inputs(op, case, g, rng)
    ins.update({"v_" + x: rng.standard_normal(dg.input("v_" + x).shape) for x in wrt})
    got = compiler.interpret(hv, ins)
    for x in wrt:
        assert_close_grad(got["d" + x], numeric_grad(dg, ins, x, "s"), f"{op} {case.label} d{x}")


# ---- SymPy ---------------------------------------------------------------------------------
def _num(expr) -> float:
    return float(sp.N(expr, 30))


@pytest.mark.parametrize("op,case", GRAD_CASES, ids=GRAD_IDS)
def test_gate_rule_vs_sympy_diff(op, case, rng):
    """dL/dx rendered from the gradient graph == sympy.diff(L rendered from the forward graph)."""
    g, dg, wrt = _grad_graph(op, case)
    for trial in range(2):   # two random points (weights, labels and masks drawn anew too)
        ins = op_inputs(op, case, g, rng)
        syms = symbols_for(dg, wrt)
        env = sympy_values(dg, syms, ins)
        loss = env[dg.outputs["loss"].name][()]
        subs = {syms[x][idx]: sp.Float(float(ins[x][idx]), 30)
                for x in wrt for idx in np.ndindex(*syms[x].shape)}
        for x in wrt:
            rendered = env[dg.outputs["d" + x].name]
            for idx in np.ndindex(*syms[x].shape):
                want = _num(sp.diff(loss, syms[x][idx]).subs(subs))
                got = _num(sp.sympify(rendered[idx]).subs(subs))
                assert abs(got - want) <= 1e-9 * max(1.0, abs(want)), (
                    f"{op} {case.label}: gate rule gives d{x}{list(idx)} = {got!r}, "
                    f"sympy.diff gives {want!r}")


@pytest.mark.parametrize("op,case", all_cases(), ids=ALL_IDS)
def test_sympy_meaning_vs_reference_evaluation(op, case, rng):
    g = op_graph(op, case, "f64", weighted=False)
    ins = op_inputs(op, case, g, rng)
    env = sympy_values(g, {}, ins)
    ref = compiler.interpret(g, ins)["out"]
    sym = env[g.outputs["out"].name]
    assert sym.shape == ref.shape
    for idx in np.ndindex(*ref.shape):
        s = sp.sympify(sym[idx])
        got = bool(s) if ref.dtype == bool else _num(s)
        assert got == pytest.approx(ref[idx], rel=1e-12, abs=1e-12), \
            f"{op} {case.label}: SymPy meaning {got!r} vs reference {ref[idx]!r} at {idx}"


# ---- interpreter vs emitted NumPy ----------------------------------------------------------
@pytest.mark.parametrize("dtype", ["f64", "f32"])
@pytest.mark.parametrize("op,case", all_cases(), ids=ALL_IDS)
def test_interpreter_vs_numpy_backend(op, case, dtype, rng):
    g = op_graph(op, case, dtype)
    graphs = [g]
    wrt = _wrt(g)
    if wrt and "loss" in g.outputs and _differentiable(op):
        graphs.append(compiler.grad(g, wrt=wrt, of="loss"))
    ins = op_inputs(op, case, g, rng, dtype)
    tol = 1e-12 if dtype == "f64" else 2e-6
    for graph in graphs:
        want = compiler.interpret(graph, ins)
        got = compiler.compile(graph, backend="numpy")(**ins)
        assert list(got) == list(want)
        for k in want:
            assert np.asarray(got[k]).dtype == want[k].dtype, f"{op} {case.label} {k}: dtype"
            assert np.shape(got[k]) == want[k].shape, f"{op} {case.label} {k}: shape"
            np.testing.assert_allclose(got[k], want[k], rtol=tol, atol=tol,
                                       err_msg=f"{op} {case.label} {k}")


# ---- tie rules (hand-derived) --------------------------------------------------------------
def _single(op, types, **attrs):
    g = Graph(op + "_tie")
    b = Builder(g)
    ins = [b.add_input(f"x{k}", TensorType("f64", s)) for k, s in enumerate(types)]
    out = b.emit(op, ins, **attrs)
    total = b.emit("sum", [out], axes=tuple(range(out.ndim)), keepdims=False)
    g.outputs["out"] = total.value
    return compiler.grad(g)


def test_relu_family_route_zero_to_the_negative_side():
    x = np.array([-1.0, 0.0, 2.0])
    assert list(compiler.interpret(_single("relu", [(3,)]), x0=x)["dx0"]) == [0, 0, 1]
    leaky = compiler.interpret(_single("leaky_relu", [(3,)], alpha=0.1), x0=x)["dx0"]
    assert list(leaky) == [0.1, 0.1, 1]
    elu = compiler.interpret(_single("elu", [(3,)], alpha=0.5), x0=x)["dx0"]
    np.testing.assert_allclose(elu, [0.5 * np.exp(-1), 0.5, 1], rtol=1e-15)
    assert list(compiler.interpret(_single("abs", [(3,)]), x0=x)["dx0"]) == [-1, 0, 1]


@pytest.mark.parametrize("op", ["maximum", "minimum"])
def test_maximum_minimum_split_a_tie(op):
    a, b = np.array([1.0, 2.0, 3.0]), np.array([2.0, 2.0, 2.0])
    got = compiler.interpret(_single(op, [(3,), (3,)]), x0=a, x1=b)
    wa = [0, 0.5, 1] if op == "maximum" else [1, 0.5, 0]
    assert list(got["dx0"]) == wa
    assert list(got["dx1"]) == [1 - w for w in wa]


def test_max_reduction_splits_between_ties():
    x = np.array([[1.0, 3.0, 3.0], [5.0, 0.0, 5.0 - 1e-9]])
    got = compiler.interpret(_single("max", [(2, 3)], axes=(1,), keepdims=False), x0=x)["dx0"]
    np.testing.assert_array_equal(got, [[0, 0.5, 0.5], [1, 0, 0]])
    x = np.full((2, 2), 7.0)   # all four tie for the global maximum
    got = compiler.interpret(_single("max", [(2, 2)], axes=(0, 1), keepdims=False), x0=x)["dx0"]
    np.testing.assert_array_equal(got, np.full((2, 2), 0.25))
