"""LLVM lowerings of the shape ops and matmul.

reshape, transpose, getitem, putitem and broadcast_to are strided copies: the operand is read
(or, for putitem, written) through a view whose strides encode the op (a permutation of the
strides; a slice's start·stride offset and step·stride; 0 along a new or broadcast axis).

matmul calls BLAS gemm (runtime/blas.py binds the symbols); a small product (m·n·k ≤ 32768)
whose operands can be read contiguously is inline loops instead, cheaper than the call.
Row-major C[M,N] = A[M,K]·B[K,N] is column-major Cᵀ = Bᵀ·Aᵀ:
gemm('N', 'N', N, M, K, 1, B, N, A, K, 0, C, N).  An operand that is a 2-D transpose of another
value (or has the node's transpose_a/transpose_b set) is passed with the flag 'T' instead.
With a run-time size (llvm_dims.py) the choice between the two is made when the kernel runs:
a branch on m·n·k computed from the sizes (`size_test`), loops with run-time trip counts on
one side and gemm on the other; where the fixed sizes already decide it, no branch.
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


# ---- size tests a run-time size may leave to the kernel (llvm_dims.py) ----------------------
# A test is a bool where the sizes decide it (always, for fixed sizes); where a run-time size
# leaves it open it is None, or, given the emitter `em`, the i1 that decides it when the
# kernel runs.
def _compare(x, op: str, c: int, em=None):
    """x ≤ c or x ≥ c (`op`) for a size x (an int or a Dim) and an int c."""
    try:
        return x <= c if op == "<=" else x >= c
    except TypeError:                        # a Dim the bound 'every size ≥ 1' leaves open
        return None if em is None else em.b.icmp_signed(op, const_i64(x), const_i64(c))


def _join(tests, op: str, em=None):
    """The tests joined by 'or' / 'and' (`op`): decided where a known one decides it (Kleene
    logic), else None, or with `em` the open ones' i1s joined."""
    decides = op == "or"                     # True decides an 'or', False an 'and'
    if any(t is decides for t in tests):
        return decides
    open_ = [t for t in tests if t is not (not decides)]
    if not open_:
        return not decides
    if em is None or any(t is None for t in open_):
        return None
    out = open_[0]
    for t in open_[1:]:
        out = em.b.or_(out, t) if decides else em.b.and_(out, t)
    return out


def size_test(dims, limit: int, em=None):
    """prod(dims) ≤ limit, each factor tested too: their i64 product cannot wrap around then
    (each factor ≤ limit), and a product of Dims whose least value is over `limit` is
    False when the kernel is emitted (N·784·100 > 32768)."""
    total = 1
    for d in dims:
        total = total * d
    return _join([_compare(d, "<=", limit, em) for d in dims]
                 + [_compare(total, "<=", limit, em)], "and", em)


def branch(em, test, small, large) -> None:
    """`small()` where the test holds, else `large()`: one of them where it is decided, a
    run-time branch on the i1 otherwise."""
    if test is True or test is False:
        (small if test else large)()
        return
    with em.b.if_else(test) as (then, otherwise):
        with then:
            small()
        with otherwise:
            large()


def _inline(m, n, k, aflag, bflag, em=None):
    """Whether C = op(A)·op(B) is inline loops rather than gemm: m·n·k ≤ SMALL_GEMM and a loop
    order reading memory contiguously (`_small_matmul`).  A test (see above)."""
    order = _join([_compare(k, "<=", UNROLL_K, em),
                   _join([bflag == "N", _compare(n, ">=", 8, em)], "and", em),
                   (aflag, bflag) == ("N", "T")], "or", em)
    if order is False:                       # gemm whatever the sizes: no test emitted
        return False
    return _join([size_test((m, n, k), SMALL_GEMM, em), order], "and", em)


def _not(test, em):
    return (not test) if test is True or test is False else (None if test is None
                                                             else em.b.not_(test))


def blas_or_loops(small, ints, em):
    """The inline-loop test `small`, or else where a run-time gemm integer (m, n, k, a leading
    dimension) exceeds the BLAS's INTEGER when the kernel runs: the loops then (i64 indices),
    never a gemm given a truncated size.  Fixed integers are refused when emitted
    (`check_blas_ints`)."""
    fits = _join([_compare(v, "<=", BLAS_INT_MAX, em) for v in ints if isinstance(v, Dim)],
                 "and", em)
    return _join([small, _not(fits, em)], "or", em)


@_runtime_sized
def lower_matmul(em, node):
    """C = op(A)·op(B) (op = transpose where the node's transpose_a/transpose_b is set)."""
    out = node.out
    m, n, k, (asrc, aflag, lda), (bsrc, bflag, ldb) = _product(em, node)
    if m == 0 or n == 0:
        return
    if k == 0:
        em.fill(out, ir.Constant(em.ll(out.dtype), 0.0))
        return
    branch(em, blas_or_loops(_inline(m, n, k, aflag, bflag, em), (m, n, k, lda, ldb), em),
           lambda: _small_matmul(em, out, (asrc, aflag), (bsrc, bflag), m, n, k),
           lambda: _gemm(em, node, out, 0.0))


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


