"""Classify scikit-learn's bundled 8×8 handwritten digits with a small CNN trained by a gradc
train step (forward, backward and the Adam update compiled into one function).

    h1     = maxpool₂(relu(conv3×3(X, K1) + c1))        [N, 1, 8, 8] -> [N, 8, 4, 4]
    h2     = maxpool₂(relu(conv3×3(h1, K2) + c2))       [N, 8, 4, 4] -> [N, 16, 2, 2]
    scores = flatten(h2)·W + b                          [N, 64] -> [N, 10]
    L      = −(1/N) Σ_i log softmax(scores_i)[y_i] + ½·reg·(ΣK1² + ΣK2² + ΣW²)

The convolutions are NCHW/OIHW with padding 1; their gradients are the transposed convolution
and the correlation (compiler/ops/conv.py).  1797 images, 80 % for training (mini-batches of
64, the last one of 29) and the held-out 20 % for testing: the test accuracy must reach 0.98.
The inputs are declared `f64["N", 1, 8, 8]`, so one native train step serves every batch size
(the partial batch and the 360-image evaluation compile nothing new).

Needs the `examples` extra:  pip install -e '.[examples]'   (scikit-learn for the data; tqdm
for a progress bar and matplotlib for the plot are optional).

Run it:  python examples/cnn_digits.py [--epochs 30] [--backend llvm] [--plot cnn_digits.png]
         (exits 1 if the test accuracy is below 0.98, 2 if scikit-learn is missing)
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import compiler  # noqa: E402
from frontends import dsl  # noqa: E402
from frontends.dsl import f64, i64  # noqa: E402

C1, C2, CLASSES = 16, 32, 10
BATCH = 64
REG = 1e-3
DROP = 0.25
TARGET = 0.98


def load(seed: int = 0):
    """(X_train, y_train, X_test, y_test): images [N, 1, 8, 8] scaled to [0, 1], a seeded
    80/20 split."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        print("examples/cnn_digits.py needs scikit-learn for the digits data set; install the "
              "examples extra:  pip install -e '.[examples]'", file=sys.stderr)
        raise SystemExit(2)
    digits = load_digits()
    X = (digits.data.astype(np.float64) / 16.0).reshape(-1, 1, 8, 8)
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(y))
    cut = int(round(0.8 * len(y)))
    train, test = order[:cut], order[cut:]
    return X[train], y[train], X[test], y[test]


def cnn(K1, c1, K2, c2, W, b, X, y, reg=REG, p=DROP):
    """The loss (and the scores, for accuracy) of the CNN."""
    h1 = dsl.max_pool2d(dsl.relu(dsl.conv2d(X, K1, padding=1) + c1.reshape(1, C1, 1, 1)), 2)
    h2 = dsl.max_pool2d(dsl.relu(dsl.conv2d(h1, K2, padding=1) + c2.reshape(1, C2, 1, 1)), 2)
    flat = dsl.dropout(h2.reshape(h2.shape[0], C2 * 4), p)
    scores = flat @ W + b
    data_loss = dsl.softmax_cross_entropy(scores, y)
    loss = data_loss + 0.5 * reg * (dsl.sum(K1 * K1) + dsl.sum(K2 * K2) + dsl.sum(W * W))
    return {"loss": loss, "scores": scores}


def init_params(seed: int = 0) -> dict:
    """He initialization (fan-in C·KH·KW for the kernels)."""
    rng = np.random.default_rng(seed)
    return {"K1": rng.standard_normal((C1, 1, 3, 3)) * np.sqrt(2.0 / 9),
            "c1": np.zeros(C1),
            "K2": rng.standard_normal((C2, C1, 3, 3)) * np.sqrt(2.0 / (C1 * 9)),
            "c2": np.zeros(C2),
            "W": rng.standard_normal((C2 * 4, CLASSES)) * np.sqrt(1.0 / (C2 * 4)),
            "b": np.zeros(CLASSES)}


def progress(iterable, total, enabled):
    """A tqdm bar when tqdm is installed and wanted, else the plain iterable."""
    if enabled:
        try:
            from tqdm import tqdm
            return tqdm(iterable, total=total, unit="epoch")
        except ImportError:
            pass
    return iterable


def save_plot(path, losses, test_losses, per_epoch, K1):
    """Training and test loss curves and eight of the first layer's filters, as a PNG."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib is not installed: no plot; pip install -e '.[examples]')")
        return
    fig = plt.figure(figsize=(9, 3.5))
    ax = fig.add_subplot(1, 2, 1)
    ax.plot(np.arange(len(losses)) / per_epoch, losses, lw=0.6, label="mini-batch loss")
    ax.plot(np.arange(1, len(test_losses) + 1), test_losses, "o-", ms=3, label="test loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.set_title("digits CNN, Adam (gradc train step)")
    ax.legend()
    for k in range(min(8, K1.shape[0])):       # the first 8 of conv1's 3×3 filters
        sub = fig.add_subplot(2, 8, 5 + (k // 4) * 8 + k % 4)
        sub.imshow(K1[k, 0], cmap="gray")
        sub.set_xticks([])
        sub.set_yticks([])
        if k == 0:
            sub.set_title("conv1 filters", fontsize=8, loc="left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"loss curves and filters saved to {path}")


def train(epochs: int = 30, lr: float = 3e-3, seed: int = 0, backend: str = "numpy",
          bar: bool = True):
    """Train; returns (step, train losses, test loss per epoch, test accuracy)."""
    Xtr, ytr, Xte, yte = load(seed)
    opt = compiler.optim.Adam(lr=lr, schedule=compiler.optim.Cosine(
        epochs * -(-len(ytr) // BATCH), final=0.05))
    step = compiler.train_step(cnn, params=init_params(seed),
                               inputs={"X": f64["N", 1, 8, 8], "y": i64["N"]},
                               optimizer=opt, backend=backend, seed=seed)
    rng = np.random.default_rng(seed + 1)
    losses, test_losses = [], []
    for _ in progress(range(epochs), epochs, bar):
        order = rng.permutation(len(ytr))
        for start in range(0, len(ytr), BATCH):
            ix = order[start:start + BATCH]
            losses.append(step(X=Xtr[ix], y=ytr[ix]))
        test_losses.append(float(step.evaluate(X=Xte, y=yte)["loss"]))
    scores = step.evaluate(X=Xte, y=yte)["scores"]
    accuracy = float(np.mean(np.argmax(scores, axis=1) == yte))
    return step, losses, test_losses, accuracy


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backend", default="numpy")
    parser.add_argument("--plot", nargs="?", const="cnn_digits.png", default="",
                        help="save loss curves and filters to this PNG (cnn_digits.png)")
    parser.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    step, losses, test_losses, accuracy = train(args.epochs, args.lr, args.seed, args.backend,
                                                bar=not args.no_progress)
    elapsed = time.perf_counter() - start
    print(f"{step.t} updates, final loss {np.mean(losses[-10:]):.4f}, "
          f"test loss {test_losses[-1]:.4f}")
    print(f"test accuracy {accuracy:.4f} on the held-out 20 %  ({elapsed:.1f} s)")
    if args.plot:
        save_plot(args.plot, losses, test_losses, len(losses) / args.epochs,
                  step.params["K1"])
    if accuracy < TARGET:
        print(f"FAIL: test accuracy is below {TARGET}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
