"""compiler.train_step: the step object (in-place parameters, source/IR), checkpoints with
bit-identical continuation, recompiling once per batch size, dropout (the documented draw
protocol reproduced here in NumPy, identity at evaluation), and training the CS231n spiral."""
import time

import numpy as np
import pytest

import compiler
from compiler import optim
from compiler.ir import GradcError, ShapeError
from frontends import dsl
from frontends.dsl import f64, i64

D, K = 3, 2
STEPS = 1000     # spiral training iterations


def lsq(W, X, Y):
    r = X @ W - Y
    return dsl.mean(r * r)


def lsq_dropout(W, X, Y, p=0.25):
    """Least squares on inputs with dropout: L = mean((dropout(X)·W − Y)²)."""
    r = dsl.dropout(X, p) @ W - Y
    return dsl.mean(r * r)


def batch(rng, n):
    return rng.standard_normal((n, D)), rng.standard_normal((n, K))


def lsq_grad(W, X, Y):
    r = X @ W - Y
    return 2.0 / r.size * X.T @ r


# ---- the step object ---------------------------------------------------------------------------
def test_params_are_copied_owned_and_updated_in_place():
    rng = np.random.default_rng(0)
    W0 = rng.standard_normal((D, K))
    W0_copy = W0.copy()
    step = compiler.train_step(lsq, params={"W": W0}, inputs={"X": f64[5, D], "Y": f64[5, K]},
                               optimizer=optim.SGD(0.1))
    W = step.params["W"]
    assert W is not W0 and np.array_equal(W, W0)
    X, Y = batch(rng, 5)
    loss = step(X=X, Y=Y)
    assert isinstance(loss, float)
    assert loss == pytest.approx(np.mean((X @ W0 - Y) ** 2), rel=1e-14)
    assert step.params["W"] is W                                   # written back in place
    assert np.array_equal(W0, W0_copy)                             # the caller's array untouched
    np.testing.assert_allclose(W, W0 - 0.1 * lsq_grad(W0, X, Y), rtol=1e-14)
    assert "def lsq_step(" in step.source and "W_next" in step.source
    assert step.ir.startswith("graph lsq_step(")
    assert "train step" in repr(step)


def test_evaluate_returns_the_outputs_without_updating():
    def model(W, X, Y):
        scores = X @ W
        r = scores - Y
        return {"loss": dsl.mean(r * r), "scores": scores}
    rng = np.random.default_rng(1)
    W0 = rng.standard_normal((D, K))
    step = compiler.train_step(model, {"W": W0}, {"X": f64[4, D], "Y": f64[4, K]}, optim.SGD(0.1))
    X, Y = batch(rng, 4)
    out = step.evaluate(X=X, Y=Y)
    np.testing.assert_allclose(out["scores"], X @ W0, rtol=1e-14)
    assert out["loss"] == pytest.approx(np.mean((X @ W0 - Y) ** 2), rel=1e-14)
    assert np.array_equal(step.params["W"], W0) and step.t == 0


def test_bad_arguments_are_named():
    W = np.zeros((D, K))
    specs = {"X": f64[4, D], "Y": f64[4, K]}
    with pytest.raises(GradcError, match="parameter 'W' has dtype int64"):
        compiler.train_step(lsq, {"W": np.zeros((D, K), dtype=np.int64)}, specs, optim.SGD(1))
    with pytest.raises(GradcError, match="spec of input 'X'"):
        compiler.train_step(lsq, {"W": W}, {"X": np.zeros((4, D)), "Y": f64[4, K]}, optim.SGD(1))
    with pytest.raises(GradcError, match="optimizer must be"):
        compiler.train_step(lsq, {"W": W}, specs, optimizer="adam")
    step = compiler.train_step(lsq, {"W": W}, specs, optim.SGD(1))
    with pytest.raises(TypeError, match="missing \\['Y'\\]"):
        step(X=np.zeros((4, D)))
    with pytest.raises(TypeError, match="unexpected \\['Z'\\]"):
        step(X=np.zeros((4, D)), Y=np.zeros((4, K)), Z=1)


