"""Optimizers and learning-rate schedules whose update rules are IR.

`append_update(graph, params, optimizer)` appends an optimizer's update rule to a gradient graph
(the output of `compiler.grad`), so the train step is one graph: forward, backward and update,
printed, optimized and emitted like any other.  What the appended part reads and writes:

    inputs   base_lr: f64[]            the base learning rate (a runtime value: changing
                                       `optimizer.lr` never recompiles)
             t: i64[]                  the number of updates already taken (0 at the start)
             <slot>_<p>                one buffer per parameter p and optimizer slot (m, v, ...)
    outputs  loss, lr                  the loss before the update, the rate used by it
             <p>_next, <slot>_<p>_next the new parameters and buffers, t_next = t + 1
             grad_norm                 ‖g‖ over all parameters, before clipping (clip_norm only)

The runtime (compiler/train.py) writes every `*_next` output back into the arrays it owns.

With g the gradient of the loss and lr_t = base_lr · schedule(t), the update of each parameter:

    clipping      g ← g · c / max(‖g‖, c)      ‖g‖ the global norm over all parameters
    weight decay  g ← g + λ·p                  (L2, coupled; AdamW decouples it instead)
    SGD           p ← p − lr_t·g
    Momentum      v ← μ·v − lr_t·g;   p ← p + v                        (Sutskever et al. 2013)
      nesterov    v' ← μ·v − lr_t·g;  p ← p − μ·v + (1+μ)·v'           (Bengio et al. 2012)
    RMSProp       s ← ρ·s + (1−ρ)·g²; p ← p − lr_t·g/(√s + ε)          (Hinton 2012)
    Adam          m ← β1·m + (1−β1)·g;  v ← β2·v + (1−β2)·g²;  k = t + 1
                  m̂ = m/(1−β1^k);  v̂ = v/(1−β2^k);  p ← p − lr_t·m̂/(√v̂ + ε)   (Kingma & Ba 2015)
    AdamW         Adam's m, v on the undecayed g;  p ← p − lr_t·(m̂/(√v̂ + ε) + λ·p)
                  (Loshchilov & Hutter 2019 with their λ = lr·λ here, as PyTorch and Optax)

Schedules are factors of the base rate, computed in the graph from t (0 for the first update):
StepDecay γ^⌊t/s⌋, Exponential γ^(t/s), Cosine α + (1−α)·½(1 + cos(π·min(t, T)/T)),
Warmup (t+1)/w for t < w, then its inner schedule at t − w.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field

from . import builder as B
from .backends import compile as compile_graph
from .builder import Builder, Var
from .ir import GradcError, Graph, Namer, TensorType


# ---- learning-rate schedules ----------------------------------------------------------------
class Schedule:
    """A factor of the base learning rate as a function of t, the number of updates already
    taken.  `factor(t)` builds it as IR from `t` (an f64 scalar Var)."""

    def factor(self, t: Var) -> Var:
        raise NotImplementedError

    def at(self, t: int, lr: float = 1.0) -> float:
        """lr · factor(t), computed by compiling the schedule's IR (for plots and checks)."""
        g = Graph("schedule")
        b = Builder(g)
        tv = b.add_input("t", TensorType("i64", ()))
        g.outputs["lr"] = (b.const(lr, "f64") * self.factor(B.cast(tv, "f64"))).value
        return float(compile_graph(g)(t=int(t))["lr"])

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


