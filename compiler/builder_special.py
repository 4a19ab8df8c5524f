"""DSL functions that shape what autodiff sees: `stop_gradient` (ops/special.py)."""
from __future__ import annotations

from .builder import Var, unary


def stop_gradient(x: Var) -> Var:
    """x itself, with no gradient flowing through it: ∂/∂x of anything computed from
    stop_gradient(x) treats its value as a constant (as jax.lax.stop_gradient)."""
    return unary("stop_gradient", x)
