"""How long `compiler.check_against_sympy` takes on MLPs of 1, 2, 3 and 5 layers, with default
settings (3 points, time_budget=10), each in a new process (a cold SymPy cache, as `gradc check`
sees it; the import time is not counted).

    python benchmarks/check_times.py                 # the table (Markdown)
    python benchmarks/check_times.py --one 3 svm     # the child: one model, prints JSON

The models: D=3 inputs, hidden layers of width 4 with biases and tanh, C=3 classes, batch N=2,
and either the multiclass SVM loss or softmax cross-entropy.  Columns: the whole check's wall
time, its stages (compiling the gradient on every backend, the 30-digit comparison, the
symbolic proofs with the time left), and how many gradient elements SymPy proved.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

LAYERS = (1, 2, 3, 5)
LOSSES = ("svm", "softmax")


def mlp_source(layers: int, loss: str) -> str:
    """The model as a person writes it: h = tanh(h @ W + b) per hidden layer."""
    params = ", ".join(f"W{k}, b{k}" for k in range(1, layers + 1))
    body = ["    h = X"]
    for k in range(1, layers):
        body.append(f"    h = dsl.tanh(h @ W{k} + b{k})")
    fn = "dsl.svm_loss" if loss == "svm" else "dsl.softmax_cross_entropy"
    body.append(f"    return {fn}(h @ W{layers} + b{layers}, y)")
    return f"def mlp{layers}({params}, X, y):\n" + "\n".join(body) + "\n"


def build(layers: int, loss: str, D: int = 3, H: int = 4, C: int = 3, N: int = 2):
    from frontends import dsl
    from frontends.dsl import f64, i64
    space = {"dsl": dsl}
    exec(compile(mlp_source(layers, loss), f"<mlp{layers}>", "exec"), space)
    dims = [D] + [H] * (layers - 1) + [C]
    specs = {}
    for k in range(1, layers + 1):
        specs[f"W{k}"] = f64[dims[k - 1], dims[k]]
        specs[f"b{k}"] = f64[dims[k]]
    return dsl.trace(space[f"mlp{layers}"], X=f64[N, D], y=i64[N], **specs), dims


def one(layers: int, loss: str) -> dict:
    import compiler
    g, dims = build(layers, loss)
    t = time.perf_counter()
    r = compiler.check_against_sympy(g)
    seconds = time.perf_counter() - t
    proven = sum(p for p, _ in r.proven.values())
    total = sum(n for _, n in r.proven.values())
    return {"layers": layers, "loss": loss, "dims": dims, "seconds": seconds,
            "stages": r.stages, "proven": proven, "elements": total, "ok": r.ok,
            "why": sorted(set(r.numeric_only.values()))}


def table(rows) -> str:
    out = ["| layers | dims | loss | check (s) | compile | 30-digit | symbolic | proven | ok |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        s = r["stages"]
        out.append(f"| {r['layers']} | {'-'.join(map(str, r['dims']))} | {r['loss']} | "
                   f"{r['seconds']:.1f} | {s.get('compile', 0):.1f} | {s.get('numeric', 0):.1f} | "
                   f"{s.get('symbolic', 0):.1f} | {r['proven']}/{r['elements']} | "
                   f"{'OK' if r['ok'] else 'FAILED'} |")
    return "\n".join(out)


def main(argv) -> int:
    if argv[:1] == ["--one"]:
        print(json.dumps(one(int(argv[1]), argv[2])))
        return 0
    rows = []
    for loss in LOSSES:
        for layers in LAYERS:
            done = subprocess.run([sys.executable, os.path.abspath(__file__), "--one",
                                   str(layers), loss], capture_output=True, text=True,
                                  timeout=600, cwd=os.path.dirname(HERE))
            if done.returncode:
                print(done.stderr, file=sys.stderr)
                return 1
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(f"{layers} layers, {loss}: {rows[-1]['seconds']:.1f} s", file=sys.stderr)
    print(table(rows))
    for why in sorted({w for r in rows for w in r["why"]}):
        print(f"- not proven because: {why}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
