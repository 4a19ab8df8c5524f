"""LLVM: a broadcast_to read only by loop nests (elementwise nodes, fusion groups) is never
stored: they read its operand with stride 0 along the broadcast axes (broadcast_to's lowering
`reads_through`, ModuleEmitter.skipped).  Values against the NumPy backend and a NumPy
reference; a broadcast with another kind of reader, or returned, is still stored."""
import numpy as np

import compiler
from compiler.codegen import llvm_dims
from compiler.codegen.llvm_emit import emit_llvm_plan
from frontends import dsl
from frontends.dsl import f32, f64


def _broadcasts(g):
    return [n.out.name for n in g.nodes if n.op == "broadcast_to"]


def test_max_pool_gate_broadcasts_are_read_through(rng):
    """The max-pool gate's three window-sized broadcasts (peak, tie count, gradient)."""
    def model(x, c):
        return dsl.sum(dsl.max_pool2d(x, 2) * c)
    g = dsl.trace(model, x=f64[2, 3, 4, 6], c=f64[2, 3, 2, 3])
    dg = compiler.grad(g, wrt=["x"])
    wide = [n for n in _broadcasts(dg) if len(dg.values()[n].shape) == 6]
    assert len(wide) == 3
    untouched = emit_llvm_plan(dg, "f")[1]
    assert set(wide) <= untouched
    x = rng.standard_normal((2, 3, 4, 6))
    x[0, 0, :2, :2] = 1.5        # a tie: the gradient is split
    c = rng.standard_normal((2, 3, 2, 3))
    got = compiler.compile(dg, backend="llvm")(x=x, c=c)
    ref = compiler.compile(dg, backend="numpy")(x=x, c=c)
    for k in ("out", "dx"):
        np.testing.assert_allclose(got[k], ref[k], rtol=1e-13, atol=1e-13, err_msg=k)
    assert got["dx"][0, 0, 0, 0] == c[0, 0, 0, 0] / 4


def test_other_readers_keep_the_broadcast_and_values_agree(rng):
    def model(v, m):
        b = dsl.broadcast_to(v.reshape(1, 3), (4, 3))          # read by add and by matmul
        e = dsl.broadcast_to(v.reshape(1, 3), (4, 3))          # read by mul only
        r = dsl.broadcast_to(v.reshape(3, 1), (3, 5))          # returned
        return {"s": (b + m) @ b.T, "p": e * m * 2.0, "r": r}
    g = dsl.trace(model, v=f32[3], m=f32[4, 3])
    b, e, r = _broadcasts(g)
    untouched = emit_llvm_plan(g, "f")[1]
    assert e in untouched and b not in untouched and r not in untouched
    v = rng.standard_normal(3).astype(np.float32)
    m = rng.standard_normal((4, 3)).astype(np.float32)
    got = compiler.compile(g, backend="llvm")(v=v, m=m)
    vb = np.broadcast_to(v, (4, 3))
    np.testing.assert_allclose(got["s"], (vb + m) @ vb.T, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got["p"], vb * m * 2, rtol=1e-6)
    np.testing.assert_array_equal(got["r"], np.broadcast_to(v[:, None], (3, 5)))


def test_broadcasts_are_read_through_at_run_time_sizes(rng):
    """With a symbolic batch (one native function for every N) the bias and max-pool gate
    broadcasts are read through as well (they were stored at every N before): stride 0 along
    an axis of size N or of a fixed size, values equal to the NumPy backend at N = 1, 2, 5."""
    def model(x, c, b):
        return dsl.sum(dsl.tanh(dsl.max_pool2d(x, 2) * c + b))
    g = dsl.trace(model, x=f64["N", 3, 4, 6], c=f64["N", 3, 2, 3], b=f64[3, 2, 3])
    dg = compiler.grad(g, wrt=["x", "b"])
    sized = llvm_dims.sized_graph(dg)
    untouched = emit_llvm_plan(sized, "f", True, llvm_dims.dim_names(dg))[1]
    assert len(set(_broadcasts(dg)) & untouched) >= 3
    fl, fn = compiler.compile(dg, backend="llvm"), compiler.compile(dg, backend="numpy")
    for n in (1, 2, 5):
        args = dict(x=rng.standard_normal((n, 3, 4, 6)), c=rng.standard_normal((n, 3, 2, 3)),
                    b=rng.standard_normal((3, 2, 3)))
        got, ref = fl(**args), fn(**args)
        for k in ref:
            np.testing.assert_allclose(got[k], ref[k], rtol=1e-13, atol=1e-13, err_msg=k)
    assert fl.specializations == 1
