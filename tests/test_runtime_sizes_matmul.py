"""Run-time sizes through products (issue 17.3 part 3): batch_matmul with a dimension name on
its batch, row or contraction axis (and einsum, which lowers to it) compiles to ONE native
function for every N; matmul and batch_matmul choose inline loops or BLAS when the kernel runs,
from m·n·k computed from N, against the threshold the fixed sizes use
(compiler/codegen/llvm_shape.py `_inline`, llvm_batch.py SMALL_PRODUCT).

Oracles: the NumPy backend, float64 central differences, and, for the branch, the kernel's IR
run here with a counting gemm in place of BLAS's (the calls it makes at each N must be the
calls the per-size code makes at that N)."""
from __future__ import annotations

import ctypes

import numpy as np
import pytest
from llvmlite import binding as llvm

import compiler
from compiler.codegen import llvm_batch, llvm_dims, llvm_emit, llvm_shape
from compiler.ir import NUMPY_DTYPE
from compiler.shapes import resolve
from frontends import dsl
from frontends.dsl import f64
from runtime import blas

SIZES = (1, 4, 33)


# ---- batch_matmul and einsum with a symbolic axis ------------------------------------------
def bmm_batch(A, B, W):          # the batch axis: N products of [3, 4]·[4, 2]
    return dsl.sum(dsl.tanh(A @ B) * W)


def bmm_broadcast(A, B, W):      # B's batch axis of 1 broadcasts over N: dB sums over N
    return dsl.sum(dsl.tanh(A @ B) * W)


def bmm_rows(A, B, W):           # the row axis: m = N, m·n·k = 128·N crosses SMALL_PRODUCT
    return dsl.sum(dsl.tanh(A @ B) * W)


def bmm_contract(A, B, W):       # the contraction axis: k = N
    return dsl.sum(dsl.tanh(A @ B) * W)


def attention(Q, K, V, W):       # scores over N keys per query, both einsums symbolic in N
    s = dsl.einsum("nqd,nkd->nqk", Q, K)
    return dsl.sum(dsl.einsum("nqk,nkd->nqd", dsl.tanh(s), V) * W)


def heads(Q, K, W):              # the query axis symbolic: [2, N, 8]·[2, 8, 20]ᵀ
    return dsl.sum(dsl.tanh(dsl.einsum("hqd,hkd->hqk", Q, K)) * W)


def pooled(X, Y):                # contracted over N: Σₙ X[b, n, d]·Y[b, n, e]
    return dsl.sum(dsl.tanh(dsl.einsum("bnd,bne->bde", X, Y)))


def multi_head(Q, K):           # the batch named, merged with the heads before: ('NN', 3, 4)
    return dsl.sum(dsl.tanh(dsl.einsum("bhqd,bhkd->bhqk", Q, K)))


def projection(X, W):            # a named row index kept beside another: ('NNN', 4) before
    return dsl.sum(dsl.tanh(dsl.einsum("nqd,de->nqe", X, W)))


def projection_b(W, X):          # ... on the right operand's side
    return dsl.sum(dsl.tanh(dsl.einsum("ed,nqd->eqn", W, X)))


# np.einsum on the same arrays: the forward values (the NumPy backend runs the same graph)
EINSUM = {
    "attention": lambda Q, K, V, W: np.sum(np.einsum(
        "nqk,nkd->nqd", np.tanh(np.einsum("nqd,nkd->nqk", Q, K)), V) * W),
    "heads": lambda Q, K, W: np.sum(np.tanh(np.einsum("hqd,hkd->hqk", Q, K)) * W),
    "pooled": lambda X, Y: np.sum(np.tanh(np.einsum("bnd,bne->bde", X, Y))),
    "multi_head": lambda Q, K: np.sum(np.tanh(np.einsum("bhqd,bhkd->bhqk", Q, K))),
    "projection": lambda X, W: np.sum(np.tanh(np.einsum("nqd,de->nqe", X, W))),
    "projection_b": lambda W, X: np.sum(np.tanh(np.einsum("ed,nqd->eqn", W, X))),
}

