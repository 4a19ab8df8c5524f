"""LLVM lowerings of the shape ops and matmul.

reshape, transpose, getitem, putitem and broadcast_to are strided copies: the operand is read
(or, for putitem, written) through a view whose strides encode the op (a permutation of the
strides; a slice's start·stride offset and step·stride; 0 along a new or broadcast axis).

matmul calls BLAS gemm (runtime/blas.py binds the symbols); a small product (m·n·k ≤ 32768)
whose operands can be read contiguously is inline loops instead, cheaper than the call.
Row-major C[M,N] = A[M,K]·B[K,N] is column-major Cᵀ = Bᵀ·Aᵀ:
gemm('N', 'N', N, M, K, 1, B, N, A, K, 0, C, N).  An operand that is a 2-D transpose of another
value (or has the node's transpose_a/transpose_b set) is passed with the flag 'T' instead.
"""
from __future__ import annotations

from dataclasses import dataclass

from llvmlite import ir

from runtime.blas import INT_BITS as BLAS_INT_BITS

from ..ir import UnsupportedError
from .llvm_dims import Dim
from .llvm_types import I8, PTR, VOID, View, const_i64, contiguous_strides

BLAS_INT = ir.IntType(BLAS_INT_BITS)          # gemm's INTEGER arguments
BLAS_INT_MAX = 2 ** (BLAS_INT_BITS - 1) - 1

GEMM = {"f64": "gradc_dgemm", "f32": "gradc_sgemm"}
SMALL_GEMM = 1 << 15       # m·n·k up to this: inline loops instead of a BLAS call
UNROLL_K = 8               # a product this short is written out in the loop over j


@dataclass(frozen=True)
class Lowering:
    fn: object

    @property
    def runtime_sizes(self) -> bool:
        """Whether the lowering takes run-time sizes (llvm_dims.py): its function says so."""
        return getattr(self.fn, "runtime_sizes", False)

    def lower(self, em, node):
        self.fn(em, node)


class ReadThrough(Lowering):
    """broadcast_to: a loop-nest reader (an elementwise node or fusion group) reads the
    operand itself with stride 0 along the broadcast axes (ModuleEmitter.skipped: `through`),
    so the broadcast is stored only for other readers."""
    reads_through = True


def _runtime_sized(fn):
    fn.runtime_sizes = True
    return fn


@_runtime_sized


def lower_reshape(em, node):
    n = node.out.type.size
    em.copy(View(node.out, 0, (1,)), View(node.inputs[0], 0, (1,)), (n,))


@_runtime_sized
def lower_transpose(em, node):
    x = node.inputs[0]
    xs = contiguous_strides(x.shape)
    src = View(x, 0, tuple(xs[p] for p in node.attrs["perm"]))
    em.copy(em.view(node.out), src, node.out.shape)


def index_view(value, index) -> View:
    """The view of `value[index]` (index in the attr form: ints, (start, stop, step), None).
    With run-time sizes (llvm_dims.py) an axis of size N takes only the whole slice (0, N, 1)
    (getitem's shape rule), so starts and ints index fixed axes; strides and the offset
    may be Dims (axes of size N after them)."""
    xs = contiguous_strides(value.shape)
    offset, strides, dim = 0, [], 0
    for e in index:
        if e is None:
            strides.append(0)
            continue
        if isinstance(e, tuple):
            start, _stop, step = e
            offset += start * xs[dim]
            strides.append(step * xs[dim])
        else:
            i = e + value.shape[dim] if e < 0 else e
            offset += i * xs[dim]
        dim += 1
    strides += xs[dim:]
    return View(value, offset, tuple(strides))


@_runtime_sized
def lower_getitem(em, node):
    src = index_view(node.inputs[0], node.attrs["index"])
    em.copy(em.view(node.out), src, node.out.shape)


@_runtime_sized
def lower_putitem(em, node):
    g = node.inputs[0]
    zero = ir.Constant(em.ll(node.out.dtype), 0.0 if node.out.type.is_float else 0)
    em.fill(node.out, zero)
    em.copy(index_view(node.out, node.attrs["index"]), em.view(g), g.shape)


@_runtime_sized
def lower_broadcast_to(em, node):
    em.copy(em.view(node.out), em.view(node.inputs[0], node.out.shape), node.out.shape)


