"""Generate docs/errors.md from the real messages: every case below is run, and the error (or
warning) it raises is written out exactly as a user sees it.

    python docs/make_errors.py          # rewrites docs/errors.md
    python docs/make_errors.py --check  # exit 1 if docs/errors.md is out of date

tests/test_errors.py runs every case too (each must raise its declared type with a message that
names the op, the shapes and this file's line) and checks that docs/errors.md is current.
"""
from __future__ import annotations

import os
import sys
import warnings

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import compiler  # noqa: E402
from frontends import dsl  # noqa: E402
from frontends.dsl import f32, f64, i64  # noqa: E402

OUT = os.path.join(ROOT, "docs", "errors.md")


# ---- the models (their line numbers appear in the messages) ---------------------------------
def two_layer(X, W1, W2):
    h = dsl.relu(X @ W1)
    return dsl.sum(h @ W2)


def mixed_dtypes(a, b):
    return dsl.sum(a * b)


def wrong_axis(x):
    return dsl.softmax(x, axis=2)


def data_dependent_if(x):
    if dsl.sum(x) > 0:
        return dsl.sum(x)
    return -dsl.sum(x)


def numpy_on_tracer(x):
    return dsl.sum(np.exp(x))


def numpy_constant(x):
    return dsl.sum(x * np.ones(3, dtype=complex))


def float_of_tracer(x):
    return dsl.exp(float(x))


def bad_labels(scores, y):
    return dsl.softmax_cross_entropy(scores, y)


def shifted_labels(scores, y):
    return dsl.softmax_cross_entropy(scores, y - 1)


def column_minus_row(pred, y):
    return dsl.mean((pred - y) ** 2)


def square_root(x):
    return dsl.sum(dsl.sqrt(x))


def log_tanh(x):
    y = dsl.log(x)
    return dsl.sum(dsl.tanh(y) * 2)


def context_window(a, b):
    return dsl.concatenate([a, b], axis=1)


def embed(E, tokens):
    return dsl.sum(E[tokens])


def layers(params, x):
    return dsl.sum(params["l1"]["W"] * x) + dsl.sum(params["l2"])


def _trace(fn, **kw):
    return lambda: dsl.trace(fn, **kw)


def _call(backend, check_finite=False, **args):
    def run():
        g = dsl.trace(square_root, x=f64[3])
        fn = compiler.compile(compiler.grad(g), backend=backend, check_finite=check_finite)
        return fn(**args)
    return run