MODELS = {
    "batch": (bmm_batch, {"A": ("N", 3, 4), "B": ("N", 4, 2), "W": ("N", 3, 2)}),
    "broadcast": (bmm_broadcast, {"A": ("N", 3, 4), "B": (1, 4, 2), "W": ("N", 3, 2)}),
    "rows": (bmm_rows, {"A": (2, "N", 16), "B": (2, 16, 8), "W": (2, "N", 8)}),
    "contract": (bmm_contract, {"A": (2, 3, "N"), "B": (2, "N", 5), "W": (2, 3, 5)}),
    "attention": (attention, {"Q": ("N", 3, 4), "K": ("N", 5, 4), "V": ("N", 5, 4),
                              "W": ("N", 3, 4)}),
    "heads": (heads, {"Q": (2, "N", 8), "K": (2, 20, 8), "W": (2, "N", 20)}),
    "pooled": (pooled, {"X": (2, "N", 3), "Y": (2, "N", 4)}),
    "multi_head": (multi_head, {"Q": ("N", 2, 3, 4), "K": ("N", 2, 5, 4)}),
    "projection": (projection, {"X": ("N", 3, 4), "W": (4, 5)}),
    "projection_b": (projection_b, {"W": (5, 4), "X": ("N", 3, 4)}),
}


def _trace(model, specs, n=None):
    return dsl.trace(model, **{k: f64[tuple(n if d == "N" and n is not None else d
                                            for d in s)] for k, s in specs.items()})


def _args(specs, n, seed=0):
    rng = np.random.default_rng(seed + n)
    return {k: rng.standard_normal(tuple(n if d == "N" else d for d in s))
            for k, s in specs.items()}


def _central_differences(fn, args, name, h=1e-6, picks=24, seed=0):
    """(indices, d out / d args[name] at them) by central differences of the compiled `fn`."""
    x = args[name]
    rng = np.random.default_rng(seed)
    flat = rng.choice(x.size, size=min(picks, x.size), replace=False)
    got = []
    for i in flat:
        at = np.unravel_index(i, x.shape)
        up, down = x.copy(), x.copy()
        up[at] += h
        down[at] -= h
        got.append((fn(**{**args, name: up})["out"] - fn(**{**args, name: down})["out"])
                   / (2 * h))
    return [np.unravel_index(i, x.shape) for i in flat], np.array(got)


@pytest.mark.parametrize("case", sorted(MODELS))
def test_one_native_function_for_every_n(case):
    """N = 1, 4, 33: one native function (it reads N when it runs); every output equals the
    NumPy backend's and every gradient float64 central differences of the kernel itself."""
    model, specs = MODELS[case]
    g = compiler.grad(_trace(model, specs))
    assert llvm_dims.runtime_capable(g, llvm_emit.lowerings())
    fl, fn = compiler.compile(g, backend="llvm"), compiler.compile(g, backend="numpy")
    for n in SIZES:
        args = _args(specs, n)
        got, want = fl(**args), fn(**args)
        for k in want:
            np.testing.assert_allclose(got[k], want[k], rtol=1e-12, atol=1e-12,
                                       err_msg=f"{k} at N={n}")
        if case in EINSUM:
            assert got["out"] == pytest.approx(EINSUM[case](**args), rel=1e-12)
        for name in specs:
            at, fd = _central_differences(fl, args, name)
            np.testing.assert_allclose([got["d" + name][i] for i in at], fd, rtol=1e-6,
                                       atol=1e-8, err_msg=f"d{name} at N={n}")
    assert fl.specializations == 1
    assert "a run-time size" in fl.source


def test_rows_branch_on_both_sides_of_small_product():
    """[2, N, 16]·[2, 16, 8]: 128·N multiply-adds per matrix, inline loops up to SMALL_PRODUCT
    (N ≤ 16: exactly SMALL_PRODUCT at 16), gemm calls above; the one kernel agrees with the
    per-size code on both sides."""
    model, specs = MODELS["rows"]
    limit = llvm_batch.SMALL_PRODUCT // 128
    assert limit * 128 == llvm_batch.SMALL_PRODUCT
    g = compiler.grad(_trace(model, specs))
    fl = compiler.compile(g, backend="llvm")
    for n in (1, limit, limit + 1, 40):
        args = _args(specs, n)
        fixed = compiler.compile(compiler.grad(_trace(model, specs, n)), backend="llvm")
        got, want = fl(**args), fixed(**args)
        for k in want:
            np.testing.assert_allclose(got[k], want[k], rtol=1e-12, atol=1e-13,
                                       err_msg=f"{k} at N={n}")
    assert fl.specializations == 1


def test_named_contraction_merged_with_another_index_is_refused():
    """Contracting N together with another index would need an axis of N·T elements, which
    no shape names: a clear UnsupportedError, not a bogus shape ('NNN') or a TypeError."""
    with pytest.raises(compiler.UnsupportedError, match="contract the named index"):
        dsl.trace(lambda X, Y: dsl.sum(dsl.einsum("ntd,nte->de", X, Y)),
                  X=f64["N", 3, 4], Y=f64["N", 3, 5])
    # contracting N alone is one axis: fine (and so is the numpy oracle)
    g = dsl.trace(lambda X, Y: dsl.sum(dsl.einsum("nd,ne->de", X, Y)), X=f64["N", 4],
                  Y=f64["N", 5])
    X, Y = np.ones((6, 4)), np.ones((6, 5))
    assert compiler.compile(g, backend="llvm")(X=X, Y=Y)["out"] == 6 * 4 * 5


