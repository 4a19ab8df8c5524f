"""Building IR: a `Builder` appends nodes to a graph (running each op's shape rule), and `Var`
wraps a value so that models and gate rules are written as ordinary arithmetic.

The same `Var` serves the DSL tracer (frontends/dsl.py) and the gate rules (compiler/ops/):
`g * out * (1 - out)` inside sigmoid's gate rule builds three IR nodes.
"""
from __future__ import annotations

import builtins
import numbers
import sys

import numpy as np

from .ir import (Graph, Namer, Node, ShapeError, TensorType, UnsupportedError, Value,
                 const_value)
from .builder_index import array_index
from .constants import from_python
from .builder_linalg import matmul_nd
from .shapes import infer_dim, whole_axis


class Builder:
    """Appends nodes to `graph`.  `loc`, `rule` and `of` are stamped on every node it creates
    (the autodiff pass sets them per gate); `locate` (if given) is called for a location when
    `loc` is None (the DSL tracer finds the user's source line that way)."""

    def __init__(self, graph: Graph, namer: Namer | None = None, locate=None):
        self.graph = graph
        self.namer = namer or Namer(graph.values())
        self.locate = locate
        self.loc = None
        self.rule = None
        self.of = None
        self.on_node = None      # optional callback(node), used by the broadcast guard
        self.training = True     # dropout draws a mask input when True, is the identity if not
        self.const_name = None   # optional callable(array) -> the model's name for a constant
        self._arrays: dict = {}  # a captured array's digest -> its const_array Var

    def where(self):
        return self.loc if self.loc is not None else (self.locate() if self.locate else None)

    def add_input(self, name: str, type_: TensorType) -> "Var":
        v = Value(self.namer.fresh(name), type_)
        self.graph.inputs.append(v)
        return Var(self, v)

    def emit(self, op: str, inputs, name: str | None = None, **attrs) -> "Var":
        OPS, known_ops = _op_table()
        loc = self.where()
        if op not in OPS:
            raise UnsupportedError(f"unsupported op {op!r}; gradc supports: {known_ops()}")
        vals = [x.value if isinstance(x, Var) else x for x in inputs]
        for x in vals:
            if not isinstance(x, Value):
                raise UnsupportedError(f"{op}: got a {type(x).__name__} where a traced value is "
                                       "needed; pass arrays as inputs of the traced function"
                                       f"{' (at ' + loc + ')' if loc else ''}")
        try:
            out_type = OPS[op].shape([v.type for v in vals], **attrs)
        except ShapeError as e:
            raise ShapeError(f"{e}{' at ' + loc if loc else ''}") from None
        out = Value(self.namer.fresh(name) if name else self.namer.temp(), out_type)
        node = Node(op, tuple(vals), dict(attrs), out, loc, self.rule, self.of)
        self.graph.nodes.append(node)
        if self.on_node is not None:
            self.on_node(node)
        return Var(self, out)

    def const(self, value, dtype: str, shape=()) -> "Var":
        return self.emit("const", [], value=const_value(value, dtype), dtype=dtype,
                         shape=tuple(shape))

    def const_array(self, array) -> "Var":
        """A NumPy array captured by the model: one const_array node per distinct data
        (compiler/constants.py), named after the model's variable when `const_name` finds it."""
        try:
            data = from_python(array)
        except UnsupportedError as e:
            raise UnsupportedError(f"{e}{' (at ' + self.where() + ')' if self.where() else ''}"
                                   ) from None
        hit = self._arrays.get(data.digest)
        if hit is None:
            name = self.const_name(array) if self.const_name else None
            hit = self._arrays[data.digest] = self.emit("const_array", [], name=name, data=data,
                                                        dtype=data.dtype)
        return hit

    def rename(self, var: "Var", name: str) -> None:
        """Give a temporary a real name (the DSL names values after the model's variables)."""
        self.namer.release(var.value.name)
        var.value.name = self.namer.fresh(name)


_TABLE: tuple = ()


