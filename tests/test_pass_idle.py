"""The passes' idle checks (compiler/passes/__init__.py IDLE, issue 17): `idle(g)` may answer
True only when the pass would return a graph equal to `g`, and `optimize` skips a pass only then,
so the pipeline's result is the one of running every pass (that loop is written out here as the
oracle), while a graph already at its fixed point is copied once, not once per pass."""
from __future__ import annotations

import warnings

import pytest

import compiler
from compiler.passes import DEFAULT_PIPELINE, IDLE, MAX_ROUNDS, PASSES, optimize
from compiler.passes import rewrite
from frontends import dsl
from frontends.dsl import f64
from graphs import EXAMPLES, all_cases, op_graph


def _unstable(x):
    """Compositions the stability pass rewrites (and one it leaves)."""
    return {"a": dsl.sum(dsl.log(dsl.sigmoid(x))), "b": dsl.sum(dsl.log(dsl.softmax(x, axis=1))),
            "c": dsl.sum(dsl.log(1.0 + x * x)), "d": dsl.sum(1.0 / (1.0 + dsl.exp(-x))),
            "e": dsl.sum(dsl.log(dsl.exp(x) + 2.0))}


def _corpus() -> list:
    """Forward graphs, their gradients, and every graph the default pipeline passes through
    on the way to their fixed point (the inputs a pass meets inside `optimize`)."""
    graphs = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        starts = [ex.build(dt) for ex in EXAMPLES.values() for dt in ("f64", "f32")]
        starts += [op_graph(op, case) for op, case in all_cases()]
        starts += [dsl.trace(_unstable, x=f64[3, 4])]
        for g in starts:
            graphs.append(g)
            outs = [k for k, v in g.outputs.items() if v.type.is_float and v.shape == ()]
            if outs:
                graphs.append(compiler.grad(g, of="loss" if "loss" in outs else outs[0]))
        for g in list(graphs):
            graphs += [h for _, h in optimize(g, trace=True)[1]]
    return graphs


CORPUS = _corpus()


def _every_pass(graph):
    """The pipeline with no pass skipped: the loop `optimize` ran before the idle checks."""
    g = graph
    for _ in range(MAX_ROUNDS):
        before = g
        for name in DEFAULT_PIPELINE:
            g = PASSES[name](g)
        if g == before:
            break
    return g


@pytest.mark.parametrize("name", sorted(n for n in PASSES if PASSES[n] in IDLE))
def test_idle_answers_true_only_where_the_pass_changes_nothing(name):
    fn, idle = PASSES[name], IDLE[PASSES[name]]
    answers = set()
    for g in CORPUS:
        quiet = idle(g)
        answers.add(quiet)
        if quiet:
            assert fn(g) == g, f"{name} idle on a graph it changes:\n{g}"
    # both answers occur (a check that always says "work to do" would pass vacuously)
    assert answers == {True, False}, (name, answers)


def test_every_pass_of_the_default_pipeline_has_an_idle_check():
    assert all(PASSES[n] in IDLE for n in DEFAULT_PIPELINE)


def test_optimize_gives_what_running_every_pass_gives():
    for g in CORPUS[::3]:
        assert str(optimize(g)) == str(_every_pass(g)), str(g)


def test_a_graph_at_its_fixed_point_is_copied_once_not_once_per_pass(monkeypatch):
    g = optimize(compiler.grad(EXAMPLES["two_layer"].build("f64")))
    made = []
    real = rewrite.Rewriter.__init__

    def counting(self, old):
        made.append(old)
        real(self, old)
    monkeypatch.setattr(rewrite.Rewriter, "__init__", counting)
    out = optimize(g)
    assert len(made) == 1                      # was one copy per pass (7)
    assert out is not g and out == g and out.nodes[0] is not g.nodes[0]


def test_a_pass_given_by_the_caller_still_runs():
    g = EXAMPLES["neuron"].build("f64")
    seen = []

    def mine(graph):
        seen.append(graph)
        return graph
    assert optimize(g, [mine]) is g and seen == [g]
    assert optimize(g, ["dce", mine]) is not g    # dce's copy (it was idle), then `mine`


def test_trace_shows_each_pass_its_own_graph():
    g = compiler.grad(EXAMPLES["two_layer"].build("f64"))
    _, history = optimize(g, trace=True)
    assert len({id(h) for _, h in history}) == len(history)


def test_a_rule_reaching_past_what_a_reader_has_counts_as_a_change(monkeypatch):
    import sys
    from compiler.passes.simplify import simplify_idle
    simplify_module = sys.modules["compiler.passes.simplify"]

    def asks_the_namer(rw, n, *ins):
        rw.namer.temp()              # (a Rewriter has one; the idle check's Reader does not)
        return None
    g = EXAMPLES["neuron"].build("f64")
    assert simplify_idle(g)
    ops = {n.op for n in g.nodes}
    for op in ops:
        monkeypatch.setitem(simplify_module.RULES, op,
                            simplify_module.RULES.get(op, []) + [asks_the_namer])
    assert not simplify_idle(g)          # the pass runs, as it did before the idle checks
    assert str(optimize(g)) == str(_every_pass(g))