# ---- matmul through BLAS ------------------------------------------------------------------
def transposed_source(em, value):
    """The value whose 2-D transpose `value` is, or None."""
    node = em.producers.get(value.name)
    fn = getattr(em.lowerings[node.op], "transpose_of", None) if node is not None else None
    return fn(node) if fn else None


def _operand(em, value, flagged):
    """(buffer value, flag, leading dimension) of a row-major operand for column-major gemm:
    `flagged` is the matmul's own transpose attr, a producing 2-D transpose flips it again."""
    src = transposed_source(em, value)
    if src is not None:
        value, flagged = src, not flagged
    ld = value.shape[1]
    return value, "T" if flagged else "N", ld if isinstance(ld, Dim) else max(1, ld)


def _gemm_decl(em, dtype):
    name = GEMM[dtype]
    fn = em.module.globals.get(name)
    if fn is None:
        fn = ir.Function(em.module, ir.FunctionType(VOID, [PTR] * 13), name=name)
    return fn


def _product(em, node) -> tuple:
    """(m, n, k, (A buffer, flag, lda), (B buffer, flag, ldb)) of C = op(A)·op(B)."""
    a, bm = node.inputs
    m, n = node.out.shape
    k = a.shape[0] if node.attrs.get("transpose_a") else a.shape[1]
    return (m, n, k, _operand(em, a, bool(node.attrs.get("transpose_a"))),
            _operand(em, bm, bool(node.attrs.get("transpose_b"))))


def _inline(m, n, k, aflag, bflag) -> bool:
    if any(isinstance(d, Dim) for d in (m, n, k)):
        return False                 # a run-time size: BLAS (llvm_dims.py)
    return m * n * k <= SMALL_GEMM and (k <= UNROLL_K or (bflag == "N" and n >= 8)
                                        or (aflag, bflag) == ("N", "T"))


@_runtime_sized
def lower_matmul(em, node):
    """C = op(A)·op(B) (op = transpose where the node's transpose_a/transpose_b is set)."""
    out = node.out
    m, n, k, (asrc, aflag, _), (bsrc, bflag, _) = _product(em, node)
    if m == 0 or n == 0:
        return
    if k == 0:
        em.fill(out, ir.Constant(em.ll(out.dtype), 0.0))
        return
    if _inline(m, n, k, aflag, bflag):
        _small_matmul(em, out, (asrc, aflag), (bsrc, bflag), m, n, k)
        return
    _gemm(em, node, out, 0.0)


def check_blas_ints(name: str, loc: str | None = None, **ints) -> None:
    """Every gemm integer (m, n, k, lda, ldb, ldc) must fit the BLAS's INTEGER: SciPy's
    OpenBLAS is LP64 (runtime/blas.py), a 32-bit C int, so 2**31 or more would be silently
    truncated.  (BLAS forms the products, such as lda·k, in 64-bit internally.)"""
    bad = [f"{k}={v}" for k, v in ints.items()
           if not isinstance(v, Dim) and not 0 <= int(v) <= BLAS_INT_MAX]
    if bad:
        where = f" at {loc}" if loc else ""
        raise UnsupportedError(
            f"matmul {name!r}{where}: gemm's {', '.join(bad)} "
            f"{'does' if len(bad) == 1 else 'do'} not fit the BLAS's {BLAS_INT_BITS}-bit "
            f"integers (at most {BLAS_INT_MAX}); use backend='numpy' for a product this large, "
            "or split it into smaller matmuls")


def _gemm(em, node, dest, beta: float):
    """dest = op(A)·op(B) + beta·dest through BLAS."""
    m, n, k, (asrc, aflag, lda), (bsrc, bflag, ldb) = _product(em, node)
    # gemm's own argument names: C is column-major Cᵀ = op(B)ᵀ·op(A)ᵀ (module docstring)
    ldc = n if isinstance(n, Dim) else max(1, n)
    check_blas_ints(node.out.name, node.loc, m=n, n=m, k=k, lda=ldb, ldb=lda, ldc=ldc)
    ty = em.ll(dest.dtype)

    def cell(t, v, name):          # (a run-time size: its i64 value cut to the BLAS's int)
        init = (ir.Constant(t, v) if not isinstance(v, Dim) else
                em.b.trunc(const_i64(v), t) if t.width < 64 else const_i64(v))
        return em.var(t, init, name=f"{em.ident[node.out.name]}.{name}")
    args = [cell(I8, ord(bflag), "transa"), cell(I8, ord(aflag), "transb"),
            cell(BLAS_INT, n, "m"), cell(BLAS_INT, m, "n"), cell(BLAS_INT, k, "k"),
            cell(ty, 1.0, "alpha"), em.ptr(bsrc), cell(BLAS_INT, ldb, "lda"), em.ptr(asrc),
            cell(BLAS_INT, lda, "ldb"), cell(ty, beta, "beta"), em.ptr(dest),
            cell(BLAS_INT, ldc, "ldc")]
    em.b.call(_gemm_decl(em, dest.dtype), args)


