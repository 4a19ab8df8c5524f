"""Run under mpiexec by tests/test_distributed.py:  mpiexec -n K python tests/mpi_worker.py SCENARIO

Each scenario checks a data-parallel step (compiler.train_step(..., comm=MPI.COMM_WORLD)) on
every rank against an oracle computed on that rank (the serial step on the whole batch, or the
gradient graph run by hand) and prints `ok <scenario> rank <r>`; a failed check raises, and the
uncaught error aborts the job (compiler.distributed.abort_on_error), so the test sees a non-zero
exit status and the traceback.  Scenarios: equivalence, dropout, checkpoint, errors, mismatch,
abort (rank size-1 raises outside the step while the others wait in the all-reduce),
abort_thread (the same in a thread), all (all but the aborts).
"""
import os
import sys
import tempfile
import threading

import numpy as np
from mpi4py import MPI

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import compiler  # noqa: E402
from compiler.distributed import DistributedError  # noqa: E402
from frontends import dsl  # noqa: E402
from frontends.dsl import f32, f64, i64  # noqa: E402

comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()
N, D, H, C = 11, 4, 5, 3
TOL = 1e-12


def net(W1, b1, W2, X, y):
    h = dsl.tanh(X @ W1 + b1)
    return dsl.softmax_cross_entropy(h @ W2, y) + 0.01 * dsl.sum(W1 * W1)


def dropped(W1, b1, W2, X, y):
    h = dsl.dropout(dsl.tanh(X @ W1 + b1), 0.5)
    return dsl.softmax_cross_entropy(h @ W2, y)


def data(seed=0, n=N):
    g = np.random.default_rng(seed)
    P = {"W1": g.standard_normal((D, H)), "b1": g.standard_normal(H),
         "W2": g.standard_normal((H, C))}
    return P, g.standard_normal((n, D)), g.integers(0, C, n)


