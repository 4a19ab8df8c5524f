"""Convolution and pooling in NumPy: the op records' reference evaluations (compiler/ops/conv.py)
and the helpers an emitted module defines (their source is copied in, so each is self-contained
and uses only `np`).  Layout NCHW for activations, OIHW for weights (PyTorch's convention).

im2col is a strided view (`as_strided`, no copy) of the padded input with shape
[N, G, C/G, KH, KW, OH, OW], reshaped to the column matrix [N, G, C/G·KH·KW, OH·OW] (the one
copy); a convolution is then one batched matrix product per (image, group).  col2im (the
transposed convolution's scatter-add) loops over the KH·KW kernel offsets, never over pixels:
each offset adds one strided slice.  Every function also takes object arrays of SymPy
expressions (the records' SymPy meanings are these same functions).
"""
from __future__ import annotations

import numpy as np


def conv2d(x, w, stride, padding, dilation, groups):
    """y[n, o, i, j] = Σ_{c, p, q} x[n, g·C/G + c, i·sh − ph + p·dh, j·sw − pw + q·dw] ·
    w[o, c, p, q], g = o // (O/G), zero outside x."""
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    if ph or pw:
        xp = np.zeros((n, c, h + 2 * ph, wd + 2 * pw), dtype=x.dtype)
        xp[:, :, ph:ph + h, pw:pw + wd] = x
        x = xp
    x = np.ascontiguousarray(x)
    oh = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    ow = (wd + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    s = x.strides
    win = np.lib.stride_tricks.as_strided(
        x, (n, groups, cg, kh, kw, oh, ow),
        (s[0], cg * s[1], s[1], dh * s[2], dw * s[3], sh * s[2], sw * s[3]), writeable=False)
    cols = win.reshape(n, groups, cg * kh * kw, oh * ow)
    y = np.matmul(w.reshape(groups, o // groups, cg * kh * kw), cols)
    return y.reshape(n, o, oh, ow)


def conv2d_input_grad(g, w, size, stride, padding, dilation, groups):
    """dx of y = conv2d(x, w) for upstream g (the transposed convolution of g with w):
    columns Wᵀ·G per (image, group), scattered back with col2im (one slice add per kernel
    offset); `size` is x's (H, W)."""
    n, o, oh, ow = g.shape
    _, cg, kh, kw = w.shape
    (h, wd), (sh, sw), (ph, pw), (dh, dw) = size, stride, padding, dilation
    wt = w.reshape(groups, o // groups, cg * kh * kw).transpose(0, 2, 1)
    cols = np.matmul(wt, g.reshape(n, groups, o // groups, oh * ow))
    cols = cols.reshape(n, groups * cg, kh, kw, oh, ow)
    dx = np.zeros((n, groups * cg, h + 2 * ph, wd + 2 * pw), dtype=g.dtype)
    for p in range(kh):
        for q in range(kw):
            dx[:, :, p * dh:p * dh + sh * (oh - 1) + 1:sh,
               q * dw:q * dw + sw * (ow - 1) + 1:sw] += cols[:, :, p, q]
    return np.ascontiguousarray(dx[:, :, ph:ph + h, pw:pw + wd])


def conv2d_weight_grad(x, g, kernel, stride, padding, dilation, groups):
    """dw of y = conv2d(x, w) for upstream g (the correlation of x with g):
    Σₙ G[n]·cols(x)[n]ᵀ per group; `kernel` is w's (KH, KW)."""
    n, c, h, wd = x.shape
    _, o, oh, ow = g.shape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, padding, dilation
    cg = c // groups
    if ph or pw:
        xp = np.zeros((n, c, h + 2 * ph, wd + 2 * pw), dtype=x.dtype)
        xp[:, :, ph:ph + h, pw:pw + wd] = x
        x = xp
    x = np.ascontiguousarray(x)
    s = x.strides
    win = np.lib.stride_tricks.as_strided(
        x, (n, groups, cg, kh, kw, oh, ow),
        (s[0], cg * s[1], s[1], dh * s[2], dw * s[3], sh * s[2], sw * s[3]), writeable=False)
    cols = win.reshape(n, groups, cg * kh * kw, oh * ow)
    gg = g.reshape(n, groups, o // groups, oh * ow)
    dw_ = np.matmul(gg, cols.transpose(0, 1, 3, 2)).sum(axis=0)
    return dw_.reshape(o, cg, kh, kw)


def pool_windows(x, kernel, stride):
    """The pooling windows of x, [N, C, OH, OW, KH, KW] (a copy: windows may overlap)."""
    n, c, h, wd = x.shape
    (kh, kw), (sh, sw) = kernel, stride
    oh, ow = (h - kh) // sh + 1, (wd - kw) // sw + 1
    x = np.ascontiguousarray(x)
    s = x.strides
    win = np.lib.stride_tricks.as_strided(
        x, (n, c, oh, ow, kh, kw), (s[0], s[1], sh * s[2], sw * s[3], s[2], s[3]),
        writeable=False)
    return win.copy()


def pool_fold(g, size, kernel, stride):
    """The transpose of pool_windows: dx[n, c, i·sh + p, j·sw + q] += g[n, c, i, j, p, q]."""
    n, c, oh, ow, kh, kw = g.shape
    (h, wd), (sh, sw) = size, stride
    dx = np.zeros((n, c, h, wd), dtype=g.dtype)
    for p in range(kh):
        for q in range(kw):
            dx[:, :, p:p + sh * (oh - 1) + 1:sh, q:q + sw * (ow - 1) + 1:sw] += g[:, :, :, :, p, q]
    return dx


def max_pool2d(x, kernel, stride):
    """The maximum of each window (NaN propagates, as np.max)."""
    n, c, h, wd = x.shape
    (kh, kw), (sh, sw) = kernel, stride
    oh, ow = (h - kh) // sh + 1, (wd - kw) // sw + 1
    x = np.ascontiguousarray(x)
    s = x.strides
    win = np.lib.stride_tricks.as_strided(
        x, (n, c, oh, ow, kh, kw), (s[0], s[1], sh * s[2], sw * s[3], s[2], s[3]),
        writeable=False)
    return win.max(axis=(4, 5))


def avg_pool2d(x, kernel, stride):
    """The mean of each window."""
    n, c, h, wd = x.shape
    (kh, kw), (sh, sw) = kernel, stride
    oh, ow = (h - kh) // sh + 1, (wd - kw) // sw + 1
    x = np.ascontiguousarray(x)
    s = x.strides
    win = np.lib.stride_tricks.as_strided(
        x, (n, c, oh, ow, kh, kw), (s[0], s[1], sh * s[2], sw * s[3], s[2], s[3]),
        writeable=False)
    return win.sum(axis=(4, 5)) / (kh * kw)


def global_avg_pool(x):
    """The mean over H and W: [N, C, H, W] -> [N, C]."""
    return x.sum(axis=(2, 3)) / (x.shape[2] * x.shape[3])
