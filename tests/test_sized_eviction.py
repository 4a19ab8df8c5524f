"""The kernels of a symbolic function's sizes are bounded (compiler/sized_kernel.py): the
`max_sizes` most recently used sets of sizes keep theirs, the least recently used one is
dropped, and a set seen again is built again.  Oracle: the NumPy backend at every size."""
from __future__ import annotations

import gc
import random
import threading
import weakref

import numpy as np
import pytest

import compiler
from compiler import backends, sized_kernel
from frontends import dsl
from frontends.dsl import f64, i64
from runtime import jit

D, H, C = 5, 7, 3


def mlp(W1, b1, W2, b2, X, y):
    h = dsl.relu(X @ W1 + b1)
    return dsl.softmax_cross_entropy(dsl.tanh(h) @ W2 + b2, y) + 0.1 * dsl.mean(h * h)


SPECS = dict(X=f64["N", D], y=i64["N"], W1=f64[D, H], b1=f64[H], W2=f64[H, C], b2=f64[C])


def params(seed=0):
    rng = np.random.default_rng(seed)
    return dict(W1=rng.normal(size=(D, H)), b1=rng.normal(size=H),
                W2=rng.normal(size=(H, C)), b2=rng.normal(size=C))


def batch(n):
    rng = np.random.default_rng(1000 + n)
    return dict(X=rng.normal(size=(n, D)), y=rng.integers(0, C, n))


@pytest.fixture(scope="module")
def compiled():
    """(llvm, numpy) compiles of the gradient with X: f64[N, D] (one run-time-sized kernel)."""
    g = compiler.grad(dsl.trace(mlp, **SPECS), wrt=["W1", "b1", "W2", "b2", "X"])
    return g, compiler.compile(g, backend="numpy")


def fresh(compiled, **kw):
    fl = compiler.compile(compiled[0], backend="llvm")
    for k, v in kw.items():
        setattr(fl, k, v)
    return fl


def agree(got, want, n):
    assert set(got) == set(want)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-10, atol=1e-12,
                                   err_msg=f"{k} at N={n}")


def test_bound_holds_over_50_sizes(compiled):
    """50 distinct N: never more than the default 8 kernels kept, the 8 most recent ones; one
    native function built for all (specializations counts native code, not entries)."""
    fl, p = fresh(compiled), params()
    assert fl.max_sizes == sized_kernel.MAX_SIZES == 8
    for n in range(1, 51):
        fl(**p, **batch(n))
        assert len(fl.sizes) == min(n, 8)
    assert fl.sizes == [{"N": n} for n in range(43, 51)]
    assert (fl.built, fl.evicted, fl.specializations) == (50, 42, 1)
    assert repr(fl).endswith("1 size(s) built, 8 kept>")


def test_least_recently_used_goes(compiled):
    """A kept size used again becomes the most recent: it outlives sizes built after it."""
    fl, p = fresh(compiled, max_sizes=3), params()
    for n in (1, 2, 3, 1, 4):            # 1 was used after 2 and 3: 2 goes
        fl(**p, **batch(n))
    assert fl.sizes == [{"N": 3}, {"N": 1}, {"N": 4}]
    fl.max_sizes = 1                     # lower: the older ones go now
    assert fl.sizes == [{"N": 4}] and fl.evicted == 3


def test_evicted_sizes_recompute_correctly(compiled):
    """Sizes dropped and seen again give the NumPy backend's values; the rebuilt kernel loads
    no native code: it finds the shared function (runtime/jit.py `loaded`)."""
    g, fn = compiled
    fl, p = fresh(compiled, max_sizes=2), params(1)
    for n in (1, 17, 300, 64, 1, 17, 300, 1):
        agree(fl(**p, **batch(n)), fn(**p, **batch(n)), n)
    assert fl.evicted >= 5 and fl.specializations == 1
    k = fl.kernel_for({"N": 17})
    assert k.cached and jit.loaded(k.symbol) is not None


