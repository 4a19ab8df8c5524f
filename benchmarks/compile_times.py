"""Compile time per tool, each in a new process: cold (an empty cache directory) and again
with that cache directory warm.

    python benchmarks/compile_times.py TOOL     # the child: one build, prints JSON

What is timed: from after the imports to the end of the first SGD step of the cifar f64
two-layer net (trace, differentiate, optimize and compile, then run once); the import time is
reported beside it.  Each tool's cache (gradc's object cache, JAX's persistent compilation
cache, PyTensor's compiledir and Numba's cache, TorchInductor's) is pointed at a fresh
temporary directory for the pair of runs.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(1, os.path.dirname(HERE))

from peers import IMPLS  # noqa: E402
from workloads import LR, all_workloads, train_data  # noqa: E402


def python_for(name, numba_python) -> str:
    """PyTensor runs under the Python whose numba works (--numba-python)."""
    return numba_python if name.startswith("pytensor") else sys.executable


def _short(e: BaseException) -> str:
    text = f"{type(e).__name__}: {e}".strip().splitlines()
    return text[0][:200] if text else type(e).__name__


CACHE_ENV = {"gradc-llvm": ["GRADC_CACHE_DIR"], "jax": ["GRADC_BENCH_JAX_CACHE"],
             "torch.compile": ["TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR"],
             "pytensor-c": ["PYTENSOR_FLAGS"], "pytensor-numba": ["PYTENSOR_FLAGS",
                                                                  "NUMBA_CACHE_DIR"]}
CACHE_TEXT = {"gradc-llvm": "object code on disk (GRADC_CACHE_DIR)",
              "jax": "persistent compilation cache (jax_compilation_cache_dir)",
              "torch.compile": "TORCHINDUCTOR_CACHE_DIR, TRITON_CACHE_DIR",
              "pytensor-c": "compiled C modules (base_compiledir)",
              "pytensor-numba": "numba cache (base_compiledir, NUMBA_CACHE_DIR)"}
NO_CACHE = {"gradc-numpy": "no disk cache (emits and execs NumPy source)",
            "torch": "eager: nothing to compile", "autograd": "traces at every call",
            "hand": "nothing to compile"}


def compile_child(tool: str) -> dict:
    """In a fresh process: import the tool, build the cifar f64 two-layer step, take one step."""
    t0 = time.perf_counter()
    wl = next(w for w in all_workloads() if w.key == "two_layer/cifar/f64")
    params, X, y = train_data(wl)
    if tool == "jax":
        jax = __import__("jax")
        jax.config.update("jax_compilation_cache_dir", os.environ["GRADC_BENCH_JAX_CACHE"])
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    elif tool == "torch.compile":
        __import__("torch")
    elif tool.startswith("gradc"):
        __import__("compiler")
    else:
        __import__(tool.split("-")[0])
    t1 = time.perf_counter()
    runner = None
    if tool == "torch.compile":
        loss = _torch_compiled_step(wl, params, X, y)
    else:
        runner = IMPLS[tool].train(wl, params, X, y, LR)
        loss = runner.step()
    t2 = time.perf_counter()
    out = {"import_s": t1 - t0, "build_first_step_s": t2 - t1, "loss": float(loss)}
    if tool == "gradc-llvm":                 # did the object code come from the disk cache?
        out["cache_hit"] = bool(runner.obj._last.kernel.cached)
    return out


def _torch_compiled_step(wl, params, X, y):
    torch = __import__("torch")
    F = torch.nn.functional
    p = {k: torch.tensor(v.copy(), requires_grad=True) for k, v in params.items()}
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)

    @torch.compile
    def loss_fn(W1, b1, W2, b2):
        return F.cross_entropy(F.relu(Xt @ W1 + b1) @ W2 + b2, yt)
    loss = loss_fn(**p)
    loss.backward()
    return loss.item()


def compile_times(tools, numba_python) -> list:
    """Per tool: {"tool", "cold", "warm" (each compile_child's dict), "cache"} or "error"."""
    out = []
    for tool in tools:
        py = python_for(tool, numba_python)
        row = {"tool": tool}
        with tempfile.TemporaryDirectory() as tmp:
            env = dict(os.environ)
            for var in CACHE_ENV.get(tool, []):
                env[var] = f"base_compiledir={tmp}" if var == "PYTENSOR_FLAGS" else tmp
            for label in ("cold", "warm"):
                try:
                    r = subprocess.run([py, os.path.abspath(__file__), tool],
                                       env=env, capture_output=True, text=True, timeout=600)
                    line = [ln for ln in r.stdout.splitlines() if ln.startswith("JSON ")]
                    if not line:
                        tail = (r.stderr.strip().splitlines() or ["no output"])[-1]
                        raise RuntimeError(f"exit {r.returncode}: {tail[:200]}")
                    row[label] = json.loads(line[0][5:])
                except Exception as e:
                    row["error"] = _short(e)
                    break
        row["cache"] = CACHE_TEXT.get(tool) or NO_CACHE.get(tool, "")
        out.append(row)
        print(f"  compile {tool:15s} " + (row.get("error") or " ".join(
            f"{k} {row[k]['build_first_step_s']:.3f}s" for k in ("cold", "warm"))),
            file=sys.stderr, flush=True)
    return out


if __name__ == "__main__":
    print("JSON " + json.dumps(compile_child(sys.argv[1])), flush=True)
