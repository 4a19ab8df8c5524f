"""The lecture's two worked examples, end to end: the IR, the gradient IR, the generated NumPy
code and the numbers.

1. f(x, y, z) = (x + y)·z at x = -2, y = 5, z = -4:
   q = x + y = 3, f = q·z = -12;  ∂f/∂z = q = 3,  ∂f/∂q = z = -4,  ∂f/∂x = ∂f/∂y = ∂f/∂q·1 = -4.
2. The sigmoid neuron f(w, x) = σ(w0·x0 + w1·x1 + w2) at w = (2, -3, -3), x = (-1, -2):
   the dot product is 1, f = σ(1) ≈ 0.7311, the sigmoid gate gives σ(1)(1 − σ(1)) ≈ 0.1966, so
   ∂f/∂w = 0.1966·(x0, x1, 1) ≈ (-0.1966, -0.3932, 0.1966), ∂f/∂x = 0.1966·(w0, w1) ≈ (0.3932, -0.5898).

Run it:  python examples/lecture.py
The model functions carry their input specs as annotations, so they can be traced without
extra arguments: `dsl.trace(neuron)`.
"""
from __future__ import annotations

import numpy as np

import compiler
from frontends import dsl
from frontends.dsl import f64


def add_mul(x: f64[()], y: f64[()], z: f64[()]):
    """f = (x + y)·z, the lecture's first circuit."""
    q = x + y
    f = q * z
    return f


def neuron(w: f64[3], x: f64[2]):
    """f = σ(w0·x0 + w1·x1 + w2), the lecture's sigmoid neuron."""
    dot = w[0] * x[0] + w[1] * x[1] + w[2]
    f = dsl.sigmoid(dot)
    return f


EXAMPLES = [
    ("f = (x + y)·z", add_mul, {"x": np.float64(-2.0), "y": np.float64(5.0),
                                "z": np.float64(-4.0)}),
    ("the sigmoid neuron f = σ(w0·x0 + w1·x1 + w2)", neuron,
     {"w": np.array([2.0, -3.0, -3.0]), "x": np.array([-1.0, -2.0])}),
]


def heading(text: str, char: str = "-") -> None:
    print(f"\n{text}\n{char * len(text)}")


def show(title: str, fn, inputs: dict) -> dict:
    """Trace `fn`, differentiate it, compile the gradient graph to NumPy and run it."""
    heading(title, "=")
    g = dsl.trace(fn)
    heading("IR")
    print(g)
    dg = compiler.grad(g)
    heading("gradient IR")
    print(dg)
    kernel = compiler.compile(dg, backend="numpy")
    heading("generated NumPy code (after the default pass pipeline)")
    print(kernel.source)
    heading("numbers")
    print("inputs:  " + ", ".join(f"{k} = {np.array2string(np.asarray(v))}"
                                  for k, v in inputs.items()))
    out = kernel(**inputs)
    for k, v in out.items():
        print(f"{k:>6} = {np.array2string(np.asarray(v), precision=4)}")
    return out


if __name__ == "__main__":
    np.set_printoptions(precision=4, suppress=True)
    for title, fn, inputs in EXAMPLES:
        show(title, fn, inputs)
