"""The pass pipeline (compiler/passes/): golden tests per pass (IR text in, IR text out), the
verifier after every pass, values unchanged (reference interpreter before vs after) on every
example model, its gradient graph and every op sample's gradient graph, provenance and output
names kept, the input graph never mutated, transpose flags on matmul, stability rewrites at
the extremes, and the pipeline API (`optimize`, `compile(passes=...)`)."""
import numpy as np
import pytest

import compiler
from compiler.passes import DEFAULT_PIPELINE, PASSES, optimize
from graphs import (EXAMPLES, OP_SAMPLES, all_cases, assert_close_grad, numeric_grad, op_graph,
                    op_inputs, symbols_for, sympy_values)


def C(name, value, dtype="f64", shape=()):
    dims = ",".join(map(str, shape))
    return f"{name}: {dtype}[{dims}] = const() {{value={value!r}, dtype={dtype!r}, shape={shape!r}}}"


def text(head, body, ret):
    return "\n".join([head] + ["  " + line for line in body] + ["  return " + ret, "}"])


def run(graph, passes):
    before = str(graph)
    out = optimize(graph, passes, check=True)
    assert str(graph) == before, "a pass mutated its input graph"
    return out


def values_match(before, after, inputs, rtol):
    want = compiler.interpret(before, **inputs)
    got = compiler.interpret(after, **inputs)
    assert list(got) == list(want)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=rtol, atol=rtol * 1e-3, err_msg=k)


# ---- golden tests, one per pass -----------------------------------------------------------
def test_dce_golden():
    g = compiler.parse_graph(text("graph g(x: f64[3], unused: f64[2]) {",
                                  ["a: f64[3] = exp(x)", "dead: f64[3] = tanh(a)",
                                   "t0: f64[2] = neg(unused)", "y: f64[3] = mul(a, x)"], "out=y"))
    assert str(run(g, ["dce"])) == text("graph g(x: f64[3], unused: f64[2]) {",
                                        ["a: f64[3] = exp(x)", "y: f64[3] = mul(a, x)"], "out=y")


def test_cse_golden_merges_repeats_and_constants():
    g = compiler.parse_graph(text("graph g(x: f64[3]) {",
                                  ["t0: f64[3] = exp(x)", C("t1", 0.0), "e: f64[3] = exp(x)",
                                   C("t2", 0.0), C("nz", -0.0), "a: f64[3] = add(t0, t1)",
                                   "b: f64[3] = add(e, t2)", "c: f64[3] = sub(b, nz)"],
                                  "a=a, b=b, c=c"))
    # exp(x) computed once (the first node survives); the two 0.0 merge; -0.0 stays apart (a
    # different constant); then a and b are the same sum: b is a's alias
    assert str(run(g, ["cse"])) == text("graph g(x: f64[3]) {",
                                        ["t0: f64[3] = exp(x)", C("t1", 0.0), C("nz", -0.0),
                                         "a: f64[3] = add(t0, t1)", "c: f64[3] = sub(a, nz)"],
                                        "a=a, b=a, c=c")


def test_fold_golden():
    g = compiler.parse_graph(text("graph g(x: f64[3]) {",
                                  [C("one", 1.0), C("n", 4.0), "q: f64[] = div(one, n)",
                                   "t0: f64[1] = reshape(one) {shape=(1,)}",
                                   "t1: f64[3] = broadcast_to(t0) {shape=(3,)}",
                                   "big: f64[100,100] = broadcast_to(n) {shape=(100, 100)}",
                                   "s: f64[] = sum(big) {axes=(0, 1), keepdims=False}",
                                   "y: f64[3] = mul(t1, x)", "z: f64[3] = mul(y, q)"],
                                  "out=z, s=s, big=big"))
    assert str(run(g, ["fold", "dce"])) == text(
        "graph g(x: f64[3]) {",
        [C("n", 4.0), C("q", 0.25), C("t1", 1.0, shape=(3,)),     # folded, name kept
         "big: f64[100,100] = broadcast_to(n) {shape=(100, 100)}",
         "s: f64[] = sum(big) {axes=(0, 1), keepdims=False}",     # too big to evaluate: kept
         "y: f64[3] = mul(t1, x)", "z: f64[3] = mul(y, q)"],
        "out=z, s=s, big=big")


