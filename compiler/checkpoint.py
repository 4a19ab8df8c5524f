"""Train-step checkpoints: the file format, an atomic write and an all-or-nothing read.

A checkpoint is a NumPy .npz archive (a zip of .npy files) with exactly these members:

    param/<name>          each parameter: its dtype and shape in the step (a leaf of a
                          parameter tree by its dotted path: param/params.l1.W)
    state/<slot>/<name>   each optimizer buffer (Adam's m and v, ...): the parameter's dtype, shape
    t                     integer scalar: the updates taken, 0 ≤ t < 2**53
    rng                   string scalar: the dropout generator's state, JSON
                          (`numpy.random.Generator.bit_generator.state`)
    optimizer             string scalar: the optimizer's class name
    optimizer_config      string scalar: its hyper-parameters, JSON (`Optimizer.describe()`)

`write_atomic` writes a temporary file in the checkpoint's own directory, fsyncs it, renames it
over the old file (one `rename(2)`: a reader or a crash sees the old file or the new one, never a
mixture) and fsyncs the directory so the rename itself is durable.  A process killed during a
save leaves the old checkpoint intact and, at worst, a stray `.<name>.<random>.tmp` beside it.

`read` executes nothing from the file: the archive is read by `zipfile`, each member's .npy
header (a Python literal, parsed by NumPy with `ast.literal_eval`) is checked against the shape and
dtype the step expects *before* its data is read (object dtypes, i.e. pickles, are refused; no
member can make it allocate more than the step's own arrays, whatever the archive's compression
claims), and the string fields are parsed by `json`.  Every failure is a `CheckpointError` that
names the file and the member.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
import zipfile
import zlib

import numpy as np

from .ir import GradcError

MAX_TEXT = 1 << 16          # characters in a string field (a PCG64 state is ~200, MT19937 ~7000)
T_LIMIT = 2 ** 53           # t is converted to f64 in the update (k = t + 1, schedules)
SCALARS = ("t", "rng", "optimizer", "optimizer_config")


class TrainStepError(GradcError, ValueError):
    """A train step refused a call, a save or a load (read-only arrays, ...)."""


class CheckpointError(TrainStepError):
    """A file is not a checkpoint of this train step: the message names the file and field."""


# ---- writing --------------------------------------------------------------------------------
def write_atomic(path, members: dict) -> None:
    """Write `members` (name -> array) as an .npz at `path`, atomically and durably (see the
    module docstring).  A symbolic link is followed: its target is replaced.  The file keeps the
    mode of the one it replaces; a new file gets 0666 minus the umask, as `open` would give."""
    path = os.path.realpath(os.fspath(path))
    directory, base = os.path.split(path)
    try:
        mode = os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        mode = 0o666 & ~_umask()
    fd, tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **members)
            f.flush()
            if hasattr(os, "fchmod"):
                os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_directory(directory)


def _umask() -> int:
    """The process's umask, read without changing it (os.umask would, for every thread)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def _fsync_directory(directory: str) -> None:
    """Make the rename durable (POSIX: a directory's entries are synced through its fd)."""
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---- reading --------------------------------------------------------------------------------
def read(path, arrays: dict, optimizer, bit_generator) -> dict:
    """Read and validate the checkpoint at `path` for a step whose arrays are `arrays`
    (member name -> the array the member must match in dtype and shape), whose optimizer is
    `optimizer` and whose generator has bit generator `bit_generator`.  Returns
    {"arrays": {member: array}, "t": int, "rng": state dict, "lr": float}; changes nothing.
    Raises CheckpointError naming the file and the field."""
    where = os.fspath(path)

    def fail(msg):
        return CheckpointError(f"load: {where}: {msg}")
    try:
        archive = zipfile.ZipFile(where)
    except (zipfile.BadZipFile, EOFError, ValueError, IsADirectoryError) as e:
        raise fail(f"not a train-step checkpoint (not an .npz archive: {e})") from None
    with archive:
        infos = {}
        for info in archive.infolist():
            key = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
            if key in infos:
                raise fail(f"member {key!r} appears twice")
            infos[key] = info
        unknown = sorted(k for k in infos if k not in SCALARS and not k.startswith(("param/",
                                                                                    "state/")))
        missing = [k for k in SCALARS if k not in infos]
        if missing or unknown:
            raise fail("not a train-step checkpoint of this version: "
                       + "; ".join(([f"no {', '.join(map(repr, missing))}"] if missing else [])
                                   + ([f"unknown members {unknown}"] if unknown else [])))

        def member(key, check):
            try:
                return _member(archive, infos[key], check)
            except CheckpointError as e:
                raise fail(f"{key!r} {e}") from None
            except (zipfile.BadZipFile, EOFError, ValueError, OSError, zlib.error,
                    NotImplementedError, RuntimeError) as e:
                raise fail(f"{key!r} cannot be read ({type(e).__name__}: {e})") from None

        kind = _text(member("optimizer", _is_text))
        if kind != type(optimizer).__name__:
            raise fail(f"holds {kind} state; this step uses {type(optimizer).__name__}")
        lr = _hyperparameters(_json(member("optimizer_config", _is_text), "optimizer_config",
                                    fail), optimizer, fail)

        have = {k for k in infos if k.startswith(("param/", "state/"))}
        if have != set(arrays):
            raise fail(f"members {sorted(have - set(arrays))} extra and "
                       f"{sorted(set(arrays) - have)} missing compared with this step")
        loaded = {k: member(k, _like(dst)) for k, dst in arrays.items()}

        t = member("t", _is_integer)
        t = int(t)
        if not 0 <= t < T_LIMIT:
            raise fail(f"'t' (the number of updates taken) is {t}; it must be a non-negative "
                       f"integer below 2**53")
        state = _json(member("rng", _is_text), "rng", fail)
        scratch = type(bit_generator)()
        try:
            scratch.state = state
        except Exception as e:       # noqa: BLE001  (NumPy raises several kinds here)
            raise fail(f"'rng' is not a {type(bit_generator).__name__} generator state "
                       f"({type(e).__name__}: {e})") from None
    return {"arrays": loaded, "t": t, "rng": state, "lr": lr}


