"""Issue 14, part 6: smaller wrong behaviours, one test each.  Every test fails on the code
before its fix; each compares against an independent oracle (a real subprocess, SymPy's own
derivative and float64 finite differences, the modules' real attributes, Python's exact
integers, the model file's own lines)."""
from __future__ import annotations

import ast
import os
import pathlib
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import sympy as sp

import compiler
import frontends.sympy as fsym
from frontends import dsl
from frontends.dsl import f32, f64, i64

ROOT = pathlib.Path(__file__).resolve().parent.parent


# ---- (a) a BroadcastWarning from `python -c` / stdin ---------------------------------------
_BROADCAST_SCRIPT = textwrap.dedent("""\
    import numpy as np
    from frontends import dsl
    from frontends.dsl import f64
    g = dsl.trace(lambda a, b: dsl.sum(a + b), a=f64[3, 1], b=f64[3])
    print("traced", [n.op for n in g.nodes])
    """)


def _python(args, stdin=None):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, *args], input=stdin, capture_output=True, text=True,
                          cwd=str(ROOT), env=env, timeout=120)


@pytest.mark.parametrize("how", ["-c", "stdin"])
def test_broadcast_warning_from_python_c_and_stdin(how):
    """The warning is shown at the script's line 4 (the [3,1] + [3] add) and the trace goes on;
    with an "error" filter it is the BroadcastWarning that stops the script, not an ImportError."""
    args = ["-c", _BROADCAST_SCRIPT] if how == "-c" else ["-"]
    stdin = None if how == "-c" else _BROADCAST_SCRIPT
    pseudo = "<string>" if how == "-c" else "<stdin>"
    r = _python(args, stdin)
    assert r.returncode == 0, r.stderr
    assert "traced ['add', 'sum']" in r.stdout
    assert f"{pseudo}:4: BroadcastWarning: add: shapes (3, 1) and (3,)" in r.stderr, r.stderr
    strict_script = ("import warnings, compiler\n"
                     "warnings.simplefilter('error', compiler.BroadcastWarning)\n"
                     + _BROADCAST_SCRIPT)
    strict = _python(["-c", strict_script] if how == "-c" else ["-"],
                     None if how == "-c" else strict_script)
    assert strict.returncode == 1
    assert "compiler.debug.BroadcastWarning: add: shapes" in strict.stderr, strict.stderr
    assert "ImportError" not in strict.stderr


# ---- (b) Max / Min / Abs / Piecewise from SymPy -------------------------------------------
def test_sympy_max_min_abs_piecewise_trace_and_differentiate():
    x, y = sp.symbols("x y", real=True)
    cases = {"relu": sp.Max(x, 0), "relu0": sp.Max(0, x), "max": sp.Max(x, y),
             "min": sp.Min(x, y), "max3": sp.Max(2 * x, 3 * y, sp.Rational(1, 2)),
             "min0": sp.Min(x, 0), "maxaff": sp.Max(2 * x, 3) * y, "abs": sp.Abs(x - y),
             "pw": sp.Piecewise((x ** 2, x > y), (sp.exp(y), True))}
    rng = np.random.default_rng(7)
    xs = rng.uniform(-2, 2, 50)
    ys = rng.uniform(-2, 2, 50)
    # no ties: the kinks are where these are not differentiable
    keep = (np.abs(xs - ys) > 1e-3) & (np.abs(xs) > 1e-3) & (np.abs(2 * xs - 3) > 1e-3) & \
        (np.abs(2 * xs - 3 * ys) > 1e-3) & (np.abs(2 * xs - 0.5) > 1e-3) & \
        (np.abs(3 * ys - 0.5) > 1e-3)
    xs, ys = xs[keep], ys[keep]
    n = xs.size
    for label, e in cases.items():
        g = fsym.trace(e, inputs={x: f64[n], y: f64[n]}, reduce="sum", name=label)
        fn = compiler.compile(compiler.grad(g))
        got = fn(x=xs, y=ys)
        want = sp.lambdify((x, y), e, "numpy")
        assert np.isclose(got["out"], np.sum(want(xs, ys)), rtol=1e-13, atol=1e-13), label
        for s, name in ((x, "dx"), (y, "dy")):
            d = sp.lambdify((x, y), sp.diff(e, s), "numpy")
            ref = np.broadcast_to(np.asarray(d(xs, ys), dtype=float), (n,))
            assert np.allclose(got[name], ref, rtol=1e-12, atol=1e-12), (label, name)
        report = compiler.check_finite_differences(g)
        assert report.ok, (label, str(report))
    relu = fsym.trace(sp.Max(x, 0), inputs={x: f64[4]})
    assert [nd.op for nd in relu.nodes] == ["relu"]
    mx = fsym.trace(sp.Max(x, y), inputs={x: f64[4], y: f64[4]})
    assert [nd.op for nd in mx.nodes] == ["maximum"]


