"""Data-parallel train steps on MPI (compiler/distributed.py, issue 20).

The MPI checks run tests/mpi_worker.py under `mpiexec -n 2` and `-n 3` (subprocesses with a
timeout, so a hang fails instead of blocking the suite); each rank compares its data-parallel
step on uneven shards against the serial step on the whole batch (f64, 1e-12) for SGD,
Momentum, Nesterov, Adam and AdamW, with and without clipping and weight decay; dropout
against the gradient graph run by hand with each rank's documented mask stream; batch_norm's
running statistics (all-reduced with the gradients) against serial steps per shard; checkpoints;
a failing rank; ranks with different shapes.  They skip when mpi4py or mpiexec is missing
(pip install -e '.[mpi]').  The split of the step and its printed all-reduce need no MPI."""
import importlib.util
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import compiler
from compiler.distributed import DistributedError, GradientBuffer, split_step
from frontends import dsl
from frontends.dsl import f32, f64, i64
from frontends.cli import main as cli_main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(ROOT, "tests", "mpi_worker.py")


def _mpiexec():
    here = os.path.join(os.path.dirname(sys.executable), "mpiexec")   # the mpich wheel's
    return here if os.access(here, os.X_OK) else shutil.which("mpiexec")


needs_mpi = pytest.mark.skipif(
    importlib.util.find_spec("mpi4py") is None or _mpiexec() is None,
    reason="mpi4py/mpiexec not installed (pip install -e '.[mpi]')")


def launch(n, *scenarios, timeout=90):
    return subprocess.run([_mpiexec(), "-n", str(n), sys.executable, WORKER, *scenarios],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)


@needs_mpi
@pytest.mark.parametrize("ranks", [2, 3])
def test_shards_take_the_serial_steps(ranks):
    run = launch(ranks, "all")
    assert run.returncode == 0, run.stdout + run.stderr
    for scenario in ("equivalence", "dropout", "batch_norm", "checkpoint", "errors",
                     "mismatch"):
        for r in range(ranks):
            assert f"ok {scenario} rank {r}" in run.stdout, run.stdout + run.stderr


@needs_mpi
@pytest.mark.parametrize("scenario", ["abort", "abort_thread"])
def test_a_rank_that_raises_aborts_the_job_with_its_error(scenario):
    """The last rank raises outside the step (in its main thread, or another) while rank 0
    waits in the all-reduce: the job ends (no hang), non-zero, with the error on stderr."""
    run = launch(2, scenario, timeout=60)
    assert run.returncode != 0
    assert "RuntimeError: boom from rank 1" in run.stderr, run.stderr
    assert "aborting the MPI job" in run.stderr, run.stderr
    assert "was not aborted" not in run.stdout


def net(W1, b1, X, y):
    return dsl.softmax_cross_entropy(dsl.tanh(X @ W1 + b1), y)


def test_split_step_prints_the_allreduce_between_gradient_and_update():
    g = dsl.trace(net, W1=f64[3, 4], b1=f64[4], X=f64[5, 3], y=i64[5])
    parts = split_step(compiler.grad(g, wrt=["W1", "b1"]), ["W1", "b1"],
                       compiler.optim.Adam(lr=1e-3, clip_norm=1.0), "out")
    text = parts.text()
    grad_at, reduce_at, update_at = (text.index("part 1"), text.index("allreduce("),
                                     text.index("part 2"))
    assert grad_at < reduce_at < update_at
    assert text.count("comm.Allreduce") == 1
    assert "dW1: f64[3,4] = div(dW1_sum, n_global)" in text
    # clipping reads the all-reduced gradients: the global norm
    assert text.index("grad_norm", update_at) > text.index("div(dW1_sum", update_at)
    # part 1 ends with this rank's shares, computed into the buffer's slices (its inputs)
    assert set(parts.gradient.outputs) == {"loss_local", "dW1_local", "db1_local"}
    assert {"n_local", "dW1_sum", "db1_sum"} <= {v.name for v in parts.gradient.inputs}
    assert "dW1_local: f64[3,4] = mul(dW1, n_local)" in text
    # one buffer: W1 (12 f64) padded to 64 bytes (16), b1 (4), then the scalars
    assert parts.buffer.slots == {"dW1_sum": (0, (3, 4)), "db1_sum": (16, (4,)),
                                  "loss_sum": (24, ()), "n_global": (25, ()),
                                  "failed": (26, ())}
    flat, views = parts.buffer.allocate()
    assert flat.ctypes.data % 64 == 0 and flat.size == 27 and not flat.any()
    views["db1_sum"][...] = 1.0
    assert flat[16:20].tolist() == [1.0] * 4 and flat.sum() == 4.0


