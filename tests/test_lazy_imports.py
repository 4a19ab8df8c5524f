"""`import compiler, frontends.dsl` loads no SymPy, mpmath or llvmlite.binding (issue 17.2:
the import cost; compiler/lazy.py), and everything that needs them still works after: the
numpy backend runs without any of them, the SymPy check of a model that uses the op records'
SymPy meanings (stop_gradient's SymPy function, a comparison, max, where, a reduction) passes,
and the llvm backend agrees with the numpy one.  Oracles: hand-derived values; the numpy
backend against the llvm one; SymPy itself (the check).  Each child is a fresh interpreter."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEAVY = ("sympy", "mpmath", "llvmlite.binding", "scipy")


def child(code: str, tmp_path) -> dict:
    env = dict(os.environ, GRADC_CACHE_DIR=str(tmp_path), PYTHONPATH=ROOT)
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_import_loads_no_sympy_and_checks_still_work(tmp_path):
    got = child(f"""
        import json, sys
        import numpy as np
        import compiler
        from frontends import dsl
        from frontends.dsl import f64
        heavy = {HEAVY!r}
        seen = {{"import": [m for m in heavy if m in sys.modules]}}

        def f(w, x):
            h = dsl.stop_gradient(w[0]) * x[0] + dsl.maximum(w[1], x[1])
            return dsl.sum(dsl.where(x > 0.0, h * w, w * w))

        fg = dsl.trace(f, w=f64[2], x=f64[2])
        g = compiler.grad(fg)
        w, x = np.array([0.5, -2.0]), np.array([1.5, 0.25])
        out = compiler.compile(g, backend="numpy")(w=w, x=x)
        seen["numpy"] = [m for m in heavy if m in sys.modules]
        report = compiler.check_against_sympy(fg)
        seen["check"] = [m for m in heavy if m in sys.modules]
        llvm = compiler.compile(g, backend="llvm")(w=w, x=x)
        print(json.dumps({{"seen": seen, "ok": bool(report.ok), "out": float(out["out"]),
                          "dw": out["dw"].tolist(), "dx": out["dx"].tolist(),
                          "llvm_dw": llvm["dw"].tolist(), "llvm_out": float(llvm["out"])}}))
    """, tmp_path)
    assert got["seen"]["import"] == [], got["seen"]
    assert got["seen"]["numpy"] == [], got["seen"]        # the numpy backend needs none of them
    assert "sympy" in got["seen"]["check"] and "mpmath" in got["seen"]["check"]
    assert got["ok"]
    # by hand: both x > 0, h = sg(w0)·x0 + max(w1, x1) = 0.75 + 0.25 = 1, out = h·(w0 + w1)
    # d/dw0 = h + (w0 + w1)·0 (stopped) = 1; d/dw1 = h + (w0 + w1)·[w1 > x1 = no] = 1
    assert abs(got["out"] - (0.5 - 2.0)) < 1e-12
    assert got["dw"] == [1.0, 1.0]
    # d/dx0 = w0·(w0 + w1) = -0.75; d/dx1 = (w0 + w1)·[x1 > w1] = -1.5
    assert got["dx"] == [-0.75, -1.5]
    assert got["llvm_dw"] == got["dw"] and got["llvm_out"] == got["out"]


def test_first_use_from_many_threads_imports_once(tmp_path):
    """Eight threads reading the lazy SymPy at once all get SymPy's own objects."""
    got = child("""
        import json, sys, threading
        import compiler
        from compiler.lazy import sympy as sp, loaded
        before = loaded("sympy")
        seen, go = [], threading.Barrier(8)

        def read():
            go.wait()
            seen.append(sp.Integer)
        ts = [threading.Thread(target=read) for _ in range(8)]
        [t.start() for t in ts]
        [t.join() for t in ts]
        import sympy
        print(json.dumps({"before": before, "same": all(s is sympy.Integer for s in seen),
                          "n": len(seen), "after": loaded("sympy")}))
    """, tmp_path)
    assert got == {"before": False, "same": True, "n": 8, "after": True}


def test_a_wrong_attribute_is_sympys_own_error():
    """A misspelt name is an AttributeError naming it (from SymPy), and dunder probes
    (copy, pickle, inspect) neither import nor invent attributes."""
    from compiler.lazy import LazyModule
    mod = LazyModule("json")
    try:
        mod.dumpz
    except AttributeError as e:
        assert "dumpz" in str(e)
    else:
        raise AssertionError("no error for a missing attribute")
    assert not hasattr(LazyModule("no_such_module_h10"), "__wrapped__")
    assert mod.dumps([1]) == "[1]"