def test_fold_then_simplify_sums_a_big_broadcast():
    g = compiler.parse_graph(text("graph g(x: f64[]) {",
                                  [C("n", 0.5), "big: f64[100,100] = broadcast_to(n) {shape=(100, 100)}",
                                   "s: f64[] = sum(big) {axes=(0, 1), keepdims=False}",
                                   "y: f64[] = mul(s, x)"], "out=y"))
    out = run(g, None)
    assert str(out) == text("graph g(x: f64[]) {", [C("s", 5000.0), "y: f64[] = mul(s, x)"],
                            "out=y")


def test_transpose_fold_golden():
    g = compiler.parse_graph(text("graph g(X: f64[4,2], D: f64[4,3], W: f64[2,3]) {",
                                  ["t0: f64[2,4] = transpose(X) {perm=(1, 0)}",
                                   "dW: f64[2,3] = matmul(t0, D)",
                                   "t1: f64[3,2] = transpose(W) {perm=(1, 0)}",
                                   "dX: f64[4,2] = matmul(D, t1)",
                                   "t2: f64[3,4] = transpose(D) {perm=(1, 0)}",
                                   "t3: f64[2,4] = matmul(t1, t2) {transpose_a=True}"],
                                  "dW=dW, dX=dX, back=t3"))
    assert str(run(g, ["transpose_fold", "dce"])) == text(
        "graph g(X: f64[4,2], D: f64[4,3], W: f64[2,3]) {",
        ["dW: f64[2,3] = matmul(X, D) {transpose_a=True}",
         "dX: f64[4,2] = matmul(D, W) {transpose_b=True}",
         "t3: f64[2,4] = matmul(W, D) {transpose_b=True}"],      # (Wᵀ)ᵀ: the flag clears
        "dW=dW, dX=dX, back=t3")


def test_stability_golden():
    g = compiler.parse_graph(text("graph g(x: f64[2,3]) {",
                                  ["p: f64[2,3] = softmax(x) {axis=1}", "a: f64[2,3] = log(p)",
                                   "s: f64[2,3] = sigmoid(x)", "b: f64[2,3] = log(s)",
                                   C("one", 1.0), "t0: f64[2,3] = add(one, x)",
                                   "c: f64[2,3] = log(t0)", "t1: f64[2,3] = sub(one, s)",
                                   "d: f64[2,3] = log(t1)", "e: f64[2,3] = exp(x)",
                                   "t2: f64[2,3] = add(e, one)", "f: f64[2,3] = log(t2)"],
                                  "a=a, b=b, c=c, d=d, f=f"))
    assert str(run(g, ["stability", "dce"])) == text(
        "graph g(x: f64[2,3]) {",
        ["a: f64[2,3] = log_softmax(x) {axis=1}",
         "t4: f64[2,3] = neg(x)", "t5: f64[2,3] = softplus(t4)", "b: f64[2,3] = neg(t5)",
         "c: f64[2,3] = log1p(x)",
         "t8: f64[2,3] = softplus(x)", "d: f64[2,3] = neg(t8)",
         "f: f64[2,3] = softplus(x)"],
        "a=a, b=b, c=c, d=d, f=f")


def test_pipeline_golden_lecture_gradient():
    """The lecture's f = (x + y)·z: the seed 1.0 vanishes, dq = 1.0·z becomes dq = z."""
    dg = compiler.grad(EXAMPLES["lecture_f"].build("f64"))
    out = run(dg, None)
    body = [line.split("  @")[0].strip() for line in str(out).splitlines()[1:-2]]
    assert body == ["q: f64[] = add(x, y)", "f: f64[] = mul(q, z)"]
    assert {k: v.name for k, v in out.outputs.items()} == {"out": "f", "dx": "z", "dy": "z",
                                                          "dz": "q"}


def test_pipeline_two_layer_matches_a_hand_written_backward_pass():
    dg = compiler.grad(EXAMPLES["two_layer"].build("f64"))
    out = run(dg, None)
    ops = [n.op for n in out.nodes]
    assert "transpose" not in ops and "broadcast_to" not in ops and "reshape" not in ops
    flags = {n.out.name: n.attrs for n in out.nodes if n.op == "matmul"}
    assert flags["dX"] == {"transpose_b": True} and flags["dh"] == {"transpose_b": True}
    src = compiler.compile(dg).source
    assert "X.T @ dt1" in src and "h.T @ dscores" in src and "dscores @ W2.T" in src
    assert len(out.nodes) < len(dg.nodes)
    ones = {n.out.name for n in out.nodes if n.op == "const" and n.attrs["value"] == 1.0}
    assert not any(n.op == "mul" and any(v.name in ones for v in n.inputs) for n in out.nodes)
    assert [n.op for n in out.nodes].count("log_softmax") == 1     # shared by loss and dscores
    assert "softmax" not in [n.op for n in out.nodes]


