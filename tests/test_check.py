"""Issue 4: checking gradients against SymPy and finite differences, as a user feature.

Oracles: SymPy's own `diff` of the rendered forward expression; central differences; the
lecture's hand-derived numbers; tensor-level identities proven exactly with `expand`."""
import time

import numpy as np
import pytest
import sympy as sp

import compiler
from compiler.ir import TensorType
from compiler.ops import OPS, gate
from graphs import set_gate
from compiler.report import CheckReport, GradientRow
from compiler.singleop import single_op_graph
from compiler.symbolic import input_symbols, render
from frontends import dsl
from frontends.dsl import f64, i64


def neuron(w, x):
    return dsl.sigmoid(w[0] * x[0] + w[1] * x[1] + w[2])


def two_layer(W1, b1, W2, b2, X, y, reg=1e-3):
    h = dsl.relu(X @ W1 + b1)
    scores = h @ W2 + b2
    return dsl.softmax_cross_entropy(scores, y) + reg * (dsl.sum(W1 * W1) + dsl.sum(W2 * W2))


def two_layer_graph(N, D, H, C):
    return dsl.trace(two_layer, W1=f64[D, H], b1=f64[H], W2=f64[H, C], b2=f64[C],
                     X=f64[N, D], y=i64[N])


@pytest.fixture
def wrong_mul(monkeypatch):
    """mul's dB rule with its sign flipped: a checker that cannot catch this is worthless."""
    set_gate(monkeypatch, "mul", gate("dA = G·B", lambda g, out, a, b: g * b,
                                                "dB = G·A", lambda g, out, a, b: -(g * a)))


# ---- whole-model checks --------------------------------------------------------------------
def test_neuron_checks_against_sympy():
    g = dsl.trace(neuron, w=f64[3], x=f64[2])
    report = compiler.check_against_sympy(g)
    assert report.ok, str(report)
    assert [r.name for r in report.rows] == ["dw", "dx"]
    assert all(r.symbolic == (r_n, r_n) for r, r_n in zip(report.rows, (3, 2)))
    assert all(r.max_abs < 1e-25 for r in report.rows)   # 30-digit evaluation
    assert "numpy" in str(report) and str(report).rstrip().endswith("OK")


def test_wrong_gate_rule_fails_and_names_the_op(wrong_mul):
    g = dsl.trace(neuron, w=f64[3], x=f64[2])
    report = compiler.check_against_sympy(g)
    assert not report.ok
    text = str(report)
    assert "FAIL dx" in text and text.rstrip().endswith("FAILED")
    assert report.suspect and "mul gate rule (dB = G·A)" in report.suspect
    assert "suspect: the mul gate rule" in text
    fd = compiler.check_finite_differences(g)
    assert not fd.ok and not fd.rows[1].ok and fd.rows[0].ok


def test_two_layer_net_checks_in_under_30s():
    g = two_layer_graph(5, 4, 10, 3)
    t = time.perf_counter()
    report = compiler.check_against_sympy(g, time_budget=2.0)
    assert time.perf_counter() - t < 30
    assert report.ok, str(report)
    assert [r.name for r in report.rows] == ["dW1", "db1", "dW2", "db2", "dX"]
    assert all(r.count == 3 * int(np.prod(r.shape)) for r in report.rows)


def test_large_model_is_checked_on_a_reduced_copy():
    """Issue 14.5: the model itself is compared at 30 digits; the symbolic proofs run on a
    reduced copy traced from the same function."""
    g = two_layer_graph(300, 2, 100, 3)
    report = compiler.check_against_sympy(g, time_budget=10)
    assert report.ok, str(report)
    assert any("reduced copy" in n and "100→" in n and "proven symbolically there" in n
               for n in report.notes), report.notes
    assert report.rows[0].shape == (2, 100) and all(r.count for r in report.rows)


