"""The implementations compared, behind one interface.  Each is optional at import time.

    IMPLS[name] = Impl(name, probe, train, scalar)
      probe()                      -> version string; raises (ImportError, ...) if unusable
      train(wl, params, X, y, lr)  -> Runner: .step() one SGD step (returns the loss before
                                      the update), .params() the current parameters as NumPy
      scalar(wl)                   -> fn(**inputs) -> a result; to_numpy(result) gives
                                      (value, (gradient of each input, in input order))

Every runner starts from copies of the same parameters and data (workloads.train_data) and
keeps its parameters in its own format between steps (JAX and torch arrays, PyTensor shared
variables), as a training loop would.  Data arrays are converted once, outside the timing.
"""
from __future__ import annotations

import os

import numpy as np

from workloads import GRADC_MODELS, LR, hand_scalar, hand_step


class Runner:
    def __init__(self, step, params, obj=None):
        self.step, self.params, self.obj = step, params, obj


class Impl:
    def __init__(self, name, probe, train, scalar, group="peer"):
        self.name, self.probe, self.train, self.scalar = name, probe, train, scalar
        self.group = group             # "hand", "gradc" or "peer"


# ---- hand-written NumPy --------------------------------------------------------------------
def _hand_train(wl, params, X, y, lr=LR):
    p = {k: v.copy() for k, v in params.items()}
    return Runner(lambda: hand_step(p, X, y, wl.acts, lr)[0], lambda: p)


# ---- gradc ---------------------------------------------------------------------------------
def _gradc_train(backend):
    def build(wl, params, X, y, lr=LR):
        import compiler
        from frontends.dsl import f32, f64, i64
        spec = f64 if wl.dtype == "f64" else f32
        step = compiler.train_step(GRADC_MODELS[wl.family], params=params,
                                   inputs={"X": spec[X.shape], "y": i64[y.shape]},
                                   optimizer=compiler.optim.SGD(lr=lr), backend=backend)
        return Runner(lambda: step(X=X, y=y), lambda: step.params, obj=step)
    return build


def _gradc_scalar(backend):
    def build(wl):
        import compiler
        from frontends import dsl
        from frontends.dsl import f64
        from workloads import scalar_inputs
        specs = {k: f64[np.shape(v)] for k, v in scalar_inputs(wl).items()}
        g = dsl.trace(GRADC_MODELS[wl.family], **specs)
        fn = compiler.compile(compiler.grad(g), backend=backend)
        names = list(specs)
        return fn, (lambda r: (r["out"], tuple(r["d" + k] for k in names)))
    return build


def _gradc_probe(backend):
    def probe():
        import compiler  # noqa: F401  (gradc imports)
        if backend == "llvm":
            import llvmlite
            return f"llvmlite {llvmlite.__version__}"
        return "numpy " + np.__version__
    return probe


# ---- JAX -----------------------------------------------------------------------------------
def _jax():
    import jax
    jax.config.update("jax_enable_x64", True)       # f64 workloads; f32 arrays stay f32
    return jax


def _jax_act(jax, act):
    return {"relu": jax.nn.relu, "tanh": jax.numpy.tanh, "swish": jax.nn.silu}[act]


def _jax_train(wl, params, X, y, lr=LR):
    jax = _jax()
    jnp = jax.numpy
    L = len(wl.acts) + 1
    acts = [_jax_act(jax, a) for a in wl.acts]

    def loss_fn(p, X, y):
        h = X
        for i, act in enumerate(acts, 1):
            h = act(h @ p[f"W{i}"] + p[f"b{i}"])
        logp = jax.nn.log_softmax(h @ p[f"W{L}"] + p[f"b{L}"], axis=1)
        return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))

    @jax.jit
    def step(p, X, y):
        loss, g = jax.value_and_grad(loss_fn)(p, X, y)
        return loss, jax.tree.map(lambda a, b: a - lr * b, p, g)

    state = {"p": {k: jnp.asarray(v) for k, v in params.items()}}
    Xj, yj = jax.device_put(X), jax.device_put(y)

    def run():
        loss, state["p"] = step(state["p"], Xj, yj)
        return float(loss)          # waits for the result
    return Runner(run, lambda: {k: np.asarray(v) for k, v in state["p"].items()})


def _jax_scalar(wl):
    jax = _jax()
    if wl.family == "add_mul":
        f = jax.jit(jax.value_and_grad(lambda x, y, z: (x + y) * z, argnums=(0, 1, 2)))
    else:
        f = jax.jit(jax.value_and_grad(
            lambda w, x: jax.nn.sigmoid(w[0] * x[0] + w[1] * x[1] + w[2]), argnums=(0, 1)))

    def call(**kw):
        r = f(*kw.values())
        jax.block_until_ready(r)
        return r
    return call, lambda r: (np.asarray(r[0]), tuple(np.asarray(g) for g in r[1]))


