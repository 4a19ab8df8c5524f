"""Issue 14.5: the 30-digit comparison of check_against_sympy runs on models too large for
SymPy (compiler/check_large.py), and catches wrong gate rules there.

Oracles: SymPy's own rendering of a graph with 30-digit numbers (compiler.symbolic.render) and
the op table's SymPy meaning of matmul on mpmath numbers, for the number evaluator; float64
central differences (compiler.check_finite_differences) for the gradients; gate rules broken
on purpose (one by a relative 1e-7, below what finite differences can see)."""
import time

import mpmath
import numpy as np
import pytest

import compiler
from compiler.mpeval import graph_numbers, number
from compiler.ops import OPS, gate
from graphs import differentiable_samples, set_gate
from compiler.symbolic import render
from frontends import dsl
from frontends.dsl import f64, i64


def wide(W1, b1, W2, X, y):
    h = dsl.tanh(X @ W1 * 0.05 + b1)
    return dsl.softmax_cross_entropy(h @ W2, y) + 1e-3 * dsl.sum(W1 * W1)


def wide_graph(N=4, D=300, H=12, C=3):
    return dsl.trace(wide, W1=f64[D, H], b1=f64[H], W2=f64[H, C], X=f64[N, D], y=i64[N])


def test_number_evaluator_agrees_with_sympy_at_30_digits():
    g = dsl.trace(wide, W1=f64[5, 3], b1=f64[3], W2=f64[3, 2], X=f64[2, 5], y=i64[2])
    rng = np.random.default_rng(1)
    point = {v.name: rng.standard_normal(v.shape) for v in g.inputs if v.type.is_float}
    point["y"] = np.array([1, 0])
    mine = graph_numbers(g, point, 30, cache={})
    theirs = render(g, values=point, symbols={})
    with mpmath.workdps(30):
        for n in g.nodes:
            if n.out.type.is_float:
                for a, b in zip(mine[n.out.name].flat, theirs[n.out.name].flat):
                    assert abs(a - number(b)) <= 1e-27 * max(1, abs(a)), n.out.name


def test_exact_products_equal_the_sympy_meaning_on_mpmath_numbers():
    """matmul on integers times powers of two, against the op table's meaning on mpmath
    numbers, with magnitudes from 1e-200 to 1e200 in one operand."""
    g = dsl.trace(lambda A, B: dsl.sum(A @ B), A=f64[3, 40], B=f64[40, 2])
    rng = np.random.default_rng(2)
    A = rng.standard_normal((3, 40)) * 10.0 ** rng.integers(-200, 200, (3, 40))
    B = rng.standard_normal((40, 2))
    env = graph_numbers(g, {"A": A, "B": B}, 30)
    mine, total = env[g.nodes[0].out.name], env[g.outputs["out"].name][()]
    with mpmath.workdps(30):
        to = np.frompyfunc(mpmath.mpf, 1, 1)
        ref = OPS["matmul"].sympy(to(A), to(B))
        for a, r in zip(mine.flat, ref.flat):
            assert abs(a - r) <= 1e-28 * abs(r)
    with mpmath.workdps(80):            # the sum, also in integers: against an exact one
        exact = mpmath.fsum(mpmath.fsum(mpmath.mpf(a) * mpmath.mpf(b) for a, b in zip(row, col))
                            for row in A for col in B.T)
        assert abs(total - exact) <= 1e-28 * abs(exact)


def test_wide_model_checks_at_30_digits_and_agrees_with_finite_differences():
    g = wide_graph()
    report = compiler.check_against_sympy(g, time_budget=5)
    assert report.ok, str(report)
    assert all(r.count >= 2 and r.max_abs < 1e-9 for r in report.rows)
    assert all(r.symbolic == (0, int(np.prod(r.shape))) for r in report.rows)
    assert "not proven symbolically: model too large" in str(report)
    assert compiler.check_finite_differences(g).ok


def test_wrong_tanh_rule_is_caught_on_a_wide_model(monkeypatch):
    set_gate(monkeypatch, "tanh", gate("dx = G·(1−tanh x)",
                                                 lambda g, out, x: g * (1 - out)))
    g = compiler.parse_graph(str(wide_graph()))       # no source: no reduced copy
    report = compiler.check_against_sympy(g, time_budget=0)
    assert not report.ok and str(report).rstrip().endswith("FAILED")
    assert {r.name for r in report.rows if not r.ok} == {"dW1", "db1", "dX"}
    assert not compiler.check_finite_differences(g).ok


