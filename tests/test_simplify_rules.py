"""The simplification rule table (compiler/passes/simplify.py): one golden test per rule (IR text
in, IR text out after `simplify` + `dce`), a SymPy proof that the rewritten graph computes the
same function as the original, and the IEEE guards (x·0, exp(log x)) checked on the values
where the identity fails."""
import numpy as np
import pytest
import sympy as sp

import compiler
from compiler.passes import optimize
from compiler.passes.simplify import all_rules
from graphs import symbols_for, sympy_values


def C(name, value, dtype="f64", shape=()):
    dims = ",".join(map(str, shape))
    return f"{name}: {dtype}[{dims}] = const() {{value={value!r}, dtype={dtype!r}, shape={shape!r}}}"


def text(head, body, ret):
    return "\n".join([head] + ["  " + line for line in body] + ["  return " + ret, "}"])


# rule -> (graph head, body lines, return, expected body lines, expected return)
CASES = {
    "mul_one": ("graph g(x: f64[3]) {",
                ["t0: f64[3] = tanh(x)", C("one", 1.0), "dq: f64[3] = mul(one, t0)"], "out=dq",
                ["dq: f64[3] = tanh(x)"], "out=dq"),
    "mul_zero": ("graph g(x: f64[3]) {",
                 ["s: f64[3] = sigmoid(x)", C("zero", 0.0), "y: f64[3] = mul(s, zero)"], "out=y",
                 [C("y", 0.0, shape=(3,))], "out=y"),
    "mul_minus_one": ("graph g(x: f64[3]) {", [C("m", -1.0), "y: f64[3] = mul(x, m)"], "out=y",
                      ["y: f64[3] = neg(x)"], "out=y"),
    "mul_neg_neg": ("graph g(x: f64[3], z: f64[3]) {",
                    ["a: f64[3] = neg(x)", "b: f64[3] = neg(z)", "y: f64[3] = mul(a, b)"], "out=y",
                    ["y: f64[3] = mul(x, z)"], "out=y"),
    "div_one": ("graph g(x: f64[2,3]) {", [C("one", 1.0), "y: f64[2,3] = div(x, one)"], "out=y",
                [], "out=x"),
    "add_zero": ("graph g(x: f64[3]) {",
                 [C("zero", 0.0, shape=(2, 3)), "y: f64[2,3] = add(zero, x)"], "out=y",
                 ["y: f64[2,3] = broadcast_to(x) {shape=(2, 3)}"], "out=y"),
    "scalar_operand": ("graph g(x: f64[2,3]) {",
                       [C("c", 0.5, shape=(2, 3)), "y: f64[2,3] = mul(c, x)",
                        "z: f64[2,3] = sub(x, c)"], "out=y, z=z",
                       [C("t0", 0.5), "y: f64[2,3] = mul(t0, x)", C("t2", 0.5),
                        "z: f64[2,3] = sub(x, t2)"], "out=y, z=z"),
    "add_self": ("graph g(x: f64[3]) {", ["t0: f64[3] = exp(x)", "y: f64[3] = add(t0, t0)"],
                 "out=y",
                 ["t0: f64[3] = exp(x)", C("t1", 2.0), "y: f64[3] = mul(t1, t0)"], "out=y"),
    "add_neg": ("graph g(x: f64[3], z: f64[3]) {",
                ["t0: f64[3] = neg(z)", "y: f64[3] = add(x, t0)"], "out=y",
                ["y: f64[3] = sub(x, z)"], "out=y"),
    "sub_zero": ("graph g(x: f64[3]) {", [C("zero", 0.0), "y: f64[3] = sub(x, zero)"], "out=y",
                 [], "out=x"),
    "zero_sub": ("graph g(x: f64[3]) {", [C("zero", 0.0), "y: f64[3] = sub(zero, x)"], "out=y",
                 ["y: f64[3] = neg(x)"], "out=y"),
    "sub_neg": ("graph g(x: f64[3], z: f64[3]) {",
                ["t0: f64[3] = neg(z)", "y: f64[3] = sub(x, t0)"], "out=y",
                ["y: f64[3] = add(x, z)"], "out=y"),
    "neg_neg": ("graph g(x: f64[3]) {",
                ["t0: f64[3] = exp(x)", "t1: f64[3] = neg(t0)", "y: f64[3] = neg(t1)"], "out=y",
                ["y: f64[3] = exp(x)"], "out=y"),
    "pow_one": ("graph g(x: f64[3]) {", [C("one", 1.0), "y: f64[3] = pow(x, one)"], "out=y",
                [], "out=x"),
    "pow_two": ("graph g(x: f64[3]) {", [C("two", 2.0), "y: f64[3] = pow(x, two)"], "out=y",
                ["y: f64[3] = mul(x, x)"], "out=y"),
    "exp_log": ("graph g(x: f64[3]) {",
                ["e: f64[3] = exp(x)", "t0: f64[3] = log(e)", "y: f64[3] = exp(t0)"], "out=y",
                ["e: f64[3] = exp(x)"], "out=e"),
    "where_same": ("graph g(c: bool[3], x: f64[3]) {", ["y: f64[3] = where(c, x, x)"], "out=y",
                   [], "out=x"),
    "where_known": ("graph g(x: f64[3], z: f64[3]) {",
                    [C("k", False, "bool"), "y: f64[3] = where(k, x, z)"], "out=y",
                    [], "out=z"),
    "transpose_transpose": (
        "graph g(x: f64[2,3,4]) {",
        ["t0: f64[4,2,3] = transpose(x) {perm=(2, 0, 1)}",
         "y: f64[2,3,4] = transpose(t0) {perm=(1, 2, 0)}",
         "t1: f64[3,4,2] = transpose(t0) {perm=(2, 0, 1)}"], "out=y, w=t1",
        ["t1: f64[3,4,2] = transpose(x) {perm=(1, 2, 0)}"], "out=x, w=t1"),
    "transpose_identity": ("graph g(x: f64[2,3]) {",
                           ["y: f64[2,3] = transpose(x) {perm=(0, 1)}"], "out=y", [], "out=x"),
    "same_shape": ("graph g(x: f64[2,3]) {",
                   ["t0: f64[2,3] = reshape(x) {shape=(2, 3)}",
                    "y: f64[2,3] = broadcast_to(t0) {shape=(2, 3)}"], "out=y", [], "out=x"),
    "reshape_reshape": ("graph g(x: f64[2,3]) {",
                        ["t0: f64[6] = reshape(x) {shape=(6,)}",
                         "y: f64[3,2] = reshape(t0) {shape=(3, 2)}"], "out=y",
                        ["y: f64[3,2] = reshape(x) {shape=(3, 2)}"], "out=y"),
    "broadcast_of_lead_reshape": ("graph g(x: f64[]) {",
                                  ["t0: f64[1] = reshape(x) {shape=(1,)}",
                                   "y: f64[3] = broadcast_to(t0) {shape=(3,)}"], "out=y",
                                  ["y: f64[3] = broadcast_to(x) {shape=(3,)}"], "out=y"),
    "sum_of_broadcast_scalar": ("graph g(c: f64[]) {",
                                ["b: f64[4,3] = broadcast_to(c) {shape=(4, 3)}",
                                 "s: f64[3] = sum(b) {axes=(0,), keepdims=False}"], "out=s",
                                [C("t0", 4.0), "t1: f64[] = mul(c, t0)",
                                 "s: f64[3] = broadcast_to(t1) {shape=(3,)}"], "out=s"),
    "mean_of_broadcast_scalar": ("graph g(c: f64[]) {",
                                 ["b: f64[4,3] = broadcast_to(c) {shape=(4, 3)}",
                                  "s: f64[3] = mean(b) {axes=(0,), keepdims=False}"], "out=s",
                                 ["s: f64[3] = broadcast_to(c) {shape=(3,)}"], "out=s"),
}


