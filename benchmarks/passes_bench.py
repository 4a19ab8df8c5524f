"""Benchmark of the passes and the memory-planned NumPy backend (issue 5).  Not a test.

    python benchmarks/passes_bench.py                 # all sizes, f64 and f32
    python benchmarks/passes_bench.py --sizes tiny --reps 200

1. The two-layer net's gradient graph with and without the pass pipeline: node count, bytes
   allocated per call, the peak of live intermediate bytes (unplanned code), and the planned
   buffers (allocated once, reused across calls).
2. One SGD train step (forward + gradient + update) of the two-layer net (relu hidden layer,
   softmax cross-entropy), timed in the same run, interleaved (in a shuffled order each round),
   median of `reps`:
     hand     a hand-written CS231n-style NumPy step (the oracle and the baseline)
     kernel   the compiled step graph (compiler.train_step's graph, passes + memory planning),
              called directly by keyword with copy=False (every argument checked) and the new
              parameters copied back in place
     bound    the same kernel through `kernel.bind(params, donate=...)`: parameters checked
              once, updates computed into the parameter arrays (what the train step does)
     step     the public compiler.train_step object (its own bookkeeping included)
     nopass   compiler.train_step with passes=[] (no passes, no planning)
   The ratio is time / hand (below 1.0: faster than the hand-written step).
Sizes: tiny N=64 D=2 H=100 C=3; cifar N=200 D=3072 H=100 C=10; big N=1024 D=1024 H=1024 C=10.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import compiler  # noqa: E402
from compiler.passes.memory import plan_memory  # noqa: E402
from frontends import dsl  # noqa: E402
from frontends.dsl import f32, f64, i64  # noqa: E402

SIZES = {"tiny": (64, 2, 100, 3), "cifar": (200, 3072, 100, 10), "big": (1024, 1024, 1024, 10)}
SPEC = {"f64": f64, "f32": f32}
LR = 1e-3


def two_layer(W1, b1, W2, b2, X, y):
    h = dsl.relu(X @ W1 + b1)
    scores = h @ W2 + b2
    return dsl.softmax_cross_entropy(scores, y)


def hand_step(p, X, y, lr=LR):
    """CS231n assignment-style forward, backward and SGD update, in place on p."""
    W1, b1, W2, b2 = p["W1"], p["b1"], p["W2"], p["b2"]
    n = X.shape[0]
    h = np.maximum(0, X.dot(W1) + b1)
    scores = h.dot(W2) + b2
    shifted = scores - scores.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    probs = e / e.sum(axis=1, keepdims=True)
    loss = -np.log(probs[np.arange(n), y]).mean()
    dscores = probs
    dscores[np.arange(n), y] -= 1
    dscores /= n
    dW2 = h.T.dot(dscores)
    db2 = dscores.sum(axis=0)
    dh = dscores.dot(W2.T)
    dh[h <= 0] = 0
    dW1 = X.T.dot(dh)
    db1 = dh.sum(axis=0)
    W1 -= lr * dW1
    b1 -= lr * db1
    W2 -= lr * dW2
    b2 -= lr * db2
    return loss


def init(size, dtype, seed=0):
    n, d, hdim, c = SIZES[size]
    rng = np.random.default_rng(seed)
    dt = np.float64 if dtype == "f64" else np.float32
    params = {"W1": (rng.standard_normal((d, hdim)) / np.sqrt(d)).astype(dt),
              "b1": np.zeros(hdim, dt),
              "W2": (rng.standard_normal((hdim, c)) / np.sqrt(hdim)).astype(dt),
              "b2": np.zeros(c, dt)}
    X = rng.standard_normal((n, d)).astype(dt)
    y = rng.integers(0, c, n)
    return params, X, y


def graph_report(size="cifar", dtype="f64"):
    n, d, hdim, c = SIZES[size]
    t = SPEC[dtype]
    g = dsl.trace(two_layer, W1=t[d, hdim], b1=t[hdim], W2=t[hdim, c], b2=t[c], X=t[n, d],
                  y=i64[n])
    dg = compiler.grad(g, wrt=["W1", "b1", "W2", "b2"])
    og = compiler.optimize(dg)
    raw, opt = plan_memory(dg), plan_memory(og)
    print(f"two-layer gradient graph ({size}, {dtype}):")
    print(f"  {'':22s}{'nodes':>7s}{'alloc/call B':>15s}{'peak live B':>14s}{'buffers B':>12s}"
          f"{'fresh/call B':>14s}")
    print(f"  {'without passes':22s}{len(dg.nodes):7d}{raw.unplanned_per_call:15d}"
          f"{raw.unplanned_peak:14d}{'-':>12s}{raw.unplanned_per_call:14d}")
    print(f"  {'passes + planning':22s}{len(og.nodes):7d}{opt.unplanned_per_call:15d}"
          f"{opt.unplanned_peak:14d}{opt.buffer_bytes:12d}{opt.planned_per_call:14d}")


def time_steps(size, dtype, reps):
    params, X, y = init(size, dtype)
    n, d, hdim, c = SIZES[size]
    t = SPEC[dtype]
    specs = {"X": t[n, d], "y": i64[n]}
    hand_p = {k: v.copy() for k, v in params.items()}
    step = compiler.train_step(two_layer, params, specs, compiler.optim.SGD(lr=LR))
    nopass = compiler.train_step(two_layer, params, specs, compiler.optim.SGD(lr=LR), passes=[])
    # the oracle: one step of each from the same start gives the same loss and parameters
    l_hand = hand_step(hand_p, X, y)
    l_step = step(X=X, y=y)
    l_nop = nopass(X=X, y=y)
    tol = 1e-9 if dtype == "f64" else 2e-4
    assert abs(l_hand - l_step) <= tol * max(1, abs(l_hand)), (l_hand, l_step)
    assert abs(l_hand - l_nop) <= tol * max(1, abs(l_hand)), (l_hand, l_nop)
    for k in params:
        np.testing.assert_allclose(step.params[k], hand_p[k], rtol=tol * 10, atol=tol)
    runners = {"hand": lambda: hand_step(hand_p, X, y), "step": lambda: step(X=X, y=y),
               "nopass": lambda: nopass(X=X, y=y)}
    kernel = _kernel_runner(step, X, y)
    if kernel is not None:
        runners["kernel"] = kernel
        if hasattr(step._last.kernel, "bind"):
            runners["bound"] = _bound_runner(step, X, y)
    times = {k: [] for k in runners}
    for _ in range(3):                 # warm up (buffers allocated, caches filled)
        for f in runners.values():
            f()
    order = list(runners)
    shuffle = np.random.default_rng(1).shuffle
    for _ in range(reps):
        shuffle(order)                 # interleaved, in a new order each round: the machine's
        for k in order:                # noise hits all alike, and no runner always starts on
            f = runners[k]             # the caches the same other one left behind
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    med = {k: float(np.median(v)) for k, v in times.items()}
    line = f"  {size:6s} {dtype}  hand {med['hand'] * 1e3:9.3f} ms"
    for k in ("kernel", "bound", "step", "nopass"):
        if k in med:
            line += f"   {k} {med[k] * 1e3:9.3f} ms ({med[k] / med['hand']:.2f}x)"
    print(line, flush=True)
    return med


def _kernel_runner(step, X, y):
    """The step's compiled kernel called directly with copy=False (the results are the
    kernel's own buffers), the new parameters copied back in place.  SGD only (no state)."""
    c = step._last
    lay = c.layout
    if step.state or c.dropout:
        return None
    kernel, params = c.kernel, step.params
    back = [(inp, key) for inp, key in lay.writeback if inp in params]
    fixed = {lay.base_lr: np.float64(LR), lay.t: np.int64(0)}

    def run():
        out = kernel(copy=False, X=X, y=y, **params, **fixed)
        for inp, key in back:
            np.copyto(params[inp], out[key])
        return out[c.loss_key]
    return run