def _op_table() -> tuple:
    """(OPS, known_ops), imported at the first node built: the op table's family modules call
    this module's functions as they declare the records (linalg's bilinear matmul rule)."""
    global _TABLE
    if not _TABLE:
        # not at module level: compiler.ops imports this module while declaring its records
        from .ops import OPS, known_ops
        _TABLE = (OPS, known_ops)
    return _TABLE


def _is_number(x) -> bool:
    return isinstance(x, (numbers.Number,)) and not isinstance(x, complex) or (
        hasattr(x, "dtype") and getattr(x, "shape", None) == () and not isinstance(x, Var))


def lift(x, like: "Var") -> "Var":
    """Turn a Python number into a constant of `like`'s dtype (numbers are weakly typed)."""
    if isinstance(x, Var):
        return x
    if _is_number(x):
        dtype = like.dtype
        if isinstance(x, (bool,)) and dtype == "bool":
            return like.b.const(x, "bool")
        if dtype in ("bool", "i64"):
            if float(x) == int(x) and not isinstance(x, float):
                return like.b.const(int(x), "i64" if dtype == "i64" else "i64")
            dtype = "f64"
        return like.b.const(x, dtype)
    if type(x) is np.ndarray:            # a captured array: a constant of its own dtype
        return like.b.const_array(x)
    if hasattr(x, "shape") and hasattr(x, "dtype"):
        raise UnsupportedError(
            f"a {type(x).__name__} of shape {tuple(x.shape)} appears in the model as a "
            "constant; gradc captures NumPy arrays (pass np.asarray(x)) or takes it as an "
            "input of the function"
            + (f" (at {like.b.where()})" if like.b.where() else ""))
    raise UnsupportedError(f"cannot use a {type(x).__name__} in a gradc model; use numbers, "
                           "traced values and gradc's functions")


def promote(a: "Var", b: "Var", op: str = ""):
    """Binary arithmetic: bool operands are cast to the other's dtype; other dtypes must match."""
    if a.dtype == b.dtype:
        return a, b
    if a.dtype == "bool":
        return cast(a, b.dtype), b
    if b.dtype == "bool":
        return a, cast(b, a.dtype)
    loc = a.b.where()
    raise ShapeError(f"{op + ': ' if op else ''}dtypes {a.dtype} and {b.dtype} differ "
                     f"(shapes {a.shape} and {b.shape}); cast one with "
                     f"dsl.cast(x, {b.dtype}){' at ' + loc if loc else ''}")


def binary(op: str, a, b) -> "Var":
    like = a if isinstance(a, Var) else b
    a, b = promote(lift(a, like), lift(b, like), op)
    return a.b.emit(op, [a, b])


