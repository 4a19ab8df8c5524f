"""The LLVM backend against the reference interpreter (compiler.interpret): every op of the
table (each sample case of tests/graphs.py, forward and gradient, f64 and f32), every example
model and its gradient; argument checking before native code; the disk cache.

Tolerances: float64 1e-12 relative, float32 1e-5 relative.  To keep LLVM compile time small,
all op cases of one dtype are merged into one graph and compiled once (a module fixture)."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import compiler
from compiler.ir import Graph, Node, Value
from compiler.ops import OPS
from graphs import EXAMPLES, OP_SAMPLES, op_graph, op_inputs

TOL = {"f64": dict(rtol=1e-12, atol=1e-14), "f32": dict(rtol=1e-5, atol=1e-6)}


def merge(parts: dict, name: str) -> Graph:
    """One graph holding every part side by side, each value and output prefixed."""
    g = Graph(name)
    for prefix, sub in parts.items():
        m = {}
        for v in sub.inputs:
            m[v.name] = Value(prefix + v.name, v.type)
            g.inputs.append(m[v.name])
        for n in sub.nodes:
            out = Value(prefix + n.out.name, n.out.type)
            g.nodes.append(Node(n.op, tuple(m[v.name] for v in n.inputs), dict(n.attrs), out,
                                n.loc, n.rule, n.of))
            m[n.out.name] = out
        for k, v in sub.outputs.items():
            g.outputs[prefix + k] = m[v.name]
    return compiler.verify(g)


def _case_graph(op, case, dtype):
    sub = op_graph(op, case, dtype)
    return compiler.grad(sub, of="loss") if "loss" in sub.outputs else sub


@pytest.fixture(scope="module", params=["f64", "f32"])
def all_ops(request):
    """(dtype, {prefix: subgraph}, merged kernel, inputs, outputs) for every op case."""
    dtype = request.param
    rng = np.random.default_rng(0)
    parts, inputs = {}, {}
    for op, sample in OP_SAMPLES.items():
        if op not in OPS:
            continue
        for k, case in enumerate(sample.cases):
            prefix = f"{op}_{k}_"
            sub = _case_graph(op, case, dtype)
            parts[prefix] = sub
            for name, arr in op_inputs(op, case, sub, rng, dtype).items():
                inputs[prefix + name] = arr
    fn = compiler.compile(merge(parts, f"all_ops_{dtype}"), backend="llvm", passes=[])
    return dtype, parts, fn, inputs, fn(**inputs)


@pytest.mark.parametrize("op", sorted(OPS))
def test_op_matches_interpreter(all_ops, op):
    dtype, parts, fn, inputs, got = all_ops
    assert OPS[op].llvm is not None, f"no LLVM lowering for {op!r}"
    if op not in OP_SAMPLES:
        pytest.fail(f"tests/graphs.py has no sample for {op!r}")
    for k in range(len(OP_SAMPLES[op].cases)):
        prefix = f"{op}_{k}_"
        sub = parts[prefix]
        mine = {n[len(prefix):]: a for n, a in inputs.items() if n.startswith(prefix)}
        want = compiler.interpret(sub, **mine)
        for name, w in want.items():
            g = got[prefix + name]
            assert g.dtype == w.dtype and np.shape(g) == w.shape, (op, k, name)
            np.testing.assert_allclose(g, w, **TOL[dtype], err_msg=f"{op} case {k}: {name}")


@pytest.mark.parametrize("dtype", ["f64", "f32"])
@pytest.mark.parametrize("example", sorted(EXAMPLES))
def test_example_gradient_matches_interpreter(example, dtype):
    ex = EXAMPLES[example]
    dg = compiler.grad(ex.build(dtype))
    inputs = ex.inputs(np.random.default_rng(1), dtype)
    want = compiler.interpret(dg, **inputs)
    got = compiler.compile(dg, backend="llvm")(**inputs)
    assert list(got) == list(want)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], **TOL[dtype], err_msg=f"{example}: {k}")


@pytest.mark.parametrize("example", ["many_ops", "two_layer_svm", "broadcasting"])
def test_fused_and_unfused_loops_agree_with_interpreter(example):
    """Fusion groups become one loop nest (fewer loops in the IR); both ways are right."""
    from compiler.artifact import llvm_artifact
    from runtime.llvm_kernel import LLVMKernel
    ex = EXAMPLES[example]
    dg = compiler.optimize(compiler.grad(ex.build("f64")))
    inputs = ex.inputs(np.random.default_rng(4), "f64")
    want = compiler.interpret(dg, **inputs)
    fused, plain = LLVMKernel(llvm_artifact(dg)), LLVMKernel(llvm_artifact(dg, fuse=False))
    assert fused.source.count(".body:") < plain.source.count(".body:")
    for fn in (fused, plain):
        got = fn(**inputs)
        for k in want:
            np.testing.assert_allclose(got[k], want[k], **TOL["f64"], err_msg=k)


def test_two_layer_without_passes_folds_transposes_into_gemm():
    """Raw gradient graph: dW = Xᵀ·G reads X through the BLAS 'T' flag (or transposed indexing
    in an inline small product), the transpose node is not lowered (no copy), and the numbers
    agree with the interpreter."""
    ex = EXAMPLES["two_layer"]
    dims = dict(n=40, d=30, hdim=40, c=5)                  # X·W1 is big enough for BLAS
    dg = compiler.grad(ex.build("f64", **dims))
    inputs = ex.inputs(np.random.default_rng(2), "f64", **dims)
    fn = compiler.compile(dg, backend="llvm", passes=[])
    transposes = [n.out.name for n in dg.nodes if n.op == "transpose"]
    assert transposes
    for t in transposes:                              # a slot, but no loop writes it
        assert f'%"{t}.slot"' in fn.source and f'{t}.loop' not in fn.source, t
    assert "gradc_dgemm" in fn.source
    want = compiler.interpret(dg, **inputs)
    got = fn(**inputs)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], **TOL["f64"], err_msg=k)


@pytest.mark.parametrize("dtype", ["f64", "f32"])
def test_matmul_every_transpose_flag_blas_and_inline(dtype):
    """op(A)·op(B) for all four flag pairs, at sizes that call BLAS and sizes lowered to
    inline loops, against NumPy's matmul; with and without a transpose node feeding it."""
    from compiler.builder import Builder
    from compiler.ir import TensorType
    npdt = np.float64 if dtype == "f64" else np.float32
    g = Graph(f"matmuls_{dtype}")
    b = Builder(g)
    rng = np.random.default_rng(6)
    inputs, want = {}, {}
    for m, n, k in ((40, 50, 30), (5, 9, 4), (6, 2, 3)):
        for ta in (False, True):
            for tb in (False, True):
                tag = f"{m}x{n}x{k}_{int(ta)}{int(tb)}"
                sa, sb = ((k, m) if ta else (m, k)), ((n, k) if tb else (k, n))
                inputs["a" + tag] = rng.standard_normal(sa).astype(npdt)
                inputs["b" + tag] = rng.standard_normal(sb).astype(npdt)
                va = b.add_input("a" + tag, TensorType(dtype, sa))
                vb = b.add_input("b" + tag, TensorType(dtype, sb))
                opa = inputs["a" + tag].T if ta else inputs["a" + tag]
                opb = inputs["b" + tag].T if tb else inputs["b" + tag]
                attrs = {"transpose_a": True} if ta else {}
                attrs.update({"transpose_b": True} if tb else {})
                g.outputs["c" + tag] = b.emit("matmul", [va, vb], name="c" + tag, **attrs).value
                want["c" + tag] = opa.astype(np.float64) @ opb.astype(np.float64)
                # the same product through explicit transpose nodes (folded into flags)
                ta_node = b.emit("transpose", [va], perm=(1, 0)) if ta else va
                tb_node = b.emit("transpose", [vb], perm=(1, 0)) if tb else vb
                g.outputs["d" + tag] = b.emit("matmul", [ta_node, tb_node], name="d" + tag).value
                want["d" + tag] = want["c" + tag]
    got = compiler.compile(g, backend="llvm", passes=[])(**inputs)
    for k, w in want.items():
        np.testing.assert_allclose(got[k], w, rtol=TOL[dtype]["rtol"], atol=1e-12 if dtype ==
                                   "f64" else 1e-5, err_msg=k)


