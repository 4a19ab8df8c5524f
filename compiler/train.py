"""Train steps: forward, backward and the optimizer's update compiled into one function.

    step = compiler.train_step(loss, params={"W1": W1, "b1": b1, ...},
                               inputs={"X": f64[64, 2], "y": i64[64]},
                               optimizer=compiler.optim.Adam(lr=1e-3), backend="numpy")
    loss = step(X=Xb, y=yb)        # one update; step.params are updated in place

How it is built: `loss` is traced with the parameters' and inputs' specs, differentiated with
respect to the parameters (`compiler.grad`), the optimizer's update rule is appended as IR
(`compiler.optim.append_update`: optimizer buffers and the step counter are graph inputs, their
new values graph outputs), and the graph is compiled with `compiler.compile(backend=...)`.  The
step object owns the parameter and buffer arrays and, after each call, writes the `*_next`
outputs back into them in place (so `step.params["W1"]` keeps its identity).  The NumPy kernel
is called through `NumpyKernel.bind`: those arrays are checked once, and each update is computed
straight into its array (`W1_next = np.subtract(W1, ..., out=W1)`, in the kernel's
`bound_source`; `step.source` is the plain emitted function).

A parameter may be a tree (nested dicts, lists and tuples of arrays, compiler/trees.py):
`train_step(loss, params={"params": {"l1": {"W": W, "b": b}, "l2": [V]}}, ...)` traces `loss`
with the same structure and `step.params["params"]["l1"]["W"]` is the step's array, updated in
place.

`loss` returns the scalar loss, or a dict with a `"loss"` entry and other outputs (scores, ...)
that `step.evaluate` returns.  Input shapes other than the declared ones (a smaller last batch)
trace and compile the step again, once per distinct set of shapes (cached).

Dropout: `dsl.dropout(x, p)` in a training trace adds a bool input `dropout_keep` of x's shape
to the graph.  The step object fills every such input from its own generator,
`numpy.random.default_rng(seed)`, each call, with keep = (uniform[0, 1) ≥ p), drawn in graph-input
order.  `step.evaluate(...)` runs a separate evaluation trace (`training=False`) in which dropout
is the identity and nothing is updated.

Checkpoints (compiler/checkpoint.py): `save(path)` writes an .npz with the parameters
(`param/<name>`; a tree's leaves by path, `param/params.l1.W`), the optimizer buffers (`state/<slot>/<name>`), the step counter `t`, the
generator state `rng` (JSON), the optimizer's class and hyper-parameters, atomically (a temporary
file, fsynced and renamed over the old one); `load(path)` validates every field before it changes
anything and then restores them (and the learning rate), after which training continues with
results bit-identical to never having stopped.

All or nothing: a call that raises (a read-only parameter, a bad argument, an error inside the
kernel) leaves the parameters, buffers, `t` and the generator as they were.  Where the NumPy
kernel computes updates in place, every statement from the first in-place update on is one that
cannot raise (`_updates_cannot_fail`); otherwise it computes into its own buffers and the step
copies back after the call succeeded.
"""
from __future__ import annotations

import json
import threading
from contextlib import nullcontext

import numpy as np

from . import checkpoint, trees
from .autodiff import grad
from .backends import compile as compile_graph
from .builder import dsl_module
from .builder_conv import carried_state, running_stats
from .checkpoint import CheckpointError, TrainStepError
from .codegen.numpy_emit import plan_inlining
from .ir import FLOAT_DTYPES, NUMPY_DTYPE, GradcError, TensorType
from .ops import OPS
from .optim import Optimizer, append_update
from .shapes import bind_dims, fits, resolve, symbolic

_FLOAT_DTYPES = {np.dtype(np.float32): "f32", np.dtype(np.float64): "f64"}
_SCALARS = ("loss", "lr", "grad_norm")     # the step graph's diagnostics, kept in `step.last`


