"""Adversarial checks of gradc's own object loader (runtime/loader.py, runtime/jit.py's warm
path) and of the norm layers' extreme-range arithmetic (compiler/builder_conv.py _normalized):
each test here failed on the code before its fix, or is a cheap guard of a case no other test
covers.  Oracles: MCJIT bit for bit, the numpy backend, mpmath, central differences."""
from __future__ import annotations

import ctypes
import gc
import json
import os
import signal
import subprocess
import sys
import threading
import time

import mpmath as mp
import numpy as np
import pytest

import compiler
from compiler.builder_conv import running_stats
from compiler.ir import ShapeError
from compiler.ops import OPS
from frontends import dsl
from frontends.dsl import f32, f64
from graphs import OP_SAMPLES, op_graph, op_inputs
from runtime import cache, jit, loader

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
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


def _fork_while_held(lock, child) -> int | None:
    """Fork while another thread holds `lock`; the child runs `child()` (True: exit 0) and
    exits.  The child's exit code, or None when it hung (killed after 60 s)."""
    held, release = threading.Event(), threading.Event()

    def hold():
        with lock:
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
                code = 0 if child() else 2
            finally:
                os._exit(code)
        status = _wait(pid, 60)
    finally:
        release.set()
        t.join()
    return None if status is None else os.waitstatus_to_exitcode(status)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_child_forked_while_another_thread_compiles_can_compile(tmp_path, monkeypatch):
    """jit._lock is held for the whole of a compile (seconds): a child forked meanwhile
    inherited it held by a thread that does not exist there, and its first compile or load
    waited forever.  Here a thread holds the lock across the fork."""
    monkeypatch.setenv("GRADC_CACHE_DIR", str(tmp_path))
    g = compiler.grad(dsl.trace(lambda x, w: dsl.sum(dsl.tanh(x @ w)), x=f64[3, 4], w=f64[4, 2]))
    want = compiler.compile(g, backend="llvm")(x=np.ones((3, 4)), w=np.ones((4, 2)))["dw"]

    def child():
        fn = compiler.compile(g, backend="llvm")
        return np.array_equal(fn(x=np.ones((3, 4)), w=np.ones((4, 2)))["dw"], want)
    code = _fork_while_held(jit._lock, child)
    assert code is not None, "the forked child hung on jit._lock"
    assert code == 0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_child_forked_while_another_thread_builds_a_size_can_call(tmp_path, monkeypatch):
    """A symbolic function's lock is held while a new set of sizes is built: a child forked
    meanwhile called it at a new size and waited forever (compiler/sized_kernel.py now gives
    a child fresh locks).  Here a thread holds that lock across the fork."""
    monkeypatch.setenv("GRADC_CACHE_DIR", str(tmp_path))
    g = compiler.grad(dsl.trace(lambda x, w: dsl.sum(dsl.tanh(x @ w)), x=f64["N", 4],
                                w=f64[4, 2]))
    fn = compiler.compile(g, backend="llvm")
    fn(x=np.ones((3, 4)), w=np.ones((4, 2)))
    want = 5 * np.ones((4, 2)) * (1 - np.tanh(4.0) ** 2)

    def child():
        return np.allclose(fn(x=np.ones((5, 4)), w=np.ones((4, 2)))["dw"], want, rtol=1e-12)
    code = _fork_while_held(fn._lock, child)
    assert code is not None, "the forked child hung on the function's lock"
    assert code == 0


