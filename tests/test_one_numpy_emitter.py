"""One NumPy emitter (issue 16.2): `emit_numpy(graph, plan=...)` writes the memory-planned code
too, and what it writes into a buffer comes from the op record's `out=` form (`OPS[op].into`),
never from op names in the emitter.  Oracles: the interpreter (compiler.interpret), and the
text of the plain code."""
from __future__ import annotations

import ast
import dataclasses
import pathlib

import numpy as np
import pytest

import compiler
from compiler.builder import Builder
from compiler.codegen.forms import Into, into_call
from compiler.codegen.numpy_emit import emit_numpy
from compiler.ir import NUMPY_DTYPE, Graph, TensorType
from compiler.ops import OPS, declare
from compiler.passes.memory import plan_memory

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _model() -> Graph:
    """Every kind of `out=` form: ufuncs, relu, matmul with a transpose flag, the reductions,
    a where that is not a relu's gate, a where against zero, a cast."""
    g = Graph("forms")
    b = Builder(g)
    x = b.add_input("x", TensorType("f64", (5, 4)))
    w = b.add_input("w", TensorType("f64", (3, 4)))
    h = b.emit("matmul", [x, w], transpose_b=True)                # (5, 3)
    r = b.emit("relu", [h * 2.0 - 0.5])
    c = h > 0.25
    sel = b.emit("where", [c, r, b.emit("exp", [h])])            # else: an array
    gate = b.emit("where", [c, sel, b.const(0.0, "f64")])
    f32 = b.emit("cast", [gate], dtype="f32")
    g.outputs["s"] = b.emit("sum", [sel], axes=(0,), keepdims=True).value
    g.outputs["m"] = b.emit("mean", [gate], axes=(1,), keepdims=False).value
    g.outputs["mx"] = b.emit("max", [r], axes=(0,), keepdims=False).value
    g.outputs["c"] = f32.value
    return g


def _inputs(rng) -> dict:
    return {"x": rng.normal(size=(5, 4)), "w": rng.normal(size=(3, 4))}


def _run(source: str, graph: Graph, plan, inputs: dict) -> dict:
    namespace: dict = {}
    exec(compile(source, "<test>", "exec"), namespace)
    fn = namespace[namespace.get("__all__", [graph.name])[0]]
    bufs = tuple(np.empty(s, NUMPY_DTYPE[d]) for d, s in plan.buffers)
    return fn(*[inputs[v.name] for v in graph.inputs], _buf=bufs)


def _check(graph, source, plan, rng):
    for _ in range(2):                  # twice: the buffers are reused
        ins = _inputs(rng)
        want = compiler.interpret(graph, ins)
        got = _run(source, graph, plan, ins)
        assert set(got) == set(want)
        for k in want:
            np.testing.assert_allclose(got[k], want[k], rtol=1e-12, atol=1e-14, err_msg=k)


def test_planned_code_comes_from_the_one_emitter(rng):
    g = _model()
    plan = plan_memory(g, min_elements=1)
    source = emit_numpy(g, plan=plan)
    assert "def forms(x, w, _buf=()):" in source and "(memory-planned)" in source
    for text in ("np.matmul(x, w.T, out=_b", "np.maximum(", ", 0.0, out=_b", ".sum(axis=0, "
                 "keepdims=True, out=_b", ".mean(axis=1, out=_b", ".max(axis=0, out=_b",
                 "where_or_zero(", "casting='unsafe')", "np.copyto(_b"):
        assert text in source, text
    _check(g, source, plan, rng)
    # without a plan: the plain code
    plain = emit_numpy(g)
    assert "_buf" not in plain and "out=_b" not in plain and "def forms(x, w):" in plain


def test_the_out_form_is_the_records(monkeypatch, rng):
    """Replacing relu's `into` changes the planned code: the emitter knows no op by name."""
    g = _model()
    plan = plan_memory(g, min_elements=1)
    monkeypatch.setitem(OPS, "relu", dataclasses.replace(OPS["relu"],
                                                         into=into_call("np.fmax", "0.0")))
    source = emit_numpy(g, plan=plan)
    assert "np.fmax(" in source and "np.maximum(" not in source
    _check(g, source, plan, rng)


def test_in_place_operands_come_from_the_out_form(monkeypatch, rng):
    """`into.overwrites` decides which operand's buffer memory planning may reuse: where may
    overwrite its else-operand (the buffer already holds it: no copy), and with the form
    saying "none" it gets a buffer of its own and copies the else-operand in."""
    g = _model()
    where_nodes = [n.out.name for n in g.nodes if n.op == "where"]
    plan = plan_memory(g, min_elements=1)
    assert where_nodes[0] in plan.inplace        # over exp(h), which dies there
    source = emit_numpy(g, plan=plan)
    assert "[in place of" in source
    _check(g, source, plan, rng)
    copies = source.count("np.copyto(_b")
    rec = OPS["where"]
    monkeypatch.setitem(OPS, "where", dataclasses.replace(
        rec, into=Into(rec.into.render, (), rec.into.helpers_of)))
    plan = plan_memory(g, min_elements=1)
    assert not set(where_nodes) & set(plan.inplace)
    source = emit_numpy(g, plan=plan)
    assert source.count("np.copyto(_b") == copies + 1      # the else-operand copied in
    _check(g, source, plan, rng)


def test_a_record_is_plannable_exactly_when_it_has_an_out_form():
    base = {f: getattr(OPS["exp"], f) for f in ("shape", "eval", "gate", "sympy", "numpy")}
    with pytest.raises(ValueError, match="op fake_exp: plannable"):
        declare("fake_exp", **base, plannable=True)
    with pytest.raises(ValueError, match="op fake_exp: plannable"):
        declare("fake_exp", **base, into=into_call("np.exp"))
    assert "fake_exp" not in OPS
    assert OPS["exp"].into is not None and OPS["exp"].plannable    # from its ufunc


def test_the_emitter_names_no_op():
    """No op-name string is compared in the NumPy emitter modules (the op-name if-chain of
    the former planned emitter is gone)."""
    for path in sorted((ROOT / "compiler" / "codegen").glob("numpy_*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Compare):
                names = [c.value for c in [node.left, *node.comparators]
                         if isinstance(c, ast.Constant) and isinstance(c.value, str)]
                assert not set(names) & set(OPS), (path.name, node.lineno, names)
