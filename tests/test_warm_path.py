"""What a new process does to run a kernel whose object is in the disk cache: it loads the
object without emitting IR, and loads nothing it does not need: not numpy.ma (~15 ms to
import; checking arguments for masked arrays does not need it: none exists unless numpy.ma was
imported), not SciPy's Python modules (BLAS comes from its bundled library), and on x86-64
Linux not llvmlite.binding (runtime/loader.py links the object; the target key is remembered).  Oracle: the
lecture neuron's hand-derived values, in two fresh processes sharing one private cache."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np

from runtime import loader

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = textwrap.dedent("""
    import json, sys
    import numpy as np
    import compiler
    from frontends import dsl
    from frontends.dsl import f64
    def neuron(w, x):
        return dsl.sigmoid(w[0] * x[0] + w[1] * x[1] + w[2])
    fn = compiler.compile(compiler.grad(dsl.trace(neuron, w=f64[3], x=f64[2])), backend="llvm")
    out = fn(w=np.array([2., -3., -3.]), x=[-1., -2.])    # a list goes through the checks
    print(json.dumps({"out": float(out["out"]), "dw": out["dw"].tolist(), "cached": fn.cached,
                      "emitted": fn._source is not None,
                      "modules": [m for m in ("numpy.ma", "scipy.linalg") if m in sys.modules],
                      "llvm": "llvmlite.binding" in sys.modules, "native": fn._code.native}))
""")


def run(cache_dir) -> dict:
    env = dict(os.environ, GRADC_CACHE_DIR=str(cache_dir), PYTHONPATH=ROOT)
    r = subprocess.run([sys.executable, "-c", CHILD], env=env, cwd=ROOT, capture_output=True,
                       text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_a_cache_hit_in_a_new_process_loads_only_what_it_runs(tmp_path):
    s = 1 / (1 + np.exp(-1.0))                 # σ(2·-1 + -3·-2 - 3) = σ(1)
    cold, warm = run(tmp_path), run(tmp_path)
    for res in (cold, warm):
        assert np.isclose(res["out"], s)
        assert np.allclose(res["dw"], s * (1 - s) * np.array([-1., -2., 1.]))
        assert res["modules"] == [], res
    assert not cold["cached"] and cold["emitted"]
    assert warm["cached"] and not warm["emitted"]
    if loader.supported_host():        # gradc's own loader: the warm process never loads LLVM
        assert cold["llvm"] and cold["native"]
        assert warm["native"] and not warm["llvm"], warm


def test_code_generator_sources_are_the_files_glob_finds(tmp_path):
    """The cache key's code generator sources (read without glob) are exactly the files glob
    matches for each pattern, here and in a tree with a hidden file and a near miss."""
    import glob
    from runtime import cache

    def by_glob(root):
        return sorted({os.path.relpath(f, root) for p in cache._CODEGEN_GLOBS
                       for f in glob.glob(os.path.join(root, p))})

    def ours(root):
        return sorted({f for p in cache._CODEGEN_GLOBS for f in cache._matching(root, p)})
    assert ours(ROOT) == by_glob(ROOT) and "compiler/codegen/llvm_emit.py" in ours(ROOT)
    for rel in ("compiler/codegen/llvm_x.py", "compiler/codegen/.llvm_hidden.py",
                "compiler/codegen/llvm_y.pyc", "compiler/codegen/numpy_emit.py",
                "compiler/ops/a.py", "runtime/jit.py"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("")
    assert ours(tmp_path) == by_glob(tmp_path) == [
        "compiler/codegen/llvm_x.py", "compiler/ops/a.py", "runtime/jit.py"]