def test_every_rule_has_a_golden_case_and_a_docstring():
    names = sorted(f.__name__ for f in all_rules())
    assert names == sorted(CASES)
    for f in all_rules():
        assert f.__doc__ and ("=" in f.__doc__), f.__name__


def _numbers(graph, rng):
    """Concrete values for the non-float inputs (bool conditions)."""
    return {v.name: rng.random(v.shape) > 0.5 for v in graph.inputs if not v.type.is_float}


@pytest.mark.parametrize("name", sorted(CASES))
def test_rule_golden(name):
    head, body, ret, want_body, want_ret = CASES[name]
    before = compiler.parse_graph(text(head, body, ret))
    before_text = str(before)
    after = optimize(before, ["simplify", "dce"], check=True)
    assert str(after) == text(head, want_body, want_ret)
    assert str(before) == before_text          # the pass built a new graph


@pytest.mark.parametrize("name", sorted(CASES))
def test_rule_proved_with_sympy(name, rng):
    """Render the graph before and after the rule with each op's SymPy meaning: every output
    element must simplify to the same expression (exp_log: the input of log is exp(x) > 0)."""
    head, body, ret, _, _ = CASES[name]
    before = compiler.parse_graph(text(head, body, ret))
    after = optimize(before, ["simplify", "dce"])
    floats = [v.name for v in before.inputs if v.type.is_float]
    syms = symbols_for(before, floats)
    nums = _numbers(before, rng)
    old = sympy_values(before, syms, nums)
    new = sympy_values(after, syms, nums)
    for key in before.outputs:
        a = old[before.outputs[key].name]
        b = new[after.outputs[key].name]
        assert a.shape == b.shape, key
        for idx in np.ndindex(*a.shape):
            assert sp.simplify(a[idx] - b[idx]) == 0, (name, key, a[idx], b[idx])


