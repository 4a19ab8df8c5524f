"""Convolution and pooling: conv2d and the two convolutions its gate rules are made of, the
pooling ops, and the window/fold pair the pooling gates use.

Layout: activations NCHW, weights OIHW (PyTorch's convention): x [N, C, H, W] and
w [O, C/groups, KH, KW] give y [N, O, OH, OW] with OH = (H + 2·ph − dh·(KH − 1) − 1)/sh + 1
(likewise OW), which must be a whole number (a size that PyTorch would silently floor is a
ShapeError here: pad or crop the input so the windows tile it).

conv2d is bilinear, and its two gate rules are convolutions again, each a primitive with its
own gate rules, so the backward graph prints, emits and differentiates again:

    dx = conv2d_input_grad(G, w)    the transposed convolution of G with w  (Wᵀ·G, col2im)
    dw = conv2d_weight_grad(x, G)   the correlation of x with G            (G·im2col(x)ᵀ)

With ⟨·,·⟩ the sum of elementwise products, ⟨conv2d(x, w), G⟩ = ⟨x, input_grad(G, w)⟩ =
⟨w, weight_grad(x, G)⟩, which gives the gates of the two: input_grad(g, w) has dg = conv2d(U, w)
and dw = weight_grad(U, g); weight_grad(x, g) has dx = input_grad(g, U) and dg = conv2d(x, U).

Pooling (no padding; windows of `kernel`, stepped by `stride`): max_pool2d, avg_pool2d and
global_avg_pool (the mean over H and W).  Their gates go through `pool_windows` (the windows as
[N, C, OH, OW, KH, KW]) and its transpose `pool_fold` (scatter-add back).  Max-pool tie rule:
as the `max` reduction, each window splits its upstream gradient evenly between the elements
that equal its maximum (a window of four equal values passes G/4 to each); overlapping windows
add their shares.
"""
from __future__ import annotations

import numbers

import numpy as np
from ..lazy import sympy as sp

from .. import builder as B
from ..codegen import llvm_conv as LC
from ..codegen import numpy_conv as NC
from ..codegen.forms import helper
from ..ir import FLOAT_DTYPES, ShapeError, TensorType
from .attrs import INT, INTS
from .record import OPS, declare, gate

CONV_ATTRS = {"stride": INTS, "padding": INTS, "dilation": INTS, "groups": INT}


# ---- shape rules ----------------------------------------------------------------------------
def _pair(op, name, v, least):
    if len(v) != 2 or any(int(k) < least for k in v):
        raise ShapeError(f"{op}: {name} must be two integers ≥ {least}, got {tuple(v)}")
    return tuple(int(k) for k in v)


def _concrete(op, what, t, axes):
    for a in axes:
        if not isinstance(t.shape[a], numbers.Integral):
            raise ShapeError(f"{op}: {what} {t.shape} must have a known size along axis {a} "
                             "(only the batch axis may be a dimension name)")


def _float4(op, what, t):
    if t.ndim != 4 or t.dtype not in FLOAT_DTYPES:
        raise ShapeError(f"{op}: {what} must be a 4-D float value, got {t}")