def test_a_tampered_target_key_memo_is_refused_and_llvm_asked(tmp_path, monkeypatch):
    """The target key remembered under the host's identity is a cache entry like any other:
    a byte changed in it (say, another CPU's features written in) fails its keyed hash, and
    the key is LLVM's own again; only this user's secret writes one that is believed."""
    monkeypatch.setenv("GRADC_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(jit, "_target", [])
    if jit.target_memo_key() is None:
        pytest.skip("no host identity (no /proc/cpuinfo)")
    real = jit.target_key()
    path = cache.path_for(jit.target_memo_key())
    data = bytearray(open(path, "rb").read())
    at = data.index(b"; llvm ")
    data[at + 2:at + 6] = b"LLVM"                       # a forged payload, the old digest
    with open(path, "wb") as f:
        f.write(bytes(data))
    monkeypatch.setattr(jit, "_target", [])
    with pytest.warns(cache.CacheWarning, match="keyed hash does not match"):
        assert jit.target_key() == real
    monkeypatch.setattr(jit, "_target", [])
    assert cache.get(jit.target_memo_key()) == (real.encode(), [])   # rewritten, trusted


def _maps_count() -> int:
    with open("/proc/self/maps") as f:
        return sum(1 for _ in f)


MLP = dict(x=f64[16, 20], w=f64[20, 12])      # a BLAS call (an external) and libm (tanh)


def _mlp_fn():
    g = compiler.grad(dsl.trace(lambda x, w: dsl.sum(dsl.tanh(x @ w)), **MLP))
    return compiler.compile(g, backend="llvm")


def _mlp_args():
    rng = np.random.default_rng(4)
    return dict(x=rng.standard_normal((16, 20)), w=rng.standard_normal((20, 12)))


@pytest.mark.skipif(not loader.supported_host(), reason="x86-64 Linux only")
def test_loading_and_dropping_an_object_many_times_leaves_no_mapping(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADC_CACHE_DIR", str(tmp_path))
    fn = _mlp_fn()
    obj, ext = cache.get(fn.key)
    symbol, want = fn.symbol, fn(**_mlp_args())["dw"]
    del fn
    gc.collect()
    before = _maps_count()
    for _ in range(400):
        code = jit.load(obj, symbol, ext)
        assert code.native
        code.function(symbol, ctypes.c_int64, ctypes.c_void_p)
        del code
    gc.collect()
    assert jit.loaded(symbol) is None and _maps_count() <= before + 5   # 400 leaked: 800+
    assert np.array_equal(_mlp_fn()(**_mlp_args())["dw"], want)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_calls_the_natively_loaded_kernel(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADC_CACHE_DIR", str(tmp_path))
    fn = _mlp_fn()
    want = fn(**_mlp_args())["dw"]
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = 0 if np.array_equal(fn(**_mlp_args())["dw"], want) else 2
        finally:
            os._exit(code)
    status = _wait(pid, 60)
    assert status is not None and os.waitstatus_to_exitcode(status) == 0


WARM_CHILD = """
import json, sys
import numpy as np
import compiler
from frontends import dsl
from compiler.ir import ShapeError
from compiler.ops import OPS
from frontends.dsl import f32, f64
g = compiler.grad(dsl.trace(lambda x, w: dsl.sum(dsl.tanh(x @ w)), x=f64[16, 20], w=f64[20, 12]))
fn = compiler.compile(g, backend="llvm")
rng = np.random.default_rng(4)
args = dict(x=rng.standard_normal((16, 20)), w=rng.standard_normal((20, 12)))
before = fn(**args)["dw"].tolist()
asm, src = fn.asm, fn.source
print(json.dumps({"cached": fn.cached, "native": fn._code.native, "before": before,
                  "after": fn(**args)["dw"].tolist(), "asm": "ret" in asm,
                  "source": "define" in src}))
"""


@pytest.mark.skipif(not loader.supported_host(), reason="x86-64 Linux only")
def test_asm_and_source_of_a_warm_loaded_kernel(tmp_path):
    """A warm process links the object without LLVM; asking for fn.asm / fn.source then
    loads LLVM and emits, and the kernel still computes the same."""
    env = dict(os.environ, GRADC_CACHE_DIR=str(tmp_path), PYTHONPATH=ROOT)
    runs = []
    for _ in range(2):
        r = subprocess.run([sys.executable, "-c", WARM_CHILD], env=env, cwd=ROOT,
                           capture_output=True, text=True, timeout=180)
        assert r.returncode == 0, r.stderr[-2000:]
        runs.append(json.loads(r.stdout.strip().splitlines()[-1]))
    cold, warm = runs
    assert warm["cached"] and warm["native"] and warm["asm"] and warm["source"]
    assert cold["before"] == cold["after"] == warm["before"] == warm["after"]


@pytest.mark.parametrize("value", ["0", " 0", "0\n", "no", "off"])
def test_native_loader_off_switch_reads_like_the_worker_switch(value, monkeypatch):
    """GRADC_NATIVE_LOADER=off (or ' 0', as GRADC_JIT_WORKER takes them) linked natively
    anyway: only the exact string '0' switched the loader off."""
    monkeypatch.setenv("GRADC_NATIVE_LOADER", value)
    assert not jit._native()
    monkeypatch.setenv("GRADC_NATIVE_LOADER", "1")
    assert jit._native() is loader.supported_host()


@pytest.mark.parametrize("norm", ["layer_norm", "batch_norm"])
def test_eps_beyond_the_float_range_of_x_is_refused(norm):
    """eps = 1e39 is finite as a Python float, but inf in f32: z came out 0 where
    (x − μ)/√(σ² + 1e39) is about 1e-20 (a silent wrong number)."""
    fn = getattr(dsl, norm)
    with pytest.raises(ShapeError, match="eps must be a finite number"):
        dsl.trace(lambda x, g, b: fn(x, g, b, eps=1e39), x=f32[2, 3], g=f32[3], b=f32[3])
    dsl.trace(lambda x, g, b: fn(x, g, b, eps=1e38), x=f32[2, 3], g=f32[3], b=f32[3])
    dsl.trace(lambda x, g, b: fn(x, g, b, eps=1e39), x=f64[2, 3], g=f64[3], b=f64[3])


def _op_graph_for_loading(op):
    case = OP_SAMPLES[op].cases[-1]
    g = op_graph(op, case, "f64")
    wrt = [v.name for v in g.inputs if v.type.is_float and v.name != "c"]
    if wrt and "loss" in g.outputs and any(r is not None for r in OPS[op].gate):
        g = compiler.grad(g, wrt=wrt, of="loss")
    return g, op_inputs(op, case, op_graph(op, case, "f64"), np.random.default_rng(8), "f64")


@pytest.mark.skipif(not loader.supported_host(), reason="x86-64 Linux only")
@pytest.mark.parametrize("op", sorted(OP_SAMPLES))
def test_every_op_loaded_natively_computes_what_mcjit_computes(op, tmp_path, monkeypatch):
    """One sample per op of the table (its gradient where it has one): gradc's loader links
    it (no MCJIT fallback) and the results equal MCJIT's link of the same object bit for bit."""
    monkeypatch.setenv("GRADC_CACHE_DIR", str(tmp_path))
    g, ins = _op_graph_for_loading(op)
    monkeypatch.setenv("GRADC_NATIVE_LOADER", "1")
    fn = compiler.compile(g, backend="llvm")
    assert fn._code.native
    got = {k: np.array(v) for k, v in fn(**ins).items()}
    del fn
    gc.collect()
    monkeypatch.setenv("GRADC_NATIVE_LOADER", "0")
    fn = compiler.compile(g, backend="llvm")
    assert fn.cached and not fn._code.native
    want = fn(**ins)
    for k in want:
        assert np.array_equal(got[k], want[k], equal_nan=True), k