class Var:
    """A value under construction.  Arithmetic builds IR; Python control flow on it is refused."""

    __array_priority__ = 1000

    def __init__(self, builder: Builder, value: Value):
        self.b = builder
        self.value = value

    # ---- metadata ------------------------------------------------------------------------
    @property
    def shape(self) -> tuple:
        return self.value.shape

    @property
    def dtype(self) -> str:
        return self.value.dtype

    @property
    def ndim(self) -> int:
        return len(self.value.shape)

    @property
    def name(self) -> str:
        return self.value.name

    def __len__(self) -> int:
        if not self.shape or isinstance(self.shape[0], str):   # (N: known at run time)
            raise TypeError(f"len() of traced value {self.name} {self.value.type}: its length "
                            "is known at run time; x.shape[0] names it in shapes" if self.shape
                            else "len() of a scalar traced value")
        return self.shape[0]

    def __repr__(self) -> str:
        return f"<traced {self.value.name}: {self.value.type}>"

    # ---- arithmetic ----------------------------------------------------------------------
    def __add__(self, o): return binary("add", self, o)
    def __radd__(self, o): return binary("add", o, self)
    def __sub__(self, o): return binary("sub", self, o)
    def __rsub__(self, o): return binary("sub", o, self)
    def __mul__(self, o): return binary("mul", self, o)
    def __rmul__(self, o): return binary("mul", o, self)
    def __truediv__(self, o): return binary("div", self, o)
    def __rtruediv__(self, o): return binary("div", o, self)
    def __pow__(self, o): return binary("pow", self, o)
    def __rpow__(self, o): return binary("pow", o, self)
    def __neg__(self): return self.b.emit("neg", [self])
    def __pos__(self): return self
    def __abs__(self): return self.b.emit("abs", [self])
    def __gt__(self, o): return binary("greater", self, o)
    def __ge__(self, o): return binary("greater_equal", self, o)
    def __lt__(self, o): return binary("less", self, o)
    def __le__(self, o): return binary("less_equal", self, o)
    def __eq__(self, o): return binary("equal", self, o)       # elementwise, as in NumPy
    def __ne__(self, o): return binary("not_equal", self, o)
    def __matmul__(self, o): return matmul(self, o)
    def __rmatmul__(self, o): return matmul(lift(o, self), self)
    __hash__ = object.__hash__

    def __getitem__(self, index): return getitem(self, index)

    @property
    def T(self): return transpose(self)

    def reshape(self, *shape):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return reshape(self, shape)

    def transpose(self, *perm): return transpose(self, perm or None)
    def sum(self, axis=None, keepdims=False): return reduce_("sum", self, axis, keepdims)
    def mean(self, axis=None, keepdims=False): return reduce_("mean", self, axis, keepdims)
    def max(self, axis=None, keepdims=False): return reduce_("max", self, axis, keepdims)
    def astype(self, dtype): return cast(self, dtype)

    # ---- refused Python constructs -------------------------------------------------------
    def __bool__(self):
        raise UnsupportedError(
            f"the truth value of traced value {self.name} {self.value.type} is not known while "
            f"tracing{_at(self)}: a data-dependent `if`/`while`/`and`/`or` cannot be compiled; "
            "use dsl.where(cond, a, b), dsl.maximum or dsl.relu instead")

    def __float__(self):
        raise UnsupportedError(f"float() of traced value {self.name}{_at(self)}: its number is "
                               "only known when the compiled function runs")

    __int__ = __index__ = __float__

    def __iter__(self):
        raise UnsupportedError(f"iterating over traced value {self.name}{_at(self)}; index it "
                               "with x[i] or use reductions such as dsl.sum")

    def __array__(self, *a, **k):
        raise UnsupportedError(f"traced value {self.name} was turned into a NumPy array"
                               f"{_at(self)}; use gradc's functions (dsl.exp, dsl.sum, ...) "
                               "on traced values, not NumPy's")

    _UFUNC_OPS = {"add": "__add__", "subtract": "__sub__", "multiply": "__mul__",
                  "true_divide": "__truediv__", "power": "__pow__", "matmul": "__matmul__",
                  "greater": "__gt__", "less": "__lt__", "greater_equal": "__ge__",
                  "less_equal": "__le__"}
    _UFUNC_REFLECTED = {"add": "__radd__", "subtract": "__rsub__", "multiply": "__rmul__",
                        "true_divide": "__rtruediv__", "power": "__rpow__",
                        "matmul": "__rmatmul__", "greater": "__lt__", "less": "__gt__",
                        "greater_equal": "__le__", "less_equal": "__ge__"}

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        name = ufunc.__name__
        if method == "__call__" and name in self._UFUNC_OPS and len(inputs) == 2 and not kwargs:
            a, c = inputs
            if a is self:
                return getattr(self, self._UFUNC_OPS[name])(c)
            return getattr(self, self._UFUNC_REFLECTED[name])(a)
        raise UnsupportedError(f"np.{name} was called on traced value {self.name}{_at(self)}; "
                               f"{_dsl_instead(name)}")

    def __array_function__(self, func, types, args, kwargs):
        raise UnsupportedError(f"np.{func.__name__} was called on traced value {self.name}"
                               f"{_at(self)}; {_dsl_instead(func.__name__)}")


