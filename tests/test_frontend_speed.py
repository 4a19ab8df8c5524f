"""Constant factors of the front end (issue 17: a deep MLP's train step with a warm cache is
all front end): tracing leaves no garbage cycles and names the model's locals looking at each
binding once, not every local at every line; the same names come out."""
from __future__ import annotations

import gc

import compiler.ir as ir
from frontends import dsl
from frontends.dsl import f64

PARAMS = 120


def _wide():
    """A model of PARAMS weights, one line per weight (the generated MLPs' shape)."""
    names = [f"w{k}" for k in range(PARAMS)]
    lines = [f"def wide(x, {', '.join(names)}):", "    h = x"]
    lines += [f"    h = dsl.tanh(h * {w})" for w in names]
    lines += ["    return dsl.sum(h)"]
    scope = {"dsl": dsl}
    exec("\n".join(lines), scope)          # noqa: S102  (a model of our own text)
    return scope["wide"], {"x": f64[3], **{w: f64[3] for w in names}}


def test_tracing_leaves_no_reference_cycles():
    fn, specs = _wide()
    dsl.trace(fn, **specs)
    gc.collect()
    was = gc.isenabled()
    gc.disable()
    try:
        g = dsl.trace(fn, **specs)
        found = gc.collect()
    finally:
        if was:
            gc.enable()
    assert found == 0          # was one closure cycle per traced call (3000+ objects here)
    assert len(g.nodes) == 2 * PARAMS + 1


def test_naming_looks_at_a_binding_once_not_every_local_at_every_line(monkeypatch):
    fn, specs = _wide()
    asked = []
    real = ir.Value.temp

    def counting(self):
        asked.append(self.name)
        return real.fget(self)
    monkeypatch.setattr(ir.Value, "temp", property(counting))
    g = dsl.trace(fn, **specs)
    monkeypatch.undo()
    # every weight is a local through the whole function: asked once each, not once per line
    # (PARAMS² = 14400 before)
    assert len(asked) < 10 * PARAMS
    # the names are the model's: `h`, `h_1`, ... for the tanh outputs
    assert [n.out.name for n in g.nodes if n.op == "tanh"][:3] == ["h", "h_1", "h_2"]


def test_the_collector_is_paused_inside_grad_and_optimize_and_back_after(monkeypatch):
    import compiler
    from compiler import gc_pause
    seen = []
    real = compiler.passes.PASSES["dce"]
    monkeypatch.setitem(compiler.passes.PASSES, "dce", lambda g: seen.append(gc.isenabled())
                        or real(g))
    fn, specs = _wide()
    was = gc.isenabled()
    gc.enable()
    try:
        compiler.optimize(compiler.grad(dsl.trace(fn, **specs), of="out"), passes=["dce"])
        assert seen == [False] and gc.isenabled()
        gc.disable()                     # the program's choice is kept
        with gc_pause.paused():
            with gc_pause.paused():      # nested (grad calls optimize)
                assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        (gc.enable if was else gc.disable)()


def test_the_collector_resumes_when_the_last_thread_leaves():
    import threading
    from compiler import gc_pause
    was = gc.isenabled()
    gc.enable()
    inside, leave = threading.Event(), threading.Event()

    def other():
        with gc_pause.paused():
            inside.set()
            leave.wait(10)
    t = threading.Thread(target=other)
    try:
        t.start()
        inside.wait(10)
        with gc_pause.paused():
            pass
        assert not gc.isenabled()        # the other thread is still inside
        leave.set()
        t.join(10)
        assert gc.isenabled()
    finally:
        leave.set()
        (gc.enable if was else gc.disable)()


def test_a_type_keeps_its_hash_and_text_but_pickles_its_fields_only():
    import pickle
    t = ir.TensorType("f64", (2, "N"))
    assert hash(t) == hash(("f64", (2, "N"))) and str(t) == "f64[2,N]"
    data = pickle.dumps(t)               # (a str's hash differs between processes)
    assert b"_hash" not in data and b"_text" not in data
    assert pickle.loads(data) == t and {t: 1}[pickle.loads(data)] == 1
