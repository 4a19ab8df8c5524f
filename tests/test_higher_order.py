"""Second derivatives (compiler/higher.py, compiler/check_hessian.py, examples/newton.py).

* every op of the table, parametrized over compiler.ops.OPS with the per-op samples of
  tests/graphs.py: H·v of loss = Σ c·op(x) over all float inputs (c included, so the mixed
  derivatives ∂²L/∂x∂c = ∂op/∂x exercise each gate rule's dependence on its upstream gradient),
  from compiler.hvp run by the interpreter and both backends, against SymPy differentiating the
  loss twice (test-local renderer: tests/graphs.sympy_values);
* compiler.hessian against SymPy's hessian (check_hessian_against_sympy) on example models, and
  against the hand-derived Hessian of logistic regression, Xᵀ·diag(σ(1−σ))·X/N + reg·I;
* grad of grad (of="dx") against hand-derived derivatives of sin(x)·y³, third order included;
* H·v of the two-layer net against central differences of the gradient, on both backends;
* the passes keep second-order graphs lean (CSE leaves no repeated computation);
* errors name what is wrong; examples/newton.py converges and beats SGD.
"""
import numpy as np
import pytest
import sympy as sp

import compiler
from compiler.ir import GradcError
from compiler.ops import OPS
from graphs import set_gate
from frontends import dsl
from frontends.dsl import f64
from graphs import (EXAMPLES, OP_SAMPLES, _two_layer_build, op_graph, op_inputs, symbols_for,
                    sympy_values, two_layer)

PARAMS = ["W1", "b1", "W2", "b2"]


def _num(expr) -> float:
    return float(sp.N(expr, 30))


def _no_delta(expr):
    """DiracDelta(u) = 0 wherever u ≠ 0: every sample point (the samples avoid kinks)."""
    return expr.replace(lambda e: isinstance(e, sp.DiracDelta), lambda e: sp.Integer(0))


def _sympy_hvp(graph, of, wrt, ins, v) -> dict:
    """(H·v)_x = ∂/∂x Σ_j (∂L/∂z_j)·v_j by SymPy, at the point `ins`, as float64 arrays."""
    syms = symbols_for(graph, wrt)
    L = sympy_values(graph, syms, ins)[graph.outputs[of].name][()]
    subs = {syms[x][i]: sp.Float(float(ins[x][i]), 30)
            for x in wrt for i in np.ndindex(*syms[x].shape)}
    s = sum((sp.diff(L, syms[x][i]) * sp.Float(float(v[x][i]), 30)
             for x in wrt for i in np.ndindex(*syms[x].shape)), sp.Integer(0))
    out = {}
    for x in wrt:
        arr = np.zeros(syms[x].shape)
        for i in np.ndindex(*syms[x].shape):
            arr[i] = _num(_no_delta(sp.diff(s, syms[x][i])).subs(subs))
        out[x] = arr
    return out


def _close(got, want, what, rel=1e-8):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, f"{what}: shape {got.shape} vs {want.shape}"
    err = np.abs(got - want) / np.maximum(np.maximum(np.abs(want), np.abs(got)), 1e-3)
    assert np.all(err < rel), f"{what}: got {got.ravel()[:6]}, want {want.ravel()[:6]}, " \
                              f"max rel err {err.max():.2e}"


# ---- every op: its gradient graph differentiated once more -----------------------------
@pytest.fixture(scope="module")
def llvm_ok():
    try:
        import llvmlite  # noqa: F401
        return True
    except ImportError:
        return False


@pytest.mark.parametrize("op", sorted(OPS))
def test_every_op_second_derivative_vs_sympy(op, rng, llvm_ok):
    assert op in OP_SAMPLES, f"{op}: no sample in tests/graphs.py OP_SAMPLES"
    if not any(r is not None for r in OPS[op].gate):
        # not differentiable (comparisons, const, onehot): no float input reaches the output;
        # or an op that holds its value constant on purpose (stop_gradient): a float input and
        # output, checked below against SymPy, whose meaning of the op has derivative 0 too
        reach = [case for case in OP_SAMPLES[op].cases
                 if op_graph(op, case, "f64", weighted=False).outputs["out"].type.is_float
                 and any(v.type.is_float
                         for v in op_graph(op, case, "f64", weighted=False).inputs)]
        if not reach:
            return
    checked = 0
    for case in OP_SAMPLES[op].cases:
        if not case.fd:           # an f32 output: SymPy's 30 digits would only measure rounding
            continue
        g = op_graph(op, case, "f64")
        wrt = [v.name for v in g.inputs if v.type.is_float]
        hv = compiler.hvp(g, wrt=wrt, of="loss")
        compiler.verify(hv)
        ins = op_inputs(op, case, g, rng)
        v = {x: rng.standard_normal(g.input(x).shape) for x in wrt}
        want = _sympy_hvp(g, "loss", wrt, ins, v)
        args = dict(ins, **{"v_" + x: v[x] for x in wrt})
        runs = {"interpreter": compiler.interpret(hv, args)}
        for backend in ("numpy", "llvm") if llvm_ok else ("numpy",):
            runs[backend] = compiler.compile(hv, backend=backend)(**args)
        for who, got in runs.items():
            for x in wrt:
                _close(got["hv_" + x], want[x], f"{op} {case.label} {who} (H·v)_{x}")
        checked += 1
    assert checked, f"{op}: no float64 sample case"


