"""Classify scikit-learn's bundled 8×8 handwritten digits with a 2-layer MLP trained by a
gradc train step (forward, backward and the Adam update compiled into one function).

    h      = relu(X·W1 + b1)                                  [N, 64] -> [N, H]
    scores = dropout(h, p)·W2 + b2                            [N, 10]
    L      = −(1/N) Σ_i log softmax(scores_i)[y_i] + ½·reg·(ΣW1² + ΣW2²)

1797 images, 80 % for training (mini-batches of 64; the inputs' batch dimension is symbolic,
f64["N", 64], so the smaller last batch runs the same compiled step) and a held-out 20 % for
testing (accuracy ≥ 0.95 expected, in a few
seconds on 2 cores).  Dropout is active in training and the identity in `step.evaluate`.

Needs the `examples` extra:  pip install -e '.[examples]'   (scikit-learn for the data; tqdm
for a progress bar and matplotlib for the loss-curve PNG are optional).

Run it:  python examples/digits.py [--epochs 30] [--plot digits_loss.png] [--backend numpy]
         (exits 1 if the test accuracy is below 0.95, 2 if scikit-learn is missing)
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

import compiler
from frontends import dsl
from frontends.dsl import f64, i64

D, H, C = 64, 128, 10
BATCH = 64
REG = 1e-4


def load(seed: int = 0):
    """(X_train, y_train, X_test, y_test): pixels scaled to [0, 1], a seeded 80/20 split."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        print("examples/digits.py needs scikit-learn for the digits data set; install the "
              "examples extra:  pip install -e '.[examples]'", file=sys.stderr)
        raise SystemExit(2)
    digits = load_digits()
    X = digits.data.astype(np.float64) / 16.0
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(y))
    cut = int(round(0.8 * len(y)))
    train, test = order[:cut], order[cut:]
    return X[train], y[train], X[test], y[test]


def mlp(W1, b1, W2, b2, X, y, reg=REG, p=0.2):
    """The loss (and the scores, for accuracy) of the 2-layer net."""
    h = dsl.relu(X @ W1 + b1)
    h = dsl.dropout(h, p)
    scores = h @ W2 + b2
    data_loss = dsl.softmax_cross_entropy(scores, y)
    loss = data_loss + 0.5 * reg * (dsl.sum(W1 * W1) + dsl.sum(W2 * W2))
    return {"loss": loss, "scores": scores}


def init_params(seed: int = 0) -> dict:
    """He initialization for the ReLU layer, small weights for the output layer."""
    rng = np.random.default_rng(seed)
    return {"W1": rng.standard_normal((D, H)) * np.sqrt(2.0 / D), "b1": np.zeros(H),
            "W2": rng.standard_normal((H, C)) * 0.01, "b2": np.zeros(C)}


def progress(iterable, total, enabled):
    """A tqdm bar when tqdm is installed and wanted, else the plain iterable."""
    if enabled:
        try:
            from tqdm import tqdm
            return tqdm(iterable, total=total, unit="epoch")
        except ImportError:
            pass
    return iterable


def save_plot(path, losses, per_epoch):
    """The training-loss curve as a PNG; skipped (with a note) without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib is not installed: no plot; pip install -e '.[examples]')")
        return
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(np.arange(len(losses)) / per_epoch, losses, lw=0.6, label="mini-batch loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.set_title("digits: 2-layer MLP, Adam (gradc train step)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"loss curve saved to {path}")


def train(epochs: int = 30, lr: float = 2e-3, seed: int = 0, backend: str = "numpy",
          bar: bool = True):
    """Train; returns (step, train losses, test accuracy)."""
    Xtr, ytr, Xte, yte = load(seed)
    opt = compiler.optim.Adam(lr=lr, schedule=compiler.optim.Cosine(
        epochs * -(-len(ytr) // BATCH), final=0.05))
    step = compiler.train_step(mlp, params=init_params(seed),
                               inputs={"X": f64["N", D], "y": i64["N"]},
                               optimizer=opt, backend=backend, seed=seed)
    rng = np.random.default_rng(seed + 1)
    losses = []
    for _ in progress(range(epochs), epochs, bar):
        order = rng.permutation(len(ytr))
        for start in range(0, len(ytr), BATCH):
            ix = order[start:start + BATCH]
            losses.append(step(X=Xtr[ix], y=ytr[ix]))
    scores = step.evaluate(X=Xte, y=yte)["scores"]
    accuracy = float(np.mean(np.argmax(scores, axis=1) == yte))
    return step, losses, accuracy


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backend", default="numpy")
    parser.add_argument("--plot", default="digits_loss.png", help="PNG path ('' for none)")
    parser.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    step, losses, accuracy = train(args.epochs, args.lr, args.seed, args.backend,
                                   bar=not args.no_progress)
    elapsed = time.perf_counter() - start
    print(f"{step.t} updates, {step.compilations} compiled functions (the step for every "
          f"batch size, and evaluation), final loss "
          f"{np.mean(losses[-10:]):.4f}")
    print(f"test accuracy {accuracy:.4f} on the held-out 20 %  ({elapsed:.1f} s)")
    if args.plot:
        save_plot(args.plot, losses, len(losses) / args.epochs)
    if accuracy < 0.95:
        print("FAIL: test accuracy is below 0.95", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