# ---- batch sizes -------------------------------------------------------------------------------
def test_a_different_batch_size_recompiles_once_and_is_cached():
    rng = np.random.default_rng(2)
    W0 = rng.standard_normal((D, K))
    step = compiler.train_step(lsq, {"W": W0}, {"X": f64[16, D], "Y": f64[16, K]},
                               optim.Momentum(0.05, 0.9))
    W, v = W0.copy(), np.zeros_like(W0)
    for n in (16, 10, 16, 10, 10, 16):
        X, Y = batch(rng, n)
        step(X=X, Y=Y)
        v = 0.9 * v - 0.05 * lsq_grad(W, X, Y)
        W = W + v
        assert f"X: f64[{n},3]" in step.ir
    assert step.compilations == 2
    np.testing.assert_allclose(step.params["W"], W, rtol=1e-12)


# ---- checkpoints ---------------------------------------------------------------------------------
def spiral_model(W1, b1, W2, b2, X, y, reg=1e-3, p=0.1):
    h = dsl.relu(X @ W1 + b1)
    h = dsl.dropout(h, p)
    scores = h @ W2 + b2
    data_loss = dsl.softmax_cross_entropy(scores, y)
    return {"loss": data_loss + 0.5 * reg * (dsl.sum(W1 * W1) + dsl.sum(W2 * W2)),
            "scores": scores}


def spiral(seed=0, n=100, classes=3):
    """CS231n's spiral: class j at (r sin t, r cos t), r ∈ [0, 1], t ∈ [4j, 4j+4] + noise."""
    rng = np.random.default_rng(seed)
    X = np.zeros((n * classes, 2))
    y = np.repeat(np.arange(classes), n).astype(np.int64)
    for j in range(classes):
        r = np.linspace(0.0, 1, n)
        t = np.linspace(j * 4, (j + 1) * 4, n) + rng.standard_normal(n) * 0.2
        X[j * n:(j + 1) * n] = np.c_[r * np.sin(t), r * np.cos(t)]
    return X, y


def spiral_params(seed=0, h=100):
    rng = np.random.default_rng(seed)
    return {"W1": 0.01 * rng.standard_normal((2, h)), "b1": np.zeros((1, h)),
            "W2": 0.01 * rng.standard_normal((h, 3)), "b2": np.zeros((1, 3))}


def make_spiral_step(optimizer, n=60, seed=7, **kw):
    return compiler.train_step(spiral_model, spiral_params(), {"X": f64[n, 2], "y": i64[n]},
                               optimizer, seed=seed, **kw)


def batches(X, y, n, count, seed):
    rng = np.random.default_rng(seed)
    for _ in range(count):
        ix = rng.choice(len(y), n, replace=False)
        yield X[ix], y[ix]


@pytest.mark.parametrize("make_opt", [
    lambda: optim.Adam(1e-2, clip_norm=1.0, schedule=optim.Warmup(3, optim.Cosine(20))),
    lambda: optim.Momentum(0.1, nesterov=True, weight_decay=1e-4,
                           schedule=optim.StepDecay(4, 0.5)),
])
def test_checkpoint_round_trip_continues_bit_identically(tmp_path, make_opt):
    X, y = spiral()
    data = list(batches(X, y, 60, 16, seed=3))
    straight = make_spiral_step(make_opt())
    losses = [straight(X=a, y=b) for a, b in data]

    first = make_spiral_step(make_opt())
    for a, b in data[:7]:
        first(X=a, y=b)
    path = tmp_path / "ckpt.npz"
    first.save(path)
    resumed = make_spiral_step(make_opt(), seed=12345)   # a different seed: load restores it
    W1 = resumed.params["W1"]
    resumed.load(path)
    assert resumed.params["W1"] is W1 and resumed.t == 7
    rest = [resumed(X=a, y=b) for a, b in data[7:]]
    assert rest == losses[7:]                               # bit-identical, not approximately
    for k in straight.params:
        assert np.array_equal(resumed.params[k], straight.params[k])
    for k in straight.state:
        assert np.array_equal(resumed.state[k], straight.state[k])
    assert resumed.t == straight.t == 16
    # the checkpoint holds what the issue lists
    with np.load(path) as d:
        assert {"param/W1", "t", "rng", "optimizer"} <= set(d.files)
        assert int(d["t"]) == 7


