"""The IR implementations of exp, log, log1p, tanh, expm1 (compiler/codegen/llvm_math.py),
through the LLVM backend, against NumPy over their whole range: ≤ 4 ulp everywhere, and the
special values exactly (±0 with its sign, subnormals, ±inf, NaN, the overflow/underflow edges)."""
from __future__ import annotations

import numpy as np
import pytest

import compiler
from compiler.builder import Builder
from compiler.ir import Graph, TensorType

FUNCS = {"exp": np.exp, "log": np.log, "log1p": np.log1p, "tanh": np.tanh}


def _points(dtype) -> np.ndarray:
    """Specials, edges, dense ranges and random bit patterns (every exponent)."""
    f = np.dtype(dtype)
    fi = np.finfo(f)
    tiny, sub = float(fi.tiny), float(fi.smallest_subnormal)
    special = [0.0, -0.0, sub, -sub, tiny, -tiny, tiny / 3, -tiny / 3, np.inf, -np.inf, np.nan,
               1.0, -1.0, float(fi.max), -float(fi.max), float(fi.eps), -float(fi.eps)]
    if f == np.float64:
        special += [709.782712893384, 709.7827128933841, 709.79, 710.0, -708.39, -708.4,
                    -744.44, -745.1332191019411, -745.1332191019412, -746.0, -1000.0, 1000.0,
                    0.3465735902799726, -0.3465735902799726, 0.55, -0.55, 0.275, 22.0, -22.0,
                    np.sqrt(2), np.sqrt(0.5), 1 - 2 ** -53, 1 + 2 ** -52, -0.9999999999999999]
    else:
        special += [88.72283, 88.72284, 89.0, -87.33654, -103.27893, -103.97208, -104.0,
                    0.55, -0.55, 9.0, -9.0, np.sqrt(2), np.sqrt(0.5), -0.99999994]
    rng = np.random.default_rng(7)
    bits = rng.integers(0, 2 ** 63, 20000, dtype=np.int64) if f == np.float64 else \
        rng.integers(0, 2 ** 31, 20000, dtype=np.int64).astype(np.int32)
    randbits = bits.view(f)
    randbits = np.concatenate([randbits, -randbits])
    dense = np.concatenate([np.linspace(-800, 800, 20001), np.linspace(-3, 3, 20001),
                            np.linspace(-1, 1.5, 10001), np.linspace(-1e-3, 1e-3, 2001),
                            rng.uniform(0, 4, 10000), rng.uniform(-40, 40, 10000)])
    with np.errstate(over="ignore", invalid="ignore"):   # f32: ±1000 becomes ±inf
        head = np.concatenate([np.array(special), dense]).astype(f)
    return np.concatenate([head, randbits])


def _ulp_error(got, want) -> np.ndarray:
    """|got − want| in units of the last place of want (0 where both are the same special)."""
    with np.errstate(invalid="ignore"):     # signalling NaNs in the random bit patterns
        got = got.astype(np.float64) if got.dtype == np.float32 else got
    same = (got == want) | (np.isnan(got) & np.isnan(want))
    spacing = np.spacing(np.abs(want).astype(want.dtype)).astype(np.float64)
    with np.errstate(all="ignore"):
        err = np.abs(got.astype(np.float64) - want.astype(np.float64)) / spacing
    err[same] = 0.0
    err[~same & (~np.isfinite(got) | ~np.isfinite(want))] = np.inf
    return err


@pytest.fixture(scope="module", params=["f64", "f32"])
def kernel(request):
    dtype = request.param
    pts = _points({"f64": np.float64, "f32": np.float32}[dtype])
    g = Graph(f"math_{dtype}")
    b = Builder(g)
    x = b.add_input("x", TensorType(dtype, pts.shape))
    for name in FUNCS:
        g.outputs[name] = b.emit(name, [x], name=name).value
    return compiler.compile(g, backend="llvm", passes=[]), pts


@pytest.mark.parametrize("name", list(FUNCS))
def test_within_4_ulp_of_numpy(kernel, name):
    fn, pts = kernel
    got = fn(x=pts)[name]
    with np.errstate(all="ignore"):
        want = FUNCS[name](pts)
    err = _ulp_error(got, want)
    worst = int(np.argmax(err))
    assert err[worst] <= 4, (f"{name}({pts[worst]!r}) = {got[worst]!r}, NumPy {want[worst]!r} "
                             f"({err[worst]:.1f} ulp)")
    # signed zeros keep their sign where NumPy's does
    zero = (want == 0) & np.isfinite(want)
    assert np.array_equal(np.signbit(got[zero]), np.signbit(want[zero])), name


def test_specials_exactly(kernel):
    fn, pts = kernel
    f = pts.dtype.type
    x = np.zeros_like(pts)
    cases = [0.0, -0.0, np.inf, -np.inf, np.nan, -1.0]
    x[:len(cases)] = cases
    out = fn(x=x)
    ex, lg, l1, th = (out[k][:len(cases)] for k in ("exp", "log", "log1p", "tanh"))
    assert list(ex[:4]) == [1, 1, np.inf, 0] and np.isnan(ex[4])
    assert lg[0] == -np.inf and lg[1] == -np.inf and lg[2] == np.inf and np.isnan(lg[3])
    assert np.isnan(lg[4]) and np.isnan(lg[5])
    assert l1[5] == -np.inf and l1[2] == np.inf and np.signbit(l1[1])
    assert list(th[:4]) == [0, 0, 1, -1] and np.signbit(th[1]) and np.isnan(th[4])
    assert out["exp"].dtype == np.dtype(f)


def test_expm1_through_elu():
    """elu(x) = α·expm1(x) for x < 0: relative error ≤ 4 ulp of NumPy's expm1, tiny x too."""
    x = -np.concatenate([np.logspace(-300, 2.8, 4000), [5e-324, 1e-310, 0.3465, 0.3466]])
    g = Graph("elu_probe")
    b = Builder(g)
    v = b.add_input("x", TensorType("f64", x.shape))
    g.outputs["y"] = b.emit("elu", [v], name="y", alpha=1.0).value
    got = compiler.compile(g, backend="llvm", passes=[])(x=x)["y"]
    err = _ulp_error(got, np.expm1(x))
    assert err.max() <= 4, x[np.argmax(err)]
