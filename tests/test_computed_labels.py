"""Labels computed inside the graph (issue 14, part 4): every label operand of pick, onehot and
the two losses is range-checked wherever it comes from (an argument, or a value the graph
computes: y - 1, y + 1, 2·y, a label derived from floats), with the same LabelError, and the
same message (which value, which op, which row, the bad label, the range) on the NumPy backend
(planned and plain), the LLVM backend (checked natively, before any output is written) and
the reference interpreter.  In-range computed labels give the hand-written NumPy numbers."""
from __future__ import annotations

import re

import numpy as np
import pytest

import compiler
from frontends import dsl
from frontends.dsl import f64, i64

BACKENDS = ["numpy", "numpy-plain", "llvm", "llvm-plain", "interpret"]
# backends that run the same graph: the pass pipeline may rewrite a cross-entropy into
# -mean(pick(log_softmax(s), labels)), and then the error names the pick op that reads them
SAME_GRAPH = [["numpy", "llvm"], ["numpy-plain", "llvm-plain", "interpret"]]
N, C = 4, 3


def run(graph, backend, **kw):
    if backend == "interpret":
        return compiler.interpret(graph, **kw)
    if backend.endswith("-plain"):      # passes=[]: the graph as traced (and no memory plan)
        return compiler.compile(graph, backend=backend[:-6], passes=[])(**kw)
    return compiler.compile(graph, backend=backend)(**kw)


def _rows(s, lab):
    return s[np.arange(len(lab)), lab]


def _xent(s, lab):
    z = s - s.max(1, keepdims=True)
    return -np.mean(_rows(z, lab) - np.log(np.exp(z).sum(1)))


def _svm(s, lab):
    m = np.maximum(0, s - _rows(s, lab)[:, None] + 1.0)
    m[np.arange(len(lab)), lab] = 0
    return m.sum() / len(lab)


# (name, model, label computed from y (and s) as NumPy writes it, hand-written oracle of the loss)
def _from_floats(s, y):          # a label that depends on float data: y + [s₀ > 0]
    return y + (s[:, 0] > 0).astype(np.int64)


MODELS = {
    "pick(y-1)": (lambda s, y: dsl.sum(dsl.pick(s, y - 1)), lambda s, y: y - 1,
                  lambda s, lab: _rows(s, lab).sum()),
    "pick(y+1)": (lambda s, y: dsl.sum(dsl.pick(s, y + 1)), lambda s, y: y + 1,
                  lambda s, lab: _rows(s, lab).sum()),
    "pick(2y)": (lambda s, y: dsl.sum(dsl.pick(s, y * 2)), lambda s, y: y * 2,
                 lambda s, lab: _rows(s, lab).sum()),
    "onehot(y+1)": (lambda s, y: dsl.sum(dsl.onehot(y + 1, C) * s), lambda s, y: y + 1,
                    lambda s, lab: (np.eye(C)[lab] * s).sum()),
    "onehot(y-1)": (lambda s, y: dsl.sum(dsl.onehot(y - 1, C) * s), lambda s, y: y - 1,
                    lambda s, lab: (np.eye(C)[lab] * s).sum()),
    "xent(y+1)": (lambda s, y: dsl.softmax_cross_entropy(s, y + 1), lambda s, y: y + 1, _xent),
    "xent(y-1)": (lambda s, y: dsl.softmax_cross_entropy(s, y - 1), lambda s, y: y - 1, _xent),
    "svm(y-1)": (lambda s, y: dsl.svm_loss(s, y - 1), lambda s, y: y - 1, _svm),
    "svm(2y)": (lambda s, y: dsl.svm_loss(s, y * 2), lambda s, y: y * 2, _svm),
    "xent(float-derived)": (
        lambda s, y: dsl.softmax_cross_entropy(s, y + dsl.cast(s[:, 0] > 0.0, "i64")),
        _from_floats, _xent),
}


def _graph(name, grad=False):
    g = dsl.trace(MODELS[name][0], s=f64[N, C], y=i64[N])
    return compiler.grad(g, wrt=["s"]) if grad else g


def _good(name, rng):
    """(s, y) whose computed label lies in [0, C) in every row."""
    label = MODELS[name][1]
    while True:
        s, y = rng.standard_normal((N, C)), rng.integers(-1, C + 1, N)
        lab = label(s, y)
        if ((lab >= 0) & (lab < C)).all():
            return s, y


