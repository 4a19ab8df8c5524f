"""Bias and activation fused into the convolution on LLVM (issue 19.3): the elementwise group
that is a conv2d result's only reader runs on each output tile right after its gemm (the op
record's `epilogue` trait, compiler/passes/fusion.py `epilogue_heads`), so the convolution's
own result is never stored and no loop passes over it.  Values against the NumPy backend, a
loop reference and finite differences."""
import re

import numpy as np
import pytest

import compiler
from compiler.codegen import llvm_conv
from compiler.codegen.llvm_emit import emit_llvm_plan
from compiler.passes.fusion import epilogue_heads
from frontends import dsl
from frontends.dsl import f32, f64
from test_conv import fd_grad, loop_conv


def _model(act, stride=(1, 1), padding=(1, 1), groups=1, o=4):
    def model(x, w, b, c):
        z = dsl.conv2d(x, w, stride=stride, padding=padding, groups=groups) \
            + b.reshape(1, o, 1, 1)
        return dsl.sum(act(z) * c)
    return model


def _trace(model, xs, ws, ys, t=f64, name="epi"):
    return dsl.trace(model, name=name, x=t[xs], w=t[ws], b=t[ws[0]], c=t[ys])


def _kernel_body(text, name):
    """The IR of the `.loops` function of the kernel that writes value `name`."""
    for m in re.finditer(r'define internal void @"(k\d+\.[^"]*)\.loops"\(([^)]*)\)[^{]*\{'
                         r'(.*?)\n\}', text, re.S):
        if f'%"{name}"' in m.group(3) and "gemm" in m.group(3):
            return m.group(3)
    raise AssertionError(f"no gemm kernel writes {name}")


def test_relu_conv_bias_is_one_pass_over_the_output():
    g = _trace(_model(dsl.relu), (2, 3, 5, 5), (4, 3, 3, 3), (2, 4, 5, 5))
    dg = compiler.grad(g, wrt=["x", "w", "b"])
    conv, add, relu = [n for n in dg.nodes if n.op in ("conv2d", "add", "relu")][:3]
    assert epilogue_heads(dg)[relu.out.name][0] == conv.out.name
    text, untouched = emit_llvm_plan(dg, "f")
    # neither the convolution's result nor the sum with the bias is ever in memory
    assert {conv.out.name, add.out.name} <= untouched
    body = _kernel_body(text, relu.out.name)
    for name in (conv.out.name, add.out.name):
        assert not re.search(rf'(load|store)[^\n]*%"{name}"', body), name
    # no other piece of code (a kernel of its own, a fused loop) computes the add or the relu
    pieces = [line for line in text.split("\n") if line.strip().startswith("; ")
              and f"{relu.out.name} = relu" in line]
    assert len(pieces) == 1 and "fused into each tile" in pieces[0], pieces


CASES = [   # act, x, w, stride, padding, groups, tile bytes (None: the default)
    (dsl.relu, (2, 3, 5, 5), (4, 3, 3, 3), (1, 1), (1, 1), 1, None),
    (dsl.tanh, (1, 4, 7, 6), (6, 2, 3, 2), (2, 1), (1, 0), 2, None),        # groups, stride
    (dsl.relu, (2, 2, 5, 5), (3, 2, 1, 1), (1, 1), (0, 0), 1, None),       # 1×1: direct
    (dsl.relu, (2, 2, 7, 9), (3, 2, 3, 3), (1, 2), (1, 2), 1, 4 * 18 * 8),  # row segments
    (dsl.relu, (2, 2, 7, 9), (3, 2, 3, 3), (1, 2), (1, 2), 1, 2 * 18 * 6 * 8),  # row tiles
]


