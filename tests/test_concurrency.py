"""Compiled functions called from many threads at once.

Every thread calls one compiled function on its own inputs, all starting together (a barrier),
and every result is compared with the serial result for those inputs.  Covered: the NumPy
backend planned (buffers) and unplanned, the LLVM backend (small "own" and large "fresh"
outputs), copy=True and copy=False, and NumpyKernel.bind's run.  The guarantee under test
(README, "Thread safety"): any number of threads may call one compiled function; with
copy=False the returned arrays are the calling thread's own buffers, valid until that thread's
next call of the same function, and other threads' calls never write into them.
"""
from __future__ import annotations

import threading

import numpy as np
import pytest

import compiler
from frontends import dsl
from frontends.dsl import f64

from graphs import EXAMPLES

REPEATS = 6


def _tanh_loss(X, W):
    return dsl.sum(dsl.tanh(X @ W) ** 2)


def _graph(n, d):
    return compiler.grad(dsl.trace(_tanh_loss, X=f64[n, d], W=f64[d, d]))


def _inputs(n, d, k):
    rng = np.random.default_rng(100 + k)
    return {"X": rng.standard_normal((n, d)), "W": rng.standard_normal((d, d)) / np.sqrt(d)}


def _same(got, want, where):
    assert got.keys() == want.keys()
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-12, atol=1e-12,
                                   err_msg=f"{where}, output {key!r}")


