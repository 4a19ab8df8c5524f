"""compile(graph, backend=...): the one way from a graph to something that runs it.  The graph
is verified and optimized, the compiler builds the backend's artifact (compiler/artifact.py:
emitted source or object code, argument specs, buffer plan, label checks) and the runtime's
kernel loads and runs it (runtime/numpy_kernel.py, runtime/llvm_kernel.py)."""
from __future__ import annotations

import keyword
from collections.abc import Iterable

from .artifact import llvm_artifact, llvm_sized_artifact, numpy_artifact
from .custom import inline_custom
from .ir import GradcError, Graph, UnsupportedError, verify
from .passes import optimize
from .passes.memory import plan_memory
from .shapes import is_symbolic_graph
from .sized_kernel import SizedKernel
from .specialize import specialize
from .trees import wrap

BACKENDS = ("numpy", "llvm")


def compile(graph: Graph, backend: str = "numpy", name: str | None = None,  # noqa: A001
            passes=None, check_finite: bool = False):
    """Compile a graph into a callable: `fn(**inputs) -> dict of outputs`, with `.source`
    (the generated code) and `.ir` (the graph's text form).  `passes`: None runs the default
    pipeline (compiler.passes.DEFAULT_PIPELINE), [] none, or a list of pass names.  The NumPy
    backend also plans memory (compiler/passes/memory.py) unless passes=[]: large intermediates
    live in buffers reused across calls; results are still fresh arrays unless the call
    passes copy=False.  `check_finite=True`: a NaN or inf in a float argument is a ValueError
    naming it, raised before the compiled code runs (docs/errors.md).  A graph with parameter
    trees gives a compiled function that takes and returns them (compiler/trees.py)."""
    if not isinstance(graph, Graph):
        raise UnsupportedError(f"compile: expected a Graph (from dsl.trace or compiler.grad), "
                               f"got {type(graph).__name__} {graph!r:.80}")
    if name is not None and not (isinstance(name, str) and name.isidentifier()
                                 and not keyword.iskeyword(name)):
        raise GradcError(f"compile: name={name!r} must be a Python identifier (it names the "
                         "generated function)")
    if passes is not None:
        if isinstance(passes, str) or not isinstance(passes, Iterable):
            raise GradcError(f"compile: passes={passes!r} must be a list of pass names "
                             "(e.g. ['cse', 'dce']), [] for none, or None for the default")
        passes = list(passes)
    verify(graph)
    given = graph     # its trees (compiler/trees.py): the call takes and gives them
    graph = inline_custom(graph)    # custom gates' forwards, from primitives (custom.py)
    if passes is None or list(passes):
        graph = optimize(graph, passes)
    if backend == "numpy":       # the compiler builds the artifact, the runtime runs it
        # runtime/ imports compiler.ir, whose package __init__ (run by any import of compiler)
        # imports this module: the kernels load at the first compile
        from runtime.numpy_kernel import NumpyKernel
        plan = plan_memory(graph) if passes is None or list(passes) else None
        if plan is not None and not plan.buffers:   # nothing large: the plain code
            plan = None
        return wrap(_finite(NumpyKernel(numpy_artifact(graph, name or graph.name, plan)),
                            check_finite), given)
    if backend == "llvm":
        from runtime.llvm_kernel import LLVMKernel, check_arguments   # as NumpyKernel above
        if is_symbolic_graph(graph):     # one native function taking the sizes at run time
            fname = name or graph.name   # (else, or at a size of 0, native code per size)
            at = llvm_sized_artifact(graph, fname)

            def build(dims):
                if at is not None and all(n > 0 for n in dims.values()):
                    return LLVMKernel(at(dims))
                return LLVMKernel(llvm_artifact(specialize(graph, dims), fname))
            return wrap(_finite(SizedKernel(graph, build, "llvm", check_arguments),
                                check_finite), given)
        return wrap(_finite(LLVMKernel(llvm_artifact(graph, name or graph.name)), check_finite),
                    given)
    raise UnsupportedError(f"unknown backend {backend!r}; available: {', '.join(BACKENDS)}")


def _finite(kernel, check_finite: bool):
    kernel.check_finite = bool(check_finite)   # read by runtime/checks.py on every call
    return kernel
