"""What the compiler hands the runtime: an artifact per backend, everything a kernel needs to
load and run a graph (DESIGN.md principle 10).  The compiler builds it (emits the code, plans
the buffers, computes the label checks); `runtime/` only loads and runs it and imports nothing
from compiler.passes, compiler.codegen or compiler.autodiff.  Work a kernel may need later (the
NumPy source emitted again with donated outputs, the LLVM IR of an object that came from the
cache) is a callable of the artifact, made here, so the runtime never reaches for an emitter.

    NumpyArtifact   emitted Python source, its function's name, the memory plan (or None)
    LLVMArtifact    the cache key and symbol, buffer layout, label checks; IR emitted on demand
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from runtime import cache, jit

from .codegen import llvm_dims, llvm_emit, llvm_shape
from .codegen.llvm_labels import computed_checks, label_checks
from .codegen.numpy_emit import emit_numpy
from .ir import Graph, TensorType
from .passes.memory import MIN_ELEMENTS, plan_memory
from .shapes import is_symbolic_graph, resolve
from .specialize import specialize


@dataclass(frozen=True)
class NumpyArtifact:
    """Emitted NumPy source for `graph` defining function `fname`.  `plan`: the memory plan
    the source was emitted with (compiler/passes/memory.py), None for unplanned code.
    `emit_bound(donate)`: the source emitted again with outputs computed into donated inputs
    (runtime NumpyKernel.bind; `planned=False`: the plain code).  `memory_plan()`: the plan
    memory_report reads (`plan`, or one made for the report).  A planned symbolic graph
    (f64[N, 10]) also has `plain`, the unplanned source, and `planned_at(sizes)`, whether the
    plan's buffers at the call's sizes are large enough to be worth it (else `plain` runs, as
    a concrete graph of those sizes would be compiled)."""
    graph: Graph
    source: str
    fname: str
    plan: object | None
    emit_bound: Callable[..., str]
    memory_plan: Callable[[], object]
    plain: str | None = None
    planned_at: Callable[[dict], bool] | None = None


@dataclass(frozen=True)
class LLVMArtifact:
    """A graph lowered to one native function `symbol` (`symbol + "_labels"` checks the input
    labels).  `key`: the object cache's key (the graph's text, the code generator's tunables
    and sources, the target), so a warm hit loads the object without emitting any IR.
    `values`: the buffers in pointer-array order (inputs first); `labels`: [(input slot,
    LabelCheck)]; `computed`: [LabelCheck] of labels the graph computes.  `emit()`: (LLVM IR
    naming `symbol`, the buffers it leaves untouched); `untouched()`: those buffers without
    emitting (what a cache hit allocates).  `dims`: for a kernel taking run-time sizes
    (`llvm_sized_artifact`), the sizes of this call's dimension names, which the runtime
    writes into the pointer array's slots after the buffers; `graph` is then the graph at
    those sizes (the buffers' shapes), the code that of the symbolic graph."""
    graph: Graph
    ir: str
    key: str
    symbol: str
    values: tuple
    labels: tuple
    computed: tuple
    emit: Callable[[], tuple]
    untouched: Callable[[], frozenset]
    dims: tuple = ()


def numpy_artifact(graph: Graph, fname: str, plan=None) -> NumpyArtifact:
    """The NumPy source of `graph` (planned code when a memory plan is given), ready to load."""
    def emit_bound(donate: dict, planned: bool = True) -> str:
        return emit_numpy(graph, fname, donate, plan=plan if planned else None)

    def planned_at(sizes: dict) -> bool:
        return any(TensorType(d, resolve(s, sizes)).size >= MIN_ELEMENTS for d, s in plan.buffers)

    source = emit_numpy(graph, fname, plan=plan)
    sized = plan is not None and is_symbolic_graph(graph)
    return NumpyArtifact(graph, source, fname, plan, emit_bound,
                         lambda: plan if plan is not None else plan_memory(graph),
                         emit_numpy(graph, fname) if sized else None,
                         planned_at if sized else None)


PLACEHOLDER = "gradc_entry"


def llvm_artifact(graph: Graph, fname: str | None = None, fuse: bool = True,
                  runtime_sizes: bool = False) -> LLVMArtifact:
    """The native kernel of `graph`, keyed for the object cache; its IR is emitted only when
    the object is not cached (or `.source` is asked for).  (`runtime_sizes`: the key of
    `llvm_sized_artifact`'s code.)"""
    ir_text = str(graph)
    tunables = (f"fuse={bool(fuse)}; small gemm {llvm_shape.SMALL_GEMM}, unroll "
                f"{llvm_shape.UNROLL_K}" + ("; run-time sizes" if runtime_sizes else ""))
    key = cache.key(f"{ir_text}\n; {tunables}\n",
                    f"{jit.target_key()}; codegen {cache.codegen_version()}")
    safe = "".join(ch if ch.isascii() and (ch.isalnum() or ch == "_") else "_"
                   for ch in (fname or graph.name))        # an ASCII symbol name
    symbol = f"gradc_{safe}_{key[:16]}"

    def emit() -> tuple:
        text, untouched = llvm_emit.emit_llvm_plan(graph, PLACEHOLDER, fuse)
        # the entry and its label check (PLACEHOLDER + "_labels") take the kernel's symbol
        return text.replace(f'@"{PLACEHOLDER}', f'@"{symbol}'), untouched

    return LLVMArtifact(graph, ir_text, key, symbol, tuple(llvm_emit.buffer_values(graph)),
                        tuple(label_checks(graph)), tuple(computed_checks(graph)), emit,
                        lambda: llvm_emit.plan_untouched(graph, fuse))


def llvm_sized_artifact(graph: Graph, fname: str | None = None, fuse: bool = True):
    """For a graph with dimension names whose every lowering takes run-time sizes
    (codegen/llvm_dims.py): `at(dims) -> LLVMArtifact` of the call's sizes, all sharing ONE
    native function (one key and symbol, the code emitted once, from the symbolic graph);
    else None (the caller specializes per size)."""
    lows = llvm_emit.lowerings()
    if not llvm_dims.runtime_capable(graph, lows):
        return None
    names = llvm_dims.dim_names(graph)
    sized = llvm_dims.sized_graph(graph)
    base = llvm_artifact(graph, fname, fuse, runtime_sizes=True)
    done: dict = {}

    def emit() -> tuple:
        if "emit" not in done:
            text, untouched = llvm_emit.emit_llvm_plan(sized, PLACEHOLDER, fuse, names)
            done["emit"] = (text.replace(f'@"{PLACEHOLDER}', f'@"{base.symbol}'), untouched)
        return done["emit"]

    def untouched() -> frozenset:
        if "untouched" not in done:
            done["untouched"] = (done["emit"][1] if "emit" in done
                                 else llvm_emit.plan_untouched(sized, fuse, names))
        return done["untouched"]

    def at(dims: dict) -> LLVMArtifact:
        conc = specialize(graph, dims)
        return LLVMArtifact(conc, base.ir, base.key, base.symbol,
                            tuple(llvm_emit.buffer_values(conc)), tuple(label_checks(conc)),
                            tuple(computed_checks(conc)), emit, untouched,
                            tuple(dims[d] for d in names))
    return at
