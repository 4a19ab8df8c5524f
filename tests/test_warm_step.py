"""A train step whose object is in the disk cache, built again in a new process (issue 17.2,
the warm start): the object is loaded, not emitted or optimized again, and the process loads
neither SymPy nor mpmath (compiler/lazy.py), nor SciPy's Python modules or numpy.ma.  Oracle:
the two-layer step written by hand in NumPy (forward, backward, SGD), two steps, compared with
the cold and the warm process."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N, D, H, C, LR = 5, 4, 3, 3, 0.5

CHILD = textwrap.dedent(f"""
    import json, sys
    import numpy as np
    import compiler
    from frontends import dsl
    from frontends.dsl import f64, i64

    def two_layer(X, y, W1, b1, W2, b2):
        h = dsl.tanh(X @ W1 + b1)
        return dsl.softmax_cross_entropy(h @ W2 + b2, y)

    rng = np.random.default_rng(7)
    params = {{"W1": rng.normal(size=({D}, {H})), "b1": rng.normal(size={H}),
              "W2": rng.normal(size=({H}, {C})), "b2": rng.normal(size={C})}}
    X, y = rng.normal(size=({N}, {D})), np.array([0, 2, 1, 2, 0])
    step = compiler.train_step(two_layer, params, {{"X": f64[{N}, {D}], "y": i64[{N}]}},
                               compiler.optim.SGD(lr={LR}), backend="llvm")
    losses = [float(step(X=X, y=y)) for _ in range(2)]
    (built,) = step._train.values()
    print(json.dumps({{"losses": losses, "params": {{k: v.tolist() for k, v in step.params.items()}},
                      "cached": built.kernel.cached, "emitted": built.kernel._source is not None,
                      "modules": [m for m in ("sympy", "mpmath", "numpy.ma", "scipy.linalg")
                                  if m in sys.modules]}}))
""")


def run(cache_dir) -> dict:
    env = dict(os.environ, GRADC_CACHE_DIR=str(cache_dir), PYTHONPATH=ROOT)
    r = subprocess.run([sys.executable, "-c", CHILD], env=env, cwd=ROOT, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def by_hand(steps: int = 2):
    """The same step in NumPy: loss before each update and the parameters after."""
    rng = np.random.default_rng(7)
    p = {"W1": rng.normal(size=(D, H)), "b1": rng.normal(size=H),
         "W2": rng.normal(size=(H, C)), "b2": rng.normal(size=C)}
    X, y = rng.normal(size=(N, D)), np.array([0, 2, 1, 2, 0])
    losses = []
    for _ in range(steps):
        h = np.tanh(X @ p["W1"] + p["b1"])
        s = h @ p["W2"] + p["b2"]
        e = np.exp(s - s.max(axis=1, keepdims=True))
        prob = e / e.sum(axis=1, keepdims=True)
        losses.append(-np.mean(np.log(prob[np.arange(N), y])))
        ds = prob.copy()
        ds[np.arange(N), y] -= 1
        ds /= N
        dh = ds @ p["W2"].T * (1 - h * h)
        grads = {"W2": h.T @ ds, "b2": ds.sum(0), "W1": X.T @ dh, "b1": dh.sum(0)}
        p = {k: p[k] - LR * grads[k] for k in p}
    return losses, p


def test_a_warm_train_step_loads_its_object_and_no_sympy(tmp_path):
    losses, params = by_hand()
    cold, warm = run(tmp_path), run(tmp_path)
    for res in (cold, warm):
        assert np.allclose(res["losses"], losses, rtol=1e-12, atol=1e-14), (res, losses)
        for k, v in params.items():
            assert np.allclose(res["params"][k], v, rtol=1e-12, atol=1e-14), k
        assert res["modules"] == [], res
    assert not cold["cached"] and cold["emitted"]
    assert warm["cached"] and not warm["emitted"]
    assert warm["losses"] == cold["losses"] and warm["params"] == cold["params"]
