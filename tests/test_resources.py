"""Resources: a compiled function called many times keeps a flat memory footprint (both
backends); the on-disk cache of native code is written atomically (two processes compiling the
same model at once both succeed) and a truncated or corrupted entry is rebuilt, not trusted."""
import glob
import json
import os
import subprocess
import sys
import textwrap
import time
import tracemalloc

import numpy as np
import pytest

from runtime import jit

import compiler
from frontends import dsl
from frontends.dsl import f64, i64

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def m_classifier(W, X, y):
    return dsl.softmax_cross_entropy(dsl.tanh(X @ W), y)


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc (Linux)")
@pytest.mark.parametrize("backend", ["numpy", "llvm"])
def test_many_calls_keep_a_flat_memory_footprint(backend):
    """21,000 calls with fresh argument arrays each time: the resident set may not grow by more
    than 2 MiB over 16,000 calls, and Python-visible allocations (NumPy buffers included: NumPy
    reports them to tracemalloc) by more than 64 KiB over 5,000 more."""
    dg = compiler.grad(dsl.trace(m_classifier, W=f64[4, 3], X=f64[16, 4], y=i64[16]),
                       wrt=["W"])
    fn = compiler.compile(dg, backend=backend)
    rng = np.random.default_rng(0)
    batches = [(rng.normal(size=(4, 3)), rng.normal(size=(16, 4)), rng.integers(0, 3, 16))
               for _ in range(8)]

    def calls(n):
        for k in range(n):
            W, X, y = batches[k % len(batches)]
            out = fn(W=W.copy(), X=X.copy(), y=y.copy())
        return out

    first = calls(304)                        # warm up: caches, buffers, lazily built state
    rss0 = _rss()                             # native memory too (LLVM buffers, ctypes)
    calls(16000)
    grown = _rss() - rss0
    assert grown < 2 * 2 ** 20, f"{backend}: resident set grew by {grown} bytes"
    tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        last = calls(5000)
        now, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert now - base < 64 * 1024, f"{backend}: grew by {now - base} bytes over 5000 calls"
    # the same batch (7) gives the same answer after all those calls, and the reference's
    W, X, y = batches[7]
    assert np.array_equal(first["dW"], last["dW"])
    assert np.allclose(last["dW"], compiler.interpret(dg, W=W, X=X, y=y)["dW"], rtol=1e-12)


# ---- the disk cache ---------------------------------------------------------------------------
CHILD = textwrap.dedent("""
    import json, os, sys, time
    import numpy as np
    go = sys.argv[1]
    while not os.path.exists(go):        # start together: both compile at the same moment
        time.sleep(0.002)
    import compiler
    from frontends import dsl
    from frontends.dsl import f64
    def model(w, x):
        return dsl.sigmoid(w[0] * x[0] + w[1] * x[1] + w[2])
    fn = compiler.compile(compiler.grad(dsl.trace(model, w=f64[3], x=f64[2])), backend="llvm")
    out = fn(w=np.array([2., -3., -3.]), x=np.array([-1., -2.]))
    from runtime import cache
    print(json.dumps([float(out["out"]), out["dw"].tolist(), fn.cached, cache.path_for(fn.key)]))
""")


def _spawn(cache_dir, go):
    env = dict(os.environ, GRADC_CACHE_DIR=str(cache_dir), PYTHONPATH=ROOT)
    return subprocess.Popen([sys.executable, "-c", CHILD, str(go)], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(p):
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    value, dw, cached, path = json.loads(out.strip().splitlines()[-1])
    return value, np.array(dw), cached, path


def _check_neuron(value, dw):
    s = 1 / (1 + np.exp(-(2 * -1 + -3 * -2 - 3)))          # the lecture's neuron: 0.731
    assert np.isclose(value, s) and np.allclose(dw, np.array([-1, -2, 1]) * s * (1 - s))


def test_two_processes_compiling_at_once_both_succeed_then_a_bad_entry_is_rebuilt(tmp_path,
                                                                                 monkeypatch):
    cache_dir, go = tmp_path / "cache", tmp_path / "go"
    procs = [_spawn(cache_dir, go) for _ in range(2)]
    time.sleep(0.2)
    go.touch()
    results = [_finish(p) for p in procs]
    for value, dw, _, _ in results:
        _check_neuron(value, dw)
    path = results[0][3]
    assert results[1][3] == path and os.path.exists(path)
    entries = glob.glob(str(cache_dir / "**" / "*"), recursive=True)
    memo = jit.target_memo_key()       # the remembered target key: the other entry
    entries = [e for e in entries if memo is None or not e.endswith(memo + ".o")]
    assert [e for e in entries if os.path.isfile(e)] == [path], entries   # no temp files left
    good = open(path, "rb").read()

    from runtime import cache
    for damage in (good[: len(good) // 2], good[:-1] + bytes([good[-1] ^ 0xFF]), b""):
        with open(path, "wb") as f:
            f.write(damage)
        value, dw, cached, again = _finish(_spawn(cache_dir, go))
        _check_neuron(value, dw)
        assert again == path and not cached             # rebuilt, not loaded from the bad file
        assert open(path, "rb").read() == good          # and the entry is whole again
    monkeypatch.setenv("GRADC_CACHE_DIR", str(cache_dir))
    assert cache.get(os.path.basename(path)[:-2]) is not None      # the entry reads back whole
    value, dw, cached, _ = _finish(_spawn(cache_dir, go))   # a good entry is used
    _check_neuron(value, dw)
    assert cached