def test_per_size_native_code_is_counted_and_rebuilt(compiled, monkeypatch):
    """Native code specialized per size (as for a graph with a lowering that does not take
    run-time sizes; forced here): each build is native code, a dropped size's included when it
    comes back; a dropped size's object is unloaded; values are the NumPy backend's."""
    g, fn = compiled
    monkeypatch.setattr(backends, "llvm_sized_artifact", lambda graph, name: None)
    fl, p = compiler.compile(g, backend="llvm"), params(5)
    fl.max_sizes = 2
    symbols = {}
    for n in (1, 17, 300, 1):
        agree(fl(**p, **batch(n)), fn(**p, **batch(n)), n)
        symbols[n] = fl.kernel_for({"N": n}).symbol
    assert len(set(symbols.values())) == 3
    assert (fl.specializations, fl.built, fl.evicted, len(fl.sizes)) == (4, 4, 2, 2)
    gc.collect()
    assert jit.loaded(symbols[17]) is None and jit.loaded(symbols[1]) is not None


def test_dropped_kernel_is_freed_without_a_collection(compiled):
    """A dropped kernel, its call state and its buffers go when the last reference does, with
    the cyclic collector off (a reference cycle would keep every size's buffers until a full
    collection: the memory the bound is for)."""
    fl, p = fresh(compiled, max_sizes=2), params()
    refs = []
    was = gc.isenabled()
    gc.disable()
    try:
        for n in range(1, 7):
            fl(**p, **batch(n))
            k = fl.kernel_for({"N": n})
            refs.append((weakref.ref(k), weakref.ref(k._tls.state)))
            del k
        alive = [(r() is not None, s() is not None) for r, s in refs]
    finally:
        if was:
            gc.enable()
    assert alive == [(False, False)] * 4 + [(True, True)] * 2


def test_a_held_kernel_keeps_working_after_eviction(compiled):
    """A kernel taken before it is dropped (a thread in the middle of a call holds it) still
    runs correctly, and a copy=False output of it stays valid after it is dropped."""
    g, fn = compiled
    fl, p = fresh(compiled, max_sizes=1), params(2)
    held = fl.kernel_for({"N": 9})
    view = held(**p, **batch(9), copy=False)
    want9 = fn(**p, **batch(9))
    for n in range(10, 20):
        fl(**p, **batch(n))
    assert {"N": 9} not in fl.sizes
    agree({k: np.array(v) for k, v in view.items()}, want9, 9)
    agree(held(**p, **batch(9)), want9, 9)


def test_train_step_compiles_once_through_evictions():
    """train_step with symbolic N: one compilation for batches of 64, 64, 17, 300 (and 64
    again after it was dropped), each step's loss the NumPy step's."""
    opt = compiler.optim.SGD(lr=0.1)
    steps = [compiler.train_step(mlp, params=params(), inputs={"X": f64["N", D], "y": i64["N"]},
                                 optimizer=opt, backend=b) for b in ("llvm", "numpy")]
    kernel = steps[0]._last.kernel
    kernel.max_sizes = 1
    for n in (64, 64, 17, 300, 64):
        b = batch(n)
        got, want = (s(**b) for s in steps)
        assert got == pytest.approx(want, rel=1e-10), n
    assert steps[0].compilations == 1 and kernel.evicted == 3 and kernel.specializations == 1
    for k in steps[1].params:
        np.testing.assert_allclose(steps[0].params[k], steps[1].params[k], rtol=1e-9, err_msg=k)


def test_threads_calling_different_sizes(compiled):
    """8 threads x 30 calls at random N with 3 sizes kept (kernels dropped while other threads
    are in calls of them): every result is the NumPy backend's."""
    g, fn = compiled
    fl, p = fresh(compiled, max_sizes=3), params(4)
    sizes = list(range(1, 25)) + [200, 301]
    want = {n: fn(**p, **batch(n)) for n in sizes}
    args = {n: batch(n) for n in sizes}
    start, errors = threading.Barrier(8), []

    def work(seed):
        rng = random.Random(seed)
        start.wait()
        try:
            for _ in range(30):
                n = rng.choice(sizes)
                agree(fl(**p, **args[n]), want[n], n)
        except Exception as e:          # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(s,)) for s in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    assert len(fl.sizes) <= 3 and fl.evicted > 0 and fl.specializations == 1


@pytest.mark.parametrize("bad", [0, -2, 2.5, True, None, "8"])
def test_bad_bound_is_refused(compiled, bad):
    fl = fresh(compiled)
    with pytest.raises(compiler.GradcError, match="max_sizes"):
        fl.max_sizes = bad
    assert fl.max_sizes == 8