@pytest.mark.parametrize("dtype", ["f64", "f32"])
def test_product_accumulated_into_its_sum(dtype):
    """y = A·B + u with u a same-shape input, a broadcast row, or an elementwise chain: u is
    written into y's buffer and gemm adds the product onto it (beta = 1); vs NumPy."""
    from frontends.dsl import f32, f64
    t = {"f64": f64, "f32": f32}[dtype]
    npdt = np.float64 if dtype == "f64" else np.float32

    def model(A, B, U, b, C):
        y1 = A @ B + U
        y2 = b + A @ B.T.T
        y3 = A @ B + dsl.exp(C) * 2.0
        return y1, y2, y3
    from frontends import dsl
    g = dsl.trace(model, A=t[40, 30], B=t[30, 50], U=t[40, 50], b=t[50], C=t[40, 50])
    rng = np.random.default_rng(8)
    ins = {k: rng.standard_normal(s).astype(npdt) for k, s in
           dict(A=(40, 30), B=(30, 50), U=(40, 50), b=(50,), C=(40, 50)).items()}
    fn = compiler.compile(g, backend="llvm", passes=[])
    assert fn.source.count("added onto it") == 3
    got = fn(**ins)
    prod = ins["A"].astype(np.float64) @ ins["B"].astype(np.float64)
    want = [prod + ins["U"], prod + ins["b"], prod + 2 * np.exp(ins["C"].astype(np.float64))]
    for k, w in zip(got, want):
        np.testing.assert_allclose(got[k], w, rtol=TOL[dtype]["rtol"],
                                   atol=1e-12 if dtype == "f64" else 1e-4, err_msg=k)


