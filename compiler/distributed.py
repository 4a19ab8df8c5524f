"""Data-parallel train steps on MPI: every rank computes the gradient of its shard, one
all-reduce sums them, every rank applies the same update.

    from mpi4py import MPI
    step = compiler.train_step(loss, params=..., inputs={"X": f64[n_local, D], ...},
                               optimizer=compiler.optim.Adam(lr=1e-3), comm=MPI.COMM_WORLD)
    loss = step(X=X_shard, y=y_shard)    # the loss of the global batch, before the update

The step is split around the all-reduce into two compiled graphs (`split_step`):

    1. gradient  the loss function's forward and backward on this rank's shard (compiler.grad),
                 then this rank's shares n_r·g_r, computed by the emitted code straight into
                 the slices of one contiguous buffer (`GradientBuffer`, laid out once when the
                 step is built, each gradient at a 64-byte boundary, then n_r·loss_r, n_r and a
                 failure flag): `dW1_local = np.multiply(dW1, n_local, out=dW1_sum)`.
    2. all-reduce one `comm.Allreduce(MPI.IN_PLACE, buffer, op=MPI.SUM)`.  After it the buffer
                 holds Σ_r n_r·g_r, Σ_r n_r·loss_r and N = Σ_r n_r on every rank.
    3. update    `d<p> = d<p>_sum / n_global` (the gradient of the global batch's mean loss: a
                 shard's loss is the mean over its n_r rows, so the global mean is
                 Σ_r (n_r/N)·loss_r, whatever the shard sizes), then the optimizer's update
                 (compiler.optim.append_update: clipping uses the global norm, weight decay the
                 same parameters on every rank), computed into the parameters in place.

n_r is the length of axis 0 of the batch inputs (they must agree).  Every rank therefore keeps
identical parameters and optimizer buffers, and the steps equal one process's steps on the
concatenated batch up to rounding.  The all-reduce is printed between the two graphs in
`step.ir` and `step.source` (and by `gradc show --train-step adam --comm`).

Collectives and consistency:
* Built: the ranks' specs (parameter names, shapes and dtypes, input names, dtypes and shapes
  after axis 0, the optimizer) are all-gathered and must agree (`DistributedError` on every rank
  naming the ranks and the difference); then the parameters (in the buffer: one `Bcast`) and the
  dropout generator's state are broadcast from rank 0.
* Dropout: the generator `step.rng` is the same on every rank; each call draws a key (two
  63-bit integers) from it, and rank r's masks come from `SeedSequence(key, spawn_key=(r,))`:
  a different, reproducible stream per rank; a checkpoint's one generator state restores all.
* batch_norm's running statistics (`step.stats`) are all-reduced with the gradients: their
  n_r-weighted mean over the ranks (each shard is normalized with its own batch statistics).
* A call that raises on one rank before the all-reduce (a bad argument, a re-trace that fails)
  still takes part in it with its failure flag set: every other rank then raises
  `DistributedError` and nobody updates anything, so a caught error never leaves ranks waiting.
  An uncaught one aborts the whole job (`abort_on_error`, installed when a step is built on more
  than one rank: the traceback on stderr, then `comm.Abort(1)`).
* `save` writes on rank 0 only (a no-op elsewhere; not a collective); `load` is a collective:
  rank 0 reads, then broadcasts.  `evaluate` is local: this rank's shard.

mpi4py is imported only when a step is built with `comm=` (`pip install -e '.[mpi]'`).
"""
from __future__ import annotations

import os
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field

import numpy as np

from . import train, trees
from .autodiff import grad
from . import builder as B
from .builder import Builder, Var
from .ir import GradcError, Graph, Namer, TensorType
from .optim import Layout, Optimizer, _named, append_update
from .train import TrainStep, _Compiled, _updates_cannot_fail

ALIGN = 64          # bytes between gradient slices' starts: a cache line


class DistributedError(GradcError):
    """The ranks of a data-parallel step disagree (specs at build time), or another rank's
    call failed (nothing was updated on any rank)."""


