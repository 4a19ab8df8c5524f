"""Deep graphs through the front end (issue 17.1): trace, grad, the passes and the NumPy
emitters run in time linear in the number of nodes and without recursion that a deep graph can
overflow.  The numbers are checked against a hand-written float64 recurrence (the chain rule
applied step by step in forward mode), independent of gradc."""
from __future__ import annotations

import random
import sys
import threading

import numpy as np
import pytest

import compiler
from compiler.ir import Namer
from frontends import dsl
from frontends.dsl import f64


def _chain(steps):
    def chain(x, w):
        h = x
        for _ in range(steps):
            h = dsl.tanh(h * w)
        return h
    return chain


def chain_oracle(x: float, w: float, steps: int):
    h, dx, dw = x, 1.0, 0.0
    for _ in range(steps):
        new = np.tanh(h * w)
        s = 1.0 - new * new
        dx, dw = s * w * dx, s * (h + w * dw)
        h = new
    return h, dx, dw


class _ShallowStack:
    """Run with the recursion limit only `room` frames above the current depth: anything whose
    recursion grows with the graph fails with RecursionError."""

    def __init__(self, room: int = 250):
        self.room = room

    def __enter__(self):
        self.old = sys.getrecursionlimit()
        depth, f = 0, sys._getframe()
        while f is not None:
            depth, f = depth + 1, f.f_back
        sys.setrecursionlimit(depth + self.room)

    def __exit__(self, *exc):
        sys.setrecursionlimit(self.old)


def test_600_step_chain_sharing_one_weight_compiles_and_matches_the_recurrence():
    steps = 600
    g = dsl.trace(_chain(steps), x=f64[()], w=f64[()])
    with _ShallowStack():
        fn = compiler.compile(compiler.grad(g), backend="numpy")
    x, w = 0.7, 1.3
    h, dx, dw = chain_oracle(x, w, steps)
    out = fn(x=np.float64(x), w=np.float64(w))
    assert np.isclose(out["out"], h, rtol=1e-12, atol=0)
    assert np.isclose(out["dx"], dx, rtol=1e-9, atol=1e-300)
    assert np.isclose(out["dw"], dw, rtol=1e-9, atol=0)
    compile(fn.source, "<gradc>", "exec")          # the emitted module parses
    assert "dw_600" in fn.source                   # the model's names survive


def test_gradient_graph_of_20k_nodes_compiles_on_numpy():
    steps = 2500                                   # 5k forward nodes, 20k in the gradient graph
    g = dsl.trace(_chain(steps), x=f64[()], w=f64[()])
    dg = compiler.grad(g)
    assert len(dg.nodes) >= 20000
    with _ShallowStack():
        fn = compiler.compile(dg, backend="numpy")
    x, w = -0.4, 0.9
    h, dx, dw = chain_oracle(x, w, steps)
    out = fn(x=np.float64(x), w=np.float64(w))
    assert np.isclose(out["out"], h, rtol=1e-12, atol=1e-300)
    assert np.isclose(out["dw"], dw, rtol=1e-9, atol=1e-300)


def test_20k_node_forward_chain_traces_and_compiles():
    steps = 10000                                  # two nodes a step

    def chain(x, w):
        h = x
        for _ in range(steps):
            h = dsl.sin(h) + w
        return h
    with _ShallowStack():
        g = dsl.trace(chain, x=f64[3], w=f64[3])
        fn = compiler.compile(g, backend="numpy")
    assert len(g.nodes) == 2 * steps
    assert g.nodes[-1].out.name == f"h_{steps - 1}"     # h, h_1, ..., h_9999
    x, w = np.array([0.3, -1.0, 2.0]), np.array([0.1, 0.2, -0.3])
    h = x.copy()
    for _ in range(steps):
        h = np.sin(h) + w
    np.testing.assert_allclose(fn(x=x, w=w)["out"], h, rtol=1e-9)


