"""The DSL's convolution, pooling and normalization functions (re-exported by frontends/dsl.py).

    y = dsl.conv2d(x, w, stride=1, padding=0, dilation=1, groups=1)   # NCHW, OIHW
    y = dsl.conv1d(x, w, ...)                                         # NCL, OIL
    p = dsl.max_pool2d(y, 2)         # kernel 2, stride = kernel
    v = dsl.global_avg_pool(p)       # [N, C]
    z = dsl.layer_norm(h, gamma, beta)                # over h's trailing gamma.ndim axes
    z = dsl.batch_norm(y, gamma, beta, momentum=0.1)  # per channel (axis 1)

conv2d, the pools and global_avg_pool are primitives (compiler/ops/conv.py); conv1d is conv2d
over [N, C, 1, L]; layer_norm and batch_norm are built from existing primitives with the
two-pass variance (mean, then the mean of the squared deviations, never E[x²] − E[x]²), so
their gradients are exact at large means (a mean of 1e6 and a std of 1 in f64), shifted by an
element of the row and scaled by its mean absolute deviation (`_normalized`), so that values
and gradients are right at every finite x (the plain mean((x − μ)²) overflows past 1e154).

batch_norm's running statistics (non-trainable state, PyTorch's convention): in a training
trace the layer normalizes with the batch mean and (biased) variance; when the trace carries
running statistics (traced inside `with running_stats():`, as compiler.train_step does), it
also adds graph inputs `<name>_running_mean`, `<name>_running_var` ([C], the state) and graph
outputs `<name>_running_mean_next` = (1 − momentum)·running_mean + momentum·batch mean and
`<name>_running_var_next` (with the unbiased batch variance).  An evaluation trace
(`training=False`) normalizes with the running statistics, read from those same inputs.
`<name>` is `name=` or gamma's name.
"""
from __future__ import annotations

import builtins
import math
import threading
from contextlib import contextmanager

from .builder import Var, abs, max, maximum, reshape, sqrt, sum  # noqa: A004
from .builder_special import stop_gradient
from .ir import ShapeError, TensorType, UnsupportedError
from .ops.reduce import count as row_count

_CARRY = threading.local()      # .on: batch_norm in a training trace carries running statistics


@contextmanager
def running_stats():
    """Within this block (on this thread), a training trace's batch_norm also reads its
    running statistics as inputs and returns their updates as `*_next` outputs."""
    before = getattr(_CARRY, "on", False)
    _CARRY.on = True
    try:
        yield
    finally:
        _CARRY.on = before


def _at(x) -> str:
    loc = x.b.where()
    return f" at {loc}" if loc else ""


def _var(op, x):
    if not isinstance(x, Var):
        raise UnsupportedError(f"{op} expects a traced value, got {type(x).__name__}")
    return x


def _pair(op, name, v, x):
    if isinstance(v, bool):
        raise ShapeError(f"{op}: {name} must be an int or a pair of ints, got {v!r}{_at(x)}")
    try:
        pair = (int(v), int(v)) if not isinstance(v, (tuple, list)) else tuple(int(k) for k in v)
    except (TypeError, ValueError):
        raise ShapeError(f"{op}: {name} must be an int or a pair of ints, got {v!r}"
                         f"{_at(x)}") from None
    if len(pair) != 2 or any(float(k) != k for k in pair):
        raise ShapeError(f"{op}: {name} must be an int or a pair of ints, got {v!r}{_at(x)}")
    return pair


def conv2d(x, w, stride=1, padding=0, dilation=1, groups=1) -> Var:
    """2-D convolution (cross-correlation, as in PyTorch) in PyTorch's layout: x [N, C, H, W]
    (NCHW), w [O, C/groups, KH, KW] (OIHW), result [N, O, OH, OW] with
    OH = (H + 2·padding − dilation·(KH − 1) − 1)/stride + 1, which must be whole.
    y[n, o, i, j] = Σ_{c,p,q} x[n, g·C/groups + c, i·s − pad + p·d, j·s − pad + q·d]·w[o, c, p, q]
    (zero outside x; g = o's group).  stride, padding, dilation: an int or an (h, w) pair."""
    op = "conv2d"
    _var(op, x), _var(op, w)
    if isinstance(groups, bool) or int(groups) != groups:
        raise ShapeError(f"conv2d: groups must be an int, got {groups!r}{_at(x)}")
    return x.b.emit("conv2d", [x, w], stride=_pair(op, "stride", stride, x),
                    padding=_pair(op, "padding", padding, x),
                    dilation=_pair(op, "dilation", dilation, x), groups=int(groups))


def _single(op, name, v, x):
    if isinstance(v, (tuple, list)):
        if len(v) != 1:
            raise ShapeError(f"{op}: {name} must be an int, got {v!r}{_at(x)}")
        v = v[0]
    return _pair(op, name, v, x)[0]