# ---- Hessians against SymPy and a hand-derived formula ----------------------------------
@pytest.mark.parametrize("name", ["neuron", "broadcasting", "matvec"])
def test_hessian_vs_sympy_hessian(name):
    rep = compiler.check_hessian_against_sympy(EXAMPLES[name].build("f64"), time_budget=0.5)
    assert rep.ok, str(rep)
    assert {r.name for r in rep.rows} >= {"hessian_" + v.name for v in
                                          EXAMPLES[name].build("f64").inputs}
    assert all(r.count > 0 and set(r.backends) == {"numpy", "llvm"} for r in rep.rows), str(rep)


def test_two_layer_hessian_vs_sympy_hessian():
    g = _two_layer_build(two_layer)("f64", n=3, d=2, hdim=3, c=2)
    rep = compiler.check_hessian_against_sympy(g, wrt=PARAMS, time_budget=0)
    assert rep.ok, str(rep)


def test_check_hessian_catches_a_wrong_gate_rule(monkeypatch):
    from compiler.ops import gate
    g = EXAMPLES["neuron"].build("f64")
    set_gate(monkeypatch, "sigmoid", gate("wrong: dx = G·σ", lambda g, out, x: g * out))
    rep = compiler.check_hessian_against_sympy(g, time_budget=0, backends=())
    assert not rep.ok and "FAIL" in str(rep)


def _logistic(w, X, y):
    z = X @ w
    return dsl.mean(dsl.softplus(z) - y * z) + 0.05 * dsl.sum(w * w)


@pytest.mark.parametrize("backend", ["numpy", "llvm"])
def test_logistic_regression_hessian_vs_formula(backend, rng):
    n, d = 12, 4
    g = dsl.trace(_logistic, w=f64[d], X=f64[n, d], y=f64[n])
    h = compiler.hessian(g, wrt="w")
    assert h.outputs["hessian_w"].shape == (d, d)
    w, X = rng.standard_normal(d), rng.standard_normal((n, d))
    y = (rng.random(n) < 0.5).astype(float)
    out = compiler.compile(h, backend=backend)(w=w, X=X, y=y)
    p = 1 / (1 + np.exp(-X @ w))
    want = X.T @ (X * (p * (1 - p))[:, None]) / n + 0.1 * np.eye(d)
    np.testing.assert_allclose(out["hessian_w"], want, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(out["dw"], X.T @ (p - y) / n + 0.1 * w, rtol=1e-12)
    hv = compiler.compile(compiler.hvp(g, wrt="w"), backend=backend)
    v = rng.standard_normal(d)
    np.testing.assert_allclose(hv(w=w, X=X, y=y, v_w=v)["hv_w"], want @ v, rtol=1e-12)


def test_hessian_of_a_matrix_input_has_the_doubled_shape(rng):
    """f(A) = Σ tanh(A)²: ∂²f/∂A_ij∂A_kl = [ij = kl]·(2(1−t²)² − 4t²(1−t²)), t = tanh(A_ij)."""
    g = dsl.trace(lambda A: dsl.sum(dsl.tanh(A) * dsl.tanh(A)), A=f64[2, 3])
    A = rng.standard_normal((2, 3))
    got = compiler.compile(compiler.hessian(g, wrt="A"))(A=A)["hessian_A"]
    t = np.tanh(A)
    diag = 2 * (1 - t * t) ** 2 - 4 * t * t * (1 - t * t)
    want = np.zeros((2, 3, 2, 3))
    for i in np.ndindex(2, 3):
        want[i + i] = diag[i]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)


