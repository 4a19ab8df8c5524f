"""Checkpoints and failed steps are all-or-nothing (issue 15 §3).

- `save` writes a temporary file in the checkpoint's directory, fsyncs it, renames it over the old
  file and fsyncs the directory: a process killed with SIGKILL in the middle of a save (a real
  kill -9 of a child process, stopped inside NumPy's array writer) leaves the previous checkpoint
  byte-identical, and it loads and continues bit-identically to a run that never saved.
- `load` validates every field before it changes anything: each malformed checkpoint below is
  refused with a `GradcError` naming the field, and the step (parameters, buffers, t, generator,
  learning rate) is exactly as before.  Loading never executes code from the file.
- A step that fails part-way (a read-only parameter or buffer, a bad argument or label found after
  the dropout draw, an index error inside the kernel) leaves every parameter, buffer, t and the
  generator as they were; the next good call gives what it would have given without the failure.
The oracle throughout is a second step that never saw the failure (bit-identical comparison)."""
import io
import json
import os
import pickle
import signal
import subprocess
import sys
import warnings
import zipfile

import numpy as np
import pytest

import compiler
from compiler import optim
from compiler.ir import GradcError
from compiler.train import CheckpointError
from frontends import dsl
from frontends.dsl import f64, i64

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N, D, H, C = 16, 4, 6, 3


def model(W1, b1, W2, X, y):
    h = dsl.dropout(dsl.tanh(X @ W1 + b1), 0.25)
    return dsl.softmax_cross_entropy(h @ W2, y)


def params(seed=0):
    rng = np.random.default_rng(seed)
    return {"W1": rng.standard_normal((D, H)), "b1": np.zeros(H), "W2": rng.standard_normal((H, C))}


def make(opt=None, backend="numpy", fn=model, seed=3):
    return compiler.train_step(fn, params(), {"X": f64[N, D], "y": i64[N]},
                               opt if opt is not None else optim.Adam(1e-2, beta1=0.8), backend,
                               seed=seed)


def data(seed=1):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((N, D)), rng.integers(0, C, N)


def snapshot(step):
    return ({k: a.copy() for k, a in step.params.items()},
            {k: a.copy() for k, a in step.state.items()},
            step.t, json.dumps(step.rng.bit_generator.state), step.optimizer.lr)


def assert_unchanged(step, snap):
    P, S, t, rng, lr = snap
    for k, a in P.items():
        assert np.array_equal(step.params[k], a), f"parameter {k} changed"
    for k, a in S.items():
        assert np.array_equal(step.state[k], a), f"buffer {k} changed"
    assert step.t == t and json.dumps(step.rng.bit_generator.state) == rng
    assert step.optimizer.lr == lr


def rewrite(src, dst, **changes):
    """Copy the checkpoint `src` to `dst` with members replaced (value) or removed (None)."""
    with np.load(src, allow_pickle=False) as d:
        data = {k: d[k] for k in d.files}
    for k, v in changes.items():
        k = k.replace("__", "/")
        if v is None:
            del data[k]
        else:
            data[k] = v
    with open(dst, "wb") as f:
        np.savez(f, **data)
    return dst


# ---- save: atomic -----------------------------------------------------------------------------
CHILD = r"""
import hashlib, os, sys, time
sys.path.insert(0, {root!r})
import numpy as np
import compiler
from compiler import optim
from frontends import dsl
from frontends.dsl import f64, i64

def model(W, X, Y):
    r = X @ W - Y
    return dsl.mean(r * r)

rng = np.random.default_rng(0)
W = rng.standard_normal((600, 400))                  # Adam: 3 arrays of 1.9 MB
X, Y = rng.standard_normal((8, 600)), rng.standard_normal((8, 400))
step = compiler.train_step(model, {{"W": W}}, {{"X": f64[8, 600], "Y": f64[8, 400]}},
                           optim.Adam(1e-3), seed=11)
for _ in range(3):
    step(X=X, Y=Y)
step.save({path!r})
print("saved", flush=True)
for _ in range(2):
    step(X=X, Y=Y)
write = np.lib.format.write_array
count = [0]

def slow_write(fp, array, *a, **k):                   # stop inside the second array's write
    count[0] += 1
    if count[0] == 2:
        fp.write(array.tobytes()[: array.nbytes // 2])
        fp.flush()
        print("writing", flush=True)
        time.sleep(120)
    return write(fp, array, *a, **k)
np.lib.format.write_array = slow_write
step.save({path!r})
print("finished", flush=True)
"""


