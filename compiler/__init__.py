"""gradc: trace a Python model into an IR graph, differentiate it as a graph transformation,
and emit readable NumPy code (LLVM native code follows).

    g = dsl.trace(fn, x=f64[3])      # frontends.dsl
    dg = compiler.grad(g)            # reverse mode as a pass: Graph -> Graph
    fn = compiler.compile(dg)        # backend="numpy"
"""
from .autodiff import grad, unbroadcast
from .interpret import interpret
from .ir import GradcError, Graph, ShapeError, TensorType, UnsupportedError, Value, verify
from .text import ParseError, parse_graph, print_graph
from .passes import optimize
from .check import check_against_sympy, check_finite_differences
from .symbolic import to_sympy
from . import optim
from .train import TrainStep, train_step

BACKENDS = ("numpy", "llvm")


def compile(graph: Graph, backend: str = "numpy", name: str | None = None,  # noqa: A001
            passes=None):
    """Compile a graph into a callable: `fn(**inputs) -> dict of outputs`, with `.source`
    (the generated code) and `.ir` (the graph's text form).  `passes`: None runs the default
    pipeline (compiler.passes.DEFAULT_PIPELINE), [] none, or a list of pass names."""
    verify(graph)
    if passes is None or list(passes):
        graph = optimize(graph, passes)
    if backend == "numpy":
        from runtime.numpy_kernel import NumpyKernel
        from .codegen.numpy_emit import emit_numpy
        fname = name or graph.name
        return NumpyKernel(graph, emit_numpy(graph, fname), fname)
    if backend == "llvm":
        from runtime.llvm_kernel import LLVMKernel
        return LLVMKernel(graph, name or graph.name)
    raise UnsupportedError(f"unknown backend {backend!r}; available: {', '.join(BACKENDS)}")


__all__ = ["Graph", "Value", "TensorType", "GradcError", "ShapeError", "UnsupportedError",
           "ParseError", "grad", "compile", "interpret", "parse_graph", "print_graph", "verify",
           "unbroadcast", "check_against_sympy", "check_finite_differences", "to_sympy",
           "optim", "train_step", "TrainStep", "optimize"]
