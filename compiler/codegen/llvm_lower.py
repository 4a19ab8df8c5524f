"""The LLVM lowerings of the elementwise primitives, which their op records name (`llvm=` in
compiler/ops/elementwise.py).  A lowering is an object with
`lower(emitter, node)` (emitter: llvm_emit.ModuleEmitter), and optionally
`immediate(emitter, node)` (a constant standing for every element) and `labels(node)` (the
integer-label operand and its bound, checked by the kernel before native code runs).

Elementwise ops give a scalar rule `(emitter, [operand scalars], node) -> scalar`; the emitter
wraps it in a broadcasting loop.  Float semantics follow NumPy: maximum/minimum propagate NaN
(compare and select), comparisons are ordered (NaN compares false; != is unordered), exp/log/tanh
and friends come from llvm_math (vectorizable IR), pow and sin/cos from libm.
"""
from __future__ import annotations

from dataclasses import dataclass

from llvmlite import ir

from . import llvm_math as M
from .llvm_types import I8

F64 = ir.DoubleType()
FLOATS = ("f32", "f64")


@dataclass(frozen=True)
class Elementwise:
    scalar: object
    runtime_sizes = True     # a loop nest over the output's shape (llvm_dims.py)

    def lower(self, em, node):
        em.elementwise(node, self.scalar)


class Sum(Elementwise):
    """add: a sum of its two operands, so an operand that can accumulate into a buffer
    (matmul through gemm's beta) may be added in place (llvm_plan.accumulation_plan)."""
    accumulates = True


@dataclass(frozen=True)
class Const:
    runtime_sizes = True

    def immediate(self, em, node):
        return scalar_constant(node.attrs["value"], node.attrs["dtype"], em)

    def lower(self, em, node):
        em.fill(node.out, self.immediate(em, node))


def scalar_constant(value, dtype, em):
    ty = em.ll(dtype)
    if dtype in FLOATS:
        return ir.Constant(ty, float(value))
    return ir.Constant(ty, int(bool(value)) if dtype == "bool" else int(value))


def _fl(node) -> bool:
    return node.out.dtype in FLOATS


def _k(em, node, v):
    """A constant of the node's output type."""
    return scalar_constant(v, node.out.dtype, em)


def _intr(em, name, x, nargs=1):
    return M.intrinsic(em.b, name, x.type, nargs)


# ---- unary --------------------------------------------------------------------------------
def via_math(fn):
    w = M.widened(fn)
    return Elementwise(lambda em, a, node: w(em.b, a[0]))


def sigmoid64(b, x, name=""):
    """1/(1+e) for x ≥ 0, e/(1+e) otherwise, e = exp(−|x|) (no overflow either way)."""
    e = M.exp(b, b.fneg(b.call(M.intrinsic(b, "llvm.fabs", F64), [x])))
    one_e = b.fadd(M.c(1.0), e)
    return b.select(b.fcmp_ordered(">=", x, M.c(0.0)), b.fdiv(M.c(1.0), one_e), b.fdiv(e, one_e))


def softplus64(b, x, name=""):
    """log(1 + eˣ) = max(x, 0) + log1p(exp(−|x|))."""
    e = M.exp(b, b.fneg(b.call(M.intrinsic(b, "llvm.fabs", F64), [x])))
    mx = M.relu(b, x)
    return b.fadd(mx, M.log1p(b, e))


def swish64(b, x, name=""):
    return b.fmul(x, sigmoid64(b, x))


def scalar_elu(em, a, node):
    """x for x > 0, else α·expm1(min(x, 0)) (in the operand's dtype, as NumPy)."""
    b, x = em.b, a[0]
    neg = M.minimum(b, x, _k(em, node, 0.0))
    em1 = M.widened(M.expm1)(b, neg)
    return b.select(b.fcmp_ordered(">", x, _k(em, node, 0.0)), x,
                    b.fmul(_k(em, node, node.attrs["alpha"]), em1))