def _bad(name, rng, low: bool):
    """(s, y, row, bad value): every y is an ordinary label in [0, C), but the computed label
    leaves [0, C) (below 0 when `low`, else at or above C) in exactly one row."""
    label = MODELS[name][1]
    for _ in range(10000):
        s, y = rng.standard_normal((N, C)), rng.integers(0, C, N)
        lab = label(s, y)
        out = (lab < 0) if low else (lab >= C)
        if out.sum() == 1 and not ((lab < 0) if not low else (lab >= C)).any():
            row = int(np.argmax(out))
            return s, y, row, int(lab[row])
    return None


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", sorted(MODELS))
def test_in_range_computed_labels_match_numpy(name, backend):
    rng = np.random.default_rng(1)
    s, y = _good(name, rng)
    want = MODELS[name][2](s, MODELS[name][1](s, y))
    got = run(_graph(name), backend, s=s, y=y)["out"]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("low", [True, False], ids=["low", "high"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_out_of_range_computed_label_is_one_error_everywhere(name, low):
    """The same LabelError and the same message on every backend, naming the computed value,
    the op reading it, the row, the bad label and the range [0, C)."""
    found = _bad(name, np.random.default_rng(7), low)
    if found is None:
        pytest.skip("this label cannot leave the range on that side")   # y*2 ≥ 0 for y ≥ 0
    s, y, row, value = found
    g = _graph(name)
    messages = {}
    for backend in BACKENDS:
        with pytest.raises(compiler.LabelError) as info:
            run(g, backend, s=s, y=y)
        assert isinstance(info.value, ValueError) and isinstance(info.value, compiler.GradcError)
        messages[backend] = str(info.value)
    for group in SAME_GRAPH:
        assert len({messages[b] for b in group}) == 1, messages
    op = next(n for n in g.nodes if n.op in ("pick", "onehot", "softmax_cross_entropy",
                                             "svm_loss")).op
    assert f"the {op} op" in messages["interpret"]
    lab = next(n for n in g.nodes if n.op in ("sub", "add", "mul") and n.out.dtype == "i64")
    for text in messages.values():
        assert re.fullmatch(rf"value '\w+' computed by (add|sub|mul): label {value} is outside "
                            rf"\[0, {C}\) at row {row} \(the (pick|{op}) op at "
                            rf"test_computed_labels\.py:\d+ has {C} classes\)", text), text
    assert f"value {lab.out.name!r} computed by {lab.op}" in messages["interpret"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["xent(y+1)", "svm(y-1)", "pick(y+1)", "onehot(y+1)"])
def test_gradient_graphs_check_computed_labels(name, backend):
    """The gradient reads the computed label again (onehot in the gate rules): in range, the
    gradient is the float64 finite difference; out of range, a LabelError."""
    g = _graph(name, grad=True)
    rng = np.random.default_rng(3)
    s, y = _good(name, rng)
    got = run(g, backend, s=s, y=y)["ds"]
    f = lambda s_: MODELS[name][2](s_, MODELS[name][1](s, y))      # noqa: E731
    want = np.zeros_like(s)
    for idx in np.ndindex(*s.shape):
        e = np.zeros_like(s)
        e[idx] = 1e-6
        want[idx] = (f(s + e) - f(s - e)) / 2e-6
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-8)
    for low in (True, False):
        found = _bad(name, rng, low)
        if found is not None:
            with pytest.raises(compiler.LabelError, match=f"label {found[3]} is outside"):
                run(g, backend, s=found[0], y=found[1])


@pytest.mark.parametrize("backend", BACKENDS)
def test_argument_labels_still_checked_with_the_same_message(backend):
    g = dsl.trace(lambda s, y: dsl.sum(dsl.pick(s, y)), s=f64[N, C], y=i64[N])
    g2 = dsl.trace(lambda s, y: dsl.softmax_cross_entropy(s, y) + dsl.sum(dsl.onehot(y, 5)),
                   s=f64[N, C], y=i64[N])
    s = np.ones((N, C))
    for graph, y, part in ((g, [0, 1, 0, 5], "argument 'y': label 5 is outside [0, 3) at row 3"),
                           (g2, [0, 1, -4, 6], "argument 'y': label -4 is outside [0, 3) at row "
                                               "2 (the softmax_cross_entropy op at ")):
        with pytest.raises(compiler.LabelError, match=re.escape(part)):
            run(graph, backend, s=s, y=np.array(y))


@pytest.mark.parametrize("backend", BACKENDS)
def test_onehot_of_a_matrix_of_computed_labels_names_the_index(backend):
    g = dsl.trace(lambda y: dsl.onehot(y - 1, 4), y=i64[2, 3])
    y = np.array([[1, 2, 3], [4, 5, 2]])
    with pytest.raises(compiler.LabelError, match=r"label 4 is outside \[0, 4\) at index "
                                                  r"\(1, 1\)"):
        run(g, backend, y=y)
    got = run(g, backend, y=np.array([[1, 2, 3], [4, 1, 2]]))["out"]
    np.testing.assert_array_equal(got, np.eye(4)[[[0, 1, 2], [3, 0, 1]]])


def test_llvm_checks_before_writing_outputs():
    """copy=False outputs are the kernel's buffers: a call refused for a computed label must
    leave the previous call's outputs as they were (the check runs natively, after only the
    values the labels depend on)."""
    g = compiler.grad(dsl.trace(lambda s, y: dsl.softmax_cross_entropy(s * 2.0, y + 1),
                                s=f64[N, C], y=i64[N]), wrt=["s"])
    fn = compiler.compile(g, backend="llvm")
    s, y = np.random.default_rng(0).standard_normal((N, C)), np.array([0, 1, 0, 1])
    out = fn(s=s, y=y, copy=False)
    keep = {k: np.array(v) for k, v in out.items()}
    with pytest.raises(compiler.LabelError, match="label 3 is outside"):
        fn(s=-s, y=np.array([0, 2, 0, 1]), copy=False)
    for k, v in out.items():
        np.testing.assert_array_equal(v, keep[k])
    np.testing.assert_allclose(fn(s=s, y=y)["ds"], keep["ds"], rtol=0)


@pytest.mark.parametrize("backend", ["numpy", "llvm"])
def test_train_step_refuses_a_computed_label_and_keeps_its_parameters(backend):
    def loss(W, X, y):
        return dsl.softmax_cross_entropy(X @ W, y - 1)
    rng = np.random.default_rng(5)
    W = rng.standard_normal((2, C))
    step = compiler.train_step(loss, params={"W": W}, inputs={"X": f64[N, 2], "y": i64[N]},
                               optimizer=compiler.optim.SGD(lr=0.1), backend=backend)
    X = rng.standard_normal((N, 2))
    step(X=X, y=np.array([1, 2, 3, 1]))
    before = np.array(step.params["W"])
    with pytest.raises(compiler.LabelError, match=r"label -1 is outside \[0, 3\) at row 2"):
        step(X=X, y=np.array([1, 2, 0, 1]))
    np.testing.assert_array_equal(step.params["W"], before)


def test_llvm_label_cone_with_a_sibling_loop_checks_before_the_other_output():
    """The labels count the positive scores of each row (a fused reduction over s); `twice`
    reads s too, and the emitter would compute both in one loop: it must not, so that `twice`
    is written only after the check.  Values vs the interpreter, and the error."""
    def model(s, y):
        lab = dsl.cast(dsl.sum(dsl.cast(s > 0.0, "f64") * 1.0, axis=1), "i64")
        return {"loss": dsl.softmax_cross_entropy(s * 3.0, lab), "twice": s * 2.0 + 1.0}
    g = dsl.trace(model, s=f64[4, 4], y=i64[4])
    fn = compiler.compile(g, backend="llvm")
    s = np.array([[1, -1, -1, -1], [1, 1, -1, -1], [-1, -1, -1, -1], [1, 1, 1, -1.]])
    want = compiler.interpret(g, s=s, y=np.zeros(4, np.int64))
    out = fn(s=s, y=np.zeros(4, np.int64), copy=False)
    np.testing.assert_allclose(out["loss"], want["loss"], rtol=1e-12)
    np.testing.assert_array_equal(out["twice"], 2 * s + 1)
    for backend in BACKENDS:
        with pytest.raises(compiler.LabelError, match=r"label 4 is outside \[0, 4\) at row 0"):
            run(g, backend, s=np.ones((4, 4)), y=np.zeros(4, np.int64))
    with pytest.raises(compiler.LabelError):
        fn(s=np.ones((4, 4)), y=np.zeros(4, np.int64), copy=False)
    np.testing.assert_array_equal(out["twice"], 2 * s + 1)


def test_extreme_computed_labels_and_the_exported_module():
    """2·2⁶² wraps to −2⁶³ in int64 (as NumPy computes it): refused everywhere with one
    message; the standalone exported module (numpy only) raises a ValueError named LabelError
    with that message too."""
    from compiler.export import export_module
    g = dsl.trace(lambda s, y: dsl.sum(dsl.pick(s, y * 2)), s=f64[2, C], y=i64[2])
    s, y = np.zeros((2, C)), np.array([0, 2 ** 62])
    texts = set()
    for backend in BACKENDS:
        with pytest.raises(compiler.LabelError) as info:
            run(g, backend, s=s, y=y)
        texts.add(str(info.value))
    assert len(texts) == 1 and f"label {-2 ** 63} is outside [0, 3) at row 1" in texts.pop()
    ns = {"__name__": "exported"}
    exec(compile(export_module(g, passes=[]), "exported.py", "exec"), ns)
    with pytest.raises(ValueError) as info:
        ns[g.name](s=s, y=y)
    assert type(info.value).__name__ == "LabelError" and str(info.value) == str(
        pytest.raises(compiler.LabelError, compiler.interpret, g, s=s, y=y).value)


@pytest.mark.parametrize("backend", BACKENDS)
def test_constant_labels_out_of_range_are_not_folded_away(backend):
    """onehot of a constant label is folded at compile time when in range; out of range it is
    left to the run-time check (np.eye(1)[-1] would fold to 1.0, np.eye(3)[5] raise IndexError)."""
    for label, depth in ((-1, 1), (5, 3)):
        g = dsl.trace(lambda y: dsl.sum(dsl.onehot(dsl.sum(y) * 0 + label, depth)), y=i64[2])
        with pytest.raises(compiler.LabelError, match=rf"label {label} is outside \[0, {depth}\) "
                                                      rf"\(the onehot op at .* has {depth} class"):
            run(g, backend, y=np.array([1, 2]))
    g = dsl.trace(lambda y: dsl.sum(dsl.onehot(dsl.sum(y) * 0 + 2, 3) * 5.0), y=i64[2])
    assert run(g, backend, y=np.array([1, 2]))["out"] == 5.0


def test_label_rules_name_an_integer_operand_without_a_gradient():
    """The op records' `label` rules (which every backend and the interpreter ask) point at an
    i64 operand that has no gate rule, with the class count of the op's own shape rule."""
    from compiler.ops import OPS
    g = dsl.trace(lambda s, y: dsl.sum(dsl.pick(s, y)) + dsl.softmax_cross_entropy(s, y)
                  + dsl.svm_loss(s, y) + dsl.sum(dsl.onehot(y, 7)), s=f64[N, C], y=i64[N])
    seen = {}
    for n in g.nodes:
        if OPS[n.op].label is not None:
            k, classes = OPS[n.op].label(n)
            assert n.inputs[k].dtype == "i64" and OPS[n.op].gate[k] is None
            seen[n.op] = classes
    assert seen == {"pick": C, "softmax_cross_entropy": C, "svm_loss": C, "onehot": 7}
    # the index ops (compiler/ops/array.py) declare their indices the same way, as "index"
    h = dsl.trace(lambda E, t, s: dsl.sum(E[t]) + dsl.sum(dsl.take_along_axis(s, t[:, None], 1)),
                  E=f64[5, 2], t=i64[N], s=f64[N, C])
    for n in compiler.grad(h).nodes:
        if OPS[n.op].label is not None:
            k, size, noun = OPS[n.op].label(n)
            assert n.inputs[k].dtype == "i64" and OPS[n.op].gate[k] is None and noun == "index"
            seen[n.op] = size
    assert seen["gather"] == seen["scatter_add"] == 5 and seen["take_along_axis"] == C
    assert {op for op in OPS if OPS[op].label is not None} == set(seen)
