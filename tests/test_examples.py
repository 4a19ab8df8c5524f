"""examples/two_layer_net.py, the spiral demo: its compiled train steps follow a hand-written
NumPy forward/backward pass with the SGD and Adam formulas written here (float64, 1e-10); trained
briefly with each optimizer it reaches ≥ 0.97 training accuracy as computed here in NumPy; the
script prints the loss, writes its plot and exits 1 below 0.97."""
import os
import re
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from examples import two_layer_net as tln  # noqa: E402

SCRIPT = os.path.join(ROOT, "examples", "two_layer_net.py")


def numpy_loss_and_grads(P, X, y, reg=tln.REG):
    """The net's loss and parameter gradients, by hand (CS231n style)."""
    n = len(y)
    pre = X @ P["W1"] + P["b1"]
    h = np.maximum(0.0, pre)
    s = h @ P["W2"] + P["b2"]
    s = s - s.max(axis=1, keepdims=True)
    logp = s - np.log(np.exp(s).sum(axis=1, keepdims=True))
    L = -logp[np.arange(n), y].mean() + 0.5 * reg * (np.sum(P["W1"] ** 2) + np.sum(P["W2"] ** 2))
    ds = np.exp(logp)
    ds[np.arange(n), y] -= 1.0
    ds /= n
    dh = ds @ P["W2"].T
    dh[pre <= 0] = 0.0
    return L, {"W1": X.T @ dh + reg * P["W1"], "b1": dh.sum(axis=0),
               "W2": h.T @ ds + reg * P["W2"], "b2": ds.sum(axis=0)}


def numpy_accuracy(P, X, y):
    s = np.maximum(0.0, X @ P["W1"] + P["b1"]) @ P["W2"] + P["b2"]
    return float(np.mean(np.argmax(s, axis=1) == y))


def numpy_training(optimizer, lr, steps, seed=0):
    """`steps` updates of SGD (p ← p − lr·g) or Adam (Kingma & Ba 2015, β1 = 0.9, β2 = 0.999,
    ε = 1e-8) on the hand-written gradient; returns (losses, params)."""
    X, y = tln.spiral(seed)
    P = tln.init_params(seed)
    m = {k: np.zeros_like(a) for k, a in P.items()}
    v = {k: np.zeros_like(a) for k, a in P.items()}
    losses = []
    for t in range(1, steps + 1):
        L, G = numpy_loss_and_grads(P, X, y)
        losses.append(L)
        for k, g in G.items():
            if optimizer == "sgd":
                P[k] = P[k] - lr * g
            else:
                m[k] = 0.9 * m[k] + 0.1 * g
                v[k] = 0.999 * v[k] + 0.001 * g * g
                mh, vh = m[k] / (1 - 0.9 ** t), v[k] / (1 - 0.999 ** t)
                P[k] = P[k] - lr * mh / (np.sqrt(vh) + 1e-8)
    return losses, P


def test_spiral_data_is_three_interleaved_arms_of_100_points():
    X, y = tln.spiral(0)
    assert X.shape == (300, 2) and X.dtype == np.float64 and y.dtype == np.int64
    assert np.bincount(y).tolist() == [100, 100, 100]
    r = np.hypot(X[:, 0], X[:, 1])
    np.testing.assert_allclose(r[:100], np.linspace(0, 1, 100), atol=1e-12)
    P = tln.init_params(0)
    assert {k: a.shape for k, a in P.items()} == {"W1": (2, 100), "b1": (100,),
                                                 "W2": (100, 3), "b2": (3,)}


@pytest.mark.parametrize("optimizer,backend", [("sgd", "numpy"), ("adam", "llvm")])
def test_compiled_steps_follow_hand_written_numpy_training(optimizer, backend):
    lr = tln.LEARNING_RATES[optimizer]
    run = tln.train(optimizer, steps=25, backend=backend, log=lambda line: None)
    want_losses, want_params = numpy_training(optimizer, lr, 25)
    np.testing.assert_allclose(run.losses, want_losses, rtol=1e-10)
    assert abs(run.losses[0] - (np.log(3) + 0.5 * tln.REG * sum(
        np.sum(tln.init_params(0)[k] ** 2) for k in ("W1", "W2")))) < 1e-4   # ≈ ln 3 at init
    for k, want in want_params.items():
        np.testing.assert_allclose(run.params[k], want, rtol=1e-9, atol=1e-12, err_msg=k)