def _small_matmul(em, out, a, bm, m, n, k):
    """C = op(A)·op(B) as loops (a BLAS call costs ~1 µs, more than a small product): for
    k ≤ 8 the sum over p written out inside a loop over j (vectorized, A[i, p] hoisted); else
    in the two orders that read memory contiguously: rows of C as axpys over rows of op(B)
    (vectorized over j) when op(B) is untransposed and C has ≥ 8 columns, else (op(A)
    untransposed, op(B) transposed) dot products of two contiguous rows."""
    b = em.b
    ty = em.ll(out.dtype)
    fl = ("contract",)

    def elem(operand, rows, cols, r, c):           # op(X)[r, c] of an op(X) of shape (rows, cols)
        value, flag = operand
        at = b.add(b.mul(r, i64(cols)), c) if flag == "N" else b.add(b.mul(c, i64(rows)), r)
        return em.load(value, at)
    zero = ir.Constant(ty, 0.0)
    with em.loop(m, "i") as i:
        if k <= UNROLL_K:           # C[i, j] = Σₚ A[i, p]·B[p, j], p unrolled, j vectorized
            with em.loop(n, "j") as j:
                acc = None
                for p in range(k):
                    prod = b.fmul(elem(a, m, k, i, i64(p)), elem(bm, k, n, i64(p), j), flags=fl)
                    acc = prod if acc is None else b.fadd(acc, prod, flags=fl)
                em.store(acc, out, b.add(b.mul(i, i64(n)), j))
        elif bm[1] == "N" and n >= 8:
            row = b.mul(i, i64(n))
            with em.loop(n, "j") as j:
                em.store(zero, out, b.add(row, j))
            with em.loop(k, "p") as p:
                aip = elem(a, m, k, i, p)
                with em.loop(n, "j") as j:
                    at = b.add(row, j)
                    prod = b.fmul(aip, elem(bm, k, n, p, j), flags=fl)
                    em.store(b.fadd(em.load(out, at), prod, flags=fl), out, at)
        else:
            with em.loop(n, "j") as j:
                acc = em.var(ty, zero)
                with em.loop(k, "p") as p:
                    prod = b.fmul(elem(a, m, k, i, p), elem(bm, k, n, p, j), flags=fl)
                    b.store(b.fadd(em.get(acc, ty), prod, flags=("reassoc", "contract")), acc)
                em.store(em.get(acc, ty), out, b.add(b.mul(i, i64(n)), j))


def i64(v):
    return ir.Constant(ir.IntType(64), int(v))


class Matmul(Lowering):
    """matmul; `folds(node)` names the operands read through a transpose flag;
    `accumulate_into(dest)` adds the product onto dest (gemm's beta = 1), for y = A·B + u."""

    def folds(self, em, node):
        return [v for v in node.inputs if transposed_source(em, v) is not None]

    def can_accumulate(self, em, node) -> bool:
        m, n, k, (_, aflag, _), (_, bflag, _) = _product(em, node)
        return all(d > 0 for d in (m, n, k)) and not _inline(m, n, k, aflag, bflag)

    def accumulate_into(self, em, node, dest):
        _gemm(em, node, dest, 1.0)


class Transpose(Lowering):
    """transpose; `transpose_of(node)` is the operand of a 2-D transpose (BLAS reads it with
    the 'T' flag instead of a copy)."""

    def transpose_of(self, node):
        return node.inputs[0] if tuple(node.attrs["perm"]) == (1, 0) else None

    def swap_of(self, node):
        """The operand of a transpose that swaps the last two axes and keeps the others (a
        stack of matrices transposed: batch_matmul reads it with the 'T' flag), or None."""
        r = node.inputs[0].ndim
        swap = tuple(range(r - 2)) + (r - 1, r - 2)
        return node.inputs[0] if r >= 2 and tuple(node.attrs["perm"]) == swap else None
