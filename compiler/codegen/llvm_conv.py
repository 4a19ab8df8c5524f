"""LLVM lowerings of convolution and pooling (compiler/ops/conv.py): im2col into a column tile,
then BLAS gemm (runtime/blas.py), per (image, group, tile of output pixels).

The column tile is one heap buffer of at most TILE_BYTES per convolution call (the memory plan
of the column buffers: each tile is packed, multiplied and overwritten by the next, and freed
when the convolution ends), so no column matrix of the whole batch is ever allocated.  A tile
holds the columns of R whole output rows (or, when one row's columns exceed it, of a segment of
one row), packed as a row-major [C/G·KH·KW, T] matrix (T = the tile's pixel capacity), so that
its output pixels are one contiguous range p0 … p0 + pt of the image's OH·OW and gemm writes
them straight into the NCHW result (ldc = OH·OW), no transposes.  Zero padding is never stored:
for each kernel offset the in-bounds rows and columns of the tile are an interval computed
once (integer arithmetic), the rest of the tile row is zero-filled (im2col) or skipped
(col2im).  A 1×1 convolution with stride 1 and no padding multiplies the input image itself.

Row-major matrices are column-major transposes (llvm_shape.py's convention); per (n, g, tile):
    forward      Y[Og, pt] = W[Og, K]·col[K, pt]     gemm('N','N', pt, Og, K, col, T, W, K, Y, P)
    input_grad   col[K, pt] = Wᵀ·G[Og, pt]           gemm('N','T', pt, K, Og, G, P, W, K, col, T)
                 then col2im adds col into dx
    weight_grad  dW[Og, K] += G[Og, pt]·colᵀ        gemm('T','N', K, Og, pt, col, T, G, P, dW, K)
with K = C/G·KH·KW and P = OH·OW.

Pooling: max/avg pool read each window straight from x (a strided view); pool_windows is a
strided copy and pool_fold its scatter-add; global_avg_pool sums each H×W plane.

Run-time batch size (llvm_dims.py; every lowering here has `runtime_sizes = True`): the batch
axis N may be a `Dim`, read when the kernel runs; channels, spatial sizes and the kernel stay
ints, so the tile plan, the gemm integers (per image: m = pixels of a tile, n = O/G, k =
C/G·KH·KW, none of them N) and the unrolled windows are those of the fixed-size code.  N only
counts the outermost loop (conv: over images; pooling: the loop nest over N·C planes), and a
graph whose batch is a fixed int lowers to exactly the code it did before.
"""
from __future__ import annotations

import numbers

from llvmlite import ir

from ..ir import UnsupportedError
from . import llvm_math as M
from .llvm_shape import BLAS_INT, _gemm_decl, check_blas_ints
from .llvm_types import I8, I64, PTR, VOID, View, const_i64, contiguous_strides

TILE_BYTES = 1 << 20          # the column tile (heap, one per convolution call): 1 MiB
MAX_TILE_BYTES = 1 << 22      # a single tile column larger than this is refused
UNROLL_WINDOW = 16            # pooling windows up to this many elements are unrolled


def _ints(node, *shapes, batch=True):
    """Every size an int, but the batch axis (axis 0 of each shape, when `batch`), which may
    be a run-time size (a Dim, llvm_dims.py)."""
    for s in shapes:
        rest = s[1:] if batch else s
        if not all(isinstance(d, numbers.Integral) for d in rest):
            raise UnsupportedError(f"{node.op} {node.out.name!r}: the LLVM backend needs "
                                   "concrete sizes (a dimension name only along the batch "
                                   f"axis), got shape {s}")


def _empty(*sizes) -> bool:
    """Whether a size is 0 (a run-time size never is: zero sizes specialize, llvm_dims.py)."""
    return any(isinstance(d, numbers.Integral) and d == 0 for d in sizes)


