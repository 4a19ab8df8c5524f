"""gradc against the tools users would pick instead, measured side by side in one run.

    python benchmarks/run.py                    # the full suite (several minutes)
    python benchmarks/run.py --quick            # about a minute
    python benchmarks/run.py --json out.json    # then: python benchmarks/report.py out.json
    python benchmarks/run.py --impls hand,gradc-llvm,jax --only two_layer

Implementations (benchmarks/peers.py; each optional): hand (hand-written NumPy, always),
gradc-numpy and gradc-llvm (compiler.train_step with compiler.optim.SGD), jax
(jit(value_and_grad) with the update inside the jit), torch (eager; torch.set_num_threads =
the BLAS thread count), pytensor-numba and pytensor-c (a function with `updates`), autograd.
PyTensor runs in a child process: numba pins an older llvmlite than gradc's, and PyTensor's
C mode still uses numba for some ops; give --numba-python PATH (or $GRADC_BENCH_NUMBA_PYTHON), a
Python whose numba works, when this one's does not.

Method: every implementation first takes one step from the same parameters and data; its loss
and updated parameters are compared with the hand-written NumPy step (scalar graphs: value and
gradients), and only an implementation that agrees is timed.  Timing: two warm-up calls, then
samples of k calls (k chosen so a sample lasts ≥ 1 ms) until the row's time budget is spent
(at least 5 samples); median and min per call, and the process's CPU time over wall time
(about the number of cores it kept busy).  In the same run: the GEMM peak (NumPy matmul,
n = 1024 and 2048, per dtype), the memory bandwidth (a large copy), the thread settings and the
load average.  Compile time (benchmarks/compile_times.py): each tool builds the cifar f64
two-layer step in a new process, cold (an empty cache directory) and again with that cache warm.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import warnings

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(1, os.path.dirname(HERE))

from compile_times import compile_times, python_for  # noqa: E402
from peers import IMPLS, gemm_peak as gemm_peak_of  # noqa: E402
from workloads import (LR, all_workloads, hand_scalar, hand_step, quick_workloads,  # noqa: E402
                       scalar_inputs, tiny_workloads, train_data)

TOL = {"f64": {"loss": 1e-9, "param": 1e-6}, "f32": {"loss": 1e-4, "param": 2e-2}}
# Peers with thread pools of their own (XLA, OpenMP, numba) run each in a child process: their
# idle threads spin and would slow the BLAS calls of whatever runs next in the same process.
ISOLATED = {"jax", "torch", "pytensor-numba", "pytensor-c"}


# ---- timing ----------------------------------------------------------------------------------
def time_call(fn, budget: float, min_samples: int = 5, max_samples: int = 2000) -> dict:
    """Median and min seconds per call of `fn` (see the module docstring)."""
    fn()
    fn()
    t0 = time.perf_counter()
    fn()
    single = time.perf_counter() - t0
    k = max(1, int(1e-3 / max(single, 1e-9)))
    samples = []
    start, cpu0 = time.perf_counter(), time.process_time()
    while len(samples) < max_samples and (len(samples) < min_samples
                                          or time.perf_counter() - start < budget):
        t0 = time.perf_counter()
        for _ in range(k):
            fn()
        samples.append((time.perf_counter() - t0) / k)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu0
    return {"median_s": float(np.median(samples)), "min_s": float(np.min(samples)),
            "calls": k * len(samples), "cpu_per_wall": cpu / wall}


def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def _short(e: BaseException) -> str:
    text = f"{type(e).__name__}: {e}".strip().splitlines()
    return text[0][:200] if text else type(e).__name__


# ---- one workload ------------------------------------------------------------------------------
def run_train(wl, names, budget) -> list:
    params, X, y = train_data(wl)
    ref_p = {k: v.copy() for k, v in params.items()}
    ref_loss, ref_g = hand_step(ref_p, X, y, wl.acts, LR)
    gscale = {k: LR * max(float(np.max(np.abs(g))), 1e-30) for k, g in ref_g.items()}
    rows = []
    for name in names:
        row = {"workload": wl.key, "impl": name}
        try:
            t0 = time.perf_counter()
            runner = IMPLS[name].train(wl, params, X, y, LR)
            loss = float(runner.step())
            row["first_call_s"] = time.perf_counter() - t0
            got = runner.params()
            row["loss_err"] = abs(loss - float(ref_loss)) / max(abs(float(ref_loss)), 1e-30)
            row["param_err"] = max(float(np.max(np.abs(np.asarray(got[k], np.float64)
                                                       - ref_p[k]))) / gscale[k]
                                   for k in ref_p)
            tol = TOL[wl.dtype]
            if not (row["loss_err"] <= tol["loss"] and row["param_err"] <= tol["param"]):
                row["error"] = (f"disagrees with hand-written NumPy: loss rel err "
                                f"{row['loss_err']:.1e}, update err {row['param_err']:.1e}")
            else:
                row.update(time_call(runner.step, budget))
        except Exception as e:  # a peer that cannot build this workload is reported, not fatal
            row["error"] = _short(e)
        rows.append(row)
        _progress(row)
    return rows


def run_scalar(wl, names, budget) -> list:
    inputs = scalar_inputs(wl)
    ref_v, ref_g = hand_scalar(wl)(**inputs)
    rows = []
    for name in names:
        row = {"workload": wl.key, "impl": name}
        try:
            t0 = time.perf_counter()
            call, to_numpy = IMPLS[name].scalar(wl)
            v, gs = to_numpy(call(**inputs))
            row["first_call_s"] = time.perf_counter() - t0
            row["loss_err"] = _rel(v, ref_v)
            row["param_err"] = max(_rel(g, r) for g, r in zip(gs, ref_g))
            if len(gs) != len(ref_g) or max(row["loss_err"], row["param_err"]) > 1e-12:
                row["error"] = (f"disagrees with hand-written NumPy: value err "
                                f"{row['loss_err']:.1e}, gradient err {row['param_err']:.1e}")
            else:
                row.update(time_call(lambda: call(**inputs), budget))
        except Exception as e:
            row["error"] = _short(e)
        rows.append(row)
        _progress(row)
    return rows


def _progress(row):
    if row.get("error"):
        msg = "FAILED " + row["error"]
    else:
        msg = f"{_fmt(row['median_s']):>10} median, {_fmt(row['min_s']):>10} min"
    print(f"  {row['workload']:24s} {row['impl']:15s} {msg}", file=sys.stderr, flush=True)


def _fmt(s: float) -> str:
    return (f"{s * 1e6:.2f} µs" if s < 1e-4 else f"{s * 1e6:.1f} µs" if s < 1e-3
            else f"{s * 1e3:.2f} ms" if s < 1 else f"{s:.2f} s")


def run_rows(workloads, names, budget) -> list:
    rows = []
    for wl in workloads:
        fn = run_scalar if wl.kind == "scalar" else run_train
        rows += fn(wl, names, budget)
    return rows


# ---- the machine -------------------------------------------------------------------------------
def gemm_peak(sizes=(1024, 2048), reps=3) -> dict:
    """GFLOP/s of NumPy matmul (preallocated output), best of `reps`, per dtype and n."""
    out = {}
    rng = np.random.default_rng(1)
    for dt in ("f64", "f32"):
        npdt = np.float64 if dt == "f64" else np.float32
        for n in sizes:
            a, b = (rng.standard_normal((n, n)).astype(npdt) for _ in range(2))
            c = np.empty((n, n), npdt)
            np.matmul(a, b, out=c)
            best = min(_timed(lambda: np.matmul(a, b, out=c)) for _ in range(reps))
            out[f"{dt}/{n}"] = 2 * n ** 3 / best / 1e9
        out[dt] = max(out[f"{dt}/{n}"] for n in sizes)
    return out


def bandwidth(mbytes=256, reps=5) -> float:
    """GB/s of a large copy (bytes read + bytes written)."""
    src = np.ones(mbytes * 2 ** 20 // 8)
    dst = np.empty_like(src)
    np.copyto(dst, src)
    best = min(_timed(lambda: np.copyto(dst, src)) for _ in range(reps))
    return 2 * src.nbytes / best / 1e9


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def machine_info() -> dict:
    info = {"platform": platform.platform(), "python": platform.python_version(),
            "numpy": np.__version__, "cpu_count": os.cpu_count(),
            "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "env": {k: os.environ.get(k) for k in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                                                    "OMP_NUM_THREADS", "XLA_FLAGS")}}
    try:
        with open("/proc/cpuinfo") as f:
            info["cpu"] = next(ln.split(":", 1)[1].strip() for ln in f
                               if ln.startswith("model name"))
    except (OSError, StopIteration):
        info["cpu"] = platform.processor()
    try:
        from threadpoolctl import threadpool_info
        info["threadpools"] = [{k: p.get(k) for k in ("user_api", "internal_api", "num_threads",
                                                      "version")} for p in threadpool_info()]
    except ImportError:
        info["threadpools"] = "threadpoolctl not installed"
    return info


def probe_here(name) -> str:
    """Version text of `name` in this process, or 'unavailable: reason'."""
    try:
        return IMPLS[name].probe()
    except Exception as e:
        hint = " (give --numba-python: a Python whose numba works)" if name.startswith(
            "pytensor") else ""
        return "unavailable: " + _short(e) + hint


class Worker:
    """One isolated implementation in a child process of this file, kept alive for the whole
    run and asked for one workload at a time, so that every implementation's row of a
    workload is measured within the same short window (the machine's load drifts)."""

    def __init__(self, name, python, budget, workloads):
        self.name, self.proc = name, None
        keys = ",".join(w.key for w in workloads)
        try:
            self.proc = subprocess.Popen(
                [python, os.path.abspath(__file__), "--worker", "--impls", name,
                 "--budget", str(budget), "--workload-keys", keys],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            self.version = self._read()
        except (OSError, RuntimeError) as e:
            self.version = "unavailable: " + _short(e)
        if self.version.startswith("unavailable"):
            self.close()

    def _read(self):
        for line in self.proc.stdout:
            if line.startswith("JSON "):
                return json.loads(line[5:])
        raise RuntimeError(f"the child process exited with status {self.proc.wait()} "
                           "(its stderr is above)")

    def ask(self, what: str):
        """Rows of workload key `what` (or the GEMM peak for "PEAKS"); on a crash, error
        rows."""
        if self.proc is None:
            return [] if what == "PEAKS" else [{"workload": what, "impl": self.name,
                                                "error": self.version}]
        try:
            self.proc.stdin.write(what + "\n")
            self.proc.stdin.flush()
            return self._read()
        except (OSError, RuntimeError) as e:
            self.version = "unavailable: " + _short(e)
            self.close()
            return [] if what == "PEAKS" else [{"workload": what, "impl": self.name,
                                                "error": self.version}]

    def close(self):
        if self.proc is not None:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=60)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
            self.proc = None


def worker_loop(name, wls, budget, peaks) -> None:
    """The child's side: probe, then answer one request per stdin line."""
    warnings.filterwarnings("ignore")
    version = probe_here(name)
    print("JSON " + json.dumps(version), flush=True)
    if version.startswith("unavailable"):
        return
    by_key = {w.key: w for w in wls}
    for line in sys.stdin:
        what = line.strip()
        if what == "PEAKS":
            out = gemm_peak_of(name) if peaks else {}
        else:
            out = run_rows([by_key[what]], [name], budget)
        print("JSON " + json.dumps(out), flush=True)


def limit_threads(n: int) -> None:
    """At most n cores for every implementation: this process and its children (inherited) run
    on n CPUs (sched_setaffinity: the only limit XLA's thread pool is seen to obey), and the
    thread pools are sized to n (threadpoolctl here; the environment for the children, read
    when NumPy, torch, JAX and numba load)."""
    if hasattr(os, "sched_setaffinity"):
        cpus = sorted(os.sched_getaffinity(0))
        if n < len(cpus):
            os.sched_setaffinity(0, cpus[:n])
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                "NUMBA_NUM_THREADS", "GRADC_BENCH_THREADS"):
        os.environ[var] = str(n)
    if n == 1:
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                                   + " --xla_cpu_multi_thread_eigen=false").strip()
    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(n)
    except ImportError:
        pass