def conv1d(x, w, stride=1, padding=0, dilation=1, groups=1) -> Var:
    """1-D convolution: x [N, C, L], w [O, C/groups, K] -> [N, O, OL]; conv2d over
    [N, C, 1, L] (so its graph, gradient and code are conv2d's)."""
    op = "conv1d"
    _var(op, x), _var(op, w)
    if x.ndim != 3 or w.ndim != 3:
        raise ShapeError(f"conv1d: x must be [N, C, L] and w [O, C/groups, K], got "
                         f"{x.shape} and {w.shape}{_at(x)}")
    s, p, d = (_single(op, k, v, x) for k, v in
               (("stride", stride), ("padding", padding), ("dilation", dilation)))
    x4 = reshape(x, (x.shape[0], x.shape[1], 1, x.shape[2]))
    w4 = reshape(w, (w.shape[0], w.shape[1], 1, w.shape[2]))
    try:
        y = conv2d(x4, w4, (1, s), (0, p), (1, d), groups)
    except ShapeError as e:
        raise ShapeError(f"conv1d (conv2d over [N, C, 1, L]): {e}") from None
    return reshape(y, (y.shape[0], y.shape[1], y.shape[3]))


def _pool(op, x, kernel, stride):
    _var(op, x)
    kernel = _pair(op, "kernel", kernel, x)
    stride = kernel if stride is None else _pair(op, "stride", stride, x)
    return x.b.emit(op, [x], kernel=kernel, stride=stride)


def max_pool2d(x, kernel, stride=None) -> Var:
    """The maximum of each kernel window of x [N, C, H, W] (no padding; stride defaults to
    the kernel).  Ties: each window splits its gradient evenly between the elements equal to
    its maximum (compiler/ops/conv.py)."""
    return _pool("max_pool2d", x, kernel, stride)


def avg_pool2d(x, kernel, stride=None) -> Var:
    """The mean of each kernel window of x [N, C, H, W] (no padding; stride defaults to the
    kernel)."""
    return _pool("avg_pool2d", x, kernel, stride)


def global_avg_pool(x) -> Var:
    """The mean over H and W: [N, C, H, W] -> [N, C]."""
    return _var("global_avg_pool", x).b.emit("global_avg_pool", [x])


_P = 0.125      # the prescale of _normalized: p·(x − μ) is finite at every finite x
_LARGEST = {"f32": 3.4028234663852886e38}     # eps past it is inf in the graph: z = 0


def _row_element(x, axes):
    """One element of each row over `axes` (keepdims), held constant: x[0] along a concrete
    axis, the maximum along an axis sized at run time (which takes no slice)."""
    first = x[tuple(slice(0, 1) if a in axes and isinstance(x.shape[a], int) else slice(None)
                    for a in range(x.ndim))]
    named = tuple(a for a in axes if not isinstance(x.shape[a], int))
    return stop_gradient(max(first, named, keepdims=True) if named else first)


def _normalized(x, axes, eps):
    """(x − μ)/√(σ² + eps) over `axes`, μ and σ² (biased, two-pass, never E[x²] − E[x]²),
    right at every finite x: the plain mean((x − μ)²) is inf once |x − μ| passes √MAX (1e154
    in f64, 1e19 in f32), and z was then 0 with a finite, wrong gradient.  With p = 1/8:
        x₀ = an element of the row, held constant      (a constant row gives d = 0 exactly)
        y = x·p − x₀·p,  m = Σ y·(1/n)                 (= p·(μ − x₀); partial sums ≤ MAX/4)
        d = y − m                                       (= p·(x − μ), |d| ≤ MAX/4)
        s = max(Σ|d|·(1/n), p·min(1, √eps))            (p·mean |x − μ|, floored; held constant)
        u = d/s,  q = p/s                               (u = q·(x − μ))
        z = u/√(mean(u²) + eps·q²)
    which is the formula exactly for every x₀ and s > 0 (σ² = mean(u²)/q²), so holding them
    constant leaves every derivative exact.  Above the floor mean |u| = 1, so 1 ≤ mean(u²) ≤ n
    and eps·q² can only round away where it is below mean(u²)'s rounding; at the floor eps·q²
    is eps (eps ≥ 1) or 1: a constant row gives z = 0 with the gradient (G − mean G)/√eps (with
    eps = 0 it gives nan, 0/0).  1/s ≥ 4/MAX is normal; σ² is inf only where it is over MAX.
    Only subnormal x (below 8× the smallest normal) lose bits in x·p."""
    inv_n = 1 / row_count(x, axes)
    p = _P
    x0 = _row_element(x, axes)
    y = x * p - x0 * p
    m = sum(y * inv_n, axes, keepdims=True)
    d = y - m
    s = stop_gradient(maximum(sum(abs(d) * inv_n, axes, keepdims=True),
                              p * builtins.min(1.0, math.sqrt(eps))))
    r = 1 / s
    q = r * p
    u = d * r
    ms = sum(u * u, axes, keepdims=True) * inv_n
    z = u * (1 / sqrt(ms + eps * q * q))
    scale = s * (1 / p)
    # μ = (p·x₀ + m)/p, finite wherever μ is (x₀ + m/p overflows: μ − x₀ can exceed MAX)
    return z, (x0 * p + m) * (1 / p), ms * scale * scale


