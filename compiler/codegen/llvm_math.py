"""Vectorizable exp, expm1, log, log1p and tanh written in LLVM IR (no libm calls), emitted
inline at each use so that loops containing them vectorize.  float64 throughout; float32
callers widen to float64 and round once at the end (correctly rounded in practice).

exp(x):   k = rint(x/ln2), r = x − k·ln2 (ln2 split hi/lo, |r| ≤ ln2/2), eʳ by its Taylor
          polynomial to degree 13 (truncation < 1e-17), then ·2^⌊k/2⌋·2^(k−⌊k/2⌋) (two exact
          power-of-two scalings, so overflow gives inf and the subnormal range rounds once).
          x is clamped to [−746, 710] first; NaN stays NaN.
expm1(x): x + x²(1/2! + x/3! + … + x¹⁹/21!) for |x| < 1.1, else exp(x) − 1; expm1(±0) = ±0.
log(x):   x = 2ᵉ·m, m ∈ [√½, √2) (subnormals scaled by 2⁵⁴ first), f = m − 1, s = f/(2+f),
          log(1+f) = 2·atanh(s) = f − s·(f − R), R = Σₖ 2s²ᵏ/(2k+1) (k ≤ 12); plus e·ln2.
          log(0) = −inf, log(x<0) = NaN, log(inf) = inf.
log1p(x): u = 1 + x; x if u = 1, else log(u)·x/(u − 1) (Kahan); log1p(inf) = inf.
tanh(x):  a = |x|; 1 − 2/(e²ᵃ + 1) for a ≥ 0.55, else e/(e + 2) with e = expm1(2a);
          the sign of x (so tanh(−0) = −0).
"""
from __future__ import annotations

import math

from llvmlite import ir

F64 = ir.DoubleType()
I64 = ir.IntType(64)
POLY = ("contract",)        # FMA in the polynomials only improves them

LN2_HI = 6.93147180369123816490e-01
LN2_LO = 1.90821492927058770002e-10
INV_LN2 = 1.44269504088896338700e+00
SQRT2 = 1.4142135623730951
EXPM1_POLY_LIMIT = 1.1      # below it expm1 is a polynomial; above, exp(x) − 1 loses ≤ 1.5 ulp
EXP_COEFFS = [1.0 / math.factorial(n) for n in range(14)]          # 1, 1, 1/2, ..., 1/13!
LOG_COEFFS = [2.0 / (2 * k + 1) for k in range(1, 13)]             # 2/3, 2/5, ..., 2/25


def c(v) -> ir.Constant:
    return ir.Constant(F64, v)


def intrinsic(b: ir.IRBuilder, name: str, ty, nargs: int = 1):
    """The declaration of an overloaded intrinsic (`llvm.rint.f64`) in the builder's module."""
    mod = b.module
    suffix = "f64" if ty == F64 else "f32" if ty == ir.FloatType() else str(ty)
    full = f"{name}.{suffix}"
    fn = mod.globals.get(full)
    if fn is None:
        fn = ir.Function(mod, ir.FunctionType(ty, [ty] * nargs), name=full)
    return fn


def _horner(b, x, coeffs):
    """coeffs[0] + x·(coeffs[1] + x·(…)), evaluated from the highest degree."""
    p = c(coeffs[-1])
    for k in coeffs[-2::-1]:
        p = b.fadd(b.fmul(p, x, flags=POLY), c(k), flags=POLY)
    return p


def _pow2(b, k):
    """2**k as a double for an i64 k in the normal exponent range."""
    return b.bitcast(b.shl(b.add(k, ir.Constant(I64, 1023)), ir.Constant(I64, 52)), F64)


def exp(b: ir.IRBuilder, x, name: str = ""):
    isnan = b.fcmp_unordered("uno", x, x)
    xc = b.select(b.fcmp_ordered(">", x, c(710.0)), c(710.0), x)
    xc = b.select(b.fcmp_ordered("<", xc, c(-746.0)), c(-746.0), xc)
    xc = b.select(isnan, c(0.0), xc)
    kf = b.call(intrinsic(b, "llvm.rint", F64), [b.fmul(xc, c(INV_LN2))])
    r = b.fsub(b.fsub(xc, b.fmul(kf, c(LN2_HI))), b.fmul(kf, c(LN2_LO)))
    # eʳ = 1 + r·(1 + r/2! + …): Horner with the exact leading 1 added last
    q = _horner(b, r, EXP_COEFFS[1:])
    p = b.fadd(c(1.0), b.fmul(r, q, flags=POLY), flags=POLY)
    k = b.fptosi(kf, I64)
    k1 = b.ashr(k, ir.Constant(I64, 1))
    k2 = b.sub(k, k1)
    y = b.fmul(b.fmul(p, _pow2(b, k1)), _pow2(b, k2))
    return b.select(isnan, x, y, name=name)


