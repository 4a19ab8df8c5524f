"""Cold compile time against depth: an L-layer tanh MLP's SGD train step (width 64, batch 32,
f64, softmax cross-entropy), built and run once, each in a fresh process with an empty cache,
for gradc-numpy, gradc-llvm and JAX jit side by side; then gradc-llvm again in a new process
with the cache warm, the cifar two-layer step (cold and warm), and the bare import cost.

    python benchmarks/compile_scaling.py                 # L = 4, 16, 32, 64, 256; 3 runs each
    python benchmarks/compile_scaling.py --layers 4 16 --repeat 1 --tools gradc-llvm jax
    python benchmarks/compile_scaling.py --profile 64    # where gradc-llvm's time goes at L=64

What is timed (in the child, after its imports): `compiler.train_step(...)` and its first call
(trace, grad, the update rules, optimize, emit, compile, run once); for JAX, `jax.jit` of the
same step (value_and_grad, SGD update) and its first call, until the result is ready.  Imports
are timed apart: `import compiler, frontends.dsl` in a process of its own.  The table gives the
median over the runs and the ratio to JAX's median at the same depth; growth 16 -> 64 is
t(64)/t(16) (4.0 is linear in depth).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
WIDTH, BATCH, CLASSES, LR = 64, 32, 10, 0.01


def _mlp_source(layers: int) -> str:
    params = ", ".join(f"W{k}, b{k}" for k in range(layers + 1))
    lines = ["from frontends import dsl", "", "", f"def mlp(X, y, {params}):", "    h = X"]
    lines += [f"    h = dsl.tanh(h @ W{k} + b{k})" for k in range(layers)]
    lines += [f"    return dsl.softmax_cross_entropy(h @ W{layers} + b{layers}, y)"]
    return "\n".join(lines) + "\n"


def _data(layers: int):
    import numpy as np
    rng = np.random.default_rng(0)
    params = {}
    for k in range(layers + 1):
        cols = CLASSES if k == layers else WIDTH
        params[f"W{k}"] = rng.normal(0, 0.1, (WIDTH, cols))
        params[f"b{k}"] = rng.normal(0, 0.01, cols)
    X = rng.normal(size=(BATCH, WIDTH))
    y = rng.integers(0, CLASSES, BATCH).astype(np.int64)
    return params, X, y


def _gradc_mlp(layers: int, backend: str) -> tuple:
    import importlib.util
    path = os.path.join(tempfile.mkdtemp(prefix="gradc_scaling_"), f"mlp{layers}.py")
    with open(path, "w") as f:
        f.write(_mlp_source(layers))
    spec = importlib.util.spec_from_file_location(f"mlp{layers}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    params, X, y = _data(layers)
    import compiler
    from frontends.dsl import f64, i64
    t, c = time.perf_counter(), time.process_time()
    step = compiler.train_step(mod.mlp, params, {"X": f64[X.shape], "y": i64[y.shape]},
                               compiler.optim.SGD(lr=LR), backend=backend)
    step(X=X, y=y)
    return time.perf_counter() - t, time.process_time() - c


def _jax_mlp(layers: int) -> tuple:
    import jax
    jax.config.update("jax_enable_x64", True)
    jnp = jax.numpy
    params, X, y = _data(layers)
    ps = [jnp.asarray(params[f"{w}{k}"]) for k in range(layers + 1) for w in "Wb"]
    Xj, yj = jnp.asarray(X), jnp.asarray(y)

    def loss(ps, X, y):
        h = X
        for k in range(layers):
            h = jnp.tanh(h @ ps[2 * k] + ps[2 * k + 1])
        s = h @ ps[2 * layers] + ps[2 * layers + 1]
        logp = jax.nn.log_softmax(s, axis=1)
        return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))

    t, c = time.perf_counter(), time.process_time()

    @jax.jit
    def step(ps, X, y):
        value, grads = jax.value_and_grad(loss)(ps, X, y)
        return value, [p - LR * g for p, g in zip(ps, grads)]
    value, _ = step(ps, Xj, yj)
    value.block_until_ready()
    return time.perf_counter() - t, time.process_time() - c


def _gradc_cifar(backend: str) -> tuple:
    sys.path.insert(0, HERE)
    from peers import IMPLS
    from workloads import all_workloads, train_data
    wl = next(w for w in all_workloads() if w.key == "two_layer/cifar/f64")
    params, X, y = train_data(wl)
    import compiler  # noqa: F401
    t, c = time.perf_counter(), time.process_time()
    IMPLS[backend].train(wl, params, X, y, LR).step()
    return time.perf_counter() - t, time.process_time() - c


def child(what: str, arg: str) -> dict:
    """In this (fresh) process: one measurement, as a dict."""
    sys.path.insert(0, ROOT)
    if what == "import":
        t, c = time.perf_counter(), time.process_time()
        import compiler  # noqa: F401
        import frontends.dsl  # noqa: F401
        return {"s": time.perf_counter() - t, "cpu_s": time.process_time() - c}
    t0 = time.perf_counter()
    if what == "jax":
        import jax  # noqa: F401
    else:
        import compiler  # noqa: F401
        import frontends.dsl  # noqa: F401
    imp = time.perf_counter() - t0
    if arg == "cifar":
        s, cpu = _gradc_cifar(what)
    elif what == "jax":
        s, cpu = _jax_mlp(int(arg))
    else:
        s, cpu = _gradc_mlp(int(arg), what.split("-")[1])
    # the CPU seconds of this process (all its threads) beside the wall time: a check on a
    # busy machine, where other processes' load inflates the wall time
    return {"s": s, "cpu_s": cpu, "import_s": imp}


def run_child(what: str, arg: str, cache: str, timeout: float) -> dict | None:
    """{"s": wall seconds, "cpu_s": CPU seconds} of one child run (None: it ran past
    `timeout`).  `what` may be TOOL@DIR: the tool of the checkout in DIR (its own copy of this
    script), to compare two versions of gradc in one run."""
    tool, _, root = what.partition("@")
    script = os.path.join(root, "benchmarks", "compile_scaling.py") if root else \
        os.path.abspath(__file__)
    env = dict(os.environ, GRADC_CACHE_DIR=cache)
    try:
        r = subprocess.run([sys.executable, script, "--child", tool, arg],
                           env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None
    line = [ln for ln in r.stdout.splitlines() if ln.startswith("JSON ")]
    if not line:
        tail = (r.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"{what} {arg}: exit {r.returncode}: {tail[:300]}")
    return json.loads(line[0][5:])


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for ln in f:
                if ln.startswith("model name"):
                    return f"{ln.split(':', 1)[1].strip()}, {os.cpu_count()} logical cores"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical cores"


def _med(runs: list, key: str = "s"):
    """The median of `key` over the runs (None if any ran past the timeout, or none ran)."""
    if not runs or any(r is None for r in runs):
        return None
    return statistics.median(r[key] for r in runs)


def _fmt(runs: list, timeout: float, jax=None) -> str:
    if not runs:
        return "-"
    m = _med(runs)
    if m is None:
        return f"> {timeout:.0f} s"
    text = f"{m:.3f} s"
    if "cpu_s" in runs[0]:
        text += f" (cpu {_med(runs, 'cpu_s'):.2f}"
        text += f"; {m / jax:.2f}× JAX)" if jax else ")"
    return text


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--layers", type=int, nargs="+", default=[4, 16, 32, 64, 256])
    ap.add_argument("--tools", nargs="+", default=["gradc-numpy", "gradc-llvm", "jax"],
                    help="gradc-numpy, gradc-llvm, jax; TOOL@DIR: the gradc of checkout DIR")
    ap.add_argument("--repeat", type=int, default=3, help="fresh processes per cell")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per child run")
    ap.add_argument("--profile", type=int, metavar="L", help="profile gradc-llvm at depth L")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        print("JSON " + json.dumps(child(*a.child)), flush=True)
        return
    if a.profile:
        profile(a.profile)
        return
    llvm = [t for t in a.tools if t.startswith("gradc-llvm")]
    print(f"CPU: {cpu_name()}; Python {platform.python_version()}; {a.repeat} runs per cell "
          "(median), each a fresh process with an empty GRADC_CACHE_DIR; load average at the "
          f"start {os.getloadavg()[0]:.1f}", flush=True)
    cold: dict = {}
    warm: dict = {}
    for L in a.layers:
        for r in range(a.repeat):
            for tool in a.tools:
                with tempfile.TemporaryDirectory() as cache:
                    t = run_child(tool, str(L), cache, a.timeout)
                    cold.setdefault((tool, L), []).append(t)
                    if tool in llvm and t is not None:
                        warm.setdefault((tool, L), []).append(
                            run_child(tool, str(L), cache, a.timeout))
            print(f"  L={L} run {r + 1}: " + ", ".join(
                f"{tool} {_fmt(cold[tool, L][-1:], a.timeout)}" for tool in a.tools),
                file=sys.stderr, flush=True)
    head = ["layers"] + [f"{t} cold" for t in a.tools] + [f"{t} warm" for t in llvm]
    print(f"\nSeconds (median wall; CPU seconds of the process and its ratio of wall time to "
          f"JAX's in brackets); load average at the end {os.getloadavg()[0]:.1f}\n")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for L in a.layers:
        jax = _med(cold.get(("jax", L), []))
        cells = [str(L)] + [_fmt(cold[tool, L], a.timeout, None if tool == "jax" else jax)
                            for tool in a.tools]
        cells += [_fmt(warm.get((t, L), []), a.timeout) for t in llvm]
        print("| " + " | ".join(cells) + " |")
    for tool in a.tools:
        m16, m64 = _med(cold.get((tool, 16), [])), _med(cold.get((tool, 64), []))
        if m16 and m64:
            print(f"\n{tool}: growth 16 -> 64 layers ×{m64 / m16:.1f} (×4.0 is linear)", end="")
    print("\n")
    imports = [run_child("import", "-", tempfile.mkdtemp(), a.timeout) for _ in range(a.repeat)]
    print(f"import compiler, frontends.dsl (fresh process): {_fmt(imports, a.timeout)}")
    for tool in llvm:
        cc, cw = [], []
        for _ in range(a.repeat):
            with tempfile.TemporaryDirectory() as cache:
                cc.append(run_child(tool, "cifar", cache, a.timeout))
                cw.append(run_child(tool, "cifar", cache, a.timeout))
        print(f"cifar two-layer step (N=200, D=3072, H=100), {tool}: cold "
              f"{_fmt(cc, a.timeout)}, warm cache {_fmt(cw, a.timeout)} (after imports)")


def profile(layers: int) -> None:
    """cProfile of one cold gradc-llvm build at depth `layers`, by the stages that matter."""
    import cProfile
    import pstats
    sys.path.insert(0, ROOT)
    os.environ["GRADC_CACHE_DIR"] = tempfile.mkdtemp()
    os.environ.setdefault("GRADC_JIT_WORKER", "0")      # the LLVM passes in this process
    import compiler  # noqa: F401
    pr = cProfile.Profile()
    pr.enable()
    total = _gradc_mlp(layers, "llvm")[0]
    pr.disable()
    st = pstats.Stats(pr)
    print(f"L={layers}: {total:.3f} s in all (profiled)")
    stages = [("trace", "dsl.py", "trace"), ("grad", "autodiff.py", "grad"),
              ("optimize (passes)", "passes/__init__.py", "optimize"),
              ("LLVM IR construction", "llvm_emit.py", "emit_llvm_plan"),
              ("LLVM IR text", "module.py", "__repr__"),
              ("parse (LLVM)", "module.py", "parse_assembly"),
              ("verify", "module.py", "verify"),
              ("O3 pipeline", "newpassmanagers.py", "run"),
              ("object emission", "targets.py", "emit_object"),
              ("load (gradc loader or MCJIT)", "jit.py", "load")]
    for label, file, func in stages:
        cum = sum(v[3] for k, v in st.stats.items() if k[0].endswith(file) and k[2] == func)
        print(f"  {label:28s} {cum:7.3f} s")


if __name__ == "__main__":
    main()
