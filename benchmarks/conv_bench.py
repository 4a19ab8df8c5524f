"""A convolutional train step against its peers (issue 19.5).

    python benchmarks/conv_bench.py [--reps 7] [--dtypes f32,f64] [--peers numpy,jax,torch]
                                    [--threads=1]

The step: forward, backward and an SGD update (lr 0.01) of a 2-conv CNN on a batch of 64
inputs of 16×32×32 (NCHW), 10 classes:

    h1 = relu(conv3×3(x, K1, pad 1) + c1)      [64, 16, 32, 32] -> [64, 32, 32, 32]
    p1 = maxpool₂(h1)                          [64, 32, 16, 16]
    h2 = relu(conv3×3(p1, K2, pad 1) + c2)     [64, 32, 16, 16]
    s  = global_avg_pool(h2)·W + b             [64, 10];  loss = softmax cross-entropy

Contenders, in one process, one after another, on the same arrays: gradc's compiled train
step (numpy and llvm backends), a hand-written NumPy step (im2col by as_strided + matmul,
col2im by a loop over the 9 kernel offsets: what a person writes), JAX (jit of value_and_grad
and the update, lax.conv_general_dilated) and PyTorch on the CPU (autograd, in-place SGD) when
installed.  Each: warm-up calls, then the median of `--reps` timed calls.  Before timing, every
contender's loss after one step from the same parameters is compared with gradc-numpy's.

The GEMM floor: the time of the matrix products alone that an im2col step needs (per conv:
forward [O, K]·[K, N·P], the weight gradient [O, N·P]·[N·P, K] and, for conv2, the input
gradient [K, O]·[O, N·P]), as NumPy matmuls of contiguous arrays of those shapes.  The
machine may be shared: the load average is printed with the table.  `--threads=N` sets the
thread count of every contender's math library before it loads (OpenBLAS, OpenMP, MKL, XLA's
Eigen pool when N = 1, PyTorch's intra-op pool): on a loaded machine a BLAS worker thread that
waits to be scheduled stalls every gemm call, so one thread each is the fair comparison there.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
THREADS = next((a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--threads=")), None)
if THREADS:          # before NumPy, JAX or PyTorch load their thread pools
    for var in THREAD_VARS:
        os.environ[var] = THREADS
    if THREADS == "1":
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_"
                                   "eigen=false intra_op_parallelism_threads=1").strip()

import numpy as np  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import compiler  # noqa: E402
from frontends import dsl  # noqa: E402
from frontends.dsl import f32, f64, i64  # noqa: E402

N, C0, HW, C1, C2, CLASSES = 64, 16, 32, 32, 32, 10
LR = 0.01
SPEC = {"f32": f32, "f64": f64}


def model(K1, c1, K2, c2, W, b, x, y):
    h1 = dsl.relu(dsl.conv2d(x, K1, padding=1) + c1.reshape(1, C1, 1, 1))
    p1 = dsl.max_pool2d(h1, 2)
    h2 = dsl.relu(dsl.conv2d(p1, K2, padding=1) + c2.reshape(1, C2, 1, 1))
    s = dsl.global_avg_pool(h2) @ W + b
    return dsl.softmax_cross_entropy(s, y)


def init(dtype: str, seed: int = 0):
    rng = np.random.default_rng(seed)
    dt = np.float32 if dtype == "f32" else np.float64
    params = {"K1": rng.standard_normal((C1, C0, 3, 3)) * np.sqrt(2 / (C0 * 9)),
              "c1": np.zeros(C1), "K2": rng.standard_normal((C2, C1, 3, 3)) * np.sqrt(2 / (C1 * 9)),
              "c2": np.zeros(C2), "W": rng.standard_normal((C2, CLASSES)) * 0.3,
              "b": np.zeros(CLASSES)}
    x = rng.standard_normal((N, C0, HW, HW))
    y = rng.integers(0, CLASSES, N)
    return {k: v.astype(dt) for k, v in params.items()}, x.astype(dt), y


# ---- gradc --------------------------------------------------------------------------------
def gradc_step(backend, params, dtype):
    t = SPEC[dtype]
    step = compiler.train_step(model, params=params, inputs={"x": t[N, C0, HW, HW], "y": i64[N]},
                               optimizer=compiler.optim.SGD(lr=LR), backend=backend)
    return (lambda x, y: step(x=x, y=y)), (lambda: step.params)


# ---- hand-written NumPy -------------------------------------------------------------------
def _cols(x):
    """im2col of a 3×3, pad-1 convolution: [N, C·9, H·W] (one copy)."""
    n, c, h, w = x.shape
    xp = np.zeros((n, c, h + 2, w + 2), x.dtype)
    xp[:, :, 1:-1, 1:-1] = x
    s = xp.strides
    win = np.lib.stride_tricks.as_strided(xp, (n, c, 3, 3, h, w),
                                          (s[0], s[1], s[2], s[3], s[2], s[3]))
    return win.reshape(n, c * 9, h * w)


def _col2im(dcols, shape):
    n, c, h, w = shape
    d = dcols.reshape(n, c, 3, 3, h, w)
    dxp = np.zeros((n, c, h + 2, w + 2), dcols.dtype)
    for p in range(3):
        for q in range(3):
            dxp[:, :, p:p + h, q:q + w] += d[:, :, p, q]
    return dxp[:, :, 1:-1, 1:-1]


def numpy_step(params):
    P = {k: v.copy() for k, v in params.items()}

    def step(x, y):
        n = len(y)
        cols1 = _cols(x)
        z1 = np.matmul(P["K1"].reshape(C1, -1), cols1).reshape(n, C1, HW, HW) \
            + P["c1"][None, :, None, None]
        h1 = np.maximum(z1, 0)
        r = h1.reshape(n, C1, HW // 2, 2, HW // 2, 2)
        p1 = r.max(axis=(3, 5))
        cols2 = _cols(p1)
        z2 = np.matmul(P["K2"].reshape(C2, -1), cols2).reshape(n, C2, HW // 2, HW // 2) \
            + P["c2"][None, :, None, None]
        h2 = np.maximum(z2, 0)
        g = h2.mean(axis=(2, 3))
        s = g @ P["W"] + P["b"]
        s = s - s.max(axis=1, keepdims=True)
        e = np.exp(s)
        prob = e / e.sum(axis=1, keepdims=True)
        loss = -np.log(prob[np.arange(n), y]).mean()
        ds = prob
        ds[np.arange(n), y] -= 1
        ds /= n
        dW, db = g.T @ ds, ds.sum(axis=0)
        dg = ds @ P["W"].T
        dz2 = np.broadcast_to(dg[:, :, None, None] / (HW // 2) ** 2, z2.shape) * (z2 > 0)
        dz2m = dz2.reshape(n, C2, -1)
        dK2 = np.matmul(dz2m, cols2.transpose(0, 2, 1)).sum(axis=0).reshape(P["K2"].shape)
        dc2 = dz2.sum(axis=(0, 2, 3))
        dp1 = _col2im(np.matmul(P["K2"].reshape(C2, -1).T, dz2m), p1.shape)
        mask = r == p1[:, :, :, None, :, None]
        dh1 = (mask * dp1[:, :, :, None, :, None] / mask.sum(axis=(3, 5), keepdims=True))
        dz1 = dh1.reshape(z1.shape) * (z1 > 0)
        dz1m = dz1.reshape(n, C1, -1)
        dK1 = np.matmul(dz1m, cols1.transpose(0, 2, 1)).sum(axis=0).reshape(P["K1"].shape)
        dc1 = dz1.sum(axis=(0, 2, 3))
        for k, d in (("K1", dK1), ("c1", dc1), ("K2", dK2), ("c2", dc2), ("W", dW), ("b", db)):
            P[k] -= LR * d
        return float(loss)
    return step, (lambda: P)


# ---- JAX ----------------------------------------------------------------------------------
def jax_step(params, dtype):
    import jax
    import jax.numpy as jnp
    from jax import lax
    if dtype == "f64":
        jax.config.update("jax_enable_x64", True)

    def loss_fn(P, x, y):
        dn = ("NCHW", "OIHW", "NCHW")
        h1 = jax.nn.relu(lax.conv_general_dilated(x, P["K1"], (1, 1), ((1, 1), (1, 1)),
                                                  dimension_numbers=dn)
                         + P["c1"][None, :, None, None])
        p1 = lax.reduce_window(h1, -jnp.inf, lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")
        h2 = jax.nn.relu(lax.conv_general_dilated(p1, P["K2"], (1, 1), ((1, 1), (1, 1)),
                                                  dimension_numbers=dn)
                         + P["c2"][None, :, None, None])
        s = h2.mean(axis=(2, 3)) @ P["W"] + P["b"]
        logp = jax.nn.log_softmax(s, axis=1)
        return -jnp.mean(logp[jnp.arange(N), y])

    @jax.jit
    def update(P, x, y):
        loss, g = jax.value_and_grad(loss_fn)(P, x, y)
        return loss, jax.tree_util.tree_map(lambda p, d: p - LR * d, P, g)
    state = {"P": {k: jnp.asarray(v) for k, v in params.items()}}

    def step(x, y):
        loss, state["P"] = update(state["P"], x, y)
        return float(loss)
    return step, (lambda: state["P"])


# ---- PyTorch ------------------------------------------------------------------------------
def torch_step(params, dtype):
    import torch
    import torch.nn.functional as F
    if THREADS:
        torch.set_num_threads(int(THREADS))
    P = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}

    def step(x, y):
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)
        h1 = F.relu(F.conv2d(xt, P["K1"], P["c1"], padding=1))
        h2 = F.relu(F.conv2d(F.max_pool2d(h1, 2), P["K2"], P["c2"], padding=1))
        loss = F.cross_entropy(h2.mean(dim=(2, 3)) @ P["W"] + P["b"], yt)
        for p in P.values():
            p.grad = None
        loss.backward()
        with torch.no_grad():
            for p in P.values():
                p -= LR * p.grad
        return float(loss.detach())
    return step, (lambda: P)


# ---- timing -------------------------------------------------------------------------------
def median_time(fn, reps, warm=2) -> float:
    for _ in range(warm):
        fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def gemm_floor(dtype, reps) -> float:
    """The matrix products of an im2col step (module docstring), timed alone."""
    dt = np.float32 if dtype == "f32" else np.float64
    rng = np.random.default_rng(0)
    shapes = []
    for c_in, c_out, hw, input_grad in ((C0, C1, HW, False), (C1, C2, HW // 2, True)):
        k, np_ = c_in * 9, N * hw * hw
        shapes += [((c_out, k), (k, np_)), ((c_out, np_), (np_, k))]
        if input_grad:
            shapes.append(((k, c_out), (c_out, np_)))
    mats = [(rng.standard_normal(a).astype(dt), rng.standard_normal(b).astype(dt))
            for a, b in shapes]
    outs = [np.empty((a.shape[0], b.shape[1]), dt) for a, b in mats]

    def run():
        for (a, b), o in zip(mats, outs):
            np.matmul(a, b, out=o)
    return median_time(run, reps)


def bench(dtype, peers, reps) -> list:
    params, x, y = init(dtype)
    makers = {"gradc-numpy": lambda: gradc_step("numpy", params, dtype),
              "gradc-llvm": lambda: gradc_step("llvm", params, dtype),
              "numpy (hand-written)": lambda: numpy_step(params)}
    if "jax" in peers:
        makers["jax"] = lambda: jax_step(params, dtype)
    if "torch" in peers:
        try:
            import torch
            torch.manual_seed(0)
            makers["pytorch"] = lambda: torch_step(params, dtype)
        except ImportError:
            print("(PyTorch is not installed: no pytorch row)")
    rows, first = [], None
    for name, make in makers.items():
        step, _ = make()
        loss = step(x, y)          # the first call: the loss at the shared initial parameters
        first = loss if first is None else first
        if abs(loss - first) > (1e-4 if dtype == "f32" else 1e-9) * max(1.0, abs(first)):
            raise SystemExit(f"{name}: first loss {loss!r} differs from gradc-numpy's {first!r}")
        rows.append((name, median_time(lambda: step(x, y), reps)))
    rows.append(("GEMM floor", gemm_floor(dtype, reps)))
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--dtypes", default="f32,f64")
    ap.add_argument("--peers", default="numpy,jax,torch")
    ap.add_argument("--threads", default=None, help="threads per math library (--threads=N)")
    args = ap.parse_args(argv)
    peers = set(args.peers.split(","))
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; batch {N}, "
          f"{C0}x{HW}x{HW} inputs, median of {args.reps}, threads: {THREADS or 'default'}")
    for dtype in args.dtypes.split(","):
        rows = bench(dtype, peers, args.reps)
        peers_t = [t for n, t in rows if not n.startswith(("gradc", "GEMM"))]
        fastest = min(peers_t) if peers_t else float("nan")
        llvm = dict(rows)["gradc-llvm"]
        print(f"\n{dtype}: step (forward + backward + SGD)\n")
        print("| contender | median ms | vs gradc-llvm | vs fastest peer |")
        print("| --- | ---: | ---: | ---: |")
        for name, t in rows:
            print(f"| {name} | {t * 1e3:.1f} | {t / llvm:.2f}x | {t / fastest:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
