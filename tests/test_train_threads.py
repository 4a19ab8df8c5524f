"""A train step called from many threads (issue 14 §2): each call (forward, backward, update,
counter, dropout draw) is atomic, so concurrent calls end exactly where the same number of serial
calls ends.  The oracle is a second step, called serially: on a fixed batch every step is the same
function of the state, so the serial trajectory is the only one a correct lock can produce (the
k-th call to take the lock draws the k-th dropout mask and sees the state after k − 1 updates).
The model is large enough (128×64 @ 64×32) that NumPy and BLAS drop the GIL inside a step."""
import threading

import numpy as np
import pytest

import compiler
from compiler import optim
from frontends import dsl
from frontends.dsl import f64, i64

THREADS, CALLS = 40, 4
N, D, H, C = 128, 64, 32, 5


def mlp(W1, b1, W2, X, y):
    h = dsl.tanh(X @ W1 + b1)
    return dsl.softmax_cross_entropy(h @ W2, y) + 1e-3 * dsl.sum(W1 * W1)


def mlp_dropout(W1, b1, W2, X, y):
    h = dsl.dropout(dsl.tanh(X @ W1 + b1), 0.3)
    return dsl.softmax_cross_entropy(h @ W2, y)


def params(seed=0):
    rng = np.random.default_rng(seed)
    return {"W1": rng.standard_normal((D, H)) / 8, "b1": np.zeros(H),
            "W2": rng.standard_normal((H, C)) / 6}


def data(seed=1):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((N, D)), rng.integers(0, C, N)


def make(model, opt, backend):
    return compiler.train_step(model, params(), {"X": f64[N, D], "y": i64[N]}, opt, backend,
                               seed=5)


def hammer(step, X, y, calls=CALLS, threads=THREADS, extra=None):
    """`threads` threads, started together, each calling step(X=X, y=y) `calls` times; returns
    every loss the calls returned.  `extra(i)` runs in thread i after its calls, if given."""
    start = threading.Barrier(threads)
    losses, errors = [], []

    def work(i):
        try:
            start.wait()
            mine = [step(X=X, y=y) for _ in range(calls)]
            losses.extend(mine)
            if extra is not None:
                extra(i)
        except BaseException as e:       # noqa: BLE001  (re-raised in the main thread)
            errors.append(e)
    ts = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errors:
        raise errors[0]
    return losses


def assert_same_state(a, b):
    assert a.t == b.t
    for k in a.params:
        assert np.array_equal(a.params[k], b.params[k]), k
    for k in a.state:
        assert np.array_equal(a.state[k], b.state[k]), k
    assert a.rng.bit_generator.state == b.rng.bit_generator.state


@pytest.mark.parametrize("backend", ["numpy", "llvm"])
@pytest.mark.parametrize("model,make_opt", [
    (mlp, lambda: optim.SGD(0.05)),
    (mlp, lambda: optim.Adam(1e-2, clip_norm=1.0, schedule=optim.Cosine(500))),
    (mlp_dropout, lambda: optim.Momentum(0.05, nesterov=True)),
], ids=["sgd", "adam", "dropout-momentum"])
def test_concurrent_steps_equal_serial_steps(backend, model, make_opt):
    X, y = data()
    shared, serial = make(model, make_opt(), backend), make(model, make_opt(), backend)
    losses = hammer(shared, X, y)
    expected = [serial(X=X, y=y) for _ in range(THREADS * CALLS)]
    assert shared.t == THREADS * CALLS
    assert_same_state(shared, serial)
    assert sorted(losses) == sorted(expected)       # each call saw exactly one serial state


@pytest.mark.parametrize("backend", ["numpy", "llvm"])
def test_save_evaluate_and_steps_from_threads_see_whole_updates(tmp_path, backend):
    """Checkpoints written while other threads step hold one consistent state: the parameters
    after exactly `t` serial updates, with that `t`.  evaluate() from threads sees whole updates
    too: its loss is one of the serial trajectory's losses."""
    X, y = data()
    shared = make(mlp, optim.Adam(1e-2), backend)
    serial = make(mlp, optim.Adam(1e-2), backend)
    trajectory = {0: {k: a.copy() for k, a in serial.params.items()}}
    seen_losses = {serial.evaluate(X=X, y=y)["loss"]}
    for t in range(1, THREADS * 2 + 1):
        serial(X=X, y=y)
        trajectory[t] = {k: a.copy() for k, a in serial.params.items()}
        seen_losses.add(serial.evaluate(X=X, y=y)["loss"])
    evaluated = []

    def save_and_evaluate(i):
        if i % 4 == 0:
            shared.save(tmp_path / f"c{i}.npz")
        else:
            evaluated.append(shared.evaluate(X=X, y=y)["loss"])
    hammer(shared, X, y, calls=2, extra=save_and_evaluate)
    assert shared.t == THREADS * 2
    assert set(evaluated) <= seen_losses
    for i in range(0, THREADS, 4):
        probe = make(mlp, optim.Adam(1e-2), backend).load(tmp_path / f"c{i}.npz")
        for k, a in trajectory[probe.t].items():
            assert np.array_equal(probe.params[k], a), (i, probe.t, k)


def test_the_lock_is_reentrant_and_public():
    """`with step.lock:` groups several calls (a step and a save) into one atomic unit."""
    X, y = data()
    step = make(mlp, optim.SGD(0.1), "numpy")
    with step.lock:
        step(X=X, y=y)
        assert step.t == 1


@pytest.mark.parametrize("backend", ["numpy", "llvm"])
def test_threads_with_two_batch_sizes_compile_each_once_and_count_every_update(backend):
    """Half the threads send a smaller batch: the second variant is built once, under the
    lock, and every update is counted."""
    X, y = data()
    step = make(mlp, optim.SGD(0.05), backend)
    start = threading.Barrier(16)
    errors = []

    def work(i):
        try:
            start.wait()
            n = N if i % 2 else N // 2
            for _ in range(3):
                step(X=X[:n], y=y[:n])
        except BaseException as e:       # noqa: BLE001
            errors.append(e)
    ts = [threading.Thread(target=work, args=(i,)) for i in range(16)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors and step.t == 48 and step.compilations == 2
