"""Bounded resources and honest limits (issue 15, part 4): a matmul too large for the BLAS's
32-bit integers is refused, not truncated; a dropped compiled function gives back its native
code and its linecache entry (while anything still holding it keeps it alive); `gradc` reports
an impossible `--shape` in one line with exit status 2; a masked array is refused, not read
without its mask.  None of these tests allocates a large array."""
import gc
import json
import linecache
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import compiler
from frontends import cli, dsl
from frontends.dsl import f32, f64, i64

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIG = 2 ** 31                 # one more than the largest 32-bit BLAS integer


# ---- (a) matmul dimensions and BLAS integers ----------------------------------------------------
@pytest.mark.parametrize("model, specs, what", [
    # k = 2**31 (A's row length is also gemm's leading dimension)
    (lambda A, B: dsl.sum(A @ B), dict(A=f64[1, BIG], B=f64[BIG, 1]), "k"),
    # the same product read through a transpose flag: lda of the untransposed source
    (lambda A, B: dsl.sum(dsl.transpose(A) @ B), dict(A=f64[BIG, 1], B=f64[BIG, 1]), "k"),
    (lambda A, B: dsl.sum(A @ B), dict(A=f32[1, BIG], B=f32[BIG, 1]), "k"),      # sgemm
])
def test_matmul_beyond_blas_integers_is_refused(model, specs, what):
    """A gemm argument ≥ 2**31 (scipy's OpenBLAS is LP64: Fortran INTEGER is a C int) is an
    UnsupportedError at compile time naming the matmul and the dimension; 2**31 - 1 still
    compiles; the NumPy backend (64-bit sizes throughout) has no such limit.  Nothing is
    allocated: the operands are inputs, the product is 1×1."""
    g = dsl.trace(model, name="huge", **specs)
    with pytest.raises(compiler.UnsupportedError) as e:
        compiler.compile(g, backend="llvm")
    msg = str(e.value)
    assert "matmul" in msg and f"{what}={BIG}" in msg and "2147483647" in msg, msg
    assert "BLAS" in msg and "backend='numpy'" in msg, msg
    fits = {k: v.__class__(v.dtype, tuple(BIG - 1 if d == BIG else d for d in v.shape))
            for k, v in specs.items()}
    compiler.compile(dsl.trace(model, name="fits", **fits), backend="llvm")
    compiler.compile(g, backend="numpy")


def test_blas_integer_limit_counts_every_gemm_argument():
    """m, n, k and the three leading dimensions each must fit (a unit test of the check)."""
    from compiler.codegen.llvm_shape import check_blas_ints
    check_blas_ints("p", m=BIG - 1, n=1, k=1, lda=BIG - 1, ldb=1, ldc=1)
    for arg in ("m", "n", "k", "lda", "ldb", "ldc"):
        dims = dict(dict(m=1, n=1, k=1, lda=1, ldb=1, ldc=1), **{arg: BIG})
        with pytest.raises(compiler.UnsupportedError, match=rf"matmul 'p'.*{arg}={BIG}"):
            check_blas_ints("p", **dims)