def _bound_runner(step, X, y):
    """The step's kernel bound to the parameters (NumpyKernel.bind), updates computed into
    them.  Parameters of its own (copies), so that it trains alongside the others."""
    c = step._last
    lay = c.layout
    fixed = {k: v.copy() for k, v in step.params.items()}
    fixed[lay.base_lr], fixed[lay.t] = np.full((), LR), np.zeros((), np.int64)
    run = c.kernel.bind(fixed, donate={key: inp for inp, key in lay.writeback
                                       if inp in step.params})
    back = [(fixed[inp], key) for inp, key in lay.writeback if inp in step.params]

    def go():
        out = run(X=X, y=y)
        for dst, key in back:
            if out[key] is not dst:
                np.copyto(dst, out[key])
        return float(out[c.loss_key])
    return go


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="*", default=list(SIZES), choices=list(SIZES))
    ap.add_argument("--dtypes", nargs="*", default=["f64", "f32"], choices=["f64", "f32"])
    ap.add_argument("--reps", type=int, default=0, help="timed steps per runner (default by size)")
    a = ap.parse_args(argv)
    graph_report("cifar", "f64")
    graph_report("big", "f32")
    print("SGD train step, median time per step (ratio to the hand-written step):")
    for size in a.sizes:
        for dtype in a.dtypes:
            reps = a.reps or {"tiny": 300, "cifar": 40, "big": 10}[size]
            time_steps(size, dtype, reps)


if __name__ == "__main__":
    main()
