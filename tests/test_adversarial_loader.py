"""Adversarial checks of gradc's own object loader (runtime/loader.py, runtime/jit.py's warm
path) and of the norm layers' extreme-range arithmetic (compiler/builder_conv.py _normalized):
each test here failed on the code before its fix, or is a cheap guard of a case no other test
covers.  Oracles: MCJIT bit for bit, the numpy backend, mpmath, central differences."""
from __future__ import annotations

import ctypes
import os
import signal
import threading
import time

import mpmath as mp
import numpy as np
import pytest

import compiler
from compiler.builder_conv import running_stats
from frontends import dsl
from frontends.dsl import f64
from runtime import jit, loader

BACKENDS = ("numpy", "llvm")
MAX = float(np.finfo(np.float64).max)


# ---- norm layers ------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_batch_mean_is_finite_when_the_row_spans_the_range(backend):
    """The batch mean μ of [-0.9, 0.9, 0.9, 0.9]·MAX is 0.45·MAX; it was computed as
    x₀ + (μ − x₀) with μ − x₀ = 1.35·MAX: inf, so the running mean became inf for good."""
    def model(x, gamma, beta):
        return dsl.sum(dsl.batch_norm(x, gamma, beta, momentum=0.5, name="bn"))
    with running_stats():
        g = dsl.trace(model, x=f64[4, 1], gamma=f64[1], beta=f64[1])
    x = np.array([[-0.9], [0.9], [0.9], [0.9]]) * MAX
    with np.errstate(over="ignore", invalid="ignore"):
        out = compiler.compile(g, backend=backend)(
            x=x, gamma=np.ones(1), beta=np.zeros(1), bn_running_mean=np.zeros(1),
            bn_running_var=np.ones(1))
    mp.mp.dps = 50
    want = float(mp.fsum(mp.mpf(float(v)) for v in x[:, 0]) / 4 * mp.mpf(0.5))
    assert out["bn_running_mean_next"][0] == pytest.approx(want, rel=1e-15)
    assert out["bn_running_var_next"][0] == np.inf          # σ² is over MAX: inf is right


# ---- the loader -------------------------------------------------------------------------------
@pytest.mark.skipif(not loader.supported_host(), reason="x86-64 Linux only")
@pytest.mark.parametrize("name", ["_handle", "_func_flags_", "_name", "_FuncPtr", "__init__",
                                  "__class__", "_func_restype_"])
def test_an_external_named_like_a_ctypes_attribute_is_not_a_process_symbol(name):
    """process_symbol read getattr(CDLL(None), name): `_handle` resolved to the dlopen handle,
    `_func_flags_` to address 1 (a call there is a SIGSEGV), `_FuncPtr` raised ArgumentError
    (not Unsupported, so no MCJIT fallback).  Only dlsym answers."""
    assert loader.process_symbol(name) == 0
    assert loader.process_symbol("memset") == ctypes.cast(ctypes.CDLL(None).memset,
                                                          ctypes.c_void_p).value


def _wait(pid: int, seconds: float):
    """The child's exit status, or None after `seconds` (the child is then killed)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return None


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_child_forked_while_another_thread_compiles_can_compile(tmp_path, monkeypatch):
    """jit._lock is held for the whole of a compile (seconds): a child forked meanwhile
    inherited it held by a thread that does not exist there, and its first compile or load
    waited forever.  Here a thread holds the lock across the fork."""
    monkeypatch.setenv("GRADC_CACHE_DIR", str(tmp_path))
    g = compiler.grad(dsl.trace(lambda x, w: dsl.sum(dsl.tanh(x @ w)), x=f64[3, 4], w=f64[4, 2]))
    want = compiler.compile(g, backend="llvm")(x=np.ones((3, 4)), w=np.ones((4, 2)))["dw"]
    held, release = threading.Event(), threading.Event()

    def hold():
        with jit._lock:
            held.set()
            release.wait(30)
    t = threading.Thread(target=hold)
    t.start()
    held.wait(10)
    try:
        pid = os.fork()
        if pid == 0:                                   # the child: report by exit status
            code = 1
            try:
                fn = compiler.compile(g, backend="llvm")
                got = fn(x=np.ones((3, 4)), w=np.ones((4, 2)))["dw"]
                code = 0 if np.array_equal(got, want) else 2
            finally:
                os._exit(code)
        status = _wait(pid, 60)
    finally:
        release.set()
        t.join()
    assert status is not None, "the forked child hung on jit._lock"
    assert os.waitstatus_to_exitcode(status) == 0