@pytest.mark.parametrize("name", sorted(CASES))
def test_rule_values_match_interpreter(name, rng):
    head, body, ret, _, _ = CASES[name]
    before = compiler.parse_graph(text(head, body, ret))
    after = optimize(before, ["simplify", "dce"])
    ins = {v.name: rng.random(v.shape) > 0.5 if v.dtype == "bool" else rng.standard_normal(v.shape)
           for v in before.inputs}
    want, got = compiler.interpret(before, **ins), compiler.interpret(after, **ins)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-15, atol=0)


# ---- where an identity does not hold in floating point, the rule must not fire ------------
def test_mul_zero_keeps_unbounded_operands():
    """inf·0 = nan: x·0 with x an arbitrary input stays (and the interpreter shows why)."""
    g = compiler.parse_graph(text("graph g(x: f64[2]) {", [C("zero", 0.0), "y: f64[2] = mul(x, zero)"],
                                  "out=y"))
    after = optimize(g, ["simplify", "dce"])
    assert [n.op for n in after.nodes] == ["const", "mul"]
    out = compiler.interpret(after, x=np.array([np.inf, 2.0]))["out"]
    assert np.isnan(out[0]) and out[1] == 0.0


def test_mul_zero_fires_for_integers_and_bounded_products():
    g = compiler.parse_graph(text("graph g(n: i64[2], x: f64[2]) {",
                                  [C("zi", 0, "i64"), "a: i64[2] = mul(n, zi)",
                                   "s: f64[2] = tanh(x)", "t: f64[2] = sigmoid(x)",
                                   "u: f64[2] = mul(s, t)", C("z", 0.0), "b: f64[2] = mul(z, u)",
                                   "e: f64[2] = exp(x)", "c: f64[2] = mul(e, z)"],
                                  "a=a, b=b, c=c"))
    after = optimize(g, ["simplify", "dce"])
    prods = {n.out.name: n.op for n in after.nodes}
    assert prods["a"] == "const" and prods["b"] == "const"
    assert prods["c"] == "mul"        # exp(x) overflows to inf: kept


def test_exp_log_keeps_operands_of_unknown_sign():
    """exp(log x) is nan for x < 0, so it stays unless x ≥ 0 by construction."""
    g = compiler.parse_graph(text("graph g(x: f64[2]) {", ["t0: f64[2] = log(x)",
                                                          "y: f64[2] = exp(t0)"], "out=y"))
    after = optimize(g, ["simplify", "dce"])
    assert [n.op for n in after.nodes] == ["log", "exp"]
    assert np.isnan(compiler.interpret(after, x=np.array([-1.0, 2.0]))["out"][0])


def test_add_zero_changes_only_the_sign_of_zero():
    g = compiler.parse_graph(text("graph g(x: f64[2]) {", [C("zero", 0.0), "y: f64[2] = add(x, zero)"],
                                  "out=y"))
    after = optimize(g, ["simplify", "dce"])
    x = np.array([-0.0, np.nan])
    a, b = compiler.interpret(g, x=x)["out"], compiler.interpret(after, x=x)["out"]
    assert a[0] == b[0] and np.isnan(a[1]) and np.isnan(b[1])


def test_mul_one_keeps_inf_and_nan():
    g = compiler.parse_graph(text("graph g(x: f64[3]) {", [C("one", 1.0), "y: f64[3] = mul(one, x)"],
                                  "out=y"))
    after = optimize(g, ["simplify", "dce"])
    assert after.nodes == []
    x = np.array([np.inf, -np.inf, np.nan])
    np.testing.assert_array_equal(compiler.interpret(after, x=x)["out"],
                                  compiler.interpret(g, x=x)["out"])


def test_rules_keep_dtype_f32():
    g = compiler.parse_graph(text("graph g(x: f32[3]) {", [C("one", 1.0, "f32"),
                                                          C("zero", 0.0, "f32"),
                                                          "a: f32[3] = mul(x, one)",
                                                          "y: f32[3] = add(a, zero)"], "out=y"))
    after = optimize(g, ["simplify", "dce"])
    assert after.outputs["out"].type == g.outputs["out"].type and after.nodes == []


def test_rules_keep_names_the_model_gave():
    """A named −y (`data_loss = -mean(...)`) is not absorbed into its reader; a generated
    temporary that a rule keeps takes the replaced node's real name."""
    g = compiler.parse_graph(text("graph g(x: f64[3], r: f64[3]) {",
                                  ["data_loss: f64[3] = neg(x)", "loss: f64[3] = add(data_loss, r)"],
                                  "out=loss"))
    assert str(optimize(g, ["simplify", "dce"])) == str(g)
