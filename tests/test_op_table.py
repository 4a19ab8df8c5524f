"""The op table is complete and consistent: every primitive is one record `OPS[name]` with
every rule set (shape, eval, gate, sympy, numpy, llvm), its gate rule has one entry per input,
and it has a sample in tests/graphs.py (so the parametrized op tests in test_op_gradients.py
cover it).  Each sample's shape rule agrees with the reference evaluation (an independent NumPy
computation of the output's shape and dtype).  The traits are checked against the op's own
reference evaluation on its samples (below): a view's result shares its operand's memory, an
elementwise op evaluates element by element and has a scalar LLVM lowering, a ufunc form
computes what the reference does, a label operand is i64 without a gate rule, ..."""
import dataclasses
import inspect

import numpy as np
import pytest

import compiler
from compiler.ir import NUMPY_DTYPE
from compiler.ops import OPS as RECORDS
from compiler.ops import RULES, TRAITS, Each, OpRecord
from graphs import OP_SAMPLES, all_cases, case_attrs, case_types, op_graph, op_inputs

OPS = list(RECORDS)


@pytest.mark.parametrize("op", OPS)
def test_every_record_has_every_rule(op):
    rec = RECORDS[op]
    assert isinstance(rec, OpRecord) and rec.name == op
    missing = [f for f in RULES if getattr(rec, f) is None]
    assert not missing, f"op {op!r} lacks: {', '.join(missing)}"
    for f in ("shape", "eval", "sympy"):
        assert callable(getattr(rec, f)), f"{op}: {f} is not callable"
    assert callable(getattr(rec.llvm, "lower", None)), f"{op}: its LLVM lowering has no lower()"
    assert rec.label is None or callable(rec.label)