# ---- (b) native code and linecache entries are released --------------------------------------
LEAK_CHILD = textwrap.dedent("""
    import gc, json, linecache, os, sys
    import numpy as np
    import compiler
    from frontends import dsl
    from frontends.dsl import f64
    backend, count = sys.argv[1], int(sys.argv[2])

    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def one(k):      # a distinct graph each time (the constant is part of the IR)
        c = k + 0.5
        def model(W, x):
            h = dsl.tanh(W @ x + c)
            return dsl.sum(h * h) * c
        fn = compiler.compile(compiler.grad(dsl.trace(model, W=f64[8, 8], x=f64[8])),
                              backend=backend)
        out = fn(W=np.full((8, 8), 0.01), x=np.ones(8))
        assert np.isfinite(out["out"])

    def entries():
        return sum(1 for name in linecache.cache if name.startswith("<gradc"))

    for k in range(20):                     # warm up: imports, the JIT, allocator pools
        one(10 ** 6 + k)
    gc.collect()
    before, lines0 = rss(), entries()
    for k in range(count):
        one(k)
    gc.collect()
    print(json.dumps(dict(before=before, after=rss(), lines_before=lines0, lines_after=entries())))
""")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc (Linux)")
@pytest.mark.parametrize("backend", ["llvm", "numpy"])
def test_dropped_functions_release_their_code(backend, tmp_path):
    """300 distinct graphs compiled, called and dropped: the resident set grows by less than
    20 MiB (it grew ~0.15-0.5 MiB per LLVM graph while the JIT kept every object), and no
    generated module's linecache entry is left behind.  In a child process, for a clean
    number, with its own disk cache."""
    env = dict(os.environ, GRADC_CACHE_DIR=str(tmp_path / "cache"), PYTHONPATH=ROOT)
    r = subprocess.run([sys.executable, "-c", LEAK_CHILD, backend, "300"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout.strip().splitlines()[-1])
    grown = (m["after"] - m["before"]) / 2 ** 20
    assert grown < 20, f"{backend}: 300 dropped graphs grew the resident set by {grown:.1f} MiB"
    assert m["lines_after"] <= m["lines_before"], m


def m_net(W, b, X, y):
    return dsl.softmax_cross_entropy(dsl.tanh(X @ W + b), y)


@pytest.mark.parametrize("backend", ["llvm", "numpy"])
def test_code_lives_while_anything_holds_it(backend):
    """What is released is only what nothing can call: a bound method kept after the function
    is dropped, a second function compiled from the same graph (the LLVM code is shared), and
    a train step whose kernels are referenced only by the step all still run, after
    gc.collect(), and give the interpreter's numbers."""
    rng = np.random.default_rng(7)
    W, b = rng.normal(size=(3, 4)), rng.normal(size=4)
    X, y = rng.normal(size=(5, 3)), rng.integers(0, 4, 5)
    g = compiler.grad(dsl.trace(m_net, W=f64[3, 4], b=f64[4], X=f64[5, 3], y=i64[5]),
                      wrt=["W", "b"])
    want = compiler.interpret(g, W=W, b=b, X=X, y=y)
    fn = compiler.compile(g, backend=backend)
    call = fn.__call__
    twin = compiler.compile(g, backend=backend)
    del fn
    gc.collect()
    for f in (call, twin):
        got = f(W=W, b=b, X=X, y=y)
        for k in want:
            np.testing.assert_allclose(got[k], want[k], rtol=1e-12, atol=1e-14)
    del call
    gc.collect()
    np.testing.assert_allclose(twin(W=W, b=b, X=X, y=y)["dW"], want["dW"], rtol=1e-12)

    step = compiler.train_step(m_net, params={"W": W.copy(), "b": b.copy()},
                               inputs={"X": f64[5, 3], "y": i64[5]},
                               optimizer=compiler.optim.SGD(lr=0.1), backend=backend)
    run = step.__call__
    del step
    gc.collect()
    loss = run(X=X, y=y)
    assert abs(loss - want["out"]) < 1e-12 * max(1.0, abs(want["out"]))
    loss2 = run(X=X, y=y)     # after one SGD update: the interpreter at W - 0.1·dW
    ref = compiler.interpret(g, W=W - 0.1 * want["dW"], b=b - 0.1 * want["db"], X=X, y=y)
    assert abs(loss2 - ref["out"]) < 1e-12 * max(1.0, abs(ref["out"]))


# ---- (c) gradc and impossible shapes ------------------------------------------------------------
MODELS = textwrap.dedent("""
    from frontends import dsl
    from frontends.dsl import f64

    def sq(x: f64[3]):
        return dsl.sum(x * x)

    def mm(A: f64[2, 3], B: f64[3, 2]):
        return dsl.sum(A @ B)
""")


@pytest.mark.parametrize("args", [
    ["emit", "{m}:sq", "--backend", "llvm", "--shape", "x=99999999999999999999"],
    ["check", "{m}:sq", "--shape", "x=99999999999999999999"],
    ["bench", "{m}:mm", "--shape", "B=3,99999999999999999999"],
    ["emit", "{m}:sq", "--backend", "llvm", "--shape", "x=1099511627776"],     # 8 TiB
    ["check", "{m}:sq", "--shape", "x=f64[1099511627776]"],
    ["bench", "{m}:mm", "--shape", "A=2,1099511627776", "--shape", "B=1099511627776,2"],
    ["emit", "{m}:mm", "--backend", "llvm", "--shape", f"A=1,{BIG}", "--shape", f"B={BIG},1"],
])
def test_cli_reports_impossible_shapes_in_one_line(args, tmp_path, capsys):
    """A shape no array can have, one this machine cannot hold, or one beyond BLAS: one line
    on stderr naming the problem, exit status 2, no traceback."""
    path = tmp_path / "models.py"
    path.write_text(MODELS)
    rc = cli.main([a.format(m=path) for a in args])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"gradc {args[0]}: error: "), err


# ---- (d) masked arrays ----------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["numpy", "llvm", "interpret"])
def test_masked_arrays_are_refused(backend):
    """np.ma arrays: refused with an UnsupportedError naming the argument (their mask would
    otherwise be ignored: the masked entries would be read as numbers); the same data as a
    plain array is accepted and gives the interpreter's result."""
    g = compiler.grad(dsl.trace(m_net, W=f64[3, 4], b=f64[4], X=f64[5, 3], y=i64[5]),
                      wrt=["W", "b"])
    rng = np.random.default_rng(3)
    args = dict(W=rng.normal(size=(3, 4)), b=rng.normal(size=4), X=rng.normal(size=(5, 3)),
                y=rng.integers(0, 4, 5))
    fn = (lambda **kw: compiler.interpret(g, **kw)) if backend == "interpret" else \
        compiler.compile(g, backend=backend)
    for name in ("X", "y", "b"):
        masked = np.ma.masked_array(args[name], mask=np.zeros(np.shape(args[name]), bool))
        masked.mask.flat[0] = True
        for a in (masked, np.ma.masked_array(args[name])):    # a mask, or none set
            with pytest.raises(compiler.UnsupportedError, match=rf"argument '{name}'.*masked"):
                fn(**dict(args, **{name: a}))
    want = compiler.interpret(g, **args)
    np.testing.assert_allclose(fn(**args)["dW"], want["dW"], rtol=1e-12)
    if backend == "interpret":
        return
    step = compiler.train_step(m_net, params={"W": args["W"], "b": args["b"]},
                               inputs={"X": f64[5, 3], "y": i64[5]},
                               optimizer=compiler.optim.SGD(lr=0.1), backend=backend)
    for name in ("X", "y"):
        with pytest.raises(compiler.UnsupportedError, match=rf"argument '{name}'.*masked"):
            step(**{"X": args["X"], "y": args["y"], name: np.ma.masked_array(args[name])})
    assert step.t == 0
    np.testing.assert_array_equal(step.params["W"], args["W"])
    with pytest.raises(compiler.UnsupportedError, match=r"parameter 'W'.*masked"):
        compiler.train_step(m_net, params={"W": np.ma.masked_array(args["W"]), "b": args["b"]},
                            inputs={"X": f64[5, 3], "y": i64[5]},
                            optimizer=compiler.optim.SGD(lr=0.1), backend=backend)