def out_size(op, x_shape, w_shape, kernel, stride, padding, dilation) -> tuple:
    """(OH, OW) of a convolution of x_shape [N, C, H, W] with a KH×KW kernel; a ShapeError
    naming both shapes when the kernel exceeds the padded input or the size is fractional."""
    out = []
    for axis, (n, k, s, p, d) in enumerate(zip(x_shape[2:], kernel, stride, padding, dilation)):
        span = d * (k - 1) + 1
        what = "H" if axis == 0 else "W"
        if span > n + 2 * p:
            raise ShapeError(f"{op}: the kernel ({k} with dilation {d}: spans {span}) is larger "
                             f"than the padded input along {what} ({n} + 2·{p} = {n + 2 * p}); "
                             f"x {tuple(x_shape)}, w {tuple(w_shape)}")
        if (n + 2 * p - span) % s:
            raise ShapeError(f"{op}: the output size along {what} is not a whole number: "
                             f"({n} + 2·{p} − {span})/{s} + 1 = {(n + 2 * p - span) / s + 1:g}; "
                             f"x {tuple(x_shape)}, w {tuple(w_shape)}, stride {tuple(stride)}, "
                             f"padding {tuple(padding)}: pad or crop x so the windows tile it")
        out.append((n + 2 * p - span) // s + 1)
    return tuple(out)


def _conv_attrs(op, stride, padding, dilation, groups):
    if groups < 1:
        raise ShapeError(f"{op}: groups must be ≥ 1, got {groups}")
    return (_pair(op, "stride", stride, 1), _pair(op, "padding", padding, 0),
            _pair(op, "dilation", dilation, 1))


def _check_channels(op, x, w, groups):
    """x [N, C, H, W] against w [O, C/groups, KH, KW]: the channel-mismatch error."""
    if x.dtype != w.dtype:
        raise ShapeError(f"{op}: x {x} and w {w} must have one dtype")
    c, (o, cg) = x.shape[1], w.shape[:2]
    if c != cg * groups:
        raise ShapeError(f"{op}: channel mismatch: x {x.shape} has {c} channels, w {w.shape} "
                         f"expects {cg}·groups = {cg * groups} (groups={groups})")
    if o % groups:
        raise ShapeError(f"{op}: w {w.shape} has {o} output channels, not a multiple of "
                         f"groups={groups}")


def _conv_type(ins, stride, padding, dilation, groups):
    x, w = ins
    _float4("conv2d", "x", x)
    _float4("conv2d", "w", w)
    _concrete("conv2d", "x", x, (1, 2, 3))
    _concrete("conv2d", "w", w, (0, 1, 2, 3))
    geo = _conv_attrs("conv2d", stride, padding, dilation, groups)
    _check_channels("conv2d", x, w, groups)
    oh, ow = out_size("conv2d", x.shape, w.shape, w.shape[2:], *geo)
    return TensorType(x.dtype, (x.shape[0], w.shape[0], oh, ow))


def _input_grad_type(ins, size, stride, padding, dilation, groups):
    g, w = ins
    op = "conv2d_input_grad"
    _float4(op, "g", g)
    _float4(op, "w", w)
    _concrete(op, "g", g, (1, 2, 3))
    _concrete(op, "w", w, (0, 1, 2, 3))
    geo = _conv_attrs(op, stride, padding, dilation, groups)
    size = _pair(op, "size", size, 1)
    x = TensorType(g.dtype, (g.shape[0], w.shape[1] * groups) + size)
    _check_channels(op, x, w, groups)
    if g.shape[1] != w.shape[0] or out_size(op, x.shape, w.shape, w.shape[2:], *geo) != g.shape[2:]:
        raise ShapeError(f"{op}: g {g.shape} is not the output of a convolution of "
                         f"x {x.shape} with w {w.shape}")
    return x


def _weight_grad_type(ins, kernel, stride, padding, dilation, groups):
    x, g = ins
    op = "conv2d_weight_grad"
    _float4(op, "x", x)
    _float4(op, "g", g)
    _concrete(op, "x", x, (1, 2, 3))
    _concrete(op, "g", g, (1, 2, 3))
    geo = _conv_attrs(op, stride, padding, dilation, groups)
    kernel = _pair(op, "kernel", kernel, 1)
    if x.shape[1] % groups or g.shape[1] % groups:
        raise ShapeError(f"{op}: channels of x {x.shape} and g {g.shape} must be multiples of "
                         f"groups={groups}")
    w = TensorType(x.dtype, (g.shape[1], x.shape[1] // groups) + kernel)
    _check_channels(op, x, w, groups)
    if (x.shape[0] != g.shape[0] or g.dtype != x.dtype
            or out_size(op, x.shape, w.shape, kernel, *geo) != g.shape[2:]):
        raise ShapeError(f"{op}: g {g.shape} is not the output of a convolution of "
                         f"x {x.shape} with a kernel of shape {w.shape}")
    return w


def _pool_geometry(op, t, kernel, stride):
    _float4(op, "x", t)
    _concrete(op, "x", t, (1, 2, 3))
    kernel, stride = _pair(op, "kernel", kernel, 1), _pair(op, "stride", stride, 1)
    return out_size(op, t.shape, kernel, kernel, stride, (0, 0), (1, 1))


def _pool_type(op):
    def rule(ins, kernel, stride):
        (t,) = ins
        return TensorType(t.dtype, t.shape[:2] + _pool_geometry(op, t, kernel, stride))
    return rule


def _windows_type(ins, kernel, stride):
    (t,) = ins
    return TensorType(t.dtype, t.shape[:2] + _pool_geometry("pool_windows", t, kernel, stride)
                      + tuple(kernel))


def _fold_type(ins, size, kernel, stride):
    (g,) = ins
    op = "pool_fold"
    if g.ndim != 6 or g.dtype not in FLOAT_DTYPES:
        raise ShapeError(f"{op}: g must be a 6-D float value [N, C, OH, OW, KH, KW], got {g}")
    _concrete(op, "g", g, (1, 2, 3, 4, 5))
    x = TensorType(g.dtype, g.shape[:2] + _pair(op, "size", size, 1))
    if (tuple(kernel) != g.shape[4:]
            or _pool_geometry(op, x, kernel, stride) != g.shape[2:4]):
        raise ShapeError(f"{op}: g {g.shape} is not the windows of x {x.shape} "
                         f"(kernel {tuple(kernel)}, stride {tuple(stride)})")
    return x


def _global_type(ins):
    (t,) = ins
    _float4("global_avg_pool", "x", t)
    _concrete("global_avg_pool", "x", t, (2, 3))
    return TensorType(t.dtype, t.shape[:2])


# ---- gate rules (IR: every one is a convolution, a window op or elementwise arithmetic) ----
def conv2d_input_grad(g, w, size, **geo):
    return g.b.emit("conv2d_input_grad", [g, w], size=tuple(size), **geo)


def conv2d_weight_grad(x, g, kernel, **geo):
    return x.b.emit("conv2d_weight_grad", [x, g], kernel=tuple(kernel), **geo)


def conv2d(x, w, **geo):
    return x.b.emit("conv2d", [x, w], **geo)


def pool_windows(x, kernel, stride):
    return x.b.emit("pool_windows", [x], kernel=tuple(kernel), stride=tuple(stride))


def pool_fold(g, size, kernel, stride):
    return g.b.emit("pool_fold", [g], size=tuple(size), kernel=tuple(kernel),
                    stride=tuple(stride))


CONV_GATE = gate(
    "dx = conv2d_input_grad(G, w): the transposed convolution of G with w",
    lambda g, out, x, w, **geo: conv2d_input_grad(g, w, x.shape[2:], **geo),
    "dw = conv2d_weight_grad(x, G): the correlation of x with G",
    lambda g, out, x, w, **geo: conv2d_weight_grad(x, g, w.shape[2:], **geo))

INPUT_GRAD_GATE = gate(
    "dg = conv2d(U, w)",
    lambda u, out, g, w, size, **geo: conv2d(u, w, **geo),
    "dw = conv2d_weight_grad(U, g)",
    lambda u, out, g, w, size, **geo: conv2d_weight_grad(u, g, w.shape[2:], **geo))

WEIGHT_GRAD_GATE = gate(
    "dx = conv2d_input_grad(g, U)",
    lambda u, out, x, g, kernel, **geo: conv2d_input_grad(g, u, x.shape[2:], **geo),
    "dg = conv2d(x, U)",
    lambda u, out, x, g, kernel, **geo: conv2d(x, u, **geo))


def _spread(g, windows_shape, scale=None):
    """G [N, C, OH, OW] broadcast over each window's KH×KW positions."""
    n, c, oh, ow = g.shape
    g = g if scale is None else g / scale
    return B.broadcast_to(B.reshape(g, (n, c, oh, ow, 1, 1)), windows_shape)


def _max_pool_gate(g, out, x, kernel, stride):
    win = pool_windows(x, kernel, stride)
    routed = OPS["max"].gate[0][1](g, out, win, axes=(4, 5), keepdims=False)
    return pool_fold(routed, x.shape[2:], kernel, stride)


def _avg_pool_gate(g, out, x, kernel, stride):
    shape = g.shape + tuple(kernel)
    return pool_fold(_spread(g, shape, kernel[0] * kernel[1]), x.shape[2:], kernel, stride)


def _global_gate(g, out, x):
    n, c, h, w = x.shape
    return B.broadcast_to(B.reshape(g / (h * w), (n, c, 1, 1)), x.shape)


def _sym(fn):
    """A NumPy function of numpy_conv.py applied to object arrays of SymPy expressions."""
    def rule(*arrays, **attrs):
        return np.asarray(fn(*[np.asarray(a, dtype=object) for a in arrays], **attrs),
                          dtype=object)
    return rule


def _sym_max_pool(x, kernel, stride):
    win = _sym(NC.pool_windows)(x, kernel, stride)
    flat = win.reshape(win.shape[:4] + (-1,))
    return np.asarray(np.frompyfunc(sp.Max, 2, 1).reduce(flat, axis=-1), dtype=object)


GEO = ("stride", "padding", "dilation", "groups")

declare("conv2d",
        shape=_conv_type,
        attrs=CONV_ATTRS,
        eval=NC.conv2d,
        gate=CONV_GATE,
        sympy=_sym(NC.conv2d),
        numpy=helper(NC.conv2d, *GEO),
        llvm=LC.Conv("forward"),
        multilinear=True, ordered=True, epilogue=True)

declare("conv2d_input_grad",
        shape=_input_grad_type,
        attrs={"size": INTS, **CONV_ATTRS},
        eval=NC.conv2d_input_grad,
        gate=INPUT_GRAD_GATE,
        sympy=_sym(NC.conv2d_input_grad),
        numpy=helper(NC.conv2d_input_grad, "size", *GEO),
        llvm=LC.Conv("input_grad"),
        multilinear=True, ordered=True)

declare("conv2d_weight_grad",
        shape=_weight_grad_type,
        attrs={"kernel": INTS, **CONV_ATTRS},
        eval=NC.conv2d_weight_grad,
        gate=WEIGHT_GRAD_GATE,
        sympy=_sym(NC.conv2d_weight_grad),
        numpy=helper(NC.conv2d_weight_grad, "kernel", *GEO),
        llvm=LC.Conv("weight_grad"),
        multilinear=True, ordered=True)

POOL_ATTRS = {"kernel": INTS, "stride": INTS}

declare("max_pool2d",
        shape=_pool_type("max_pool2d"),
        attrs=POOL_ATTRS,
        eval=NC.max_pool2d,
        gate=gate("dx = G routed to each window's maximum (split between ties), folded back",
                  _max_pool_gate),
        sympy=_sym_max_pool,
        numpy=helper(NC.max_pool2d, "kernel", "stride"),
        llvm=LC.Pool("max"),
        selects=True)

declare("avg_pool2d",
        shape=_pool_type("avg_pool2d"),
        attrs=POOL_ATTRS,
        eval=NC.avg_pool2d,
        gate=gate("dx = G/(KH·KW) spread over each window, folded back", _avg_pool_gate),
        sympy=_sym(NC.avg_pool2d),
        numpy=helper(NC.avg_pool2d, "kernel", "stride"),
        llvm=LC.Pool("mean"))

declare("global_avg_pool",
        shape=_global_type,
        eval=NC.global_avg_pool,
        gate=gate("dx = G/(H·W) broadcast over H and W", _global_gate),
        sympy=_sym(NC.global_avg_pool),
        numpy=helper(NC.global_avg_pool),
        llvm=LC.Pool("global"))

declare("pool_windows",
        shape=_windows_type,
        attrs=POOL_ATTRS,
        eval=NC.pool_windows,
        gate=gate("dx = pool_fold(G)",
                  lambda g, out, x, kernel, stride: pool_fold(g, x.shape[2:], kernel, stride)),
        sympy=_sym(NC.pool_windows),
        numpy=helper(NC.pool_windows, "kernel", "stride"),
        llvm=LC.Windows(),
        through=True)

declare("pool_fold",
        shape=_fold_type,
        attrs={"size": INTS, **POOL_ATTRS},
        eval=NC.pool_fold,
        gate=gate("dg = pool_windows(G)",
                  lambda u, out, g, size, kernel, stride: pool_windows(u, kernel, stride)),
        sympy=_sym(NC.pool_fold),
        numpy=helper(NC.pool_fold, "size", "kernel", "stride"),
        llvm=LC.Fold(),
        multilinear=True)