def _eps(op, eps, x):
    try:
        e = float(eps)
    except (TypeError, ValueError):
        e = math.nan
    if not (e >= 0 and e <= _LARGEST.get(x.dtype, math.inf) and math.isfinite(e)):
        raise ShapeError(f"{op}: eps must be a finite number ≥ 0 (in {x.dtype}), got "
                         f"{eps!r}{_at(x)}")
    return e


def _affine_check(op, x, gamma, beta, shape):
    for k, v in (("gamma", gamma), ("beta", beta)):
        _var(op, v)
        if v.shape != tuple(shape) or v.dtype != x.dtype:
            raise ShapeError(f"{op}: {k} must be {x.dtype}{list(shape)} for x {x.value.type}, "
                             f"got {v.value.type}{_at(x)}")


def layer_norm(x, gamma, beta, eps=1e-5) -> Var:
    """(x − μ)/√(σ² + eps)·gamma + beta, μ and σ² (biased, two-pass) over the trailing
    gamma.ndim axes of x (PyTorch's normalized_shape = gamma.shape)."""
    op = "layer_norm"
    _var(op, x), _var(op, gamma)
    k = gamma.ndim
    if k == 0 or k > x.ndim:
        raise ShapeError(f"layer_norm: gamma {gamma.shape} must have 1 to {x.ndim} axes "
                         f"(x's trailing ones){_at(x)}")
    _affine_check(op, x, gamma, beta, x.shape[x.ndim - k:])
    z, _, _ = _normalized(x, tuple(range(x.ndim - k, x.ndim)), _eps(op, eps, x))
    return z * gamma + beta


def batch_norm(x, gamma, beta, eps=1e-5, momentum=0.1, name=None) -> Var:
    """Batch normalization over every axis but the channel axis 1 of x ([N, C] or
    [N, C, ...]): (x − μ)/√(σ² + eps)·gamma + beta per channel.  Training: μ, σ² of the batch
    (two-pass, biased); evaluation (`dsl.trace(..., training=False)`): the running
    statistics.  See the module docstring for the running-statistics inputs and outputs."""
    op = "batch_norm"
    _var(op, x), _var(op, gamma)
    if x.ndim < 2:
        raise ShapeError(f"batch_norm: x must be [N, C, ...], got {x.shape}{_at(x)}")
    c = x.shape[1]
    _affine_check(op, x, gamma, beta, (c,))
    if not 0 <= float(momentum) <= 1:
        raise ShapeError(f"batch_norm: momentum must be in [0, 1], got {momentum!r}{_at(x)}")
    eps = _eps(op, eps, x)
    b = x.b
    axes = (0,) + tuple(range(2, x.ndim))
    bshape = (1, c) + (1,) * (x.ndim - 2)
    base = name if name is not None else gamma.value.name
    g4, b4 = reshape(gamma, bshape), reshape(beta, bshape)
    carry = getattr(_CARRY, "on", False)
    if not b.training:
        rm = b.add_input(f"{base}_running_mean", TensorType(x.dtype, (c,)))
        rv = b.add_input(f"{base}_running_var", TensorType(x.dtype, (c,)))
        p = _P      # (x·p − rm·p)/σ·(1/p): x − rm may be over MAX where z is not
        return ((x * p - reshape(rm, bshape) * p) / sqrt(reshape(rv, bshape) + eps)
                * (1 / p) * g4 + b4)
    z, mu, var = _normalized(x, axes, eps)
    if carry:
        count = 1
        for a in axes:
            if not isinstance(x.shape[a], int):
                raise UnsupportedError(f"batch_norm: the running variance needs a concrete "
                                       f"batch size, got x {x.shape}{_at(x)}")
            count *= x.shape[a]
        if count < 2:
            raise ShapeError(f"batch_norm: training needs more than one value per channel for "
                             f"the running variance, got x {x.shape}{_at(x)}")
        m = float(momentum)
        rm = b.add_input(f"{base}_running_mean", TensorType(x.dtype, (c,)))
        rv = b.add_input(f"{base}_running_var", TensorType(x.dtype, (c,)))
        b.graph.outputs[f"{rm.value.name}_next"] = (
            rm * (1 - m) + reshape(mu, (c,)) * m).value
        b.graph.outputs[f"{rv.value.name}_next"] = (
            rv * (1 - m) + reshape(var, (c,)) * (m * count / (count - 1))).value
    return z * g4 + b4


def carried_state(graph, known) -> list:
    """The graph inputs that are state carried from call to call: not among `known` (the
    parameters, data inputs and dropout masks), with an output `<input>_next` (batch_norm's
    running statistics inside `running_stats()`)."""
    return [v for v in graph.inputs if v.name not in known and f"{v.name}_next" in graph.outputs]


__all__ = ["conv2d", "conv1d", "max_pool2d", "avg_pool2d", "global_avg_pool", "layer_norm",
           "batch_norm", "carried_state", "running_stats"]