def _in_threads(n_threads, work, barriers=()):
    """Run work(t) in n_threads threads started together; re-raise the first failure (a
    failing thread breaks `barriers`, so that the others do not wait for it forever)."""
    errors, barrier = [], threading.Barrier(n_threads, timeout=120)

    def body(t):
        try:
            barrier.wait()
            work(t)
        except BaseException as e:     # noqa: BLE001 (handed to the main thread)
            errors.append(e)
            for b in barriers:
                b.abort()
    threads = [threading.Thread(target=body, args=(t,)) for t in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    if errors:
        raise next((e for e in errors if not isinstance(e, threading.BrokenBarrierError)),
                   errors[0])


@pytest.mark.parametrize("backend", ["numpy", "llvm"])
@pytest.mark.parametrize("n,d,planned", [(256, 64, True), (8, 4, False)])
@pytest.mark.parametrize("n_threads", [2, 8])
def test_many_threads_get_the_serial_results(backend, n, d, planned, n_threads):
    fn = compiler.compile(_graph(n, d), backend=backend)
    if backend == "numpy":
        assert (fn.plan is not None) == planned
    ins = [_inputs(n, d, k) for k in range(n_threads)]
    want = [compiler.compile(_graph(n, d), backend=backend)(**a) for a in ins]

    def work(t):
        for r in range(REPEATS):
            _same(fn(**ins[t]), want[t], f"thread {t}, call {r}")
    _in_threads(n_threads, work)


@pytest.mark.parametrize("backend", ["numpy", "llvm"])
@pytest.mark.parametrize("n,d", [(256, 64), (8, 4)])
def test_copy_false_arrays_belong_to_the_calling_thread(backend, n, d):
    """A thread's copy=False outputs hold its own result while other threads call the same
    function (until its own next call), and fed back as an argument give the numbers fresh
    copies give (the kernel copies an argument that overlaps its buffers)."""
    fn = compiler.compile(_graph(n, d), backend=backend)
    n_threads = 4
    ins = [_inputs(n, d, k) for k in range(n_threads)]
    twin = compiler.compile(_graph(n, d), backend=backend)
    want = [twin(**a) for a in ins]
    fed = [twin(X=a["X"], W=w["dW"]) for a, w in zip(ins, want)]
    barrier = threading.Barrier(n_threads, timeout=120)

    def work(t):
        for r in range(REPEATS):
            holder = (t + r) % 2 == 0      # half the threads hold their views ...
            if holder:
                mine = fn(copy=False, **ins[t])
            barrier.wait()
            if not holder:                 # ... while the others call, both ways
                for copy in (True, False, True):
                    _same(fn(copy=copy, **ins[t]), want[t], f"thread {t}, call {r}")
            barrier.wait()
            if holder:
                _same(mine, want[t], f"thread {t}, call {r}, views")
                _same(fn(X=ins[t]["X"], W=mine["dW"], copy=False), fed[t],
                      f"thread {t}, call {r}, fed back")
    _in_threads(n_threads, work, [barrier])


def test_bound_numpy_run_from_many_threads():
    """bind's run (the NumPy train step's call, here without donation) on a planned graph."""
    two = EXAMPLES["two_layer"]
    sizes = dict(n=128, d=96, hdim=96, c=96)
    g = compiler.grad(two.build("f64", **sizes))
    fn = compiler.compile(g)
    assert fn.plan is not None
    params = two.inputs(np.random.default_rng(0), "f64", **sizes)
    run = fn.bind({k: params[k] for k in ("W1", "b1", "W2", "b2")})
    batches = [two.inputs(np.random.default_rng(1 + k), "f64", **sizes) for k in range(4)]
    want = [fn(**dict(params, X=b["X"], y=b["y"])) for b in batches]

    def work(t):
        for r in range(REPEATS):
            _same(run(X=batches[t]["X"], y=batches[t]["y"]), want[t], f"thread {t}, call {r}")
    _in_threads(4, work)


@pytest.mark.parametrize("backend", ["numpy", "llvm"])
def test_a_thread_that_ends_frees_its_buffers_and_results_stay_right(backend):
    """Threads come and go (a pool replaced many times): results stay right, and the buffers
    of ended threads are not kept (their count does not grow with the number of threads)."""
    import gc
    import weakref
    fn = compiler.compile(_graph(256, 64), backend=backend)
    a = _inputs(256, 64, 0)
    want = fn(**a)
    refs = []

    def work(t):
        out = fn(copy=False, **a)
        refs.append(weakref.ref(out["dW"].base if out["dW"].base is not None else out["dW"]))
        _same(out, want, f"thread {t}")
    for _ in range(5):
        _in_threads(4, work)
    gc.collect()
    assert sum(r() is not None for r in refs) == 0


@pytest.mark.parametrize("backend", ["numpy", "llvm"])
def test_scalar_arguments_from_many_threads(backend):
    """A 0-d input passed as a Python float (the LLVM fast path boxes it into a 0-d array per
    thread) with a different value in each thread."""
    g = compiler.grad(dsl.trace(lambda X, W, s: s * _tanh_loss(X, W), X=f64[256, 64],
                                W=f64[64, 64], s=f64[()]), wrt=["W"])
    fn = compiler.compile(g, backend=backend)
    a = _inputs(256, 64, 0)
    scales = [0.5 + t for t in range(6)]
    want = [fn(s=s, **a) for s in scales]
    np.testing.assert_allclose(want[1]["dW"], want[0]["dW"] * scales[1] / scales[0], rtol=1e-9,
                               atol=1e-12)   # the oracle is linear in s

    def work(t):
        for r in range(REPEATS):
            _same(fn(s=scales[t], **a), want[t], f"thread {t}, call {r}")
    _in_threads(len(scales), work)


@pytest.mark.parametrize("backend", ["numpy", "llvm"])
def test_a_kernel_called_from_threads_is_freed_with_its_buffers(backend):
    """Per-thread state does not keep a compiled function (or its buffers) alive."""
    import gc
    import weakref
    fn = compiler.compile(_graph(256, 64), backend=backend)
    a = _inputs(256, 64, 1)
    views = []
    _in_threads(3, lambda t: views.append(weakref.ref(fn(copy=False, **a)["dX"].base)))
    fn(**a)
    ref = weakref.ref(fn)
    del fn
    gc.collect()
    assert ref() is None and all(v() is None for v in views)
