"""A compiled function backed by native code: the whole graph is one LLVM function
`int64_t f(void **buffers)`, described by the compiler's artifact (compiler/artifact.py: cache
key, symbol, buffer layout, label checks, the IR emitted on demand), built through the process
JIT (runtime/jit.py) and the on-disk object cache (runtime/cache.py).

A call: check every argument (names, dtypes, shapes; runtime/checks.py; an array already of
the declared dtype, shape and C-contiguous strides passes in a few comparisons), make inputs
C-contiguous, write their data pointers into the prepared pointer array (intermediate and
output buffers are allocated once per calling thread), then check every integer label against
its class count with the module's second native function (it only reads the labels; a bad
label raises before the graph's function runs); one native call, which returns nonzero when a
label the graph computes is out of range (checked right after it is computed, before any other
node runs: a LabelError, read from the labels' buffer); the outputs are the caller's
own: small ones copied out, large ones (≥ 64 KiB) written by the native code straight into
arrays allocated for this call (no copy pass).

Threads: each calling thread has its own call state (pointer array, argument slots and buffers,
one arena: runtime/arena.py), made on its first call and freed when the thread ends, so calls
from any number of threads run at once without a lock and `copy=False` outputs stay the calling
thread's until its next call.  An argument overlapping the thread's buffers (such an output
passed back) is copied before its pointer is taken: the native code assumes that no argument
aliases a buffer it writes.
"""
from __future__ import annotations

import ctypes
import threading
import weakref

import numpy as np

from compiler.ir import NUMPY_DTYPE
from compiler.ops.labels import error_for

from . import arena, cache, jit
from .checks import _convert, check_arguments, copy_flag

FRESH_BYTES = 1 << 16     # outputs this large are written into a new array per call, not copied


def _usable(flags) -> bool:
    return flags.c_contiguous and flags.aligned


# scalar argument types taken as they are for a 0-d input, by (dtype kind, itemsize): the ones
# check_arguments converts without loss (a Python float is weakly typed, as in NumPy)
_SCALAR_TYPES = {("f", 8): (float, int, np.float64), ("f", 4): (float, int, np.float32),
                 ("i", 8): (int, np.int64), ("b", 1): (bool, np.bool_)}
# ... and the values of those Python types that the dtype holds (an int exactly, a float without
# becoming inf or 0 in f32): a guard in the fast call, outside it the general path says why not
_F32_TINY, _F32_HUGE = 2.0 ** -150, float.fromhex("0x1.ffffffp127")   # round to 0 / to inf
_SCALAR_GUARDS = {
    ("f", 8): [("int", f"-{2 ** 53} <= {{a}} <= {2 ** 53}")],
    ("f", 4): [("int", f"-{2 ** 24} <= {{a}} <= {2 ** 24}"),
               ("float", f"{_F32_TINY!r} < abs({{a}}) < {_F32_HUGE!r} or {{a}} == 0.0")],
    ("i", 8): [("int", f"{-2 ** 63} <= {{a}} <= {2 ** 63 - 1}")]}


