"""layer_norm and batch_norm over the whole finite range (compiler/builder_conv.py, _normalized):
values and gradients on both backends, f64 and f32, against an 80-digit mpmath oracle.  The plain
two-pass variance mean((x − μ)²) overflows once |x − μ| passes √MAX (1e154 in f64, 1e19 in f32)
and the row [-1e300, 0, 0, 1e300] normalized to 0 with a finite gradient; constant rows at large
magnitudes came out ±1 wherever the rounded mean missed the row's value.  Where the true value
is not representable the result must be inf or nan, never a finite wrong number."""
import functools

import mpmath as mp
import numpy as np
import pytest

import compiler
from compiler.builder_conv import running_stats
from compiler.ir import ShapeError
from frontends import dsl
from frontends.dsl import f32, f64

BACKENDS = ("numpy", "llvm")
SPEC = {"f64": f64, "f32": f32}
NP = {"f64": np.float64, "f32": np.float32}
TOL = {"f64": 1e-14, "f32": 4e-6}        # relative to the largest |value| of the row
SCALES = {"f64": (1e-300, 1e-150, 1.0, 1e150, 1e300), "f32": (1e-30, 1e-15, 1.0, 1e15, 1e30)}
EPS = 1e-5
N = 6
MAX = float(np.finfo(np.float64).max)


def norm_rows(x, g, eps):
    """The oracle, row by row of x [R, n] (exact values of the floats, 80 digits): z = (x − μ)/σ
    with σ = √(mean((x − μ)²) + eps), and ∂(Σ g·z)/∂x by the closed form
    ∂/∂d_j = g_j/σ − d_j·Σ g·d/(n·σ³) projected, ∂/∂x = ∂/∂d − mean(∂/∂d) (d = x − μ)."""
    mp.mp.dps = 80
    z, dx = np.zeros(x.shape), np.zeros(x.shape)
    e = mp.mpf(float(eps))
    for i, row in enumerate(x):
        xs = [mp.mpf(float(v)) for v in row]
        gs = [mp.mpf(float(v)) for v in g[i]]
        n = len(xs)
        mu = mp.fsum(xs) / n
        d = [v - mu for v in xs]
        sig = mp.sqrt(mp.fsum(t * t for t in d) / n + e)
        gd = mp.fsum(a * b for a, b in zip(gs, d))
        dd = [gj / sig - dj * gd / (n * sig ** 3) for gj, dj in zip(gs, d)]
        mdd = mp.fsum(dd) / n
        z[i] = [float(t / sig) for t in d]
        dx[i] = [float(t - mdd) for t in dd]
    return z, dx


def test_oracle_gradient_is_the_derivative_of_its_value():
    """The closed form above against mpmath's own numerical derivative of Σ g·z."""
    mp.mp.dps = 80
    x = np.array([[0.3, -1.2, 2.5, 0.7]])
    g = np.array([[1.0, -0.5, 0.25, 2.0]])
    _, dx = norm_rows(x, g, 0.1)

    def loss(j, t):
        xs = [mp.mpf(float(v)) for v in x[0]]
        xs[j] = t
        mu = mp.fsum(xs) / 4
        sig = mp.sqrt(mp.fsum((v - mu) ** 2 for v in xs) / 4 + mp.mpf(0.1))
        return mp.fsum(mp.mpf(float(gj)) * (v - mu) / sig for gj, v in zip(g[0], xs))

    for j in range(4):
        want = mp.diff(lambda t: loss(j, t), mp.mpf(float(x[0, j])))
        assert dx[0, j] == pytest.approx(float(want), rel=1e-14)


def close(got, want, tol, what):
    """Row by row: |got − want| ≤ tol·max |want| of the row (so a zero row must be 0)."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert np.all(np.isfinite(got)), f"{what}: not finite: {got}"
    bound = tol * np.max(np.abs(want), axis=-1, keepdims=True)
    bad = np.abs(got - want) > bound
    assert not bad.any(), f"{what}: got {got[bad]}, want {want[bad]}"


@functools.lru_cache(maxsize=None)
def ln_fn(backend, dt, eps=EPS, rows="R"):
    def model(x, gamma, beta, c):
        z = dsl.layer_norm(x, gamma, beta, eps=eps)
        return {"loss": dsl.sum(z * c), "z": z}
    s = SPEC[dt]
    g = dsl.trace(model, x=s[rows, N], gamma=s[N], beta=s[N], c=s[rows, N])
    return compiler.compile(compiler.grad(g, wrt=["x", "gamma", "beta"], of="loss"),
                            backend=backend)


def check_layer_norm(backend, dt, x, eps=EPS, tol=None):
    rng = np.random.default_rng(7)
    t = NP[dt]
    x = np.asarray(x, t)
    gamma, beta = rng.uniform(0.5, 1.5, N).astype(t), rng.standard_normal(N).astype(t)
    c = rng.standard_normal(x.shape).astype(t)
    out = ln_fn(backend, dt, eps)(x=x, gamma=gamma, beta=beta, c=c)
    z, dx = norm_rows(x, c * gamma, t(eps))
    tol = TOL[dt] if tol is None else tol
    close(out["z"], z * gamma + beta, tol, "value")
    close(out["dx"], dx, tol, "dx")
    close(out["dgamma"][None], np.sum(c * z, axis=0)[None], tol, "dgamma")
    return out


def rows_at(scale, dt):
    """Random rows, a row with a mean far from 0, a constant row and the brief's [-a, 0, 0, a]."""
    rng = np.random.default_rng(11)
    base = np.stack([rng.standard_normal(N), rng.standard_normal(N) + 40.0, np.full(N, -1.7),
                     np.array([-1.0, 0, 0, 1.0, 0, 0])])
    return (base * scale).astype(NP[dt])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dt,scale", [(d, s) for d in SCALES for s in SCALES[d]])
