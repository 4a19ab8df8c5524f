"""Smoke test of the benchmark suite (benchmarks/run.py, report.py): the tiny configuration,
gradc and hand-written NumPy only (no peers), a few milliseconds of timing per row.

Oracles: the hand-written NumPy step is checked against float64 central differences of its own
loss; the flop count against the formula worked by hand; the suite's agreement check must reject
an implementation with a wrong gradient; gradc's rows must agree with the hand-written step."""
import json
import os
import sys

import numpy as np
import pytest

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")
sys.path.insert(0, BENCH)

import peers  # noqa: E402  (benchmarks/*.py import each other by these plain names)
import report  # noqa: E402
import run  # noqa: E402
import workloads  # noqa: E402


def _loss(p, X, y, acts):
    """The MLP's mean softmax cross-entropy, written independently of hand_step."""
    h = X
    L = len(acts) + 1
    f = {"relu": lambda z: np.maximum(z, 0), "tanh": np.tanh,
         "swish": lambda z: z / (1 + np.exp(-z))}
    for i, a in enumerate(acts, 1):
        h = f[a](h @ p[f"W{i}"] + p[f"b{i}"])
    s = h @ p[f"W{L}"] + p[f"b{L}"]
    m = s.max(axis=1, keepdims=True)
    lse = np.log(np.exp(s - m).sum(axis=1)) + m[:, 0]
    return float(np.mean(lse - s[np.arange(len(y)), y]))


@pytest.mark.parametrize("acts", [("relu",), ("swish", "tanh", "swish")])
def test_hand_step_matches_finite_differences(acts):
    dims = (3, 5) + (4,) * (len(acts) - 1) + (3,)
    wl = workloads.Workload("t", "t", "f64", "train", 6, dims, acts)
    params, X, y = workloads.train_data(wl, seed=3)
    p = {k: v.copy() for k, v in params.items()}
    loss, grads = workloads.hand_step(p, X, y, acts, lr=0.5)
    assert loss == pytest.approx(_loss(params, X, y, acts), rel=1e-12)
    eps = 1e-6
    for k, v in params.items():
        num = np.zeros_like(v)
        for idx in np.ndindex(v.shape):
            hi = {kk: vv.copy() for kk, vv in params.items()}
            lo = {kk: vv.copy() for kk, vv in params.items()}
            hi[k][idx] += eps
            lo[k][idx] -= eps
            num[idx] = (_loss(hi, X, y, acts) - _loss(lo, X, y, acts)) / (2 * eps)
        np.testing.assert_allclose(grads[k], num, rtol=1e-5, atol=1e-8, err_msg=k)
        np.testing.assert_allclose(p[k], v - 0.5 * num, rtol=1e-6, atol=1e-8, err_msg=k)


def test_flops_by_hand():
    wl = next(w for w in workloads.all_workloads() if w.key == "two_layer/tiny/f64")
    n, d, h, c = 64, 2, 100, 3          # X·W1, h·W2, hᵀ·G, G·W2ᵀ, Xᵀ·dh
    assert wl.flops() == 2 * n * d * h * 2 + 2 * n * h * c * 3


def test_agreement_check_rejects_a_wrong_gradient():
    def wrong(wl, params, X, y, lr):
        r = peers.IMPLS["hand"].train(wl, params, X, y, lr)

        def step():
            loss = r.step()
            r.params()["W1"] += 1e-3 * lr          # an update off by a little
            return loss
        return peers.Runner(step, r.params)
    peers.IMPLS["wrong"] = peers.Impl("wrong", lambda: "x", wrong, None)
    try:
        rows = run.run_train(workloads.tiny_workloads()[2], ["hand", "wrong"], budget=0.001)
    finally:
        del peers.IMPLS["wrong"]
    assert "median_s" in rows[0] and "error" not in rows[0]
    assert "disagrees" in rows[1]["error"] and "median_s" not in rows[1]


def test_tiny_suite_and_report(tmp_path):
    out = tmp_path / "out.json"
    result = run.main(["--tiny", "--impls", "hand,gradc-numpy,gradc-llvm", "--no-compile",
                       "--no-peaks", "--budget", "0.005", "--json", str(out),
                       "--note", "smoke test"])
    keys = {w.key for w in workloads.tiny_workloads()}
    assert {r["workload"] for r in result["rows"]} == keys
    for r in result["rows"]:
        assert "error" not in r, r
        assert r["min_s"] <= r["median_s"] and r["calls"] >= 5
        tol = 1e-9 if r["workload"].endswith("f64") else 1e-4
        assert r["loss_err"] <= tol, r
    assert len(result["rows"]) == 3 * len(keys)
    data = json.loads(out.read_text())
    assert data["rows"] == result["rows"]
    md = tmp_path / "b.md"
    text = report.main([str(out), "-o", str(md), "--no-chart"])
    assert md.read_text() == text
    assert "## Headline" in text and "| **gradc-llvm** |" in text
    assert "### two_layer/tiny/f32" in text and "smoke test" in text
    hand = {r["workload"]: r["median_s"] for r in result["rows"] if r["impl"] == "hand"}
    llvm = next(r for r in result["rows"]
                if r["impl"] == "gradc-llvm" and r["workload"] == "two_layer/tiny/f64")
    assert f"{llvm['median_s'] / hand['two_layer/tiny/f64']:.2f}×" in text


def test_compile_child_takes_the_same_first_step_as_hand_written_numpy():
    import compile_times
    wl = next(w for w in workloads.all_workloads() if w.key == "two_layer/cifar/f64")
    params, X, y = workloads.train_data(wl)
    ref_loss, _ = workloads.hand_step({k: v.copy() for k, v in params.items()}, X, y, wl.acts)
    out = compile_times.compile_child("gradc-numpy")
    assert out["loss"] == pytest.approx(float(ref_loss), rel=1e-10)
    assert out["build_first_step_s"] > 0 and out["import_s"] >= 0
