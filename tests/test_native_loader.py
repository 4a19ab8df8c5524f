"""gradc's own object loader (runtime/loader.py), which links cached objects on x86-64 Linux
without LLVM: the code it loads computes exactly what MCJIT's copy of the same object computes
(oracle: MCJIT itself, bit for bit, and the numpy backend), its mappings are never writable
and executable at once and go away with the code, and what it does not handle is refused
(`Unsupported`: the caller uses MCJIT) instead of guessed.  The target key it relies on
(`jit.target_key` read from the cache under the host's identity) equals LLVM's own."""
from __future__ import annotations

import gc
import json
import os
import struct
import subprocess
import sys
import threading

import numpy as np
import pytest

import compiler
from frontends import dsl
from frontends.dsl import f32, f64, i64
from runtime import cache, elf, jit, loader

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.skipif(not loader.supported_host(), reason="x86-64 Linux only")


def _mlp(X, y, W1, b1, W2):
    h = dsl.tanh(X @ W1 + b1)
    return dsl.softmax_cross_entropy(dsl.relu(h) @ W2, y)


def _norm(x, w):
    m = dsl.mean(x * w)
    return dsl.sum(dsl.exp(-(x - m) ** 2) + dsl.log1p(w * w)) / dsl.sqrt(dsl.sum(w * w) + 1.0)


MODELS = {
    "mlp f64": (_mlp, dict(X=f64[7, 5], y=i64[7], W1=f64[5, 6], b1=f64[6], W2=f64[6, 3])),
    "mlp f32": (_mlp, dict(X=f32[7, 5], y=i64[7], W1=f32[5, 6], b1=f32[6], W2=f32[6, 3])),
    "big mlp": (_mlp, dict(X=f64[64, 70], y=i64[64], W1=f64[70, 80], b1=f64[80],
                           W2=f64[80, 10])),          # BLAS calls (an external symbol)
    "libm": (_norm, dict(x=f64[33], w=f64[33])),
}


def _args(specs, seed=0):
    rng = np.random.default_rng(seed)
    out = {}
    for name, t in specs.items():
        if t.dtype == "i64":
            out[name] = rng.integers(0, 3, t.shape).astype(np.int64)
        else:
            out[name] = rng.normal(size=t.shape).astype(np.float32 if t.dtype == "f32"
                                                         else np.float64)
    return out


def _build(model, specs, monkeypatch, native: bool):
    monkeypatch.setenv("GRADC_NATIVE_LOADER", "1" if native else "0")
    g = compiler.grad(dsl.trace(model, **specs))
    fn = compiler.compile(g, backend="llvm")
    assert fn._code.native is native
    return fn


@pytest.mark.parametrize("name", MODELS)
def test_native_load_computes_what_mcjit_computes(name, tmp_path, monkeypatch):
    monkeypatch.setenv("GRADC_CACHE_DIR", str(tmp_path))
    model, specs = MODELS[name]
    args = _args(specs)
    native = _build(model, specs, monkeypatch, True)
    got = native(**args)
    del native
    gc.collect()                       # the native Code is gone: the next load is MCJIT's
    mcjit = _build(model, specs, monkeypatch, False)
    assert mcjit.cached                # the same object, from the cache
    want = mcjit(**args)
    ref = compiler.compile(compiler.grad(dsl.trace(model, **specs)), backend="numpy")(**args)
    for k in want:
        assert np.array_equal(got[k], want[k]), k          # bit for bit: the same machine code
        tol = 1e-4 if "f32" in name else 1e-10
        np.testing.assert_allclose(got[k], ref[k], rtol=tol, atol=tol)


def _maps():
    with open("/proc/self/maps") as f:
        return [ln.split() for ln in f]


