"""A linear classifier trained with the multiclass hinge loss (SVM) and with softmax
cross-entropy side by side: the lecture's comparison, each as a gradc train step.

    scores = X·W + b                                                     [N, C]
    SVM      L = (1/N) Σ_i Σ_{j≠y_i} max(0, s_j − s_{y_i} + 1) + ½·reg·ΣW²
    softmax  L = −(1/N) Σ_i log softmax(s_i)[y_i]            + ½·reg·ΣW²

Both see the same data (3 Gaussian blobs in 2-D, or `--data spiral`, which no linear classifier
separates: both stay near 50 %), the same initial weights and the same optimizer (full-batch
SGD with momentum).  What the lecture points out shows in the printout: once every margin is
met the SVM's data loss is exactly 0 and its gradient stops, while the softmax loss keeps
shrinking (it is never 0) and keeps pushing the correct scores up.

Run it:  python examples/svm_vs_softmax.py [--data blobs|spiral] [--steps 300]
         [--plot svm_vs_softmax.png]   (tqdm and matplotlib, optional: pip install -e '.[examples]')
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

import compiler
from frontends import dsl
from frontends.dsl import f64, i64

C = 3
REG = 1e-3


def blobs(seed: int = 0, n: int = 100):
    """C Gaussian blobs (σ = 0.5) around points on a circle of radius 3."""
    rng = np.random.default_rng(seed)
    angles = 2 * np.pi * np.arange(C) / C
    centers = 3 * np.c_[np.cos(angles), np.sin(angles)]
    y = np.repeat(np.arange(C), n).astype(np.int64)
    return centers[y] + 0.5 * rng.standard_normal((n * C, 2)), y


def spiral(seed: int = 0, n: int = 100):
    """CS231n's spiral: class j at (r sin t, r cos t), r ∈ [0, 1], t ∈ [4j, 4j+4] + noise."""
    rng = np.random.default_rng(seed)
    r = np.tile(np.linspace(0.0, 1.0, n), C)
    y = np.repeat(np.arange(C), n).astype(np.int64)
    t = np.concatenate([np.linspace(4 * j, 4 * (j + 1), n) for j in range(C)])
    t = t + 0.2 * rng.standard_normal(n * C)
    return np.c_[r * np.sin(t), r * np.cos(t)], y


def svm(W, b, X, y, reg=REG):
    scores = X @ W + b
    data_loss = dsl.svm_loss(scores, y)
    return {"loss": data_loss + 0.5 * reg * dsl.sum(W * W), "data_loss": data_loss,
            "scores": scores}


def softmax(W, b, X, y, reg=REG):
    scores = X @ W + b
    data_loss = dsl.softmax_cross_entropy(scores, y)
    return {"loss": data_loss + 0.5 * reg * dsl.sum(W * W), "data_loss": data_loss,
            "scores": scores}


def progress(iterable, total, enabled):
    if enabled:
        try:
            from tqdm import tqdm
            return tqdm(iterable, total=total, unit="step")
        except ImportError:
            pass
    return iterable


def train(data: str = "blobs", steps: int = 300, lr: float = 0.1, seed: int = 0,
          backend: str = "numpy", bar: bool = True, log=print):
    """Train both classifiers; returns (X, y, {name: step}, {name: losses})."""
    X, y = (blobs if data == "blobs" else spiral)(seed)
    rng = np.random.default_rng(seed)
    init = {"W": 0.01 * rng.standard_normal((2, C)), "b": np.zeros(C)}
    specs = {"X": f64[len(y), 2], "y": i64[len(y)]}
    steps_by = {name: compiler.train_step(fn, init, specs, compiler.optim.Momentum(lr, 0.9),
                                          backend=backend)
                for name, fn in (("svm", svm), ("softmax", softmax))}
    losses = {name: [] for name in steps_by}
    log(f"{'step':>5}  {'SVM loss':>9}  {'softmax loss':>12}")
    for k in progress(range(steps), steps, bar):
        for name, step in steps_by.items():
            losses[name].append(step(X=X, y=y))
        if k % max(1, steps // 6) == 0 or k == steps - 1:
            log(f"{k:5d}  {losses['svm'][-1]:9.4f}  {losses['softmax'][-1]:12.4f}")
    return X, y, steps_by, losses


def save_plot(path, X, y, steps_by, losses):
    """Loss curves and both decision regions in one PNG; skipped without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib is not installed: no plot; pip install -e '.[examples]')")
        return
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    for name, ls in losses.items():
        axes[0].plot(ls, label=name)
    axes[0].set(xlabel="step", ylabel="loss (log scale)", title="training loss", yscale="log")
    axes[0].legend()
    lo, hi = X.min(axis=0) - 0.5, X.max(axis=0) + 0.5
    gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], 200), np.linspace(lo[1], hi[1], 200))
    grid = np.c_[gx.ravel(), gy.ravel()]
    for ax, (name, step) in zip(axes[1:], steps_by.items()):
        region = np.argmax(grid @ step.params["W"] + step.params["b"], axis=1)
        ax.contourf(gx, gy, region.reshape(gx.shape), alpha=0.3, levels=np.arange(C + 1) - 0.5)
        ax.scatter(X[:, 0], X[:, 1], c=y, s=8, edgecolors="k", linewidths=0.2)
        ax.set(title=f"{name} decision regions", xticks=[], yticks=[])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"plot saved to {path}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", choices=("blobs", "spiral"), default="blobs")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backend", default="numpy")
    parser.add_argument("--plot", default="svm_vs_softmax.png", help="PNG path ('' for none)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    X, y, steps_by, losses = train(args.data, args.steps, args.lr, args.seed, args.backend,
                                   bar=not args.no_progress)
    print(f"\n{'':8}{'accuracy':>9}  {'data loss':>10}  {'margins met':>11}  ({args.data}, "
          f"{time.perf_counter() - start:.1f} s)")
    for name, step in steps_by.items():
        out = step.evaluate(X=X, y=y)
        s = out["scores"]
        correct = s[np.arange(len(y)), y][:, None]
        others = np.where(np.eye(C, dtype=bool)[y], -np.inf, s)
        met = np.mean(np.all(correct - others >= 1, axis=1))
        acc = np.mean(np.argmax(s, axis=1) == y)
        print(f"{name:8}{acc:9.4f}  {float(out['data_loss']):10.3g}  {met:11.2%}")
    if args.plot:
        save_plot(args.plot, X, y, steps_by, losses)
    return 0


if __name__ == "__main__":
    sys.exit(main())