class LLVMKernel:
    """Call with keyword arrays; returns a dict of outputs.  `.source` is the LLVM IR (value
    names from the model), `.asm` the optimized assembly, `.ir` the graph's text form,
    `.graph` the graph compiled, `.cached` whether the object code came from the disk cache
    (or was already loaded in this process)."""

    backend = "llvm"
    check_finite = False     # compile(..., check_finite=True): NaN/inf inputs are refused

    def __init__(self, artifact):
        """`artifact`: a compiler.artifact.LLVMArtifact (what compiler.compile builds)."""
        graph = artifact.graph
        self.graph = graph
        self.ir = artifact.ir
        self._artifact = artifact
        self._source = None
        self._untouched = None
        self.key = artifact.key
        self.symbol = artifact.symbol
        self.cached = False
        self._code = self._build()      # the loaded object: the kernel keeps it alive
        self.address = self._code.address(self.symbol)
        untouched = (self._untouched if self._untouched is not None
                     else artifact.untouched())
        # the graph's function returns 0, or 1 + the index of a failed computed label check
        self._cfunc = self._code.function(self.symbol, ctypes.c_int64, ctypes.c_void_p)
        self._labels = list(artifact.labels)
        self._computed = list(artifact.computed)
        self._check = (self._code.function(self.symbol + "_labels", ctypes.c_int64,
                                           ctypes.c_void_p) if self._labels else None)
        values = artifact.values
        self._slot = {v.name: k for k, v in enumerate(values)}
        self._dims = tuple(getattr(artifact, "dims", ()))   # run-time sizes, after the buffers
        n_in = len(graph.inputs)
        # (slot, name, dtype, shape) of each buffer a call state allocates
        self._layout = [(k, v.name, NUMPY_DTYPE[v.dtype], (0,) if v.name in untouched
                         else v.shape) for k, v in enumerate(values[n_in:], start=n_in)]
        self._names = {v.name for v in graph.inputs}
        self._n_in = n_in
        self._specs = [(v.name, np.dtype(NUMPY_DTYPE[v.dtype]), v.shape, v.type)
                       for v in graph.inputs]
        # (name, dtype, shape, C-contiguous strides, type): an argument matching all of these
        # is used as it is (alignment is checked when its pointer is first taken)
        self._fast = [(name, dt, shape, np.empty(shape, dt).strides, t)
                      for name, dt, shape, t in self._specs]
        counts: dict = {}
        for v in graph.outputs.values():
            counts[v.name] = counts.get(v.name, 0) + 1
        # per output: (name, kind, buffer name or input slot); kinds: "scalar" (a NumPy scalar
        # of the buffer, or of the input at the slot), "own" (a copy of the thread's buffer),
        # "fresh" (a new array the native code writes into), "input" (a copy of an input)
        self._out_kinds = []
        self._fresh = []                 # (slot, buffer name) of "fresh" outputs
        sizes = {name: int(np.prod(shape)) * np.dtype(dt).itemsize
                 for _, name, dt, shape in self._layout}
        for k, v in graph.outputs.items():
            if v.shape == ():
                self._out_kinds.append((k, "scalar", v.name if v.name in sizes
                                        else self._slot[v.name]))
            elif v.name not in sizes:
                self._out_kinds.append((k, "input", self._slot[v.name]))
            elif sizes[v.name] >= FRESH_BYTES and counts[v.name] == 1:
                self._out_kinds.append((k, "fresh", self._slot[v.name]))
                self._fresh.append((self._slot[v.name], v.name))
            else:
                self._out_kinds.append((k, "own", v.name))
        self._asm = None
        self._fastcall = self._specialize()
        self._tls = threading.local()    # .state: the calling thread's call state
        self._tls.state = self._call_state()     # the compiling thread's, allocated now

    def _call_state(self) -> "LLVMKernel":
        """A new call state for the calling thread: a shallow copy of this kernel sharing the
        native code and argument specs, with its own buffers (one arena), pointer array,
        argument slots and fast-path function.  It holds no reference to the kernel's
        thread-local table (which holds it), so a thread's state is freed with the thread."""
        st = object.__new__(type(self))
        st.__dict__.update((k, v) for k, v in self.__dict__.items() if k != "_tls")
        st._arena, bufs = arena.allocate((dt, shape) for _, _, dt, shape in self._layout)
        st._buffers = {name: buf for (_, name, _, _), buf in zip(self._layout, bufs)}
        st._ptrs = (ctypes.c_void_p * max(1, len(self._slot) + len(self._dims)))()
        st._ptrs_addr = ctypes.addressof(st._ptrs)
        for j, n in enumerate(self._dims):     # the sizes a run-time-sized kernel reads
            st._ptrs[len(self._slot) + j] = n
        for (k, name, _, _), buf in zip(self._layout, bufs):
            st._ptrs[k] = buf.ctypes.data
        st._last = [None] * self._n_in    # the arrays whose pointers are in the slots
        st._out_plan = [(key, kind, src if type(src) is int else st._buffers[src])
                        for key, kind, src in self._out_kinds]
        st._fresh = [(slot, st._buffers[name], st._buffers[name].ctypes.data)
                     for slot, name in self._fresh]    # (slot, own buffer, its pointer)
        st._installed = {slot: buf for slot, buf, _ in st._fresh}   # array in each slot
        # the function refers to its state through a proxy (its caller holds the state): a
        # reference would be a cycle, and a dropped state's buffers would wait for a full
        # collection (compiler/sized_kernel.py drops the kernels of sizes not used lately)
        env = {"ndarray": np.ndarray, "empty": np.empty, "last": st._last,
               "self": weakref.proxy(st), "cfunc": st._cfunc, "check": st._check,
               "installed": st._installed, "ptrs": st._ptrs, "addr": st._ptrs_addr}
        for j, (_, own, _) in enumerate(st._fresh):
            env[f"own{j}"] = own
        for j, (_, _, src) in enumerate(st._out_plan):
            env[f"o{j}"] = src
        for k, (name, dt, shape, _, _) in enumerate(self._fast):
            env.update({f"dt{k}": dt, f"sh{k}": shape})
            if shape == ():
                env[f"ok{k}"] = _SCALAR_TYPES[dt.kind, dt.itemsize]
                env[f"box{k}"] = np.zeros((), dtype=dt)   # written by this thread's calls
            else:
                env[f"st{k}"] = self._fast[k][3]
        exec(self._fastcall, env)
        st._fastcall = env.pop("fast")    # (not in its own globals: a cycle too)
        return st

    def _specialize(self):
        """The common call as straight-line Python made for this kernel (each input and output
        named, no loops, no dict of plans), compiled once and made into each call state's
        function (`_call_state`): `fast(kwargs, copy)` runs the kernel when every argument is
        an array of exactly the declared dtype, shape and C-contiguous strides, else returns
        None (and the general path converts or refuses)."""
        code = ["def fast(kw, copy):"]
        boxed = []
        for k, (name, dt, shape, strides, _) in enumerate(self._fast):
            code.append(f"    a{k} = kw.get({name!r})")
            if shape == ():   # a Python or NumPy scalar goes through a 0-d array we own
                boxed.append(k)
                code += [f"    if type(a{k}) is ndarray:",
                         f"        if a{k}.dtype is not dt{k} or a{k}.shape != ():",
                         "            return None",
                         f"    elif type(a{k}) not in ok{k}:", "        return None"]
                for typ, holds in _SCALAR_GUARDS.get((dt.kind, dt.itemsize), ()):
                    code += [f"    elif type(a{k}) is {typ} and not "
                             f"({holds.format(a=f'a{k}')}):", "        return None"]
                continue
            code += [f"    if (type(a{k}) is not ndarray or a{k}.dtype is not dt{k} or "
                     f"a{k}.shape != sh{k} or a{k}.strides != st{k}):", "        return None"]
        for k in boxed:
            code += [f"    if type(a{k}) is not ndarray:",
                     f"        box{k}[()] = a{k}", f"        a{k} = box{k}"]
        for k in range(len(self._fast)):
            code.append(f"    if a{k} is not last[{k}]: self._install({k}, a{k})")
        if self._check is not None:
            code += ["    bad = check(addr)",
                     "    if bad: raise self._label_error(last, bad)"]
        if self._fresh:
            code.append("    if copy:")
            for j, (slot, _) in enumerate(self._fresh):
                code += [f"        f{j} = installed[{slot}] = empty(own{j}.shape, own{j}.dtype)",
                         f"        ptrs[{slot}] = f{j}.ctypes.data"]
            code += ["    else:", "        self._restore()"]
        code += ["    bad = cfunc(addr)", "    if bad: raise self._computed_error(bad)",
                 "    return {"]
        for j, (key, kind, src) in enumerate(self._out_kinds):
            ref = f"o{j}" if type(src) is not int else f"last[{src}]"
            expr = (f"{ref}[()]" if kind == "scalar" else f"installed[{src}]" if kind == "fresh"
                    else f"({ref}.copy() if copy else {ref})")
            code.append(f"        {key!r}: {expr},")
        code += ["    }"]
        return compile("\n".join(code), f"<gradc call of {self.symbol}>", "exec")

    def _install(self, k: int, a) -> None:
        """Put input `a`'s data pointer in slot k: an unaligned array, or one overlapping this
        thread's buffers (a copy=False output passed back: the native code would overwrite it
        while reading it), is copied first."""
        if not a.flags.aligned or arena.overlaps(a, self._arena):
            a = a.copy()
        self._ptrs[k] = a.ctypes.data
        self._last[k] = a

    def _restore(self) -> None:
        """The kernel's own buffers back in the slots of the "fresh" outputs (copy=False)."""
        for slot, own, ptr in self._fresh:
            if self._installed[slot] is not own:
                self._ptrs[slot] = ptr
                self._installed[slot] = own

    def _emit(self) -> None:
        self._source, self._untouched = self._artifact.emit()

    @property
    def source(self) -> str:
        """The LLVM IR (emitted on first use when the object came from the cache)."""
        if self._source is None:
            self._emit()
        return self._source

    def _build(self) -> jit.Code:
        """The loaded object: already in this process, else from the disk cache, else built."""
        code = jit.loaded(self.symbol)
        if code is not None:
            self.cached = True
            return code
        hit = cache.get(self.key) if jit.checks_objects() else None
        if hit is not None:
            try:
                code = jit.load(hit[0], self.symbol, hit[1])
                self.cached = True
                return code
            except Exception as e:  # an entry that does not load is rebuilt, not trusted
                cache.rejected(self.key, e)
        obj, ext = jit.compile_object(self.source)
        cache.put(self.key, obj, ext)
        return jit.load(obj, self.symbol, ext)

    @property
    def asm(self) -> str:
        if self._asm is None:
            self._asm = jit.assembly(self.source)
        return self._asm

    def __call__(self, **kwargs) -> dict:
        """Run on keyword arrays; returns the outputs as fresh arrays, or with `copy=False` as
        views of the calling thread's buffers, which its next call overwrites."""
        try:
            st = self._tls.state
        except AttributeError:           # this thread's first call
            st = self._tls.state = self._call_state()
        copy = True
        if "copy" in kwargs and "copy" not in self._names:
            copy = copy_flag(kwargs.pop("copy"))
        # fast path: every name present; arrays already of the declared dtype and shape and
        # C-contiguous are used as they are, anything else goes through the checks
        if len(kwargs) == self._n_in and not self.check_finite:
            out = st._fastcall(kwargs, copy)
            if out is not None:
                return out
            args = []
            for name, dt, shape, strides, t in self._fast:
                a = kwargs.get(name)
                if (type(a) is not np.ndarray or a.dtype is not dt or a.shape != shape
                        or a.strides != strides):
                    if a is None and name not in kwargs:
                        break
                    a = np.require(_convert(name, a, t), requirements=("C", "A"))
                args.append(a)
            else:
                return st._run(args, copy)
        args = check_arguments(self.graph, kwargs, check_finite=self.check_finite)
        return st._run([np.require(a, requirements=("C", "A")) for a in args], copy)

    def _label_error(self, args, code: int):
        """The LabelError of input label check `code` - 1 (compiler/ops/labels.py)."""
        k, check = self._labels[code - 1]
        return error_for(check, args[k])

    def _computed_error(self, code: int):
        """The LabelError of computed label check `code` - 1, which failed natively: read from
        the labels' buffer, which the graph's function wrote just before its check."""
        check = self._computed[code - 1]
        slot = self._slot[check.value.name]
        return error_for(check, self._installed.get(slot, self._buffers[check.value.name]))

    def _run(self, args, copy: bool = True) -> dict:
        """The general call on checked C-contiguous arguments (self: a call state)."""
        last = self._last
        for k, a in enumerate(args):
            if a is not last[k]:           # an array's data pointer is fixed for its lifetime
                self._install(k, a)
        # every label in range, checked by native code that only reads the labels
        if self._check is not None:
            code = self._check(self._ptrs_addr)
            if code:
                raise self._label_error(last, code)
        installed, ptrs = self._installed, self._ptrs
        if copy:
            for slot, own, _ in self._fresh:      # the caller gets the array written
                a = np.empty(own.shape, own.dtype)
                ptrs[slot] = a.ctypes.data
                installed[slot] = a
        else:
            self._restore()                       # the thread's own buffers back in place
        code = self._cfunc(self._ptrs_addr)
        if code:
            raise self._computed_error(code)
        out = {}
        for key, kind, src in self._out_plan:
            if kind == "own":
                out[key] = src.copy() if copy else src
            elif kind == "scalar":
                out[key] = (src if type(src) is not int else last[src])[()]
            elif kind == "fresh":
                out[key] = installed[src]
            else:
                out[key] = last[src].copy() if copy else last[src]
        return out

    def __repr__(self) -> str:
        sig = ", ".join(f"{v.name}: {v.type}" for v in self.graph.inputs)
        return f"<gradc {self.backend} function {self.graph.name}({sig}) -> {list(self.graph.outputs)}>"