def test_mappings_are_never_writable_and_executable_and_are_freed(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADC_CACHE_DIR", str(tmp_path))
    model, specs = MODELS["big mlp"]
    fn = _build(model, specs, monkeypatch, True)
    image = fn._code._image
    lo, hi = image.base, image.base + image.size
    mine = [m for m in _maps() if int(m[0].split("-")[0], 16) < hi
            and int(m[0].split("-")[1], 16) > lo]
    assert mine and not any("w" in m[1] and "x" in m[1] for m in mine), mine
    assert any("x" in m[1] for m in mine)                  # the code pages
    fn(**_args(specs))
    del fn, image, mine
    gc.collect()
    assert not any(int(m[0].split("-")[0], 16) < hi and int(m[0].split("-")[1], 16) > lo
                   and m[1] != "---p" for m in _maps())


def _object(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADC_CACHE_DIR", str(tmp_path))
    model, specs = MODELS["big mlp"]
    fn = _build(model, specs, monkeypatch, True)
    obj, ext = cache.get(fn.key)
    return fn, obj


def _with_relocation_type(obj: bytes, new_type: int) -> bytes:
    parsed = elf.parse(obj, 62)
    b = bytearray(obj)
    e_shoff = struct.unpack_from("<Q", b, 0x28)[0]
    for i, s in enumerate(parsed.sections):
        if s.type == 4 and s.size:                    # the first RELA entry's type
            struct.pack_into("<I", b, s.offset + 8, new_type)
            return bytes(b)
    raise AssertionError(f"no relocation in the object ({e_shoff})")


@pytest.mark.parametrize("kind", [9, 10, 11, 41])    # GOTPCREL, 32, 32S, GOTPCRELX
def test_relocation_types_it_does_not_apply_are_refused_not_guessed(kind, tmp_path,
                                                                    monkeypatch):
    fn, obj = _object(tmp_path, monkeypatch)
    bad = _with_relocation_type(obj, kind)
    with pytest.raises(loader.Unsupported, match=f"relocation type {kind}"):
        loader.load(bad, elf.parse(bad, 62), jit._resolve)


def test_an_external_the_process_lacks_is_refused(tmp_path, monkeypatch):
    fn, obj = _object(tmp_path, monkeypatch)
    parsed = elf.parse(obj, 62)
    assert elf.global_names(parsed)[1]                 # it has externals (BLAS, memset)
    with pytest.raises(loader.Unsupported, match="external symbol"):
        loader.load(obj, parsed, lambda name: 0)
    assert loader.process_symbol("no_such_symbol_in_any_library_gradc") == 0
    assert loader.process_symbol("memset") != 0


def test_threads_loading_one_object_share_one_code(tmp_path, monkeypatch):
    fn, obj = _object(tmp_path, monkeypatch)
    symbol, want = fn.symbol, fn(**_args(MODELS["big mlp"][1]))
    code = fn._code
    got, errors = [], []

    def work():
        try:
            got.append(jit.load(obj, symbol, []))
        except Exception as e:   # reported below
            errors.append(e)
    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and all(c is code for c in got)
    assert np.array_equal(fn(**_args(MODELS["big mlp"][1]))["out"], want["out"])


def test_remembered_target_key_is_llvms_own(tmp_path):
    """Two fresh processes: the first asks LLVM and remembers, the second reads the key back
    without loading llvmlite.binding, and it is the key LLVM gives."""
    code = ("import json, sys; from runtime import jit; k = jit.target_key(); "
            "b = 'llvmlite.binding' in sys.modules; "
            "print(json.dumps({'key': k, 'llvm_loaded': b, 'llvm': jit._llvm_target_key()}))")
    env = dict(os.environ, GRADC_CACHE_DIR=str(tmp_path), PYTHONPATH=ROOT)
    runs = []
    for _ in range(2):
        r = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 0, r.stderr[-2000:]
        runs.append(json.loads(r.stdout.strip().splitlines()[-1]))
    first, second = runs
    assert first["llvm_loaded"] and not second["llvm_loaded"]
    assert first["key"] == first["llvm"] == second["key"] == second["llvm"]
    assert jit.host_identity() and "flags=" in jit.host_identity() or "Features=" in \
        jit.host_identity()


def test_damaged_objects_are_refused_or_loaded_never_a_crash(tmp_path, monkeypatch):
    """3000 random byte flips and truncations of a real object, each parsed and linked (never
    called): an ObjectError, an Unsupported, or an image that unmaps cleanly."""
    fn, obj = _object(tmp_path, monkeypatch)
    rng = np.random.default_rng(17)
    outcomes = {"refused": 0, "unsupported": 0, "loaded": 0}
    for _ in range(3000):
        b = bytearray(obj)
        for _ in range(rng.integers(1, 4)):
            lo = [0, max(0, len(b) - 3000)][rng.integers(0, 2)]
            b[rng.integers(lo, len(b) if lo else 64)] = rng.integers(0, 256)
        if rng.random() < 0.2:
            b = b[: rng.integers(0, len(b))]
        try:
            parsed = elf.parse(bytes(b), 62)
        except elf.ObjectError:
            outcomes["refused"] += 1
            continue
        try:
            loader.load(bytes(b), parsed, jit._resolve).close()
            outcomes["loaded"] += 1
        except (loader.Unsupported, MemoryError):
            outcomes["unsupported"] += 1
    assert outcomes["refused"] > 300 and outcomes["loaded"] > 100, outcomes