def _member(archive, info, check):
    """One .npy member: header checked by `check(dtype, shape)` (raises CheckpointError), then
    exactly the data that header describes."""
    fmt = np.lib.format
    with archive.open(info) as f:
        version = fmt.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = fmt.read_array_header_2_0(f)
        else:
            raise CheckpointError(f"has .npy format version {version}; expected 1.0 or 2.0")
        if dtype.hasobject:
            raise CheckpointError(f"holds Python objects ({dtype}); checkpoints hold numbers "
                                  "and text only (nothing is unpickled)")
        check(dtype, shape)
        count = math.prod(shape)
        data = f.read(count * dtype.itemsize)
        if len(data) != count * dtype.itemsize:
            raise CheckpointError("is truncated")
    a = np.frombuffer(data, dtype=dtype, count=count)
    return a.reshape(shape, order="F" if fortran else "C").copy()


def _like(dst):
    def check(dtype, shape):
        if dtype != dst.dtype or tuple(shape) != dst.shape:
            raise CheckpointError(f"is {dtype}{list(shape)}, this step has "
                                  f"{dst.dtype}{list(dst.shape)}")
    return check


def _is_text(dtype, shape):
    if dtype.kind != "U" or shape != () or dtype.itemsize > 4 * MAX_TEXT:
        raise CheckpointError(f"must be a string of at most {MAX_TEXT} characters, got "
                              f"{dtype}{list(shape)}")


def _is_integer(dtype, shape):
    if dtype.kind not in "iu" or shape != ():
        raise CheckpointError(f"(the number of updates taken) must be a non-negative integer "
                              f"scalar, got {dtype}{list(shape)}")


def _text(a) -> str:
    return str(a[()])


def _json(a, key, fail):
    try:
        return json.loads(_text(a))
    except (ValueError, RecursionError) as e:
        raise fail(f"{key!r} is not valid JSON ({type(e).__name__}: {e})") from None


def _hyperparameters(saved, optimizer, fail) -> float:
    """Check the saved hyper-parameters against the step's (all but the learning rate, which
    is a runtime value: the saved one is returned, to be restored)."""
    if not isinstance(saved, dict):
        raise fail(f"'optimizer_config' must be a JSON object, got {type(saved).__name__}")
    mine = optimizer.describe()
    mine.pop("optimizer", None)
    problems = []
    for k in sorted(set(mine) | set(saved)):
        if k == "lr":
            continue
        if k not in saved:
            problems.append(f"{k} missing (this step: {mine[k]!r})")
        elif k not in mine:
            problems.append(f"{k} unknown to {type(optimizer).__name__}")
        elif saved[k] != mine[k]:
            problems.append(f"{k} is {saved[k]!r} in the checkpoint, {mine[k]!r} in this step")
    lr = saved.get("lr")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr):
        problems.append(f"lr must be a finite number, got {lr!r}")
    if problems:
        raise fail(f"'optimizer_config' (the {type(optimizer).__name__} hyper-parameters) does "
                   f"not match this step: {'; '.join(problems)}")
    return float(lr)


__all__ = ["CheckpointError", "TrainStepError", "read", "write_atomic"]
