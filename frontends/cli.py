"""The `gradc` command line: inspect, emit, check, draw and time a model's gradient.

    gradc show  FILE:FUNC [--grad] [--passes]        the IR; the gradient IR; each pass's diff
    gradc show  FILE:FUNC --train-step adam [--comm] a train step (data-parallel: the all-reduce)
    gradc emit  FILE:FUNC [--backend numpy|llvm] [--forward] [--train-step adam] [--asm] [-o F]
    gradc check FILE:FUNC                            SymPy + finite-difference reports
    gradc dot   FILE:FUNC [--grad] [-o net.dot|net.svg|net.png]
    gradc bench FILE:FUNC [--backend numpy,llvm] [--repeat 100]

FILE:FUNC names a model function (`examples/lecture.py:neuron`; a dotted module name such as
`examples.lecture:neuron` works too).  Its inputs' specs come from its annotations
(`def neuron(w: f64[3], x: f64[2])`); `--shape NAME=SPEC` overrides one of them, with SPEC
`f64[64,2]`, `i64[64]`, `f64[]` (a scalar), or bare dimensions `64,2` (the dtype stays the
annotated one, f64 without annotation).  Shapes that must agree (X's rows, y's length) are
overridden together.

Which inputs get gradients: `--wrt a,b` names them (or paths into a parameter tree:
`--wrt params.l1.W`, `--wrt params.l2`, compiler/trees.py); otherwise every float input except
those named by `--data X,y` (integer inputs, labels, never get one).  `--train-step OPT` treats
the same set as the parameters and appends the optimizer's update rule (compiler.optim): data inputs are
the integer inputs and those named by --data.

Exit status: 0 on success, 1 when `gradc check` finds a wrong gradient, 2 for a usage mistake (a
bad path, a missing function, a bad shape, no annotations), reported as one line on stderr
(`--debug` shows the traceback).
"""
from __future__ import annotations

import argparse
import contextlib
import difflib
import os
import statistics
import sys
import time
import traceback

import numpy as np

import compiler
from compiler.check import label_values
from compiler.dot import render, to_dot
from compiler.export import export_module
from compiler.ir import NUMPY_DTYPE, GradcError
from compiler.passes import DEFAULT_PIPELINE

from .target import (EXIT_FAILED, EXIT_OK, EXIT_USAGE, OPTIMIZERS, _OPTIMIZER_DEFAULT_LR,
                     CliError, Model, _names, parse_pipeline)
from .target import load_function, parse_spec, specs_for  # noqa: F401  (re-exported)


def _maybe_optimize(graph, pipeline_text):
    passes = parse_pipeline(pipeline_text)
    return graph if passes == [] else compiler.optimize(graph, passes)


def _write(text: str, path: str | None, what: str) -> None:
    if path is None:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        return
    try:
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as e:
        raise CliError(f"cannot write {path}: {e.strerror}") from e
    print(f"wrote {path} ({what}, {text.count(chr(10))} lines)")


# ---- commands --------------------------------------------------------------------------------
def cmd_show(args) -> int:
    m = Model(args)
    if args.comm and not args.train_step:
        raise CliError("--comm shows a data-parallel train step: give --train-step OPTIMIZER")
    if args.train_step:
        if args.grad or args.passes:
            raise CliError("--train-step shows the whole step: without --grad or --passes")
        print(m.train_step(args.train_step, comm=True).text() if args.comm
              else m.train_step(args.train_step)[0])
        return EXIT_OK
    graph = m.gradient() if args.grad else m.graph
    if not args.passes:
        print(_maybe_optimize(graph, args.pipeline or "none"))
        return EXIT_OK
    passes = parse_pipeline(args.pipeline)
    per_round = max(len(DEFAULT_PIPELINE if passes is None else passes), 1)
    final, history = compiler.optimize(graph, passes, trace=True)
    print(f"== input ({len(graph.nodes)} nodes)")
    print(graph)
    before = graph
    for start in range(0, len(history), per_round):
        chunk = history[start:start + per_round]
        rnd = start // per_round + 1
        if all(g == before for _, g in chunk):
            print(f"== round {rnd}: no pass changed the graph")
            continue
        for name, g in chunk:
            head = f"== round {rnd}, pass {name}"
            if g == before:
                print(f"{head}: no change")
                continue
            print(f"{head}: {len(before.nodes)} -> {len(g.nodes)} nodes")
            diff = difflib.unified_diff(str(before).splitlines(), str(g).splitlines(),
                                        f"before {name}", f"after {name}", lineterm="", n=1)
            print("\n".join(diff))
            before = g
    rounds = (len(history) + per_round - 1) // per_round
    print(f"== result after {rounds} round(s) ({len(final.nodes)} nodes)")
    print(final)
    return EXIT_OK


