"""A compiled function backed by emitted NumPy source."""
from __future__ import annotations

import itertools
import linecache
import threading
import weakref

import numpy as np

from compiler.ir import NUMPY_DTYPE
from compiler.ops import OPS
from compiler.ops.labels import LabelError
from compiler.shapes import bind_dims, resolve
from compiler.specialize import call_dims

from . import arena
from .checks import check_arguments, copy_flag, fits, label_checks  # noqa: F401

SIZED_SETS = 4      # sets of sizes of dimension names whose buffers a thread keeps


class NumpyKernel:
    """Call with keyword arrays; returns a dict of outputs.  `.source` is the generated module,
    `.ir` the graph's text form, `.graph` the graph it was compiled from.

    Outputs are fresh arrays owned by the caller (scalars come back as NumPy scalars).

    Memory-planned kernels (the artifact has a `plan`: see compiler/passes/memory.py) write intermediates
    and outputs into buffers reused by every later call.  Each calling thread has its own set
    (allocated on its first call, one arena: runtime/arena.py; freed when the thread ends), so
    any number of threads may call one kernel at once.  Results are fresh copies by default;
    `fn(..., copy=False)` returns the calling thread's buffers themselves (no copy): valid
    until the same thread calls this kernel again, never written by other threads' calls.  An
    argument overlapping the calling thread's buffers (such an output passed back) is copied
    before the call.  `memory_report()` gives the planned and unplanned byte counts."""

    backend = "numpy"
    check_finite = False     # compile(..., check_finite=True): NaN/inf inputs are refused

    def __init__(self, artifact):
        """`artifact`: a compiler.artifact.NumpyArtifact (what compiler.compile builds)."""
        graph, source, fname = artifact.graph, artifact.source, artifact.fname
        self.graph = graph
        self.plan = artifact.plan
        self._artifact = artifact
        self._tls = threading.local()     # .buf: this thread's (arena, buffers) of the plan
        self.source = source
        self.ir = str(graph)
        self.bound_source = None     # see bind
        self._fn_loaded = None       # the module's function, compiled on first use (`_fn`):
        self._fn_lock = threading.Lock()   # a train step runs only its bound variant (bind)
        # a planned symbolic graph: the plain code too, run where the call's sizes make the
        # plan's buffers small (artifact.planned_at), as a concrete compile would choose
        self._plain = None if artifact.plain is None else self._load(artifact.plain, fname,
                                                                     "plain")
        self._planned_sizes: dict = {}      # sizes of the dimension names -> planned_at
        self._out_types = [(k, v.type) for k, v in graph.outputs.items()]
        self._copy_keys = _aliasing_outputs(graph)
        self._specs = [(v.name, np.dtype(NUMPY_DTYPE[v.dtype]), v.shape) for v in graph.inputs]
        self._out_specs = [(k, np.dtype(NUMPY_DTYPE[t.dtype]), t.shape == ())
                           for k, t in self._out_types]
        self._copy_kw = not any(v.name == "copy" for v in graph.inputs)  # else an input's name
        self._symbolic = any(v.type.symbolic for v in graph.inputs)   # f64[N,3]: shapes.py
        self._labels = [(k, depth) for k, _, depth, _ in label_checks(graph)]

    @property
    def _fn(self):
        fn = self._fn_loaded
        if fn is None:
            with self._fn_lock:
                if self._fn_loaded is None:
                    self._fn_loaded = self._load(self.source, self._artifact.fname)
                fn = self._fn_loaded
        return fn

    def _exact_arguments(self, kwargs: dict):
        """The arguments in order when each already is an ndarray of exactly the declared
        dtype and shape (the hot path of a training loop: what check_arguments would return
        unchanged) and every label is in range; None sends the call through the full checks,
        which phrase the errors."""
        if len(kwargs) != len(self._specs):
            return None
        out = []
        for name, dt, shape in self._specs:
            a = kwargs.get(name)
            if type(a) is not np.ndarray or a.shape != shape or a.dtype is not dt:
                if type(a) is np.ndarray and a.dtype == dt and (
                        a.shape == shape or (self._symbolic and fits(a.shape, shape))):
                    pass                  # an equal dtype object that is not NumPy's own,
                                          # or a size for a dimension name
                elif shape != () or type(a) is not dt.type:   # a NumPy scalar of the dtype
                    return None
            out.append(a)
        if self._symbolic:
            call_dims(self.graph, out)     # a DimError names both arguments
        for k, depth in self._labels:     # labels in [0, C) (NumPy would wrap -1 around):
            lab = out[k]                  # one reduction, negatives read as huge unsigned
            if lab.size and lab.view(np.uint64).max() >= depth:
                return None
        return out

    def __call__(self, **kwargs) -> dict:
        copy = kwargs.pop("copy", True) if self._copy_kw else True
        if copy is not True and copy is not False:
            copy = copy_flag(copy)          # a NumPy bool, or a TypeError (copy="no")
        args = None if self.check_finite else self._exact_arguments(kwargs)
        if args is None:
            args = check_arguments(self.graph, kwargs, check_finite=self.check_finite)
        planned = self.plan is not None and (self._plain is None or self._planned(args))
        with np.errstate(all="ignore"):   # IEEE results (log 0 = -inf), as the LLVM backend
            if not planned:
                raw = (self._fn if self._plain is None else self._plain)(*args)
            else:
                try:
                    own, bufs = self._tls.buf
                except AttributeError:
                    own, bufs = self._buffer_set(args)
                if self._symbolic:
                    own, bufs = self._sized_buffers(args)
                for k, a in enumerate(args):    # a copy=False output passed back, or a view
                    if type(a) is np.ndarray and arena.overlaps(a, own):   # of one: copied,
                        args[k] = a.copy()      # as the code overwrites it while reading it
                raw = self._fn(*args, _buf=bufs)
        fresh = self._copy_keys if (not planned or not copy) else None
        out = {}
        for k, dt, scalar in self._out_specs:
            val = raw[k]
            if scalar:
                out[k] = val if type(val) is dt.type else dt.type(val)
            elif fresh is None or k in fresh:
                out[k] = np.array(val, dtype=dt)
            else:          # a fresh array of the computed value (or a buffer, with copy=False)
                out[k] = val if type(val) is np.ndarray and val.dtype == dt else \
                    np.asarray(val, dtype=dt)
        return out

    def _planned(self, args) -> bool:
        """Whether this call's sizes run the planned code (a symbolic graph with a plan)."""
        dims = call_dims(self.graph, args)
        key = tuple(dims.items())
        got = self._planned_sizes.get(key)
        if got is None:
            if len(self._planned_sizes) >= 64:
                self._planned_sizes.clear()
            got = self._planned_sizes[key] = self._artifact.planned_at(dims)
        return got

    def _buffer_set(self, args) -> tuple:
        """The calling thread's (arena, buffers), allocated on its first call."""
        self._tls.sized = {}           # sizes of the dimension names -> (arena, buffers)
        self._tls.bound = {}           # bind token -> its fixed arguments are clear of the arena
        self._tls.buf = self._sized_buffers(args) if self._symbolic else arena.allocate(
            (NUMPY_DTYPE[d], s) for d, s in self.plan.buffers)
        return self._tls.buf

    def _sized_buffers(self, args) -> tuple:
        """The calling thread's (arena, buffers) for the sizes of this call's dimension names
        (a symbolic plan's buffers have shapes like [N, 10]): kept for the last few sets of
        sizes (a training loop's batch, its last partial batch, an evaluation batch)."""
        dims = bind_dims(self.graph.inputs, args)
        key = tuple(sorted(dims.items()))
        sized = self._tls.sized
        got = sized.get(key)
        if got is None:
            if len(sized) >= SIZED_SETS:
                sized.pop(next(iter(sized)))      # the oldest set of sizes
            got = sized[key] = arena.allocate((NUMPY_DTYPE[d], resolve(s, dims))
                                              for d, s in self.plan.buffers)
        return got

    def bind(self, fixed: dict, donate: dict | None = None):
        """`run = kernel.bind({"W1": W1, ...})`: the function with these arguments fixed, for a
        caller that owns them (compiler/train.py: parameters, optimizer buffers, learning rate,
        step counter).  They are checked once, here, and must keep their dtype and shape (their
        values may change in place between calls).  `run(**rest)` checks only the others and
        returns the outputs as computed: arrays may be the kernel's buffers or an argument
        (what copy=False gives; read them before the next call), scalars may be 0-d arrays.
        `donate` (output key -> fixed input name): outputs the code may compute straight into
        that input's array, overwriting it (`W1_next` into `W1`: the update in place, no copy
        back), where the graph allows (codegen/numpy_emit.donations); the caller finds
        `out[key] is fixed[name]` where it was done.  The source then run is `bound_source`.
        None when check_finite is on or a fixed argument is not an ndarray of exactly the
        declared dtype and shape (the caller then calls the kernel as usual)."""
        specs = {name: (k, dt, shape) for k, (name, dt, shape) in enumerate(self._specs)}
        if self.check_finite or not set(fixed) <= set(specs):
            return None
        base = [None] * len(self._specs)
        for name, a in fixed.items():
            k, dt, shape = specs[name]
            if type(a) is not np.ndarray or a.shape != shape or a.dtype != dt:
                return None           # (a fixed argument of a symbolic shape too: not bound)
            base[k] = a
        free = [(name,) + specs[name] for name in specs if name not in fixed]
        labels, plan, tls, token = self._labels, self.plan, self._tls, next(_TOKENS)
        symbolic = self._symbolic
        overlaps = arena.overlaps
        donate = {k: v for k, v in (donate or {}).items() if v in fixed}
        fn = self._donating(donate) if donate else self._fn
        plain = self._plain
        if plain is not None and donate:      # the plain code, computing into the same arrays
            plain = self._load(self._artifact.emit_bound(donate, planned=False),
                               self._artifact.fname, "bound-plain")

        def run(**rest):
            args = list(base)
            for name, k, dt, shape in free:
                a = rest.get(name)
                if type(a) is not np.ndarray or a.shape != shape or a.dtype is not dt:
                    if not (type(a) is np.ndarray and a.dtype == dt and (
                            a.shape == shape or (symbolic and fits(a.shape, shape)))):
                        return self(copy=False, **fixed, **rest)   # converts, or says why not
                args[k] = a
            if len(rest) != len(free):
                return self(copy=False, **fixed, **rest)
            if symbolic:
                call_dims(self.graph, args)     # a DimError names both arguments
            for k, depth in labels:
                lab = args[k]
                if lab.size and lab.view(np.uint64).max() >= depth:
                    return self(copy=False, **fixed, **rest)
            if plan is None or (plain is not None and not self._planned(args)):
                with np.errstate(all="ignore"):
                    return (fn if plan is None else plain)(*args)
            try:
                own, bufs = tls.buf
            except AttributeError:
                own, bufs = self._buffer_set(args)
            if symbolic:
                own, bufs = self._sized_buffers(args)
                tls.bound.pop(token, None)          # other buffers: check the fixed ones again
            clear = tls.bound.get(token)        # the fixed arrays, checked once per thread
            if clear is None:
                clear = tls.bound[token] = not any(overlaps(a, own) for a in fixed.values())
            if not clear or any(overlaps(args[k], own) for _, k, _, _ in free):
                return self(copy=False, **fixed, **rest)   # copies what overlaps
            with np.errstate(all="ignore"):
                return fn(*args, _buf=bufs)
        return run

    def _donating(self, donate: dict):
        """The function emitted again with `donate` (see bind); `bound_source` is its source."""
        self.bound_source = self._artifact.emit_bound(donate)
        return self._load(self.bound_source, self._artifact.fname, "bound")

    def _load(self, source: str, fname: str, tag: str = ""):
        shown = repr(self.graph.name)[1:-1]    # the graph's name is text: no NUL, one line
        # unique per module (never reused, as an id() would be), so that dropping one module's
        # entry cannot drop another's
        filename = f"<gradc:{shown}:{tag + ':' if tag else ''}{next(_MODULES)}>"
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
        namespace = {"__name__": f"gradc_generated_{self.graph.name}"}
        exec(compile(source, filename, "exec"), namespace)  # our own emitted code
        if "LabelError" in namespace:    # the module's own class (it imports only numpy)
            namespace["LabelError"] = LabelError     # -> the one every backend raises
        fn = namespace[namespace.get("__all__", [fname])[0]]   # the emitter may rename
        # the source lines (for tracebacks) live as long as the function: then they go too
        weakref.finalize(fn, linecache.cache.pop, filename, None).atexit = False
        return fn

    def memory_report(self) -> dict:
        """Bytes: allocated per call without planning, their peak while live, the planned
        buffers (allocated once) and what the planned code still allocates per call."""
        return dict(self._artifact.memory_plan().report(), planned=self.plan is not None)

    def __repr__(self) -> str:
        sig = ", ".join(f"{v.name}: {v.type}" for v in self.graph.inputs)
        return f"<gradc {self.backend} function {self.graph.name}({sig}) -> {list(self.graph.outputs)}>"


_MODULES = itertools.count()    # numbers the generated modules' linecache names
_TOKENS = itertools.count()     # bind's runs, keyed in each thread's record of checked arguments

def _aliasing_outputs(graph) -> set:
    """Output keys whose array could alias a caller's input or another output (an input
    returned as is, a view op's result, a value returned under two names): copied on return,
    so outputs are always fresh arrays owned by the caller."""
    producers = graph.producers()
    inputs = {v.name for v in graph.inputs}
    seen, keys = set(), set()
    for k, v in graph.outputs.items():
        n = producers.get(v.name)
        if v.name in inputs or v.name in seen or (n is not None and OPS[n.op].view):
            keys.add(k)
        seen.add(v.name)
    return keys
