"""Hessian-vector product benchmark: the two-layer net's H·v over all four parameters
(compiler.hvp, reverse over reverse) against one gradient evaluation (compiler.grad: forward,
loss and the four gradients), both compiled by the same backend and timed in the same run.
The target (issue 11): the HVP costs at most 3x one gradient.

Also printed: node counts of the forward, gradient and HVP graphs before and after the pass
pipeline (the CSE pass merges what the second reverse pass recomputes of the first), and a
correctness check of H·v against central differences of the compiled gradient.

    python benchmarks/hvp_bench.py                  # cifar size, numpy and llvm, f64
    python benchmarks/hvp_bench.py --sizes tiny cifar --repeat 30

Times are medians of `--repeat` calls after a warm-up call.  Sizes: tiny N=64,D=2,H=100,C=3;
cifar N=200,D=3072,H=100,C=10.  Exits 1 if a ratio exceeds 3 or a check fails.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import compiler  # noqa: E402
from frontends import dsl  # noqa: E402
from frontends.dsl import f64, i64  # noqa: E402

SIZES = {"tiny": (64, 2, 100, 3), "cifar": (200, 3072, 100, 10)}
PARAMS = ["W1", "b1", "W2", "b2"]
REG = 1e-3
TARGET = 3.0


def two_layer(W1, b1, W2, b2, X, y, reg=REG):
    h = dsl.relu(X @ W1 + b1)
    scores = h @ W2 + b2
    loss = dsl.softmax_cross_entropy(scores, y) + reg * (dsl.sum(W1 * W1) + dsl.sum(W2 * W2))
    return loss


def median_time(fn, kwargs, repeat: int) -> float:
    fn(**kwargs)                                  # warm-up (first-call costs, buffers)
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn(**kwargs)
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def inputs(n, d, hdim, c, seed=0):
    """Weights of scale 1/√fan-in (hidden pre-activations of order 1, so the finite-difference
    check rarely steps across a relu kink) and a random direction v of unit norm."""
    rng = np.random.default_rng(seed)
    ins = {"W1": rng.standard_normal((d, hdim)) / np.sqrt(d), "b1": rng.standard_normal(hdim),
           "W2": rng.standard_normal((hdim, c)) / np.sqrt(hdim), "b2": rng.standard_normal(c),
           "X": rng.standard_normal((n, d)), "y": rng.integers(0, c, n)}
    vs = {"v_" + k: rng.standard_normal(ins[k].shape) for k in PARAMS}
    norm = np.sqrt(sum(float(np.sum(v * v)) for v in vs.values()))
    return ins, {k: v / norm for k, v in vs.items()}


def fd_check(grad_fn, hv, ins, vs, eps=1e-5) -> float:
    """Max relative error of H·v against (∇L(θ + εv) − ∇L(θ − εv)) / 2ε (compiled gradient)."""
    plus = grad_fn(**dict(ins, **{k: ins[k] + eps * vs["v_" + k] for k in PARAMS}))
    minus = grad_fn(**dict(ins, **{k: ins[k] - eps * vs["v_" + k] for k in PARAMS}))
    worst = 0.0
    for k in PARAMS:
        fd = (plus["d" + k] - minus["d" + k]) / (2 * eps)
        scale = max(float(np.max(np.abs(fd))), 1e-8)
        worst = max(worst, float(np.max(np.abs(hv["hv_" + k] - fd))) / scale)
    return worst


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", default=["cifar"], choices=list(SIZES))
    ap.add_argument("--backends", nargs="+", default=list(compiler.BACKENDS),
                    choices=list(compiler.BACKENDS))
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args(argv)
    ok = True
    for size in args.sizes:
        n, d, hdim, c = SIZES[size]
        g = dsl.trace(two_layer, W1=f64[d, hdim], b1=f64[hdim], W2=f64[hdim, c], b2=f64[c],
                      X=f64[n, d], y=i64[n])
        dg = compiler.grad(g, wrt=PARAMS)
        hg = compiler.hvp(g, wrt=PARAMS)
        counts = [(name, len(gr.nodes), len(compiler.optimize(gr).nodes))
                  for name, gr in (("forward", g), ("gradient", dg), ("hvp", hg))]
        no_cse = len(compiler.optimize(hg, [p for p in compiler.passes.DEFAULT_PIPELINE
                                            if p != "cse"]).nodes)
        print(f"== {size}: N={n} D={d} H={hdim} C={c}, f64")
        print("  nodes (built -> after passes): " +
              ", ".join(f"{name} {a} -> {b}" for name, a, b in counts) +
              f"; hvp without cse {no_cse}")
        ins, vs = inputs(n, d, hdim, c)
        for backend in args.backends:
            grad_fn = compiler.compile(dg, backend=backend)
            hvp_fn = compiler.compile(hg, backend=backend)
            t_grad = median_time(grad_fn, ins, args.repeat)
            t_hvp = median_time(hvp_fn, dict(ins, **vs), args.repeat)
            err = fd_check(grad_fn, hvp_fn(**ins, **vs), ins, vs)
            ratio = t_hvp / t_grad
            ok &= ratio <= TARGET and err < 1e-5
            print(f"  {backend:6s} gradient {t_grad * 1e3:8.2f} ms   hvp {t_hvp * 1e3:8.2f} ms   "
                  f"ratio {ratio:4.2f}x (target <= {TARGET:g}x)   H·v vs finite differences "
                  f"of the gradient: rel err {err:.1e}")
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