@pytest.mark.parametrize("case", CASES, ids=[f"case{k}" for k in range(len(CASES))])
def test_fused_epilogue_values_and_gradients(case, rng, monkeypatch):
    act, xs, ws, s, p, groups, tile = case
    if tile is not None:
        monkeypatch.setattr(llvm_conv, "TILE_BYTES", tile)
    x, w, b = rng.standard_normal(xs), rng.standard_normal(ws), rng.standard_normal(ws[0])
    ys = loop_conv(x, w, s, p, (1, 1), groups).shape
    c = rng.standard_normal(ys)
    g = _trace(_model(act, s, p, groups, ws[0]), xs, ws, ys, name=f"epi{tile}")
    dg = compiler.grad(g, wrt=["x", "w", "b"])
    assert epilogue_heads(dg), "the case must exercise the fused epilogue"
    got = compiler.compile(dg, backend="llvm")(x=x, w=w, b=b, c=c)
    ref = compiler.compile(dg, backend="numpy")(x=x, w=w, b=b, c=c)
    for k in ("out", "dx", "dw", "db"):
        np.testing.assert_allclose(got[k], ref[k], rtol=1e-11, atol=1e-11, err_msg=k)

    npact = {dsl.relu: lambda z: np.maximum(z, 0), dsl.tanh: np.tanh}[act]

    def loss():
        return np.sum(npact(loop_conv(x, w, s, p, (1, 1), groups)
                            + b[None, :, None, None]) * c)
    np.testing.assert_allclose(got["out"], loss(), rtol=1e-12)
    for k, a in (("w", w), ("b", b)):
        np.testing.assert_allclose(got["d" + k], fd_grad(loss, a), rtol=1e-5, atol=1e-6,
                                   err_msg=k)


def test_not_fused_where_the_convolution_has_other_readers(rng):
    """The conv result is also an output, or read twice: it is stored, values still right."""
    def model(x, w, b):
        y = dsl.conv2d(x, w, padding=1)
        return {"y": y, "h": dsl.relu(y + b.reshape(1, 3, 1, 1)), "s": dsl.sum(y * y)}
    g = dsl.trace(model, x=f32[2, 2, 4, 4], w=f32[3, 2, 3, 3], b=f32[3])
    assert epilogue_heads(g) == {}
    x = rng.standard_normal((2, 2, 4, 4)).astype(np.float32)
    w = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
    b = rng.standard_normal(3).astype(np.float32)
    got = compiler.compile(g, backend="llvm")(x=x, w=w, b=b)
    ref = compiler.compile(g, backend="numpy")(x=x, w=w, b=b)
    for k in ("y", "h", "s"):
        np.testing.assert_allclose(got[k], ref[k], rtol=1e-5, atol=1e-5, err_msg=k)


def test_f32_epilogue_and_zero_input_channels(rng):
    """f32 through the fused path, with an activation or the bias alone (a group of one);
    and C = 0 (an empty sum): relu(0 + b) everywhere."""
    def model(x, w, b):
        return dsl.relu(dsl.conv2d(x, w) + b.reshape(1, 2, 1, 1)) * 2.0

    def biased(x, w, b):
        return dsl.conv2d(x, w) + b.reshape(1, 2, 1, 1)
    np.testing.assert_allclose(
        compiler.compile(dsl.trace(biased, x=f32[1, 1, 2, 2], w=f32[2, 1, 1, 1], b=f32[2]),
                         backend="llvm")(x=np.ones((1, 1, 2, 2), np.float32),
                                         w=np.array([2, 3], np.float32).reshape(2, 1, 1, 1),
                                         b=np.array([1, -1], np.float32))["out"],
        np.array([3, 2], np.float32)[None, :, None, None] * np.ones((1, 2, 2, 2)))
    g = dsl.trace(biased, x=f32[1, 1, 2, 2], w=f32[2, 1, 1, 1], b=f32[2])
    assert [h for h, _ in epilogue_heads(g).values()] == ["t0"]
    assert "t0" in emit_llvm_plan(g, "f")[1]
    for cin in (3, 0):
        g = dsl.trace(model, name=f"z{cin}", x=f32[2, cin, 3, 4], w=f32[2, cin, 1, 1],
                      b=f32[2])
        assert epilogue_heads(g)
        x = rng.standard_normal((2, cin, 3, 4)).astype(np.float32)
        w = rng.standard_normal((2, cin, 1, 1)).astype(np.float32)
        b = np.array([0.5, -0.25], np.float32)
        got = compiler.compile(g, backend="llvm")(x=x, w=w, b=b)["out"]
        want = 2 * np.maximum(np.einsum("nchw,oc->nohw", x, w[:, :, 0, 0])
                              + b[None, :, None, None], 0)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
