"""compiler.optim: each optimizer's compiled update against a NumPy implementation of its
published formula written here, schedules against closed-form numbers, gradient clipping, and
the structure of the appended update graph."""
import math

import numpy as np
import pytest

import compiler
from compiler import optim
from compiler.ir import GradcError
from frontends import dsl
from frontends.dsl import f32, f64

N, D, K, STEPS = 8, 3, 2, 20


def lsq(W, b, X, Y):
    """Least squares: L = mean over the N·K entries of (X·W + b − Y)²."""
    r = X @ W + b - Y
    return dsl.mean(r * r)


def lsq_grads(p, X, Y):
    """The hand-derived gradient of `lsq`: dW = 2/(N·K)·Xᵀr, db = 2/(N·K)·Σ_rows r."""
    r = X @ p["W"] + p["b"] - Y
    c = 2.0 / r.size
    return {"W": c * X.T @ r, "b": c * r.sum(axis=0)}


def data(seed=0):
    rng = np.random.default_rng(seed)
    init = {"W": rng.standard_normal((D, K)), "b": rng.standard_normal(K)}
    batches = [(rng.standard_normal((N, D)), rng.standard_normal((N, K))) for _ in range(STEPS)]
    return init, batches


# ---- the published formulas, written out in NumPy ------------------------------------------
def factor_of(schedule, t):
    """Closed forms of the schedules used below."""
    if schedule is None:
        return 1.0
    kind, *a = schedule
    if kind == "step":
        return a[1] ** (t // a[0])
    if kind == "cosine":
        T, final = a
        return final + (1 - final) * 0.5 * (1 + math.cos(math.pi * min(t, T) / T))
    if kind == "warmup":
        return (t + 1) / a[0] if t < a[0] else 1.0
    raise ValueError(kind)


def reference(kind, hp, init, batches):
    p = {k: v.copy() for k, v in init.items()}
    s = {k: {"a": np.zeros_like(v), "b": np.zeros_like(v)} for k, v in p.items()}
    losses, rates = [], []
    for t, (X, Y) in enumerate(batches):
        r = X @ p["W"] + p["b"] - Y
        losses.append(np.mean(r * r))
        lr = hp["lr"] * factor_of(hp.get("schedule"), t)
        rates.append(lr)
        g = lsq_grads(p, X, Y)
        if hp.get("clip"):
            norm = math.sqrt(sum(np.sum(v * v) for v in g.values()))
            g = {k: v * hp["clip"] / max(norm, hp["clip"]) for k, v in g.items()}
        wd = hp.get("wd", 0.0)
        for k in p:
            gk = g[k] + wd * p[k] if kind != "adamw" else g[k]
            st = s[k]
            if kind == "sgd":
                p[k] = p[k] - lr * gk
            elif kind == "momentum":            # Sutskever et al. 2013 (CS231n form)
                v_old = st["a"]
                st["a"] = hp["mu"] * v_old - lr * gk
                if hp.get("nesterov"):          # Bengio et al. 2012
                    p[k] = p[k] - hp["mu"] * v_old + (1 + hp["mu"]) * st["a"]
                else:
                    p[k] = p[k] + st["a"]
            elif kind == "rmsprop":             # Hinton, lecture 6e
                st["a"] = hp["rho"] * st["a"] + (1 - hp["rho"]) * gk ** 2
                p[k] = p[k] - lr * gk / (np.sqrt(st["a"]) + 1e-8)
            elif kind in ("adam", "adamw"):     # Kingma & Ba 2015, Algorithm 1
                b1, b2, n = 0.9, 0.999, t + 1
                st["a"] = b1 * st["a"] + (1 - b1) * gk
                st["b"] = b2 * st["b"] + (1 - b2) * gk ** 2
                m_hat = st["a"] / (1 - b1 ** n)
                v_hat = st["b"] / (1 - b2 ** n)
                upd = m_hat / (np.sqrt(v_hat) + 1e-8)
                if kind == "adamw":             # Loshchilov & Hutter 2019, decay scaled by lr
                    upd = upd + wd * p[k]
                p[k] = p[k] - lr * upd
    return p, losses, rates


CASES = {
    "sgd": ("sgd", {"lr": 0.1}, lambda: optim.SGD(0.1)),
    "sgd_wd_step": ("sgd", {"lr": 0.1, "wd": 0.05, "schedule": ("step", 5, 0.5)},
                    lambda: optim.SGD(0.1, weight_decay=0.05, schedule=optim.StepDecay(5, 0.5))),
    "momentum": ("momentum", {"lr": 0.05, "mu": 0.9}, lambda: optim.Momentum(0.05, 0.9)),
    "nesterov": ("momentum", {"lr": 0.05, "mu": 0.8, "nesterov": True, "wd": 0.01},
                 lambda: optim.Momentum(0.05, 0.8, nesterov=True, weight_decay=0.01)),
    "rmsprop": ("rmsprop", {"lr": 0.01, "rho": 0.9}, lambda: optim.RMSProp(0.01, decay=0.9)),
    "adam": ("adam", {"lr": 0.02}, lambda: optim.Adam(0.02)),
    "adam_cosine_clip": ("adam", {"lr": 0.02, "clip": 0.5, "schedule": ("cosine", 12, 0.1)},
                         lambda: optim.Adam(0.02, clip_norm=0.5, schedule=optim.Cosine(12, 0.1))),
    "adamw": ("adamw", {"lr": 0.02, "wd": 0.1}, lambda: optim.AdamW(0.02, weight_decay=0.1)),
    "adamw_warmup": ("adamw", {"lr": 0.02, "wd": 0.1, "schedule": ("warmup", 6)},
                     lambda: optim.AdamW(0.02, weight_decay=0.1, schedule=optim.Warmup(6))),
}


@pytest.mark.parametrize("case", list(CASES))
def test_update_matches_published_formula(case):
    kind, hp, make = CASES[case]
    init, batches = data()
    want, want_losses, want_rates = reference(kind, hp, init, batches)
    step = compiler.train_step(lsq, params=init, inputs={"X": f64[N, D], "Y": f64[N, K]},
                               optimizer=make())
    losses, rates = [], []
    for X, Y in batches:
        losses.append(step(X=X, Y=Y))
        rates.append(step.last["lr"])
    np.testing.assert_allclose(losses, want_losses, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(rates, want_rates, rtol=1e-12, atol=0)
    for k in init:
        np.testing.assert_allclose(step.params[k], want[k], rtol=1e-12, atol=1e-13)
    assert step.t == STEPS
    assert not np.allclose(step.params["W"], init["W"])    # something was trained


def test_clipping_is_active_and_reports_the_global_norm():
    init, batches = data(1)
    X, Y = batches[0]
    g = lsq_grads(init, X, Y)
    norm = math.sqrt(sum(np.sum(v * v) for v in g.values()))
    clip = norm / 4                          # the gradient is scaled by exactly 1/4
    step = compiler.train_step(lsq, init, {"X": f64[N, D], "Y": f64[N, K]},
                               optim.SGD(0.1, clip_norm=clip))
    step(X=X, Y=Y)
    assert step.last["grad_norm"] == pytest.approx(norm, rel=1e-13)
    for k in init:
        np.testing.assert_allclose(step.params[k], init[k] - 0.1 * g[k] / 4, rtol=1e-13)
    # a threshold above the norm leaves the gradient alone
    step2 = compiler.train_step(lsq, init, {"X": f64[N, D], "Y": f64[N, K]},
                                optim.SGD(0.1, clip_norm=norm * 2))
    step2(X=X, Y=Y)
    for k in init:
        np.testing.assert_allclose(step2.params[k], init[k] - 0.1 * g[k], rtol=1e-13)


# ---- schedules against closed-form numbers -------------------------------------------------
@pytest.mark.parametrize("schedule, t, want", [
    (optim.StepDecay(10, 0.5), 0, 0.1),
    (optim.StepDecay(10, 0.5), 9, 0.1),
    (optim.StepDecay(10, 0.5), 10, 0.05),
    (optim.StepDecay(10, 0.5), 25, 0.025),
    (optim.StepDecay(10, 0.5), 30, 0.0125),
    (optim.Exponential(0.9), 3, 0.0729),
    (optim.Exponential(0.81, steps=2), 1, 0.09),
    (optim.Exponential(0.5, steps=4), 12, 0.0125),
    (optim.Cosine(100), 0, 0.1),
    (optim.Cosine(100), 50, 0.05),
    (optim.Cosine(100), 100, 0.0),
    (optim.Cosine(100, final=0.1), 25, 0.1 * (0.1 + 0.45 * (1 + math.sqrt(0.5)))),
    (optim.Cosine(100, final=0.1), 100, 0.01),
    (optim.Cosine(100, final=0.1), 400, 0.01),
    (optim.Warmup(4), 0, 0.025),
    (optim.Warmup(4), 2, 0.075),
    (optim.Warmup(4), 3, 0.1),
    (optim.Warmup(4), 1000, 0.1),
    (optim.Warmup(4, optim.StepDecay(10, 0.5)), 13, 0.1),
    (optim.Warmup(4, optim.StepDecay(10, 0.5)), 14, 0.05),
    (optim.Warmup(5, optim.Cosine(20)), 15, 0.05),
    (optim.Constant(), 123, 0.1),
])
def test_schedule_values(schedule, t, want):
    assert schedule.at(t, lr=0.1) == pytest.approx(want, rel=1e-14, abs=1e-17)


def test_changing_the_rate_does_not_recompile():
    init, batches = data(2)
    opt = optim.SGD(0.1)
    step = compiler.train_step(lsq, init, {"X": f64[N, D], "Y": f64[N, K]}, opt)
    (X, Y), (X2, Y2) = batches[:2]
    step(X=X, Y=Y)
    before = {k: v.copy() for k, v in step.params.items()}
    opt.lr = 0.25
    step(X=X2, Y=Y2)
    g = lsq_grads(before, X2, Y2)
    for k in init:
        np.testing.assert_allclose(step.params[k], before[k] - 0.25 * g[k], rtol=1e-13)
    assert step.compilations == 1
    assert step.last["lr"] == 0.25


# ---- the appended graph ------------------------------------------------------------------------
def test_update_graph_structure_and_text_round_trip():
    g = compiler.grad(dsl.trace(lsq, W=f64[D, K], b=f64[K], X=f64[N, D], Y=f64[N, K]),
                      wrt=["W", "b"])
    layout = optim.append_update(g, ["W", "b"], optim.Adam(clip_norm=1.0))
    compiler.verify(g)
    names = [v.name for v in g.inputs]
    assert names[-6:] == ["base_lr", "t", "m_W", "v_W", "m_b", "v_b"]
    assert list(g.outputs) == ["loss", "lr", "grad_norm", "W_next", "m_W_next", "v_W_next",
                               "b_next", "m_b_next", "v_b_next", "t_next"]
    assert layout.state == {"m_W": ("m", "W"), "v_W": ("v", "W"), "m_b": ("m", "b"),
                            "v_b": ("v", "b")}
    assert ("t", "t_next") in layout.writeback and ("W", "W_next") in layout.writeback
    assert compiler.parse_graph(compiler.print_graph(g)) == g
    src = compiler.compile(g).source
    assert "# Adam: m ← β1·m + (1−β1)·g" in src and "\n    W_next = W - " in src


def test_float32_parameters_stay_float32():
    init, batches = data(3)
    init32 = {k: v.astype(np.float32) for k, v in init.items()}
    step = compiler.train_step(lsq, init32, {"X": f32[N, D], "Y": f32[N, K]}, optim.Adam(0.02))
    for X, Y in batches[:5]:
        step(X=X.astype(np.float32), Y=Y.astype(np.float32))
    assert all(a.dtype == np.float32 for a in step.params.values())
    assert all(a.dtype == np.float32 for a in step.state.values())
    want, _, _ = reference("adam", {"lr": 0.02}, init, batches[:5])
    for k in init:
        np.testing.assert_allclose(step.params[k], want[k], rtol=1e-4, atol=1e-5)


def test_bad_arguments_are_named():
    with pytest.raises(GradcError, match="StepDecay step_size"):
        optim.StepDecay(0)
    with pytest.raises(GradcError, match="clip_norm"):
        optim.SGD(0.1, clip_norm=-1)
    with pytest.raises(GradcError, match="schedule must be"):
        optim.SGD(0.1, schedule=0.5)
    g = compiler.grad(dsl.trace(lsq, W=f64[D, K], b=f64[K], X=f64[N, D], Y=f64[N, K]),
                      wrt=["W"])
    with pytest.raises(GradcError, match="db"):
        optim.append_update(g, ["W", "b"], optim.SGD(0.1))