# ---- PyTorch (eager) -----------------------------------------------------------------------
def _torch():
    import torch
    from threadpoolctl import threadpool_info
    blas = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]
    torch.set_num_threads(int(os.environ.get("GRADC_BENCH_THREADS", blas[0] if blas else 1)))
    return torch


def _torch_train(wl, params, X, y, lr=LR):
    torch = _torch()
    F = torch.nn.functional
    acts = [{"relu": F.relu, "tanh": torch.tanh, "swish": F.silu}[a] for a in wl.acts]
    L = len(acts) + 1
    p = {k: torch.tensor(v.copy(), requires_grad=True) for k, v in params.items()}
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)

    def run():
        h = Xt
        for i, act in enumerate(acts, 1):
            h = act(h @ p[f"W{i}"] + p[f"b{i}"])
        loss = F.cross_entropy(h @ p[f"W{L}"] + p[f"b{L}"], yt)
        loss.backward()
        with torch.no_grad():
            for t in p.values():
                t.add_(t.grad, alpha=-lr)
                t.grad = None
        return loss.item()
    return Runner(run, lambda: {k: v.detach().numpy() for k, v in p.items()})


def _torch_scalar(wl):
    torch = _torch()

    def call(**kw):
        ts = [torch.from_numpy(np.asarray(v)).requires_grad_(True) for v in kw.values()]
        if wl.family == "add_mul":
            out = (ts[0] + ts[1]) * ts[2]
        else:
            w, x = ts
            out = torch.sigmoid(w[0] * x[0] + w[1] * x[1] + w[2])
        return out, torch.autograd.grad(out, ts)
    return call, lambda r: (r[0].detach().numpy(), tuple(g.numpy() for g in r[1]))


# ---- PyTensor ------------------------------------------------------------------------------
def _pytensor_mode(linker):
    from pytensor.compile.mode import Mode
    return Mode(linker="cvm", optimizer="fast_run") if linker == "c" else Mode(
        linker="numba", optimizer="fast_run")


def _pytensor_probe(linker):
    def probe():
        import pytensor
        import pytensor.tensor as pt
        x = pt.dvector("x")
        f = pytensor.function([x], (x * x).sum(), mode=_pytensor_mode(linker))
        assert float(f(np.ones(3))) == 3.0
        if linker == "numba":
            import numba
            return f"pytensor {pytensor.__version__}, numba {numba.__version__}"
        return f"pytensor {pytensor.__version__}, C (cvm)"
    return probe


def _pytensor_act(pt, act, z):
    return {"relu": lambda: pt.maximum(z, 0), "tanh": lambda: pt.tanh(z),
            "swish": lambda: z * pt.sigmoid(z)}[act]()


def _pytensor_train(linker):
    def build(wl, params, X, y, lr=LR):
        import pytensor
        import pytensor.tensor as pt
        dt = "float64" if wl.dtype == "f64" else "float32"
        p = {k: pytensor.shared(v.copy(), name=k) for k, v in params.items()}
        Xs, ys = pt.matrix("X", dtype=dt), pt.lvector("y")
        L = len(wl.acts) + 1
        h = Xs
        for i, act in enumerate(wl.acts, 1):
            h = _pytensor_act(pt, act, h @ p[f"W{i}"] + p[f"b{i}"])
        logp = pt.special.log_softmax(h @ p[f"W{L}"] + p[f"b{L}"], axis=1)
        loss = -logp[pt.arange(ys.shape[0]), ys].mean()
        grads = pytensor.grad(loss, list(p.values()))
        lr_c = pt.constant(np.asarray(lr, dtype=dt))
        f = pytensor.function([Xs, ys], loss, mode=_pytensor_mode(linker),
                              updates=[(v, v - lr_c * g) for v, g in zip(p.values(), grads)])
        return Runner(lambda: f(X, y), lambda: {k: v.get_value() for k, v in p.items()})
    return build


def _pytensor_scalar(linker):
    def build(wl):
        import pytensor
        import pytensor.tensor as pt
        if wl.family == "add_mul":
            ins = [pt.dscalar(n) for n in "xyz"]
            out = (ins[0] + ins[1]) * ins[2]
        else:
            ins = [pt.dvector("w"), pt.dvector("x")]
            w, x = ins
            out = pt.sigmoid(w[0] * x[0] + w[1] * x[1] + w[2])
        f = pytensor.function(ins, [out] + pytensor.grad(out, ins), mode=_pytensor_mode(linker))
        return lambda **kw: f(*kw.values()), lambda r: (r[0], tuple(r[1:]))
    return build


