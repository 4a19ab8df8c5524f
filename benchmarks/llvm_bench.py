"""LLVM backend benchmark: the two-layer net's gradient (forward, loss, gradient of every
parameter) compiled with backend="llvm", against hand-written NumPy and against the GEMM floor
(NumPy's matmul alone on the five products a train step needs), all in the same run; the
lecture's sigmoid neuron (value and both gradients) per call through the public callable;
cold compile time, and warm-disk-cache compile time in a new process.

    python benchmarks/llvm_bench.py                 # tiny, cifar, big; f64 and f32
    python benchmarks/llvm_bench.py --sizes tiny    # a subset

Times are medians.  tiny N=64,D=2,H=100,C=3; cifar N=200,D=3072,H=100,C=10;
big N=1024,D=1024,H=1024,C=10.  On a machine shared with other work, multithreaded BLAS makes
the GEMM-bound sizes erratic: `OPENBLAS_NUM_THREADS=1 python benchmarks/llvm_bench.py` gives
stable ratios (NumPy's and SciPy's OpenBLAS both read it).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import compiler  # noqa: E402
from frontends import dsl  # noqa: E402
from frontends.dsl import f32, f64, i64  # noqa: E402

SIZES = {"tiny": (64, 2, 100, 3), "cifar": (200, 3072, 100, 10), "big": (1024, 1024, 1024, 10)}
REG = 1e-3


def two_layer(W1, b1, W2, b2, X, y, reg=REG):
    h = dsl.relu(X @ W1 + b1)
    scores = h @ W2 + b2
    loss = dsl.softmax_cross_entropy(scores, y) + reg * (dsl.sum(W1 * W1) + dsl.sum(W2 * W2))
    return loss


def numpy_step(W1, b1, W2, b2, X, y, reg=REG):
    """The hand-written forward and backward pass (CS231n style)."""
    n = X.shape[0]
    hpre = X @ W1 + b1
    h = np.maximum(hpre, 0)
    scores = h @ W2 + b2
    shifted = scores - scores.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    probs = e / e.sum(axis=1, keepdims=True)
    loss = -np.mean(np.log(probs[np.arange(n), y])) + reg * (np.sum(W1 * W1) + np.sum(W2 * W2))
    dscores = probs
    dscores[np.arange(n), y] -= 1
    dscores /= n
    dW2 = h.T @ dscores + 2 * reg * W2
    db2 = dscores.sum(axis=0)
    dh = dscores @ W2.T
    dh[hpre <= 0] = 0
    dW1 = X.T @ dh + 2 * reg * W1
    db1 = dh.sum(axis=0)
    return loss, dW1, db1, dW2, db2


def median_time(fn, min_time=0.2, repeats=7) -> float:
    """Median seconds per call: `repeats` samples, each a loop lasting ≥ min_time/repeats."""
    fn()
    n, t = 1, 0.0
    while True:
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        t = time.perf_counter() - t0
        if t >= min_time / repeats:
            break
        n *= 4
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        samples.append((time.perf_counter() - t0) / n)
    return float(np.median(samples))


def gemm_floor(W1, W2, X, dtype) -> float:
    """The five products of a step (X·W1, h·W2, hᵀ·G, G·W2ᵀ, Xᵀ·dh) with preallocated outputs."""
    n, d = X.shape
    hdim, c = W2.shape
    h = np.ones((n, hdim), dtype)
    g = np.ones((n, c), dtype)
    outs = [np.empty((n, hdim), dtype), np.empty((n, c), dtype), np.empty((hdim, c), dtype),
            np.empty((n, hdim), dtype), np.empty((d, hdim), dtype)]

    def run():
        np.matmul(X, W1, out=outs[0])
        np.matmul(h, W2, out=outs[1])
        np.matmul(h.T, g, out=outs[2])
        np.matmul(g, W2.T, out=outs[3])
        np.matmul(X.T, outs[3], out=outs[4])
    return median_time(run)


def bench_two_layer(size: str, dtype: str) -> dict:
    n, d, hdim, c = SIZES[size]
    spec = {"f64": f64, "f32": f32}[dtype]
    npdt = np.float64 if dtype == "f64" else np.float32
    rng = np.random.default_rng(0)
    params = {"W1": (rng.standard_normal((d, hdim)) * np.sqrt(2 / d)).astype(npdt),
              "b1": np.zeros(hdim, npdt),
              "W2": (rng.standard_normal((hdim, c)) * np.sqrt(2 / hdim)).astype(npdt),
              "b2": np.zeros(c, npdt)}
    data = {"X": rng.standard_normal((n, d)).astype(npdt), "y": rng.integers(0, c, n)}
    g = dsl.trace(two_layer, W1=spec[d, hdim], b1=spec[hdim], W2=spec[hdim, c], b2=spec[c],
                  X=spec[n, d], y=i64[n])
    dg = compiler.grad(g, wrt=["W1", "b1", "W2", "b2"])
    t0 = time.perf_counter()
    fn = compiler.compile(dg, backend="llvm")
    compile_s = time.perf_counter() - t0
    args = dict(params, **data)
    got = fn(**args)
    ref = numpy_step(**args)
    tol = 1e-9 if dtype == "f64" else 2e-3
    for k, r in zip(("out", "dW1", "db1", "dW2", "db2"), ref):
        err = np.max(np.abs(got[k] - r)) / max(1e-30, np.max(np.abs(r)))
        assert err < tol, f"{size} {dtype}: {k} differs from hand-written NumPy ({err:.2e})"
    return {"size": size, "dtype": dtype, "llvm": median_time(lambda: fn(**args)),
            "numpy": median_time(lambda: numpy_step(**args)),
            "floor": gemm_floor(params["W1"], params["W2"], data["X"], npdt),
            "compile": compile_s, "cached": fn.cached}


def bench_train_step(size: str, dtype: str) -> dict:
    """compiler.train_step (forward, gradient, SGD update, params updated in place) per call,
    LLVM and NumPy backends: the public API including its Python bookkeeping."""
    n, d, hdim, c = SIZES[size]
    spec = {"f64": f64, "f32": f32}[dtype]
    npdt = np.float64 if dtype == "f64" else np.float32
    rng = np.random.default_rng(0)
    params = {"W1": (0.01 * rng.standard_normal((d, hdim))).astype(npdt),
              "b1": np.zeros(hdim, npdt), "W2": (0.01 * rng.standard_normal((hdim, c))).astype(npdt),
              "b2": np.zeros(c, npdt)}
    X, y = rng.standard_normal((n, d)).astype(npdt), rng.integers(0, c, n)
    out = {}
    for backend in ("llvm", "numpy"):
        step = compiler.train_step(two_layer, params=params, inputs={"X": spec[n, d], "y": i64[n]},
                                   optimizer=compiler.optim.SGD(lr=1e-3), backend=backend)
        out[backend] = median_time(lambda: step(X=X, y=y))
    return out


def neuron(w, x):
    return dsl.sigmoid(w[0] * x[0] + w[1] * x[1] + w[2])


def bench_neuron() -> float:
    fn = compiler.compile(compiler.grad(dsl.trace(neuron, w=f64[3], x=f64[2])), backend="llvm")
    w, x = np.array([2.0, -3.0, -3.0]), np.array([-1.0, -2.0])
    return median_time(lambda: fn(w=w, x=x))


_CHILD = """
import sys, time
sys.path.insert(0, {root!r})
t0 = time.perf_counter()
sys.path.insert(0, {bench!r})
import compiler, llvm_bench as B
from frontends import dsl
from frontends.dsl import f64, i64
n, d, h, c = B.SIZES["cifar"]
g = dsl.trace(B.two_layer, W1=f64[d, h], b1=f64[h], W2=f64[h, c], b2=f64[c], X=f64[n, d], y=i64[n])
dg = compiler.grad(g, wrt=["W1", "b1", "W2", "b2"])
t1 = time.perf_counter()
fn = compiler.compile(dg, backend="llvm")
print(time.perf_counter() - t1, fn.cached)
"""


def compile_times() -> tuple:
    """(cold, warm-cache) compile seconds of the cifar step, each in a fresh process."""
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, GRADC_CACHE_DIR=tmp)
        out = []
        for _ in range(2):
            code = _CHILD.format(root=root, bench=os.path.dirname(os.path.abspath(__file__)))
            r = subprocess.run([sys.executable, "-c", code], env=env,
                               capture_output=True, text=True, check=True)
            secs, cached = r.stdout.split()
            out.append((float(secs), cached == "True"))
    return out[0], out[1]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="tiny,cifar,big")
    ap.add_argument("--dtypes", default="f64,f32")
    ap.add_argument("--no-compile", action="store_true", help="skip the compile-time runs")
    a = ap.parse_args(argv)
    print(f"{'size':6} {'dtype':5} {'llvm':>10} {'numpy':>10} {'gemm floor':>11} "
          f"{'numpy/llvm':>10} {'llvm/floor':>10} {'compile':>8}")
    for size in a.sizes.split(","):
        for dtype in a.dtypes.split(","):
            r = bench_two_layer(size, dtype)
            print(f"{size:6} {dtype:5} {_fmt(r['llvm']):>10} {_fmt(r['numpy']):>10} "
                  f"{_fmt(r['floor']):>11} {r['numpy'] / r['llvm']:>9.2f}x "
                  f"{r['llvm'] / r['floor']:>9.2f}x {r['compile']:>7.3f}s"
                  + (" (cached)" if r["cached"] else ""))
    print(f"sigmoid neuron value+grad per call (public callable): {_fmt(bench_neuron())}")
    for size in a.sizes.split(","):
        try:
            r = bench_train_step(size, "f64")
            print(f"compiler.train_step {size} f64 (SGD): llvm {_fmt(r['llvm'])}, "
                  f"numpy backend {_fmt(r['numpy'])}")
        except Exception as e:  # train_step belongs to another part of gradc
            print(f"compiler.train_step {size}: unavailable ({type(e).__name__}: {e})")
    if not a.no_compile:
        (cold, _), (warm, hit) = compile_times()
        print(f"cifar step compile in a new process: cold {cold * 1e3:.0f} ms, warm disk cache "
              f"{warm * 1e3:.1f} ms{'' if hit else ' (cache MISSED)'}")


def _fmt(s: float) -> str:
    return f"{s * 1e6:.1f} µs" if s < 1e-3 else f"{s * 1e3:.2f} ms"


if __name__ == "__main__":
    main()
