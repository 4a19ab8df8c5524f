"""Clear errors: trace-time errors name the op, the shapes and the model's line; the broadcast
guard; compiled-function argument checks on both backends (raised before generated or native
code runs); docs/errors.md is generated from the real messages and is current."""
import os
import sys
import warnings

import numpy as np
import pytest

import compiler
from frontends import dsl
from frontends.dsl import f32, f64, i64

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "docs"))
import make_errors  # noqa: E402

BACKENDS = ["numpy", "llvm"]
HERE = os.path.basename(__file__)


def _line_of(fn, offset=1) -> int:
    return fn.__code__.co_firstlineno + offset


# ---- 1. trace-time errors -----------------------------------------------------------------
def m_broadcast(a, b):
    return a + b


def m_matmul(a, b):
    return a @ b


def m_exp_int(a):
    return dsl.exp(a)


def m_reshape(a):
    return a.reshape(4, 2)


def m_sum_axis(a):
    return dsl.sum(a, axis=2)


def m_log_softmax_axis(a):
    return dsl.log_softmax(a, axis=-3)


def m_index(a):
    return a[5]


def m_labels(s, y):
    return dsl.softmax_cross_entropy(s, y)


def m_where(c, a):
    return dsl.where(c > 0, a, 0)


def m_transpose(a):
    return a.transpose(0, 0)


def m_dtypes(a, b):
    return a * b


def m_pick_array(s):
    return dsl.pick(s, np.array([0, 1, 2]))


def m_onehot(y):
    return dsl.onehot(y, 3)


def m_svm(s, y):
    return dsl.svm_loss(s, y)


def m_dropout(a):
    return dsl.dropout(a, 1.5)


SHAPE_CASES = [  # (model, specs, the fragments the message must hold)
    (m_broadcast, dict(a=f64[3], b=f64[4]), ["add", "(3,)", "(4,)"]),
    (m_matmul, dict(a=f64[64, 3], b=f64[2, 100]), ["matmul", "(64, 3)", "(2, 100)", "3 != 2"]),
    (m_exp_int, dict(a=i64[3]), ["exp", "i64[3]"]),
    (m_reshape, dict(a=f64[3, 2]), ["reshape", "(3, 2)", "(4, 2)"]),
    (m_sum_axis, dict(a=f64[3, 2]), ["sum", "axis 2", "rank 2"]),
    (m_log_softmax_axis, dict(a=f64[3, 2]), ["log_softmax", "axis -3", "rank 2"]),
    (m_index, dict(a=f64[3]), ["index 5", "size 3"]),
    (m_labels, dict(s=f64[3, 4], y=i64[5]), ["softmax_cross_entropy", "(3, 4)", "i64[5]"]),
    (m_where, dict(c=f64[3], a=f64[4]), ["where", "(3,)", "(4,)"]),
    (m_transpose, dict(a=f64[3, 2]), ["transpose", "(0, 0)", "(3, 2)"]),
    (m_dtypes, dict(a=f64[3], b=f32[3]), ["mul", "f64", "f32", "dsl.cast"]),
    (m_pick_array, dict(s=f64[3, 4]), ["pick", "ndarray"]),
    (m_onehot, dict(y=f64[3]), ["onehot", "f64[3]"]),
    (m_svm, dict(s=f64[3], y=i64[3]), ["svm_loss", "f64[3]"]),
    (m_dropout, dict(a=f64[3]), ["dropout", "1.5"]),
]


@pytest.mark.parametrize("model,specs,parts", SHAPE_CASES, ids=[c[0].__name__ for c in SHAPE_CASES])
def test_trace_errors_name_op_shapes_and_line(model, specs, parts):
    with pytest.raises(compiler.GradcError) as e:
        dsl.trace(model, **specs)
    msg = str(e.value)
    for p in parts:
        assert p in msg, (p, msg)
    assert f"{HERE}:{_line_of(model)}" in msg, msg


def test_data_dependent_if_says_what_to_use():
    def model(x):
        if dsl.sum(x) > 0:
            return x
        return -x
    with pytest.raises(compiler.UnsupportedError) as e:
        dsl.trace(model, x=f64[3])
    msg = str(e.value)
    assert "dsl.where" in msg and f"{HERE}:{_line_of(model)}" in msg


@pytest.mark.parametrize("np_fn,dsl_name", [(np.exp, "dsl.exp"), (np.tanh, "dsl.tanh"),
                                            (np.sum, "dsl.sum"), (np.mean, "dsl.mean")])