def test_lecture_neuron_values():
    """Hand-derived numbers of the lecture's neuron: σ(1) and its gradients."""
    dg = compiler.grad(EXAMPLES["neuron"].build("f64"))
    fn = compiler.compile(dg, backend="llvm")
    out = fn(w=np.array([2.0, -3.0, -3.0]), x=np.array([-1.0, -2.0]))
    s = 1 / (1 + np.exp(-1.0))
    np.testing.assert_allclose(out["out"], s, rtol=1e-15)
    np.testing.assert_allclose(out["dw"], [-s * (1 - s), -2 * s * (1 - s), s * (1 - s)], rtol=1e-14)
    np.testing.assert_allclose(out["dx"], [2 * s * (1 - s), -3 * s * (1 - s)], rtol=1e-14)


@pytest.fixture(scope="module")
def two_layer_fn():
    ex = EXAMPLES["two_layer"]
    dg = compiler.grad(ex.build("f64"))
    return compiler.compile(dg, backend="llvm"), ex.inputs(np.random.default_rng(3), "f64"), dg


def test_source_asm_and_ir(two_layer_fn):
    fn, _, dg = two_layer_fn
    assert fn.ir == str(fn.graph) and fn.ir.startswith("graph two_layer(")
    for name in ("W1", "X", "h", "scores", "dW1", "db2"):
        assert f'%"{name}"' in fn.source, name
    assert fn.symbol in fn.asm and "ret" in fn.asm


def test_bad_arguments_raise_before_native_code(two_layer_fn):
    fn, inputs, _ = two_layer_fn
    with pytest.raises(ValueError, match="'X'"):
        fn(**dict(inputs, X=inputs["X"][:-1]))
    with pytest.raises(TypeError, match="missing 'y'"):
        fn(**{k: v for k, v in inputs.items() if k != "y"})
    with pytest.raises(TypeError, match="'W1'"):
        fn(**dict(inputs, W1=inputs["W1"].astype(np.complex128)))
    with pytest.raises(TypeError, match="'y'"):
        fn(**dict(inputs, y=inputs["y"].astype(np.float64)))
    for bad in (3, -1):
        with pytest.raises(ValueError, match=f"label {bad} is outside"):
            fn(**dict(inputs, y=np.where(np.arange(len(inputs["y"])) == 2, bad, inputs["y"])))