def _real(name: str, value) -> float:
    """A hyperparameter as a float: a finite real number (not a bool, a string, None)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise GradcError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _positive(name: str, value, integer=False):
    if integer and (not isinstance(value, int) or isinstance(value, bool)):
        raise GradcError(f"{name} must be a positive int, got {value!r}")
    if not _real(name, value) > 0:
        raise GradcError(f"{name} must be positive, got {value!r}")
    return value


class Constant(Schedule):
    """factor(t) = 1."""

    def factor(self, t):
        return t.b.const(1.0, "f64")


class StepDecay(Schedule):
    """factor(t) = γ^⌊t/step_size⌋: multiply the rate by γ every `step_size` updates."""

    def __init__(self, step_size: int, gamma: float = 0.1):
        self.step_size = _positive("StepDecay step_size", step_size, integer=True)
        self.gamma = _real("StepDecay gamma", gamma)

    def factor(self, t):
        k = B.cast(B.cast(t / float(self.step_size), "i64"), "f64")   # ⌊t/s⌋ for t ≥ 0
        return self.gamma ** k


class Exponential(Schedule):
    """factor(t) = γ^(t/steps): a smooth decay by γ every `steps` updates."""

    def __init__(self, gamma: float, steps: int = 1):
        self.gamma = float(_positive("Exponential gamma", gamma))
        self.steps = _positive("Exponential steps", steps, integer=True)

    def factor(self, t):
        return self.gamma ** (t / float(self.steps))


class Cosine(Schedule):
    """factor(t) = α + (1−α)·½·(1 + cos(π·min(t, T)/T)): from 1 down to α over T updates, then
    α (Loshchilov & Hutter's SGDR without restarts)."""

    def __init__(self, total_steps: int, final: float = 0.0):
        self.total_steps = _positive("Cosine total_steps", total_steps, integer=True)
        self.final = _real("Cosine final", final)

    def factor(self, t):
        T = float(self.total_steps)
        phase = B.minimum(t, T) * (math.pi / T)
        half = 0.5 * (1.0 + B.unary("cos", phase))
        return half if self.final == 0 else self.final + (1.0 - self.final) * half


class Warmup(Schedule):
    """factor(t) = (t+1)/steps for t < steps (linear warm-up), then `then`'s factor at
    t − steps (1 when `then` is None)."""

    def __init__(self, steps: int, then: Schedule | None = None):
        self.steps = _positive("Warmup steps", steps, integer=True)
        self.then = then

    def factor(self, t):
        w = float(self.steps)
        after = self.then.factor(B.maximum(t - w, 0.0)) if self.then else t.b.const(1.0, "f64")
        return B.where(t < w, (t + 1.0) / w, after)


# ---- optimizers ----------------------------------------------------------------------------
class Optimizer:
    """Base class.  `slots` names the state buffers kept per parameter (zeros at the start);
    `rule` builds one parameter's update as IR.  Hyperparameters are compile-time constants
    except the base learning rate, which is a graph input."""

    slots: tuple = ()

    def __init__(self, lr: float, weight_decay: float = 0.0, clip_norm: float | None = None,
                 schedule: Schedule | None = None):
        self.lr = _real(f"{type(self).__name__} lr", lr)
        self.weight_decay = _real(f"{type(self).__name__} weight_decay", weight_decay)
        self.clip_norm = None if clip_norm is None else float(_positive("clip_norm", clip_norm))
        if schedule is not None and not isinstance(schedule, Schedule):
            raise GradcError(f"schedule must be a compiler.optim schedule (StepDecay, "
                             f"Exponential, Cosine, Warmup), got {schedule!r}")
        self.schedule = schedule

    decoupled = False        # AdamW applies weight decay in its rule, not to the gradient
    counts_updates = False   # the rule reads k, the 1-based number of this update (Adam)

    def rule(self, b: Builder, name: str, p: Var, g: Var, state: dict, lr: Var, k: Var):
        """(p_next, {slot: buffer_next}) for parameter `name`; lr is lr_t in p's dtype and
        k = t + 1 (f64) is the number of this update (None unless `counts_updates`)."""
        raise NotImplementedError

    def describe(self) -> dict:
        return {"optimizer": type(self).__name__, **{
            k: (repr(v) if isinstance(v, Schedule) else v) for k, v in vars(self).items()}}

    def __repr__(self) -> str:
        d = self.describe()
        d.pop("optimizer")
        return f"{type(self).__name__}({', '.join(f'{k}={v}' for k, v in d.items())})"


def _say(b: Builder, text: str, of: str | None) -> None:
    """Stamp the next nodes with the update rule they implement (a comment in emitted code)."""
    b.rule, b.of = text, of


class SGD(Optimizer):
    """p ← p − lr_t·g."""

    def rule(self, b, name, p, g, state, lr, k):
        _say(b, "SGD: p ← p − lr·g", name)
        return p - lr * g, {}


class Momentum(Optimizer):
    """v ← μ·v − lr_t·g; p ← p + v.  With nesterov=True: p ← p − μ·v_old + (1+μ)·v."""

    slots = ("v",)

    def __init__(self, lr: float, momentum: float = 0.9, nesterov: bool = False, **kw):
        super().__init__(lr, **kw)
        self.momentum = _real("Momentum momentum", momentum)
        self.nesterov = bool(nesterov)

    def rule(self, b, name, p, g, state, lr, k):
        mu, v = self.momentum, state["v"]
        _say(b, "Momentum: v ← μ·v − lr·g", name)
        v_next = mu * v - lr * g
        if self.nesterov:
            _say(b, "Nesterov: p ← p − μ·v_old + (1+μ)·v", name)
            return p - mu * v + (1.0 + mu) * v_next, {"v": v_next}
        _say(b, "Momentum: p ← p + v", name)
        return p + v_next, {"v": v_next}


class RMSProp(Optimizer):
    """s ← ρ·s + (1−ρ)·g²; p ← p − lr_t·g/(√s + ε)."""

    slots = ("cache",)

    def __init__(self, lr: float, decay: float = 0.99, eps: float = 1e-8, **kw):
        super().__init__(lr, **kw)
        self.decay, self.eps = _real("RMSProp decay", decay), _real("RMSProp eps", eps)

    def rule(self, b, name, p, g, state, lr, k):
        rho = self.decay
        _say(b, "RMSProp: s ← ρ·s + (1−ρ)·g²", name)
        s_next = rho * state["cache"] + (1.0 - rho) * (g * g)
        _say(b, "RMSProp: p ← p − lr·g/(√s + ε)", name)
        return p - lr * g / (B.sqrt(s_next) + self.eps), {"cache": s_next}


class Adam(Optimizer):
    """m ← β1·m + (1−β1)·g; v ← β2·v + (1−β2)·g²; m̂ = m/(1−β1^k); v̂ = v/(1−β2^k);
    p ← p − lr_t·m̂/(√v̂ + ε), k the 1-based update number."""

    slots = ("m", "v")
    counts_updates = True

    def __init__(self, lr: float = 1e-3, beta1: float = 0.9, beta2: float = 0.999,
                 eps: float = 1e-8, **kw):
        super().__init__(lr, **kw)
        self.beta1, self.beta2 = _real("Adam beta1", beta1), _real("Adam beta2", beta2)
        self.eps = _real("Adam eps", eps)

    def _moments(self, b, name, p, g, state, k):
        b1, b2 = self.beta1, self.beta2
        _say(b, "Adam: m ← β1·m + (1−β1)·g", name)
        m = b1 * state["m"] + (1.0 - b1) * g
        _say(b, "Adam: v ← β2·v + (1−β2)·g²", name)
        v = b2 * state["v"] + (1.0 - b2) * (g * g)
        _say(b, "Adam: bias corrections m̂ = m/(1−β1^k), v̂ = v/(1−β2^k)", name)
        c1 = B.cast(1.0 - b1 ** k, p.dtype)
        c2 = B.cast(1.0 - b2 ** k, p.dtype)
        m_hat, v_hat = m / c1, v / c2
        return m, v, m_hat / (B.sqrt(v_hat) + self.eps)

    def rule(self, b, name, p, g, state, lr, k):
        m, v, step = self._moments(b, name, p, g, state, k)
        _say(b, "Adam: p ← p − lr·m̂/(√v̂ + ε)", name)
        return p - lr * step, {"m": m, "v": v}


class AdamW(Adam):
    """Adam on the undecayed gradient, then p ← p − lr_t·(m̂/(√v̂ + ε) + λ·p)."""

    decoupled = True

    def __init__(self, lr: float = 1e-3, weight_decay: float = 1e-2, **kw):
        super().__init__(lr, weight_decay=weight_decay, **kw)

    def rule(self, b, name, p, g, state, lr, k):
        m, v, step = self._moments(b, name, p, g, state, k)
        _say(b, "AdamW: p ← p − lr·(m̂/(√v̂ + ε) + λ·p)", name)
        return p - lr * (step + self.weight_decay * p), {"m": m, "v": v}


# ---- appending the update to a gradient graph ----------------------------------------------
@dataclass
class Layout:
    """How a train-step graph's inputs and outputs map to the runtime's arrays.

    `state`: graph input name -> (slot, parameter) of each optimizer buffer;
    `writeback`: (graph input name, output key) pairs the runtime copies back after a call
    (parameters, buffers, the counter)."""
    base_lr: str
    t: str
    state: dict = field(default_factory=dict)
    writeback: list = field(default_factory=list)


def append_update(graph: Graph, params, optimizer: Optimizer, loss: str = "out") -> Layout:
    """Append `optimizer`'s update of `params` to `graph` (which must have outputs `loss` and
    `d<p>` for each p, as `compiler.grad(..., wrt=params)` gives) and replace its outputs by
    `loss`, `lr`, optionally `grad_norm`, and the `*_next` values.  Mutates `graph`; returns
    the layout.  See the module docstring for the inputs and outputs."""
    if not isinstance(optimizer, Optimizer):
        raise GradcError(f"optimizer must be a compiler.optim optimizer (SGD, Momentum, RMSProp, "
                         f"Adam, AdamW), got {optimizer!r}")
    b = Builder(graph, Namer(graph.values()))
    old = graph.outputs
    missing = [k for k in [loss] + ["d" + p for p in params] if k not in old]
    if missing:
        raise GradcError(f"append_update: graph {graph.name!r} lacks outputs {missing}; build it "
                         "with compiler.grad(graph, wrt=params)")
    first: dict = {}        # name -> the first input of that name, as graph.input finds it
    for v in graph.inputs:
        first.setdefault(v.name, v)
    ps = {p: Var(b, first[p] if p in first else graph.input(p)) for p in params}
    gs = {p: Var(b, old["d" + p]) for p in params}
    base_lr = b.add_input("base_lr", TensorType("f64", ()))
    t = b.add_input("t", TensorType("i64", ()))
    layout = Layout(base_lr.name, t.name)
    outputs = {"loss": _named(b, Var(b, old[loss]), "loss").value}

    _say(b, "update number: k = t + 1", "t")
    needs_t = optimizer.schedule is not None or optimizer.counts_updates
    tf = B.cast(t, "f64") if needs_t else None
    k = tf + 1.0 if optimizer.counts_updates else None
    _say(b, "learning rate: lr = base_lr·schedule(t)", "lr")
    lr = base_lr * optimizer.schedule.factor(tf) if optimizer.schedule is not None else base_lr
    outputs["lr"] = _named(b, lr, "lr").value

    if optimizer.clip_norm is not None:
        _say(b, "clipping: ‖g‖ = √(Σ over all parameters of Σ g²)", "grad_norm")
        total = None
        for p in params:
            sq = B.cast(B.sum(gs[p] * gs[p]), "f64")
            total = sq if total is None else total + sq
        norm = _named(b, B.sqrt(total), "grad_norm")
        outputs["grad_norm"] = norm.value
        c = optimizer.clip_norm
        _say(b, "clipping: g ← g·c/max(‖g‖, c)", "grad_norm")
        scale = c / B.maximum(norm, c)
        for p in params:
            gs[p] = _named(b, gs[p] * B.cast(scale, gs[p].dtype), f"d{p}_clipped")

    for p in params:
        pv, g = ps[p], gs[p]
        if optimizer.weight_decay and not optimizer.decoupled:
            _say(b, "weight decay (L2): g ← g + λ·p", p)
            g = _named(b, g + optimizer.weight_decay * pv, f"d{p}_decayed")
        state = {}
        for slot in optimizer.slots:
            buf = b.add_input(f"{slot}_{p}", pv.value.type)
            layout.state[buf.name] = (slot, p)
            state[slot] = buf
        lr_p = B.cast(lr, pv.dtype)
        p_next, state_next = optimizer.rule(b, p, pv, g, state, lr_p, k)
        outputs[_named(b, p_next, f"{p}_next").name] = p_next.value
        layout.writeback.append((p, p_next.name))
        for slot in optimizer.slots:
            nxt = _named(b, state_next[slot], f"{state[slot].name}_next")
            outputs[nxt.name] = nxt.value
            layout.writeback.append((state[slot].name, nxt.name))
    _say(b, "step counter: t ← t + 1", "t")
    t_next = _named(b, t + 1, "t_next")
    outputs[t_next.name] = t_next.value
    layout.writeback.append((t.name, t_next.name))
    b.rule = b.of = None
    graph.outputs = outputs
    return layout


def _named(b: Builder, v: Var, name: str) -> Var:
    """Give a freshly built value a readable name (a value that already has one is kept)."""
    if v.value.temp:
        b.rename(v, name)
    return v


__all__ = ["Schedule", "Constant", "StepDecay", "Exponential", "Cosine", "Warmup", "Optimizer",
           "SGD", "Momentum", "RMSProp", "Adam", "AdamW", "Layout", "append_update"]
