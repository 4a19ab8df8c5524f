"""The model DSL: write a model as a Python function over traced values, get an IR graph.

    from frontends import dsl
    from frontends.dsl import f64

    def neuron(w, x):
        return dsl.sigmoid(w[0] * x[0] + w[1] * x[1] + w[2])

    g = dsl.trace(neuron, w=f64[3], x=f64[2])

Input specs are `f32[...]`, `f64[...]`, `i64[...]` (`f64[()]` is a scalar), given as keywords or
as the parameters' annotations (`def neuron(w: f64[3], x: f64[2])`).  Parameters with a default
and no spec are passed their default (hyperparameters).  Traced values support
`+ - * / ** unary-`, `@`, comparisons, basic indexing and slicing, indexing one axis with an
i64 array (`E[tokens]`, `x[:, idx]`: compiler/builder_index.py), `.T`, `.shape`,
`.reshape`, `.sum/.mean/.max`, with NumPy broadcasting; Python numbers become constants.
Values take the names the model's source gives them (`h = relu(...)` makes a value `h`).
"""
from __future__ import annotations

import inspect
import keyword
import os
import re
import sys
from itertools import chain, compress
from operator import is_not

from compiler.builder import dropout  # noqa: F401  (inverted dropout; see compiler/train.py)
from compiler.builder import (Builder, Var, abs, broadcast_to, cast, elu, equal, exp,  # noqa: A004
                              leaky_relu, log, log1p, log_softmax, matmul, max, maximum, mean,
                              minimum, onehot, pick, relu, reshape, sigmoid, sin, cos, softmax,
                              softmax_cross_entropy, softplus, sqrt, sum, svm_loss, swish, tanh,
                              transpose, where)
from compiler.builder_linalg import einsum  # noqa: F401  (np.einsum, one or two operands)
from compiler.custom import custom_gate  # noqa: F401  (a user's op with its own gate rule)
from compiler.builder_array import (concatenate, flip, pad, split, stack, take,  # noqa: F401
                                    take_along_axis)
from compiler.builder_conv import (avg_pool2d, batch_norm, conv1d, conv2d,  # noqa: F401
                                   global_avg_pool, layer_norm, max_pool2d)
from compiler.builder_special import stop_gradient  # noqa: F401  (no gradient flows through)
from compiler import trees   # parameter trees: nested dicts, lists and tuples of specs
from compiler.debug import broadcast_guard
from compiler.ir import Graph, Node, TensorType, UnsupportedError, Value, is_dim_name

Tensor = Var   # the type of a traced value

__all__ = ["trace", "f32", "f64", "i64", "Tensor", "abs", "broadcast_to", "cast", "dropout",
           "elu", "equal",
           "exp", "leaky_relu", "log", "log1p", "log_softmax", "matmul", "max", "maximum", "mean",
           "minimum", "onehot", "pick", "relu", "reshape", "sigmoid", "sin", "cos", "softmax",
           "softmax_cross_entropy", "softplus", "sqrt", "sum", "svm_loss", "swish", "tanh",
           "transpose", "where"]
__all__ += ["concatenate", "flip", "pad", "split", "stack", "take",  # compiler/builder_array.py
            "take_along_axis"]
__all__ += ["stop_gradient"]     # compiler/builder_special.py
__all__ += ["einsum", "custom_gate"]     # compiler/builder_linalg.py, compiler/custom.py

__all__ += ["avg_pool2d", "batch_norm", "conv1d", "conv2d", "global_avg_pool",  # builder_conv
            "layer_norm", "max_pool2d"]

class _DType:
    """`f64[3, 2]` -> TensorType('f64', (3, 2)); `f64[()]` is a scalar; `f64["N", 784]` names
    a dimension whose size is given when the compiled function runs (compiler/shapes.py)."""

    def __init__(self, dtype: str):
        self.dtype = dtype

    def __getitem__(self, dims) -> TensorType:
        if dims == ():
            return TensorType(self.dtype, ())
        dims = dims if isinstance(dims, tuple) else (dims,)
        if not all((isinstance(d, int) and not isinstance(d, bool) and d >= 0)
                   or is_dim_name(d) for d in dims):
            raise UnsupportedError(f"{self.dtype}[{dims}]: dimensions must be non-negative ints "
                                   "or names of sizes given at run time (f64['N', 784])")
        return TensorType(self.dtype, dims)

    def __repr__(self) -> str:
        return self.dtype