class _Geo:
    """The sizes of one convolution node, whatever its kind."""

    def __init__(self, node, kind):
        a = node.attrs
        if kind == "forward":
            x, w, y = node.inputs[0], node.inputs[1], node.out
        elif kind == "input_grad":
            y, w, x = node.inputs[0], node.inputs[1], node.out
        else:
            x, y, w = node.inputs[0], node.inputs[1], node.out
        self.x, self.w, self.y = x, w, y
        _ints(node, x.shape, y.shape)
        _ints(node, w.shape, batch=False)
        self.n, self.c, self.h, self.wd = x.shape
        self.o, self.cg, self.kh, self.kw = w.shape
        self.oh, self.ow = y.shape[2:]
        self.groups = a["groups"]
        self.og = self.o // self.groups
        (self.sh, self.sw), (self.ph, self.pw) = a["stride"], a["padding"]
        self.dh, self.dw = a["dilation"]
        self.k = self.cg * self.kh * self.kw
        self.p = self.oh * self.ow
        self.direct = (self.kh, self.kw, self.sh, self.sw, self.ph, self.pw) == (1, 1, 1, 1, 0, 0)


class Conv:
    """conv2d ("forward"), conv2d_input_grad, conv2d_weight_grad."""
    runtime_sizes = True         # the batch axis may be a run-time size (module docstring)

    def __init__(self, kind: str):
        self.kind = kind

    def lower(self, em, node):
        _conv(em, node, self.kind, _Geo(node, self.kind))

    def lower_with_epilogue(self, em, node, group):
        """The forward convolution with `group` (its only reader: bias, activation; the op's
        `epilogue` trait) applied to each output tile right after its gemm, while the tile is
        in cache: gemm writes into the group output's buffer and the group rewrites it."""
        assert self.kind == "forward", self.kind
        _conv(em, node, self.kind, _Geo(node, self.kind), em.epilogue(group, node))


def _heap_tile(em, nbytes):
    """A column tile of `nbytes` from malloc (a trap if it fails), for one convolution: heap,
    not stack, so a thread with a small stack runs it too."""
    mod = em.module
    malloc = mod.globals.get("malloc") or ir.Function(mod, ir.FunctionType(PTR, [I64]), "malloc")
    ptr = em.b.call(malloc, [const_i64(nbytes)], name="conv.tile")
    with em.b.if_then(em.b.icmp_unsigned("==", em.b.ptrtoint(ptr, I64), const_i64(0)),
                      likely=False):
        trap = mod.globals.get("llvm.trap") or ir.Function(mod, ir.FunctionType(VOID, []),
                                                           "llvm.trap")
        em.b.call(trap, [])
    return ptr


def _free(em, ptr):
    mod = em.module
    free = mod.globals.get("free") or ir.Function(mod, ir.FunctionType(VOID, [PTR]), "free")
    em.b.call(free, [ptr])


def _smax(b, x, y):
    return b.select(b.icmp_signed(">", x, y), x, y)


def _smin(b, x, y):
    return b.select(b.icmp_signed("<", x, y), x, y)


def _valid(b, start, count, k, s, pad, d, n):
    """[lo, hi) of t in [0, count): 0 ≤ (start + t)·s − pad + k·d < n (k a loop counter)."""
    a = b.sub(const_i64(pad), b.mul(k, const_i64(d)))
    lo = b.select(b.icmp_signed("<=", a, const_i64(0)), const_i64(0),
                  b.sdiv(b.add(a, const_i64(s - 1)), const_i64(s)))
    top = b.add(a, const_i64(n - 1))
    hi = b.select(b.icmp_signed("<", top, const_i64(0)), const_i64(0),
                  b.add(b.sdiv(top, const_i64(s)), const_i64(1)))
    lo = _smin(b, _smax(b, b.sub(lo, start), const_i64(0)), count)
    hi = _smin(b, _smax(b, b.sub(hi, start), lo), count)
    return lo, hi


def _range(em, lo, hi, name):
    """for t in range(lo, hi) (i64 values): yields t."""
    class _R:
        def __enter__(self_):
            self_.cm = em.loop(em.b.sub(hi, lo), name)
            return em.b.add(self_.cm.__enter__(), lo)

        def __exit__(self_, *exc):
            return self_.cm.__exit__(*exc)
    return _R()


