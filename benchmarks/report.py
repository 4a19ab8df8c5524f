"""Render a benchmarks/run.py result as docs/benchmarks.md and docs/benchmarks.png.

    python benchmarks/report.py out.json                 # writes docs/benchmarks.md + .png
    python benchmarks/report.py out.json -o /tmp/b.md    # elsewhere (the PNG beside it)

Ratios, per workload: × hand = time / hand-written NumPy's time; × best peer = time / the
fastest peer's time (jax, torch, pytensor, autograd); × floor = time / floor, the floor being
the step's GEMM flops at the GEMM peak measured in the same run.  Below 1.00 is faster.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GRADC = ("gradc-numpy", "gradc-llvm")
NOT_PEERS = ("hand",) + GRADC

# Written from the measured numbers of the run that docs/benchmarks.md shows (see the report).
ANALYSIS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "analysis.md")


def fmt(s) -> str:
    if s is None:
        return "—"
    return (f"{s * 1e6:.2f} µs" if s < 1e-4 else f"{s * 1e6:.1f} µs" if s < 1e-3
            else f"{s * 1e3:.2f} ms" if s < 1 else f"{s:.2f} s")


def ratio(a, b) -> str:
    return "—" if a is None or not b else f"{a / b:.2f}×"


def index(result) -> dict:
    """workload key -> impl -> row."""
    out = {}
    for r in result["rows"]:
        out.setdefault(r["workload"], {})[r["impl"]] = r
    return out


def floor_s(result, wl) -> float | None:
    peak = result.get("peaks", {}).get(wl["dtype"])
    return wl["flops"] / (peak * 1e9) if wl["flops"] and peak else None


def best(rows: dict, names) -> tuple:
    """(impl, median) of the fastest timed row among `names`, or (None, None)."""
    timed = [(r["median_s"], n) for n, r in rows.items() if n in names and "median_s" in r]
    return (min(timed)[1], min(timed)[0]) if timed else (None, None)


def workload_table(result, wl, rows) -> list:
    hand = rows.get("hand", {}).get("median_s")
    peers = [n for n in rows if n not in NOT_PEERS]
    _, peer_t = best(rows, peers)
    fl = floor_s(result, wl)
    lines = ["| implementation | median | min | × hand | × best peer | × floor | calls "
             "| CPU/wall |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in rows.items():
        if "median_s" not in r:
            lines.append(f"| {name} | not timed: {r.get('error', '?')} | | | | | | |")
            continue
        t = r["median_s"]
        bold = "**" if name in GRADC else ""
        cpu = f"{r['cpu_per_wall']:.2f}" if "cpu_per_wall" in r else "—"
        lines.append(f"| {bold}{name}{bold} | {fmt(t)} | {fmt(r['min_s'])} | {ratio(t, hand)} | "
                     f"{ratio(t, peer_t)} | {ratio(t, fl)} | {r['calls']} | {cpu} |")
    return lines


def headline(result, idx, dtype="f64") -> list:
    configs = [c for c in ("tiny", "cifar", "big") if f"two_layer/{c}/{dtype}" in idx]
    if not configs:
        return []
    wls = {w["key"]: w for w in result["workloads"]}
    impls = []
    for c in configs:
        impls += [n for n in idx[f"two_layer/{c}/{dtype}"] if n not in impls]
    lines = [f"| {dtype} train step | " + " | ".join(configs) + " |",
             "|---|" + "---:|" * len(configs)]
    for n in impls:
        cells = []
        for c in configs:
            rows = idx[f"two_layer/{c}/{dtype}"]
            r, hand = rows.get(n, {}), rows.get("hand", {}).get("median_s")
            cells.append(f"{fmt(r['median_s'])} ({ratio(r['median_s'], hand)} hand)"
                         if "median_s" in r else "not timed")
        bold = "**" if n in GRADC else ""
        lines.append(f"| {bold}{n}{bold} | " + " | ".join(cells) + " |")
    lines.append("| GEMM floor | " + " | ".join(
        fmt(floor_s(result, wls[f"two_layer/{c}/{dtype}"])) for c in configs) + " |")
    return lines


def not_leading(result, idx) -> list:
    """One line per workload where no gradc backend is the fastest."""
    out = []
    for w in result["workloads"]:
        rows = idx.get(w["key"], {})
        g_name, g_t = best(rows, GRADC)
        o_name, o_t = best(rows, [n for n in rows if n not in GRADC])
        if g_t is not None and o_t is not None and g_t > o_t:
            out.append(f"- `{w['key']}`: {o_name} {fmt(o_t)}, best gradc ({g_name}) "
                       f"{fmt(g_t)} ({g_t / o_t:.2f}×)")
    return out


def readme_summary(result) -> str:
    """The headline ratios in one paragraph, for README.md."""
    idx = index(result)
    parts = []
    for c in ("tiny", "cifar", "big"):
        rows = idx.get(f"two_layer/{c}/f64", {})
        g_name, g_t = best(rows, GRADC)
        _, hand = best(rows, ["hand"])
        p_name, p_t = best(rows, [n for n in rows if n not in NOT_PEERS])
        if g_t is None:
            continue
        parts.append(f"{c} {fmt(g_t)} ({g_name}; {ratio(g_t, hand)} hand-written NumPy, "
                     f"{ratio(g_t, p_t)} the fastest peer, {p_name})")
    note = f" ({result['note']})" if result.get("note") else ""
    return ("Two-layer net train step (forward, gradient, SGD update), f64, median per step, "
            f"measured {result['started']}{note}: " + "; ".join(parts) + ".")


def compile_table(result) -> list:
    if not result.get("compile"):
        return ["(not measured in this run)"]
    lines = ["| tool | cold: build + first step | warm cache: build + first step | import "
             "| cache |", "|---|---:|---:|---:|---|"]
    for r in result["compile"]:
        if "error" in r:
            lines.append(f"| {r['tool']} | failed: {r['error']} | | | {r.get('cache', '')} |")
            continue
        hit = ""
        if "cache_hit" in r.get("warm", {}):
            hit = " (hit)" if r["warm"]["cache_hit"] else " (MISS)"
        lines.append(f"| {r['tool']} | {r['cold']['build_first_step_s']:.3f} s | "
                     f"{r['warm']['build_first_step_s']:.3f} s{hit} | "
                     f"{r['cold']['import_s']:.2f} s | {r['cache']} |")
    return lines


def machine(result) -> list:
    m, p = result["machine"], result.get("peaks", {})
    pools = m.get("threadpools")
    pools = ("; ".join(f"{t['user_api']} {t['internal_api']} {t['version']}: "
                       f"{t['num_threads']} threads" for t in pools)
             if isinstance(pools, list) else pools)
    env = ", ".join(f"{k}={v}" for k, v in m["env"].items() if v) or "none set"
    pinned = (f"; the run was pinned to {m.get('affinity')} of them (--threads "
              f"{result['threads']})" if result.get("threads") else "")
    lines = [f"- CPU: {m.get('cpu')}, {m['cpu_count']} logical cores{pinned}; "
             f"{m['platform']}; Python {m['python']}, NumPy {m['numpy']}",
             f"- Thread pools (threadpoolctl): {pools}; thread variables: {env}"]
    if p:
        lines.append("- GEMM peak (NumPy matmul, best of 3): " + ", ".join(
            f"{k} {v:.1f} GFLOP/s" for k, v in p.items() if "/" in k)
            + f"; copy bandwidth {p['copy_GBps']:.1f} GB/s (read + write)")
    for name, pk in result.get("peer_peaks", {}).items():
        lines.append(f"- GEMM peak of {name}'s own matrix product (measured in its process): "
                     + ", ".join(f"{k} {v:.1f} GFLOP/s" for k, v in pk.items() if "/" in k))
    lines.append(f"- Load average (1, 5, 15 min) at the start {_load(result['load']['start'])}, "
                 f"at the end {_load(result['load']['end'])}")
    lines.append("- Implementations: " + "; ".join(
        f"{k}: {v}" for k, v in result["impls"].items()))
    return lines


def _load(t) -> str:
    return "/".join(f"{x:.2f}" for x in t)


def render(result) -> str:
    idx = index(result)
    kind = "quick (--quick)" if result.get("quick") else "tiny (--tiny)" if result.get(
        "tiny") else "full"
    md = ["# Benchmarks", "",
          "Generated by `python benchmarks/report.py out.json` from "
          "`python benchmarks/run.py --json out.json`; do not edit by hand.", "",
          "```",
          "pip install -e '.[bench]'               # jax, autograd, pytensor, matplotlib",
          "pip install torch --index-url https://download.pytorch.org/whl/cpu   # optional, CPU",
          "python benchmarks/run.py --json out.json   # full suite; --quick: about a minute",
          "python benchmarks/report.py out.json       # this page and docs/benchmarks.png",
          "```", "",
          "PyTorch is measured when a CPU build is installed; the `bench` extra does not pull it "
          "(an unpinned torch brings a multi-GB CUDA build).  PyTensor's Numba needs an older "
          "llvmlite than the newest; gradc's LLVM backend works with either, so one environment "
          "holds all of them.  Where numba does not work in the running Python, give "
          "`--numba-python PATH` (a Python whose numba works): PyTensor runs in a child process "
          "anyway.  `--threads N` limits every implementation to N threads.", "",
          "## This run", "",
          f"- {kind} suite, started {result['started']}, {result['elapsed_s']:.0f} s; timing "
          f"budget {result['budget_s']} s per row; SGD lr = {result['lr']}"]
    if result.get("note"):
        md.append(f"- Conditions: {result['note']}")
    if result.get("numba_python"):
        md.append(f"- PyTensor ran under `{result['numba_python']}` (--numba-python)")
    md += machine(result) + [""]
    head = headline(result, idx)
    if head:
        md += ["## Headline: the two-layer net train step (forward, gradient, SGD update), f64",
               "", "Median time per step and its ratio to hand-written NumPy.", ""] + head + [""]
    lead = not_leading(result, idx)
    md += ["## Where gradc does not lead", ""] + (lead or ["gradc leads every workload."]) + [""]
    if os.path.exists(ANALYSIS):
        with open(ANALYSIS) as f:
            md += [f.read().strip(), ""]
    if result.get("_png"):
        md += ["![time relative to hand-written NumPy](benchmarks.png)", ""]
    md += ["## All results", ""]
    for w in result["workloads"]:
        rows = idx.get(w["key"])
        if not rows:
            continue
        fl = floor_s(result, w)
        extra = (f"; floor {fmt(fl)} ({w['flops'] / 1e6:.1f} MFLOP of GEMM at the measured "
                 f"peak)" if fl else "")
        md += [f"### {w['key']}", "", f"{w['describe']}{extra}.", ""]
        md += workload_table(result, w, rows) + [""]
    md += ["## Compile time", "",
           "The cifar f64 two-layer train step built and run once in a new process: cold (an "
           "empty cache directory) and again with that cache directory warm.", ""]
    md += compile_table(result) + [""]
    md += ["## Method", "", METHOD]
    return "\n".join(md) + "\n"


METHOD = """\
- Workloads (benchmarks/workloads.py): the lecture's scalar graphs, value and every gradient per
  call through each tool's public callable; one SGD train step (forward, gradient of every
  parameter, p ← p − lr·dp) of multilayer perceptrons with a softmax cross-entropy loss: the
  two-layer net at tiny (N=64, D=2, H=100, C=3), cifar (N=200, D=3072, H=100, C=10) and big
  (N=1024, D=1024, H=1024, C=10); a deep MLP (6 relu layers of 512, batch 128); an
  elementwise-heavy MLP (swish, tanh, swish layers of 64, batch 256).