f32, f64, i64 = _DType("f32"), _DType("f64"), _DType("i64")

_PACKAGE_DIRS = tuple(os.path.dirname(os.path.abspath(m)) + os.sep for m in (
    __file__, sys.modules["compiler"].__file__, sys.modules["compiler.builder"].__file__))


_GRADC_FILES: dict = {}      # absolute file name -> whether it is gradc's (asked per node)


def _is_gradc(filename: str) -> bool:
    known = _GRADC_FILES.get(filename)
    if known is not None:
        return known
    if filename.startswith("<"):
        return False
    known = os.path.abspath(filename).startswith(_PACKAGE_DIRS)
    if os.path.isabs(filename):         # a relative name's meaning follows the cwd: not kept
        _GRADC_FILES[filename] = known
    return known


def _locate() -> str | None:
    """`file:line` of the innermost frame outside gradc (the user's model line)."""
    f = sys._getframe(1)
    while f is not None and _is_gradc(f.f_code.co_filename):
        f = f.f_back
    if f is None:
        return None
    file = f.f_code.co_filename
    base = _BASENAMES.get(file)
    if base is None:
        base = _BASENAMES[file] = os.path.basename(file)
    return f"{base}:{f.f_lineno}"


_BASENAMES: dict = {}        # a code object's file name -> its base name, as _locate writes it


def _const_name(array):
    """The model's name for a captured array: the variable holding it in the innermost frame
    outside gradc (its locals and closure, then its globals), or None."""
    f = sys._getframe(1)
    while f is not None and _is_gradc(f.f_code.co_filename):
        f = f.f_back
    for scope in (() if f is None else (f.f_locals, f.f_globals)):
        for k, v in scope.items():
            if v is array and not k.startswith("_"):
                return k
    return None


def _specs_for(fn, specs: dict) -> tuple:
    sig = inspect.signature(fn)
    try:
        hints = inspect.get_annotations(fn, eval_str=True)
    except Exception:
        hints = getattr(fn, "__annotations__", {}) or {}
    unknown = set(specs) - set(sig.parameters)
    if unknown:
        raise UnsupportedError(f"trace: {fn.__name__} has no parameter {', '.join(sorted(unknown))}"
                               f"; its parameters are {', '.join(sig.parameters)}")
    typed, fixed = {}, {}
    for name, p in sig.parameters.items():
        spec = specs.get(name, hints.get(name))
        if isinstance(spec, TensorType) or (trees.is_tree(spec) and name in specs) \
                or trees.is_spec_tree(spec):
            typed[name] = spec
        elif spec is not None and name in specs:
            raise UnsupportedError(f"trace: the spec of {name!r} must look like f64[3, 2], "
                                   f"got {spec!r}")
        elif p.default is not inspect.Parameter.empty:
            fixed[name] = p.default
        else:
            raise UnsupportedError(f"trace: no spec for parameter {name!r} of {fn.__name__}; "
                                   f"pass it as {name}=f64[...] or annotate it")
    return typed, fixed