def test_numpy_function_on_a_tracer_says_what_to_use(np_fn, dsl_name):
    def model(x):
        return np_fn(x)
    with pytest.raises(compiler.UnsupportedError) as e:
        dsl.trace(model, x=f64[3])
    assert dsl_name in str(e.value) and f"{HERE}:{_line_of(model)}" in str(e.value)


def test_float_and_iteration_of_a_tracer_are_refused():
    with pytest.raises(compiler.UnsupportedError, match="float"):
        dsl.trace(lambda x: dsl.exp(float(x)), x=f64[()])
    with pytest.raises(compiler.UnsupportedError, match="iterating"):
        dsl.trace(lambda x: [v for v in x][0], x=f64[3])


# ---- 2. the broadcast guard -----------------------------------------------------------------
def m_residual(pred, y):
    return dsl.mean((pred - y) ** 2)


def test_broadcast_guard_warns_at_the_model_line():
    with pytest.warns(compiler.BroadcastWarning) as rec:
        g = dsl.trace(m_residual, pred=f64[8, 1], y=f64[8])
    w = rec[0]
    assert os.path.basename(w.filename) == HERE and w.lineno == _line_of(m_residual)
    msg = str(w.message)
    assert "sub" in msg and "(8, 1)" in msg and "(8,)" in msg and "(8, 8)" in msg
    assert f"{HERE}:{_line_of(m_residual)}" in msg
    # the warning does not change the meaning: NumPy broadcasting, [8, 8]
    p, y = np.arange(8.0).reshape(8, 1), np.ones(8)
    assert np.isclose(compiler.interpret(g, pred=p, y=y)["out"], np.mean((p - y) ** 2))


def test_strict_broadcast_makes_it_an_error():
    with pytest.raises(compiler.ShapeError) as e:
        dsl.trace(m_residual, pred=f64[8, 1], y=f64[8], strict_broadcast=True)
    assert "strict_broadcast" in str(e.value) and f"{HERE}:{_line_of(m_residual)}" in str(e.value)


@pytest.mark.parametrize("a,b", [((8, 1), (1, 3)),   # an explicit outer broadcast
                                 ((8, 3), (3,)),     # a row added to every row
                                 ((8, 3), ()),       # a scalar
                                 ((8, 1), (8, 3)),   # a column against a matrix
                                 ((8,), (8,))])
def test_broadcast_guard_is_quiet_on_ordinary_broadcasting(a, b):
    with warnings.catch_warnings():
        warnings.simplefilter("error", compiler.BroadcastWarning)
        dsl.trace(lambda x, z: dsl.sum(x * z + x), x=f64[a], z=f64[b], strict_broadcast=True)


# ---- 3. compiled-function arguments -------------------------------------------------------
def m_affine(W, x, y):
    return dsl.softmax_cross_entropy(x @ W, y)


@pytest.fixture(scope="module", params=BACKENDS)
def affine(request):
    g = compiler.grad(dsl.trace(m_affine, W=f64[3, 4], x=f64[5, 3], y=i64[5]), wrt=["W"])
    return compiler.compile(g, backend=request.param), compiler.compile(
        g, backend=request.param, check_finite=True)


def _args(rng):
    return dict(W=rng.normal(size=(3, 4)), x=rng.normal(size=(5, 3)), y=np.array([0, 1, 2, 3, 0]))


def _no_native(fn, monkeypatch):
    """Make running the generated/native code fail loudly: an argument error must come first."""
    def boom(*a, **k):
        raise AssertionError("compiled code ran before the argument check")
    if fn.backend == "llvm":
        monkeypatch.setattr(fn, "_cfunc", boom)
    else:
        monkeypatch.setattr(fn, "_fn_loaded", boom)    # (its module, compiled on first use)


@pytest.mark.parametrize("change,kind,parts", [
    (lambda a: a.pop("x"), TypeError, ["missing 'x'", "x: f64[5,3]"]),
    (lambda a: a.update(X=a["x"]), TypeError, ["unexpected 'X'"]),
    (lambda a: a.update(W=np.ones((4, 3))), ValueError, ["'W'", "(4, 3)", "f64[3,4]"]),
    (lambda a: a.update(W=a["W"].astype(np.complex128)), TypeError, ["'W'", "complex128"]),
    (lambda a: a.update(y=a["y"].astype(np.float64)), TypeError, ["'y'", "float64", "i64"]),
    (lambda a: a.update(y=np.array([0, 1, 2, 4, 0])), ValueError, ["'y'", "label 4"]),
    (lambda a: a.update(y=np.array([0, 1, -1, 0, 0])), ValueError, ["'y'", "label -1"]),
])
def test_bad_arguments_are_named_before_code_runs(affine, rng, monkeypatch, change, kind, parts):
    fn = affine[0]
    args = _args(rng)
    change(args)
    _no_native(fn, monkeypatch)
    with pytest.raises(kind) as e:
        fn(**args)
    for p in parts:
        assert p in str(e.value), (p, str(e.value))


