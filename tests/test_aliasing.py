"""copy=False outputs fed back as arguments, and arguments never written.

`fn(..., copy=False)` returns views of the compiled function's own buffers.  Passing such a view
(or a view overlapping one) back as an argument must give the numbers the same call gives on
fresh copies of the arguments: the kernel sees the overlap with its buffers and copies the
argument first.  Oracle: a second compiled instance of the same graph called with fresh copies
(identical code, so the results must be identical), and the reference interpreter.  Sizes span
the NumPy backend's unplanned and memory-planned code and the LLVM backend's small ("own") and
large ("fresh") output paths.
"""
from __future__ import annotations

import numpy as np
import pytest

import compiler
from frontends import dsl
from frontends.dsl import f64

from graphs import EXAMPLES

BACKENDS = ["numpy", "llvm"]
SIZES = [4, 48, 128]          # 128²: planned on numpy (MIN_ELEMENTS), ≥ 64 KiB outputs on llvm


def _tanh_loss(a, b):
    return dsl.sum(dsl.tanh(a @ b) ** 2)


def _multi(a, v):
    """Several outputs, one computed before the others read the arguments again."""
    c = dsl.tanh(a) * 2.0
    d = c @ v + v
    e = dsl.sum(c * a) + dsl.sum(v)
    return {"c": c, "d": d, "e": e}


def _grad_graph(n):
    return compiler.grad(dsl.trace(_tanh_loss, a=f64[n, n], b=f64[n, n]))


def _multi_graph(n):
    return dsl.trace(_multi, a=f64[n, n], v=f64[n])


def _twins(g, backend):
    """Two independent compiled instances: `fn` under test, `ref` for the fresh-copy oracle."""
    return compiler.compile(g, backend=backend), compiler.compile(g, backend=backend)


def _check(fn, ref, g, args):
    """fn(args, copy=False) == ref(fresh copies) exactly, and == the interpreter."""
    fresh = {k: np.array(v, copy=True) for k, v in args.items()}
    want = ref(**fresh)
    spec = compiler.interpret(g, **fresh)
    got = fn(copy=False, **args)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=f"output {k!r}")
        np.testing.assert_allclose(want[k], spec[k], rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("n", SIZES)
def test_gradient_fed_back_as_its_own_argument(backend, n):
    """The issue's case: db = fn(a, b, copy=False)["db"]; fn(a, b=db, copy=False)."""
    g = _grad_graph(n)
    fn, ref = _twins(g, backend)
    rng = np.random.default_rng(n)
    A, B = rng.standard_normal((n, n)) / np.sqrt(n), rng.standard_normal((n, n))
    db = fn(a=A, b=B, copy=False)["db"]
    _check(fn, ref, g, {"a": A, "b": db})
    out = fn(a=A, b=B, copy=False)
    _check(fn, ref, g, {"a": out["da"], "b": out["db"]})      # both, each its own buffer
    out = fn(a=A, b=B, copy=False)
    _check(fn, ref, g, {"a": out["db"], "b": out["db"]})      # two arguments, one output
    for _ in range(3):                                          # iterated, as a user's loop
        out = fn(a=A, b=B, copy=False)
        _check(fn, ref, g, {"a": A, "b": out["db"] * 0.5 + out["db"]})   # a fresh array
        out = fn(a=A, b=B, copy=False)
        _check(fn, ref, g, {"a": out["da"].T, "b": out["db"]})           # a strided view


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("n", SIZES)
def test_partial_overlap_with_an_output_buffer(backend, n):
    """Arguments that are part of an output buffer (a row, a column, the output itself)."""
    g = _multi_graph(n)
    fn, ref = _twins(g, backend)
    rng = np.random.default_rng(7 + n)
    A, v = rng.standard_normal((n, n)), rng.standard_normal(n)
    for pick in (lambda o: {"a": A, "v": o["c"][1]},            # a contiguous row of c
                 lambda o: {"a": A, "v": o["c"][:, 0]},         # a column (strided)
                 lambda o: {"a": o["c"], "v": o["d"]},          # two outputs, two arguments
                 lambda o: {"a": o["c"], "v": o["c"][-1]},      # two arguments, one buffer
                 lambda o: {"a": A, "v": np.frombuffer(o["c"].data, np.float64)[n:2 * n]}):
                 # ... and memory reached through the buffer protocol (no .base chain)
        _check(fn, ref, g, pick(fn(a=A, v=v, copy=False)))


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_layer_net_fed_back_and_bound(backend):
    """A model no other test feeds back: the two-layer net's gradients at a planned size,
    each gradient passed back in place of its parameter (the shapes match)."""
    g = compiler.grad(EXAMPLES["two_layer"].build("f64", n=128, d=96, hdim=96, c=96))
    fn, ref = _twins(g, backend)
    ins = EXAMPLES["two_layer"].inputs(np.random.default_rng(3), "f64", n=128, d=96, hdim=96,
                                       c=96)
    out = fn(copy=False, **ins)
    _check(fn, ref, g, dict(ins, W1=out["dW1"], W2=out["dW2"], b1=out["db1"], b2=out["db2"]))
    if backend == "numpy":                   # bind (the train step's call): a fixed
        assert fn.plan is not None           # argument that is this kernel's buffer
        fixed = {k: ins[k] for k in ("W2", "b1", "b2")}
        h = fn(copy=False, **ins)["dW1"]
        run = fn.bind(dict(fixed, W1=h))
        for _ in range(2):
            want = ref(**dict(ins, W1=np.array(h)))
            got = run(X=ins["X"], y=ins["y"])
            for k in want:
                np.testing.assert_array_equal(got[k], want[k], err_msg=f"bound, output {k!r}")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("n", [4, 128])
def test_compiled_functions_never_write_into_arguments(backend, n):
    """Every argument's bytes are unchanged by a call (read-only arrays are accepted, too),
    on gradient graphs, forward graphs with several outputs and the two-layer net, with
    copy=True and copy=False."""
    rng = np.random.default_rng(11)
    two = EXAMPLES["two_layer"]
    cases = [(_grad_graph(n), {"a": rng.standard_normal((n, n)), "b": rng.standard_normal((n, n))}),
             (_multi_graph(n), {"a": rng.standard_normal((n, n)), "v": rng.standard_normal(n)}),
             (compiler.grad(two.build("f64", n=n, d=n, hdim=n, c=8)),
              two.inputs(rng, "f64", n=n, d=n, hdim=n, c=8))]
    for g, ins in cases:
        fn = compiler.compile(g, backend=backend)
        before = {k: np.array(v, copy=True) for k, v in ins.items()}
        for copy in (True, False, True):
            fn(copy=copy, **ins)
            for k in ins:
                np.testing.assert_array_equal(ins[k], before[k], err_msg=f"argument {k!r}")
        frozen = {k: np.array(v, copy=True) for k, v in ins.items()}
        for a in frozen.values():
            a.flags.writeable = False
        got = fn(**frozen)
        want = fn(**before)
        for k in want:
            np.testing.assert_array_equal(got[k], want[k])
        for k in ins:
            np.testing.assert_array_equal(frozen[k], before[k], err_msg=f"argument {k!r}")