def _emit_graph(m: Model, args):
    """(graph, layout or None, what) for emit/bench: the gradient by default when the model has
    one scalar float output, the forward graph with --forward."""
    if getattr(args, "train_step", None):
        dg, layout = m.train_step(args.train_step)
        return dg, layout, (f"a train step ({OPTIMIZERS[args.train_step]}) of "
                            f"{m.graph.name}, parameters {', '.join(m.wrt)}")
    if args.grad and args.forward:
        raise CliError("--grad and --forward exclude each other")
    if args.grad or (not args.forward and m.scalar_output()):
        return m.gradient(), None, m.about(True)
    return m.graph, None, m.about(False)


def cmd_emit(args) -> int:
    if args.kernel and args.backend != "numpy":
        raise CliError("--kernel is for --backend numpy (the LLVM IR is the kernel)")
    m = Model(args)
    graph, layout, what = _emit_graph(m, args)
    passes = parse_pipeline(args.pipeline)
    if args.backend == "numpy":
        if args.asm:
            raise CliError("--asm is for --backend llvm")
        if args.kernel:
            text = compiler.compile(graph, backend="numpy", passes=passes).source
        else:
            text = export_module(graph, passes=passes, origin=args.target, what=what,
                                 layout=layout,
                                 lr=_OPTIMIZER_DEFAULT_LR.get(args.train_step, 1e-3))
        _write(text, args.output, "NumPy source")
        return EXIT_OK
    fn = compiler.compile(graph, backend="llvm", passes=passes)
    _write(fn.asm if args.asm else fn.source, args.output,
           "assembly" if args.asm else "LLVM IR")
    return EXIT_OK