def test_load_refuses_a_mismatched_checkpoint(tmp_path):
    step = make_spiral_step(optim.Adam(1e-2))
    step.save(tmp_path / "a.npz")
    with pytest.raises(GradcError, match="holds Adam state; this step uses SGD"):
        make_spiral_step(optim.SGD(0.1)).load(tmp_path / "a.npz")
    small = compiler.train_step(spiral_model, spiral_params(h=10), {"X": f64[60, 2], "y": i64[60]},
                                optim.Adam(1e-2))
    with pytest.raises(GradcError, match="param/W1"):
        small.load(tmp_path / "a.npz")


# ---- dropout -------------------------------------------------------------------------------------
def test_dropout_trace_adds_a_mask_input_and_evaluation_is_the_identity():
    g = dsl.trace(lsq_dropout, W=f64[D, K], X=f64[4, D], Y=f64[4, K])
    assert [v.name for v in g.inputs] == ["W", "X", "Y", "dropout_keep"]
    assert str(g.inputs[-1].type) == "bool[4,3]"
    assert [n.attrs for n in g.nodes if n.op == "dropout"] == [{"p": 0.25}]
    ev = dsl.trace(lsq_dropout, training=False, W=f64[D, K], X=f64[4, D], Y=f64[4, K])
    plain = dsl.trace(lsq, W=f64[D, K], X=f64[4, D], Y=f64[4, K])
    assert [v.name for v in ev.inputs] == ["W", "X", "Y"]
    assert [(n.op, n.attrs, n.out.type) for n in ev.nodes] == \
        [(n.op, n.attrs, n.out.type) for n in plain.nodes]
    with pytest.raises(ShapeError, match="p=1.0"):
        dsl.trace(lambda x: dsl.sum(dsl.dropout(x, 1.0)), x=f64[3])


def test_dropout_op_value_and_gate_rule_against_numpy():
    def f(x, c):
        return dsl.sum(dsl.dropout(x, 0.4) * c)
    rng = np.random.default_rng(5)
    x, c = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    keep = rng.random((3, 4)) >= 0.4
    g = compiler.grad(dsl.trace(f, x=f64[3, 4], c=f64[3, 4]), wrt=["x", "c"])
    for out in (compiler.compile(g)(x=x, c=c, dropout_keep=keep),
                compiler.interpret(g, x=x, c=c, dropout_keep=keep)):
        xd = np.where(keep, x / 0.6, 0.0)
        assert out["out"] == pytest.approx(np.sum(xd * c), rel=1e-13)
        np.testing.assert_allclose(out["dx"], np.where(keep, c / 0.6, 0.0), rtol=1e-14)
        np.testing.assert_allclose(out["dc"], xd, rtol=1e-14)
    assert compiler.parse_graph(compiler.print_graph(g)) == g


def test_step_draws_masks_from_its_seeded_generator():
    """The documented protocol: keep = default_rng(seed).random(shape) ≥ p, one draw per
    dropout input per call, in graph-input order."""
    rng = np.random.default_rng(6)
    W0 = rng.standard_normal((D, K))
    step = compiler.train_step(lsq_dropout, {"W": W0}, {"X": f64[8, D], "Y": f64[8, K]},
                               optim.SGD(0.1), seed=42)
    mine = np.random.default_rng(42)
    W = W0.copy()
    for _ in range(5):
        X, Y = batch(rng, 8)
        keep = mine.random((8, D)) >= 0.25
        Xd = np.where(keep, X / 0.75, 0.0)
        assert step(X=X, Y=Y) == pytest.approx(np.mean((Xd @ W - Y) ** 2), rel=1e-13)
        W = W - 0.1 * lsq_grad(W, Xd, Y)
    np.testing.assert_allclose(step.params["W"], W, rtol=1e-12)
    X, Y = batch(rng, 8)
    assert step.evaluate(X=X, Y=Y)["loss"] == pytest.approx(np.mean((X @ W - Y) ** 2), rel=1e-12)