def test_records_are_frozen_and_only_declared_fields():
    rec = RECORDS["add"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        rec.view = True
    with pytest.raises(TypeError):
        rec.attrs["alpha"] = 1      # read-only, so no caller grows an op's attributes
    names = {f.name for f in dataclasses.fields(OpRecord)}
    assert set(RULES) | set(TRAITS) | {"name", "attrs", "label"} == names


def test_a_record_is_declared_once():
    from compiler.ops.record import declare
    with pytest.raises(ValueError, match="declared twice"):
        declare("add", **{f: getattr(RECORDS["add"], f) for f in RULES})


@pytest.mark.parametrize("op", OPS)
def test_op_has_a_sample(op):
    """A new op must add a sample to tests/graphs.py OP_SAMPLES (input types, attrs, values)."""
    assert op in OP_SAMPLES, (f"op {op!r} has no sample in tests/graphs.py OP_SAMPLES; add one "
                              "so the per-op gradient, SymPy and backend tests cover it")
    assert OP_SAMPLES[op].cases


def test_samples_are_for_real_ops():
    assert not set(OP_SAMPLES) - set(RECORDS)


@pytest.mark.parametrize("op", OPS)
def test_gate_rule_has_one_entry_per_input(op):
    if op not in OP_SAMPLES:
        pytest.skip("no sample (test_op_has_a_sample fails)")
    rules = RECORDS[op].gate
    variadic = isinstance(rules, Each)      # one rule for every input position (concatenate)
    for case in OP_SAMPLES[op].cases:
        assert len(RECORDS[op].gate_rules(len(case.types))) == len(case.types)
        assert variadic or len(rules) == len(case.types), (f"{op}: {len(rules)} gate rule "
                                                           f"entries for {len(case.types)} inputs")
    for entry in rules:
        if entry is None:
            continue
        text, fn = entry
        assert isinstance(text, str) and text.strip(), f"{op}: gate rule without its text"
        params = list(inspect.signature(fn).parameters.values())
        positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        assert len(positional) >= 2 + variadic + len(rules) or any(
            p.kind is p.VAR_POSITIONAL for p in params), \
            f"{op}: gate rule fn must take (g, out, *inputs, **attrs)"


@pytest.mark.parametrize("op,case", all_cases(), ids=[f"{o}-{c.label}" for o, c in all_cases()])
def test_shape_rule_matches_reference_evaluation(op, case, rng):
    """The shape rule's type equals the shape and dtype NumPy gives for the reference rule."""
    for dtype in ("f64", "f32"):
        types = case_types(case, dtype)
        attrs = case_attrs(case, dtype)
        declared = RECORDS[op].shape(types, **attrs)
        g = op_graph(op, case, dtype, weighted=False)
        vals = op_inputs(op, case, g, rng, dtype)
        args = [vals["x0"]] * len(types) if case.same else [vals[f"x{k}"] for k in range(len(types))]
        got = np.asarray(RECORDS[op].eval(*args, **attrs))
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
    fn = RECORDS[op].eval
    for case in OP_SAMPLES[op].cases:
        if isinstance(fn, np.ufunc):
            arity = fn.nin
        elif inspect.isfunction(fn) and any(p.kind is p.VAR_POSITIONAL
                                            for p in inspect.signature(fn).parameters.values()):
            assert isinstance(RECORDS[op].gate, Each), f"{op}: a variadic eval, a fixed gate"
            continue
        elif inspect.isfunction(fn):
            arity = len([p for p in inspect.signature(fn).parameters.values()
                         if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
                         and p.default is p.empty and p.name not in case.attrs])
        else:
            pytest.skip(f"{op}: reference evaluation {fn!r} has no readable signature")
        assert arity == len(case.types), f"{op} {case.label}: {len(case.types)} inputs, " \
                                         f"reference evaluation takes {arity}"


# ---- the traits, against the op's own reference evaluation on its samples -------------------
def _runs(op, dtype="f64", scale=1.0):
    """(case, input types, attrs, arguments, reference result, the op's node) per sample."""
    rng = np.random.default_rng(7)
    for case in OP_SAMPLES[op].cases:
        types, attrs = case_types(case, dtype), case_attrs(case, dtype)
        g = op_graph(op, case, dtype, weighted=False)
        vals = op_inputs(op, case, g, rng, dtype)
        args = [vals["x0"]] * len(types) if case.same else [vals[f"x{k}"] for k in range(len(types))]
        args = [np.array(a) for a in args]      # 0-d arrays stay arrays (a view needs one)
        for a in args:
            if a.dtype.kind == "f":
                a *= scale
        node = next(n for n in g.nodes if n.op == op)
        yield case, types, attrs, args, RECORDS[op].eval(*args, **attrs), node


SAMPLED = [op for op in OPS if op in OP_SAMPLES]


def _same(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and bool(np.all((a == b) | ((a != a) & (b != b))))


@pytest.mark.parametrize("op", SAMPLED)
def test_view_trait_is_shared_memory(op):
    """A view op's result may share operand 0's memory (it does on some sample; memory planning
    gives it no buffer, a returned view is copied); any other op's result owns its memory."""
    shares = {case.label: isinstance(out, np.ndarray) and np.shares_memory(out, args[0])
              for case, types, attrs, args, out, _ in _runs(op) if args}
    if RECORDS[op].view:
        assert any(shares.values()), f"{op}: marked view, but no sample shares memory: {shares}"
    else:
        assert not any(shares.values()), f"{op}: shares its operand's memory, not a view: {shares}"


@pytest.mark.parametrize("op", SAMPLED)
def test_elementwise_trait_is_element_by_element(op):
    """An elementwise op broadcasts its operands, each element of the result is the op on the
    operands' elements (what constant folding and the multiprecision check rely on), and its
    LLVM lowering is a scalar rule inside the emitter's loop."""
    rec = RECORDS[op]
    if not rec.elementwise:
        pytest.skip("not elementwise")
    assert callable(getattr(rec.llvm, "scalar", None)), f"{op}: no scalar LLVM lowering"
    for case, types, attrs, args, out, _ in _runs(op):
        shape = np.broadcast_shapes(*(a.shape for a in args))
        assert np.shape(out) == shape, f"{op} {case.label}"
        wide = np.broadcast_arrays(*args)
        for idx in np.ndindex(shape):
            one = rec.eval(*(w[idx] for w in wide), **attrs)
            assert _same(np.asarray(one), np.asarray(out)[idx]), f"{op} {case.label} at {idx}"


@pytest.mark.parametrize("op", SAMPLED)
def test_reduction_trait_reduces_the_axes(op):
    rec = RECORDS[op]
    if not rec.reduction:
        pytest.skip("not a reduction")
    assert set(rec.attrs) == {"axes", "keepdims"}
    for case, types, attrs, args, out, _ in _runs(op):
        want = np.sum(np.ones(args[0].shape), axis=attrs["axes"], keepdims=attrs["keepdims"]).shape
        assert np.shape(out) == want, f"{op} {case.label}"


@pytest.mark.parametrize("op", SAMPLED)
def test_ufunc_form_computes_the_reference(op):
    """The NumPy `out=` form the planned emitter writes computes exactly the reference result
    into a buffer of the result's dtype; an op whose reference is a ufunc declares it."""
    rec = RECORDS[op]
    if isinstance(rec.eval, np.ufunc) and rec.elementwise:
        assert rec.ufunc is not None and getattr(np, rec.ufunc[3:]) is rec.eval, op
    if rec.ufunc is None:
        return
    assert rec.ufunc.startswith("np.") and rec.plannable and not rec.view
    fn = getattr(np, rec.ufunc[3:])
    assert isinstance(fn, np.ufunc), f"{op}: {rec.ufunc} is not a NumPy ufunc"
    for case, types, attrs, args, out, _ in _runs(op):
        buf = np.empty(np.shape(out), dtype=np.asarray(out).dtype)
        with np.errstate(all="ignore"):
            fn(*args, out=buf)
        assert _same(buf, out), f"{op} {case.label}: {rec.ufunc}(..., out=) differs"


@pytest.mark.parametrize("op", SAMPLED)
def test_plannable_ops_own_their_result(op):
    rec = RECORDS[op]
    assert not (rec.plannable and rec.view), f"{op}: a view cannot be written into a buffer"


@pytest.mark.parametrize("op", SAMPLED)
def test_label_operand_is_i64_without_gate_rule(op):
    rec = RECORDS[op]
    for case, types, attrs, args, out, node in _runs(op):
        if rec.label is None:
            continue
        k, classes, *noun = rec.label(node)
        assert noun in ([], ["index"]), op
        assert node.inputs[k].dtype == "i64" and rec.gate[k] is None, op
        assert isinstance(classes, (int, np.integer)) and classes > 0, op
        assert args[k].max() < classes, f"{op}: the sample's labels exceed the op's {classes}"


@pytest.mark.parametrize("op", SAMPLED)
def test_attrs_agree_with_the_shape_rule(op):
    """The declared attributes are exactly the shape rule's keywords (required where the rule
    has no default), and every sample's attributes are declared ones."""
    rec = RECORDS[op]
    params = list(inspect.signature(rec.shape).parameters.values())[1:]
    if not any(p.kind == p.VAR_KEYWORD for p in params):
        want = {p.name: p.default is p.empty for p in params}
        assert {k: kind.required for k, kind in rec.attrs.items()} == want, op
    for case in OP_SAMPLES[op].cases:
        assert set(case.attrs) <= set(rec.attrs), f"{op}: sample attrs {case.attrs}"


@pytest.mark.parametrize("op", SAMPLED)
def test_selects_trait_covers_the_conditions(op):
    """A comparison (a bool result from numbers) makes a condition a gate may select with."""
    for case, types, attrs, args, out, _ in _runs(op):
        if np.asarray(out).dtype == bool and any(t.dtype != "bool" for t in types):
            assert RECORDS[op].selects, f"{op}: a comparison without the selects trait"


@pytest.mark.parametrize("op", SAMPLED)
@pytest.mark.parametrize("scale", [1.0, 1e3])
def test_value_traits_hold_on_the_samples(op, scale):
    """bounded: every element in [−1, 1]; nonneg: ≥ 0 (or nan); through: no element larger in
    magnitude than the largest operand element; for inputs scaled up to make a violation show."""
    rec = RECORDS[op]
    if not (rec.bounded or rec.nonneg or rec.through):
        pytest.skip("no value trait")
    for case, types, attrs, args, out, _ in _runs(op, scale=scale):
        o = np.asarray(out, dtype=float)
        o = o[o == o]
        if rec.bounded:
            assert np.all(np.abs(o) <= 1), f"{op} {case.label}: not bounded by 1"
        if rec.nonneg:
            assert np.all(o >= 0), f"{op} {case.label}: negative elements"
        if rec.through:
            top = max(float(np.max(np.abs(a), initial=0)) for a in args if a.dtype.kind == "f")
            assert np.all(np.abs(o) <= top), f"{op} {case.label}: grew an element"


@pytest.mark.parametrize("op", SAMPLED)
def test_ordered_trait_matches_operand_symmetry(op):
    """Operands get labelled edges in drawings unless swapping two same-typed operands leaves
    the result unchanged."""
    rec = RECORDS[op]
    for case, types, attrs, args, out, _ in _runs(op):
        if len(args) != 2 or types[0] != types[1] or case.same:
            continue
        swapped = rec.eval(args[1], args[0], **attrs)
        if not rec.ordered:
            assert _same(swapped, out), f"{op}: operand order matters; mark it ordered"


@pytest.mark.parametrize("op", SAMPLED)
def test_multilinear_trait_scales_exactly(op):
    """op(2ᵃ·A, 2ᵇ·B) = 2ᵃ⁺ᵇ·op(A, B) exactly (power-of-two scalings are exact in floating
    point), which the multiprecision check's exact-integer evaluation relies on."""
    rec = RECORDS[op]
    if not rec.multilinear:
        pytest.skip("not multilinear")
    for case, types, attrs, args, out, _ in _runs(op):
        if case.same:
            continue
        assert all(a.dtype.kind == "f" for a in args), f"{op}: multilinear in floats only"
        scaled = rec.eval(*(a * 2.0 ** (3 + k) for k, a in enumerate(args)), **attrs)
        want = np.asarray(out) * 2.0 ** sum(3 + k for k in range(len(args)))
        assert _same(scaled, want), f"{op} {case.label}"
        # additive in each operand, and integers in give integers out (a sum of products)
        rng = np.random.default_rng(1)
        for k in range(len(args)):
            r = rng.standard_normal(args[k].shape)
            plus = [a + r if j == k else a for j, a in enumerate(args)]
            only = [r if j == k else a for j, a in enumerate(args)]
            np.testing.assert_allclose(rec.eval(*plus, **attrs),
                                       np.asarray(out) + rec.eval(*only, **attrs), atol=1e-12)
        ints = rec.eval(*(np.round(a * 8) for a in args), **attrs)
        assert np.all(np.asarray(ints) == np.round(ints)), f"{op}: integers give non-integers"


def test_an_unknown_op_is_a_clear_error_not_a_key_error():
    """Code that reads a graph before `verify` (drawing it, the broadcast guard, the
    interpreter's label checks) asks the records without assuming the op is declared."""
    from compiler import debug, dot
    from compiler.ir import Graph, Node, TensorType, Value
    x, y = Value("x", TensorType("f64", (2,))), Value("y", TensorType("f64", (2,)))
    g = Graph("g", [x], [Node("bogus", (x, x), {}, y)], {"out": y})
    assert '"x" -> "y"' in dot.to_dot(g)
    assert debug.suspicious_broadcast(g.nodes[0]) is False
    with pytest.raises(compiler.GradcError, match="bogus"):
        compiler.interpret(g, x=np.ones(2))
    with pytest.raises(compiler.UnsupportedError, match="unknown op 'bogus'"):
        compiler.compile(g)


@pytest.mark.parametrize("op", SAMPLED)
def test_literal_trait_is_the_attributes(op):
    """A literal op takes no inputs and its value is np.full(shape, value) in its dtype, all
    three attributes (constant folding, the rewriter, memory planning and drawings read the
    value from them); an op whose samples take no inputs and carry a `value` is marked literal."""
    rec = RECORDS[op]
    for case, types, attrs, args, out, _ in _runs(op):
        if rec.literal:
            assert not args, f"{op}: marked literal, but takes {len(args)} inputs"
            want = np.full(attrs["shape"], attrs["value"], dtype=NUMPY_DTYPE[attrs["dtype"]])
            assert _same(out, want) and np.asarray(out).dtype == want.dtype, \
                f"{op} {case.label}: marked literal, but eval gives {out!r}, not {want!r}"
        else:
            assert args or "value" not in attrs, \
                f"{op}: no inputs and a value in its attributes: mark it literal"