def _dsl_instead(name: str) -> str:
    """The advice after a NumPy function met a traced value: dsl's function of that name when
    the DSL has one (looked up, not imported: compiler does not import frontends; a traced
    value from dsl.trace means the DSL is loaded), else where the list of its functions is."""
    dsl = sys.modules.get("frontends.dsl")
    if dsl is not None and name in getattr(dsl, "__all__", ()):
        return f"use gradc's dsl.{name} instead"
    return (f"gradc has no function named {name}; write it from the DSL's functions, listed "
            "in dsl.__all__")


def dsl_module(what: str):
    """The DSL (frontends.dsl) for `what`, which traces a Python function: looked up, not
    imported (compiler does not import frontends, DESIGN.md principle 10; a model written with
    the DSL's functions has loaded it).  An UnsupportedError saying so when it is not loaded."""
    dsl = sys.modules.get("frontends.dsl")
    if dsl is None:
        raise UnsupportedError(f"{what} traces a Python function with gradc's DSL: import it "
                               "first (from frontends import dsl)")
    return dsl


def _at(v: Var) -> str:
    loc = v.b.where()
    return f" at {loc}" if loc else ""


# ---- functions on Vars (the DSL re-exports these) ----------------------------------------
def unary(op: str, x, **attrs) -> Var:
    if not isinstance(x, Var):
        raise UnsupportedError(f"{op} expects a traced value, got {type(x).__name__}")
    return x.b.emit(op, [x], **attrs)


def exp(x): return unary("exp", x)
def log(x): return unary("log", x)
def log1p(x): return unary("log1p", x)
def sqrt(x): return unary("sqrt", x)
def tanh(x): return unary("tanh", x)
def sin(x): return unary("sin", x)
def cos(x): return unary("cos", x)
def sigmoid(x): return unary("sigmoid", x)
def relu(x): return unary("relu", x)
def softplus(x): return unary("softplus", x)
def swish(x): return unary("swish", x)
def abs(x): return unary("abs", x)   # noqa: A001  (the DSL's name)
def leaky_relu(x, alpha=0.01): return unary("leaky_relu", x, alpha=float(alpha))
def elu(x, alpha=1.0): return unary("elu", x, alpha=float(alpha))
def maximum(a, b): return binary("maximum", a, b)
def minimum(a, b): return binary("minimum", a, b)
def equal(a, b): return binary("equal", a, b)


def where(cond, a, b) -> Var:
    like = next((v for v in (a, b, cond) if isinstance(v, Var)), None)
    if like is None:
        raise UnsupportedError("where needs at least one traced value")
    fl = a if isinstance(a, Var) else b if isinstance(b, Var) else None
    cond = lift(cond, like)
    if cond.dtype != "bool":
        cond = cond.b.emit("not_equal", [cond, lift(0, cond)])
    if fl is None:
        raise UnsupportedError("where(cond, a, b): a or b must be a traced value")
    a, b = promote(lift(a, fl), lift(b, fl), "where")
    return like.b.emit("where", [cond, a, b])


def cast(x: Var, dtype) -> Var:
    dtype = getattr(dtype, "dtype", dtype)
    if _var("cast", x).dtype == dtype:
        return x
    return x.b.emit("cast", [x], dtype=dtype)


def normalize_axes(axis, ndim: int, where: str = "", op: str = "") -> tuple:
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    out = []
    for a in axes:
        if not -ndim <= a < builtins.max(ndim, 1):
            raise ShapeError(f"{op + ': ' if op else ''}axis {a} is out of range for a value "
                             f"of rank {ndim}{where}")
        out.append(a % ndim if ndim else 0)
    if len(set(out)) != len(out):
        raise ShapeError(f"{op + ': ' if op else ''}repeated axis in {axis}{where}")
    return tuple(sorted(out))


def reduce_(op: str, x: Var, axis=None, keepdims=False) -> Var:
    axes = normalize_axes(axis, _var(op, x).ndim, _at(x), op)
    return x.b.emit(op, [x], axes=axes, keepdims=bool(keepdims))