class _Namer:
    """A trace function that names traced values after the local variables bound to them."""

    def __init__(self, builder: Builder):
        self.builder = builder
        self.previous = None

    def __enter__(self):
        self.previous = sys.gettrace()
        sys.settrace(self.global_trace)
        return self

    def __exit__(self, *exc):
        sys.settrace(self.previous)

    def global_trace(self, frame, event, arg):
        old_local = self.previous(frame, event, arg) if self.previous else None
        if frame.f_code in _IR_INITS or _is_gradc(frame.f_code.co_filename):
            return old_local
        return _FrameNamer(self, old_local)

    def name_locals(self, frame, seen: "_FrameNamer") -> None:
        """Name each temporary bound to a local.  A local that holds the object it held when
        `seen` last looked needs no second look (a value with a real name keeps it while
        tracing; anything else stays what it was): of a model with many parameters, each line
        looks at the locals it rebinds, found by a comparison in C, not at every parameter."""
        f_locals = frame.f_locals
        names, vals = list(f_locals), list(f_locals.values())
        k = len(seen.names)
        if names[:k] == seen.names:     # the same locals as before, maybe new ones after them
            look = chain(compress(range(k), map(is_not, vals, seen.vals)), range(k, len(vals)))
        else:                           # (one was deleted: look at all)
            look = range(len(vals))
        builder = self.builder
        for i in look:
            val = vals[i]
            if isinstance(val, Var) and val.b is builder and val.value.temp \
                    and not names[i].startswith("_"):
                builder.rename(val, names[i])
        seen.names, seen.vals = names, vals


# the IR's dataclass constructors: generated code (file "<string>", so not recognized as
# gradc's by its file), called with gradc's own objects (names, types, Values), never a Var
_IR_INITS = frozenset(c.__init__.__code__ for c in (Value, Node, TensorType))


class _FrameNamer:
    """The local trace function of one frame: names its locals at each line and at its return,
    then hands the event to the trace function that was there before (a debugger's, a
    coverage tool's).  An object, not a closure returning itself: no reference cycle is left
    per traced call for the garbage collector to find."""
    __slots__ = ("namer", "old_local", "names", "vals")

    def __init__(self, namer: _Namer, old_local):
        self.namer = namer
        self.old_local = old_local
        self.names: list = []     # the frame's locals at the last look, and their objects
        self.vals: list = []      # (see name_locals)

    def __call__(self, frame, event, arg):
        if event in ("line", "return"):
            self.namer.name_locals(frame, self)
        if self.old_local is not None:
            self.old_local = self.old_local(frame, event, arg)
        return self


def trace(fn, *, name: str | None = None, training: bool = True, strict_broadcast: bool = False,
          **specs) -> Graph:
    """Trace `fn` on symbolic inputs of the given specs into a Graph.  A single unnamed output
    is called `out`; a dict return names the outputs; a tuple gives `out0, out1, ...`.
    `training=False` traces for evaluation: dsl.dropout is then the identity (when True, each
    dropout adds a bool mask input `dropout_keep`, `dropout_keep_1`, ...).
    An elementwise op whose operands are both expanded by broadcasting, one by gaining an axis
    (a [n,1] meeting a [n]), warns with compiler.BroadcastWarning at the model's line;
    `strict_broadcast=True` makes it a ShapeError (compiler/debug.py)."""
    typed, fixed = _specs_for(fn, specs)
    gname = re.sub(r"\W", "_", name or getattr(fn, "__name__", "model")).strip("_") or "model"
    if gname[0].isdigit():
        gname = "f_" + gname
    if keyword.iskeyword(gname):    # a lambda is named `lambda`: not a valid function name
        gname += "_"
    graph = Graph(gname, origin=(fn, typed, fixed))
    b = Builder(graph, locate=_locate)
    b.training = bool(training)
    b.on_node = broadcast_guard(strict_broadcast)
    b.const_name = _const_name
    args = trees.trace_inputs(b, typed, _locate)     # a tree spec gives a tree of inputs
    with _Namer(b):
        result = fn(**args, **fixed)
    outputs = result if isinstance(result, dict) else (
        {f"out{k}": r for k, r in enumerate(result)} if isinstance(result, (tuple, list))
        else {"out": result})
    for key, val in outputs.items():
        if not isinstance(val, Var):
            raise UnsupportedError(f"trace: output {key!r} of {gname} is a "
                                   f"{type(val).__name__}, not a traced value; return values "
                                   "computed from the inputs")
        if not re.match(r"^[A-Za-z_]\w*$", str(key)):
            raise UnsupportedError(f"trace: output name {key!r} is not an identifier")
        graph.outputs[str(key)] = val.value
    return graph
