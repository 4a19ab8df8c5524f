"""An attention block (issue 18.7): softmax(Q·Kᵀ/√d)·V with a batch axis and heads, written
with the DSL's batched @ and einsum, on both backends, against a hand-written NumPy forward
and central differences of that NumPy forward (float64): no gradc code in the oracle."""
import numpy as np
import pytest

import compiler
from frontends import dsl
from frontends.dsl import f64

B, T, E, H, D = 2, 3, 4, 2, 2          # batch, tokens, embedding, heads, head size


def attention(X, Wq, Wk, Wv, Wo, Y):
    def heads(W):                       # [B, T, E] @ [E, H·D] -> [B, H, T, D]
        return (X @ W).reshape(B, T, H, D).transpose(0, 2, 1, 3)
    q, k, v = heads(Wq), heads(Wk), heads(Wv)
    scores = dsl.einsum("bhqd,bhkd->bhqk", q, k) / np.sqrt(D)
    weights = dsl.softmax(scores, axis=-1)
    ctx = weights @ v                                   # [B, H, T, D]
    y = ctx.transpose(0, 2, 1, 3).reshape(B, T, H * D) @ Wo
    return {"loss": dsl.sum(y * Y), "y": y}


def numpy_attention(X, Wq, Wk, Wv, Wo, Y):
    def heads(W):
        return (X @ W).reshape(B, T, H, D).transpose(0, 2, 1, 3)
    q, k, v = heads(Wq), heads(Wk), heads(Wv)
    s = q @ np.swapaxes(k, -1, -2) / np.sqrt(D)
    e = np.exp(s - s.max(axis=-1, keepdims=True))
    a = e / e.sum(axis=-1, keepdims=True)
    y = (a @ v).transpose(0, 2, 1, 3).reshape(B, T, H * D) @ Wo
    return float(np.sum(y * Y)), y


SPECS = dict(X=f64[B, T, E], Wq=f64[E, H * D], Wk=f64[E, H * D], Wv=f64[E, H * D],
             Wo=f64[H * D, E], Y=f64[B, T, E])
WRT = ["X", "Wq", "Wk", "Wv", "Wo"]


def _inputs(seed=0):
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(s.shape) for k, s in SPECS.items()}


def _central(args, name, eps=1e-6):
    out = np.empty_like(args[name])
    for idx in np.ndindex(*out.shape):
        plus, minus = dict(args), dict(args)
        plus[name], minus[name] = args[name].copy(), args[name].copy()
        plus[name][idx] += eps
        minus[name][idx] -= eps
        out[idx] = (numpy_attention(**plus)[0] - numpy_attention(**minus)[0]) / (2 * eps)
    return out


@pytest.mark.parametrize("backend", ["numpy", "llvm"])
def test_attention_block_vs_numpy_forward_and_finite_differences(backend):
    g = dsl.trace(attention, **SPECS)
    assert {"batch_matmul", "softmax"} <= {n.op for n in g.nodes}
    fn = compiler.compile(compiler.grad(g, wrt=WRT, of="loss"), backend=backend)
    args = _inputs()
    got = fn(**args)
    loss, y = numpy_attention(**args)
    np.testing.assert_allclose(got["y"], y, rtol=1e-12, atol=1e-12)
    assert got["loss"] == pytest.approx(loss, rel=1e-12)
    for name in WRT:
        np.testing.assert_allclose(got["d" + name], _central(args, name), rtol=1e-6, atol=1e-7,
                                   err_msg=f"d{name} ({backend})")


def test_attention_gradient_check_passes():
    """compiler's own finite-difference check on the traced block (interpreter) agrees too."""
    g = dsl.trace(attention, **SPECS)
    assert compiler.check_finite_differences(g, wrt=WRT, of="loss", points=1).ok
