"""Selected-zero safety as a pass (compiler/passes/selected_zeros.py), not inside the gate rules:

* the pass is Graph -> Graph: its input is not mutated, its output verifies, and it is
  idempotent;
* every gate rule of a `zero_safe` op is a pure function of its inputs: it builds the same nodes
  whether or not the upstream gradient comes from a selecting gate (the old rules read the
  builder's graph and added a guard there);
* every selecting op (the `selects` trait) x every zero-safe op (the `zero_safe` trait), from the
  op table, so a new op is covered by being registered: loss = Σ c·S(Z(u), ...) has a finite
  gradient equal to central finite differences;
* where(x > 0, Z(x), 0) at a point where Z's derivative is infinite or NaN has gradient 0 there.
"""
import numpy as np
import pytest

import compiler
from compiler import interpret
from compiler.autodiff import reverse_mode
from compiler.builder import Builder, Var
from compiler.ir import Graph, TensorType
from compiler.ops import OPS
from compiler.passes.selected_zeros import guard_selected_zeros
from frontends import dsl
from graphs import OP_SAMPLES, assert_close_grad, case_attrs, case_types, numeric_grad

SELECTING = sorted(op for op, r in OPS.items()      # with a gradient (comparisons have none)
                   if r.selects and op in OP_SAMPLES and any(p is not None for p in r.gate))
ZERO_SAFE = sorted(op for op, r in OPS.items() if r.zero_safe)


def format_graph(g):
    return str([n.key() for n in g.nodes]) + str({k: v.name for k, v in g.outputs.items()})


def _model(x: dsl.f64[4], w: dsl.f64[4]):
    return dsl.sum(dsl.where(x > 0, dsl.sqrt(x), 0) * dsl.exp(dsl.relu(w)))


def test_the_pass_is_graph_to_graph_and_idempotent():
    g = dsl.trace(_model)
    raw, sites, first = reverse_mode(g)
    before = format_graph(raw)
    out = guard_selected_zeros(raw, sites, first)
    assert format_graph(raw) == before                  # input not mutated
    compiler.verify(out)
    assert len(out.nodes) > len(raw.nodes)               # the sqrt site is guarded
    assert format_graph(guard_selected_zeros(out, sites, first)) == format_graph(out)
    assert format_graph(compiler.grad(g)) == format_graph(out)


def test_no_selecting_gate_no_guard():
    def f(x: dsl.f64[3]):
        return dsl.sum(dsl.sqrt(x) * dsl.log(x))
    raw, sites, first = reverse_mode(dsl.trace(f))
    assert sites and guard_selected_zeros(raw, sites, first) is raw


@pytest.mark.parametrize("op", ZERO_SAFE)
def test_zero_safe_gate_rules_do_not_read_the_graph(op):
    sample = OP_SAMPLES[op]
    case = sample.cases[0]
    types, attrs = case_types(case, "f64"), case_attrs(case, "f64")

    def built(selecting: bool) -> list:
        g = Graph("probe")
        b = Builder(g)
        ins = [b.add_input(f"x{k}", t) for k, t in enumerate(types)]
        out = b.emit(op, ins, **attrs)
        b.rule = "a gate that selects"        # G made the way the old memo looked for it
        g0 = b.add_input("g0", out.value.type)
        gv = B_where(b, g0) if selecting else g0
        counts = []
        for pair in OPS[op].gate:
            if pair is None:
                continue
            before = len(g.nodes)
            pair[1](gv, out, *ins, **attrs) if "alpha" not in attrs else \
                pair[1](gv, out, *ins, alpha=attrs["alpha"])
            counts.append([n.op for n in g.nodes[before:]])
        return counts
    assert built(True) == built(False)


def B_where(b, g0):
    from compiler import builder as B
    return B.where(g0 > 0, g0, 0)


def _combo_graph(s_op, z_op):
    """loss = Σ c·S(Z(u, ...), rest...) with S's first sample case."""
    case = OP_SAMPLES[s_op].cases[0]
    types = case_types(case, "f64")
    g = Graph(f"{s_op}_of_{z_op}")
    b = Builder(g)
    first = next(k for k, t in enumerate(types) if t.is_float)
    n_z = sum(p is not None for p in OPS[z_op].gate) if z_op not in ("mul", "div", "pow") else 2
    us = [b.add_input(f"u{k}", types[first]) for k in range(n_z)]
    z_attrs = case_attrs(OP_SAMPLES[z_op].cases[0], "f64") if OP_SAMPLES.get(z_op) else {}
    z = b.emit(z_op, us, **z_attrs)
    ins = [z if k == first else b.add_input(f"x{k}", t) for k, t in enumerate(types)]
    out = b.emit(s_op, ins, **case_attrs(case, "f64"))
    c = b.add_input("c", out.value.type)
    g.outputs["loss"] = b.emit("sum", [b.emit("mul", [out, c])], name="loss",
                               axes=tuple(range(out.ndim)), keepdims=False).value
    return g, case, types, first


@pytest.mark.parametrize("z_op", ZERO_SAFE)
@pytest.mark.parametrize("s_op", SELECTING)
def test_selecting_times_zero_safe_matches_finite_differences(s_op, z_op):
    rng = np.random.default_rng(0)
    g, case, types, first = _combo_graph(s_op, z_op)
    vals = OP_SAMPLES[s_op].gen(rng, types, case_attrs(case, "f64"))
    point = {f"x{k}": v for k, v in enumerate(vals) if k != first}
    for v in g.inputs:
        if v.name.startswith("u"):
            point[v.name] = rng.uniform(0.5, 2.0, v.shape)
        elif v.name == "c":
            point["c"] = rng.standard_normal(v.shape)
    wrt = [v.name for v in g.inputs if v.name.startswith("u")]
    dg = compiler.grad(g, wrt=wrt, of="loss")
    got = interpret(dg, point)
    for x in wrt:
        assert np.all(np.isfinite(got["d" + x])), (s_op, z_op, x)
        assert_close_grad(got["d" + x], numeric_grad(g, point, x, "loss"), f"{s_op}∘{z_op} d{x}",
                          rel=1e-5)


SINGULAR = {"sqrt": 0.0, "log": 0.0, "pow": 0.0}     # Z'(x) is inf or NaN at this x


@pytest.mark.parametrize("z_op", sorted(SINGULAR))
@pytest.mark.parametrize("backend", [None, "numpy", "llvm"])
def test_inactive_branch_at_a_singular_point_has_gradient_zero(z_op, backend):
    g = Graph("singular")
    b = Builder(g)
    x = b.add_input("x", TensorType("f64", (3,)))
    z = b.emit(z_op, [x, b.const(0.5, "f64")] if z_op == "pow" else [x])
    from compiler import builder as B
    g.outputs["loss"] = B.sum(B.where(x > 0, z, 0)).value
    dg = compiler.grad(g, wrt=["x"], of="loss")
    pt = {"x": np.array([SINGULAR[z_op], -1.0, 4.0])}
    got = (interpret(dg, pt) if backend is None else compiler.compile(dg, backend=backend)(**pt))
    dx = np.asarray(got["dx"])
    assert dx[0] == 0.0 and dx[1] == 0.0 and np.isfinite(dx[2]) and dx[2] > 0