def _progress(line: str) -> None:
    """A progress line of `gradc check`, on stderr (stdout keeps only the reports)."""
    print(line, file=sys.stderr, flush=True)


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux: MemAvailable), else the physical
    memory, or None where neither is known."""
    with contextlib.suppress(OSError, ValueError, StopIteration):
        with open("/proc/meminfo") as f:
            return int(next(ln for ln in f if ln.startswith("MemAvailable:")).split()[1]) * 1024
    with contextlib.suppress(OSError, ValueError, AttributeError):
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return None


def require_memory(graph, what: str) -> None:
    """A CliError, before anything is allocated, when the graph's inputs alone need more memory
    than is available (random data that large would only get the process killed)."""
    named = [f"{v.name}: {v.type}" for v in graph.inputs if v.type.symbolic]
    if named:       # random data needs sizes: a dimension name has none until a call
        raise CliError(f"{what} needs sizes for the dimension names of {', '.join(named)}; "
                       "give them with --shape (e.g. --shape X=f64[64,2]); gradc show, emit, "
                       "dot and check take dimension names")
    need = sum(v.type.size * np.dtype(NUMPY_DTYPE[v.dtype]).itemsize for v in graph.inputs)
    have = available_memory()
    if have is not None and need > have:
        raise CliError(f"{what} needs random inputs of {need / 2 ** 30:.3g} GiB, more than the "
                       f"{have / 2 ** 30:.3g} GiB of memory available; choose smaller --shape "
                       "values (gradc show, emit and dot need no data)")


def cmd_check(args) -> int:
    m = Model(args)
    # the SymPy check runs on a reduced copy of a large model; a symbolic one at N = 3
    if args.only != "sympy" and not any(v.type.symbolic for v in m.graph.inputs):
        require_memory(m.graph, f"checking {m.graph.name} by finite differences")
    ok, ran = True, 0
    if args.only in (None, "sympy"):
        try:
            r = compiler.check_against_sympy(m.graph, m.wrt, m.of, points=args.points,
                                             seed=args.seed, time_budget=args.time_budget,
                                             progress=_progress)
        except GradcError as e:
            print(f"check_against_sympy: skipped: {e}")
        else:
            print(r, flush=True)
            ok, ran = ok and r.ok, ran + 1
    if args.only in (None, "fd"):
        _progress(f"[{0:5.1f} s] check_finite_differences: {m.graph.name}: {args.points} points")
        started = time.perf_counter()
        r = compiler.check_finite_differences(m.graph, m.wrt, m.of, points=args.points,
                                              seed=args.seed)
        took = time.perf_counter() - started
        _progress(f"[{took:5.1f} s] check_finite_differences: done in {took:.1f} s")
        print(r)
        ok, ran = ok and r.ok, ran + 1
    if not ran:
        raise CliError("no check could run")
    return EXIT_OK if ok else EXIT_FAILED


def cmd_dot(args) -> int:
    m = Model(args)
    graph = _maybe_optimize(m.gradient() if args.grad else m.graph, args.pipeline or "none")
    text = to_dot(graph, fusion=not args.no_fusion)
    ext = os.path.splitext(args.output or "")[1].lstrip(".").lower()
    if args.output is None or ext in ("dot", "gv"):
        _write(text, args.output, "Graphviz DOT")
    else:
        render(text, args.output)
        print(f"wrote {args.output} (rendered by Graphviz dot)")
    return EXIT_OK


def _seconds(s: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if s >= scale:
            return f"{s / scale:.3g} {unit}"
    return f"{s / 1e-9:.3g} ns"


def random_inputs(graph, seed: int = 0) -> dict:
    """Floats ~ N(0, 1); integer labels in range of the class count their consumers imply;
    bool masks True with probability ½."""
    rng = np.random.default_rng(seed)
    out = label_values(graph, rng)
    for v in graph.inputs:
        if v.type.is_float:
            out[v.name] = rng.standard_normal(v.shape).astype(NUMPY_DTYPE[v.dtype])
        elif v.dtype == "bool":
            out[v.name] = rng.random(v.shape) < 0.5
        elif v.name not in out:
            out[v.name] = np.zeros(v.shape, dtype=NUMPY_DTYPE[v.dtype])
    return out


def cmd_bench(args) -> int:
    m = Model(args)
    graph, _, what = _emit_graph(m, args)
    backends = _names(args.backend)
    for b in backends:
        if b not in compiler.BACKENDS:
            raise CliError(f"--backend {b}: backends are {', '.join(compiler.BACKENDS)}")
    if args.repeat < 1:
        raise CliError("--repeat must be at least 1")
    require_memory(graph, f"timing {graph.name}")
    inputs = random_inputs(graph, args.seed)
    sig = ", ".join(f"{v.name}: {v.type}" for v in graph.inputs)
    print(f"bench: {what}")
    print(f"  inputs ({sig}), random (seed {args.seed}); {args.repeat} timed calls after one "
          "warm-up call")
    rows = [("backend", "compile", "median/call", "min/call")]
    passes = parse_pipeline(args.pipeline)
    for b in backends:
        t0 = time.perf_counter()
        fn = compiler.compile(graph, backend=b, passes=passes)
        compile_s = time.perf_counter() - t0
        fn(**inputs)
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            fn(**inputs)
            times.append(time.perf_counter() - t0)
        rows.append((b, _seconds(compile_s), _seconds(statistics.median(times)),
                     _seconds(min(times))))
    widths = [max(len(r[k]) for r in rows) for k in range(4)]
    for r in rows:
        print("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    return EXIT_OK


# ---- the parser --------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("target", metavar="FILE:FUNC",
                        help="the model function, e.g. examples/lecture.py:neuron")
    common.add_argument("--shape", action="append", metavar="NAME=SPEC",
                        help="override an input's spec: X=f64[64,2], y=i64[64], X=64,2 "
                             "(repeatable)")
    common.add_argument("--wrt", metavar="A,B", help="differentiate with respect to these "
                        "inputs or paths into a parameter tree, params.l1.W (default: every "
                        "float input not named by --data)")
    common.add_argument("--data", metavar="X,Y", help="inputs that are data, not parameters: "
                        "no gradient, not trained")
    common.add_argument("--of", metavar="OUTPUT", help="the output to differentiate (a model "
                        "with several outputs)")
    common.add_argument("--debug", action="store_true", help="show tracebacks of errors")

    def pipeline(p, default):
        p.add_argument("-O", "--pipeline", metavar="PASSES", help="the passes to run first: "
                       f"default, none, or a comma list of pass names (default: {default})")

    parser = argparse.ArgumentParser(
        prog="gradc", description="gradc: trace a Python model, differentiate it as a graph, "
        "and inspect, emit, check, draw or time the result.",
        epilog="FILE:FUNC's inputs take their specs from the function's annotations "
               "(def neuron(w: f64[3], x: f64[2])); --shape overrides them.  Exit status: 0 ok, "
               "1 a check failed, 2 a usage mistake.  See docs/inspecting.md.")
    parser.add_argument("--version", action="version", version="gradc 0.1.0")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("show", parents=[common], help="print the IR (--grad: the gradient IR; "
                       "--passes: the graph after each pass with a diff)",
                       description="Print the traced graph's IR.")
    p.add_argument("--grad", action="store_true", help="the gradient graph (compiler.grad)")
    p.add_argument("--passes", action="store_true", help="run the pass pipeline and show a "
                   "unified diff after each pass that changed the graph")
    p.add_argument("--train-step", choices=sorted(OPTIMIZERS), metavar="OPTIMIZER",
                   help="the train step's graph (forward, backward, the optimizer's update)")
    p.add_argument("--comm", action="store_true", help="with --train-step: the data-parallel "
                   "step (gradient, the all-reduce, update; docs/distributed.md)")
    pipeline(p, "none; with --passes, default")
    p.set_defaults(run=cmd_show)

    p = sub.add_parser("emit", parents=[common], help="generate code: a standalone NumPy "
                       "module or LLVM IR", description="Generate code. The gradient by default "
                       "when the model has one scalar float output.  --backend numpy writes a "
                       "standalone module (needs only numpy; see compiler/export.py).")
    p.add_argument("--backend", choices=compiler.BACKENDS, default="numpy")
    p.add_argument("--grad", action="store_true", help="emit the gradient graph")
    p.add_argument("--forward", action="store_true", help="emit the forward graph only")
    p.add_argument("--train-step", choices=sorted(OPTIMIZERS), metavar="OPTIMIZER",
                   help=f"emit a train step ({', '.join(sorted(OPTIMIZERS))}): forward, "
                   "backward and the update of the parameters (float inputs not in --data)")
    p.add_argument("--asm", action="store_true", help="with --backend llvm: the assembly")
    p.add_argument("--kernel", action="store_true", help="with --backend numpy: the source "
                   "compiler.compile runs (memory-planned), not the standalone module")
    p.add_argument("-o", "--output", metavar="FILE", help="write to FILE (default: stdout)")
    pipeline(p, "default")
    p.set_defaults(run=cmd_emit)

    p = sub.add_parser("check", parents=[common], help="check the gradient against SymPy and "
                       "finite differences (exit 1 when wrong)",
                       description="Check gradc's gradient against SymPy (symbolic and 30-digit "
                       "numeric) and against float64 central differences.")
    p.add_argument("--only", choices=("sympy", "fd"), help="run one of the two checks")
    p.add_argument("--points", type=int, default=3, help="random points (default 3)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--time-budget", type=float, default=10.0, metavar="SECONDS",
                   help="for the whole SymPy check: 30-digit comparison, then symbolic "
                   "proofs with the time left (default 10)")
    p.set_defaults(run=cmd_check)

    p = sub.add_parser("dot", parents=[common], help="draw the graph (Graphviz DOT; .svg/.png "
                       "when `dot` is installed)", description="Draw the graph: forward nodes "
                       "blue, gradient nodes orange, fusion groups as dashed clusters.")
    p.add_argument("--grad", action="store_true", help="the gradient graph")
    p.add_argument("--no-fusion", action="store_true", help="no fusion-group clusters")
    p.add_argument("-o", "--output", metavar="FILE", help="FILE.dot (text), or FILE.svg, .png, "
                   ".pdf rendered by Graphviz's dot (default: DOT text on stdout)")
    pipeline(p, "none")
    p.set_defaults(run=cmd_dot)

    p = sub.add_parser("bench", parents=[common], help="time the compiled function on random "
                       "inputs", description="Compile and time the function (the gradient by "
                       "default for a scalar-output model) on random inputs.")
    p.add_argument("--backend", default="numpy", metavar="B[,B]",
                   help="numpy, llvm, or numpy,llvm (default numpy)")
    p.add_argument("--repeat", type=int, default=100, help="timed calls (default 100)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--grad", action="store_true", help="time the gradient graph")
    p.add_argument("--forward", action="store_true", help="time the forward graph only")
    pipeline(p, "default")
    p.set_defaults(run=cmd_bench)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = args.debug or "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        return args.run(args)
    except (CliError, GradcError) as e:
        if debug:
            traceback.print_exc()
        print(f"gradc {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except MemoryError as e:           # a shape this machine cannot hold (e.g. kernel buffers)
        if debug:
            traceback.print_exc()
        print(f"gradc {args.command}: error: out of memory: {e}; choose smaller --shape values",
              file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:            # `gradc emit ... | head`
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")
        return EXIT_OK
    except KeyboardInterrupt:
        return 130



__all__ = ["main", "build_parser", "random_inputs", "CliError", "Model", "load_function",
           "parse_spec", "specs_for"]


if __name__ == "__main__":
    sys.exit(main())