# ---- every pass on every graph: verifier, values, names, provenance ----------------------
STEPS = [[p] for p in PASSES] + [None]


@pytest.mark.parametrize("dtype", ["f64", "f32"])
@pytest.mark.parametrize("name", sorted(EXAMPLES))
@pytest.mark.parametrize("steps", STEPS, ids=lambda s: "pipeline" if s is None else s[0])
def test_passes_preserve_example_values(name, steps, dtype, rng):
    g = EXAMPLES[name].build(dtype)
    inputs = EXAMPLES[name].inputs(rng, dtype)
    rtol = 1e-10 if dtype == "f64" else 2e-4
    for graph in (g, compiler.grad(g)):
        out = run(graph, steps)
        assert list(out.outputs) == list(graph.outputs)
        assert [(v.name, v.type) for v in out.inputs] == [(v.name, v.type) for v in graph.inputs]
        values_match(graph, out, inputs, rtol)
        old = {n.out.name: n for n in graph.nodes}
        for n in out.nodes:           # a surviving node keeps its provenance
            if n.out.name in old and n.op == old[n.out.name].op:
                o = old[n.out.name]
                assert (n.loc, n.rule, n.of) == (o.loc, o.rule, o.of), n.out.name


@pytest.mark.parametrize("op,case", all_cases(), ids=[f"{op}-{c.label}" for op, c in all_cases()])
def test_pipeline_preserves_op_sample_gradients(op, case, rng):
    g = op_graph(op, case)
    graphs = [g]
    if "loss" in g.outputs:
        graphs.append(compiler.grad(g, of="loss"))
    for graph in graphs:
        out = run(graph, None)
        values_match(graph, out, op_inputs(op, case, graph, rng), 1e-10)


def test_pipeline_reaches_a_fixed_point():
    dg = compiler.grad(EXAMPLES["many_ops"].build("f64"))
    once = optimize(dg)
    assert optimize(once) == once


# ---- transpose flags on the matmul primitive ------------------------------------------------
@pytest.mark.parametrize("ta,tb", [(False, True), (True, False), (True, True)])
def test_flagged_matmul_eval_sympy_and_gate_rules(ta, tb, rng):
    sa, sb = ((2, 3) if ta else (3, 2)), ((4, 2) if tb else (2, 4))
    attrs = ", ".join(f"{k}=True" for k, f in (("transpose_a", ta), ("transpose_b", tb)) if f)
    g = compiler.parse_graph(text(f"graph g(A: f64[{sa[0]},{sa[1]}], B: f64[{sb[0]},{sb[1]}], "
                                  "c: f64[3,4]) {",
                                  [f"y: f64[3,4] = matmul(A, B) {{{attrs}}}",
                                   "t0: f64[3,4] = mul(y, c)",
                                   "loss: f64[] = sum(t0) {axes=(0, 1), keepdims=False}"],
                                  "loss=loss, y=y"))
    ins = {"A": rng.standard_normal(sa), "B": rng.standard_normal(sb),
           "c": rng.standard_normal((3, 4))}
    a = ins["A"].T if ta else ins["A"]
    b = ins["B"].T if tb else ins["B"]
    np.testing.assert_allclose(compiler.interpret(g, **ins)["y"], a @ b, rtol=1e-14)
    syms = symbols_for(g, ["A", "B"])
    sym = sympy_values(g, syms, {"c": ins["c"]})["y"]
    sa_, sb_ = (syms["A"].T if ta else syms["A"]), (syms["B"].T if tb else syms["B"])
    assert all(sym[i, j] == sa_[i].dot(sb_[:, j]) for i in range(3) for j in range(4))
    dg = compiler.grad(g, wrt=["A", "B"], of="loss")
    got = compiler.interpret(dg, **ins)
    for x in ("A", "B"):
        assert_close_grad(got["d" + x], numeric_grad(g, ins, x, "loss"), f"d{x}")
    src = compiler.compile(g, passes=[]).source
    assert (f"A{'.T' if ta else ''} @ B{'.T' if tb else ''}") in src


