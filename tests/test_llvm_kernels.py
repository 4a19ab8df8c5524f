"""Kernels of the LLVM backend (compiler/codegen/llvm_kernels.py): every piece of code is a
function of its own, and pieces with one structural key share one function, so identical
layers compile once; pieces that differ in an attribute, a constant, a shape or a folded
transpose keep kernels of their own.  Oracle: the NumPy backend on the same graph (and the
reference interpreter), and the counts of functions and calls read from the emitted IR."""
from __future__ import annotations

import re

import numpy as np
import pytest

import compiler
from frontends import dsl
from frontends.dsl import f64, i64


def kernels(source: str) -> list:
    return re.findall(r'^define internal void @"([^"]+)"', source, flags=re.M)


def calls(source: str) -> list:
    return re.findall(r'call void @"(k\d+\.[^"]+)"', source)


def mlp(layers: int):
    """An L-layer tanh MLP's loss, one parameter per weight (built with exec: trace reads the
    parameter names)."""
    params = ", ".join(f"W{k}, b{k}" for k in range(layers + 1))
    lines = [f"def loss(X, y, {params}):", "    h = X"]
    lines += [f"    h = dsl.tanh(h @ W{k} + b{k})" for k in range(layers)]
    lines += [f"    return dsl.softmax_cross_entropy(h @ W{layers} + b{layers}, y)"]
    env = {"dsl": dsl}
    exec("\n".join(lines), env)
    return env["loss"]


def mlp_step(layers: int, backend: str, width: int = 8, batch: int = 5):
    rng = np.random.default_rng(layers)
    params = {}
    for k in range(layers + 1):
        cols = 3 if k == layers else width
        params[f"W{k}"] = rng.normal(0, 0.5, (width, cols))
        params[f"b{k}"] = rng.normal(0, 0.1, cols)
    step = compiler.train_step(mlp(layers), params, {"X": f64[batch, width], "y": i64[batch]},
                               compiler.optim.SGD(lr=0.1), backend=backend)
    X = rng.normal(size=(batch, width))
    y = rng.integers(0, 3, batch)
    return step, [step(X=X, y=y) for _ in range(2)]


def test_identical_layers_share_their_kernels():
    """A 9-layer MLP's train step has exactly the kernels of a 3-layer one (the middle layers'
    loops, forward, backward and update, compile once), called once per layer; the steps
    match the NumPy backend's."""
    counts = {}
    for layers in (3, 9):
        step, losses = mlp_step(layers, "llvm")
        ref, ref_losses = mlp_step(layers, "numpy")
        np.testing.assert_allclose(losses, ref_losses, rtol=1e-12)
        for k, v in ref.params.items():
            np.testing.assert_allclose(step.params[k], v, rtol=1e-11, atol=1e-14, err_msg=k)
        src = step.source
        names = kernels(src)
        assert len(set(names)) == len(names) and set(calls(src)) == set(names)
        counts[layers] = (len(names), len(calls(src)))
    assert counts[9][0] == counts[3][0] > 1
    assert counts[9][1] > counts[3][1]


def test_pieces_that_differ_keep_their_own_kernels():
    """Same shapes, different attributes (leaky_relu's alpha), constants (an immediate 2 vs 3),
    widths, and a transpose folded into gemm or not: each computes its own numbers, and the
    two pieces that are alike share one kernel."""
    def model(X, A, B, C):
        return {"p": dsl.leaky_relu(X @ A, 0.1), "q": dsl.leaky_relu(X @ B, 0.3),
                "r": dsl.leaky_relu(X @ A.T, 0.1), "s": dsl.leaky_relu(X @ B, 0.1),
                "u": dsl.sum(X * 2.0), "v": dsl.sum(X * 3.0), "w": X @ C}
    specs = dict(X=f64[40, 40], A=f64[40, 40], B=f64[40, 40], C=f64[40, 7])
    g = dsl.trace(model, **specs)
    fn = compiler.compile(g, backend="llvm", passes=[])
    ref = compiler.compile(g, backend="numpy", passes=[])
    rng = np.random.default_rng(1)
    args = {k: rng.normal(size=s.shape) for k, s in specs.items()}
    got, want = fn(**args), ref(**args)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-12, err_msg=k)
    np.testing.assert_allclose(got["r"], np.where(args["X"] @ args["A"].T > 0, 1, 0.1)
                               * (args["X"] @ args["A"].T), rtol=1e-12)
    src = fn.source
    by_call = calls(src)
    # p and s are one piece shape (matmul, then leaky_relu 0.1): one kernel called twice
    assert len(by_call) > len(set(by_call)) and len(kernels(src)) == len(set(by_call))


def test_kernel_arguments_are_noalias_buffers_named_after_the_model():
    """Each kernel's loops take the buffers they touch as `noalias` pointers named after the
    model's values; its entry, which the graph's function calls, takes the buffer array and
    one constant slot per buffer (no pointer loads in the graph's function)."""
    g = dsl.trace(lambda x, w: dsl.sum(dsl.tanh(x * w)), x=f64[16], w=f64[16])
    src = compiler.compile(compiler.grad(g), backend="llvm").source
    heads = dict(re.findall(r'^define internal void @"([^"]+)"\((.*)\) \w+ nounwind$', src,
                            flags=re.M))
    loops = {k: v for k, v in heads.items() if k.endswith(".loops")}
    entries = {k: v for k, v in heads.items() if not k.endswith(".loops")}
    assert loops and set(entries) == {k[:-len(".loops")] for k in loops}
    assert all(a.startswith("ptr noalias %") for h in loops.values() for a in h.split(", "))
    assert all(h.startswith('ptr %"buffers", i64 %') for h in entries.values())
    assert 'ptr noalias %"w"' in src and 'ptr noalias %"dx"' in src
    graph_fn = src[src.index("define i64 @"):]
    assert "load ptr" not in graph_fn[:graph_fn.index("\n}")]
