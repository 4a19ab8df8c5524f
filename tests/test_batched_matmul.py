"""`@` on stacks of matrices follows np.matmul (issue 18.3), and dsl.einsum for one or two
operands is built from transposes, reshapes and matmul.  Oracles: np.matmul / np.einsum on
the same arrays, float64 central differences, the reference interpreter, the other backend."""
import numpy as np
import pytest

import compiler
from compiler.ir import ShapeError, UnsupportedError
from frontends import dsl
from frontends.dsl import f64

BACKENDS = ("numpy", "llvm")

# (A shape, B shape): every broadcasting rule of np.matmul that has an operand of rank >= 3
MATMUL_SHAPES = [((2, 3, 4), (2, 4, 2)),      # same batch
                 ((1, 2, 3), (3, 3, 2)),      # batch axis of size 1 broadcasts (A)
                 ((3, 2, 3), (1, 3, 2)),      # ... (B)
                 ((2, 3), (2, 3, 4)),         # a matrix times a stack
                 ((2, 2, 3), (3, 4)),         # a stack times a matrix (one 2-D product)
                 ((3,), (2, 3, 2)),           # a vector times a stack
                 ((2, 2, 3), (3,)),           # a stack times a vector
                 ((2, 1, 2, 3), (3, 3, 2))]   # rank 4 against rank 3


def _loss(A, B, W):
    return dsl.sum((A @ B) * W)


@pytest.mark.parametrize("sa,sb", MATMUL_SHAPES, ids=[f"{a}@{b}" for a, b in MATMUL_SHAPES])
def test_matmul_follows_numpy_and_its_gradient_finite_differences(sa, sb):
    rng = np.random.default_rng(1)
    A, B = rng.standard_normal(sa), rng.standard_normal(sb)
    W = rng.standard_normal(np.matmul(A, B).shape)
    g = dsl.trace(_loss, A=f64[sa], B=f64[sb], W=f64[W.shape])
    assert compiler.check_finite_differences(g, wrt=["A", "B"]).ok
    dg = compiler.grad(g, wrt=["A", "B"])
    ref = compiler.interpret(dg, {"A": A, "B": B, "W": W})
    assert ref["out"] == pytest.approx(np.sum(np.matmul(A, B) * W), rel=1e-12)
    for backend in BACKENDS:
        got = compiler.compile(dg, backend=backend)(A=A, B=B, W=W)
        for k in ("out", "dA", "dB"):
            np.testing.assert_allclose(got[k], ref[k], rtol=1e-12, atol=1e-12, err_msg=k)


def test_gemm_sized_batches_on_both_backends():
    """Products above the inline-loop size go through one gemm call per matrix (LLVM), with
    the gate rules' transposes read through gemm's flags: no transposed copy is written."""
    rng = np.random.default_rng(2)
    A, B = rng.standard_normal((3, 16, 24)), rng.standard_normal((1, 24, 20))
    g = dsl.trace(lambda A, B: dsl.sum((A @ B) * (A @ B)), A=f64[3, 16, 24], B=f64[1, 24, 20])
    dg = compiler.grad(g)
    C = np.matmul(A, B)
    want = {"out": np.sum(C * C), "dA": np.matmul(2 * C, np.swapaxes(B, 1, 2)),
            "dB": np.sum(np.matmul(np.swapaxes(A, 1, 2), 2 * C), axis=0, keepdims=True)}
    fn = compiler.compile(dg, backend="llvm")
    got = fn(A=A, B=B)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-11, err_msg=k)
    assert fn.source.count('call void @"gradc_dgemm"') == 3
    transposes = [line for line in fn.source.splitlines()
                  if line.startswith(";   ") and ": %t" in line and "= transpose" not in line
                  and "[" in line]
    copied = [n.out.name for n in compiler.optimize(dg).nodes if n.op == "transpose"
              and not any(f"%{n.out.name}: " in t and "(unused)" in t for t in transposes)]
    assert not copied, f"{copied}: copied instead of read with gemm's 'T' flag"
    np.testing.assert_allclose(compiler.compile(dg)(A=A, B=B)["dB"], want["dB"], rtol=1e-11)


def test_f32_batched_matmul():
    rng = np.random.default_rng(3)
    A = rng.standard_normal((2, 3, 4)).astype(np.float32)
    B = rng.standard_normal((2, 4, 5)).astype(np.float32)
    g = dsl.trace(lambda A, B: A @ B, A=dsl.f32[2, 3, 4], B=dsl.f32[2, 4, 5])
    for backend in BACKENDS:
        out = compiler.compile(g, backend=backend)(A=A, B=B)["out"]
        assert out.dtype == np.float32
        np.testing.assert_allclose(out, np.matmul(A, B), rtol=1e-5)


def test_matmul_shape_errors_name_the_line():
    with pytest.raises(ShapeError, match=r"do not chain \(4 != 3\).*test_batched_matmul"):
        dsl.trace(lambda A, B: A @ B, A=f64[2, 3, 4], B=f64[2, 3, 2])
    with pytest.raises(ShapeError, match=r"batch axes .* do not broadcast.*test_batched_matmul"):
        dsl.trace(lambda A, B: A @ B, A=f64[2, 3, 4], B=f64[3, 4, 2])
    with pytest.raises(ShapeError, match="rank >= 1"):
        dsl.trace(lambda A, s: A @ s, A=f64[2, 3, 4], s=f64[()])


