"""dsl.stop_gradient (issue 18.5, ops/special.py): the identity forward, no gradient through it.
Oracles: SymPy's derivative of the model with the stopped values replaced by symbols held
constant, and NumPy central differences of the model with those values held at the point."""
from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

import compiler
from frontends import dsl
from frontends.dsl import f64


def model(x, w):
    s = dsl.stop_gradient(x * x)
    return dsl.sum(dsl.tanh(w * x) * s) + dsl.stop_gradient(dsl.sum(w)) * dsl.sum(w * w)


def numpy_model(x, w, s, t):                 # s, t: the stopped values, passed in
    return np.sum(np.tanh(w * x) * s) + t * np.sum(w * w)


@pytest.fixture
def point(rng):
    return rng.standard_normal(3), rng.standard_normal(3)


@pytest.mark.parametrize("backend", ["numpy", "llvm"])
def test_gradient_equals_sympy_with_the_stopped_values_held(backend, point):
    x0, w0 = point
    xs, ws = sp.symbols("x0:3", real=True), sp.symbols("w0:3", real=True)
    s, t = sp.symbols("s0:3", real=True), sp.Symbol("t", real=True)
    f = sum(sp.tanh(ws[i] * xs[i]) * s[i] for i in range(3)) + t * sum(v * v for v in ws)
    at = {**dict(zip(xs, x0)), **dict(zip(ws, w0)), **dict(zip(s, x0 * x0)), t: float(w0.sum())}
    want_dx = [float(sp.diff(f, v).subs(at)) for v in xs]
    want_dw = [float(sp.diff(f, v).subs(at)) for v in ws]
    out = compiler.compile(compiler.grad(dsl.trace(model, x=f64[3], w=f64[3])),
                           backend=backend)(x=x0, w=w0)
    np.testing.assert_allclose(out["dx"], want_dx, rtol=1e-12)
    np.testing.assert_allclose(out["dw"], want_dw, rtol=1e-12)
    np.testing.assert_allclose(out["out"], numpy_model(x0, w0, x0 * x0, w0.sum()), rtol=1e-14)


def test_gradient_equals_finite_differences_with_the_values_held(point):
    x0, w0 = point
    out = compiler.compile(compiler.grad(dsl.trace(model, x=f64[3], w=f64[3])))(x=x0, w=w0)
    eps, held = 1e-6, (x0 * x0, w0.sum())
    free_dx = []
    for k in range(3):
        e = np.eye(3)[k] * eps
        fd_x = (numpy_model(x0 + e, w0, *held) - numpy_model(x0 - e, w0, *held)) / (2 * eps)
        fd_w = (numpy_model(x0, w0 + e, *held) - numpy_model(x0, w0 - e, *held)) / (2 * eps)
        assert abs(fd_x - out["dx"][k]) < 1e-7 and abs(fd_w - out["dw"][k]) < 1e-7
        free = (numpy_model(x0 + e, w0, (x0 + e) ** 2, w0.sum())
                - numpy_model(x0 - e, w0, (x0 - e) ** 2, w0.sum())) / (2 * eps)
        free_dx.append(free)
    assert np.max(np.abs(np.array(free_dx) - out["dx"])) > 1e-3   # stopping changes it


def test_the_checks_hold_the_stopped_values():
    g = dsl.trace(model, x=f64[3], w=f64[3])
    assert compiler.check_finite_differences(g).ok
    assert compiler.check_against_sympy(g).ok


def test_text_form_code_and_errors():
    g = dsl.trace(model, x=f64[3], w=f64[3])
    assert sum(n.op == "stop_gradient" for n in g.nodes) == 2
    assert compiler.parse_graph(str(g)) == g
    only = compiler.grad(dsl.trace(lambda x: dsl.sum(dsl.stop_gradient(x) * 2.0), x=f64[2]))
    np.testing.assert_array_equal(compiler.compile(only)(x=np.ones(2))["dx"], [0.0, 0.0])
    with pytest.raises(compiler.UnsupportedError, match="stop_gradient expects a traced value"):
        dsl.stop_gradient(np.ones(2))
    fn = compiler.compile(dsl.trace(lambda x: dsl.stop_gradient(x), x=f64[2]))
    x = np.ones(2)
    y = fn(x=x)["out"]
    assert y is not x and not np.shares_memory(y, x)       # an output never aliases an input


def test_the_hessian_checks_hold_the_stopped_values_too():
    g = dsl.trace(model, x=f64[3], w=f64[3])
    assert compiler.check_hessian_finite_differences(g).ok
    assert compiler.check_hessian_against_sympy(g).ok