def test_deep_graphs_compile_from_a_thread_scalar_and_memory_planned():
    """Two compiles at once, off the main thread: the scalar chain, and a 300-step chain of
    [64, 128] arrays (large enough for memory planning: the planned emitter) whose output is
    the sum, so d out/dw is the recurrence's dw elementwise."""
    g = compiler.grad(dsl.trace(_chain(600), x=f64[()], w=f64[()]))

    def big(x, w):
        return dsl.sum(_chain(300)(x, w))
    gb = compiler.grad(dsl.trace(big, x=f64[64, 128], w=f64[64, 128]))
    got = {}

    def work(key, graph):
        got[key] = compiler.compile(graph, backend="numpy")
    threads = [threading.Thread(target=work, args=a) for a in (("s", g), ("b", gb))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    h, dx, dw = chain_oracle(0.5, 0.8, 600)
    assert np.isclose(got["s"](x=np.float64(0.5), w=np.float64(0.8))["dw"], dw, rtol=1e-9)
    assert got["b"].plan is not None and got["b"].plan.buffers
    rng = np.random.default_rng(0)
    x, w = rng.uniform(-1, 1, (64, 128)), rng.uniform(0.5, 1.5, (64, 128))
    h, dx, dw = chain_oracle(x, w, 300)
    out = got["b"](x=x, w=w)
    np.testing.assert_allclose(out["out"], h.sum(), rtol=1e-10)
    np.testing.assert_allclose(out["dw"], dw, rtol=1e-8, atol=1e-300)
    np.testing.assert_allclose(out["dx"], dx, rtol=1e-8, atol=1e-300)


class _ProbingNamer:
    """The reference: Namer.fresh as it was, probing base_1, base_2, ... from 1 every time."""

    def __init__(self, taken=()):
        self.inner = Namer(taken)

    def fresh(self, hint):
        import keyword
        from compiler.ir import _IDENT, TEMP_NAME
        base = hint if _IDENT.match(hint or "") else "v"
        if keyword.iskeyword(base) or base in Namer.RESERVED or TEMP_NAME.match(base):
            base = base + "_"
        name, i = base, 1
        while name in self.inner.taken:
            name = f"{base}_{i}"
            i += 1
        self.inner.taken.add(name)
        return name

    def release(self, name):
        self.inner.taken.discard(name)


@pytest.mark.parametrize("seed", range(5))
def test_namer_hands_out_the_names_it_always_did(seed):
    """Random fresh/release sequences (hints that collide with suffixed names, released
    names, keywords, temporaries) give the same names as the old probing loop."""
    rng = random.Random(seed)
    hints = ["h", "h_1", "h_2", "h_1_1", "dW", "dW_3", "class", "t3", "", "np", "x_0", "x_01"]
    taken = ["h", "h_2", "dW_1", "x_0"]
    new, old = Namer(taken), _ProbingNamer(taken)
    handed: list = []
    for _ in range(3000):
        if handed and rng.random() < 0.3:
            name = handed.pop(rng.randrange(len(handed)))
            new.release(name)
            old.release(name)
        else:
            hint = rng.choice(hints)
            a, b = new.fresh(hint), old.fresh(hint)
            assert a == b, (hint, a, b)
            handed.append(a)
    assert new.taken == old.inner.taken


class _CountingSet(set):
    probes = 0

    def __contains__(self, item):
        _CountingSet.probes += 1
        return super().__contains__(item)


def test_naming_n_values_alike_probes_linearly():
    """n values all named `h` (a loop's variable) get h, h_1, ..., h_{n-1} with O(n) lookups,
    not the n²/2 of probing from h_1 for each."""
    n = 3000
    namer = Namer()
    namer.taken = _CountingSet()
    _CountingSet.probes = 0
    names = [namer.fresh("h") for _ in range(n)]
    assert names == ["h"] + [f"h_{k}" for k in range(1, n)]
    assert _CountingSet.probes <= 4 * n
    namer.release("h_7")                 # a freed name is handed out again, first
    assert namer.fresh("h") == "h_7"
    assert namer.fresh("h") == f"h_{n}"


class _CountingList(list):
    scans = 0

    def __iter__(self):
        _CountingList.scans += 1
        return super().__iter__()


def test_grad_wrt_many_inputs_looks_each_up_once():
    """grad(g, wrt=[n names]) checks each name in O(1) (not a scan of the inputs and of wrt
    per name), with the same errors as before."""
    from compiler.builder import Builder
    from compiler.ir import Graph, TensorType
    n = 2000
    g = Graph("many")
    b = Builder(g)
    xs = [b.add_input(f"x{k}", TensorType("f64", ())) for k in range(n)]
    total = xs[0]
    for k, x in enumerate(xs[1:], 1):
        total = total + x * float(k + 1)
    g.outputs["out"] = total.value
    g.inputs = _CountingList(g.inputs)
    _CountingList.scans = 0
    dg = compiler.grad(g, wrt=[f"x{k}" for k in range(n)])
    assert _CountingList.scans < 50
    fn = compiler.compile(dg, backend="numpy")
    got = fn(**{f"x{k}": np.float64(k) for k in range(n)})
    assert [float(got[f"dx{k}"]) for k in range(n)] == [float(k + 1) for k in range(n)]
    with pytest.raises(compiler.GradcError, match="'x1' is named twice"):
        compiler.grad(g, wrt=["x1", "x2", "x1"])
    with pytest.raises(compiler.GradcError, match="wrt holds 3"):
        compiler.grad(g, wrt=["x1", 3])
    with pytest.raises(compiler.UnknownNameError, match="has no input 'nope'"):
        compiler.grad(g, wrt=["x1", "nope"])
