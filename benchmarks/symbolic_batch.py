"""Fixed vs symbolic batch dimension (issue 17.3): the two-layer SGD train step (relu hidden
layer, softmax cross-entropy, benchmarks/workloads.py) compiled with X: f64[N, D] for the
batch's N, and with X: f64["N", D] (one compiled step for every N), on both backends.  Prints
the median time of one step for each and the ratio symbolic / fixed, plus the time to a first
step (trace, grad, compile, first call) and, for the symbolic step, its first call at a second
batch size (both run as they are: the LLVM kernel reads N at run time and only allocates
the new size's buffers, see compiler/codegen/llvm_dims.py).  `kernel ratio` times the compiled
function alone at the same N (the step's own work and, for the symbolic LLVM step, the
per-size dispatch of compiler/sized_kernel.py left out): the native code's part of the gap.

    python benchmarks/symbolic_batch.py                         # tiny, cifar, big
    python benchmarks/symbolic_batch.py --sizes tiny cifar --repeat 30

tiny N=64,D=2,H=100,C=3; cifar N=200,D=3072,H=100,C=10; big N=1024,D=1024,H=1024,C=10.
Each timing runs the same batches through both steps, interleaved, so drift on a shared
machine affects both alike.  `OPENBLAS_NUM_THREADS=1` gives steadier GEMM-bound numbers.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import compiler  # noqa: E402
from frontends.dsl import f64, i64  # noqa: E402

from benchmarks.workloads import LR, TWO_LAYER, train_data, two_layer, _two_layer  # noqa: E402


def build(wl, params, symbolic: bool, backend: str):
    n, d = ("N", wl.dims[0]) if symbolic else (wl.n, wl.dims[0])
    started = time.perf_counter()
    step = compiler.train_step(two_layer, params=params, inputs={"X": f64[n, d], "y": i64[n]},
                               optimizer=compiler.optim.SGD(lr=LR), backend=backend)
    return step, time.perf_counter() - started


def median_ms(step, X, y, repeat: int) -> list:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        step(X=X, y=y)
        times.append(time.perf_counter() - t)
    return times


def kernel_call(step, n: int):
    """The compiled function the step calls at batch size n, and the arguments it passes
    besides the batch (parameters, buffers, lr, t), for timing it alone."""
    c = step._last
    k = c.kernel
    k = k.kernel_for({"N": n}) if hasattr(k, "kernel_for") else k
    return lambda X, y: k(copy=False, **c.fixed, X=X, y=y)


def run(size: str, backend: str, repeat: int) -> dict:
    wl = _two_layer(size, *TWO_LAYER[size], "f64")
    params, X, y = train_data(wl)
    ready = []
    for symbolic in (False, True):     # build + first call (the symbolic LLVM step builds the
        t = time.perf_counter()        # native kernel of a size at its first call)
        step, _ = build(wl, params, symbolic, backend)
        step(X=X, y=y)
        ready.append((step, time.perf_counter() - t))
    (fixed, t_fixed), (sym, t_sym) = ready
    a, b = [], []
    for _ in range(repeat):                        # interleaved, one call each
        a += median_ms(fixed, X, y, 1)
        b += median_ms(sym, X, y, 1)
    kf, ks = kernel_call(fixed, wl.n), kernel_call(sym, wl.n)
    ka, kb = [], []
    for _ in range(repeat):                        # the compiled functions alone, interleaved
        ka += median_ms(kf, X, y, 1)
        kb += median_ms(ks, X, y, 1)
    half = max(1, wl.n // 2)
    t = time.perf_counter()
    sym(X=X[:half], y=y[:half])                    # a second batch size, first call
    first_other = time.perf_counter() - t
    return {"size": size, "backend": backend, "fixed": statistics.median(a),
            "symbolic": statistics.median(b),
            "kernel_ratio": statistics.median(kb) / statistics.median(ka),
            "build_fixed": t_fixed, "build_symbolic": t_sym,
            "new_size_first_call": first_other, "compilations": sym.compilations}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["tiny", "cifar", "big"],
                        choices=sorted(TWO_LAYER))
    parser.add_argument("--backends", nargs="+", default=["numpy", "llvm"],
                        choices=["numpy", "llvm"])
    parser.add_argument("--repeat", type=int, default=None,
                        help="timed steps per variant (default: 50 tiny, 20 cifar, 5 big)")
    args = parser.parse_args(argv)
    os.environ.setdefault("GRADC_CACHE_DIR", tempfile.mkdtemp(prefix="gradc-bench-"))
    print(f"{'step':<16} {'fixed ms':>9} {'symbolic ms':>12} {'ratio':>6} {'kernel ratio':>13} "
          f"{'ready fixed s':>14} {'ready sym s':>12} {'new N, 1st call s':>18}")
    for size in args.sizes:
        for backend in args.backends:
            repeat = args.repeat or {"tiny": 50, "cifar": 20, "big": 5}[size]
            r = run(size, backend, repeat)
            print(f"{size + '/' + backend:<16} {r['fixed'] * 1e3:9.3f} {r['symbolic'] * 1e3:12.3f} "
                  f"{r['symbolic'] / r['fixed']:6.2f} {r['kernel_ratio']:13.2f} "
                  f"{r['build_fixed']:14.2f} "
                  f"{r['build_symbolic']:12.2f} {r['new_size_first_call']:18.3f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