def sum(x, axis=None, keepdims=False): return reduce_("sum", x, axis, keepdims)  # noqa: A001
def mean(x, axis=None, keepdims=False): return reduce_("mean", x, axis, keepdims)
def max(x, axis=None, keepdims=False): return reduce_("max", x, axis, keepdims)  # noqa: A001


def broadcast_to(x: Var, shape) -> Var:
    if tuple(shape) == _var("broadcast_to", x).shape:
        return x
    return x.b.emit("broadcast_to", [x], shape=tuple(_size(d) for d in shape))


def _size(d):
    """A dimension: an int, or a dimension name (compiler/shapes.py) kept as it is."""
    return d if isinstance(d, str) else int(d)


def reshape(x: Var, shape) -> Var:
    shape = tuple(_size(d) for d in shape)
    _var("reshape", x)
    if shape.count(-1) == 1:
        shape = infer_dim(x.shape, shape, _at(x))
    if shape == x.shape:
        return x
    return x.b.emit("reshape", [x], shape=shape)


def transpose(x: Var, perm=None) -> Var:
    perm = tuple(range(x.ndim))[::-1] if perm is None else tuple(int(p) % builtins.max(x.ndim, 1) for p in perm)
    if perm == tuple(range(x.ndim)):
        return x
    return x.b.emit("transpose", [x], perm=perm)


def matmul(a: Var, b) -> Var:
    """`@` as np.matmul: 1-D operands are reshaped to a row/column around the single 2-D
    matmul primitive; an operand of rank >= 3 is a stack of matrices (builder_linalg.py)."""
    b = lift(b, a)
    a, b = promote(a, b, "matmul")
    if a.ndim == 0 or b.ndim == 0:
        raise ShapeError(f"matmul: shapes {a.shape} and {b.shape}: @ takes operands of rank "
                         f">= 1 (use * for scalars){_at(a)}")
    if a.ndim > 2 or b.ndim > 2:
        return matmul_nd(a, b)
    a2 = reshape(a, (1, a.shape[0])) if a.ndim == 1 else a
    b2 = reshape(b, (b.shape[0], 1)) if b.ndim == 1 else b
    if a2.shape[1] != b2.shape[0]:
        loc = a.b.where()
        raise ShapeError(f"matmul: shapes {a.shape} and {b.shape} do not chain "
                         f"({a2.shape[1]} != {b2.shape[0]}){' at ' + loc if loc else ''}")
    y = a.b.emit("matmul", [a2, b2])
    out_shape = (a.shape[:-1] if a.ndim == 2 else ()) + (b.shape[1:] if b.ndim == 2 else ())
    return reshape(y, out_shape)


def getitem(x: Var, index) -> Var:
    """Basic indexing: ints, slices and None (newaxis), normalized to concrete entries:
    an int i, a triple (start, stop, step), or None; a traced i64 array among them is a
    gather (builder_index.py)."""
    if not isinstance(index, tuple):
        index = (index,)
    if any(i is Ellipsis for i in index):
        k = index.index(Ellipsis)
        fill = x.ndim - (len(index) - 1 - sum_none(index))
        index = index[:k] + (slice(None),) * fill + index[k + 1:]
    if any(isinstance(i, Var) for i in index):      # an integer array: a gather
        return array_index(x, index, [isinstance(i, Var) for i in index], getitem)
    entries, dim = [], 0
    for i in index:
        if i is None:
            entries.append(None)
            continue
        if dim >= x.ndim:
            raise ShapeError(f"index {index} has too many entries for shape {x.shape}{_at(x)}")
        n = x.shape[dim]
        if isinstance(n, str):
            entries.append(_named_axis(x, i, n, dim))
        elif isinstance(i, slice):
            entries.append(tuple(i.indices(n)))
        elif isinstance(i, numbers.Integral) and not isinstance(i, bool):
            if not -n <= i < n:
                raise ShapeError(f"index {i} is out of bounds for axis {dim} of size {n} "
                                 f"(shape {x.shape}){_at(x)}")
            entries.append(int(i) % n)
        else:
            raise UnsupportedError(f"unsupported index {i!r}{_at(x)}: gradc supports ints, "
                                   "slices, None, ... and one traced i64 array (pass index "
                                   "arrays as inputs of the traced function)")
        dim += 1
    entries += [whole_axis(x.shape[d]) for d in range(dim, x.ndim)]
    if all(isinstance(e, tuple) and e == (0, x.shape[k], 1) for k, e in enumerate(entries)) \
            and len(entries) == x.ndim:
        return x
    return x.b.emit("getitem", [x], index=tuple(entries))