class _Compiled:
    """One compiled variant (per set of input shapes): the kernel and how to call it."""

    def __init__(self, kernel, graph, layout, dropout, loss_key):
        self.kernel, self.graph, self.layout = kernel, graph, layout
        self.dropout = dropout          # [(graph input name, p, shape)] in input order
        self.loss_key = loss_key
        self.shapes: dict = {}          # training variants: batch input name -> shape
        self._fitting: set = set()      # (name, array shape) seen to fit a symbolic shape

    def sizes(self, batch: dict) -> dict:
        """The sizes of the dimension names in this call (for dropout masks of shape [N, H])."""
        if not any(symbolic(shape) for _, _, shape in self.dropout):
            return {}
        values = [v for v in self.graph.inputs if v.name in batch]
        return bind_dims(values, [np.asarray(batch[v.name]) for v in values])

    def takes(self, batch: dict) -> bool:
        """Whether `batch` is arrays of exactly this variant's input shapes (no re-tracing)."""
        if len(batch) != len(self.shapes):
            return False
        seen = self._fitting
        for k, shape in self.shapes.items():
            a = batch.get(k)
            if type(a) is not np.ndarray:
                return False
            s = a.shape
            if s != shape and (k, s) not in seen:   # a dimension name takes any size: one
                if not fits(s, shape):               # variant (the shapes that fit, kept:
                    return False                     # this is every call's test)
                if len(seen) >= 256:
                    seen.clear()
                seen.add((k, s))
        return True