# ---- stability rewrites at the extremes (oracle: the closed forms) ------------------------
def test_stability_fixes_overflow_and_underflow():
    g = compiler.parse_graph(text("graph g(x: f64[3]) {",
                                  ["s: f64[3] = sigmoid(x)", "a: f64[3] = log(s)",
                                   C("one", 1.0), "t0: f64[3] = add(x, one)",
                                   "b: f64[3] = log(t0)", "e: f64[3] = exp(x)",
                                   "t1: f64[3] = add(one, e)", "c: f64[3] = log(t1)"],
                                  "a=a, b=b, c=c"))
    x = np.array([-800.0, 1e-18, 800.0])
    naive = compiler.interpret(g, x=x)
    fixed = compiler.interpret(optimize(g), x=x)
    assert naive["a"][0] == -np.inf and fixed["a"][0] == -800.0     # log σ(x) = x − log(1+eˣ)
    assert naive["b"][1] == 0.0 and fixed["b"][1] == 1e-18          # log(1+x) = x − x²/2 + …
    assert naive["c"][2] == np.inf and fixed["c"][2] == 800.0       # log(1+eˣ) = x + log(1+e⁻ˣ)


def test_log_softmax_rewrite_keeps_large_logits_finite():
    g = compiler.parse_graph(text("graph g(x: f64[1,3]) {",
                                  ["p: f64[1,3] = softmax(x) {axis=1}", "y: f64[1,3] = log(p)"],
                                  "out=y"))
    x = np.array([[0.0, 1000.0, 2000.0]])
    assert np.isneginf(compiler.interpret(g, x=x)["out"][0, 0])
    np.testing.assert_array_equal(compiler.interpret(optimize(g), x=x)["out"],
                                  [[-2000.0, -1000.0, 0.0]])


# ---- the API --------------------------------------------------------------------------------
def test_optimize_trace_and_pass_lists():
    dg = compiler.grad(EXAMPLES["neuron"].build("f64"))
    out, history = optimize(dg, trace=True)
    names = [name for name, _ in history]
    assert names[:len(DEFAULT_PIPELINE)] == DEFAULT_PIPELINE
    assert history[-1][1] == out
    assert optimize(dg, passes=[]) is dg
    with pytest.raises(compiler.GradcError, match="unknown pass 'fuse_everything'"):
        optimize(dg, passes=["fuse_everything"])


def test_compile_runs_the_pipeline_unless_told_not_to(rng):
    dg = compiler.grad(EXAMPLES["two_layer"].build("f64"))
    plain = compiler.compile(dg, passes=[])
    opt = compiler.compile(dg)
    assert plain.ir == str(dg) and opt.ir != str(dg)
    ins = EXAMPLES["two_layer"].inputs(rng, "f64")
    want = compiler.interpret(dg, **ins)
    for fn in (plain, opt):
        got = fn(**ins)
        for k in want:
            np.testing.assert_allclose(got[k], want[k], rtol=1e-10)


def test_outputs_never_alias_inputs():
    """After the passes, dx of sum(x·z) is z itself: the compiled function must still hand
    back a fresh array."""
    g = compiler.parse_graph(text("graph g(x: f64[3], z: f64[3]) {",
                                  ["t0: f64[3] = mul(x, z)",
                                   "s: f64[] = sum(t0) {axes=(0,), keepdims=False}"], "out=s"))
    fn = compiler.compile(compiler.grad(g))
    x, z = np.ones(3), np.arange(3.0)
    out = fn(x=x, z=z)
    np.testing.assert_array_equal(out["dx"], z)
    assert out["dx"] is not z and not np.shares_memory(out["dx"], z)


# ---- the loss and its gradient share one log_softmax ---------------------------------------
SHARE = text("graph g(s: f64[4,3], y: i64[4]) {",
             ["loss: f64[] = softmax_cross_entropy(s, y)", "p: f64[4,3] = softmax(s) {axis=1}",
              "q: f64[4,3] = softmax(s) {axis=0}"], "out=loss, p=p, q=q")