# ---- (c) error messages name only functions that exist ------------------------------------
_NAMED = re.compile(r"(?<![\w.])(dsl|compiler)((?:\.[A-Za-z_]\w*)+)")


def _string_literals(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.lineno, node.value


def _resolve(root: str, dotted: str):
    import importlib
    obj = importlib.import_module("frontends.dsl" if root == "dsl" else "compiler")
    for part in dotted.strip(".").split("."):
        if not hasattr(obj, part):
            try:    # a submodule named in the text (compiler.optim, compiler.passes.x)
                obj = importlib.import_module(f"{obj.__name__}.{part}")
                continue
            except (ImportError, AttributeError):
                return False
        obj = getattr(obj, part)
    return True


def test_error_messages_name_only_existing_functions():
    """Every `dsl.name` / `compiler.a.b` written in a string of compiler/, frontends/ and
    runtime/ is a real attribute (a name directly followed by `(` or `.` is read up to its
    last dotted part); and the messages built from a NumPy function's name (np.concatenate
    on a traced value) name a dsl function only when dsl has it."""
    bad = []
    for pkg in ("compiler", "frontends", "runtime"):
        for path in sorted((ROOT / pkg).rglob("*.py")):
            tree = ast.parse(path.read_text(), str(path))
            for line, text in _string_literals(tree):
                for m in _NAMED.finditer(text):
                    dotted = m.group(2).rstrip(".")
                    if dotted.split(".")[-1] in ("py", "md"):     # a file name (compiler.py)
                        continue
                    if not _resolve(m.group(1), dotted):
                        bad.append(f"{path.relative_to(ROOT)}:{line}: {m.group(1)}{dotted}")
    assert not bad, "messages name functions that do not exist:\n" + "\n".join(bad)

    x = np.ones(3)
    for np_call in (lambda v: np.concatenate([v, v]), lambda v: np.stack([v, v]),
                    lambda v: np.arctan2(v, v), lambda v: np.exp(v), lambda v: np.maximum(v, v),
                    lambda v: np.tanh(v), lambda v: np.linalg.norm(v)):
        with pytest.raises(compiler.UnsupportedError) as e:
            dsl.trace(lambda a: np_call(a), a=f64[3])
        msg = str(e.value)
        for name in re.findall(r"(?<![\w.])dsl\.([A-Za-z_]\w*)", msg):
            assert name == "__all__" or (hasattr(dsl, name) and name in dsl.__all__), msg
        assert x is not None
    with pytest.raises(compiler.UnsupportedError) as e:
        dsl.trace(lambda a: np.arctan2(a, a), a=f64[3])
    assert "np.arctan2" in str(e.value) and "dsl.arctan2" not in str(e.value)
    with pytest.raises(compiler.UnsupportedError, match=r"use gradc's dsl\.concatenate"):
        dsl.trace(lambda a: np.concatenate([a, a]), a=f64[3])      # the DSL has it now
    with pytest.raises(compiler.UnsupportedError, match=r"dsl\.exp"):
        dsl.trace(lambda a: np.exp(a), a=f64[3])


# ---- (d) every user mistake is a GradcError -----------------------------------------------
def _neuron(w, x):
    return dsl.sigmoid(w[0] * x[0] + w[1] * x[1] + w[2])


def _loss(W, X):
    return dsl.sum(dsl.tanh(X @ W))


def test_user_mistakes_raise_gradc_errors():
    g = dsl.trace(_neuron, w=f64[3], x=f64[2])
    with pytest.raises(compiler.GradcError, match=r"'W9'.*inputs are w, x") as e:
        compiler.grad(g, wrt=["W9"])
    assert isinstance(e.value, KeyError)           # still caught by `except KeyError`
    assert str(e.value).startswith("graph 'neuron' has no input 'W9'")   # not a repr
    sgd = compiler.optim.SGD(lr=0.1)
    mistakes = {
        "Graph.input": lambda: g.input("nope"),
        "grad wrt=None item": lambda: compiler.grad(g, wrt=[None]),
        "grad wrt twice": lambda: compiler.grad(g, wrt=["w", "w"]),
        "grad of": lambda: compiler.grad(g, of="nope"),
        "hvp wrt": lambda: compiler.hvp(g, wrt=["nope"]),
        "hessian wrt": lambda: compiler.hessian(g, wrt="nope"),
        "check_against_sympy wrt": lambda: compiler.check_against_sympy(g, wrt=["nope"]),
        "check_finite_differences wrt": lambda: compiler.check_finite_differences(g, wrt="q"),
        "check_hessian wrt": lambda: compiler.check_hessian_finite_differences(g, wrt=["q"]),
        "debug_nans wrt": lambda: compiler.debug_nans(g, {"w": np.ones(3), "x": np.ones(2)},
                                                      wrt=["nope"]),
        "debug_nans of": lambda: compiler.debug_nans(g, {"w": np.ones(3), "x": np.ones(2)},
                                                     of="nope"),
        "compile backend": lambda: compiler.compile(g, backend="cuda"),
        "compile passes=str": lambda: compiler.compile(g, passes="cse"),
        "compile passes=int": lambda: compiler.compile(g, passes=3),
        "compile name": lambda: compiler.compile(g, name="bad name"),
        "compile llvm name": lambda: compiler.compile(g, backend="llvm", name="x; y"),
        "compile not a graph": lambda: compiler.compile(_neuron),
        "train_step param name": lambda: compiler.train_step(
            _loss, params={"W9": np.ones((2, 2))}, inputs={"X": f64[3, 2]}, optimizer=sgd),
        "train_step optimizer": lambda: compiler.train_step(
            _loss, params={"W": np.ones((2, 2))}, inputs={"X": f64[3, 2]}, optimizer="sgd"),
        "train_step passes": lambda: compiler.train_step(
            _loss, params={"W": np.ones((2, 2))}, inputs={"X": f64[3, 2]}, optimizer=sgd,
            passes="cse"),
        "optimize passes=str": lambda: compiler.optimize(g, "dce"),
        "Adam beta1": lambda: compiler.optim.Adam(beta1=None),
        "Momentum nan": lambda: compiler.optim.Momentum(lr=0.1, momentum=float("nan")),
        "SGD lr": lambda: compiler.optim.SGD(lr="fast"),
    }
    wrong = {}
    for what, call in mistakes.items():
        try:
            call()
        except compiler.GradcError as err:
            assert str(err), what
            continue
        except Exception as err:          # noqa: BLE001  (the test reports which)
            wrong[what] = f"{type(err).__name__}: {err}"
            continue
        wrong[what] = "no error"
    assert not wrong, wrong
    # a call without its data names the data, not the step's internal inputs (base_lr, t)
    step = compiler.train_step(_loss, params={"W": np.ones((2, 2))}, inputs={"X": f64[3, 2]},
                               optimizer=sgd)
    with pytest.raises(TypeError, match=r"missing \['X'\]; it takes \['X'\]$"):
        step()


# ---- (e) argument conversions do what the docs say ----------------------------------------
def _scalar_fns():
    def f(a, b, n):
        return dsl.sum(a * 2.0) + dsl.cast(n, "f64") + dsl.cast(b, "f64")
    g = dsl.trace(f, a=f64[()], b=f32[()], n=i64[()])
    return {bk: compiler.compile(g, backend=bk) for bk in compiler.BACKENDS}


@pytest.mark.parametrize("backend", ["numpy", "llvm"])
def test_argument_conversions_are_exact_or_refused(backend):
    fn = _scalar_fns()[backend]
    ok = dict(a=1.0, b=np.float32(1.0), n=1)
    assert fn(**ok)["out"] == 4.0                      # out = 2a + n + b
    # exact: an integer that a float holds exactly is accepted, on the fast path and off it
    assert fn(**dict(ok, a=2 ** 53))["out"] == 2.0 ** 54 + 2.0
    assert fn(**dict(ok, a=2 ** 60))["out"] == 2.0 ** 61 + 2.0          # a power of two: exact
    assert fn(**dict(ok, b=2 ** 24))["out"] == 3.0 + 2 ** 24
    assert fn(**dict(ok, b=0.1))["out"] == 2.0 + 1.0 + float(np.float32(0.1))   # rounded
    assert fn(**dict(ok, n=2 ** 63 - 1))["out"] == 3.0 + float(2 ** 63 - 1)
    refused = [
        (dict(a=2 ** 53 + 1), ValueError, ["'a'", "9007199254740993", "f64"]),
        (dict(a=-(2 ** 60) - 1), ValueError, ["'a'", "f64"]),
        (dict(a=10 ** 400), ValueError, ["'a'", "f64"]),
        (dict(b=2 ** 24 + 1), ValueError, ["'b'", "16777217", "f32"]),
        (dict(b=1e39), ValueError, ["'b'", "f32"]),
        (dict(b=-3.5e38), ValueError, ["'b'", "f32"]),
        (dict(b=1e-50), ValueError, ["'b'", "f32"]),
        (dict(n=2 ** 63), ValueError, ["'n'", "i64"]),
        (dict(n=-(2 ** 63) - 1), ValueError, ["'n'", "i64"]),
        (dict(a=1 + 2j), TypeError, ["'a'", "complex"]),
        (dict(n=3j), TypeError, ["'n'", "complex"]),
        (dict(a=np.int64(2 ** 53 + 1)), ValueError, ["'a'", "9007199254740993"]),
        (dict(copy="no"), TypeError, ["copy", "bool"]),
        (dict(copy=None), TypeError, ["copy", "bool"]),
    ]
    for change, err, words in refused:
        with pytest.raises(err) as e:
            fn(**dict(ok, **change))
        for w in words:
            assert w in str(e.value), (change, str(e.value))
    assert fn(**dict(ok, copy=False))["out"] == 4.0
    assert fn(**dict(ok, copy=np.True_))["out"] == 4.0


@pytest.mark.parametrize("backend", ["numpy", "llvm"])
def test_integer_arrays_convert_to_float_only_exactly(backend):
    g = dsl.trace(lambda x: dsl.sum(x * 1.0), x=f64[3])
    fn = compiler.compile(g, backend=backend)
    assert fn(x=np.array([1, 2 ** 53, -(2 ** 62)], dtype=np.int64))["out"] == \
        1.0 + 2.0 ** 53 - 2.0 ** 62
    with pytest.raises(ValueError, match=r"argument 'x': .*9007199254740993.* f64"):
        fn(x=np.array([1, 2 ** 53 + 1, 3], dtype=np.int64))
    with pytest.raises(ValueError, match=r"argument 'x': .*18446744073709551615"):
        fn(x=np.array([1, 2 ** 64 - 1, 3], dtype=np.uint64))


# ---- (f) fan-out gradients cite the fanned-out value's line -------------------------------
_MLP3 = '''\
from frontends import dsl


def mlp3(X, y, W1, W2, W3):
    h1 = dsl.relu(X @ W1)
    h2 = dsl.relu(h1 @ W2)
    scores = h2 @ W3
    data = dsl.softmax_cross_entropy(scores, y)
    reg = dsl.sum(W1 * W1) + dsl.sum(W2 * W2) + dsl.sum(W3 * W3)
    return data + 0.01 * reg + dsl.sum(h1) * 0.5 + dsl.mean(h2)


def square(w, v):
    q = dsl.sum(v * 2.0)
    return dsl.sum(w * w + w) + q * dsl.sum(v)
'''


def test_fan_out_gradient_comments_cite_the_right_line(tmp_path, monkeypatch):
    """dW1, dW2, dW3 sum the gradients of two uses of a graph input on two lines: the sum has
    no model line (an input has none), never the last gate's line; dh1 and dh2 (values used
    twice) cite the line that computes h1 and h2; an input used only on one line (w in
    `square`) cites that line, one used on two lines (v) none."""
    (tmp_path / "mlp3_model.py").write_text(_MLP3)
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib
    mod = importlib.import_module("mlp3_model")
    g = dsl.trace(mod.mlp3, X=f64[4, 3], y=i64[4], W1=f64[3, 5], W2=f64[5, 6], W3=f64[6, 2])
    lines = _MLP3.splitlines()
    line_of = {name: next(k for k, t in enumerate(lines, 1) if t.strip().startswith(name + " ="))
               for name in ("h1", "h2")}
    dg = compiler.grad(g, wrt=["W1", "W2", "W3"])
    fan = {n.out.name: n for n in dg.nodes if n.rule and n.rule.startswith("fan-out")}
    assert {"dW1", "dW2", "dW3", "dh1", "dh2"} <= set(fan), sorted(fan)
    for w in ("dW1", "dW2", "dW3"):
        assert fan[w].loc is None, (w, fan[w].loc)
    for h in ("dh1", "dh2"):
        assert fan[h].loc == f"mlp3_model.py:{line_of[h[1:]]}", (h, fan[h].loc)
    for backend in compiler.BACKENDS:       # the statement's comment, in both kinds of source
        src = compiler.compile(dg, backend=backend).source
        for w in ("dW1", "dW2", "dW3", "dh1", "dh2"):
            segs = [seg for t in src.splitlines() for seg in t.split("; ")
                    if re.match(rf"\s*;?\s*(fused loop: )?{w}(:| =)", seg) and "fan-out" in seg]
            assert segs, (backend, w)
            for seg in segs:
                cited = re.findall(r"mlp3_model\.py:(\d+)", seg)
                want = [] if w.startswith("dW") else [str(line_of[w[1:]])]
                assert cited == want, (backend, w, seg)
    sq = compiler.grad(dsl.trace(mod.square, w=f64[3], v=f64[3]))
    fan = {n.out.name: n for n in sq.nodes if n.rule and n.rule.startswith("fan-out")}
    one_line = next(k for k, t in enumerate(lines, 1) if "w * w + w" in t)
    assert fan["dw"].loc == f"mlp3_model.py:{one_line}" and fan["dv"].loc is None, \
        (fan["dw"].loc, fan["dv"].loc)


def test_grad_of_a_python_function_says_to_trace_it():
    """grad(fn) raised AttributeError: 'function' object has no attribute 'name'."""
    def f(x):
        return x * x
    with pytest.raises(compiler.GradcError, match=r"grad takes a compiler\.Graph, got function "
                                                  r"\(trace it first"):
        compiler.grad(f)
    with pytest.raises(compiler.GradcError, match="got str"):
        compiler.grad("x * x")