def test_batch_matmul_text_form_round_trips():
    g = compiler.grad(dsl.trace(_loss, A=f64[1, 2, 3], B=f64[2, 3, 2], W=f64[2, 2, 2]))
    assert compiler.parse_graph(compiler.print_graph(g)) == g
    assert "batch_matmul(A, B)" in compiler.print_graph(g)


# ---- einsum ----------------------------------------------------------------------------------
EINSUMS = [("bhqd,bhkd->bhqk", (2, 2, 3, 2), (2, 2, 4, 2)),   # attention scores
           ("bhqk,bhkd->bhqd", (2, 2, 3, 4), (2, 2, 4, 2)),   # attention-weighted values
           ("ij,jk->ik", (2, 3), (3, 2)),
           ("ij,kj", (2, 3), (4, 3)),                         # implicit output: ik
           ("btd,de->bte", (2, 3, 2), (2, 4)),
           ("i,j->ij", (3,), (2,)),                           # nothing contracted
           ("ab,ab->ab", (2, 3), (2, 3)),                     # elementwise
           ("ab,ab->", (2, 3), (2, 3)),                       # full contraction
           ("ijk,kj->i", (2, 3, 2), (2, 3)),
           ("xyz,zyw->wx", (2, 3, 2), (2, 3, 2)),             # permuted output, two contracted
           ("ab,cb->b", (2, 3), (2, 3)),                      # indices only one operand has
           ("ij->ji", (2, 3), None), ("ijk->j", (2, 3, 2), None)]


def _einsum_loss(spec, two):
    if two:
        return lambda A, B, W: dsl.sum(dsl.einsum(spec, A, B) * W)
    return lambda A, W: dsl.sum(dsl.einsum(spec, A) * W)


@pytest.mark.parametrize("spec,sa,sb", EINSUMS, ids=[e[0] for e in EINSUMS])
def test_einsum_matches_numpy_and_finite_differences(spec, sa, sb):
    rng = np.random.default_rng(4)
    ins = {"A": rng.standard_normal(sa)}
    if sb is not None:
        ins["B"] = rng.standard_normal(sb)
    ref = np.einsum(spec, *ins.values())
    ins["W"] = rng.standard_normal(ref.shape)
    specs = {k: f64[v.shape] for k, v in ins.items()}
    g = dsl.trace(_einsum_loss(spec, sb is not None), **specs)
    assert compiler.check_finite_differences(g, wrt=[k for k in ins if k != "W"]).ok
    # contraction by transposes/reshapes/sums and one matmul: never an elementwise mul + sum
    ops = {n.op for n in g.nodes}
    assert ops <= {"transpose", "reshape", "sum", "matmul", "batch_matmul", "mul"}, ops
    for backend in BACKENDS:
        fn = compiler.compile(g, backend=backend)
        assert fn(**ins)["out"] == pytest.approx(np.sum(ref * ins["W"]), rel=1e-12, abs=1e-12)


def test_einsum_output_shape_and_values_both_backends():
    rng = np.random.default_rng(5)
    A, B = rng.standard_normal((2, 3, 4)), rng.standard_normal((4, 3, 5))
    g = dsl.trace(lambda A, B: dsl.einsum("xyz,zyw->wx", A, B), A=f64[2, 3, 4], B=f64[4, 3, 5])
    for backend in BACKENDS:
        out = compiler.compile(g, backend=backend)(A=A, B=B)["out"]
        np.testing.assert_allclose(out, np.einsum("xyz,zyw->wx", A, B), rtol=1e-12)


@pytest.mark.parametrize("spec,shapes,err,match", [
    ("ij,jk->ik", ((2, 3), (4, 2)), ShapeError, r"index 'j' has size 3 in 'ij' and 4 in 'jk'"),
    ("ij,jk->il", ((2, 3), (3, 2)), ShapeError, r"output index 'l' is in no operand"),
    ("ijk,jk->ik", ((2, 3), (3, 2)), ShapeError, r"operand 'ijk' has 3 indices but shape"),
    ("ii,ij->j", ((2, 2), (2, 3)), UnsupportedError, r"repeats within operand 'ii'"),
    ("ij->", ((2, 3), (3, 2)), ShapeError, r"names 1 operand\(s\) and 2 were given"),
    ("i1,1j->ij", ((2, 3), (3, 2)), ShapeError, r"indices are letters; '1' is not"),
    ("...i,i->", ((2, 3), (3,)), UnsupportedError, r"'\.\.\.' is not supported"),
    ("ij,jk->ii", ((2, 3), (3, 2)), ShapeError, r"output index repeats"),
])
def test_einsum_bad_specs_are_clear_errors(spec, shapes, err, match):
    with pytest.raises(err, match=match):
        dsl.trace(lambda A, B: dsl.einsum(spec, A, B), A=f64[shapes[0]], B=f64[shapes[1]])


def test_einsum_refuses_three_operands_and_non_traced():
    with pytest.raises(UnsupportedError, match="one or two operands"):
        dsl.trace(lambda A: dsl.einsum("i,i,i->", A, A, A), A=f64[3])
    with pytest.raises(UnsupportedError, match="operands must be traced values"):
        dsl.trace(lambda A: dsl.einsum("i,i->", A, np.ones(3)), A=f64[3])
