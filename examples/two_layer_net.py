"""Train a two-layer net on the spiral data set with a train step compiled by gradc.

The data and the model are those of CS231n's "Putting it together" notes: 3 classes of 100
points each on interleaved spiral arms in 2-D, and a 100-unit ReLU layer followed by a linear
layer and the softmax cross-entropy loss with L2 regularisation:

    h      = relu(X·W1 + b1)                       [N, H]
    scores = h·W2 + b2                             [N, C]
    L      = −(1/N) Σ_i log softmax(scores_i)[y_i] + ½·reg·(ΣW1² + ΣW2²)

`compiler.train_step` traces `loss`, differentiates it with respect to the four parameters
(labels are integers and get no gradient; X is data), appends the optimizer's update rule to the
gradient graph and compiles the whole step (forward, backward, update) into one function.  The
script trains full-batch with plain gradient descent  θ ← θ − lr·∂L/∂θ  (SGD) and with Adam,
each from the same initial parameters, and reports the training accuracy of both.

Run it:  python examples/two_layer_net.py [--optimizer sgd|adam|both] [--backend llvm|numpy]
             [--steps 4000] [--seed 0] [--plot spiral.png] [--no-progress] [--data-parallel]
(exits 1 if an optimizer ends below 0.97 training accuracy; `mpiexec -n 2 ... --data-parallel`:
each rank a share of the rows, docs/distributed.md).  tqdm (a progress bar) and matplotlib
(the loss curves and decision regions, as a PNG) are optional: pip install -e '.[examples]'.
`spiral(seed)`, `loss`, `scores`, `init_params(seed)`, `train(...)` are importable.
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field

import numpy as np

import compiler
from frontends import dsl
from frontends.dsl import f64, i64

N_PER_CLASS, D, H, C = 100, 2, 100, 3
N = N_PER_CLASS * C
REG = 1e-3
PARAMS = ("W1", "b1", "W2", "b2")
STEPS = 4000
LEARNING_RATES = {"sgd": 1.0, "adam": 3e-2}
OPTIMIZERS = {"sgd": compiler.optim.SGD, "adam": compiler.optim.Adam}
TARGET = 0.97


def spiral(seed: int = 0, n_per_class: int = N_PER_CLASS, classes: int = C):
    """The spiral data set: class j's points are (r sin t, r cos t) with r = linspace(0, 1) and
    t = linspace(4j, 4(j+1)) + 0.2·noise.  Returns X f64[n·classes, 2] and y i64[n·classes]."""
    rng = np.random.default_rng(seed)
    X = np.zeros((n_per_class * classes, 2))
    y = np.zeros(n_per_class * classes, dtype=np.int64)
    for j in range(classes):
        ix = slice(n_per_class * j, n_per_class * (j + 1))
        r = np.linspace(0.0, 1.0, n_per_class)
        t = np.linspace(j * 4, (j + 1) * 4, n_per_class) + rng.standard_normal(n_per_class) * 0.2
        X[ix] = np.c_[r * np.sin(t), r * np.cos(t)]
        y[ix] = j
    return X, y


def init_params(seed: int = 0) -> dict:
    """W ~ 0.01·N(0, 1), b = 0, as in CS231n."""
    rng = np.random.default_rng(seed)
    return {"W1": 0.01 * rng.standard_normal((D, H)), "b1": np.zeros(H),
            "W2": 0.01 * rng.standard_normal((H, C)), "b2": np.zeros(C)}


def scores(W1: f64[2, 100], b1: f64[100], W2: f64[100, 3], b2: f64[3], X: f64[300, 2]):
    """The class scores h·W2 + b2 with h = relu(X·W1 + b1)."""
    h = dsl.relu(X @ W1 + b1)
    s = h @ W2 + b2
    return s


def loss(W1: f64[2, 100], b1: f64[100], W2: f64[100, 3], b2: f64[3], X: f64[300, 2],
         y: i64[300], reg: float = REG):
    """Mean softmax cross-entropy of the scores plus ½·reg·(ΣW1² + ΣW2²)."""
    s = scores(W1, b1, W2, b2, X)
    data_loss = dsl.softmax_cross_entropy(s, y)
    reg_loss = 0.5 * reg * (dsl.sum(W1 * W1) + dsl.sum(W2 * W2))
    L = data_loss + reg_loss
    return L


@dataclass
class Run:
    """The outcome of training with one optimizer."""
    optimizer: str
    lr: float
    params: dict
    accuracy: float
    losses: list = field(repr=False)     # the loss before each update
    seconds: float = 0.0                 # building the step + training
    compile_seconds: float = 0.0


def scorer(n: int, backend: str = "numpy"):
    """`scores` compiled for any number of points (X: f64["N", 2], a symbolic batch
    dimension): fn(X, **params) -> f64[n, C].  `n` is kept for callers; any n works."""
    fn = _scorers.get(backend)
    if fn is None:
        fn = _scorers[backend] = compiler.compile(dsl.trace(scores, X=f64["N", D]),
                                                  backend=backend)
    return lambda X, params: fn(X=X, **params)["out"]


_scorers: dict = {}      # backend -> the compiled `scores` (one for every number of points)


def _progress(iterable, total: int, desc: str, enabled: bool):
    """A tqdm bar (on a terminal) when tqdm is installed and wanted, else the plain range."""
    if enabled:
        try:
            from tqdm import tqdm
        except ImportError:
            return iterable
        return tqdm(iterable, total=total, desc=desc, unit="step", leave=False, disable=None)
    return iterable


def train(optimizer: str = "sgd", steps: int = STEPS, lr: float | None = None, seed: int = 0,
          backend: str = "llvm", every: int = 500, progress: bool = False, log=print,
          comm=None) -> Run:
    """Train the net full-batch on spiral(seed) from init_params(seed) with `optimizer`
    ("sgd" or "adam"; lr defaults to LEARNING_RATES[optimizer]) for `steps` compiled train
    steps; logs the loss every `every` steps and returns a Run with the training accuracy.
    With `comm` (an mpi4py communicator) each rank trains on its share of the rows and the
    step all-reduces the gradients (docs/distributed.md): the same steps as one process."""
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {sorted(OPTIMIZERS)}, got {optimizer!r}")
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    lr = LEARNING_RATES[optimizer] if lr is None else lr
    X, y = spiral(seed)
    mine = slice(0, N)
    if comm is not None:            # this rank's rows: contiguous, as even as N allows
        rank, size = comm.Get_rank(), comm.Get_size()
        mine = slice(N * rank // size, N * (rank + 1) // size)
    Xs, ys = X[mine], y[mine]
    start = time.perf_counter()
    step = compiler.train_step(loss, params=init_params(seed),
                               inputs={"X": f64["N", D], "y": i64["N"]},
                               optimizer=OPTIMIZERS[optimizer](lr=lr), backend=backend,
                               **({} if comm is None else {"comm": comm}))
    compiled = time.perf_counter() - start
    losses = []
    bar = _progress(range(steps), steps, optimizer, progress)
    write = getattr(bar, "write", log) if bar is not None else log
    for k in bar:
        losses.append(step(X=Xs, y=ys))
        if k % every == 0 or k == steps - 1:
            write(f"{optimizer:>4}  step {k:5d}  loss {losses[-1]:.4f}")
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{losses[-1]:.4f}", refresh=False)
    if hasattr(bar, "close"):
        bar.close()
    seconds = time.perf_counter() - start
    predicted = np.argmax(scorer(N, backend)(X, step.params), axis=1)
    return Run(optimizer, lr, {k: a.copy() for k, a in step.params.items()},
               float(np.mean(predicted == y)), losses, seconds, compiled)


def save_plot(path: str, runs: list, seed: int = 0, backend: str = "numpy") -> bool:
    """Loss curves and each run's decision regions over the spiral, as a PNG at `path`.
    Returns False (after a one-line note) when matplotlib is not installed."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib is not installed: no plot; pip install -e '.[examples]')")
        return False
    X, y = spiral(seed)
    fig, axes = plt.subplots(1, 1 + len(runs), figsize=(4.4 * (1 + len(runs)), 4.2))
    for run in runs:
        axes[0].plot(np.arange(1, len(run.losses) + 1), run.losses,
                     label=f"{run.optimizer} (lr {run.lr:g})")
    axes[0].set(xlabel="step", ylabel="training loss (log scale)", yscale="log",
                title="loss curves")
    axes[0].legend()
    side = 250
    lo, hi = X.min(axis=0) - 0.2, X.max(axis=0) + 0.2
    gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], side), np.linspace(lo[1], hi[1], side))
    grid = np.c_[gx.ravel(), gy.ravel()]
    on_grid = scorer(len(grid), backend)
    colors = np.array(["#d62728", "#2ca02c", "#1f77b4"])
    for ax, run in zip(axes[1:], runs):
        region = np.argmax(on_grid(grid, run.params), axis=1).reshape(gx.shape)
        ax.contourf(gx, gy, region, levels=np.arange(C + 1) - 0.5, colors=colors, alpha=0.25)
        ax.scatter(X[:, 0], X[:, 1], c=colors[y], s=10, edgecolors="k", linewidths=0.3)
        ax.set(title=f"{run.optimizer}: training accuracy {run.accuracy:.3f}",
               xlim=(lo[0], hi[0]), ylim=(lo[1], hi[1]), aspect="equal")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(f"plot saved to {path}")
    return True


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--optimizer", choices=("sgd", "adam", "both"), default="both")
    parser.add_argument("--backend", choices=("llvm", "numpy"), default="llvm")
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sgd-lr", type=float, default=LEARNING_RATES["sgd"])
    parser.add_argument("--adam-lr", type=float, default=LEARNING_RATES["adam"])
    parser.add_argument("--every", type=int, default=500, help="print the loss every N steps")
    parser.add_argument("--plot", metavar="PATH", help="save loss curves and decision regions "
                        "as a PNG (needs matplotlib)")
    parser.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    parser.add_argument("--data-parallel", action="store_true", help="under mpiexec -n K: "
                        "each rank trains on N/K rows, gradients all-reduced (needs mpi4py)")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.every < 1:
        parser.error("--steps and --every must be at least 1")
    names = ("sgd", "adam") if args.optimizer == "both" else (args.optimizer,)
    lrs = {"sgd": args.sgd_lr, "adam": args.adam_lr}
    comm, log = None, print
    if args.data_parallel:
        from mpi4py import MPI
        comm = MPI.COMM_WORLD
        if comm.Get_rank() != 0:      # one rank reports; every rank trains and checks
            log = lambda *a, **k: None  # noqa: E731
        log(f"data-parallel: {comm.Get_size()} rank(s), {N} rows split between them")
    runs = []
    for name in names:
        run = train(name, args.steps, lrs[name], args.seed, args.backend, args.every,
                    progress=not args.no_progress and log is print, log=log, comm=comm)
        log(f"{name:>4}  training accuracy {run.accuracy:.4f}  ({args.steps} steps, lr "
              f"{run.lr:g}, {run.seconds:.2f} s of which {run.compile_seconds:.2f} s compiling)")
        runs.append(run)
    if args.plot and log is print:
        save_plot(args.plot, runs, args.seed, args.backend)
    failed = [r for r in runs if r.accuracy < TARGET]
    for r in failed:
        print(f"FAIL: {r.optimizer} training accuracy {r.accuracy:.4f} is below {TARGET}",
              file=sys.stderr)
    log("training accuracy " + ", ".join(f"{r.optimizer} {r.accuracy:.4f}" for r in runs)
          + f"  (backend {args.backend}, {sum(r.seconds for r in runs):.1f} s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