def test_non_contiguous_and_repeated_calls(two_layer_fn):
    """A transposed view is accepted (copied to contiguous); outputs are the caller's own
    (a second call does not overwrite the first call's results)."""
    fn, inputs, dg = two_layer_fn
    want = compiler.interpret(dg, **inputs)
    strided = dict(inputs, X=np.asfortranarray(inputs["X"]))
    first = fn(**strided)
    second = fn(**dict(inputs, X=inputs["X"] * 2))
    for k in want:
        np.testing.assert_allclose(first[k], want[k], rtol=1e-12, atol=1e-14, err_msg=k)
    assert not np.allclose(first["dW1"], second["dW1"])


_CHILD = textwrap.dedent("""
    import sys, numpy as np
    sys.path.insert(0, {tests!r})
    import compiler
    from graphs import EXAMPLES
    ex = EXAMPLES["two_layer"]
    dg = compiler.grad(ex.build("f64", n=3, d=2, hdim=4, c=3))
    fn = compiler.compile(dg, backend="llvm")
    inputs = ex.inputs(np.random.default_rng(5), "f64", n=3, d=2, hdim=4, c=3)
    got, want = fn(**inputs), compiler.interpret(dg, **inputs)
    ok = all(np.allclose(got[k], want[k], rtol=1e-12, atol=1e-14) for k in want)
    print("cached" if fn.cached else "built", "ok" if ok else "WRONG", fn.key)
""")