def _named_axis(x: Var, i, n: str, dim: int) -> tuple:
    """The index entry of an axis whose size is the dimension name `n`: only `:`."""
    if isinstance(i, slice) and i.start in (None, 0) and i.stop is None and i.step in (None, 1):
        return (0, n, 1)
    raise UnsupportedError(f"index {i!r} on axis {dim} of {x.name} {x.value.type}: that axis's "
                           f"size {n} is known only at run time, so it takes only ':'{_at(x)}")


def sum_none(index) -> int:
    return len([i for i in index if i is None])


def softmax(x, axis=-1):
    return unary("softmax", x, axis=normalize_axes(axis, _var("softmax", x).ndim, _at(x),
                                                   "softmax")[0])


def log_softmax(x, axis=-1):
    return unary("log_softmax", x, axis=normalize_axes(axis, _var("log_softmax", x).ndim,
                                                       _at(x), "log_softmax")[0])


def _var(op: str, x) -> Var:
    if not isinstance(x, Var):
        raise UnsupportedError(f"{op} expects a traced value, got {type(x).__name__}")
    return x


def onehot(labels: Var, depth: int, dtype="f64") -> Var:
    v = _var("onehot", labels)
    if isinstance(depth, (bool, np.bool_)) or not isinstance(depth, numbers.Integral) \
            or depth < 1:
        raise ShapeError(f"onehot: depth must be a positive int (the number of classes, fixed "
                         f"when tracing), got {depth!r}{_at(v)}")
    return v.b.emit("onehot", [labels], depth=int(depth), dtype=getattr(dtype, "dtype", dtype))


def pick(x: Var, labels: Var) -> Var:
    """x[i, labels[i]] for each row i."""
    return _var("pick", x).b.emit("pick", [x, labels])


def softmax_cross_entropy(scores: Var, labels: Var) -> Var:
    """Mean over rows of -log softmax(scores)[i, labels[i]], computed through log-sum-exp."""
    return _var("softmax_cross_entropy", scores).b.emit("softmax_cross_entropy", [scores, labels])


def dropout(x: Var, p: float) -> Var:
    """Inverted dropout: x/(1−p) where a bool mask `keep` (P(keep) = 1−p) is true, else 0.
    While tracing for training, `keep` becomes a new graph input named `dropout_keep` (the
    caller, e.g. compiler.train_step's step object, draws it each step from a seeded
    generator); in an evaluation trace (`dsl.trace(..., training=False)`) it is the identity."""
    if not isinstance(x, Var):
        raise UnsupportedError(f"dropout expects a traced value, got {type(x).__name__}")
    p = float(p)
    if not 0 <= p < 1:
        raise ShapeError(f"dropout: the drop probability p={p!r} must be in [0, 1){_at(x)}")
    if not x.b.training or p == 0:
        return x
    keep = x.b.add_input("dropout_keep", TensorType("bool", x.shape))
    return x.b.emit("dropout", [x, keep], p=p)


def svm_loss(scores: Var, labels: Var, margin=1.0) -> Var:
    """Mean over rows of Σ_{j≠y} max(0, s_j − s_y + margin): the multiclass hinge loss."""
    return _var("svm_loss", scores).b.emit("svm_loss", [scores, labels], margin=float(margin))