class TrainStep:
    """A compiled train step.  Call it with the data inputs as keywords; it returns the loss
    (a float, before the update) and updates `params` and the optimizer state in place.

    Attributes: `params` (dict name -> array, owned by the step), `state` (dict
    (slot, name) -> array), `t` (updates taken), `last` (the last call's loss, learning rate
    and, when clipping, gradient norm), `optimizer` (its `lr` is read at every call:
    changing it takes effect without recompiling), `rng` (the dropout generator), `source` and
    `ir` of the most recently used compiled step, `compilations` (how many were built), `lock`.

    Threads: a step may be called from any number of threads.  Each call (dropout draw,
    forward, backward, update, counter) holds `step.lock` (a reentrant lock), as do `evaluate`,
    `save` and `load`, so concurrent calls end exactly where the same calls made one after
    another, in the order they took the lock, would end: n calls advance `t` by exactly n and
    each sees the state the previous one left.  Hold `step.lock` yourself to group several
    (a step, then `save`), or to read `params`/`state` while other threads train: outside it
    they may show an update in progress.  A call that raises changes nothing (module
    docstring)."""

    def __init__(self, loss_fn, params: dict, inputs: dict, optimizer: Optimizer,
                 backend: str = "numpy", *, seed: int = 0, passes=None, name: str | None = None):
        if not callable(loss_fn):
            raise GradcError(f"train_step: loss_fn must be a function, got {loss_fn!r}")
        if not isinstance(optimizer, Optimizer):
            raise GradcError("train_step: optimizer must be a compiler.optim optimizer (SGD, "
                             f"Momentum, RMSProp, Adam, AdamW), got {optimizer!r}")
        self.loss_fn, self.optimizer = loss_fn, optimizer
        self.backend, self.passes = backend, passes
        self.name = name or f"{getattr(loss_fn, '__name__', 'model')}_step"
        # runtime/ imports compiler.ir, whose package __init__ imports this module
        from runtime.checks import refuse_masked

        def own(what, a):
            refuse_masked(f"train_step: {what}", a)
            arr = np.array(a, copy=True)
            if arr.dtype not in _FLOAT_DTYPES:
                raise GradcError(f"train_step: {what} has dtype {arr.dtype}; "
                                 "parameters must be float32 or float64 arrays")
            return arr
        # a parameter may be a tree (compiler/trees.py): _params holds its leaves by input
        # name, _view the caller's structure of the same arrays, _paths the leaves' paths
        self._params, self._view, self._paths = trees.own_params(dict(params), own)
        if not self._params:
            raise GradcError("train_step: params is empty; pass the arrays to train")
        self.inputs = {}
        for k, spec in dict(inputs).items():
            if not isinstance(spec, TensorType):
                raise GradcError(f"train_step: the spec of input {k!r} must look like "
                                 f"f64[64, 2] or i64[64], got {spec!r}")
            if k in self._params or k in self._view:
                raise GradcError(f"train_step: {k!r} is both a parameter and an input")
            self.inputs[k] = spec
        self.stats: dict = {}      # batch_norm's running statistics: input name -> array
        self.state = {(slot, p): np.zeros_like(a)
                      for p, a in self._params.items() for slot in optimizer.slots}
        self.t = 0
        self.rng = np.random.default_rng(seed)
        self.lock = threading.RLock()
        self.compilations = 0
        self.last: dict = {}
        self._train: dict = {}
        self._eval: dict = {}
        self._last = self._compiled(self._shapes(None), training=True)

    # ---- the public surface ---------------------------------------------------------------
    @property
    def params(self) -> dict:
        """name -> array, or the tree of arrays it was given as (the step's own arrays)."""
        return self._view

    @property
    def source(self) -> str:
        return self._last.kernel.source

    @property
    def ir(self) -> str:
        return self._last.kernel.ir

    @property
    def graph(self):
        return self._last.graph

    def __call__(self, **batch) -> float:
        """One update on `batch`; returns the loss computed before it.  Atomic: under
        `self.lock`, and a call that raises leaves every parameter, buffer, `t` and `rng` as
        it was."""
        with self.lock:
            c = self._last
            if not c.takes(batch):          # the hot path: the same shapes as the last call
                c = self._compiled(self._shapes(batch), training=True)
                self._last = c
            for what, a in c.owned:         # copy_back / out= must not fail half-way
                if not a.flags.writeable:
                    raise TrainStepError(f"{self.name}: {what} is read-only; the step updates "
                                         "it in place (set flags.writeable = True)")
            lay = c.layout
            drawn = self.rng.bit_generator.state if c.dropout else None
            try:
                sizes = c.sizes(batch)          # the batch's N of f64[N, ...] inputs
                for name, p, shape in c.dropout:
                    batch[name] = self.rng.random(resolve(shape, sizes)) >= p
                c.fixed[lay.base_lr][...] = self.optimizer.lr
                c.fixed[lay.t][...] = self.t
                if c.run is not None:          # the kernel holds our arrays, checked once (bind)
                    out = c.run(**batch)
                else:                          # params, buffers, lr and t: the same arrays
                    out = c.kernel(copy=False, **c.fixed, **batch)
            except BaseException:
                if drawn is not None:
                    self.rng.bit_generator.state = drawn
                raise
            for dst, key in c.copy_back:
                if out[key] is not dst:        # not already computed into it (NumpyKernel.bind)
                    np.copyto(dst, out[key])
            self.t = int(out[c.t_key])
            self.last = last = {k: float(out[k]) for k in c.scalar_keys}
            return last["loss"]

    def evaluate(self, **batch) -> dict:
        """The loss function's outputs on `batch` with the current parameters, dropout off,
        nothing updated: {"loss": ..., and any other outputs loss_fn returns}."""
        with self.lock:
            c = self._compiled(self._shapes(batch), training=False)
            out = trees.grouped_outputs(c.graph, c.kernel(**self._params, **self._stats_for(c.graph), **batch))
        return {("loss" if k == c.loss_key else k): v for k, v in out.items()}

    def save(self, path) -> None:
        """Write parameters, optimizer buffers, step counter, generator state and the optimizer's
        class and hyper-parameters to `path` (.npz, compiler/checkpoint.py), atomically: a
        temporary file in the same directory, fsynced, renamed over the old file, and the
        directory fsynced.  A crash or kill during the save leaves the old file as it was."""
        with self.lock:
            data = self._members()
            data.update({f"state/batch_norm/{k}": a for k, a in self.stats.items()})
            data["t"] = np.int64(self.t)
            data["rng"] = np.array(json.dumps(self.rng.bit_generator.state))
            data["optimizer"] = np.array(type(self.optimizer).__name__)
            config = self.optimizer.describe()
            config.pop("optimizer", None)
            data["optimizer_config"] = np.array(json.dumps(config))
            checkpoint.write_atomic(path, data)

    def load(self, path) -> "TrainStep":
        """Restore what `save` wrote, into the arrays this step owns, and the learning rate
        (`optimizer.lr`, a runtime value).  Every field is validated before anything changes:
        member names, each array's dtype and shape (this step's parameters and buffers), the
        optimizer class and its other hyper-parameters, `t` (a non-negative integer) and the
        generator state; a mismatch is a CheckpointError naming the field, and the step is
        then exactly as before.  Nothing in the file is executed (no pickle)."""
        with self.lock:
            want = self._members()
            want.update({f"state/batch_norm/{k}": a for k, a in self.stats.items()})
            got = checkpoint.read(path, want, self.optimizer, self.rng.bit_generator)
            for k, dst in want.items():
                if not dst.flags.writeable:
                    raise TrainStepError(f"load: {k} of {self.name} is read-only; nothing "
                                         "was loaded")
            for k, dst in want.items():         # validated: from here on nothing can fail
                np.copyto(dst, got["arrays"][k])
            self.t = got["t"]
            self.rng.bit_generator.state = got["rng"]
            self.optimizer.lr = got["lr"]
        return self

    def __repr__(self) -> str:
        ins = ", ".join(f"{k}: {v}" for k, v in self.inputs.items())
        return (f"<gradc train step {self.name}({ins}) params {list(self._params)} "
                f"{self.optimizer!r} t={self.t} backend={self.backend!r}>")

    # ---- building ---------------------------------------------------------------------------
    def _shapes(self, batch: dict) -> tuple:
        """The input specs for `batch` (None: the declared ones, for the first compile)."""
        if batch is None:
            batch = {}
        else:
            missing = [k for k in self.inputs if k not in batch]
            extra = [k for k in batch if k not in self.inputs]
            if missing or extra:
                raise TypeError(f"{self.name}(): "
                                + "; ".join(([f"missing {missing}"] if missing else [])
                                            + ([f"unexpected {extra}"] if extra else []))
                                + f"; it takes {list(self.inputs)}")
        # a symbolic spec (f64["N", 2]) stays: one variant serves every N (the kernel checks
        # the arrays against it); a concrete one takes the batch's shape (one variant each)
        return tuple((k, TensorType(s.dtype, np.shape(batch[k]) if k in batch and not
                                    s.symbolic else s.shape))
                     for k, s in self.inputs.items())

    def _carried(self, g) -> list:
        """The running statistics of a training trace (batch_norm's inputs with `_next`
        outputs: builder_conv.carried_state); the step owns them like its parameters, made
        on first sight as PyTorch does (mean 0, variance 1), updated after each call from the
        `_next` outputs and saved in checkpoints as `state/batch_norm/<name>`."""
        known = set(self._params) | set(self.inputs) | {
            n.inputs[1].name for n in g.nodes if n.op == "dropout"}
        carried = carried_state(g, known)
        for v in carried:
            if v.name not in self.stats:
                fill = 1.0 if v.name.endswith("_running_var") else 0.0
                self.stats[v.name] = np.full(v.shape, fill, dtype=NUMPY_DTYPE[v.dtype])
        return carried

    def _stats_for(self, graph) -> dict:
        """The running statistics `graph` reads (an evaluation trace's batch_norm)."""
        names = {v.name for v in graph.inputs}
        return {k: a for k, a in self.stats.items() if k in names}

    def _compiled(self, specs: tuple, training: bool) -> _Compiled:
        cache = self._train if training else self._eval
        if specs not in cache:
            cache[specs] = self._build(dict(specs), training)
        return cache[specs]

    def _members(self) -> dict:
        """Checkpoint member name -> the array: `param/<path>` and `state/<slot>/<path>`,
        a tree's leaf by its dotted path (`param/params.l1.W`)."""
        paths = self._paths
        data = {f"param/{paths[k]}": a for k, a in self._params.items()}
        data.update({f"state/{slot}/{paths[p]}": a for (slot, p), a in self.state.items()})
        return data

    def _compile(self, graph):
        """`compiler.compile(graph)` with this step's backend and passes."""
        kw = {} if self.passes is None else {"passes": self.passes}
        return compile_graph(graph, backend=self.backend, **kw)

    def _traced(self, specs: dict, training: bool):
        """The loss traced at `specs` (inside running_stats() when training: batch_norm's
        state), the statistics it carries, its loss output's key, and its dropout masks'
        (input, p, shape) in the graph's input order (the order the step draws them in)."""
        dsl = dsl_module("train_step")
        types = trees.spec_of(self._view, lambda a: TensorType(_FLOAT_DTYPES[a.dtype], a.shape))
        name = self.name if training else self.name.replace("_step", "") + "_eval"
        with running_stats() if training else nullcontext():    # batch_norm's state
            g = dsl.trace(self.loss_fn, name=name, training=training, **types, **specs)
        trees.check_names(g, self._view)
        carried = self._carried(g) if training else []
        loss_key = _loss_key(g, {f"{v.name}_next" for v in carried})
        dropout = [(n.inputs[1].name, n.attrs["p"], n.inputs[1].shape)
                   for n in g.nodes if n.op == "dropout"] if training else []
        order = {v.name: i for i, v in enumerate(g.inputs)}
        dropout.sort(key=lambda d: order[d[0]])
        return g, carried, loss_key, dropout

    def _build(self, specs: dict, training: bool) -> _Compiled:
        g, carried, loss_key, dropout = self._traced(specs, training)
        if training:
            g = grad(g, wrt=list(self._params), of=loss_key)
            kept = {f"{v.name}_next": g.outputs[f"{v.name}_next"] for v in carried}
            layout = append_update(g, list(self._params), self.optimizer, loss=loss_key)
            g.outputs.update(kept)      # append_update keeps only its own outputs
            loss_key = "loss"
        else:
            layout = None
        kernel = trees.unwrapped(self._compile(g))     # called with leaf names
        self.compilations += 1
        c = _Compiled(kernel, g, layout, dropout, loss_key)
        if training:   # 0-d arrays updated in place keep the kernels' argument fast paths
            types = {v.name: v.type for v in g.inputs}
            c.fixed = dict(self._params)
            c.fixed.update({inp: self.state[key] for inp, key in layout.state.items()})
            for k in (layout.base_lr, layout.t):
                c.fixed[k] = np.zeros((), dtype=NUMPY_DTYPE[types[k].dtype])
            c.shapes = {k: t.shape for k, t in specs.items()}   # the batch this variant takes
            c.copy_back = [(self._params[inp] if inp in self._params
                            else self.state[layout.state[inp]], key)
                           for inp, key in layout.writeback if inp != layout.t]
            c.fixed.update({v.name: self.stats[v.name] for v in carried})
            c.copy_back += [(self.stats[v.name], f"{v.name}_next") for v in carried]
            c.t_key = dict(layout.writeback)[layout.t]
            c.scalar_keys = [k for k, v in g.outputs.items() if v.shape == () and k in _SCALARS]
            c.owned = [(f"parameter {k!r}", a) for k, a in self._params.items()]
            c.owned += [(f"optimizer buffer {slot!r} of {p!r}", a)
                        for (slot, p), a in self.state.items()]
            donate = {key: inp for inp, key in layout.writeback if inp != layout.t}
            if not _updates_cannot_fail(kernel.graph, donate):
                donate = {}                           # a failure could follow an update
            bind = getattr(kernel, "bind", None)     # the NumPy kernel's cheaper call, with
            c.run = None if bind is None else bind(   # each update computed into its array
                c.fixed, donate=donate)
        return c