def scalar_neg(em, a, node):
    return em.b.fneg(a[0]) if _fl(node) else em.b.sub(_k(em, node, 0), a[0])


def scalar_abs(em, a, node):
    b, x = em.b, a[0]
    if _fl(node):
        return b.call(_intr(em, "llvm.fabs", x), [x])
    return b.select(b.icmp_signed("<", x, _k(em, node, 0)), b.sub(_k(em, node, 0), x), x)


def scalar_sign(em, a, node):
    """+1, −1, or x itself (0 or NaN)."""
    b, x = em.b, a[0]
    if _fl(node):
        gt, lt = b.fcmp_ordered(">", x, _k(em, node, 0)), b.fcmp_ordered("<", x, _k(em, node, 0))
    else:
        gt, lt = b.icmp_signed(">", x, _k(em, node, 0)), b.icmp_signed("<", x, _k(em, node, 0))
    return b.select(gt, _k(em, node, 1), b.select(lt, _k(em, node, -1), x))


def scalar_relu(em, a, node):
    x = a[0]
    return M.relu(em.b, x)


def scalar_leaky_relu(em, a, node):
    b, x = em.b, a[0]
    return b.select(b.fcmp_ordered(">", x, _k(em, node, 0.0)), x,
                    b.fmul(_k(em, node, node.attrs["alpha"]), x))


def libm_call(name):
    return Elementwise(lambda em, a, node: em.b.call(_intr(em, name, a[0], 1), [a[0]]))


# ---- binary -------------------------------------------------------------------------------
def arith(fop, iop):
    def scalar(em, a, node):
        if _fl(node):
            return getattr(em.b, fop)(a[0], a[1])
        return getattr(em.b, iop)(a[0], a[1])
    return Elementwise(scalar)


def binary_intrinsic(name):
    return Elementwise(lambda em, a, node: em.b.call(_intr(em, name, a[0], 2), [a[0], a[1]]))


def compare(pred: str):
    """A comparison `pred` (">", ">=", "<", "<=", "==", "!="; the op record gives it) as 0/1:
    ordered on floats (false when either side is NaN), except "!=", which is unordered (true)."""
    def scalar(em, a, node):
        b = em.b
        if node.inputs[0].dtype in FLOATS:
            bit = (b.fcmp_unordered(pred, a[0], a[1]) if pred == "!="
                   else b.fcmp_ordered(pred, a[0], a[1]))
        else:
            bit = b.icmp_signed(pred, a[0], a[1])
        return b.zext(bit, I8)
    return Elementwise(scalar)


def scalar_where(em, a, node):
    b = em.b
    return b.select(b.icmp_unsigned("!=", a[0], ir.Constant(I8, 0)), a[1], a[2])


def scalar_cast(em, a, node):
    """NumPy's astype: float↔float rounds, int/bool → float converts, float → bool is x ≠ 0
    (NaN is True), float → int truncates toward zero."""
    b, x = em.b, a[0]
    src, dst = node.inputs[0].dtype, node.out.dtype
    ty = em.ll(dst)
    if src == dst:
        return x
    if dst == "bool":
        bit = (b.fcmp_unordered("!=", x, ir.Constant(x.type, 0.0)) if src in FLOATS
               else b.icmp_unsigned("!=", x, ir.Constant(x.type, 0)))
        return b.zext(bit, I8)
    if dst in FLOATS:
        if src in FLOATS:
            return b.fpext(x, ty) if dst == "f64" else b.fptrunc(x, ty)
        return b.uitofp(x, ty) if src == "bool" else b.sitofp(x, ty)
    # dst is i64
    return b.zext(x, ty) if src == "bool" else b.fptosi(x, ty)


def scalar_dropout(em, a, node):
    """x/(1−p) where kept, else 0."""
    b = em.b
    kept = b.fdiv(a[0], _k(em, node, 1 - node.attrs["p"]))
    return b.select(b.icmp_unsigned("!=", a[1], ir.Constant(I8, 0)), kept, _k(em, node, 0.0))
