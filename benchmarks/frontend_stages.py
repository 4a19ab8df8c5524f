"""Where a warm-start train step's time goes, stage by stage (issue 17): the L-layer tanh MLP's
SGD step of benchmarks/compile_scaling.py (width 64, batch 32, f64), built and run once in a
fresh process with a warm native-code cache, each stage's CPU seconds (the minimum over the
runs), for one or more checkouts side by side.

    python benchmarks/frontend_stages.py                       # L=256, numpy and llvm, 3 runs
    python benchmarks/frontend_stages.py --layers 64 --backends numpy
    python benchmarks/frontend_stages.py --roots /path/to/old/checkout .   # before | after

A stage is timed by wrapping the function that does it where its caller looks it up (trace,
grad, the update rules, verify, optimize, the memory plan, the NumPy emitter, the LLVM cache
key, the runtime's kernel set-up); the stages overlap nowhere, and the rest (argument checks,
the train step's own bookkeeping) is the total minus their sum.  CPU seconds, not wall: other
processes on a shared machine slow the wall clock, much less the CPU time.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))

# (label, module, attribute) in pipeline order; `module:Class` wraps a method
STAGES = [("trace", "frontends.dsl", "trace"), ("grad", "compiler.train", "grad"),
          ("update rules", "compiler.train", "append_update"),
          ("verify", "compiler.backends", "verify"), ("passes", "compiler.backends", "optimize"),
          ("memory plan", "compiler.backends", "plan_memory"),
          ("numpy emit", "compiler.artifact", "emit_numpy"),
          ("llvm cache key", "compiler.backends", "llvm_artifact"),
          ("kernel set-up (runtime)", "runtime.numpy_kernel:NumpyKernel", "__init__"),
          ("kernel set-up (runtime)", "runtime.llvm_kernel:LLVMKernel", "__init__"),
          ("bind (runtime; emits again)", "runtime.numpy_kernel:NumpyKernel", "bind"),
          ("first step", "compiler.train:TrainStep", "__call__")]


def child(layers: int, backend: str) -> dict:
    """In this fresh process: build and run the step once, each stage's CPU seconds."""
    import importlib
    root = os.environ["FRONTEND_STAGES_ROOT"]
    sys.path[:0] = [root, os.path.join(root, "benchmarks")]
    import compile_scaling
    spent: dict = collections.defaultdict(float)
    inside = []          # nested stages (numpy emit inside bind) count in the inner one only
    for label, where, attr in STAGES:
        modname, _, cls = where.partition(":")
        owner = importlib.import_module(modname)
        owner = getattr(owner, cls) if cls else owner
        fn = getattr(owner, attr, None)
        if fn is None:
            continue

        def timed(*a, _fn=fn, _label=label, **k):
            t = time.process_time()
            inside.append(0.0)
            try:
                return _fn(*a, **k)
            finally:
                dt = time.process_time() - t
                inner = inside.pop()
                spent[_label] += dt - inner
                if inside:
                    inside[-1] += dt
        setattr(owner, attr, timed)
    wall, cpu = compile_scaling._gradc_mlp(layers, backend)
    spent = dict(spent)
    spent["rest"] = cpu - sum(spent.values())
    spent["total (cpu)"], spent["total (wall)"] = cpu, wall
    return spent


def run(root: str, layers: int, backend: str, cache: str) -> dict:
    env = dict(os.environ, GRADC_CACHE_DIR=cache, FRONTEND_STAGES_ROOT=os.path.abspath(root))
    r = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", str(layers),
                        backend], env=env, capture_output=True, text=True)
    line = [ln for ln in r.stdout.splitlines() if ln.startswith("JSON ")]
    if not line:
        raise RuntimeError(f"{root} L={layers} {backend}: {r.stderr.strip()[-500:]}")
    return json.loads(line[0][5:])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--layers", type=int, nargs="+", default=[256])
    ap.add_argument("--backends", nargs="+", default=["numpy", "llvm"])
    ap.add_argument("--roots", nargs="+", default=[os.path.dirname(HERE)],
                    help="checkouts to compare (each its own gradc)")
    ap.add_argument("--repeat", type=int, default=3, help="fresh processes per cell")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        print("JSON " + json.dumps(child(int(a.child[0]), a.child[1])), flush=True)
        return
    for L in a.layers:
        for backend in a.backends:
            best: list = [{} for _ in a.roots]
            with tempfile.TemporaryDirectory() as cache:
                for root in a.roots:
                    run(root, L, backend, cache)          # warms the native-code cache
                for _ in range(a.repeat):
                    for k, root in enumerate(a.roots):
                        for stage, s in run(root, L, backend, cache).items():
                            best[k][stage] = min(best[k].get(stage, s), s)
            print(f"\nL={L}, {backend}, warm cache: CPU seconds per stage (min of {a.repeat} "
                  "fresh processes)\n")
            print("| stage | " + " | ".join(a.roots) + " |")
            print("|---|" + "---|" * len(a.roots))
            order = list(dict.fromkeys([s for s, _, _ in STAGES] + ["rest", "total (cpu)",
                                                                     "total (wall)"]))
            for stage in order:
                if any(stage in b for b in best):
                    print(f"| {stage} | " + " | ".join(
                        f"{b[stage]:.3f}" if stage in b else "-" for b in best) + " |")


if __name__ == "__main__":
    main()
