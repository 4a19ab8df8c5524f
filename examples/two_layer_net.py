"""Train a two-layer net on the spiral data set with a gradient compiled by gradc.

The data and the model are those of CS231n's "Putting it together" notes: 3 classes of 100
points each on interleaved spiral arms in 2-D, and a 100-unit ReLU layer followed by a linear
layer and the softmax cross-entropy loss with L2 regularisation:

    h      = relu(X·W1 + b1)                       [N, H]
    scores = h·W2 + b2                             [N, C]
    L      = −(1/N) Σ_i log softmax(scores_i)[y_i] + ½·reg·(ΣW1² + ΣW2²)

gradc traces `loss`, differentiates it with respect to the four parameters (labels are
integers and get no gradient; X is excluded by `wrt`), emits NumPy code for the gradient graph,
and this script runs plain full-batch gradient descent  θ ← θ − lr·∂L/∂θ  on it.

Run it:  python examples/two_layer_net.py [--steps 10000] [--lr 1.0] [--seed 0]
(exits 1 if the training accuracy is below 0.97).
`spiral(seed)`, `loss`, `scores`, `init_params(seed)` are importable for other demos.
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

import compiler
from frontends import dsl
from frontends.dsl import f64, i64

N_PER_CLASS, D, H, C = 100, 2, 100, 3
N = N_PER_CLASS * C
REG = 1e-3
PARAMS = ("W1", "b1", "W2", "b2")


def spiral(seed: int = 0, n_per_class: int = N_PER_CLASS, classes: int = C):
    """The spiral data set: class j's points are (r sin t, r cos t) with r = linspace(0, 1) and
    t = linspace(4j, 4(j+1)) + 0.2·noise.  Returns X f64[n·classes, 2] and y i64[n·classes]."""
    rng = np.random.default_rng(seed)
    X = np.zeros((n_per_class * classes, 2))
    y = np.zeros(n_per_class * classes, dtype=np.int64)
    for j in range(classes):
        ix = slice(n_per_class * j, n_per_class * (j + 1))
        r = np.linspace(0.0, 1.0, n_per_class)
        t = np.linspace(j * 4, (j + 1) * 4, n_per_class) + rng.standard_normal(n_per_class) * 0.2
        X[ix] = np.c_[r * np.sin(t), r * np.cos(t)]
        y[ix] = j
    return X, y


def init_params(seed: int = 0) -> dict:
    """W ~ 0.01·N(0, 1), b = 0, as in CS231n."""
    rng = np.random.default_rng(seed)
    return {"W1": 0.01 * rng.standard_normal((D, H)), "b1": np.zeros(H),
            "W2": 0.01 * rng.standard_normal((H, C)), "b2": np.zeros(C)}


def scores(W1: f64[2, 100], b1: f64[100], W2: f64[100, 3], b2: f64[3], X: f64[300, 2]):
    """The class scores h·W2 + b2 with h = relu(X·W1 + b1)."""
    h = dsl.relu(X @ W1 + b1)
    s = h @ W2 + b2
    return s


def loss(W1: f64[2, 100], b1: f64[100], W2: f64[100, 3], b2: f64[3], X: f64[300, 2],
         y: i64[300], reg: float = REG):
    """Mean softmax cross-entropy of the scores plus ½·reg·(ΣW1² + ΣW2²)."""
    s = scores(W1, b1, W2, b2, X)
    data_loss = dsl.softmax_cross_entropy(s, y)
    reg_loss = 0.5 * reg * (dsl.sum(W1 * W1) + dsl.sum(W2 * W2))
    L = data_loss + reg_loss
    return L


def train(steps: int = 10000, lr: float = 1.0, seed: int = 0, every: int = 1000,
          log=print) -> tuple[dict, float]:
    """Full-batch gradient descent with the compiled gradient; returns (params, accuracy)."""
    X, y = spiral(seed)
    params = init_params(seed)
    step = compiler.compile(compiler.grad(dsl.trace(loss), wrt=list(PARAMS)), backend="numpy")
    forward = compiler.compile(dsl.trace(scores), backend="numpy")
    for k in range(steps):
        out = step(X=X, y=y, **params)
        if k % every == 0 or k == steps - 1:
            log(f"step {k:5d}  loss {float(out['out']):.4f}")
        for p in PARAMS:
            params[p] -= lr * out["d" + p]
    predicted = np.argmax(forward(X=X, **params)["out"], axis=1)
    return params, float(np.mean(predicted == y))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=10000)
    parser.add_argument("--lr", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    _, accuracy = train(steps=args.steps, lr=args.lr, seed=args.seed)
    elapsed = time.perf_counter() - start
    print(f"training accuracy {accuracy:.4f}  ({elapsed:.1f} s)")
    if accuracy < 0.97:
        print("FAIL: training accuracy is below 0.97", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