def test_share_softmax_golden_and_sympy(rng):
    g = compiler.parse_graph(SHARE)
    out = run(g, ["share_softmax", "cse", "dce"])
    assert str(out) == text("graph g(s: f64[4,3], y: i64[4]) {",
                            ["logp: f64[4,3] = log_softmax(s) {axis=1}",
                             "t0: f64[4] = pick(logp, y)",
                             "t1: f64[] = mean(t0) {axes=(0,), keepdims=False}",
                             "loss: f64[] = neg(t1)", "p: f64[4,3] = exp(logp)",
                             "q: f64[4,3] = softmax(s) {axis=0}"],       # other axis: kept
                            "out=loss, p=p, q=q")
    import sympy as sp
    syms = symbols_for(g, ["s"])
    labels = {"y": np.array([0, 2, 1, 2])}
    old, new = sympy_values(g, syms, labels), sympy_values(out, syms, labels)
    for key in g.outputs:
        a, b = old[g.outputs[key].name], new[out.outputs[key].name]
        for idx in np.ndindex(*a.shape):
            assert sp.simplify(sp.expand_log(a[idx] - b[idx], force=True)) == 0, (key, idx)
    ins = {"s": rng.standard_normal((4, 3)), "y": labels["y"]}
    values_match(g, out, ins, 1e-14)


# ---- fusion groups (an analysis the LLVM backend reads) ------------------------------------
def test_fusion_groups_of_the_two_layer_gradient():
    from compiler.passes.fusion import fusion_groups
    g = compiler.parse_graph(text(
        "graph g(X: f64[4,2], W: f64[2,3], b: f64[3], G: f64[4,3]) {",
        ["t0: f64[4,3] = matmul(X, W)", "t1: f64[4,3] = add(t0, b)", "h: f64[4,3] = relu(t1)",
         C("z", 0.0), "t2: bool[4,3] = greater(h, z)", "t3: f64[4,3] = where(t2, G, z)",
         "db: f64[3] = sum(t3) {axes=(0,), keepdims=False}", "t4: f64[4,3] = mul(h, h)",
         "e: f64[4,3] = exp(t4)"], "h=h, db=db, e=e"))
    groups = fusion_groups(g)
    # bias + relu is one loop; relu's mask, the where and the bias gradient's sum are one loop
    # closed by the reduction; h is read by three nodes, so the square starts a new group
    assert [(gr.nodes, gr.inputs, gr.shape, gr.reduction) for gr in groups] == [
        (("t1", "h"), ("t0", "b"), (4, 3), None),
        (("t2", "t3", "db"), ("h", "z", "G"), (4, 3), "db"),
        (("t4", "e"), ("h",), (4, 3), None)]
    assert optimize(g, []) is g     # analysis only: nothing to check on the graph


# ---- memory planning and the planned NumPy kernel -------------------------------------------
def _big_two_layer():
    """Two-layer gradient at sizes where every intermediate is planned (≥ MIN_ELEMENTS)."""
    return compiler.grad(EXAMPLES["two_layer"].build("f64", n=128, d=128, hdim=128, c=72))


def test_memory_plan_reuses_buffers_and_works_in_place():
    from compiler.passes.memory import plan_memory
    og = optimize(_big_two_layer())
    plan = plan_memory(og)
    producers = og.producers()
    assert plan.inplace["t1"] == "t0" and plan.inplace["h"] == "t1"   # X@W1 + b1, relu: in place
    assert len(plan.buffers) < len(plan.assign)
    # a buffer is only ever shared by values whose live ranges do not overlap
    order = {n.out.name: k for k, n in enumerate(og.nodes)}
    last = {}
    for k, n in enumerate(og.nodes):
        for v in n.inputs:
            last[v.name] = k
    for v in og.outputs.values():
        last[v.name] = len(og.nodes)
    for b in set(plan.assign.values()):
        users = sorted((order[v], last.get(v, order[v]), v) for v, x in plan.assign.items() if x == b)
        for (s0, e0, v0), (s1, e1, v1) in zip(users, users[1:]):
            assert e0 <= s1, (v0, v1)
            if e0 == s1:   # handed over at the node that kills it: an elementwise node
                assert plan.inplace.get(v1) == v0, (v0, v1, producers[v1].op)
    report = plan.report()
    assert report["buffer_bytes"] < report["unplanned_bytes_per_call"]
    assert report["planned_fresh_bytes_per_call"] < report["unplanned_bytes_per_call"] / 4


