"""Issue 8: standalone export (compiler/export.py, `gradc emit -o`).

The exported modules are imported in a fresh, isolated interpreter (`python -I`, from a
directory outside the repository) that must not import gradc; their numbers are compared with
the compiled function (compiler.compile, whose NumPy kernel is written by a different emitter
path when memory planning applies), the lecture's hand-derived numbers, and
compiler.train_step run for the same number of updates."""
import importlib.util
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import compiler
from compiler.export import export_module, write_module
from frontends import cli, dsl
from frontends.dsl import f64, i64

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

RUNNER = r"""
import json, runpy, sys, io, contextlib
sys.path.insert(0, ".")       # -I leaves the current directory off the path
import numpy as np
import neuron_grad, loss_grad, loss_step

result = {}
out = neuron_grad.neuron(w=np.array([2.0, -3.0, -3.0]), x=np.array([-1.0, -2.0]))
result["neuron"] = {k: np.asarray(v).tolist() for k, v in out.items()}

data = np.load("data.npz")
params = {k: data[k] for k in ("W1", "b1", "W2", "b2")}
out = loss_grad.loss(**params, X=data["X"], y=data["y"])
result["loss_grad"] = {k: np.asarray(v).tolist() for k, v in out.items()}

# three Adam updates, feeding back what the docstring says: <name> <- out['<name>_next']
args = loss_step.example_inputs()
args.update(params, X=data["X"], y=data["y"])
losses = []
for _ in range(3):
    out = loss_step.loss_step(**args)
    losses.append(float(out["loss"]))
    for key, value in out.items():
        if key.endswith("_next"):
            args[key[:-len("_next")]] = value
result["step"] = {"losses": losses, "t": int(args["t"]),
                  **{k: np.asarray(args[k]).tolist() for k in params}}

buf = io.StringIO()
with contextlib.redirect_stdout(buf):
    runpy.run_path("neuron_grad.py", run_name="__main__")
result["script"] = buf.getvalue()
result["gradc_imported"] = sorted(m for m in sys.modules
                                  if m.split(".")[0] in ("compiler", "frontends", "runtime"))
json.dump(result, sys.stdout)
"""


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Write the three modules with `gradc emit -o` and run RUNNER on them in a fresh
    interpreter; returns (its JSON result, the data, the directory)."""
    from examples.two_layer_net import init_params, spiral
    tmp = tmp_path_factory.mktemp("export")
    old = os.getcwd()
    os.chdir(ROOT)
    try:
        for args in (["examples/lecture.py:neuron", "-o", str(tmp / "neuron_grad.py")],
                     ["examples/two_layer_net.py:loss", "--data", "X",
                      "-o", str(tmp / "loss_grad.py")],
                     ["examples/two_layer_net.py:loss", "--data", "X", "--train-step", "adam",
                      "-o", str(tmp / "loss_step.py")]):
            assert cli.main(["emit"] + args) == 0
    finally:
        os.chdir(old)
    X, y = spiral(seed=0)
    params = init_params(seed=1)
    params["b1"] = 0.1 * np.random.default_rng(2).standard_normal(params["b1"].shape)
    np.savez(tmp / "data.npz", X=X, y=y, **params)
    done = subprocess.run([sys.executable, "-I", "-c", RUNNER], cwd=tmp, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout), dict(X=X, y=y, **params), tmp


def test_exported_modules_need_only_numpy(exported):
    result, _, tmp = exported
    assert result["gradc_imported"] == []
    for name in ("neuron_grad.py", "loss_grad.py", "loss_step.py"):
        text = (tmp / name).read_text()
        assert set(re.findall(r"^\s*(?:import|from)\s+(\w+)", text, re.M)) == {"numpy"}, name


def test_exported_neuron_gives_the_lecture_numbers(exported):
    """σ(1) = 0.7311; ∂f/∂w = σ(1)(1−σ(1))·(x0, x1, 1); ∂f/∂x = σ(1)(1−σ(1))·(w0, w1)."""
    got = exported[0]["neuron"]
    s = 1 / (1 + np.exp(-1.0))
    ds = s * (1 - s)
    np.testing.assert_allclose(got["out"], s, rtol=1e-15)
    np.testing.assert_allclose(got["dw"], ds * np.array([-1.0, -2.0, 1.0]), rtol=1e-15)
    np.testing.assert_allclose(got["dx"], ds * np.array([2.0, -3.0]), rtol=1e-15)
    fn = compiler.compile(compiler.grad(dsl.trace(__import__("examples.lecture").lecture.neuron)))
    ref = fn(w=np.array([2.0, -3.0, -3.0]), x=np.array([-1.0, -2.0]))
    for k in ("out", "dw", "dx"):
        np.testing.assert_allclose(got[k], ref[k], rtol=1e-15)


def test_exported_two_layer_gradient_matches_the_compiled_kernel(exported):
    from examples.two_layer_net import PARAMS, loss
    got, data, _ = exported
    fn = compiler.compile(compiler.grad(dsl.trace(loss), wrt=list(PARAMS)))
    ref = fn(**data)
    assert set(got["loss_grad"]) == set(ref) == {"out", "dW1", "db1", "dW2", "db2"}
    for k, v in ref.items():
        np.testing.assert_allclose(got["loss_grad"][k], v, rtol=1e-12, atol=1e-15)


def test_exported_train_step_follows_compiler_train_step(exported):
    """Three Adam updates through the exported module (buffers and t from example_inputs,
    fed back as its docstring says) equal three calls of compiler.train_step."""
    got, data, _ = exported
    from examples.two_layer_net import loss
    params = {k: data[k] for k in ("W1", "b1", "W2", "b2")}
    step = compiler.train_step(loss, params=params, inputs={"X": f64[300, 2], "y": i64[300]},
                               optimizer=compiler.optim.Adam(lr=1e-3))
    losses = [step(X=data["X"], y=data["y"]) for _ in range(3)]
    np.testing.assert_allclose(got["step"]["losses"], losses, rtol=1e-12)
    assert got["step"]["t"] == step.t == 3
    for k, v in step.params.items():
        np.testing.assert_allclose(got["step"][k], v, rtol=1e-10, atol=1e-14)
        assert not np.allclose(v, params[k]), f"{k} did not move"


def test_exported_module_runs_as_a_script(exported):
    lines = exported[0]["script"].splitlines()
    assert [ln.split(":")[0] for ln in lines] == ["out", "dw", "dx"]
    assert lines[1].startswith("dw: float64[3] [")


def test_docstring_documents_the_signature_and_the_feedback_rule(exported):
    _, _, tmp = exported
    text = (tmp / "loss_step.py").read_text()
    doc = text.split('"""', 2)[1]
    assert "out = loss_step(W1, b1, W2, b2, X, y, base_lr, t, m_W1, v_W1," in doc
    assert "    X: float64 (300, 2)\n    y: int64 (300,)\n" in doc
    for p in ("W1", "b1", "W2", "b2"):
        assert f"    {p} <- out['{p}_next']" in doc
        assert f"    m_{p} <- out['m_{p}_next']" in doc
    assert "    t <- out['t_next']" in doc
    assert re.search(r"^def loss_step\(W1, b1, W2, b2, X, y, base_lr, t, m_W1", text, re.M)