# ---- the buffer the all-reduce sums ---------------------------------------------------------
@dataclass
class GradientBuffer:
    """One contiguous array of one dtype: `slots` name -> (offset, shape) in elements.  Slots:
    `d<p>_sum` per parameter (each starting at an ALIGN-byte boundary), then `loss_sum`,
    `n_global` and `failed` (scalars)."""
    dtype: np.dtype
    slots: dict = field(default_factory=dict)
    size: int = 0

    @classmethod
    def layout(cls, types: dict, dtype) -> "GradientBuffer":
        buf = cls(np.dtype(dtype))
        step = max(ALIGN // buf.dtype.itemsize, 1)
        for name, shape in list(types.items()) + [(k, ()) for k in SCALAR_SLOTS]:
            size = int(np.prod(shape, dtype=np.int64))
            buf.slots[name] = (buf.size, tuple(shape))
            buf.size += size if name in SCALAR_SLOTS else -(-size // step) * step
        return buf

    def allocate(self) -> tuple:
        """(flat, views): the zeroed buffer, starting at an ALIGN-byte boundary, and each slot's
        view of it (C-contiguous; scalars as 0-d arrays)."""
        raw = np.zeros(self.size * self.dtype.itemsize + ALIGN, dtype=np.uint8)
        start = -raw.ctypes.data % ALIGN
        flat = raw[start:start + self.size * self.dtype.itemsize].view(self.dtype)
        views = {k: flat[o:o + int(np.prod(s, dtype=np.int64))].reshape(s)
                 for k, (o, s) in self.slots.items()}
        return flat, views

    def describe(self) -> str:
        """The layout as comment lines (what `step.ir` and `step.source` print)."""
        dt = {np.dtype(np.float64): "f64", np.dtype(np.float32): "f32"}[self.dtype]
        lines = [f"# all-reduce: ONE comm.Allreduce(MPI.IN_PLACE, buffer, op=MPI.SUM) over "
                 f"buffer: {dt}[{self.size}] ({self.size * self.dtype.itemsize} bytes), "
                 "laid out once per step:"]
        for k, (o, s) in self.slots.items():
            n = int(np.prod(s, dtype=np.int64))
            what = {"loss_sum": "n_local·loss", "n_global": "n_local (the shard's batch size)",
                    "failed": "1 where this rank's gradient part raised"}.get(
                        k, f"n_local·{k[:-4]}")
            lines.append(f"#   [{o}:{o + n}]".ljust(22) + f"{k} = {what}  {dt}{list(s)}")
        lines.append("# after it every rank holds the sums over all ranks; the update divides "
                     "by n_global")
        return "\n".join(lines)


SCALAR_SLOTS = ("loss_sum", "n_global", "failed")


# ---- the split step: gradient graph, buffer, update graph -----------------------------------
@dataclass
class StepParts:
    gradient: Graph            # inputs: params, batch, n_local, d<p>_sum (the buffer's
                               # slices); outputs: loss_local, d<p>_local (n_local·d<p>)
    update: Graph              # inputs: params, d<p>_sum, loss_sum, n_global, buffers, lr, t
    layout: Layout             # the update graph's (compiler.optim.append_update)
    buffer: GradientBuffer
    loss_key: str

    def text(self) -> str:
        """Both graphs' IR with the all-reduce between them."""
        return (f"# part 1: the local gradient on this rank's shard\n{self.gradient}\n\n"
                f"{self.buffer.describe()}\nallreduce(sum, in place) "
                + ", ".join(self.buffer.slots) + f"\n\n# part 2: the update on the global "
                f"average\n{self.update}")


def split_step(dg: Graph, params, optimizer: Optimizer, loss: str, stats=()) -> StepParts:
    """Split a gradient graph (`compiler.grad(g, wrt=params, of=loss)`) into the parts of a
    data-parallel step.  Mutates `dg`: appends this rank's shares n_local·loss and
    n_local·d<p> (outputs `loss_local`, `d<p>_local`) and, as inputs, the buffer's slices
    `d<p>_sum` that the NumPy code computes the shares into (`NumpyKernel.bind`'s donation:
    `dW1_local = np.multiply(dW1, n_local, out=dW1_sum)`).  `stats`: running statistics
    (batch_norm's, with `<s>_next` outputs in `dg`): all-reduced the same way, so the update
    graph's `<s>_next` is their n_r-weighted mean over the ranks."""
    params = list(params)
    dtypes = {dg.input(p).type.dtype for p in params}
    if len(dtypes) != 1:
        raise DistributedError("train_step(comm=...): the parameters have dtypes "
                               f"{sorted(dtypes)}; a data-parallel step all-reduces one buffer "
                               "of one dtype: give every parameter the same dtype")
    dt = dtypes.pop()
    types = {p: dg.input(p).type for p in params}
    stypes = {k: dg.outputs[f"{k}_next"].type for k in stats}
    odd = {k: t.dtype for k, t in stypes.items() if t.dtype != dt}
    if odd:
        raise DistributedError(f"train_step(comm=...): running statistics {odd} are not {dt} "
                               "like the parameters; the all-reduce buffer has one dtype")
    old, gb = dg.outputs, Builder(dg, Namer(dg.values()))
    n_local = gb.add_input("n_local", TensorType(dt, ()))
    slices = [gb.add_input(f"d{p}_sum", t) for p, t in types.items()]
    slices += [gb.add_input(f"{k}_sum", t) for k, t in stypes.items()]
    gb.rule = "all-reduce: this rank's share n_r·g_r, computed into the buffer"
    shares = {}
    for p in params:
        gb.of = p
        shares[f"d{p}_local"] = _named(gb, Var(gb, old[f"d{p}"]) * n_local, f"d{p}_local")
    for k in stats:
        gb.rule, gb.of = "all-reduce: this rank's share of the running statistic", k
        shares[f"{k}_local"] = _named(gb, Var(gb, old[f"{k}_next"]) * n_local, f"{k}_local")
    gb.rule, gb.of = "all-reduce: this rank's share n_r·loss_r", "loss"
    shares["loss_local"] = _named(gb, Var(gb, old[loss]) * B.cast(n_local, old[loss].dtype),
                                  "loss_local")
    gb.rule = gb.of = None
    dg.outputs = {k: v.value for k, v in shares.items()}
    if getattr(dg, "output_trees", None):      # the outputs are leaves now (compiler/trees.py)
        dg.output_trees = {}
    buffer = GradientBuffer.layout({**{f"d{p}_sum": t.shape for p, t in types.items()},
                                    **{f"{k}_sum": t.shape for k, t in stypes.items()}},
                                   {"f64": np.float64, "f32": np.float32}[dt])
    g = Graph(dg.name.replace("_step", "") + "_update")
    b = Builder(g)
    n = b.add_input("n_global", TensorType(dt, ()))
    loss_sum = b.add_input("loss_sum", TensorType(dt, ()))
    ins = [b.add_input(p, t) for p, t in types.items()]
    sums = {p: b.add_input(f"d{p}_sum", t) for p, t in types.items()}
    clash = [v.name for v in [n, loss_sum] + ins + list(sums.values())
             if v.name not in {"n_global", "loss_sum"} | set(params)
             | {f"d{p}_sum" for p in params}]
    clash += [v.name for v in [n_local] + slices
              if v.name not in {"n_local"} | {f"d{p}_sum" for p in params}
              | {f"{k}_sum" for k in stats}]
    if clash:
        raise DistributedError(f"train_step(comm=...): parameter names clash with the step's "
                               f"inputs n_local, n_global, loss_sum, d<p>_sum (got {clash})")
    b.rule = "all-reduce: the global batch's mean: g = Σ_r n_r·g_r / Σ_r n_r"
    outputs = {}
    for p in params:
        b.of = p
        v = sums[p] / n
        b.rename(v, f"d{p}")
        outputs[f"d{p}"] = v.value
    b.of = "loss"
    outputs["loss"] = (loss_sum / n).value
    b.rule = b.of = None
    g.outputs = outputs
    stat_sums = {k: b.add_input(f"{k}_sum", t) for k, t in stypes.items()}
    layout = append_update(g, params, optimizer, loss="loss")
    b.rule = "all-reduce: the running statistic's n_r-weighted mean over the ranks"
    for k, v in stat_sums.items():
        b.of = k
        g.outputs[f"{k}_next"] = _named(b, v / n, f"{k}_next").value
    b.rule = b.of = None
    return StepParts(dg, g, layout, buffer, loss)


# ---- MPI ------------------------------------------------------------------------------------
def _mpi():
    try:
        from mpi4py import MPI
    except ImportError as e:
        raise GradcError("train_step(comm=...) needs mpi4py: pip install -e '.[mpi]' "
                         f"({e})") from None
    return MPI


_HOOKED = threading.Lock()


def abort_on_error(comm) -> None:
    """Make an uncaught exception on this rank abort the whole MPI job (the traceback on
    stderr, then `comm.Abort(1)`) instead of leaving the other ranks waiting in a collective.
    Installed once; a hook the program set itself (not Python's default) is kept."""
    with _HOOKED:
        if getattr(sys.excepthook, "gradc_abort", False) or sys.excepthook is not \
                sys.__excepthook__:
            return
        rank, size = comm.Get_rank(), comm.Get_size()

        def hook(kind, value, tb, where=""):
            # one write, then a pause: mpiexec forwards stderr asynchronously and an abort
            # can drop what its proxy has not read yet (the traceback's last lines were lost)
            sys.stderr.write(f"gradc: rank {rank} of {size}{where} raised {kind.__name__}; "
                             "aborting the MPI job (comm.Abort)\n"
                             + "".join(traceback.format_exception(kind, value, tb)))
            sys.stderr.flush()
            time.sleep(0.5)
            comm.Abort(1)
            os._exit(1)   # MPICH's Abort can return before the process manager acts on it
            #              (seen from a thread): this rank must not go on into the next step
        hook.gradc_abort = True
        sys.excepthook = hook
        if threading.excepthook is threading.__excepthook__:   # a thread's, too
            threading.excepthook = lambda a: hook(a.exc_type, a.exc_value, a.exc_traceback,
                                                  f" (thread {a.thread.name})")


def _signature(params: dict, inputs: dict, optimizer, backend) -> dict:
    """What every rank's step must agree on (input shapes after axis 0: shards may differ)."""
    def spec(s):
        if isinstance(s, TensorType):
            return f"{s.dtype}{list(s.shape[1:])} (after axis 0)"
        return repr(s)
    leaves = []
    for k, v in dict(params).items():      # a tree's leaves by dotted path (compiler/trees.py)
        for path, a in (trees.leaves(v) if trees.is_tree(v) else [((), v)]):
            leaves.append((trees.dotted(k, path) if path else k, tuple(np.shape(a)),
                           str(np.asarray(a).dtype)))
    return {"parameters": leaves,
            "inputs": [(k, spec(s)) for k, s in dict(inputs).items()],
            "optimizer": repr(optimizer), "backend": backend}


def _check_agree(comm, sig: dict) -> None:
    every = comm.allgather(sig)
    bad = [f"rank {r}: {k} {s[k]} (rank 0: {every[0][k]})"
           for r, s in enumerate(every) for k in s if s[k] != every[0][k]]
    if bad:
        raise DistributedError("train_step(comm=...): the ranks built different steps; every "
                               "rank must pass the same parameters, input specs (except the "
                               "batch axis 0) and optimizer:\n  " + "\n  ".join(bad))


class DistributedTrainStep(TrainStep):
    """A TrainStep whose compiled call is gradient, all-reduce, update (module docstring).
    Extra attributes: `comm`, `rank`, `size`, `parts` (the last built StepParts), `buffer`
    (the flat all-reduce buffer), `allreduce_seconds` (time spent in Allreduce, summed)."""

    def __init__(self, loss_fn, params, inputs, optimizer, backend="numpy", *, comm, **kw):
        MPI = _mpi()
        if not isinstance(comm, MPI.Comm) or comm == MPI.COMM_NULL or comm.Is_inter():
            raise GradcError(f"train_step: comm must be an mpi4py intra-communicator "
                             f"(MPI.COMM_WORLD, or a comm.Split of it), got {comm!r}")
        self.comm, self.rank, self.size, self._mpi = comm, comm.Get_rank(), comm.Get_size(), MPI
        if self.size > 1:
            abort_on_error(comm)
        _check_agree(comm, _signature(params, inputs, optimizer, backend))
        self.buffer = self._views = self.parts = None
        self.allreduce_seconds = 0.0
        self._reduced = False
        super().__init__(loss_fn, params, inputs, optimizer, backend, **kw)
        self.rng.bit_generator.state = comm.bcast(self.rng.bit_generator.state, root=0)
        for k, a in self._params.items():            # rank 0's parameters, in one Bcast
            self._views[f"d{k}_sum"][...] = a
        comm.Bcast(self.buffer, root=0)
        for k, a in self._params.items():
            a[...] = self._views[f"d{k}_sum"]
        self.buffer[...] = 0

    # ---- calls --------------------------------------------------------------------------
    def __call__(self, **batch) -> float:
        with self.lock:
            self._reduced = False
            shared = self.rng
            drawn = shared.bit_generator.state
            if self._dropout:      # this rank's stream: a key from the shared generator
                key = shared.integers(0, 2 ** 63, size=2)
                seq = np.random.SeedSequence([int(k) for k in key], spawn_key=(self.rank,))
                self.rng = np.random.Generator(type(shared.bit_generator)(seq))
            try:
                return super().__call__(**batch)
            except BaseException:
                shared.bit_generator.state = drawn
                if not self._reduced:           # the others wait in the all-reduce: join it
                    self.buffer[...] = 0
                    self._views["failed"][...] = 1
                    self.comm.Allreduce(self._mpi.IN_PLACE, self.buffer, op=self._mpi.SUM)
                raise
            finally:
                self.rng = shared

    def _allreduce(self) -> None:
        t0 = self._mpi.Wtime()
        self.comm.Allreduce(self._mpi.IN_PLACE, self.buffer, op=self._mpi.SUM)
        self.allreduce_seconds += self._mpi.Wtime() - t0
        self._reduced = True
        failed = int(self._views["failed"])
        if failed:
            raise DistributedError(f"{self.name}: {failed} other rank(s) raised in this step "
                                   "(see their errors); no rank updated anything")
        if not self._views["n_global"]:
            raise DistributedError(f"{self.name}: every rank's shard is empty; nothing to "
                                   "average (no rank updated anything)")

    def save(self, path) -> None:
        """Rank 0 writes (TrainStep.save); on the other ranks a no-op, so that both `step.save`
        on every rank and `if rank == 0: step.save(...)` work (no collective: nothing waits)."""
        if self.rank == 0:
            super().save(path)

    def load(self, path) -> "DistributedTrainStep":
        """Rank 0 reads and validates (TrainStep.load); the parameters, buffers, t, generator
        and learning rate are then broadcast.  A failure on rank 0 raises on every rank and
        changes nothing."""
        with self.lock:
            err = None
            if self.rank == 0:
                try:
                    super().load(path)
                except Exception as e:      # noqa: BLE001
                    err = e
            said = self.comm.bcast(None if err is None else f"{type(err).__name__}: {err}",
                                   root=0)
            if err is not None:
                raise err
            if said is not None:
                raise train.CheckpointError(f"load on rank 0 failed: {said}")
            for a in [*self._params.values(), *self.state.values(), *self.stats.values()]:
                self.comm.Bcast(a, root=0)
            self.t, state, self.optimizer.lr = self.comm.bcast(
                (self.t, self.rng.bit_generator.state, self.optimizer.lr), root=0)
            self.rng.bit_generator.state = state
        return self

    # ---- building -----------------------------------------------------------------------
    def _build(self, specs: dict, training: bool) -> _Compiled:
        if not training:
            return super()._build(specs, training)
        batch_axis = [k for k, s in specs.items() if len(s.shape) >= 1]
        if not batch_axis:
            raise DistributedError(f"{self.name}: train_step(comm=...) needs a batch input "
                                   "with an axis 0 to weight the shards by")
        sizes = {k: specs[k].shape[0] for k in batch_axis}
        if len(set(sizes.values())) != 1:
            raise DistributedError(f"{self.name}: the batch inputs' axis 0 differ ({sizes}); "
                                   "a data-parallel step weights each shard by that length")
        g, carried, loss_key, dropout = self._traced(specs, training=True)
        stats = [v.name for v in carried]
        self._dropout = bool(dropout)
        parts = split_step(grad(g, wrt=list(self._params), of=loss_key), list(self._params),
                           self.optimizer, loss_key, stats)
        if self.buffer is None:
            self.buffer, self._views = parts.buffer.allocate()
        gk = trees.unwrapped(self._compile(parts.gradient))     # called with leaf names
        uk = self._compile(parts.update)
        self.compilations += 1
        lay = parts.layout
        utypes = {v.name: v.type for v in parts.update.inputs}
        fixed = dict(self._params)
        fixed.update({inp: self.state[key] for inp, key in lay.state.items()})
        for k in (lay.base_lr, lay.t):
            fixed[k] = np.zeros((), dtype=train.NUMPY_DTYPE[utypes[k].dtype])
        fixed.update({k: self._views[k] for k in ("loss_sum", "n_global")})
        fixed.update({f"d{p}_sum": self._views[f"d{p}_sum"] for p in self._params})
        fixed.update({f"{k}_sum": self._views[f"{k}_sum"] for k in stats})
        donate = {key: inp for inp, key in lay.writeback if inp != lay.t}
        if not _updates_cannot_fail(uk.graph, donate):
            donate = {}
        # part 1 holds the parameters, n_local and the buffer's slices it writes its shares into
        gfixed = dict(self._params)
        gfixed["n_local"] = n_local = np.zeros((), dtype=self.buffer.dtype)
        gfixed.update({f"d{p}_sum": self._views[f"d{p}_sum"] for p in self._params})
        gfixed.update({k: self.stats[k] for k in stats})
        gfixed.update({f"{k}_sum": self._views[f"{k}_sum"] for k in stats})
        gdonate = {f"d{p}_local": f"d{p}_sum" for p in self._params}
        gdonate.update({f"{k}_local": f"{k}_sum" for k in stats})
        gbind, ubind = getattr(gk, "bind", None), getattr(uk, "bind", None)
        grun = None if gbind is None else gbind(gfixed, donate=gdonate)
        urun = None if ubind is None else ubind(fixed, donate=donate)
        views, axis0 = self._views, batch_axis[0]
        pairs = [(f"d{p}_local", views[f"d{p}_sum"]) for p in self._params]
        pairs += [(f"{k}_local", views[f"{k}_sum"]) for k in stats]

        def run(**batch):
            n = batch[axis0].shape[0]
            if n:
                n_local[...] = n
                out = grun(**batch) if grun is not None else gk(copy=False, **gfixed, **batch)
                for key, view in pairs:       # computed into the buffer where donation applied
                    if out[key] is not view:
                        np.copyto(view, out[key])
                views["loss_sum"][...] = out["loss_local"]
            else:                     # an empty shard adds nothing (its mean loss is 0/0)
                self.buffer[...] = 0
            views["n_global"][...] = n
            views["failed"][...] = 0
            self._allreduce()
            return urun() if urun is not None else uk(copy=False, **fixed)

        c = _Compiled(_Parts(gk, uk, parts), parts.gradient, lay, dropout, "loss")
        c.fixed = fixed
        c.shapes = {k: t.shape for k, t in specs.items()}
        c.copy_back = [(self._params[inp] if inp in self._params
                        else self.state[lay.state[inp]], key)
                       for inp, key in lay.writeback if inp != lay.t]
        c.copy_back += [(self.stats[k], f"{k}_next") for k in stats]
        c.t_key = dict(lay.writeback)[lay.t]
        c.scalar_keys = [k for k, v in parts.update.outputs.items()
                         if v.shape == () and k in train._SCALARS]
        c.owned = [(f"parameter {k!r}", a) for k, a in self._params.items()]
        c.owned += [(f"optimizer buffer {slot!r} of {p!r}", a)
                    for (slot, p), a in self.state.items()]
        c.run = run
        self.parts = parts
        return c


class _Parts:
    """What `step.source` and `step.ir` show for a data-parallel variant: the gradient kernel,
    the all-reduce, the update kernel."""

    def __init__(self, gradient, update, parts: StepParts):
        self.gradient, self.update, self.parts = gradient, update, parts
        marker = parts.buffer.describe()
        self.source = (f"# ==== part 1: the local gradient ({gradient.backend}) ====\n"
                       f"{gradient.source}\n{marker}\n"
                       "comm.Allreduce(MPI.IN_PLACE, buffer, op=MPI.SUM)   # allreduce\n\n"
                       f"# ==== part 2: the update ({update.backend}) ====\n{update.source}")
        self.ir = parts.text()


def train_step(loss_fn, params: dict, inputs: dict, optimizer: Optimizer,
               backend: str = "numpy", *, comm=None, **kw) -> TrainStep:
    """compiler.train.train_step, and with `comm=` (an mpi4py communicator) a data-parallel
    step: each rank calls it with its shard of the batch (module docstring)."""
    if comm is None:
        return train.train_step(loss_fn, params, inputs, optimizer, backend, **kw)
    return DistributedTrainStep(loss_fn, params, inputs, optimizer, backend, comm=comm, **kw)


train_step.__doc__ = (train.train_step.__doc__ or "") + "\n\n    " + train_step.__doc__.strip()

__all__ = ["DistributedError", "DistributedTrainStep", "GradientBuffer", "StepParts",
           "abort_on_error", "split_step", "train_step"]
