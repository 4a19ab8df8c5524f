"""The benchmark workloads: shapes, deterministic data, the gradc models, the hand-written NumPy
oracle and the GEMM flop count of each (for the floor).

Two kinds of workload:

  scalar   the lecture's scalar graphs, value and gradient of every input per call:
             add_mul  f = (x + y)·z                    at x = -2, y = 5, z = -4
             neuron   f = σ(w0·x0 + w1·x1 + w2)         at w = (2, -3, -3), x = (-1, -2)
  train    one SGD train step of a multilayer perceptron with a softmax cross-entropy loss
           (mean over the batch): forward, gradient of every parameter, p ← p − lr·dp.
             two_layer  relu hidden layer: tiny (N=64, D=2, H=100, C=3),
                        cifar (N=200, D=3072, H=100, C=10), big (N=1024, D=1024, H=1024, C=10)
             deep_mlp   6 relu hidden layers of 512, batch 128, D=512, C=10
             swish_mlp  elementwise-heavy: swish, tanh, swish hidden layers of 64, D=32, C=10,
                        batch 256 (small matrices: the time is in the elementwise ops)

Layer i (1-based) has weights Wi: [in, out] and bias bi: [out]; h_i = act_i(h_{i-1}·Wi + bi),
scores = h_{L-1}·WL + bL, loss = −mean_n log softmax(scores)[n, y_n].

Floor: the GEMM flops of a step, 2·N·in·out per product, three products per layer (forward,
dW = hᵀ·G, dh = G·Wᵀ) except the first layer's dh (no gradient of the data), divided by the
GEMM peak measured in the same run.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

LR = 0.05                  # the SGD step of every train workload
ACTS = ("relu", "tanh", "swish")


@dataclass(frozen=True)
class Workload:
    """One row group of the tables: `family` (two_layer, deep_mlp, swish_mlp, add_mul, neuron),
    `config` (tiny, cifar, big, b128, ... or "-"), `dtype` (f64 or f32)."""
    family: str
    config: str
    dtype: str
    kind: str                          # "train" or "scalar"
    n: int = 0                         # batch
    dims: tuple = ()                   # (D, H1, ..., C)
    acts: tuple = ()                   # one per hidden layer

    @property
    def key(self) -> str:
        return f"{self.family}/{self.config}/{self.dtype}"

    @property
    def np_dtype(self):
        return np.float64 if self.dtype == "f64" else np.float32

    @property
    def layers(self) -> list:
        """[(in, out)] per layer."""
        return list(zip(self.dims[:-1], self.dims[1:]))

    @property
    def param_names(self) -> list:
        return [f"{p}{i}" for i in range(1, len(self.dims)) for p in ("W", "b")]

    def flops(self) -> int:
        """GEMM flops of one train step (see the module docstring); 0 for scalar graphs."""
        total = 0
        for i, (a, b) in enumerate(self.layers):
            total += 2 * self.n * a * b * (2 if i == 0 else 3)
        return total

    def describe(self) -> str:
        if self.kind == "scalar":
            return SCALAR_TEXT[self.family]
        acts = ",".join(self.acts)
        return f"N={self.n} dims={'-'.join(map(str, self.dims))} ({acts})"


def _two_layer(config, n, d, h, c, dtype):
    return Workload("two_layer", config, dtype, "train", n, (d, h, c), ("relu",))


TWO_LAYER = {"tiny": (64, 2, 100, 3), "cifar": (200, 3072, 100, 10),
             "big": (1024, 1024, 1024, 10)}


def all_workloads() -> list:
    """Every workload of the full suite, in table order."""
    out = [Workload("add_mul", "-", "f64", "scalar"), Workload("neuron", "-", "f64", "scalar")]
    for dtype in ("f64", "f32"):
        for config, dims in TWO_LAYER.items():
            out.append(_two_layer(config, *dims, dtype))
    for dtype in ("f64", "f32"):
        out.append(Workload("deep_mlp", "b128", dtype, "train", 128, (512,) + (512,) * 6 + (10,),
                            ("relu",) * 6))
        out.append(Workload("swish_mlp", "b256", dtype, "train", 256, (32, 64, 64, 64, 10),
                            ("swish", "tanh", "swish")))
    return out


def quick_workloads() -> list:
    """The --quick subset (about a minute with every peer)."""
    keep = {"add_mul/-/f64", "neuron/-/f64", "two_layer/tiny/f64", "two_layer/cifar/f64",
            "two_layer/tiny/f32", "deep_mlp/b128/f64", "swish_mlp/b256/f64"}
    return [w for w in all_workloads() if w.key in keep]


def tiny_workloads() -> list:
    """The smallest configuration of each kind (the test suite's smoke run)."""
    return [Workload("add_mul", "-", "f64", "scalar"), Workload("neuron", "-", "f64", "scalar"),
            _two_layer("tiny", *TWO_LAYER["tiny"], "f64"),
            _two_layer("tiny", *TWO_LAYER["tiny"], "f32"),
            Workload("swish_mlp", "mini", "f64", "train", 16, (4, 8, 8, 8, 3),
                     ("swish", "tanh", "swish"))]


# ---- data --------------------------------------------------------------------------------------
SCALAR_TEXT = {"add_mul": "f = (x+y)·z, value + 3 gradients",
               "neuron": "f = σ(w0·x0 + w1·x1 + w2), value + 5 gradients"}


def scalar_inputs(wl: Workload) -> dict:
    if wl.family == "add_mul":
        return {"x": np.float64(-2.0), "y": np.float64(5.0), "z": np.float64(-4.0)}
    return {"w": np.array([2.0, -3.0, -3.0]), "x": np.array([-1.0, -2.0])}


def train_data(wl: Workload, seed: int = 0):
    """(params, X, y): He-initialised weights, small random biases, standard normal data,
    uniform labels; identical for every implementation (a fixed seed)."""
    rng = np.random.default_rng(seed)
    dt = wl.np_dtype
    params = {}
    for i, (a, b) in enumerate(wl.layers, 1):
        params[f"W{i}"] = (rng.standard_normal((a, b)) * math.sqrt(2.0 / a)).astype(dt)
        params[f"b{i}"] = (0.01 * rng.standard_normal(b)).astype(dt)
    X = rng.standard_normal((wl.n, wl.dims[0])).astype(dt)
    y = rng.integers(0, wl.dims[-1], wl.n).astype(np.int64)
    return params, X, y


# ---- the hand-written NumPy oracle (CS231n style) -------------------------------------------
def hand_scalar(wl: Workload):
    """The hand-derived value and gradients, in NumPy: returns fn(**inputs) -> (value, grads)."""
    if wl.family == "add_mul":
        def add_mul(x, y, z):
            q = x + y
            return q * z, (z, z, q)
        return add_mul

    def neuron(w, x):
        f = 1.0 / (1.0 + np.exp(-(w[0] * x[0] + w[1] * x[1] + w[2])))
        ddot = (1.0 - f) * f
        return f, (np.array([x[0] * ddot, x[1] * ddot, ddot]),
                   np.array([w[0] * ddot, w[1] * ddot]))
    return neuron


def hand_step(p: dict, X, y, acts, lr=LR):
    """One SGD step in place on `p`, CS231n style; returns (loss, grads)."""
    L = len(acts) + 1
    n = X.shape[0]
    hs, pres, sigs = [X], [], {}
    h = X
    for i, act in enumerate(acts, 1):
        z = h.dot(p[f"W{i}"]) + p[f"b{i}"]
        pres.append(z)
        if act == "relu":
            h = np.maximum(z, 0)
        elif act == "tanh":
            h = np.tanh(z)
        else:
            s = 1.0 / (1.0 + np.exp(-z))
            sigs[i] = s
            h = z * s
        hs.append(h)
    scores = h.dot(p[f"W{L}"]) + p[f"b{L}"]
    shifted = scores - scores.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    probs = e / e.sum(axis=1, keepdims=True)
    loss = -np.log(probs[np.arange(n), y]).mean()
    g = probs
    g[np.arange(n), y] -= 1
    g /= n
    grads = {}
    for i in range(L, 0, -1):
        grads[f"W{i}"] = hs[i - 1].T.dot(g)
        grads[f"b{i}"] = g.sum(axis=0)
        if i == 1:
            break
        dh = g.dot(p[f"W{i}"].T)
        act, z = acts[i - 2], pres[i - 2]
        if act == "relu":
            dh[z <= 0] = 0
        elif act == "tanh":
            dh *= 1 - hs[i - 1] ** 2
        else:
            s = sigs[i - 1]
            dh *= s + z * s * (1 - s)
        g = dh
    for k, dk in grads.items():
        p[k] -= lr * dk
    return loss, grads


# ---- the gradc models (traced with frontends.dsl) ---------------------------------------------
def _dsl():
    from frontends import dsl
    return dsl


def two_layer(W1, b1, W2, b2, X, y):
    """The CS231n two-layer net: relu hidden layer, softmax cross-entropy."""
    dsl = _dsl()
    h = dsl.relu(X @ W1 + b1)
    scores = h @ W2 + b2
    return dsl.softmax_cross_entropy(scores, y)


def deep_mlp(W1, b1, W2, b2, W3, b3, W4, b4, W5, b5, W6, b6, W7, b7, X, y):
    """Six relu hidden layers, softmax cross-entropy."""
    dsl = _dsl()
    h = X
    for W, b in ((W1, b1), (W2, b2), (W3, b3), (W4, b4), (W5, b5), (W6, b6)):
        h = dsl.relu(h @ W + b)
    scores = h @ W7 + b7
    return dsl.softmax_cross_entropy(scores, y)


def swish_mlp(W1, b1, W2, b2, W3, b3, W4, b4, X, y):
    """Swish, tanh, swish hidden layers, softmax cross-entropy."""
    dsl = _dsl()
    h1 = dsl.swish(X @ W1 + b1)
    h2 = dsl.tanh(h1 @ W2 + b2)
    h3 = dsl.swish(h2 @ W3 + b3)
    scores = h3 @ W4 + b4
    return dsl.softmax_cross_entropy(scores, y)


def add_mul(x, y, z):
    """f = (x + y)·z."""
    q = x + y
    f = q * z
    return f


def neuron(w, x):
    """f = σ(w0·x0 + w1·x1 + w2)."""
    dot = w[0] * x[0] + w[1] * x[1] + w[2]
    f = _dsl().sigmoid(dot)
    return f


GRADC_MODELS = {"two_layer": two_layer, "deep_mlp": deep_mlp, "swish_mlp": swish_mlp,
                "add_mul": add_mul, "neuron": neuron}