def _expm1_small(b, x):
    """x + x²·(1/2! + x/3! + … + x¹⁹/21!) for |x| < 1.1 (truncation < 3e-18 relative)."""
    coeffs = [1.0 / math.factorial(n) for n in range(2, 22)]
    return b.fadd(x, b.fmul(b.fmul(x, x), _horner(b, x, coeffs), flags=POLY), flags=POLY)


def _expm1_from(b, x, ex):
    """expm1(x) given ex = exp(x)."""
    small = b.fcmp_ordered("<", b.call(intrinsic(b, "llvm.fabs", F64), [x]), c(EXPM1_POLY_LIMIT))
    y = b.select(small, _expm1_small(b, x), b.fsub(ex, c(1.0)))
    return b.select(b.fcmp_ordered("==", x, c(0.0)), x, y)


def expm1(b: ir.IRBuilder, x, name: str = ""):
    return _expm1_from(b, x, exp(b, x))


def log(b: ir.IRBuilder, x, name: str = ""):
    sub = b.fcmp_ordered("<", x, c(2.2250738585072014e-308))
    xs = b.select(sub, b.fmul(x, c(2.0 ** 54)), x)
    bits = b.bitcast(xs, I64)
    e = b.sub(b.and_(b.lshr(bits, ir.Constant(I64, 52)), ir.Constant(I64, 0x7FF)),
              ir.Constant(I64, 1023))
    e = b.add(e, b.select(sub, ir.Constant(I64, -54), ir.Constant(I64, 0)))
    mbits = b.or_(b.and_(bits, ir.Constant(I64, 0x000FFFFFFFFFFFFF)),
                  ir.Constant(I64, 0x3FF0000000000000))
    m = b.bitcast(mbits, F64)
    big = b.fcmp_ordered(">", m, c(SQRT2))
    m = b.select(big, b.fmul(m, c(0.5)), m)
    e = b.select(big, b.add(e, ir.Constant(I64, 1)), e)
    f = b.fsub(m, c(1.0))
    s = b.fdiv(f, b.fadd(c(2.0), f))
    z = b.fmul(s, s)
    big_r = b.fmul(z, _horner(b, z, LOG_COEFFS), flags=POLY)
    k = b.sitofp(e, F64)
    inner = b.fsub(b.fmul(s, b.fsub(f, big_r), flags=POLY), b.fmul(k, c(LN2_LO)), flags=POLY)
    y = b.fadd(b.fmul(k, c(LN2_HI)), b.fsub(f, inner), flags=POLY)
    y = b.select(b.fcmp_ordered("==", x, c(0.0)), c(-math.inf), y)
    y = b.select(b.fcmp_ordered("==", x, c(math.inf)), x, y)
    return b.select(b.fcmp_unordered("<", x, c(0.0)), c(math.nan), y, name=name)


def log1p(b: ir.IRBuilder, x, name: str = ""):
    u = b.fadd(c(1.0), x)
    y = b.fmul(log(b, u), b.fdiv(x, b.fsub(u, c(1.0))))
    y = b.select(b.fcmp_ordered("==", u, c(1.0)), x, y)
    return b.select(b.fcmp_ordered("==", x, c(math.inf)), x, y, name=name)


def tanh(b: ir.IRBuilder, x, name: str = ""):
    a = b.call(intrinsic(b, "llvm.fabs", F64), [x])
    a2 = b.fadd(a, a)
    u = exp(b, a2)
    large = b.fsub(c(1.0), b.fdiv(c(2.0), b.fadd(u, c(1.0))))
    e = _expm1_from(b, a2, u)
    small = b.fdiv(e, b.fadd(e, c(2.0)))
    t = b.select(b.fcmp_ordered(">=", a, c(0.55)), large, small)
    return b.call(intrinsic(b, "llvm.copysign", F64, 2), [t, x], name=name)


def maximum(b: ir.IRBuilder, x, y):
    """NumPy's maximum: the larger, NaN if either is NaN (compare and select, which vectorize;
    llvm.maximum does not on x86)."""
    r = b.select(b.fcmp_ordered("<", x, y), y, x)          # x NaN -> x
    return b.select(b.fcmp_unordered("uno", y, y), y, r)  # y NaN -> y


def minimum(b: ir.IRBuilder, x, y):
    """NumPy's minimum: the smaller, NaN if either is NaN."""
    r = b.select(b.fcmp_ordered(">", x, y), y, x)
    return b.select(b.fcmp_unordered("uno", y, y), y, r)


def relu(b: ir.IRBuilder, x):
    """max(x, 0) with NaN kept: 0 where x < 0, else x."""
    return b.select(b.fcmp_ordered("<", x, ir.Constant(x.type, 0.0)), ir.Constant(x.type, 0.0), x)


def widened(fn):
    """A float64 routine applied to a float32 value: widen, compute, round once."""
    def emit(b: ir.IRBuilder, x, name: str = ""):
        if x.type == F64:
            return fn(b, x, name)
        return b.fptrunc(fn(b, b.fpext(x, F64)), x.type, name=name)
    return emit