def test_large_graph_without_source_is_checked_at_30_digits(monkeypatch):
    """Issue 14.5 (it used to raise, pointing at check_finite_differences): the 30-digit
    comparison runs on every model finite differences run on, and catches a wrong gate rule
    there; nothing is claimed proven."""
    g = compiler.parse_graph(str(two_layer_graph(300, 2, 100, 3)))
    report = compiler.check_against_sympy(g, time_budget=5)
    assert report.ok, str(report)
    assert all(r.count >= 1 and r.max_abs < 1e-9 for r in report.rows)
    assert all(p == (0, int(np.prod(r.shape))) for r, p in zip(report.rows,
                                                                report.proven.values()))
    text = str(report)
    assert "not proven symbolically: model too large (1203 symbols > limit 150)" in text
    assert "checked numerically at 30 digits" in text and "no symbolic proof" in text
    set_gate(monkeypatch, "mul", gate("dA = G·B", lambda g, out, a, b: g * b,
                                                "dB = G·A", lambda g, out, a, b: -(g * a)))
    report = compiler.check_against_sympy(g, time_budget=0)
    assert not report.ok and "FAIL dW1" in str(report), str(report)   # reg·sum(W1·W1)
    assert {r.name for r in report.rows if not r.ok} == {"dW1", "dW2"}
    assert not compiler.check_finite_differences(g).ok        # the independent oracle agrees


def test_kinks_are_avoided_and_reported():
    g = dsl.trace(lambda x: dsl.sum(dsl.relu(x) * x), x=f64[6])
    report = compiler.check_against_sympy(g, points=4)
    assert report.ok, str(report)


def test_float32_graph_is_checked_in_float64():
    g = dsl.trace(lambda x: dsl.sum(dsl.tanh(x) * x), x=dsl.f32[4])
    assert compiler.check_against_sympy(g).ok
    assert compiler.check_finite_differences(g).ok


def test_finite_differences_random_directions_for_large_inputs():
    g = dsl.trace(lambda x: dsl.sum(dsl.exp(x * 0.1)), x=f64[100])
    report = compiler.check_finite_differences(g, max_elements=10, directions=4)
    assert report.ok and report.rows[0].count == 2 * 4
    assert any("random directions" in n for n in report.notes)


def test_lecture_numbers_through_to_sympy():
    def f(x, y, z):
        q = x + y
        return q * z
    g = dsl.trace(f, x=f64[()], y=f64[()], z=f64[()])
    (expr,) = compiler.to_sympy(g).values()
    x, y, z = sp.symbols("x y z", real=True)
    assert sp.expand(expr - (x + y) * z) == 0
    dg = compiler.to_sympy(compiler.grad(g))
    vals = {x: -2, y: 5, z: -4}
    assert [dg[k].subs(vals) for k in ("out", "dx", "dy", "dz")] == [-12, -4, -4, 3]


def test_to_sympy_shapes_and_labels():
    g = dsl.trace(lambda W, x: W @ x, W=f64[2, 3], x=f64[3])
    out = compiler.to_sympy(g)["out"]
    assert isinstance(out, sp.Matrix) and out.shape == (2, 1)
    assert sp.expand(out[1] - sum(sp.Symbol(f"W_1_{k}", real=True) * sp.Symbol(f"x_{k}", real=True)
                                  for k in range(3))) == 0
    g = two_layer_graph(2, 2, 3, 2)
    with pytest.raises(compiler.GradcError, match="integer inputs need concrete values"):
        compiler.to_sympy(g)
    assert compiler.to_sympy(g, values={"y": np.array([0, 1])})["out"].free_symbols


