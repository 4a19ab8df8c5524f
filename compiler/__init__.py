"""gradc: trace a Python model into an IR graph, differentiate it as a graph transformation,
and emit readable NumPy code (LLVM native code follows).

    g = dsl.trace(fn, x=f64[3])      # frontends.dsl
    dg = compiler.grad(g)            # reverse mode as a pass: Graph -> Graph
    fn = compiler.compile(dg)        # backend="numpy"
"""
from .autodiff import grad, unbroadcast
from .interpret import interpret
from .ir import (GradcError, Graph, ShapeError, TensorType, UnknownNameError, UnsupportedError,
                 Value, verify)
from .ops.labels import LabelError
from .text import ParseError, parse_graph, print_graph
from .passes import optimize
from .passes.memory import plan_memory
from .artifact import llvm_artifact, numpy_artifact
from .backends import BACKENDS, compile  # noqa: A004
from .check import check_against_sympy, check_finite_differences
from .higher import hessian, hvp
from .check_hessian import check_hessian_against_sympy, check_hessian_finite_differences
from .symbolic import to_sympy
from . import optim
from .train import TrainStep
from .distributed import train_step
from .debug import BroadcastWarning, debug_nans

__all__ = ["Graph", "Value", "TensorType", "GradcError", "ShapeError", "UnsupportedError",
           "UnknownNameError",
           "ParseError", "grad", "compile", "interpret", "parse_graph", "print_graph", "verify",
           "unbroadcast", "check_against_sympy", "check_finite_differences", "to_sympy",
           "hvp", "hessian", "check_hessian_against_sympy", "check_hessian_finite_differences",
           "optim", "train_step", "TrainStep", "optimize", "debug_nans", "BroadcastWarning",
           "LabelError"]