def test_matmul_rule_off_by_1e7_is_caught_where_finite_differences_cannot(monkeypatch):
    """30 digits, not 6: dB = Aᵀ·G scaled by 1 + 1e-7."""
    text, fn = OPS["matmul"].gate[1]
    rules = list(OPS["matmul"].gate)
    rules[1] = (text, lambda *a, **kw: fn(*a, **kw) * (1 + 1e-7))
    set_gate(monkeypatch, "matmul", tuple(rules))
    g = compiler.parse_graph(str(wide_graph()))
    report = compiler.check_against_sympy(g, time_budget=0, backends=())
    assert not report.ok and not report.rows[0].ok, str(report)     # dW1
    assert compiler.check_finite_differences(g).ok                  # below its tolerance


def test_zero_budget_compares_one_direction_of_each_gradient_and_says_so():
    g = compiler.parse_graph(str(wide_graph()))
    t = time.perf_counter()
    report = compiler.check_against_sympy(g, time_budget=0, backends=())
    seconds = time.perf_counter() - t
    assert report.ok and all(r.count == 1 for r in report.rows), str(report)
    assert seconds < report.stages["compile"] + report.stages["numeric"] + 1.5
    assert any("past the 0 s time budget" in n for n in report.notes)


def test_cifar_sized_two_layer_net_is_checked(monkeypatch):
    """X: f64[8, 3072], W1: f64[3072, 100]: the size finite differences handle; a sign flip
    in mul's dB (reg·sum(W1·W1)) is caught."""
    def net(W1, b1, W2, b2, X, y):
        h = dsl.relu(X @ W1 + b1)
        return dsl.softmax_cross_entropy(h @ W2 + b2, y) + 1e-3 * dsl.sum(W1 * W1)
    g = compiler.parse_graph(str(dsl.trace(net, W1=f64[3072, 100], b1=f64[100],
                                           W2=f64[100, 10], b2=f64[10], X=f64[8, 3072],
                                           y=i64[8])))
    set_gate(monkeypatch, "mul", gate("dA = G·B", lambda g, out, a, b: g * b,
                                                "dB = G·A", lambda g, out, a, b: -(g * a)))
    report = compiler.check_against_sympy(g, time_budget=0, backends=())
    assert [r.name for r in report.rows if not r.ok] == ["dW1"], str(report)
    assert all(r.count == 1 for r in report.rows)


# ---- every op of the table through the large-model path -------------------------------------
@pytest.mark.parametrize("op,g,wrt", differentiable_samples())
def test_every_op_through_the_number_path_and_a_rule_off_by_1e4_fails(op, g, wrt, monkeypatch):
    """max_symbols=0 sends every op sample through the large-model path: it agrees with the
    correct gate rules and catches each op's first gate rule scaled by 1.0001 (sign's gradient
    is 0, and a dropout mask may drop every element: nothing to scale there)."""
    report = compiler.check_against_sympy(g, wrt=wrt, of="loss", time_budget=5, backends=(),
                                          max_symbols=0)
    assert report.ok, str(report)
    assert any("model too large" in n for n in report.notes)
    rules = OPS[op].gate
    k = next(i for i, r in enumerate(rules) if r is not None)
    text, fn = rules[k]
    bad = list(rules)
    bad[k] = (text, lambda *a, **kw: fn(*a, **kw) * 1.0001)
    set_gate(monkeypatch, op, type(rules)(bad))
    report = compiler.check_against_sympy(g, wrt=wrt, of="loss", time_budget=5, backends=(),
                                          max_symbols=0, localize=False)
    zero = op == "sign" or (op == "dropout" and all(r.max_abs == 0 for r in report.rows))
    assert report.ok == zero, str(report)


def test_a_model_too_large_for_memory_is_a_clear_error(monkeypatch):
    import compiler.check_large as large
    monkeypatch.setattr(large, "BYTES_PER_NUMBER", 2 ** 40)
    g = compiler.parse_graph(str(wide_graph()))
    with pytest.raises(compiler.GradcError, match="GiB.*check_finite_differences"):
        compiler.check_against_sympy(g)