- Implementations (benchmarks/peers.py): **gradc-numpy** and **gradc-llvm** are
  `compiler.train_step(..., optimizer=compiler.optim.SGD(lr), backend=...)` called with the
  batch (scalar graphs: `compiler.compile(compiler.grad(g), backend=...)`); hand is a
  CS231n-style NumPy step updating in place; jax is `jax.jit` of `value_and_grad` with the
  update inside the jit (parameters stay JAX arrays; float64 enabled); torch is eager autograd
  with an in-place update under `no_grad`, `torch.set_num_threads` set to NumPy's BLAS thread
  count; pytensor-numba and pytensor-c are `pytensor.function` with `updates` on shared
  variables (Numba linker, and the C `cvm` linker), run in a child process; autograd is HIPS
  `value_and_grad` returning new parameter arrays.
- Agreement before timing: every implementation takes one step from identical parameters and
  data; its loss (relative error ≤ 1e-9 in f64, 1e-4 in f32) and updated parameters (error
  ≤ 1e-6 (f64) or 2e-2 (f32) of lr·max|gradient|) are compared with the hand-written step;
  scalar graphs compare value and gradients to 1e-12. A row that disagrees is not timed.
- Timing: two warm-up calls, then samples of k calls (k makes a sample last ≥ 1 ms) until the
  row's budget is spent, at least 5 samples; median and min per call; CPU/wall is the
  process's CPU time over the wall time of the timed samples (about how many cores it kept
  busy; below 1, it waited for a CPU that other work held). hand, gradc and autograd run in this process; jax, torch and PyTensor each in a child
  process of their own, started once and asked for one workload at a time, so that all rows
  of a workload are measured within the same minute (idle XLA/OpenMP threads in the same
  process would slow the next implementation's BLAS calls). Other work may share the machine:
  see the load average above.
- Floor: the GEMM flops of the step (2·N·in·out per product; forward, dW and dh per layer,
  no dh for the first layer) divided by the best GEMM rate measured in the same run.
- Compile time: each tool in a new process (`benchmarks/compile_times.py TOOL`), with its cache
  directory (GRADC_CACHE_DIR, JAX's persistent compilation cache, PyTensor's compiledir and
  NUMBA_CACHE_DIR (PYTENSOR_FLAGS=base_compiledir=...), TORCHINDUCTOR_CACHE_DIR) pointed at a fresh temporary directory; run twice.
"""


def chart(result, path) -> str | None:
    """A bar chart of time / hand-written NumPy per train workload; None if it was made,
    else the reason."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed"
    idx = index(result)
    keys = [w["key"] for w in result["workloads"] if w["key"] in idx]
    order = ["gradc-numpy", "gradc-llvm", "jax", "torch", "pytensor-numba", "pytensor-c",
             "autograd"]
    impls = sorted((n for n in result["impls"] if n != "hand"
                    and any("median_s" in idx[k].get(n, {}) for k in keys)),
                   key=lambda n: order.index(n) if n in order else len(order))
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(keys) * max(1, len(impls)) / 3 + 2))
    height = 0.8 / max(1, len(impls))
    for j, n in enumerate(impls):
        ys, xs = [], []
        for i, k in enumerate(keys):
            r, hand = idx[k].get(n, {}), idx[k].get("hand", {}).get("median_s")
            if "median_s" in r and hand:
                ys.append(i + j * height)
                xs.append(r["median_s"] / hand)
        ax.barh(ys, xs, height=height, label=n)
    ax.axvline(1.0, color="black", lw=0.8)
    ax.set_xscale("log")
    ax.set_yticks([i + 0.4 - height / 2 for i in range(len(keys))], keys, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("median time / hand-written NumPy (log; left of 1 is faster)")
    ax.set_title(f"gradc and its peers, {result['started']}", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("json_file")
    ap.add_argument("-o", "--output", default=os.path.join(ROOT, "docs", "benchmarks.md"))
    ap.add_argument("--no-chart", action="store_true")
    ap.add_argument("--readme", action="store_true", help="print the headline for README.md")
    a = ap.parse_args(argv)
    with open(a.json_file) as f:
        result = json.load(f)
    if a.readme:
        print(readme_summary(result))
        return readme_summary(result)
    png = os.path.splitext(a.output)[0] + ".png"
    why = "skipped (--no-chart)" if a.no_chart else chart(result, png)
    text = render(dict(result, _png=why is None))
    if why is not None:
        text = text.replace("## All results", f"(No chart: {why}.)\n\n## All results", 1)
    with open(a.output, "w") as f:
        f.write(text)
    print(f"wrote {a.output}" + ("" if why else f" and {png}"), file=sys.stderr)
    return text


if __name__ == "__main__":
    main()