def gemm_cell(em, t, v, name: str):
    """A variable holding gemm's argument v of type t (gemm takes pointers): a run-time size
    is its i64 value cut to the BLAS's int."""
    init = (ir.Constant(t, v) if not isinstance(v, Dim) else
            em.b.trunc(const_i64(v), t) if t.width < 64 else const_i64(v))
    return em.var(t, init, name=name)


def _gemm(em, node, dest, beta: float):
    """dest = op(A)·op(B) + beta·dest through BLAS."""
    m, n, k, (asrc, aflag, lda), (bsrc, bflag, ldb) = _product(em, node)
    # gemm's own argument names: C is column-major Cᵀ = op(B)ᵀ·op(A)ᵀ (module docstring)
    ldc = n if isinstance(n, Dim) else max(1, n)
    check_blas_ints(node.out.name, node.loc, m=n, n=m, k=k, lda=ldb, ldb=lda, ldc=ldc)
    ty = em.ll(dest.dtype)

    def cell(t, v, name):
        return gemm_cell(em, t, v, f"{em.ident[node.out.name]}.{name}")
    args = [cell(I8, ord(bflag), "transa"), cell(I8, ord(aflag), "transb"),
            cell(BLAS_INT, n, "m"), cell(BLAS_INT, m, "n"), cell(BLAS_INT, k, "k"),
            cell(ty, 1.0, "alpha"), em.ptr(bsrc), cell(BLAS_INT, ldb, "lda"), em.ptr(asrc),
            cell(BLAS_INT, lda, "ldb"), cell(ty, beta, "beta"), em.ptr(dest),
            cell(BLAS_INT, ldc, "ldc")]
    em.b.call(_gemm_decl(em, dest.dtype), args)


def _small_matmul(em, out, a, bm, m, n, k, add: bool = False):
    """C = op(A)·op(B) as loops (a BLAS call costs ~1 µs, more than a small product), or with
    `add` C += op(A)·op(B) (the product accumulated onto a sum, `Matmul.accumulate_into`): for
    k ≤ 8 the sum over p written out inside a loop over j (vectorized, A[i, p] hoisted); else
    in the two orders that read memory contiguously: rows of C as axpys over rows of op(B)
    (vectorized over j) when op(B) is untransposed and C has ≥ 8 columns (or a run-time
    number of them), else dot products (contiguous rows when op(A) is untransposed and op(B)
    transposed).  Run-time sizes are run-time trip counts; k is written out only when fixed."""
    b = em.b
    ty = em.ll(out.dtype)
    fl = ("contract",)

    def elem(operand, rows, cols, r, c):           # op(X)[r, c] of an op(X) of shape (rows, cols)
        value, flag = operand
        at = (b.add(b.mul(r, const_i64(cols)), c) if flag == "N"
              else b.add(b.mul(c, const_i64(rows)), r))
        return em.load(value, at)
    zero = ir.Constant(ty, 0.0)
    with em.loop(m, "i") as i:
        row = b.mul(i, const_i64(n))
        if _compare(k, "<=", UNROLL_K) is True:   # C[i, j] = Σₚ A[i, p]·B[p, j], p unrolled
            with em.loop(n, "j") as j:
                acc = em.load(out, b.add(row, j)) if add else None
                for p in range(k):
                    prod = b.fmul(elem(a, m, k, i, i64(p)), elem(bm, k, n, i64(p), j), flags=fl)
                    acc = prod if acc is None else b.fadd(acc, prod, flags=fl)
                em.store(acc, out, b.add(row, j))
        elif bm[1] == "N" and _compare(n, ">=", 8) is not False:
            if not add:
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
                acc = em.var(ty, em.load(out, b.add(row, j)) if add else zero)
                with em.loop(k, "p") as p:
                    prod = b.fmul(elem(a, m, k, i, p), elem(bm, k, n, p, j), flags=fl)
                    b.store(b.fadd(em.get(acc, ty), prod, flags=("reassoc", "contract")), acc)
                em.store(em.get(acc, ty), out, b.add(row, j))


def i64(v):
    return ir.Constant(ir.IntType(64), int(v))


class Matmul(Lowering):
    """matmul; `folds(node)` names the operands read through a transpose flag;
    `accumulate_into(dest)` adds the product onto dest (gemm's beta = 1), for y = A·B + u."""

    def folds(self, em, node):
        return [v for v in node.inputs if transposed_source(em, v) is not None]

    def can_accumulate(self, em, node) -> bool:
        """Where gemm may run (fixed sizes over the inline size, or a run-time size leaving
        it open: inline loops adding onto dest on the small side)."""
        m, n, k, (_, aflag, _), (_, bflag, _) = _product(em, node)
        return all(d > 0 for d in (m, n, k)) and _inline(m, n, k, aflag, bflag) is not True

    def accumulate_into(self, em, node, dest):
        m, n, k, (asrc, aflag, lda), (bsrc, bflag, ldb) = _product(em, node)
        branch(em, blas_or_loops(_inline(m, n, k, aflag, bflag, em), (m, n, k, lda, ldb), em),
               lambda: _small_matmul(em, dest, (asrc, aflag), (bsrc, bflag), m, n, k, add=True),
               lambda: _gemm(em, node, dest, 1.0))


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