def test_model_named_like_a_helper_keeps_a_working_entry_point(tmp_path):
    """A model called `sigmoid` must not shadow the `sigmoid` helper its code calls: the
    emitter renames the function, and the docstring's usage line names the real one."""
    def sigmoid(x):
        return dsl.sum(dsl.sigmoid(x))
    g = compiler.grad(dsl.trace(sigmoid, x=f64[4]))
    path = tmp_path / "sig.py"
    source = write_module(path, g)
    entry = re.search(r"^    out = (\w+)\(x\)$", source, re.M).group(1)
    namespace = {"__name__": "sig"}
    exec(compile(source, str(path), "exec"), namespace)
    x = np.array([-2.0, -0.5, 0.5, 3.0])
    out = namespace[entry](x)
    s = 1 / (1 + np.exp(-x))
    np.testing.assert_allclose(out["out"], s.sum(), rtol=1e-15)
    np.testing.assert_allclose(out["dx"], s * (1 - s), rtol=1e-14)
    assert namespace["INPUTS"] == {"x": ("float64", (4,))}


def test_export_without_passes_keeps_every_gate_line():
    from examples.lecture import add_mul
    text = export_module(compiler.grad(dsl.trace(add_mul)), passes=[])
    assert "dq = 1.0 * z  # mul gate: dA = G·B [of f]  (lecture.py:26)" in text
    assert "dz = 1.0 * q  # mul gate: dB = G·A [of f]  (lecture.py:26)" in text


def test_exported_function_checks_its_arguments_like_a_compiled_one(tmp_path):
    """A label of -1 used to wrap around to the last class and a mismatched batch to broadcast
    (wrong numbers, no error): the exported function now refuses what compile()'s function
    refuses, naming the input, and computes the same numbers on what it accepts."""

    def loss(X, y, W):
        return dsl.softmax_cross_entropy(X @ W, y)
    g = compiler.grad(dsl.trace(loss, X=f64["N", 3], y=i64["N"], W=f64[3, 4]))
    path = tmp_path / "ce_grad.py"
    write_module(str(path), g)
    spec = importlib.util.spec_from_file_location("ce_grad", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rng = np.random.default_rng(0)
    X, W = rng.normal(size=(5, 3)), rng.normal(size=(3, 4))
    y = np.array([0, 3, 1, 2, 0])
    entry = mod.loss
    want = compiler.compile(g, backend="numpy")(X=X, y=y, W=W)
    got = entry(X, y, W=W)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-15, atol=0)
    assert entry(X=X.tolist(), y=y.astype(np.int32), W=W)["out"] == pytest.approx(want["out"])
    cases = [(dict(X=X, y=np.array([0, -1, 1, 2, 0]), W=W), ValueError, "label -1"),
             (dict(X=X, y=np.array([0, 4, 1, 2, 0]), W=W), ValueError, r"label 4 outside \[0, 4\)"),
             (dict(X=X, y=y[:4], W=W), ValueError, "'y'.*shape"),
             (dict(X=X, y=y, W=W[:2]), ValueError, "'W'"),
             (dict(X=X, y=y.astype(np.float64), W=W), TypeError, "'y'"),
             (dict(X=X.astype(np.complex128), y=y, W=W), TypeError, "'X'"),
             (dict(X=X, y=y), TypeError, "missing"),
             (dict(X=X, y=y, W=W, Z=W), TypeError, "unexpected")]
    for kw, kind, message in cases:
        with pytest.raises(kind, match=message):
            entry(**kw)