def _columns(em, geo, ty, tile, tcap, n, grp, oh0, ow0, rows, cols, scatter):
    """im2col of one tile (scatter=False: x's windows into the tile, zeros outside x) or
    col2im (scatter=True: the tile added back into dx, out-of-bounds entries dropped)."""
    b, x = em.b, geo.x
    zero = ir.Constant(ty, 0.0)
    with em.loop(geo.cg, "c") as c:
        chan = b.add(b.mul(grp, const_i64(geo.cg)), c)
        plane = b.mul(b.add(b.mul(n, const_i64(geo.c)), chan), const_i64(geo.h * geo.wd))
        with em.loop(geo.kh, "kh") as p:
            lo_a, hi_a = _valid(b, oh0, rows, p, geo.sh, geo.ph, geo.dh, geo.h)
            with em.loop(geo.kw, "kw") as q:
                lo_b, hi_b = _valid(b, ow0, cols, q, geo.sw, geo.pw, geo.dw, geo.wd)
                r = b.add(b.mul(b.add(b.mul(c, const_i64(geo.kh)), p), const_i64(geo.kw)), q)
                base = b.mul(r, const_i64(tcap))
                col0 = b.sub(b.mul(q, const_i64(geo.dw)), const_i64(geo.pw))

                def at(off):
                    return b.gep(tile, [off], inbounds=True, source_etype=ty)

                def zeros(start, stop):
                    with _range(em, start, stop, "z") as t:
                        b.store(zero, at(b.add(base, t)))
                if not scatter:
                    zeros(const_i64(0), b.mul(lo_a, cols))
                with _range(em, lo_a, hi_a, "a") as a:
                    row = b.add(base, b.mul(a, cols))
                    ih = b.add(b.mul(b.add(oh0, a), const_i64(geo.sh)),
                               b.sub(b.mul(p, const_i64(geo.dh)), const_i64(geo.ph)))
                    src_row = b.add(plane, b.mul(ih, const_i64(geo.wd)))
                    if not scatter:
                        with _range(em, const_i64(0), lo_b, "z") as t:
                            b.store(zero, at(b.add(row, t)))
                    with _range(em, lo_b, hi_b, "b") as t:
                        iw = b.add(b.mul(b.add(ow0, t), const_i64(geo.sw)), col0)
                        src = b.add(src_row, iw)
                        slot = at(b.add(row, t))
                        if scatter:
                            got = b.load(slot, typ=ty)
                            em.store(b.fadd(em.load(x, src), got), x, src)
                        else:
                            b.store(em.load(x, src), slot)
                    if not scatter:
                        with _range(em, hi_b, cols, "z") as t:
                            b.store(zero, at(b.add(row, t)))
                if not scatter:
                    zeros(b.mul(hi_a, cols), b.mul(rows, cols))


def _call_gemm(em, node, ty, ta, tb, m, n_, k, a, lda, bm, ldb, beta, c, ldc):
    b = em.b
    label = em.ident[node.out.name]

    def cell(t, v, what):
        v = v if isinstance(v, ir.Value) else ir.Constant(t, v)
        if t is BLAS_INT and v.type != BLAS_INT:
            v = b.trunc(v, BLAS_INT)
        return em.var(t, v, name=f"{label}.{what}")
    args = [cell(I8, ord(ta), "transa"), cell(I8, ord(tb), "transb"),
            cell(BLAS_INT, m, "m"), cell(BLAS_INT, n_, "n"), cell(BLAS_INT, k, "k"),
            cell(ty, 1.0, "alpha"), a, cell(BLAS_INT, lda, "lda"), bm,
            cell(BLAS_INT, ldb, "ldb"), cell(ty, beta, "beta"), c, cell(BLAS_INT, ldc, "ldc")]
    b.call(_gemm_decl(em, node.out.dtype), args)


def _epilogue(em, epi, n, oc0, og, oh0, ow0, rows, cols):
    """The fused group on one output tile (channels oc0 … oc0 + og, output rows oh0 … oh0 +
    rows, columns ow0 … ow0 + cols of image n), in place in the group output's buffer."""
    b = em.b
    out, sources, compute = epi
    views = [em.view(out)] + sources
    with em.loop(og, "eo") as o:
        oc = b.add(oc0, o)
        with em.loop(rows, "ea") as a:
            oh = b.add(oh0, a)
            base = [b.add(const_i64(v.offset), b.add(b.add(
                b.mul(n, const_i64(v.strides[0])), b.mul(oc, const_i64(v.strides[1]))),
                b.mul(oh, const_i64(v.strides[2])))) for v in views]
            with em.loop(cols, "et") as t:
                ow = b.add(ow0, t)
                idx = [b.add(ix, b.mul(ow, const_i64(v.strides[3])))
                       for ix, v in zip(base, views)]
                em.store(compute(idx[1:]), out, idx[0])


