"""Front-end compile time against graph size: trace, verify, grad, optimize and emit (NumPy
backend: memory plan, emitted source, loading it) in seconds, and the growth ratio per doubling
of the size (1.0-2.0 per doubling is linear; 4.0 is quadratic).

    python benchmarks/frontend_scaling.py            # scalar chain 1k/2k/4k/8k, MLP 16/64/256
    python benchmarks/frontend_scaling.py --quick    # smaller sizes
    python benchmarks/frontend_scaling.py --llvm     # also the LLVM compile of the 16/64-layer MLP

Then the MLP's SGD train step on numpy, built and run once (the update rules, and emission
with the parameters' arrays donated to their updates).

Models: a scalar chain `h = tanh(h * w)` repeated (every step shares the one weight w: its
gradient sums one contribution per step), sized by its forward node count; an L-layer tanh MLP
(width 64, batch 32, f64, softmax cross-entropy), differentiated with respect to every weight.
The MLP's source is generated (one parameter per weight), written to a temporary file and
imported, so tracing names values as it does for a hand-written model.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import compiler  # noqa: E402
from compiler.ir import verify  # noqa: E402
from frontends import dsl  # noqa: E402
from frontends.dsl import f64, i64  # noqa: E402


def scalar_chain(nodes: int):
    """A function of (x, w) whose forward graph has `nodes` nodes (two per step)."""
    steps = nodes // 2

    def chain(x, w):
        h = x
        for _ in range(steps):
            h = dsl.tanh(h * w)
        return h
    return chain, {"x": f64[()], "w": f64[()]}


def mlp(layers: int, width: int = 64, batch: int = 32, classes: int = 10):
    """An L-layer tanh MLP's loss as a traced function (its source generated, one parameter
    per weight and bias)."""
    params = [f"W{k}, b{k}" for k in range(layers + 1)]
    lines = [f"def mlp(X, y, {', '.join(params)}):", "    h = X"]
    lines += [f"    h = dsl.tanh(h @ W{k} + b{k})" for k in range(layers)]
    lines += [f"    return dsl.softmax_cross_entropy(h @ W{layers} + b{layers}, y)"]
    path = os.path.join(tempfile.mkdtemp(prefix="gradc_scaling_"), f"mlp{layers}.py")
    with open(path, "w") as f:
        f.write("from frontends import dsl\n\n\n" + "\n".join(lines) + "\n")
    spec = importlib.util.spec_from_file_location(f"mlp{layers}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    specs = {"X": f64[batch, width], "y": i64[batch]}
    for k in range(layers + 1):
        specs[f"W{k}"] = f64[width, classes if k == layers else width]
        specs[f"b{k}"] = f64[classes if k == layers else width]
    return mod.mlp, specs


def emit_numpy_kernel(graph):
    """What compiler.compile does on the numpy backend after optimize: plan, emit, load."""
    from compiler.artifact import numpy_artifact
    from compiler.passes.memory import plan_memory
    from runtime.numpy_kernel import NumpyKernel
    return NumpyKernel(numpy_artifact(graph, graph.name, plan_memory(graph)))


def measure(fn, specs, llvm: bool = False) -> dict:
    row = {}
    t = time.perf_counter()
    g = dsl.trace(fn, **specs)
    row["trace"] = time.perf_counter() - t
    t = time.perf_counter()
    verify(g)
    row["verify"] = time.perf_counter() - t
    t = time.perf_counter()
    dg = compiler.grad(g, wrt=[k for k, s in specs.items() if s.is_float])
    row["grad"] = time.perf_counter() - t
    t = time.perf_counter()
    opt = compiler.optimize(dg)
    row["optimize"] = time.perf_counter() - t
    t = time.perf_counter()
    try:
        emit_numpy_kernel(opt)
        row["emit"] = time.perf_counter() - t
    except RecursionError:              # the recursive inliner before the linear front end
        row["emit"] = float("nan")
    row["nodes"] = (len(g.nodes), len(opt.nodes))
    if llvm:
        t = time.perf_counter()
        compiler.compile(dg, backend="llvm")
        row["llvm"] = time.perf_counter() - t
    return row


def train_step_seconds(layers: int) -> float:
    """Construct the MLP's SGD train step on numpy and take one step (trace, grad, the update
    rules, optimize, emit with the parameters' buffers donated, run)."""
    import numpy as np
    fn, specs = mlp(layers)
    rng = np.random.default_rng(0)
    params = {k: rng.normal(0, 0.1, s.shape) for k, s in specs.items() if k not in ("X", "y")}
    t = time.perf_counter()
    step = compiler.train_step(fn, params, {"X": specs["X"], "y": specs["y"]},
                               compiler.optim.SGD(lr=0.01))
    step(X=rng.normal(size=specs["X"].shape), y=rng.integers(0, 10, specs["y"].shape))
    return time.perf_counter() - t


def table(title: str, label: str, sizes: list, rows: list, cols: list) -> str:
    out = [f"{title}", "", f"| {label} | nodes (fwd / grad optimized) | "
           + " | ".join(f"{c} s" for c in cols) + " | total s |",
           "|---|---|" + "---|" * (len(cols) + 1)]
    prev = None
    for size, r in zip(sizes, rows):
        total = sum(r[c] for c in cols)
        cells = []
        for c in cols + ["total"]:
            v = total if c == "total" else r[c]
            cell = f"{v:.3f}"
            if prev is not None:
                p = sum(prev[c] for c in cols) if c == "total" else prev[c]
                ratio = (v / p) ** (1 / max(1e-9, __import__("math").log2(size / prev["size"])))
                cell += f" (×{ratio:.1f})"
            cells.append(cell)
        out.append(f"| {size} | {r['nodes'][0]} / {r['nodes'][1]} | " + " | ".join(cells) + " |")
        prev = dict(r, size=size)
    out.append("")
    out.append("(×r: growth per doubling of the size; 2 is linear, 4 quadratic)")
    return "\n".join(out)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes")
    ap.add_argument("--llvm", action="store_true",
                    help="also time the LLVM compile of the 16- and 64-layer MLP")
    a = ap.parse_args(argv)
    chain_sizes = [500, 1000, 2000] if a.quick else [1000, 2000, 4000, 8000]
    mlp_sizes = [4, 16, 64] if a.quick else [16, 64, 256]
    cols = ["trace", "verify", "grad", "optimize", "emit"]
    rows = [measure(*scalar_chain(n)) for n in chain_sizes]
    print(table("Scalar chain h = tanh(h * w)", "forward nodes", chain_sizes, rows, cols))
    print()
    rows = [measure(*mlp(L)) for L in mlp_sizes]
    print(table("Tanh MLP, width 64, batch 32, f64", "layers", mlp_sizes, rows, cols))
    print()
    print("SGD train step of the MLP on numpy, built and run once (seconds)")
    prev = None
    for L in mlp_sizes:
        t = train_step_seconds(L)
        growth = "" if prev is None else \
            f" (×{(t / prev[1]) ** (1 / __import__('math').log2(L / prev[0])):.1f} per doubling)"
        print(f"  {L} layers: {t:.3f} s{growth}")
        prev = (L, t)
    if a.llvm:
        print()
        print("LLVM compile (compiler.compile(grad graph, backend='llvm'), information only)")
        for L in (16, 64):
            r = measure(*mlp(L), llvm=True)
            print(f"  {L} layers: {r['llvm']:.2f} s")


if __name__ == "__main__":
    main()