def test_parameters_of_two_dtypes_are_refused():
    g = dsl.trace(lambda W, b, X: dsl.sum(X @ W) + dsl.cast(dsl.sum(b), f64), W=f64[2, 2],
                  b=f32[2],
                  X=f64[3, 2])
    with pytest.raises(DistributedError, match="dtypes"):
        split_step(compiler.grad(g, wrt=["W", "b"]), ["W", "b"], compiler.optim.SGD(lr=1.0),
                   "out")


def test_buffer_layout_of_f32():
    buf = GradientBuffer.layout({"da_sum": (3,), "db_sum": (2, 2)}, np.float32)
    assert buf.slots["db_sum"] == (16, (2, 2)) and buf.size == 16 + 16 + 3


def test_cli_show_train_step_comm(capsys, tmp_path):
    model = tmp_path / "m.py"
    model.write_text("from frontends import dsl\nfrom frontends.dsl import f64, i64\n\n"
                     "def net(W: f64[3, 2], X: f64[4, 3], y: i64[4]):\n"
                     "    return dsl.softmax_cross_entropy(X @ W, y)\n")
    assert cli_main(["show", f"{model}:net", "--train-step", "adam", "--comm",
                     "--data", "X"]) == 0
    out = capsys.readouterr().out
    assert "allreduce(sum, in place) dW_sum, loss_sum, n_global, failed" in out
    assert "dW: f64[3,2] = div(dW_sum, n_global)" in out and "W_next" in out
    assert "dW_local: f64[3,2] = mul(dW, n_local)" in out
    assert cli_main(["show", f"{model}:net", "--train-step", "adam", "--data", "X"]) == 0
    plain = capsys.readouterr().out
    assert "W_next" in plain and "allreduce" not in plain
    assert cli_main(["show", f"{model}:net", "--comm"]) == 2       # --comm needs a step


def test_mpi4py_is_imported_only_when_asked():
    code = ("import sys, numpy as np, compiler\n"
            "from frontends import dsl\nfrom frontends.dsl import f64, i64\n"
            "step = compiler.train_step(lambda W, X, y: dsl.softmax_cross_entropy(X @ W, y), "
            "params={'W': np.zeros((3, 2))}, inputs={'X': f64[4, 3], 'y': i64[4]}, "
            "optimizer=compiler.optim.SGD(lr=0.1))\n"
            "step(X=np.ones((4, 3)), y=np.zeros(4, dtype=np.int64))\n"
            "assert 'mpi4py' not in sys.modules, sorted(m for m in sys.modules if 'mpi' in m)\n"
            "print('ok')\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, cwd=ROOT)
    assert run.stdout.strip() == "ok", run.stderr


def test_comm_without_mpi4py_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)      # `from mpi4py import MPI` fails
    with pytest.raises(compiler.GradcError, match=r"needs mpi4py: pip install -e '\.\[mpi\]'"):
        compiler.train_step(net, params={"W1": np.zeros((3, 4)), "b1": np.zeros(4)},
                            inputs={"X": f64[5, 3], "y": i64[5]},
                            optimizer=compiler.optim.SGD(lr=0.1), comm=object())