# ---- gradients of gradients -------------------------------------------------------------
def test_grad_of_grad_of_a_scalar_gradient():
    """f = sin(x)·y³: ∂²f/∂x² = −sin(x)·y³, ∂²f/∂x∂y = 3cos(x)·y², ∂³f/∂x³ = −cos(x)·y³."""
    g = dsl.trace(lambda x, y: dsl.sin(x) * y ** 3, x=f64[()], y=f64[()])
    gg = compiler.grad(compiler.grad(g), of="dx", wrt=["x", "y"])
    assert list(gg.outputs) == ["out", "dx", "dy", "ddx_dx", "ddx_dy"]
    x, y = 0.7, -1.3
    for backend in ("numpy", "llvm"):
        out = compiler.compile(gg, backend=backend)(x=np.float64(x), y=np.float64(y))
        assert out["ddx_dx"] == pytest.approx(-np.sin(x) * y ** 3, rel=1e-13)
        assert out["ddx_dy"] == pytest.approx(3 * np.cos(x) * y ** 2, rel=1e-13)
    g3 = compiler.grad(gg, of="ddx_dx", wrt="x")
    out = compiler.interpret(g3, x=np.float64(x), y=np.float64(y))
    assert out["dddx_dx_dx"] == pytest.approx(-np.cos(x) * y ** 3, rel=1e-13)


def test_grad_of_a_vector_gradient_points_to_hvp():
    g = compiler.grad(dsl.trace(lambda w: dsl.sum(w * w * w), w=f64[3]))
    with pytest.raises(GradcError, match="compiler.hvp"):
        compiler.grad(g, of="dw")
    with pytest.raises(GradcError, match="of='name'"):
        compiler.grad(g)


# ---- H·v of the two-layer net, and lean graphs --------------------------------------------
@pytest.mark.parametrize("backend", ["numpy", "llvm"])
def test_two_layer_hvp_vs_finite_differences_of_the_gradient(backend):
    g = EXAMPLES["two_layer"].build("f64")
    rep = compiler.check_hessian_finite_differences(g, wrt=PARAMS, backend=backend, tol=1e-6)
    assert rep.ok, str(rep)


def test_second_order_graph_is_lean():
    """After the pass pipeline no computation is repeated (CSE merges what the second reverse
    pass rebuilds of the first), and the HVP graph stays within 2.5x the gradient graph."""
    g = EXAMPLES["two_layer"].build("f64")
    grad_nodes = len(compiler.optimize(compiler.grad(g, wrt=PARAMS)).nodes)
    hv = compiler.optimize(compiler.hvp(g, wrt=PARAMS))
    keys = [(n.op, tuple(v.name for v in n.inputs), repr(n.attrs)) for n in hv.nodes]
    repeated = {k for k in keys if keys.count(k) > 1}
    assert not repeated, f"repeated computations after the passes: {sorted(repeated)[:3]}"
    assert len(hv.nodes) <= 2.5 * grad_nodes, (len(hv.nodes), grad_nodes)
    no_cse = compiler.optimize(compiler.hvp(g, wrt=PARAMS),
                               [p for p in compiler.passes.DEFAULT_PIPELINE if p != "cse"])
    assert len(hv.nodes) < len(no_cse.nodes)


# ---- errors and the example ---------------------------------------------------------------
def test_errors_name_the_problem():
    g = dsl.trace(lambda w, u: dsl.sum(w * w) * dsl.sum(u), w=f64[20, 20], u=f64[3])
    with pytest.raises(GradcError, match="'w' has 400 elements.*hvp"):
        compiler.hessian(g, wrt="w")
    with pytest.raises(GradcError, match="one input"):
        compiler.hessian(g, wrt=["w", "u"])
    clash = dsl.trace(lambda w, v_w: dsl.sum(w * v_w), w=f64[2], v_w=f64[2])
    with pytest.raises(GradcError, match="v_w"):
        compiler.hvp(clash, wrt="w")


def test_newton_example_converges_and_beats_sgd(capsys):
    from examples import newton
    assert newton.main(["--epochs", "20"]) == 0
    text = capsys.readouterr().out
    assert "Newton" in text and "SGD" in text
    X, y = newton.make_data(0)
    g = dsl.trace(newton.loss, w=f64[newton.D], X=f64[newton.N, newton.D], y=f64[newton.N])
    w, hist = newton.newton(compiler.compile(compiler.hessian(g, wrt="w")), X, y)
    assert len(hist) <= 8 and hist[-1][1] < 1e-10
    # the minimum: ∇L = Xᵀ(σ(Xw) − y)/N + reg·w = 0, by hand-written NumPy
    p = 1 / (1 + np.exp(-X @ w))
    assert np.linalg.norm(X.T @ (p - y) / newton.N + newton.REG * w) < 1e-10