# ---- report text ---------------------------------------------------------------------------
def test_report_golden_text_passing_and_failing():
    ok = GradientRow("dw", (3,), max_abs=1.5e-31, max_rel=2e-30, count=9, symbolic=(3, 3),
                     backends={"numpy": 5.6e-17})
    bad = GradientRow("dx", (2,), count=6, symbolic=(0, 2), backends={"numpy": 0.85})
    bad.add_numeric(-0.0352091261, 0.0352091261, 1e-9, where=(0, 0),
                    exprs=(sp.Symbol("a") * 2, -sp.Symbol("a") * 2))
    report = CheckReport("check_against_sympy: neuron, dout/d(w, x), 3 points", [ok, bad],
                         ["sampled away from kinks"], suspect="the mul gate rule (dB = G·A) "
                         "disagrees with SymPy at node t5 (lecture.py:7)")
    assert str(report) == """\
check_against_sympy: neuron, dout/d(w, x), 3 points
  gradient  shape  symbolic    max abs err  max rel err  numpy
  dw        (3,)   proven 3/3  1.5e-31      2.0e-30      5.6e-17
  dx        (2,)   proven 0/2  7.0e-02      2.0e+00      8.5e-01
  FAIL dx[0] at point 0: SymPy -0.0352091261, gradc 0.0352091261
       SymPy: 2*a
       gradc: -2*a
  FAIL dx: the numpy backend differs by 8.5e-01
  suspect: the mul gate rule (dB = G·A) disagrees with SymPy at node t5 (lecture.py:7)
  note: sampled away from kinks
  FAILED"""
    assert not report.ok and not bool(report)
    report.rows = [ok]
    report.suspect, report.notes = None, []
    assert str(report).splitlines()[-1] == "  OK" and report.ok


# ---- tensor-level proofs: gate rules equal SymPy's derivative exactly ----------------------
PROOFS = [
    ("matmul", [(2, 3), (3, 2)], {}),
    ("transpose", [(2, 3)], {"perm": (1, 0)}),
    ("sum", [(2, 3)], {"axes": (1,), "keepdims": False}),
    ("sum", [(2, 3)], {"axes": (0, 1), "keepdims": True}),
    ("mean", [(3, 2)], {"axes": (0,), "keepdims": False}),
    ("add", [(2, 3), (3,)], {}),            # broadcasting undone by a sum over axis 0
    ("mul", [(2, 1), (1, 3)], {}),          # both operands stretched
    ("sub", [(2, 3), ()], {}),
    ("broadcast_to", [(3,)], {"shape": (2, 3)}),
    ("reshape", [(2, 3)], {"shape": (3, 2)}),
    ("getitem", [(3, 4)], {"index": ((0, 2, 1), 1)}),
]


@pytest.mark.parametrize("op,shapes,attrs", PROOFS, ids=[p[0] + str(p[1]) for p in PROOFS])
def test_linear_gate_rules_proven_symbolically(op, shapes, attrs):
    g = single_op_graph(op, [TensorType("f64", s) for s in shapes], attrs)
    wrt = [v.name for v in g.inputs if v.name != "G"]
    syms = input_symbols(g)
    loss = render(g, symbols=syms)[g.outputs["out"].name][()]
    dg = compiler.grad(g, wrt=wrt)
    env = render(dg, symbols=syms)
    for x in wrt:
        mine = env[dg.outputs["d" + x].name]
        assert mine.shape == syms[x].shape
        for s, m in zip(syms[x].ravel(), mine.ravel()):
            assert sp.expand(sp.diff(loss, s) - m) == 0, (op, x, s)


def test_matmul_gate_is_the_transpose_identity_elementwise():
    """dA = G·Bᵀ and dB = Aᵀ·G, checked against explicit symbolic matrices."""
    g = single_op_graph("matmul", [TensorType("f64", (2, 3)), TensorType("f64", (3, 2))], {})
    syms = input_symbols(g)
    env = render(compiler.grad(g, wrt=["a0", "a1"]), symbols=syms)
    A, Bm, G = (sp.Matrix(syms[k].tolist()) for k in ("a0", "a1", "G"))
    dg = compiler.grad(g, wrt=["a0", "a1"])
    assert sp.Matrix(env[dg.outputs["da0"].name].tolist()) == G * Bm.T
    assert sp.Matrix(env[dg.outputs["da1"].name].tolist()).expand() == (A.T * G).expand()


def test_bool_inputs_such_as_dropout_masks_are_sampled():
    g = dsl.trace(lambda x: dsl.sum(dsl.dropout(dsl.tanh(x), 0.5)), x=f64[4])
    assert any(v.dtype == "bool" for v in g.inputs)
    report = compiler.check_against_sympy(g)
    assert report.ok, str(report)
    assert compiler.check_finite_differences(g).ok