def test_layer_norm_value_and_gradient_at_every_scale(backend, dt, scale):
    check_layer_norm(backend, dt, rows_at(scale, dt))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dt", SPEC)
def test_one_huge_value_among_tiny_ones(backend, dt):
    big, tiny = (1e300, 1e-300) if dt == "f64" else (1e30, 1e-30)
    x = np.array([[big, tiny, -3 * tiny, 2 * tiny, 0.0, 5 * tiny],
                  [tiny, -big, big, 0.5 * big, -tiny, 0.0]])
    check_layer_norm(backend, dt, x)


@pytest.mark.parametrize("backend", BACKENDS)
def test_values_near_the_largest_float(backend):
    """Σx overflows (a mean of 1.7e308) and so does x − μ (MAX − (−MAX/3)); z does not."""
    x = np.array([[1.7e308, 1.6e308, 1.75e308, 1.79e308, 1.65e308, 1.7e308],
                  [MAX, -MAX, -MAX, MAX, -MAX, -MAX],
                  [1e308] * N])
    check_layer_norm(backend, "f64", x)


def test_the_mean_primitive_overflows_visibly():
    """dsl.mean keeps NumPy's sum-then-divide (the reference): an overflowed sum is inf, which
    shows; the norm layers do not use it (their mean is a shifted Σ x·(1/n))."""
    g = dsl.trace(lambda x: dsl.mean(x), x=f64[2])
    for be in BACKENDS:
        with np.errstate(over="ignore"):
            assert compiler.compile(g, backend=be)(x=np.array([1e308, 1e308]))["out"] == np.inf


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("eps", [0.0, 1e-5, 1.0, 1e4])
@pytest.mark.parametrize("scale", [1e-300, 1e-4, 1e-2, 1.0, 1e2, 1e300])
def test_eps_counts_exactly_where_it_matters(backend, eps, scale):
    """Rows whose variance is below, near and above eps: eps enters as itself (σ² + eps), at
    eps = 0 too (at 1e-300 the variance underflows but z is still ±1-sized)."""
    rng = np.random.default_rng(5)
    x = np.stack([rng.standard_normal(N), rng.standard_normal(N) * 3 + 1]) * scale
    check_layer_norm(backend, "f64", x, eps=eps)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("scale", [1.0, 1e300])
def test_constant_row_gives_zero_with_the_gradient_over_sqrt_eps(backend, scale):
    out = check_layer_norm(backend, "f64", np.full((2, N), 3.0 * scale))
    assert np.all(out["z"] == out["z"][0]) and np.all(np.isfinite(out["dx"]))


@pytest.mark.parametrize("backend", BACKENDS)
def test_constant_row_with_eps_zero_is_nan(backend):
    """0/0: no value is right, so the result must not look like one."""
    out = ln_fn(backend, "f64", 0.0)(x=np.full((1, N), 2.0), gamma=np.ones(N), beta=np.zeros(N),
                                     c=np.ones((1, N)))
    assert np.isnan(out["z"]).all() and np.isnan(out["dx"]).all()


@pytest.mark.parametrize("eps", [-1e-5, float("nan"), float("inf"), "small"])
def test_bad_eps_is_refused(eps):
    with pytest.raises(ShapeError, match="eps must be a finite number"):
        dsl.trace(lambda x, g, b: dsl.layer_norm(x, g, b, eps=eps), x=f64[2, 3], g=f64[3],
                  b=f64[3])
    with pytest.raises(ShapeError, match="eps must be a finite number"):
        dsl.trace(lambda x, g, b: dsl.batch_norm(x, g, b, eps=eps), x=f64[2, 3], g=f64[3],
                  b=f64[3])


# ---- batch_norm: per channel, over N and the spatial axis; N concrete or sized at run time ----