@pytest.mark.parametrize("optimizer,steps", [("sgd", 2500), ("adam", 600)])
def test_training_reaches_97_percent(optimizer, steps):
    lines = []
    run = tln.train(optimizer, steps=steps, backend="llvm", every=500, log=lines.append)
    X, y = tln.spiral(0)
    acc = numpy_accuracy(run.params, X, y)
    assert acc == pytest.approx(run.accuracy, abs=1e-12)
    assert acc >= 0.97, f"{optimizer}: training accuracy {acc}"
    assert len(run.losses) == steps and run.losses[-1] < 0.4 < run.losses[0]
    assert [ln.split()[2] for ln in lines] == [str(k) for k in range(0, steps, 500)] + [
        str(steps - 1)]


def _script(*args):
    return subprocess.run([sys.executable, SCRIPT, "--no-progress", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_script_trains_both_prints_the_loss_and_saves_the_plot(tmp_path):
    png = tmp_path / "spiral.png"
    p = _script("--steps", "2500", "--every", "300", "--plot", str(png))
    assert p.returncode == 0, p.stdout + p.stderr
    out = p.stdout
    assert out.count("loss") >= 2 * 9 and " sgd  step   300  loss" in out
    assert "adam  step  2400  loss" in out
    last = out.strip().splitlines()[-1]
    accs = dict(re.findall(r"(sgd|adam) (\d\.\d+)", last))
    assert set(accs) == {"sgd", "adam"} and all(float(a) >= 0.97 for a in accs.values()), last
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "matplotlib is not installed" in out and not png.exists()
    else:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_script_exits_1_below_97_percent():
    p = _script("--optimizer", "sgd", "--steps", "5", "--backend", "numpy")
    assert p.returncode == 1, p.stdout + p.stderr
    assert "FAIL: sgd training accuracy" in p.stderr and "below 0.97" in p.stderr
    assert "adam" not in p.stdout


# ---- examples/char_model.py: embedding gather + concatenated context window (issue 18.7) ----
from examples import char_model as cm  # noqa: E402

CHAR_SCRIPT = os.path.join(ROOT, "examples", "char_model.py")


def numpy_char_loss(P, tokens, y, reg=cm.REG):
    """The character model's loss by hand: rows of E by fancy indexing, the window as a
    reshape (not a concatenate), a log-softmax with the max subtracted."""
    ctx = P["E"][tokens].reshape(len(y), -1)
    s = np.tanh(ctx @ P["W1"] + P["b1"]) @ P["W2"] + P["b2"]
    s = s - s.max(axis=1, keepdims=True)
    logp = s - np.log(np.exp(s).sum(axis=1, keepdims=True))
    return -logp[np.arange(len(y)), y].mean() + 0.5 * reg * (np.sum(P["W1"] ** 2)
                                                             + np.sum(P["W2"] ** 2))


def test_char_model_follows_numpy_and_learns_the_shipped_text():
    """The first step's loss is the hand-written NumPy loss of the initial parameters on the
    first batch; after 150 Adam steps the whole text's loss (the step's evaluation, equal to
    NumPy's on the trained parameters) is far below the unigram entropy, which a model that
    ignores its context cannot beat."""
    text, alphabet = cm.load()
    assert 3000 < len(text) < 8000 and len(alphabet) == 26
    run = cm.train(steps=150, every=50, log=lambda line: None)
    ix = np.random.default_rng(1).integers(0, len(run.targets), cm.BATCH)    # train's first
    first = numpy_char_loss(cm.init_params(len(alphabet), 0), run.contexts[ix], run.targets[ix])
    assert run.losses[0] == pytest.approx(first, rel=1e-12)
    assert abs(first - np.log(26)) < 0.05          # ≈ uniform over the alphabet at init
    whole = run.step.evaluate(tokens=run.contexts, y=run.targets)["loss"]
    assert whole == pytest.approx(numpy_char_loss(run.step.params, run.contexts, run.targets),
                                  rel=1e-12)
    base = cm.unigram_entropy(run.targets, len(alphabet))
    assert whole < base - 1.5, (whole, base)
    lines = cm.sample(run, 3, seed=2)
    assert len(lines) == 3 and all(set(ln) <= set(alphabet) - {"\n"} for ln in lines)
    assert run.step.compilations == 2     # tokens i64[N, K]: one step, one evaluation, any N


def test_char_model_script_prints_the_loss_and_sampled_lines():
    p = subprocess.run([sys.executable, CHAR_SCRIPT, "--steps", "120", "--every", "40",
                        "--samples", "2"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    assert re.findall(r"step +(\d+) +loss \d\.\d{4}", p.stdout) == ["0", "40", "80", "119"]
    assert "unigram entropy 2.8662" in p.stdout and p.stdout.count("  sample: ") == 2


def test_char_model_llvm_step_follows_the_numpy_step():
    """The native train step (gather, scatter-add and concatenate as loops) gives the NumPy
    step's losses and parameters."""
    a = cm.train(steps=20, log=lambda line: None)
    b = cm.train(steps=20, backend="llvm", log=lambda line: None)
    np.testing.assert_allclose(b.losses, a.losses, rtol=1e-10)
    for k in a.step.params:
        np.testing.assert_allclose(b.step.params[k], a.step.params[k], rtol=1e-9, atol=1e-12)


# ---- examples/cnn_digits.py -------------------------------------------------------------------
import compiler  # noqa: E402
from examples import cnn_digits as cnn  # noqa: E402
from frontends.dsl import f64, i64  # noqa: E402

CNN_SCRIPT = os.path.join(ROOT, "examples", "cnn_digits.py")


def numpy_cnn_loss(P, X, y, reg=cnn.REG):
    """The CNN's evaluation loss by hand: sliding windows and einsum, 2×2 maxima by reshape."""
    def conv_relu_pool(h, K, c):
        hp = np.pad(h, ((0, 0), (0, 0), (1, 1), (1, 1)))
        win = np.lib.stride_tricks.sliding_window_view(hp, (3, 3), axis=(2, 3))
        z = np.maximum(np.einsum("nchwpq,ocpq->nohw", win, K) + c[None, :, None, None], 0.0)
        n, o, hh, ww = z.shape
        return z.reshape(n, o, hh // 2, 2, ww // 2, 2).max(axis=(3, 5))
    h = conv_relu_pool(conv_relu_pool(X, P["K1"], P["c1"]), P["K2"], P["c2"])
    s = h.reshape(len(X), -1) @ P["W"] + P["b"]
    s = s - s.max(axis=1, keepdims=True)
    logp = s - np.log(np.exp(s).sum(axis=1, keepdims=True))
    return -logp[np.arange(len(y)), y].mean() + 0.5 * reg * sum(
        np.sum(P[k] ** 2) for k in ("K1", "K2", "W"))


@pytest.mark.parametrize("backend", ["numpy", "llvm"])
def test_cnn_evaluation_loss_is_the_hand_written_forward_pass(backend):
    pytest.importorskip("sklearn", reason="the digits data set comes with scikit-learn "
                        "(pip install -e '.[examples]'; CI installs it)")
    Xtr, ytr, Xte, yte = cnn.load(0)
    step = compiler.train_step(cnn.cnn, params=cnn.init_params(0),
                               inputs={"X": f64[cnn.BATCH, 1, 8, 8], "y": i64[cnn.BATCH]},
                               optimizer=compiler.optim.Adam(lr=1e-3), backend=backend)
    for k in range(3):
        step(X=Xtr[k * 64:(k + 1) * 64], y=ytr[k * 64:(k + 1) * 64])
    got = step.evaluate(X=Xte, y=yte)["loss"]
    assert got == pytest.approx(numpy_cnn_loss(step.params, Xte, yte), rel=1e-12)


def test_cnn_script_reaches_98_percent_and_saves_the_plot(tmp_path):
    pytest.importorskip("sklearn", reason="the digits data set comes with scikit-learn "
                        "(pip install -e '.[examples]'; CI installs it)")
    pytest.importorskip("matplotlib", reason="--plot needs matplotlib (the examples extra)")
    png = tmp_path / "cnn.png"
    p = subprocess.run([sys.executable, CNN_SCRIPT, "--backend", "llvm", "--no-progress",
                        "--plot", str(png)], cwd=ROOT, capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    acc = float(re.search(r"test accuracy (\d\.\d{4})", p.stdout).group(1))
    assert acc >= 0.98 and png.stat().st_size > 10000


def test_cnn_example_compiles_its_step_once_for_every_batch_size():
    """The example's inputs are f64[N, 1, 8, 8]: the partial last batch (1437 = 22·64 + 29)
    and the evaluation on the 360 held-out images reuse one native train step."""
    pytest.importorskip("sklearn", reason="the digits data set comes with scikit-learn "
                        "(pip install -e '.[examples]'; CI installs it)")
    step, losses, _, accuracy = cnn.train(epochs=1, backend="llvm", bar=False)
    assert len(losses) == 23 and np.isfinite(losses).all()
    assert step.compilations == 2                 # the train step, and the evaluation graph
    assert step._last.kernel.specializations == 1
    assert [c.kernel.specializations for c in step._eval.values()] == [1]
