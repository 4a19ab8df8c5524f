"""Data-parallel throughput of the cifar-size two-layer train step (issue 20.6).

    python benchmarks/data_parallel.py [--steps 30] [--rounds 3] [--backend numpy|llvm]

The step: N=200 samples (the global batch), D=3072, H=100, C=10, f64, SGD, the model of
benchmarks/workloads.py (two_layer).  Three configurations, each in fresh processes, one after
another, `--rounds` times (the best round is reported, the others printed):

    1 rank x 2 threads   one process, OPENBLAS_NUM_THREADS=2 (and OMP/MKL), the whole batch
    1 rank x 1 thread    one process, one thread, the whole batch
    2 ranks x 1 thread   mpiexec -n 2, one thread each, 100 samples per rank, one all-reduce
                         of the 2.47 MB gradient buffer per step (compiler/distributed.py)

samples/s = 200 / (median seconds per step) after 3 warm-up steps.  For the 2-rank run also:
the all-reduce time per step as the step sees it (`step.allreduce_seconds`: includes waiting
for the slower rank) and a bare `Allreduce` of a buffer of the same size between the same two
processes (the communication alone).  The machine is shared (load average printed): treat the
numbers as what this machine gave at that moment.  Because two ranks only run at once when two
cores are free, the script also times one rank's half of the work alone (1 rank x 1 thread on
100 samples) and prints the projection T(200) / (T(100) + bare all-reduce): what 2 ranks on 2
otherwise idle cores would give, from measurements of one process at a time.
Needs mpi4py (pip install -e '.[mpi]').
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
N, D, H, C = 200, 3072, 100, 10
THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def child(steps: int, backend: str) -> None:
    """In each process (under mpiexec or not): build the step, time `steps` calls; rank 0
    prints one JSON line."""
    sys.path.insert(0, ROOT)
    sys.path.insert(0, HERE)
    import numpy as np
    import compiler
    from frontends.dsl import f64, i64
    from workloads import two_layer
    comm = None
    rank, size = 0, 1
    if os.environ.get("DP_MPI"):
        from mpi4py import MPI
        comm = MPI.COMM_WORLD
        rank, size = comm.Get_rank(), comm.Get_size()
    rng = np.random.default_rng(0)
    params = {"W1": rng.standard_normal((D, H)) * np.sqrt(2.0 / D), "b1": np.zeros(H),
              "W2": rng.standard_normal((H, C)) * np.sqrt(2.0 / H), "b2": np.zeros(C)}
    X, y = rng.standard_normal((N, D)), rng.integers(0, C, N)
    rows = int(os.environ.get("DP_ROWS", N))        # the global batch (100: half the work)
    mine = slice(rows * rank // size, rows * (rank + 1) // size)
    n = mine.stop - mine.start
    kw = {} if comm is None else {"comm": comm}
    step = compiler.train_step(two_layer, params=params, inputs={"X": f64[n, D], "y": i64[n]},
                               optimizer=compiler.optim.SGD(lr=1e-3), backend=backend, **kw)
    Xs, ys = np.ascontiguousarray(X[mine]), y[mine]
    for _ in range(3):
        step(X=Xs, y=ys)
    times = []
    reduce0 = getattr(step, "allreduce_seconds", 0.0)
    for _ in range(steps):
        if comm is not None:
            comm.Barrier()
        t = time.perf_counter()
        step(X=Xs, y=ys)
        times.append(time.perf_counter() - t)
    out = {"step_s": statistics.median(times), "ranks": size}
    if comm is not None:
        out["allreduce_in_step_s"] = (step.allreduce_seconds - reduce0) / steps
        buf = np.zeros_like(step.buffer)
        bare = []
        for _ in range(steps):
            comm.Barrier()
            t = time.perf_counter()
            comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
            bare.append(time.perf_counter() - t)
        out["allreduce_bare_s"] = statistics.median(bare)
        out["buffer_bytes"] = int(step.buffer.nbytes)
        every = comm.gather(out["step_s"], root=0)
        if rank == 0:
            out["step_s"] = max(every)         # the step ends when the slower rank's does
    if rank == 0:
        print("RESULT " + json.dumps(out), flush=True)


def run(config: str, threads: int, ranks: int, steps: int, backend: str, timeout: float,
        rows: int = N):
    env = dict(os.environ, **{v: str(threads) for v in THREAD_VARS}, DP_ROWS=str(rows))
    cmd = [sys.executable, os.path.abspath(__file__), "--child", "--steps", str(steps),
           "--backend", backend]
    if ranks > 1:
        mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
        mpiexec = mpiexec if os.access(mpiexec, os.X_OK) else shutil.which("mpiexec")
        if mpiexec is None:
            raise SystemExit("mpiexec not found: pip install -e '.[mpi]'")
        env["DP_MPI"] = "1"
        cmd = [mpiexec, "-n", str(ranks)] + cmd
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
    if p.returncode or not lines:
        raise SystemExit(f"{config} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return json.loads(lines[-1][len("RESULT "):])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--backend", choices=("numpy", "llvm"), default="numpy")
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        child(a.steps, a.backend)
        return 0
    configs = [("1 rank x 2 threads", 2, 1, N), ("1 rank x 1 thread", 1, 1, N),
               ("2 ranks x 1 thread", 1, 2, N), ("half: 1 x 1, 100 samples", 1, 1, N // 2)]
    results = {c[0]: [] for c in configs}
    print(f"cifar-size step N={N} D={D} H={H} C={C} f64 SGD, backend {a.backend}, "
          f"{a.steps} timed steps, {os.cpu_count()} CPUs, load average "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    for r in range(a.rounds):
        for config, threads, ranks, rows in configs:
            res = run(config, threads, ranks, a.steps, a.backend, a.timeout, rows)
            results[config].append(res)
            print(f"  round {r + 1}  {config:<26} {rows / res['step_s']:8.0f} samples/s  "
                  f"({res['step_s'] * 1e3:.1f} ms/step)", flush=True)
    best = {c: min(rs, key=lambda x: x["step_s"]) for c, rs in results.items()}
    base = N / best["1 rank x 1 thread"]["step_s"]
    print(f"\n| configuration | samples/s (best of {a.rounds}) | ms/step | vs 1x1 |")
    print("|---|---:|---:|---:|")
    for config, _, _, rows in configs[:3]:
        s = rows / best[config]["step_s"]
        print(f"| {config} | {s:.0f} | {best[config]['step_s'] * 1e3:.1f} | {s / base:.2f}x |")
    two = best["2 ranks x 1 thread"]
    print(f"\nall-reduce of {two['buffer_bytes'] / 1e6:.2f} MB per step: "
          f"{two['allreduce_in_step_s'] * 1e3:.2f} ms inside the step (with waiting for the "
          f"slower rank), {two['allreduce_bare_s'] * 1e3:.2f} ms bare Allreduce; load average "
          f"now {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    speedup = N / two["step_s"] / base
    print(f"2 ranks x 1 thread vs 1 rank x 1 thread: {speedup:.2f}x (target 1.8x)")
    half = best["half: 1 x 1, 100 samples"]["step_s"]
    bare = min(x["allreduce_bare_s"] for x in results["2 ranks x 1 thread"])
    full = best["1 rank x 1 thread"]["step_s"]
    print(f"projection for 2 idle cores: T(200) / (T(100) + bare all-reduce) = "
          f"{full * 1e3:.1f} / ({half * 1e3:.1f} + {bare * 1e3:.2f}) ms = "
          f"{full / (half + bare):.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