# ---- the small-gemm branch of matmul, run with a counting gemm -----------------------------
_CALLS = []
_GEMM = ctypes.CFUNCTYPE(None, *[ctypes.c_void_p] * 13)


@_GEMM
def _counting_dgemm(*args):
    _CALLS.append(1)
    _REAL_DGEMM[0](*args)


_REAL_DGEMM = []


def run_counting(graph, args: dict) -> tuple:
    """(outputs, gemm calls) of the run-time-size kernel of `graph` at the sizes of `args`:
    its IR compiled here with every gemm call going through `_counting_dgemm` (which calls
    BLAS's), its buffers and sizes laid out as the pointer array the runtime passes."""
    if not _REAL_DGEMM:
        _REAL_DGEMM.append(_GEMM(blas.addresses()["gradc_dgemm"]))
        llvm.initialize_native_target()
        llvm.initialize_native_asmprinter()
        llvm.add_symbol("h3_counting_dgemm", ctypes.cast(_counting_dgemm, ctypes.c_void_p).value)
    names = llvm_dims.dim_names(graph)
    text, _ = llvm_emit.emit_llvm_plan(llvm_dims.sized_graph(graph), "h3_entry", True, names)
    assert '@"gradc_dgemm"' in text          # the kernel can call BLAS at some N
    mod = llvm.parse_assembly(text.replace('@"gradc_dgemm"', '@"h3_counting_dgemm"'))
    mod.verify()
    tm = llvm.Target.from_default_triple().create_target_machine()
    engine = llvm.create_mcjit_compiler(mod, tm)
    engine.finalize_object()
    dims = {}
    for v in graph.inputs:
        for d, size in zip(v.shape, args[v.name].shape):
            if isinstance(d, str):
                dims[d] = size
    values = llvm_emit.buffer_values(graph)
    bufs = [np.ascontiguousarray(args[v.name]) if v.name in args else
            np.zeros(resolve(v.shape, dims), dtype=NUMPY_DTYPE[v.dtype]) for v in values]
    slots = (ctypes.c_void_p * (len(bufs) + len(names)))(
        *[b.ctypes.data for b in bufs], *[dims[d] for d in names])
    entry = ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_void_p)(
        engine.get_function_address("h3_entry"))
    del _CALLS[:]
    assert entry(slots) == 0
    at = {v.name: b for v, b in zip(values, bufs)}
    return {k: at[v.name].copy() for k, v in graph.outputs.items()}, len(_CALLS)


def dense(X, W, b, V):               # X·W + b: the product accumulated onto the bias's copy
    return dsl.sum(dsl.tanh(X @ W + b) * V)


def dense_t(X, Wt, b, V):            # X·Wtᵀ: op(B) transposed, the dot-product loop order
    return dsl.sum(dsl.tanh(X @ dsl.transpose(Wt) + b) * V)


H = 64
# (model, D, transposed W): the three loop orders of _small_matmul (k = D ≤ 8 written out;
# rows as axpys; dot products), each product D·H·N multiply-adds, exactly SMALL_GEMM at the
# last N under the threshold
FORMS = {"unrolled": (dense, 2, False), "axpy": (dense, 16, False), "dot": (dense_t, 16, True)}


def _dense_specs(d, transposed, n="N"):
    return {"X": f64[n, d], ("Wt" if transposed else "W"): f64[(H, d) if transposed else (d, H)],
            "b": f64[H], "V": f64[n, H]}


def _dense_args(d, transposed, n, seed=3):
    rng = np.random.default_rng(seed + n)
    w = rng.standard_normal((H, d) if transposed else (d, H))
    return {"X": rng.standard_normal((n, d)), ("Wt" if transposed else "W"): w,
            "b": rng.standard_normal(H), "V": rng.standard_normal((n, H))}


