"""The op table is complete: every primitive has an entry in every registry, its gate rule has
one entry per input, and it has a sample in tests/graphs.py (so the parametrized op tests in
test_op_gradients.py cover it).  Each sample's shape rule agrees with the reference evaluation
(an independent NumPy computation of the output's shape and dtype)."""
import inspect

import numpy as np
import pytest

import compiler
from compiler.ir import NUMPY_DTYPE
from compiler.ops import EVAL_RULES, GATE_RULES, REGISTRIES, SHAPE_RULES
from graphs import OP_SAMPLES, all_cases, case_attrs, case_types, op_graph, op_inputs

OPS = list(SHAPE_RULES)


@pytest.mark.parametrize("op", OPS)
def test_every_registry_has_the_op(op):
    missing = [what for what, table in REGISTRIES.items() if op not in table]
    assert not missing, f"op {op!r} lacks: {', '.join(missing)}"


def test_no_registry_has_an_op_without_a_shape_rule():
    for what, table in REGISTRIES.items():
        extra = set(table) - set(SHAPE_RULES)
        assert not extra, f"{what} registered for unknown ops {sorted(extra)}"


@pytest.mark.parametrize("op", OPS)
def test_op_has_a_sample(op):
    """A new op must add a sample to tests/graphs.py OP_SAMPLES (input types, attrs, values)."""
    assert op in OP_SAMPLES, (f"op {op!r} has no sample in tests/graphs.py OP_SAMPLES; add one "
                              "so the per-op gradient, SymPy and backend tests cover it")
    assert OP_SAMPLES[op].cases


def test_samples_are_for_real_ops():
    assert not set(OP_SAMPLES) - set(SHAPE_RULES)


@pytest.mark.parametrize("op", OPS)
def test_gate_rule_has_one_entry_per_input(op):
    if op not in OP_SAMPLES:
        pytest.skip("no sample (test_op_has_a_sample fails)")
    rules = GATE_RULES[op]
    for case in OP_SAMPLES[op].cases:
        assert len(rules) == len(case.types), (f"{op}: {len(rules)} gate rule entries for "
                                               f"{len(case.types)} inputs")
    for entry in rules:
        if entry is None:
            continue
        text, fn = entry
        assert isinstance(text, str) and text.strip(), f"{op}: gate rule without its text"
        params = list(inspect.signature(fn).parameters.values())
        positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        assert len(positional) >= 2 + len(rules) or any(p.kind is p.VAR_POSITIONAL for p in params), \
            f"{op}: gate rule fn must take (g, out, *inputs, **attrs)"


@pytest.mark.parametrize("op,case", all_cases(), ids=[f"{o}-{c.label}" for o, c in all_cases()])
def test_shape_rule_matches_reference_evaluation(op, case, rng):
    """The shape rule's type equals the shape and dtype NumPy gives for the reference rule."""
    for dtype in ("f64", "f32"):
        types = case_types(case, dtype)
        attrs = case_attrs(case, dtype)
        declared = SHAPE_RULES[op](types, **attrs)
        g = op_graph(op, case, dtype, weighted=False)
        vals = op_inputs(op, case, g, rng, dtype)
        args = [vals["x0"]] * len(types) if case.same else [vals[f"x{k}"] for k in range(len(types))]
        got = np.asarray(EVAL_RULES[op](*args, **attrs))
        assert got.shape == declared.shape, f"{op}: shape rule {declared}, NumPy gives {got.shape}"
        assert got.dtype == np.dtype(NUMPY_DTYPE[declared.dtype]), \
            f"{op}: shape rule {declared}, NumPy gives {got.dtype}"
        compiler.verify(g)


@pytest.mark.parametrize("op", OPS)
def test_sample_arity_matches_reference_evaluation(op):
    """The sample's input count equals what the reference evaluation takes (a ufunc's `nin`, or
    a Python function's required positional parameters that are not attrs)."""
    if op not in OP_SAMPLES:
        pytest.skip("no sample (test_op_has_a_sample fails)")
    fn = EVAL_RULES[op]
    for case in OP_SAMPLES[op].cases:
        if isinstance(fn, np.ufunc):
            arity = fn.nin
        elif inspect.isfunction(fn):
            arity = len([p for p in inspect.signature(fn).parameters.values()
                         if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
                         and p.default is p.empty and p.name not in case.attrs])
        else:
            pytest.skip(f"{op}: reference evaluation {fn!r} has no readable signature")
        assert arity == len(case.types), f"{op} {case.label}: {len(case.types)} inputs, " \
                                         f"reference evaluation takes {arity}"