# ---- HIPS autograd -------------------------------------------------------------------------
def _autograd_train(wl, params, X, y, lr=LR):
    import autograd
    import autograd.numpy as anp
    from autograd.scipy.special import logsumexp
    acts = {"relu": lambda z: anp.maximum(z, 0), "tanh": anp.tanh,
            "swish": lambda z: z / (1 + anp.exp(-z))}
    L = len(wl.acts) + 1
    n = X.shape[0]

    def loss_fn(p):
        h = X
        for i, act in enumerate(wl.acts, 1):
            h = acts[act](anp.dot(h, p[f"W{i}"]) + p[f"b{i}"])
        s = anp.dot(h, p[f"W{L}"]) + p[f"b{L}"]
        return -anp.mean(s[np.arange(n), y] - logsumexp(s, axis=1))

    vg = autograd.value_and_grad(loss_fn)
    state = {"p": {k: v.copy() for k, v in params.items()}}

    def run():
        loss, g = vg(state["p"])
        state["p"] = {k: v - lr * g[k] for k, v in state["p"].items()}
        return loss
    return Runner(run, lambda: state["p"])


def _autograd_scalar(wl):
    import autograd
    import autograd.numpy as anp
    if wl.family == "add_mul":
        f = autograd.value_and_grad(lambda a: (a[0] + a[1]) * a[2])
    else:
        f = autograd.value_and_grad(
            lambda a: 1 / (1 + anp.exp(-(a[0][0] * a[1][0] + a[0][1] * a[1][1] + a[0][2]))))
    return lambda **kw: f(tuple(kw.values())), lambda r: (r[0], tuple(r[1]))


def _version(mod):
    def probe():
        from importlib.metadata import version
        __import__(mod)
        return f"{mod} {version(mod)}"
    return probe


IMPLS = {
    "hand": Impl("hand", lambda: "numpy " + np.__version__, _hand_train,
                 lambda wl: (hand_scalar(wl), lambda r: (r[0], r[1])), group="hand"),
    "gradc-numpy": Impl("gradc-numpy", _gradc_probe("numpy"), _gradc_train("numpy"),
                        _gradc_scalar("numpy"), group="gradc"),
    "gradc-llvm": Impl("gradc-llvm", _gradc_probe("llvm"), _gradc_train("llvm"),
                       _gradc_scalar("llvm"), group="gradc"),
    "jax": Impl("jax", lambda: f"jax {_jax().__version__}", _jax_train, _jax_scalar),
    "torch": Impl("torch", lambda: f"torch {_torch().__version__} "
                  f"({_torch().get_num_threads()} threads)", _torch_train, _torch_scalar),
    "pytensor-numba": Impl("pytensor-numba", _pytensor_probe("numba"),
                           _pytensor_train("numba"), _pytensor_scalar("numba")),
    "pytensor-c": Impl("pytensor-c", _pytensor_probe("c"), _pytensor_train("c"),
                       _pytensor_scalar("c")),
    "autograd": Impl("autograd", _version("autograd"), _autograd_train, _autograd_scalar),
}


def gemm_peak(name, sizes=(1024, 2048)) -> dict:
    """GFLOP/s of the peer's own matrix product (its BLAS: MKL for torch, XLA's for JAX),
    best of 3, per dtype and n; {} for a peer that calls NumPy's."""
    import time
    rng = np.random.default_rng(1)
    out = {}
    for dt in ("f64", "f32"):
        npdt = np.float64 if dt == "f64" else np.float32
        for n in sizes:
            a, b = (rng.standard_normal((n, n)).astype(npdt) for _ in range(2))
            if name == "torch":
                torch = _torch()
                ta, tb = torch.from_numpy(a), torch.from_numpy(b)
                tc = torch.empty((n, n), dtype=ta.dtype)
                run = lambda: torch.mm(ta, tb, out=tc)  # noqa: E731
            elif name == "jax":
                jax = _jax()
                ja, jb = jax.device_put(a), jax.device_put(b)
                mm = jax.jit(lambda x, y: x @ y)
                run = lambda: mm(ja, jb).block_until_ready()  # noqa: E731
            else:
                return {}
            run()
            best = float("inf")
            for _ in range(3):
                t0 = time.perf_counter()
                run()
                best = min(best, time.perf_counter() - t0)
            out[f"{dt}/{n}"] = 2 * n ** 3 / best / 1e9
        out[dt] = max(out[f"{dt}/{n}"] for n in sizes)
    return out