@pytest.mark.parametrize("form", sorted(FORMS))
def test_small_gemm_branch_at_run_time(form):
    """Forward X·W + b, backward G·Wᵀ and Xᵀ·G: each D·H·N multiply-adds.  At N = 1 all three
    are under SMALL_GEMM (inline loops, no gemm call), at N = 500 all over (3 gemm calls), and
    at the last N under / first N over the threshold the kernel makes exactly the calls the
    per-size code has; outputs equal the NumPy backend to 1e-12 at every N."""
    model, d, transposed = FORMS[form]
    g = compiler.grad(dsl.trace(model, **_dense_specs(d, transposed)))
    ref = compiler.compile(g, backend="numpy")
    limit = llvm_shape.SMALL_GEMM // (d * H)
    assert limit * d * H == llvm_shape.SMALL_GEMM and limit < 500
    expect = {1: 0, 500: 3}
    for n in (1, limit, limit + 1, 500):
        args = _dense_args(d, transposed, n)
        got, calls = run_counting(g, args)
        fixed = compiler.compile(compiler.grad(dsl.trace(model, **_dense_specs(d, transposed, n))),
                                 backend="llvm")
        assert calls == fixed.source.count('call void @"gradc_dgemm"'), n
        if n in expect:
            assert calls == expect[n], (n, calls)
        want = ref(**args)
        for k in want:
            np.testing.assert_allclose(got[k], want[k], rtol=1e-12, atol=1e-12,
                                       err_msg=f"{k} at N={n}")


@pytest.mark.parametrize("form", sorted(FORMS))
def test_small_gemm_branch_through_the_compiled_function(form):
    """The same models through compile(): one native function for N = 1 and N = 500, equal to
    the NumPy backend to 1e-12 (the runtime's own BLAS binding on the gemm side)."""
    model, d, transposed = FORMS[form]
    g = compiler.grad(dsl.trace(model, **_dense_specs(d, transposed)))
    fl, ref = compiler.compile(g, backend="llvm"), compiler.compile(g, backend="numpy")
    for n in (1, 500, 1):
        args = _dense_args(d, transposed, n)
        got, want = fl(**args), ref(**args)
        for k in want:
            np.testing.assert_allclose(got[k], want[k], rtol=1e-12, atol=1e-12,
                                       err_msg=f"{k} at N={n}")
    assert fl.specializations == 1


def test_decided_sizes_emit_no_branch():
    """A product whose least m·n·k is already over SMALL_GEMM (N·784·100) is gemm with no
    test; fixed sizes keep the fixed choice (no size comparison in the IR)."""
    N = llvm_dims.Dim.of("N")
    assert llvm_shape._inline(N, 100, 784, "N", "N") is False
    assert llvm_shape._inline(N, 100, 2, "N", "N") is None          # left to the kernel
    assert llvm_shape._inline(N, 3, 100, "N", "N") is False         # no loop order fits
    assert llvm_shape._inline(64, 100, 2, "N", "N") is True
    assert llvm_shape._inline(500, 100, 2, "N", "N") is False
    assert llvm_shape.size_test((N, 784, 100), llvm_shape.SMALL_GEMM) is False
    assert llvm_shape.size_test((N, 4, 5), llvm_shape.SMALL_GEMM) is None


def test_a_run_time_gemm_integer_past_blas_int_runs_the_loops_not_a_truncated_gemm():
    """SciPy's OpenBLAS takes 32-bit integers: a run-time N of 2**31 or more cut to 32 bits
    would be a gemm of the wrong size (a silent wrong number).  Every gemm a run-time size
    reaches is guarded by N ≤ 2**31 - 1 (else the inline loops, with 64-bit indices), also
    where the product is too large ever to be inline (N·784·100); fixed sizes test nothing.
    (Running it would need arrays of 2**31 rows: the guard is checked in the IR.)"""
    def wide(X, W):
        return dsl.sum(dsl.tanh(X @ W))

    def stack(A, B):
        return dsl.sum(dsl.einsum("nij,njk->nik", A, B) ** 2)
    cases = [(compiler.grad(dsl.trace(dense, **_dense_specs(16, False))), "N"),
             (compiler.grad(dsl.trace(wide, X=f64["N", 784], W=f64[784, 100])), "N"),
             (compiler.grad(dsl.trace(stack, A=f64[3, "M", 40], B=f64[3, 40, 50])), "M")]
    for g, name in cases:
        text, _ = llvm_emit.emit_llvm_plan(llvm_dims.sized_graph(g), "e", True,
                                           llvm_dims.dim_names(g))
        guards = text.count(f'icmp sle i64 %"{name}", {2 ** 31 - 1}')
        calls = text.count('call void @"gradc_dgemm"')
        assert calls and guards >= calls, (name, guards, calls)
    fixed = compiler.grad(dsl.trace(wide, X=f64[64, 784], W=f64[784, 100]))
    assert str(2 ** 31 - 1) not in llvm_emit.emit_llvm_plan(fixed, "e")[0]