# ---- the command line ----------------------------------------------------------------------------
def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a subset with short budgets (~1 min)")
    ap.add_argument("--tiny", action="store_true", help="smallest shapes, for the test suite")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--impls", default=",".join(IMPLS), help="comma-separated, of: "
                    + ", ".join(IMPLS))
    ap.add_argument("--only", default="", help="comma-separated substrings of workload keys "
                    "(family/config/dtype)")
    ap.add_argument("--budget", type=float, default=None, help="seconds of timing per row")
    ap.add_argument("--no-compile", action="store_true", help="skip the compile-time runs")
    ap.add_argument("--no-peaks", action="store_true", help="skip the GEMM/bandwidth runs")
    ap.add_argument("--numba-python", default=os.environ.get("GRADC_BENCH_NUMBA_PYTHON",
                                                             sys.executable),
                    help="the Python that runs PyTensor (one whose numba works); default: "
                    "$GRADC_BENCH_NUMBA_PYTHON, else this one")
    ap.add_argument("--threads", type=int, default=0, help="limit BLAS/OpenMP/XLA/torch "
                    "threads to N (here and in the child processes); default: as configured")
    ap.add_argument("--note", default="", help="a line about the run's conditions, for the doc")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--workload-keys", default="", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.threads:
        limit_threads(a.threads)
    names = [n for n in a.impls.split(",") if n]
    bad = [n for n in names if n not in IMPLS]
    if bad:
        ap.error(f"unknown implementation(s) {bad}; known: {', '.join(IMPLS)}")
    if "hand" not in names and not a.worker:
        names.insert(0, "hand")
    wls = tiny_workloads() if a.tiny else quick_workloads() if a.quick else all_workloads()
    if a.only:
        wls = [w for w in wls if any(s in w.key for s in a.only.split(","))]
    budget = a.budget if a.budget is not None else (0.05 if a.tiny else 0.25 if a.quick else 1.5)
    if a.worker:                          # one isolated implementation, driven over stdin
        keys = a.workload_keys.split(",")
        every = {w.key: w for w in all_workloads() + tiny_workloads()}
        worker_loop(names[0], [every[k] for k in keys], budget, not a.no_peaks)
        return {}
    started = time.time()
    load0 = os.getloadavg()
    result = {"quick": a.quick, "tiny": a.tiny, "note": a.note, "budget_s": budget,
              "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(started)),
              "lr": LR, "threads": a.threads or None,
              "numba_python": None if a.numba_python == sys.executable else a.numba_python}
    print("probing implementations", file=sys.stderr, flush=True)
    result["impls"] = {n: probe_here(n) for n in names if n not in ISOLATED}
    for n, v in result["impls"].items():
        print(f"  {n:15s} {v}", file=sys.stderr)
    if not a.no_peaks:
        print("measuring the GEMM peak and the copy bandwidth", file=sys.stderr, flush=True)
        result["peaks"] = gemm_peak(sizes=(512, 1024) if a.tiny else (1024, 2048))
        result["peaks"]["copy_GBps"] = bandwidth(32 if a.tiny else 256)
    result["workloads"] = [{"key": w.key, "family": w.family, "config": w.config,
                            "dtype": w.dtype, "kind": w.kind, "describe": w.describe(),
                            "flops": w.flops() if w.kind == "train" else 0} for w in wls]
    workers = {}
    for n in names:
        if n in ISOLATED:
            print(f"  {n}: starting its child process", file=sys.stderr, flush=True)
            workers[n] = Worker(n, python_for(n, a.numba_python), budget, wls)
            result["impls"][n] = workers[n].version
            print(f"  {n:15s} {workers[n].version}", file=sys.stderr, flush=True)
    local = [n for n in names if n in result["impls"] and n not in workers
             and not result["impls"][n].startswith("unavailable")]
    print("timing", file=sys.stderr, flush=True)
    rows = []
    try:
        for wl in wls:
            rows += run_rows([wl], local, budget)
            for w in workers.values():
                if w.proc is not None:
                    rows += w.ask(wl.key)
        if not (a.no_peaks or a.tiny):
            for n, w in workers.items():
                got = w.ask("PEAKS")
                if got:
                    result.setdefault("peer_peaks", {})[n] = got
    finally:
        for n, w in workers.items():
            w.close()
            if w.version.startswith("unavailable"):
                result["impls"][n] = w.version
    result["impls"] = {n: result["impls"][n] for n in names}
    usable = [n for n in names if not result["impls"][n].startswith("unavailable")]
    order = {n: i for i, n in enumerate(names)}
    wkeys = {w.key: i for i, w in enumerate(wls)}
    rows.sort(key=lambda r: (wkeys[r["workload"]], order[r["impl"]]))
    result["rows"] = rows
    if not a.no_compile:
        tools = [n for n in usable if n != "hand"]
        if "torch" in usable and not (a.quick or a.tiny):
            tools.append("torch.compile")
        if a.quick:
            tools = [t for t in tools if t in ("gradc-numpy", "gradc-llvm", "jax")]
        print("compile times (new processes)", file=sys.stderr, flush=True)
        result["compile"] = compile_times(tools, a.numba_python)
    result["machine"] = machine_info()         # after the runs: every BLAS is loaded
    result["load"] = {"start": load0, "end": os.getloadavg()}
    result["elapsed_s"] = time.time() - started
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=1)
        print(f"wrote {a.json}", file=sys.stderr)
    return result


if __name__ == "__main__":
    main()