def lsq(W, X, Y):
    r = X @ W - Y
    return dsl.mean(r * r)


def test_kill_9_during_a_save_keeps_the_previous_checkpoint(tmp_path):
    path = tmp_path / "ckpt.npz"
    child = subprocess.Popen([sys.executable, "-c", CHILD.format(root=ROOT, path=str(path))],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "saved", child.stderr.read()
        before = path.read_bytes()
        assert child.stdout.readline().strip() == "writing", child.stderr.read()
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL
    assert path.read_bytes() == before                       # the old file, byte for byte
    # it loads, and continues bit-identically to a run that never saved
    rng = np.random.default_rng(0)
    W = rng.standard_normal((600, 400))
    X, Y = rng.standard_normal((8, 600)), rng.standard_normal((8, 400))

    def make_step():
        return compiler.train_step(lsq, {"W": W}, {"X": f64[8, 600], "Y": f64[8, 400]},
                                   optim.Adam(1e-3), seed=11)
    straight = make_step()
    losses = [straight(X=X, Y=Y) for _ in range(5)]
    resumed = make_step().load(path)
    assert resumed.t == 3
    assert [resumed(X=X, Y=Y) for _ in range(2)] == losses[3:]
    assert np.array_equal(resumed.params["W"], straight.params["W"])
    for k in straight.state:
        assert np.array_equal(resumed.state[k], straight.state[k])


def test_save_fsyncs_the_file_then_renames_then_fsyncs_the_directory(tmp_path, monkeypatch):
    import compiler.checkpoint as ck
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", "dir" if os.path.isdir(f"/proc/self/fd/{fd}") else "file"))
        real_fsync(fd)

    def replace(a, b):
        events.append(("replace", os.path.dirname(a) == os.path.dirname(b)))
        real_replace(a, b)
    monkeypatch.setattr(ck.os, "fsync", fsync)
    monkeypatch.setattr(ck.os, "replace", replace)
    step = make()
    step.save(tmp_path / "c.npz")
    assert events == [("fsync", "file"), ("replace", True), ("fsync", "dir")]
    assert os.listdir(tmp_path) == ["c.npz"]
    assert make().load(tmp_path / "c.npz").t == 0


def test_a_save_that_fails_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "c.npz"
    step = make()
    X, y = data()
    step(X=X, y=y)
    step.save(path)
    before = path.read_bytes()
    step(X=X, y=y)

    def disk_full(*a, **k):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(np.lib.format, "write_array", disk_full)
    with pytest.raises(OSError, match="No space"):
        step.save(path)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["c.npz"]


def test_save_keeps_the_mode_of_the_file_it_replaces(tmp_path):
    path = tmp_path / "c.npz"
    make().save(path)
    os.chmod(path, 0o640)
    make().save(path)
    assert os.stat(path).st_mode & 0o777 == 0o640


def test_save_through_a_symbolic_link_replaces_its_target(tmp_path):
    (tmp_path / "run").mkdir()
    target = tmp_path / "run" / "c.npz"
    make().save(target)
    link = tmp_path / "latest.npz"
    link.symlink_to(target)
    X, y = data()
    step = make()
    step(X=X, y=y)
    step.save(link)
    assert link.is_symlink() and make().load(target).t == 1
    assert sorted(os.listdir(tmp_path / "run")) == ["c.npz"]


# ---- load: all or nothing ---------------------------------------------------------------------
@pytest.fixture
def good(tmp_path):
    """A checkpoint after 4 steps (t=4, advanced generator, lr changed by hand), and a step at
    t=2 with other values to load it into."""
    X, y = data()
    src = make()
    for _ in range(4):
        src(X=X, y=y)
    src.optimizer.lr = 5e-3
    src.save(tmp_path / "good.npz")
    dst = make(seed=99)
    for _ in range(2):
        dst(X=X, y=y)
    return tmp_path / "good.npz", dst


BAD = {   # name -> (what to change, what the error must name)
    "t negative": ({"t": np.int64(-1)}, "'t'"),
    "t fractional": ({"t": np.float64(3.7)}, "'t'"),
    "t integral float": ({"t": np.float64(3.0)}, "'t'"),
    "t bool": ({"t": np.bool_(True)}, "'t'"),
    "t array": ({"t": np.array([1, 2])}, "'t'"),
    "t string": ({"t": np.array("4")}, "'t'"),
    "t missing": ({"t": None}, "'t'"),
    "rng not JSON": ({"rng": np.array("{not json")}, "'rng'"),
    "rng other generator": ({"rng": np.array(json.dumps(
        np.random.MT19937(1).state, default=lambda a: a.tolist()))}, "'rng'"),
    "rng missing keys": ({"rng": np.array(json.dumps({"bit_generator": "PCG64"}))}, "'rng'"),
    "rng bad values": ({"rng": np.array(json.dumps(
        {"bit_generator": "PCG64", "state": {"state": "x", "inc": 1},
         "has_uint32": 0, "uinteger": 0}))}, "'rng'"),
    "rng deep nesting": ({"rng": np.array("[" * 100000 + "]" * 100000)}, "'rng'"),
    "rng a number": ({"rng": np.int64(3)}, "'rng'"),
    "optimizer class": ({"optimizer": np.array("SGD")}, "holds SGD state; this step uses Adam"),
    "optimizer missing": ({"optimizer": None}, "'optimizer'"),
    "hyper-parameter": ({"optimizer_config": np.array(json.dumps(
        {"lr": 0.01, "weight_decay": 0.0, "clip_norm": None, "schedule": None, "beta1": 0.9,
         "beta2": 0.999, "eps": 1e-08}))}, "beta1"),
    "hyper-parameter missing": ({"optimizer_config": np.array(json.dumps(
        {"lr": 0.01, "weight_decay": 0.0, "clip_norm": None, "schedule": None}))}, "beta1"),
    "lr not a number": ({"optimizer_config": np.array(json.dumps(
        {"lr": "fast", "weight_decay": 0.0, "clip_norm": None, "schedule": None, "beta1": 0.8,
         "beta2": 0.999, "eps": 1e-08}))}, "lr"),
    "config missing": ({"optimizer_config": None}, "'optimizer_config'"),
    "param missing": ({"param__W2": None}, "param/W2"),
    "param extra": ({"param__W3": np.zeros(3)}, "param/W3"),
    "param shape": ({"param__b1": np.zeros(H + 1)}, "param/b1"),
    "param dtype": ({"param__b1": np.zeros(H, np.float32)}, "param/b1"),
    "param huge": ({"param__b1": np.zeros(10 ** 6)}, "param/b1"),
    "param object": ({"param__b1": np.array([None] * H, dtype=object)}, "param/b1"),
    "buffer missing": ({"state__v__W1": None}, "state/v/W1"),
    "buffer shape": ({"state__m__W1": np.zeros((H, D))}, "state/m/W1"),
    "unknown member": ({"extra": np.zeros(1)}, "'extra'"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_a_bad_field_is_named_and_nothing_changes(good, tmp_path, name):
    path, step = good
    changes, names = BAD[name]
    bad = rewrite(path, tmp_path / "bad.npz", **changes)
    snap = snapshot(step)
    with pytest.raises(CheckpointError) as e:
        step.load(bad)
    assert names in str(e.value)
    assert isinstance(e.value, GradcError)
    assert_unchanged(step, snap)
    step.load(path)                          # the good one still loads into the same step
    assert step.t == 4 and step.optimizer.lr == 5e-3


def pickled_object(marker):
    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))
    buf = io.BytesIO()
    np.save(buf, np.array([Evil()], dtype=object), allow_pickle=True)
    return buf.getvalue()


@pytest.mark.parametrize("kind", ["empty", "text", "truncated", "npy", "pickle member",
                                  "pickle file", "directory"])
def test_files_that_are_not_checkpoints_are_refused_without_running_anything(good, tmp_path,
                                                                              kind):
    path, step = good
    marker = tmp_path / "ran"
    bad = tmp_path / "bad.npz"
    whole = path.read_bytes()
    if kind == "empty":
        bad.write_bytes(b"")
    elif kind == "text":
        bad.write_text('{"t": 4}')
    elif kind == "truncated":
        bad.write_bytes(whole[: len(whole) * 2 // 3])
    elif kind == "npy":
        np.save(bad, np.zeros(3))
        bad = tmp_path / "bad.npz.npy"
    elif kind == "pickle member":
        with zipfile.ZipFile(path) as z:
            members = [(info.filename, z.read(info)) for info in z.infolist()]
        with zipfile.ZipFile(bad, "w") as out:
            for name, body in members:
                out.writestr(name, pickled_object(marker) if name == "param/b1.npy" else body)
    elif kind == "pickle file":
        bad.write_bytes(pickle.dumps(
            type("E", (), {"__reduce__": lambda s: (os.system, (f"touch {marker}",))})()))
    elif kind == "directory":
        bad.mkdir()
    snap = snapshot(step)
    with pytest.raises(CheckpointError, match="bad.npz") as e:
        step.load(bad)
    if kind == "pickle member":
        assert "'param/b1' holds Python objects" in str(e.value)
    assert not marker.exists()
    assert_unchanged(step, snap)


def test_a_member_that_appears_twice_is_refused(good, tmp_path):
    path, step = good
    bad = tmp_path / "bad.npz"
    with zipfile.ZipFile(path) as z:
        members = [(info.filename, z.read(info)) for info in z.infolist()]
    with zipfile.ZipFile(bad, "w") as out, warnings.catch_warnings():
        warnings.simplefilter("ignore")               # zipfile may warn about the duplicate
        for name, body in members + [m for m in members if m[0] == "t.npy"]:
            out.writestr(name, body)
    snap = snapshot(step)
    with pytest.raises(CheckpointError, match="'t' appears twice"):
        step.load(bad)
    assert_unchanged(step, snap)


def test_a_read_only_destination_is_refused_before_anything_is_written(good):
    path, step = good
    step.state[("v", "W2")].flags.writeable = False
    snap = snapshot(step)
    with pytest.raises(GradcError, match="v.*W2.*read-only"):
        step.load(path)
    assert_unchanged(step, snap)


def test_load_restores_the_learning_rate_and_continues_bit_identically(good):
    path, step = good
    X, y = data()
    src = make()
    for _ in range(4):
        src(X=X, y=y)
    src.optimizer.lr = 5e-3
    step.load(path)
    assert step.optimizer.lr == 5e-3
    assert [step(X=X, y=y) for _ in range(3)] == [src(X=X, y=y) for _ in range(3)]


# ---- a step that fails part-way ---------------------------------------------------------------
def fail_and_recover(backend, spoil, repair, exc, match=None):
    """Two steps, one of which is spoiled before its 3rd call; that call must raise `exc` and
    change nothing; once repaired, it matches the unspoiled step bit for bit."""
    X, y = data()
    a, b = make(backend=backend), make(backend=backend)
    for _ in range(2):
        assert a(X=X, y=y) == b(X=X, y=y)
    args = spoil(a, dict(X=X, y=y))
    snap = snapshot(a)
    with pytest.raises(exc, match=match):
        a(**args)
    assert_unchanged(a, snap)
    repair(a)
    for _ in range(2):
        assert a(X=X, y=y) == b(X=X, y=y)
    assert_unchanged(a, snapshot(b))


def readonly(key):
    def spoil(step, args):
        (step.state[key] if isinstance(key, tuple) else step.params[key]).flags.writeable = False
        return args

    def repair(step):
        (step.state[key] if isinstance(key, tuple) else step.params[key]).flags.writeable = True
    return spoil, repair


@pytest.mark.parametrize("backend", ["numpy", "llvm"])
@pytest.mark.parametrize("key", ["W2", "b1", ("v", "W2")])
def test_a_read_only_parameter_or_buffer_fails_the_step_cleanly(backend, key):
    spoil, repair = readonly(key)
    fail_and_recover(backend, spoil, repair, GradcError, "read-only")


@pytest.mark.parametrize("backend", ["numpy", "llvm"])
@pytest.mark.parametrize("bad", ["label", "dtype"])
def test_a_bad_argument_found_after_the_dropout_draw_changes_nothing(backend, bad):
    def spoil(step, args):
        y = args["y"].copy()
        if bad == "label":
            y[-1] = C                              # out of range: the kernel refuses it
        return dict(args, y=y if bad == "label" else y.astype(np.float64))
    fail_and_recover(backend, spoil, lambda s: None, (ValueError, TypeError))


def shifted(W1, b1, W2, X, y):
    h = dsl.dropout(dsl.tanh(X @ W1 + b1), 0.25)
    return -dsl.mean(dsl.sum(dsl.onehot(y + 1, C) * dsl.log_softmax(h @ W2), axis=1))


@pytest.mark.parametrize("backend", ["numpy", "llvm"])
def test_an_error_inside_the_kernel_changes_nothing(backend):
    """onehot(y + 1) with a label C − 1: the kernel itself fails (a computed label out of
    range, issue 14 §4) after the dropout draw, in the middle of its statements."""
    X, y = data()
    y = np.where(y == C - 1, 0, y)
    a, b = make(fn=shifted, backend=backend), make(fn=shifted, backend=backend)
    for _ in range(2):
        assert a(X=X, y=y) == b(X=X, y=y)
    snap = snapshot(a)
    bad = y.copy()
    bad[3] = C - 1
    with pytest.raises(Exception):        # noqa: B017  (which error is issue 14 §4's business)
        a(X=X, y=bad)
    assert_unchanged(a, snap)
    assert a(X=X, y=y) == b(X=X, y=y)


HAZARD = """graph g(W: f64[3], s: f64[2,3], y: i64[2]) {
  W_next: f64[3] = neg(W)
  t0: i64[] = const() {value=5, dtype='i64', shape=()}
  t1: i64[2] = add(y, t0)
  t2: f64[2] = pick(s, t1)
  loss: f64[] = sum(t2) {axes=(0,), keepdims=False}
  return loss=loss, W_next=W_next
}"""


def test_in_place_updates_only_where_nothing_after_them_can_fail():
    """The hazard the train step avoids: a kernel computing W_next into W and failing
    afterwards (a computed label out of range) has already destroyed W.  The step's check
    refuses in-place updates for such a graph, and allows them for real train-step graphs."""
    from compiler.train import _updates_cannot_fail
    g = compiler.parse_graph(HAZARD)
    kernel = compiler.compile(g, passes=[])
    W = np.ones(3)
    run = kernel.bind({"W": W}, donate={"W_next": "W"})
    with pytest.raises(Exception):        # noqa: B017  (the label error's type is not ours)
        run(s=np.zeros((2, 3)), y=np.array([0, 1]))
    assert np.array_equal(W, -np.ones(3))               # overwritten before the failure
    assert not _updates_cannot_fail(g, {"W_next": "W"})
    last = compiler.parse_graph(HAZARD.replace("  W_next: f64[3] = neg(W)\n", "").replace(
        "  return", "  W_next: f64[3] = neg(W)\n  return"))
    assert _updates_cannot_fail(last, {"W_next": "W"})
    for opt in (optim.SGD(0.1), optim.AdamW(1e-2, clip_norm=1.0, schedule=optim.Warmup(2)),
                optim.RMSProp(1e-2, weight_decay=1e-3), optim.Momentum(0.1, nesterov=True)):
        step = make(opt, fn=shifted)
        kernel = step._last.kernel
        updates = [k for k in kernel.graph.outputs if k.endswith("_next") and k != "t_next"]
        assert _updates_cannot_fail(kernel.graph, {k: k[:-5] for k in updates})
        assert "out=W1)" in kernel.bound_source                  # still updated in place
