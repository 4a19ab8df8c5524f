"""Newton's method on a small logistic regression, with the Hessian compiled by gradc, against
stochastic gradient descent on the same loss.

The model (labels y ∈ {0, 1}, a bias column in X, L2 regularisation):

    z = X·w                                          [N]
    L = (1/N) Σ_i (softplus(z_i) − y_i·z_i) + ½·reg·Σ w²

gradc traces L, and `compiler.hessian(graph, wrt="w")` builds one graph that returns L, ∇L and
the D×D Hessian  ∇²L = (1/N) Xᵀ·diag(σ(z)(1−σ(z)))·X + reg·I  (stacked from D Hessian-vector
products, each a second reverse pass).  Newton's step solves ∇²L·Δ = ∇L and sets w ← w − Δ;
near the minimum the gradient norm squares at every step (quadratic convergence), so a handful
of steps reaches machine precision.  SGD (minibatches of 20, step size 0.5) uses the compiled
gradient and needs many epochs to get close.

Run it:  python examples/newton.py [--backend numpy|llvm] [--seed 0]
(exits 1 unless Newton reaches ‖∇L‖ < 1e-10 within 10 steps and ends below SGD's loss).
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

import compiler
from frontends import dsl
from frontends.dsl import f64

N, D = 200, 5          # 4 features and a bias column
BATCH = 20
REG = 1e-2


def loss(w, X, y, reg=REG):
    """Mean logistic loss softplus(z) − y·z (= −log σ(z) for y=1, −log(1−σ(z)) for y=0)."""
    z = X @ w
    data = dsl.mean(dsl.softplus(z) - y * z)
    return data + 0.5 * reg * dsl.sum(w * w)


def make_data(seed: int = 0):
    """Two overlapping Gaussian classes in 4-D; X gets a bias column of ones."""
    rng = np.random.default_rng(seed)
    w_true = np.array([1.5, -2.0, 0.5, 1.0, -0.3])
    X = np.c_[rng.standard_normal((N, D - 1)), np.ones(N)]
    p = 1 / (1 + np.exp(-X @ w_true))
    y = (rng.random(N) < p).astype(np.float64)
    return X, y


def newton(step_fn, X, y, steps: int = 10, tol: float = 1e-10):
    """w ← w − (∇²L)⁻¹·∇L from w = 0; returns (w, history of (L, ‖∇L‖))."""
    w = np.zeros(D)
    history = []
    for _ in range(steps):
        out = step_fn(w=w, X=X, y=y)
        history.append((float(out["out"]), float(np.linalg.norm(out["dw"]))))
        if history[-1][1] < tol:
            break
        w = w - np.linalg.solve(out["hessian_w"], out["dw"])
    return w, history


def sgd(batch_grad, full_grad, X, y, epochs: int = 50, batch: int = 20, lr: float = 0.5,
        seed: int = 0):
    """Minibatch SGD from w = 0: `batch_grad` is the gradient compiled for a minibatch of
    `batch` rows (the same loss traced with X f64[batch, D]); returns (w, loss per epoch)."""
    rng = np.random.default_rng(seed)
    w = np.zeros(D)
    losses = []
    for _ in range(epochs):
        order = rng.permutation(N)
        for k in range(0, N - batch + 1, batch):
            idx = order[k:k + batch]
            w = w - lr * batch_grad(w=w, X=X[idx], y=y[idx])["dw"]
        losses.append(float(full_grad(w=w, X=X, y=y)["out"]))
    return w, losses


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="numpy", choices=compiler.BACKENDS)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=50)
    args = ap.parse_args(argv)

    g = dsl.trace(loss, w=f64[D], X=f64[N, D], y=f64[N])
    hess_fn = compiler.compile(compiler.hessian(g, wrt="w"), backend=args.backend)
    grad_fn = compiler.compile(compiler.grad(g, wrt="w"), backend=args.backend)
    gb = dsl.trace(loss, w=f64[D], X=f64[BATCH, D], y=f64[BATCH])
    batch_fn = compiler.compile(compiler.grad(gb, wrt="w"), backend=args.backend)
    X, y = make_data(args.seed)

    w_newton, hist = newton(hess_fn, X, y)
    print(f"Newton's method (compiled Hessian, backend {args.backend}):")
    for k, (L, gn) in enumerate(hist):
        print(f"  step {k}: loss {L:.12f}   |grad| {gn:.3e}")
    w_sgd, losses = sgd(batch_fn, grad_fn, X, y, epochs=args.epochs, batch=BATCH,
                         seed=args.seed)
    print(f"SGD (minibatch {BATCH}, lr 0.5), {args.epochs} epochs of {N // BATCH} steps:")
    for e in sorted({0, 4, 9, len(losses) - 1}):
        print(f"  epoch {e + 1:3d}: loss {losses[e]:.12f}")
    best = hist[-1][0]
    print(f"Newton: {len(hist) - 1} steps to |grad| {hist[-1][1]:.1e}, loss {best:.12f}")
    print(f"SGD:    {len(losses) * (N // BATCH)} steps, loss {losses[-1]:.12f} "
          f"(above Newton's by {losses[-1] - best:.2e}); |w_sgd − w_newton| = "
          f"{np.linalg.norm(w_sgd - w_newton):.2e}")
    ok = hist[-1][1] < 1e-10 and len(hist) <= 10 and best <= losses[-1]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