def test_planned_kernel_matches_the_interpreter_and_owns_its_buffers(rng):
    dg = _big_two_layer()
    fn = compiler.compile(dg)
    assert fn.plan is not None and "out=_b" in fn.source and "np.matmul(X.T, " in fn.source
    ins = EXAMPLES["two_layer"].inputs(rng, "f64", n=128, d=128, hdim=128, c=72)
    ins2 = dict(ins, X=rng.standard_normal(ins["X"].shape))
    want, want2 = compiler.interpret(dg, **ins), compiler.interpret(dg, **ins2)
    first = fn(**ins)
    second = fn(**ins2)                      # fresh results: the first call's stay intact
    for k in want:
        np.testing.assert_allclose(first[k], want[k], rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(second[k], want2[k], rtol=1e-10, atol=1e-13)
    shared = fn(copy=False, **ins)
    again = fn(copy=False, **ins2)           # no copy: the next call overwrites the buffers
    assert np.shares_memory(shared["dW1"], again["dW1"])
    np.testing.assert_allclose(again["dW1"], want2["dW1"], rtol=1e-10, atol=1e-13)
    report = fn.memory_report()
    assert report["planned"] and report["buffers"] == len(fn.plan.buffers)


def test_small_graphs_keep_the_plain_emitter_and_passes_off_means_no_plan():
    dg = compiler.grad(EXAMPLES["two_layer"].build("f64"))
    assert compiler.compile(dg).plan is None                  # below MIN_ELEMENTS
    assert compiler.compile(_big_two_layer(), passes=[]).plan is None
    assert compiler.compile(dg).memory_report()["planned"] is False


def test_fast_argument_path_gives_the_same_errors_and_results(rng):
    g = compiler.parse_graph(text("graph g(x: f64[3], n: i64[3]) {",
                                  ["t0: f64[3] = cast(n) {dtype='f64'}", "y: f64[3] = mul(x, t0)"],
                                  "out=y"))
    fn = compiler.compile(g)
    x, n = rng.standard_normal(3), np.array([1, 2, 3])
    np.testing.assert_array_equal(fn(x=x, n=n)["out"], x * n)
    np.testing.assert_array_equal(fn(x=list(x), n=[1, 2, 3])["out"], x * n)   # the slow path
    with pytest.raises(TypeError, match="'x'"):
        fn(x=x.astype(np.complex128), n=n)
    with pytest.raises(ValueError, match="'x'"):
        fn(x=np.ones(4), n=n)
    with pytest.raises(TypeError, match="missing 'n'"):
        fn(x=x)


def _forced_plan_kernel(graph):
    """A planned kernel with every plannable node in a buffer (min_elements=1)."""
    from compiler.artifact import numpy_artifact
    from compiler.passes.memory import plan_memory
    from runtime.numpy_kernel import NumpyKernel
    og = optimize(graph)
    plan = plan_memory(og, min_elements=1)
    return NumpyKernel(numpy_artifact(og, og.name, plan))


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_planned_code_on_every_example_gradient(name, rng):
    dg = compiler.grad(EXAMPLES[name].build("f64"))
    fn = _forced_plan_kernel(dg)
    for _ in range(2):                   # twice: buffers reused across calls
        ins = EXAMPLES[name].inputs(rng, "f64")
        want = compiler.interpret(dg, **ins)
        got = fn(**ins)
        for k in want:
            np.testing.assert_allclose(got[k], want[k], rtol=1e-10, atol=1e-13, err_msg=k)


@pytest.mark.parametrize("op,case", all_cases(), ids=[f"{op}-{c.label}" for op, c in all_cases()])
def test_planned_code_on_every_op_sample(op, case, rng):
    g = op_graph(op, case)
    graph = compiler.grad(g, of="loss") if "loss" in g.outputs else g
    fn = _forced_plan_kernel(graph)
    ins = op_inputs(op, case, graph, rng)
    want = compiler.interpret(graph, **ins)
    got = fn(**ins)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-10, atol=1e-13, err_msg=k)


@pytest.mark.parametrize("name", sorted(PASSES))
def test_every_pass_returns_a_new_graph_even_when_nothing_changes(name):
    g = compiler.parse_graph(text("graph g(x: f64[3]) {", ["y: f64[3] = exp(x)"], "out=y"))
    out = PASSES[name](g)
    assert out is not g and out == g and out.nodes[0] is not g.nodes[0]
    assert out.nodes[0].out is not g.nodes[0].out