def _child(cache_dir):
    env = dict(os.environ, GRADC_CACHE_DIR=str(cache_dir))
    code = _CHILD.format(tests=os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout.split()


def test_disk_cache_reuse_and_corrupt_entry(tmp_path):
    """A new process reuses the object; a corrupted entry is rebuilt (not trusted), then
    reused again."""
    from runtime import cache
    state, ok, key = _child(tmp_path)
    assert (state, ok) == ("built", "ok")
    path = os.path.join(tmp_path, key[:2], key + ".o")
    assert os.path.getsize(path) > 100
    assert _child(tmp_path)[:2] == ["cached", "ok"]
    data = bytearray(open(path, "rb").read())
    data[len(data) // 2] ^= 0xFF
    open(path, "wb").write(bytes(data))
    assert _child(tmp_path)[:2] == ["built", "ok"]
    with open(path, "rb") as f:
        assert f.read().startswith(cache.MAGIC)
    assert _child(tmp_path)[:2] == ["cached", "ok"]
    open(path, "wb").write(b"garbage")
    assert _child(tmp_path)[:2] == ["built", "ok"]


def test_cache_entries_round_trip_and_reject_damage(tmp_path, monkeypatch):
    """cache.put/get in-process: a stored entry comes back byte for byte; a truncated, altered
    or foreign file is a miss (None), never an error; an unwritable directory is no error."""
    from runtime import cache
    monkeypatch.setenv("GRADC_CACHE_DIR", str(tmp_path))
    k = cache.key("define void @f() { ret void }", "target A")
    assert k != cache.key("define void @f() { ret void }", "target B")
    assert cache.get(k) is None
    obj = bytes(range(256)) * 3
    assert cache.put(k, obj, ["gradc_dgemm", "pow"])
    assert cache.get(k) == (obj, ["gradc_dgemm", "pow"])
    assert not [p for p in os.listdir(os.path.dirname(cache.path_for(k))) if p.startswith(".tmp")]
    data = open(cache.path_for(k), "rb").read()
    for bad in (data[:-1], data[:40], b"", b"\x7fELF" + data[4:],
                data[:-5] + bytes([data[-5] ^ 1]) + data[-4:]):
        open(cache.path_for(k), "wb").write(bad)
        assert cache.get(k) is None
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("GRADC_CACHE_DIR", str(blocker))
    assert cache.put(k, obj, []) is False


def test_large_outputs_are_the_callers_own_and_copy_false_views():
    """An output of ≥ 64 KiB is written straight into a new array per call: two calls give two
    arrays, each right; copy=False returns the kernel's own buffer (the same object each time),
    also right, and a later copy=True call does not write into it.  Checked against NumPy."""
    from frontends import dsl
    from frontends.dsl import f64
    g = dsl.trace(lambda A, B: dsl.tanh(A @ B) * 2.0, A=f64[120, 30], B=f64[30, 110])
    fn = compiler.compile(g, backend="llvm")
    rng = np.random.default_rng(11)
    A, B = rng.standard_normal((120, 30)), rng.standard_normal((30, 110))
    want = lambda a: 2 * np.tanh(a @ B)     # noqa: E731
    first, second = fn(A=A, B=B)["out"], fn(A=A * 2, B=B)["out"]
    assert first is not second and fn._fresh
    np.testing.assert_allclose(first, want(A), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(second, want(A * 2), rtol=1e-12, atol=1e-14)
    own = fn(A=A, B=B, copy=False)["out"]
    assert fn(A=A * 3, B=B, copy=False)["out"] is own
    np.testing.assert_allclose(own, want(A * 3), rtol=1e-12, atol=1e-14)
    third = fn(A=A, B=B)["out"]
    np.testing.assert_allclose(third, want(A), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(own, want(A * 3), rtol=1e-12, atol=1e-14)


def test_fast_path_sees_in_place_changes_and_unaligned_arrays():
    """The same array object passed again with new contents gives new results (its pointer is
    reused, its data is read afresh); an unaligned array of the right dtype, shape and strides
    is copied to an aligned one; vs NumPy."""
    from frontends import dsl
    from frontends.dsl import f64
    fn = compiler.compile(dsl.trace(lambda x, y: dsl.sum(x * y), x=f64[5], y=f64[5]),
                          backend="llvm")
    x, y = np.arange(5.0), np.ones(5)
    assert fn(x=x, y=y)["out"] == 10.0
    x[:] = 2.0
    assert fn(x=x, y=y)["out"] == 10.0 and fn(x=x, y=y * 3)["out"] == 30.0
    raw = np.zeros(5 * 8 + 1, np.uint8)
    odd = np.frombuffer(raw.data, dtype=np.float64, count=5, offset=1)
    assert not odd.flags.aligned and odd.strides == (8,)
    assert fn(x=odd, y=y)["out"] == 0.0


def test_labels_checked_by_native_code_for_every_label_op():
    """One label input read by two label ops of different class counts: every label must lie
    in [0, classes) of each; the error names the op whose bound is broken.  The check is the
    module's second function and runs before the graph's (which is made to fail here)."""
    from frontends import dsl
    from frontends.dsl import f64, i64
    g = dsl.trace(lambda s, y: dsl.softmax_cross_entropy(s, y) + dsl.sum(dsl.onehot(y, 5)),
                  s=f64[4, 3], y=i64[4])
    fn = compiler.compile(g, backend="llvm")
    assert f'@"{fn.symbol}_labels"' in fn.source
    s = np.random.default_rng(2).standard_normal((4, 3))
    y = np.array([0, 2, 1, 2])
    want = -np.mean(s[np.arange(4), y] - np.log(np.exp(s).sum(1))) + 4
    np.testing.assert_allclose(fn(s=s, y=y)["out"], want, rtol=1e-12)
    fn._cfunc = None          # the graph's function must not be reached below
    for bad, op in ((3, "softmax_cross_entropy"), (5, "softmax_cross_entropy"), (-2, "")):
        with pytest.raises(ValueError, match=f"label {bad} is outside.*{op}"):
            fn(s=s, y=np.where(np.arange(4) == 3, bad, y))


@pytest.mark.parametrize("dtype", ["f64", "f32"])
def test_reduction_and_elementwise_groups_share_one_loop(dtype):
    """Σ W² and c·W (weight decay's loss term and gradient) read W in one loop, whichever
    comes first in the graph; a group that reads a computed value is left alone; vs NumPy."""
    from frontends import dsl
    from frontends.dsl import f32, f64
    t = {"f64": f64, "f32": f32}[dtype]
    npdt = np.float64 if dtype == "f64" else np.float32

    def model(W, V, U):
        a = dsl.exp(W) * 2.0 + 1.0
        s = dsl.sum(W * W)
        m = dsl.max(V * 3.0)
        return (a, s, m, V * 0.5 - 1.0, dsl.sum(a * a), dsl.sum(U * U, axis=0), U * 2.0 + 1.0,
                dsl.sum(dsl.abs(U), axis=1))
    g = dsl.trace(model, W=t[37, 9], V=t[40], U=t[6, 21])
    fn = compiler.compile(g, backend="llvm", passes=[])
    assert fn.source.count("one loop for two fused groups") == 3
    rng = np.random.default_rng(4)
    W, V, U = (rng.standard_normal(s).astype(npdt) for s in ((37, 9), (40,), (6, 21)))
    got = fn(W=W, V=V, U=U)
    W64, V64, U64 = W.astype(np.float64), V.astype(np.float64), U.astype(np.float64)
    a = np.exp(W64) * 2 + 1
    want = [a, (W64 * W64).sum(), (V64 * 3).max(), V64 * 0.5 - 1, (a * a).sum(),
            (U64 * U64).sum(0), U64 * 2 + 1, np.abs(U64).sum(1)]
    for k, w in zip(got, want):
        np.testing.assert_allclose(got[k], w, rtol=TOL[dtype]["rtol"] * 10, err_msg=k)


def test_cache_hit_loads_without_emitting_ir():
    """A kernel whose object is already loaded (or on disk) is keyed by the graph's text and
    the code generator's sources: no LLVM IR is emitted until `.source` is asked for, and
    then it names the kernel's symbol."""
    from frontends import dsl
    from frontends.dsl import f64
    g = dsl.trace(lambda x: dsl.sum(dsl.sin(x) * x), x=f64[6])
    first = compiler.compile(g, backend="llvm")
    again = compiler.compile(g, backend="llvm")
    assert again.cached and again._source is None and again.key == first.key
    assert f'@"{again.symbol}"' in again.source
    x = np.linspace(-1, 1, 6)
    np.testing.assert_allclose(again(x=x)["out"], np.sum(np.sin(x) * x), rtol=1e-12)


def test_planned_buffers_match_the_emitter(two_layer_fn):
    """What a cache hit allocates (plan_untouched, no IR emitted) is what the emitter leaves
    untouched, on the two-layer net's gradient (fusion, gemm accumulation, folded transposes)."""
    from compiler.codegen.llvm_emit import emit_llvm_plan, plan_untouched
    fn, _, _ = two_layer_fn
    untouched = emit_llvm_plan(fn.graph, "f")[1]
    assert untouched and plan_untouched(fn.graph) == untouched


def test_scalar_arguments_take_the_fast_path_with_the_same_checks():
    """Python and NumPy scalars for 0-d inputs give the lecture's numbers (f=(x+y)·z at
    (-2, 5, -4): -12, -4, -4, 3) and are refused where check_arguments refuses them."""
    import numpy as np
    import compiler
    from frontends import dsl
    from frontends.dsl import f32, f64

    def f(x, y, z):
        return (x + y) * z
    fn = compiler.compile(compiler.grad(dsl.trace(f, x=f64[()], y=f64[()], z=f64[()])),
                          backend="llvm")
    for args in (dict(x=-2.0, y=5.0, z=-4.0), dict(x=np.float64(-2), y=np.float64(5), z=-4),
                 dict(x=np.array(-2.0), y=np.array(5.0), z=np.array(-4.0))):
        out = fn(**args)
        assert [float(out[k]) for k in ("out", "dx", "dy", "dz")] == [-12.0, -4.0, -4.0, 3.0]
    with pytest.raises(TypeError, match="'x'.*bool"):
        fn(x=True, y=5.0, z=-4.0)
    fn32 = compiler.compile(compiler.grad(dsl.trace(f, x=f32[()], y=f32[()], z=f32[()])),
                            backend="llvm")
    assert fn32(x=-2.0, y=5.0, z=-4.0)["dz"] == np.float32(3.0)
    with pytest.raises(TypeError, match="'x'.*float64"):
        fn32(x=np.float64(-2.0), y=5.0, z=-4.0)