# (section, title, thunk, expected: an exception or warning class, or None for a report)
CASES = [
    ("Trace time", "matmul operands that do not chain",
     _trace(two_layer, X=f64[64, 3], W1=f64[2, 100], W2=f64[100, 3]), compiler.ShapeError),
    ("Trace time", "operands that do not broadcast",
     _trace(lambda a, b: dsl.sum(a + b), a=f64[3], b=f64[4]), compiler.ShapeError),
    ("Trace time", "mixed dtypes",
     _trace(mixed_dtypes, a=f64[3], b=f32[3]), compiler.ShapeError),
    ("Trace time", "concatenate shapes that differ off the joined axis",
     _trace(context_window, a=f64[2, 3], b=f64[4, 3]), compiler.ShapeError),
    ("Trace time", "an axis out of range",
     _trace(wrong_axis, x=f64[4, 3]), compiler.ShapeError),
    ("Trace time", "labels of the wrong length",
     _trace(bad_labels, scores=f64[8, 3], y=i64[5]), compiler.ShapeError),
    ("Trace time", "a data-dependent `if`",
     _trace(data_dependent_if, x=f64[3]), compiler.UnsupportedError),
    ("Trace time", "a NumPy function called on a traced value",
     _trace(numpy_on_tracer, x=f64[3]), compiler.UnsupportedError),
    ("Trace time", "a complex NumPy array used as a constant",
     _trace(numpy_constant, x=f64[3]), compiler.UnsupportedError),
    ("Trace time", "a model reading a key its tree spec lacks",
     _trace(layers, params={"l1": {"W": f64[2]}}, x=f64[2]), compiler.UnknownNameError),
    ("Trace time", "float() of a traced value",
     _trace(float_of_tracer, x=f64[()]), compiler.UnsupportedError),
    ("Broadcast guard", "a [n,1] meeting a [n] (a warning)",
     _trace(column_minus_row, pred=f64[32, 1], y=f64[32]), compiler.BroadcastWarning),
    ("Broadcast guard", "the same with strict_broadcast=True",
     _trace(column_minus_row, pred=f64[32, 1], y=f64[32], strict_broadcast=True),
     compiler.ShapeError),
    ("Calling a compiled function", "a missing and an unexpected argument (both backends)",
     _call("numpy", X=np.ones(3)), TypeError),
    ("Calling a compiled function", "a wrong shape (both backends)",
     _call("llvm", x=np.ones(4)), ValueError),
    ("Calling a compiled function", "a dtype that would lose precision (no silent downcast)",
     _call("llvm", x=np.ones(3, dtype=np.complex128)), TypeError),
    ("Calling a compiled function", "float64 data for a float32 input",
     lambda: compiler.compile(dsl.trace(square_root, x=f32[3]))(x=np.ones(3)), TypeError),
    ("Calling a compiled function", "a NaN input with check_finite=True",
     _call("llvm", check_finite=True, x=np.array([1.0, np.nan, 4.0])), ValueError),
    ("Calling a compiled function", "a label outside the class count (LLVM backend)",
     lambda: compiler.compile(dsl.trace(bad_labels, scores=f64[2, 3], y=i64[2]),
                              backend="llvm")(scores=np.zeros((2, 3)), y=np.array([0, 3])),
     ValueError),
    ("Calling a compiled function", "a negative label (NumPy backend: it would wrap around)",
     lambda: compiler.compile(dsl.trace(bad_labels, scores=f64[2, 3], y=i64[2]))(
         scores=np.zeros((2, 3)), y=np.array([0, -1])), ValueError),
    ("Calling a compiled function", "a label the graph computes (y - 1) outside the class count",
     lambda: compiler.compile(dsl.trace(shifted_labels, scores=f64[2, 3], y=i64[2]),
                              backend="llvm")(scores=np.zeros((2, 3)), y=np.array([1, 0])),
     compiler.LabelError),
    ("Calling a compiled function", "a token outside the embedding table (E[tokens], LLVM)",
     lambda: compiler.compile(dsl.trace(embed, E=f64[5, 2], tokens=i64[2, 3]), backend="llvm")(
         E=np.zeros((5, 2)), tokens=np.array([[0, 1, 2], [3, 5, 4]])), compiler.LabelError),
    ("Calling a compiled function", "a tree argument whose structure differs from the spec",
     lambda: compiler.compile(dsl.trace(layers, params={"l1": {"W": f64[2]}, "l2": f64[2]},
                                        x=f64[2]))(params={"l1": {}, "l2": np.ones(2)},
                                                   x=np.ones(2)), TypeError),
    ("Differentiating and compiling", "the gradient of a vector output",
     lambda: compiler.grad(dsl.trace(lambda x: dsl.exp(x), x=f64[3])), compiler.GradcError),
    ("Differentiating and compiling", "a gradient with respect to integer labels",
     lambda: compiler.grad(dsl.trace(bad_labels, scores=f64[2, 3], y=i64[2]), wrt=["y"]),
     compiler.UnsupportedError),
    ("Differentiating and compiling", "an unknown backend",
     lambda: compiler.compile(dsl.trace(square_root, x=f64[3]), backend="cuda"),
     compiler.UnsupportedError),
    ("Finding NaNs", "compiler.debug_nans(graph, x=[1, -1, 0]) (a report, not an error)",
     lambda: compiler.debug_nans(dsl.trace(log_tanh, x=f64[3]), x=np.array([1.0, -1.0, 0.0])),
     None),
    ("Reading IR text", "a malformed line",
     lambda: compiler.parse_graph("graph g(x: f64[3]) {\n  y: f64[3] = exp(x\n  return out=y\n}"),
     compiler.ParseError),
]


def run_case(thunk, expected):
    """(kind, text) of what the case raises: kind is the exception or warning class name."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = thunk()
        except Exception as e:  # noqa: BLE001  (we record whatever it is)
            return type(e), f"{type(e).__name__}: {e}"
    if expected is None:            # a report, shown as printed
        return type(result), str(result)
    for w in caught:
        if issubclass(w.category, expected):
            return w.category, f"{w.category.__name__}: {w.message}"
    return None, "(no error)"


def generate() -> str:
    lines = ["# Error messages", "",
             "<!-- generated by docs/make_errors.py from the real messages; do not edit -->", "",
             "Every message names what went wrong (the op, the shapes and dtypes, the argument) "
             "and, at trace time, the model's `file:line`.  The models are the functions in "
             "`docs/make_errors.py`, so the line numbers point there.  Compiled functions check "
             "every argument before any generated or native code runs; non-contiguous arrays are "
             "accepted (the LLVM backend makes a contiguous copy), read-only arrays are accepted "
             "(no backend writes into its arguments; `train_step` updates its own copies of the "
             "parameters).  Numerical conventions (NaN-free `where` gradients, tie rules, "
             "overflow) are in [numerics.md](numerics.md).", ""]
    section = None
    for sec, title, thunk, expected in CASES:
        if sec != section:
            lines += [f"## {sec}", ""]
            section = sec
        _, text = run_case(thunk, expected)
        lines += [f"**{title}**", "", "```", text, "```", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    text = generate()
    if "--check" in sys.argv:
        with open(OUT, encoding="utf-8") as f:
            sys.exit(0 if f.read() == text else 1)
    with open(OUT, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"wrote {OUT}")