def _conv(em, node, kind, geo, epi=None):
    """`epi`: (group output, its input views, compute) of a fused epilogue (forward only):
    gemm writes into the group output's buffer and `_epilogue` finishes each tile."""
    b = em.b
    if epi is not None:
        geo.y = epi[0]
    ty = em.ll(node.out.dtype)
    item = 8 if node.out.dtype == "f64" else 4
    if _empty(geo.n, geo.o, geo.c, geo.p):
        if kind != "forward" or geo.c == 0:     # an empty sum: zeros
            em.fill(geo.y if kind == "forward" else node.out, ir.Constant(ty, 0.0))
        if epi is not None and geo.c == 0 and not _empty(geo.n, geo.o, geo.p):
            with em.loop(geo.n, "n") as n:
                _epilogue(em, epi, n, const_i64(0), geo.o, const_i64(0), const_i64(0),
                          const_i64(geo.oh), const_i64(geo.ow))
        return
    if geo.direct:
        rows_per, wt = geo.oh, geo.ow
    elif geo.k * geo.ow * item <= TILE_BYTES:
        rows_per, wt = min(geo.oh, TILE_BYTES // (geo.k * geo.ow * item)), geo.ow
    else:
        rows_per, wt = 1, max(1, TILE_BYTES // (geo.k * item))
        if geo.k * item > MAX_TILE_BYTES:
            raise UnsupportedError(f"{node.op} {node.out.name!r}: a column of C/groups·KH·KW = "
                                   f"{geo.k} elements exceeds the LLVM backend's column tile; "
                                   "use backend='numpy'")
    tcap = rows_per * wt
    check_blas_ints(node.out.name, node.loc, m=tcap, n=max(geo.og, geo.k), k=geo.k, lda=geo.p,
                    ldc=geo.p)
    tile = None if geo.direct else _heap_tile(em, geo.k * tcap * item)
    if kind != "forward" and not (kind == "input_grad" and geo.direct):
        em.fill(node.out, ir.Constant(ty, 0.0))

    def ptr(value, off):
        return b.gep(em.ptr(value), [off], inbounds=True, source_etype=ty)
    n_rt = -(-geo.oh // rows_per)
    n_ct = -(-geo.ow // wt)
    with em.loop(geo.n, "n") as n:
        with em.loop(geo.groups, "g") as grp:
            ybase = b.mul(b.add(b.mul(n, const_i64(geo.o)), b.mul(grp, const_i64(geo.og))),
                          const_i64(geo.p))
            wbase = b.mul(grp, const_i64(geo.og * geo.k))
            xbase = b.mul(b.add(b.mul(n, const_i64(geo.c)), b.mul(grp, const_i64(geo.cg))),
                          const_i64(geo.p))
            with em.loop(n_rt, "rt") as rt:
                oh0 = b.mul(rt, const_i64(rows_per))
                rows = _smin(b, const_i64(rows_per), b.sub(const_i64(geo.oh), oh0))
                with em.loop(n_ct, "ct") as ct:
                    ow0 = b.mul(ct, const_i64(wt))
                    cols = _smin(b, const_i64(wt), b.sub(const_i64(geo.ow), ow0))
                    pt = b.mul(rows, cols)
                    p0 = b.add(b.mul(oh0, const_i64(geo.ow)), ow0)
                    ypix = ptr(geo.y, b.add(ybase, p0))
                    if geo.direct:      # the image is its own column matrix
                        col, ld = ptr(geo.x, xbase), geo.p
                    else:
                        col, ld = tile, tcap
                    if kind != "input_grad" and not geo.direct:
                        _columns(em, geo, ty, tile, tcap, n, grp, oh0, ow0, rows, cols, False)
                    if kind == "forward":
                        _call_gemm(em, node, ty, "N", "N", pt, geo.og, geo.k, col, ld,
                                   ptr(geo.w, wbase), geo.k, 0.0, ypix, geo.p)
                        if epi is not None:
                            _epilogue(em, epi, n, b.mul(grp, const_i64(geo.og)), geo.og,
                                      oh0, ow0, rows, cols)
                    elif kind == "input_grad":
                        _call_gemm(em, node, ty, "N", "T", pt, geo.k, geo.og, ypix, geo.p,
                                   ptr(geo.w, wbase), geo.k, 0.0, col, ld)
                        if not geo.direct:
                            _columns(em, geo, ty, tile, tcap, n, grp, oh0, ow0, rows, cols,
                                     True)
                    else:
                        _call_gemm(em, node, ty, "T", "N", geo.k, geo.og, pt, col, ld,
                                   ypix, geo.p, 1.0, ptr(geo.w, wbase), geo.k)
    if tile is not None:
        _free(em, tile)


# ---- pooling ------------------------------------------------------------------------------
def _window_strides(x, node):
    """Strides of x read as [N, C, OH, OW, KH, KW] windows."""
    _ints(node, x.shape)
    n, c, h, w = x.shape
    sh, sw = node.attrs["stride"]
    return (c * h * w, h * w, sh * w, sw, w, 1)


class Pool:
    """max_pool2d ("max"), avg_pool2d ("mean"), global_avg_pool ("global")."""
    runtime_sizes = True         # N: a loop count (module docstring)

    def __init__(self, kind: str):
        self.kind = kind

    def lower(self, em, node):
        b, x, out = em.b, node.inputs[0], node.out
        ty = em.ll(out.dtype)
        _ints(node, x.shape)
        if self.kind == "global":
            h, w = x.shape[2:]
            src = View(x, 0, (x.shape[1] * h * w, h * w))
            count, offsets = h * w, None
        else:
            kh, kw = node.attrs["kernel"]
            src = View(x, 0, _window_strides(x, node)[:4])
            count = kh * kw
            offsets = [p * x.shape[3] + q for p in range(kh) for q in range(kw)]

        def combine(acc, v):
            return M.maximum(b, acc, v) if self.kind == "max" else b.fadd(acc, v)

        def body(idx):
            base = idx[1]
            if offsets is not None and count <= UNROLL_WINDOW:
                acc = None
                for off in offsets:
                    v = em.load(x, b.add(base, const_i64(off)))
                    acc = v if acc is None else combine(acc, v)
            else:
                width = count if offsets is None else node.attrs["kernel"][1]
                height = 1 if offsets is None else node.attrs["kernel"][0]
                first = em.load(x, base)
                acc_slot = em.var(ty, first if self.kind == "max" else ir.Constant(ty, 0.0))
                with em.loop(height, "p") as p:
                    row = b.add(base, b.mul(p, const_i64(x.shape[3])))
                    with em.loop(width, "q") as q:
                        v = em.load(x, b.add(row, q))
                        b.store(combine(em.get(acc_slot, ty), v), acc_slot)
                acc = em.get(acc_slot, ty)
            if self.kind != "max":
                acc = b.fdiv(acc, ir.Constant(ty, float(count)))
            em.store(acc, out, idx[0])
        em.nest(out.shape, [em.view(out), src], body)


class Windows:
    """pool_windows: a strided copy of x's windows."""
    runtime_sizes = True         # N: a loop count (module docstring)

    def lower(self, em, node):
        x = node.inputs[0]
        em.copy(em.view(node.out), View(x, 0, _window_strides(x, node)), node.out.shape)


class Fold:
    """pool_fold: dx = 0, then dx[window element] += g[...] over g's shape."""
    runtime_sizes = True         # N: a loop count (module docstring)

    def lower(self, em, node):
        b, g, out = em.b, node.inputs[0], node.out
        ty = em.ll(out.dtype)
        em.fill(out, ir.Constant(ty, 0.0))
        dst = View(out, 0, _window_strides(out, node))

        def body(idx):
            em.store(b.fadd(em.load(out, idx[0]), em.load(g, idx[1])), out, idx[0])
        em.nest(g.shape, [dst, View(g, 0, contiguous_strides(g.shape))], body)


__all__ = ["Conv", "Pool", "Windows", "Fold"]