# ---- the spiral ----------------------------------------------------------------------------------
def test_spiral_net_reaches_97_percent():
    """CS231n's 2-layer net (100 ReLU units) on the 3×100-point spiral, full batch, Adam.
    (Dropout is left out: at this size even p = 0.1 holds it near 0.85.)"""
    def spiral_net(W1, b1, W2, b2, X, y):
        return spiral_model(W1, b1, W2, b2, X, y, p=0.0)
    X, y = spiral(0)
    start = time.perf_counter()
    step = compiler.train_step(spiral_net, spiral_params(0), {"X": f64[300, 2], "y": i64[300]},
                               optim.Adam(1e-2), seed=0)
    first = step(X=X, y=y)
    for _ in range(STEPS - 1):
        last = step(X=X, y=y)
    scores = step.evaluate(X=X, y=y)["scores"]
    acc = np.mean(np.argmax(scores, axis=1) == y)
    assert first == pytest.approx(np.log(3), abs=0.01)   # small initial weights: chance level
    assert last < 0.5 and acc >= 0.97, (last, acc)
    assert time.perf_counter() - start < 15


# ---- the examples --------------------------------------------------------------------------------
def _example(name):
    import importlib.util
    import os
    path = os.path.join(os.path.dirname(__file__), os.pardir, "examples", f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"example_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_svm_vs_softmax_example():
    """On separable blobs both reach 100 %; the hinge loss reaches exactly 0 (every margin met)
    while the cross-entropy stays positive, as the lecture says."""
    ex = _example("svm_vs_softmax")
    X, y, steps, _ = ex.train("blobs", steps=150, bar=False, log=lambda *a: None)
    for name, step in steps.items():
        out = step.evaluate(X=X, y=y)
        assert np.mean(np.argmax(out["scores"], axis=1) == y) == 1.0, name
    s = steps["svm"].evaluate(X=X, y=y)
    correct = s["scores"][np.arange(len(y)), y][:, None]
    margins = np.maximum(0, s["scores"] - correct + 1)
    margins[np.arange(len(y)), y] = 0
    assert float(s["data_loss"]) == margins.sum() / len(y) == 0.0
    assert float(steps["softmax"].evaluate(X=X, y=y)["data_loss"]) > 0


def test_digits_example_reaches_95_percent(capsys):
    pytest.importorskip("sklearn")
    ex = _example("digits")
    assert ex.main(["--no-progress", "--plot", ""]) == 0
    assert "test accuracy" in capsys.readouterr().out


def test_llvm_backend_step_matches_numpy():
    """backend= is handed to compiler.compile: the same training run on both backends (dropout
    masks, a batch-size change, clipping, a schedule) agrees to rounding."""
    if "llvm" not in compiler.BACKENDS:
        pytest.skip("the LLVM backend is not available")
    rng = np.random.default_rng(8)
    W0 = rng.standard_normal((D, K))
    data = [batch(rng, n) for n in (8, 8, 5, 8, 5)]
    runs = {}
    for backend in ("numpy", "llvm"):
        opt = optim.Adam(0.05, clip_norm=0.5, schedule=optim.Cosine(4, final=0.1))
        step = compiler.train_step(lsq_dropout, {"W": W0}, {"X": f64[8, D], "Y": f64[8, K]}, opt,
                                   backend=backend, seed=3)
        runs[backend] = ([step(X=X, Y=Y) for X, Y in data], step.params["W"].copy())
        assert step.compilations == 2
    np.testing.assert_allclose(runs["llvm"][0], runs["numpy"][0], rtol=1e-12)
    np.testing.assert_allclose(runs["llvm"][1], runs["numpy"][1], rtol=1e-12)