C, L, B = 2, 2, 3            # x [B, C, L]: each channel's row has B·L = 6 values


@functools.lru_cache(maxsize=None)
def bn_fn(backend, dt, batch):
    def model(x, gamma, beta, c):
        z = dsl.batch_norm(x, gamma, beta, eps=EPS, momentum=0.25, name="bn")
        return {"loss": dsl.sum(z * c), "z": z}
    s = SPEC[dt]
    specs = dict(x=s[batch, C, L], gamma=s[C], beta=s[C], c=s[batch, C, L])
    if batch == "N":            # (the running variance needs a concrete batch size)
        g = dsl.trace(model, **specs)
    else:
        with running_stats():
            g = dsl.trace(model, **specs)
    return compiler.compile(compiler.grad(g, wrt=["x", "gamma"], of="loss"), backend=backend)


def per_channel(a):
    return np.transpose(a, (1, 0, 2)).reshape(C, -1)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("batch", [B, "N"])
@pytest.mark.parametrize("dt,scale", [(d, s) for d in SCALES for s in SCALES[d]])
def test_batch_norm_value_gradient_and_running_statistics(backend, batch, dt, scale):
    rng = np.random.default_rng(3)
    t = NP[dt]
    x = np.stack([rng.standard_normal((B, L)) * scale, np.full((B, L), -2.5 * scale)], axis=1)
    x = x.astype(t)
    gamma = np.array([1.5, 0.5], t)
    c = rng.standard_normal(x.shape).astype(t)
    rm, rv = np.array([1.0, -2.0], t), np.array([0.5, 3.0], t)
    state = {} if batch == "N" else {"bn_running_mean": rm, "bn_running_var": rv}
    out = bn_fn(backend, dt, batch)(x=x, gamma=gamma, beta=np.zeros(C, t), c=c, **state)
    z, dx = norm_rows(per_channel(x), per_channel(c) * gamma[:, None], t(EPS))
    close(per_channel(out["z"]), z * gamma[:, None], TOL[dt], "value")
    close(per_channel(out["dx"]), dx, TOL[dt], "dx")
    if not state:
        return
    mp.mp.dps = 80
    for k, row in enumerate(per_channel(x)):
        xs = [mp.mpf(float(v)) for v in row]
        mu = mp.fsum(xs) / len(xs)
        var = mp.fsum((v - mu) ** 2 for v in xs) / (len(xs) - 1)
        m = mp.mpf(0.25)
        want_m = float((1 - m) * mp.mpf(float(rm[k])) + m * mu)
        want_v = (1 - m) * mp.mpf(float(rv[k])) + m * var
        want_v = float(want_v) if want_v < np.finfo(t).max else np.inf   # over MAX: inf
        assert out["bn_running_mean_next"][k] == pytest.approx(want_m, rel=TOL[dt])
        got_v = out["bn_running_var_next"][k]
        assert got_v == pytest.approx(want_v, rel=TOL[dt]) or got_v == want_v == np.inf


@pytest.mark.parametrize("backend", BACKENDS)
def test_batch_norm_evaluation_far_from_the_running_mean(backend):
    """x − running_mean is over MAX, (x − running_mean)/σ is not."""
    g = dsl.trace(lambda x, gamma, beta: dsl.batch_norm(x, gamma, beta, eps=EPS),
                  training=False, x=f64[2, 2], gamma=f64[2], beta=f64[2])
    x = np.array([[1.5e308, 1.0], [-1e308, 3.0]])
    rm, rv = np.array([-1.5e308, 2.0]), np.array([1e300, 4.0])
    got = compiler.compile(g, backend=backend)(x=x, gamma=np.ones(2), beta=np.zeros(2),
                                               gamma_running_mean=rm, gamma_running_var=rv)
    mp.mp.dps = 80
    want = [[float((mp.mpf(float(x[i, k])) - mp.mpf(float(rm[k])))
                   / mp.sqrt(mp.mpf(float(rv[k])) + mp.mpf(EPS))) for k in range(2)]
            for i in range(2)]
    np.testing.assert_allclose(got["out"], want, rtol=1e-14)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_non_finite_value_spoils_its_own_row_only(backend):
    fn = ln_fn(backend, "f64")
    for bad in ([np.inf, 1, 2, 3, 4, 5], [1, np.nan, 2, 3, 4, 5], [1, 2, 3, 4, 5, -np.inf]):
        with np.errstate(invalid="ignore"):
            out = fn(x=np.array([bad, [1.0] * N]), gamma=np.ones(N), beta=np.zeros(N),
                     c=np.ones((2, N)))
        assert not np.isfinite(out["z"][0]).any() and not np.isfinite(out["dx"][0]).any()
        assert np.all(out["z"][1] == 0) and np.all(np.isfinite(out["dx"][1]))