def test_no_silent_downcast_to_f32(rng):
    g = compiler.grad(dsl.trace(lambda x: dsl.sum(x * x), x=f32[4]))
    for backend in BACKENDS:
        fn = compiler.compile(g, backend=backend)
        with pytest.raises(TypeError, match="'x'.*float64.*f32"):
            fn(x=rng.normal(size=4))
        x32 = rng.normal(size=4).astype(np.float32)
        assert np.allclose(fn(x=x32)["dx"], 2 * x32)


def test_non_contiguous_and_read_only_arguments_are_accepted(affine, rng):
    fn = affine[0]
    args = _args(rng)
    want = fn(**{k: v.copy() for k, v in args.items()})
    wide = np.zeros((3, 8))
    wide[:, ::2] = args["W"]                       # a strided view: not contiguous
    xt = np.asfortranarray(args["x"])              # Fortran order
    ro = args["y"].copy()
    ro.setflags(write=False)
    got = fn(W=wide[:, ::2], x=xt, y=ro)
    assert not wide[:, ::2].flags.c_contiguous and not xt.flags.c_contiguous
    for k in want:
        assert np.array_equal(got[k], want[k]), k
    assert np.array_equal(wide[:, ::2], args["W"]) and np.array_equal(ro, args["y"])
    # the hand-written oracle: softmax − onehot over N
    s = args["x"] @ args["W"]
    p = np.exp(s - s.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    p[np.arange(5), args["y"]] -= 1
    assert np.allclose(got["dW"], args["x"].T @ p / 5)


def test_train_step_owns_its_parameters(rng):
    """Parameters are updated in place: the step works on its own copies, so a read-only
    array passed in is fine and is never written."""
    W = rng.normal(size=(3, 4))
    W.setflags(write=False)
    before = W.copy()
    for backend in BACKENDS:
        step = compiler.train_step(m_affine, params={"W": W}, inputs={"x": f64[5, 3], "y": i64[5]},
                                   optimizer=compiler.optim.SGD(lr=0.1), backend=backend)
        a = _args(rng)
        step(x=a["x"], y=a["y"])
        assert not np.array_equal(step.params["W"], before)
        assert np.array_equal(W, before)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_check_finite_names_the_argument(affine, rng, monkeypatch, bad):
    plain, checked = affine
    args = _args(rng)
    args["x"][2, 1] = bad
    out = plain(**args)                            # off by default: IEEE arithmetic runs
    assert not np.isfinite(out["dW"]).all()
    _no_native(checked, monkeypatch)
    with pytest.raises(ValueError) as e:
        checked(**args)
    msg = str(e.value)
    assert "'x'" in msg and "(2, 1)" in msg and "check_finite" in msg


def test_check_finite_passes_finite_inputs(affine, rng):
    plain, checked = affine
    args = _args(rng)
    a, b = plain(**args), checked(**args)
    assert np.array_equal(a["dW"], b["dW"])


# ---- docs/errors.md -------------------------------------------------------------------------
@pytest.mark.parametrize("case", make_errors.CASES, ids=[c[1] for c in make_errors.CASES])
def test_documented_error_cases_raise_what_they_say(case):
    section, title, thunk, expected = case
    kind, text = make_errors.run_case(thunk, expected)
    if expected is None:                       # the debug_nans report
        assert kind is compiler.debug.NanReport and "log(x) at make_errors.py:" in text, text
        return
    assert kind is not None and issubclass(kind, expected), text
    if section in ("Trace time", "Broadcast guard"):
        assert "make_errors.py:" in text, text


def test_errors_md_is_generated_from_the_current_messages():
    with open(make_errors.OUT, encoding="utf-8") as f:
        assert f.read() == make_errors.generate(), \
            "docs/errors.md is stale: run python docs/make_errors.py"


@pytest.mark.parametrize("depth", ["N", 0, -2, True, 2.5])
def test_onehot_depth_must_be_a_positive_int(depth):
    """A dimension name (the class count is fixed when tracing), 0, a bool or a float (2.5
    was truncated to 2 classes, silently) is a ShapeError naming the model line."""
    with pytest.raises(compiler.ShapeError, match=r"onehot: depth must be a positive int.*test_errors"):
        dsl.trace(lambda y: dsl.sum(dsl.onehot(y, depth)), y=i64["N"])