def _updates_cannot_fail(graph, donate: dict) -> bool:
    """Whether the NumPy code of `graph` may compute the outputs in `donate` straight into the
    step's arrays and still fail only before the first of them is written: every node whose
    statement can come at or after the first such output's (a node written inline into its
    consumer comes at the consumer's) is a constant, a view or an elementwise op (floats for
    `pow`), which cannot raise on arguments the kernel checked.  Otherwise (a label check, a
    gather, ... after an update) the kernel computes into its own buffers and the step copies
    back after the call succeeded."""
    names = {graph.outputs[k].name for k in donate if k in graph.outputs}
    order = {n.out.name: i for i, n in enumerate(graph.nodes)}
    first = min((order[v] for v in names if v in order), default=None)
    if first is None:
        return True
    users, inline = graph.users(), plan_inlining(graph)

    def statement(name):
        while name in inline:
            name = users[name][0].out.name
        return order[name]
    for n in graph.nodes:
        if statement(n.out.name) < first:
            continue
        if not (OPS[n.op].elementwise or OPS[n.op].view or not n.inputs) or (
                n.op == "pow" and n.out.type.dtype not in FLOAT_DTYPES):
            return False
    return True


def _loss_key(g, state=()) -> str:
    """The output holding the loss: the only output, or the one called `loss` (the
    running statistics' `_next` outputs, `state`, aside)."""
    outputs = [k for k in g.outputs if k not in state]
    if "loss" in outputs:
        return "loss"
    if len(outputs) == 1:
        return outputs[0]
    raise GradcError(f"train_step: the loss function returns {outputs}; return the "
                     "scalar loss, or a dict with a 'loss' entry")


def train_step(loss_fn, params: dict, inputs: dict, optimizer: Optimizer,
               backend: str = "numpy", *, seed: int = 0, passes=None,
               name: str | None = None) -> TrainStep:
    """Compile `loss_fn` (a model function returning its scalar loss) into a train step:
    forward, backward with respect to `params`, and `optimizer`'s update, in one compiled
    function.  `params`: name -> initial array (copied; the step owns its copies); `inputs`:
    name -> spec (f64[N, D], i64[N]); `seed` seeds the dropout generator; `passes` is handed
    to `compiler.compile` when given.  See the module docstring and `TrainStep`."""
    return TrainStep(loss_fn, params, inputs, optimizer, backend, seed=seed, passes=passes,
                     name=name)


__all__ = ["TrainStep", "train_step", "TrainStepError", "CheckpointError"]