def shard(n, split):
    """This rank's rows of n: uneven cuts (split 0: the first rank takes 1 row; split 2: the
    first rank takes none)."""
    if split == 2:
        cuts = [0, 0] + [n * (k + 1) // (size - 1) for k in range(size - 1)]
    elif split == 0:
        cuts = [0, 1] + [1 + (n - 1) * (k + 1) // (size - 1) for k in range(size - 1)] \
            if size > 1 else [0, n]
    else:
        cuts = [n * k // size for k in range(size)] + [n]
    return slice(cuts[rank], cuts[rank + 1])


def close(a, b, what):
    a, b = np.asarray(a), np.asarray(b)
    err = np.max(np.abs(a - b) / np.maximum(1.0, np.abs(b))) if a.size else 0.0
    assert err <= TOL, f"rank {rank}: {what} differs from the serial step by {err:.3g}"


def identical_everywhere(arrays: dict, what):
    every = comm.allgather({k: a.tobytes() for k, a in arrays.items()})
    assert all(e == every[0] for e in every), f"{what}: the ranks' arrays differ"


def equivalence():
    P, X, y = data()
    optimizers = [("SGD", {}), ("Momentum", {"momentum": 0.8}), ("Adam", {}),
                  ("Momentum", {"nesterov": True}), ("AdamW", {"weight_decay": 0.1})]
    for name, kw in optimizers:
        for extra in ({}, {"clip_norm": 0.3, "weight_decay": 0.05}):
            if name == "AdamW" and extra:
                extra = {"clip_norm": 0.3}
            make = lambda: getattr(compiler.optim, name)(lr=0.2, **kw, **extra)  # noqa: E731
            mine = shard(N, 0)
            n = mine.stop - mine.start
            # every rank starts elsewhere: the step must take rank 0's parameters
            dist = compiler.train_step(net, params={k: v + rank for k, v in P.items()},
                                       inputs={"X": f64[n, D], "y": i64[n]},
                                       optimizer=make(), comm=comm)
            serial = compiler.train_step(net, params=P, inputs={"X": f64[N, D], "y": i64[N]},
                                         optimizer=make())
            for k in range(4):
                part = shard(N, k % 3)          # the shards change: other variants
                got = dist(X=X[part], y=y[part])
                want = serial(X=X, y=y)
                close(got, want, f"{name}{extra} loss at step {k}")
                if "clip_norm" in extra:
                    close(dist.last["grad_norm"], serial.last["grad_norm"], "grad_norm")
                for p in P:
                    close(dist.params[p], serial.params[p], f"{name}{extra} {p} after step {k}")
                for key, a in dist.state.items():
                    close(a, serial.state[key], f"{name}{extra} buffer {key}")
            assert dist.t == serial.t == 4
            identical_everywhere(dist.params, f"{name}{extra} parameters")
            identical_everywhere({str(k): v for k, v in dist.state.items()}, "buffers")
    # the LLVM backend: both parts compiled to native code; the printed step shows the reduce
    mine = shard(N, 0)
    n = mine.stop - mine.start
    make = lambda: compiler.optim.Adam(lr=0.1, clip_norm=0.3, weight_decay=0.05)  # noqa: E731
    dist = compiler.train_step(net, params=P, inputs={"X": f64[n, D], "y": i64[n]},
                               optimizer=make(), comm=comm, backend="llvm")
    serial = compiler.train_step(net, params=P, inputs={"X": f64[N, D], "y": i64[N]},
                                 optimizer=make(), backend="llvm")
    for k in range(3):
        close(dist(X=X[mine], y=y[mine]), serial(X=X, y=y), f"llvm loss at step {k}")
    for p in P:
        close(dist.params[p], serial.params[p], f"llvm {p}")
    assert "comm.Allreduce(MPI.IN_PLACE, buffer, op=MPI.SUM)" in dist.source
    numpy_part = compiler.train_step(net, params=P, inputs={"X": f64[n, D], "y": i64[n]},
                                     optimizer=make(), comm=comm)._last.kernel.gradient
    assert "np.multiply(dW1, n_local, out=dW1_sum)" in numpy_part.bound_source  # the buffer
    assert dist.ir.count("allreduce(sum, in place)") == 1 and "div(dW1_sum, n_global)" in dist.ir
    # f32 parameters: an f32 buffer (the count is exact in f32), f32 rounding
    P32 = {k: v.astype(np.float32) for k, v in P.items()}
    X32, mine = X.astype(np.float32), shard(N, 0)
    n = mine.stop - mine.start
    dist = compiler.train_step(net, params=P32, inputs={"X": f32[n, D], "y": i64[n]},
                               optimizer=compiler.optim.Adam(lr=0.05, clip_norm=0.3), comm=comm)
    serial = compiler.train_step(net, params=P32, inputs={"X": f32[N, D], "y": i64[N]},
                                 optimizer=compiler.optim.Adam(lr=0.05, clip_norm=0.3))
    assert dist.buffer.dtype == np.float32
    for k in range(3):
        dist(X=X32[mine], y=y[mine])
        serial(X=X32, y=y)
    for p in P:
        assert dist.params[p].dtype == np.float32
        err = np.max(np.abs(dist.params[p] - serial.params[p]))
        assert err < 1e-5, f"rank {rank}: f32 {p} differs by {err}"
    print(f"ok equivalence rank {rank}", flush=True)


def dropout():
    """Rank r's masks come from SeedSequence(key, spawn_key=(r,)), key two draws from the shared
    generator; the oracle runs the gradient graph with those masks and averages by hand."""
    P, X, y = data(1)
    mine = shard(N, 1)
    n = mine.stop - mine.start
    step = compiler.train_step(dropped, params=P, inputs={"X": f64[n, D], "y": i64[n]},
                               optimizer=compiler.optim.SGD(lr=0.5), comm=comm, seed=7)
    g = dsl.trace(dropped, W1=f64[D, H], b1=f64[H], W2=f64[H, C], X=f64[n, D], y=i64[n])
    keep = [v for v in g.inputs if v.type.dtype == "bool"]
    assert len(keep) == 1
    gradient = compiler.compile(compiler.grad(g, wrt=list(P)))
    shared = np.random.default_rng(7)
    params = {k: v.copy() for k, v in P.items()}
    for k in range(3):
        key = shared.integers(0, 2 ** 63, size=2)
        mine_rng = np.random.Generator(np.random.PCG64(
            np.random.SeedSequence([int(x) for x in key], spawn_key=(rank,))))
        mask = mine_rng.random(keep[0].type.shape) >= 0.5
        masks = comm.allgather(mask.tobytes())
        assert len(set(masks)) == size, "two ranks drew the same dropout masks"
        out = gradient(**params, X=X[mine], y=y[mine], **{keep[0].name: mask})
        total = {p: comm.allreduce(n * out[f"d{p}"]) for p in P}
        count = comm.allreduce(n)
        loss = comm.allreduce(n * float(out["out"])) / count
        for p in P:
            params[p] = params[p] - 0.5 * (total[p] / count)
        close(step(X=X[mine], y=y[mine]), loss, f"dropout loss at step {k}")
        for p in P:
            close(step.params[p], params[p], f"dropout {p} after step {k}")
    print(f"ok dropout rank {rank}", flush=True)


def bn_net(W1, gamma, beta, W2, X, y):
    h = dsl.relu(dsl.batch_norm(X @ W1, gamma, beta))
    return dsl.softmax_cross_entropy(h @ W2, y)


def batch_norm():
    """batch_norm normalizes with each shard's statistics (as PyTorch DDP without SyncBN);
    the running statistics are all-reduced with the gradients.  SGD is linear in the gradient,
    so the oracle is the n_r-weighted mean over the ranks of a serial step on each shard."""
    g = np.random.default_rng(6)
    P = {"W1": g.standard_normal((D, H)), "gamma": 1 + 0.1 * g.standard_normal(H),
         "beta": 0.1 * g.standard_normal(H), "W2": g.standard_normal((H, C))}
    X, y = g.standard_normal((N, D)), g.integers(0, C, N)
    mine = shard(N, 1)
    n = mine.stop - mine.start
    spec = {"X": f64[n, D], "y": i64[n]}
    dist = compiler.train_step(bn_net, params=P, inputs=spec,
                               optimizer=compiler.optim.SGD(lr=0.3), comm=comm)
    serial = compiler.train_step(bn_net, params=P, inputs=spec,
                                 optimizer=compiler.optim.SGD(lr=0.3))
    for k in range(3):
        for p in P:
            np.copyto(serial.params[p], dist.params[p])
        for key, a in dist.stats.items():
            np.copyto(serial.stats[key], a)
        mine_loss = serial(X=X[mine], y=y[mine])
        want = {p: comm.allreduce(n * serial.params[p]) / N for p in P}
        want_stats = {key: comm.allreduce(n * a) / N for key, a in serial.stats.items()}
        close(dist(X=X[mine], y=y[mine]), comm.allreduce(n * mine_loss) / N, "bn loss")
        for p in P:
            close(dist.params[p], want[p], f"bn {p} after step {k}")
        assert set(dist.stats) == {"gamma_running_mean", "gamma_running_var"}, dist.stats
        for key in want_stats:
            close(dist.stats[key], want_stats[key], f"bn {key} after step {k}")
    identical_everywhere(dist.stats, "running statistics")
    print(f"ok batch_norm rank {rank}", flush=True)


def checkpoint():
    P, X, y = data(2)
    mine = shard(N, 1)
    n = mine.stop - mine.start
    spec = {"X": f64[n, D], "y": i64[n]}
    make = lambda seed: compiler.train_step(  # noqa: E731
        dropped, params={k: v * (seed + 1) for k, v in P.items()}, inputs=spec,
        optimizer=compiler.optim.Adam(lr=0.05), comm=comm, seed=seed)
    tmp = comm.bcast(tempfile.mkdtemp() if rank == 0 else None)
    path = os.path.join(tmp, f"ck{rank}.npz")        # only rank 0's may be written
    a = make(3)
    for _ in range(2):
        a(X=X[mine], y=y[mine])
    a.save(path)
    comm.Barrier()
    assert os.path.exists(path) == (rank == 0), f"rank {rank}: save wrote {path}"
    saved = {p: a.params[p].copy() for p in P}
    serial_path = os.path.join(tmp, "serial.npz")
    if rank == 0:          # the file format is the serial step's: each loads the other's
        serial = compiler.train_step(dropped, params=P, inputs=spec,
                                     optimizer=compiler.optim.Adam(lr=0.05), seed=99)
        serial.load(path)
        assert serial.t == 2 and all(np.array_equal(serial.params[p], saved[p]) for p in P)
        serial.save(serial_path)
    c = make(5)
    c.load(serial_path if rank == 0 else path + ".missing")
    assert c.t == 2 and all(np.array_equal(c.params[p], saved[p]) for p in P)
    for _ in range(2):
        a(X=X[mine], y=y[mine])
    b = make(11)                        # other parameters, another seed: all from the file
    b.load(path if rank == 0 else os.path.join(tmp, "does-not-exist.npz"))
    assert b.t == 2
    for _ in range(2):
        b(X=X[mine], y=y[mine])
    for p in P:
        assert np.array_equal(a.params[p], b.params[p]), f"rank {rank}: {p} after load"
    before = {p: b.params[p].copy() for p in P}
    try:                                    # rank 0 cannot read it: every rank raises
        b.load(os.path.join(tmp, "does-not-exist.npz") if rank == 0 else path)
    except (compiler.train.CheckpointError, OSError) as e:
        assert rank == 0 or "load on rank 0 failed" in str(e), e
    else:
        raise AssertionError(f"rank {rank}: a load that failed on rank 0 did not raise")
    assert b.t == 4 and all(np.array_equal(b.params[p], before[p]) for p in P)
    if rank == 0:                           # rank 0 alone may save: nothing waits for it
        a.save(path)
    a.save(os.path.join(tmp, "no-such-dir", "x.npz") if rank else path)   # a no-op there
    try:
        a.save(os.path.join(tmp, "no-such-dir", "x.npz"))
    except (compiler.train.CheckpointError, OSError):
        assert rank == 0
    else:
        assert rank != 0, "save into a missing directory did not raise on rank 0"
    print(f"ok checkpoint rank {rank}", flush=True)


def errors():
    """The last rank passes a bad batch: it raises its error, the others DistributedError,
    nobody updates; the next step works everywhere."""
    P, X, y = data(3)
    mine = shard(N, 1)
    n = mine.stop - mine.start
    step = compiler.train_step(net, params=P, inputs={"X": f64[n, D], "y": i64[n]},
                               optimizer=compiler.optim.Adam(lr=0.1), comm=comm)
    step(X=X[mine], y=y[mine])
    before = {k: v.copy() for k, v in step.params.items()}
    bad = rank == size - 1
    try:
        step(X=X[mine][:, :2] if bad else X[mine], y=y[mine])
    except DistributedError as e:
        assert not bad and "raised" in str(e), e
    except compiler.GradcError as e:
        assert bad, e
    else:
        raise AssertionError(f"rank {rank}: a bad batch on rank {size - 1} did not raise")
    assert step.t == 1
    for p in P:
        assert np.array_equal(step.params[p], before[p]), f"rank {rank}: {p} changed"
    step(X=X[mine], y=y[mine])
    assert step.t == 2
    identical_everywhere(step.params, "after a failed step")
    print(f"ok errors rank {rank}", flush=True)


def mismatch():
    P, X, y = data(4)
    if rank == size - 1:
        P["W2"] = np.zeros((H + 1, C))
    try:
        compiler.train_step(net, params=P, inputs={"X": f64[3, D], "y": i64[3]},
                            optimizer=compiler.optim.SGD(lr=0.1), comm=comm)
    except DistributedError as e:
        msg = str(e)
        assert f"rank {size - 1}: parameters" in msg and "(6, 3)" in msg, msg
    else:
        raise AssertionError("ranks with different parameter shapes built a step")
    print(f"ok mismatch rank {rank}", flush=True)


def abort():
    P, X, y = data(5)
    step = compiler.train_step(net, params=P, inputs={"X": f64[N, D], "y": i64[N]},
                               optimizer=compiler.optim.SGD(lr=0.1), comm=comm)
    if rank == size - 1:
        raise RuntimeError(f"boom from rank {rank}")
    step(X=X, y=y)                       # waits for the last rank in the all-reduce
    print(f"rank {rank} was not aborted", flush=True)


def abort_thread():
    """As abort, the error raised in a thread of the last rank."""
    P, X, y = data(5)
    step = compiler.train_step(net, params=P, inputs={"X": f64[N, D], "y": i64[N]},
                               optimizer=compiler.optim.SGD(lr=0.1), comm=comm)
    if rank == size - 1:
        def work():
            raise RuntimeError(f"boom from rank {rank}")
        t = threading.Thread(target=work, name="worker")
        t.start()
        t.join()
    step(X=X, y=y)
    print(f"rank {rank} was not aborted", flush=True)


SCENARIOS = {"equivalence": equivalence, "dropout": dropout, "batch_norm": batch_norm,
             "checkpoint": checkpoint,
             "errors": errors, "mismatch": mismatch, "abort": abort,
             "abort_thread": abort_thread}

if __name__ == "__main__":
    names = sys.argv[1:] or ["all"]
    if names == ["all"]:
        names = [k for k in SCENARIOS if not k.startswith("abort")]
    for name in names:
        SCENARIOS[name]()
