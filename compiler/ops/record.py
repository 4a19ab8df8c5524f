"""One record per primitive: `OPS[name]`, declared once in its family module with `declare`.

    declare("exp",
            shape=float_unary("exp"),
            eval=np.exp,
            gate=gate("dx = G·exp(x)", lambda g, out, x: g * out),
            sympy=elementwise(lambda x: sp.exp(x)),
            numpy=call("np.exp"),
            llvm=LL.via_math(M.exp),
            zero_safe=True,
            elementwise=True,
            ufunc="np.exp",
            plannable=True,
            nonneg=True)

The rules (what an op means and how each part of the compiler handles it):

    shape    (input types, **attrs) -> output TensorType; raises ShapeError
    eval     (*numpy arrays, **attrs) -> numpy array: the reference meaning
    gate     one (rule text, fn) per input, or None for an input with no gradient;
             fn(g, out, *inputs, **attrs) builds the downstream gradient as IR; a variadic
             op (concatenate) has `Each(((text, fn),))`, fn(k, g, out, *inputs, **attrs) for
             input k; `record.gate_rules(n)` gives the n rules of an n-input node
    sympy    (*object arrays of SymPy expressions, **attrs) -> object array
    numpy    how the NumPy source emitter writes the op (codegen/forms.py)
    llvm     how the LLVM emitter lowers the op (an object with `lower(emitter, node)`)
    attrs    attribute name -> Kind (ops/attrs.py); `ir.verify` refuses unknown, missing and
             ill-typed attributes
    label    label ops only: node -> (operand position, classes): that operand holds class
             indices, each checked to lie in [0, classes) (ops/labels.py); an index op
             (gather) answers (position, axis size, "index") and its errors say "index"

The traits (what the passes, backends, runtime and checks ask; never a set of op names there):

    elementwise   out[i] = f(in₀[i], in₁[i], …) after broadcasting: constant folding, fusion
                  and the multiprecision check evaluate it element by element
    view          the result may be a view of operand 0's memory (eval shares it wherever NumPy
                  can; memory planning extends the operand's buffer's life instead of giving the
                  result one; an output that is a view is copied before it is returned)
    reduction     sums/means/maxima over axes: a fusion group ends at one
    selects       the gate routes the upstream gradient to some elements and zeros the rest
                  (or builds conditions that do): the zero-safe gates below it are guarded
    zero_safe     every gate rule is G·f'(x), linear in G: where G may be a selected zero the
                  pass compiler/passes/selected_zeros.py answers where(G == 0, 0, G·f'(x))
    ufunc         the NumPy ufunc with an `out=` form (`"np.add"`), or None
    into          the NumPy `out=` form (codegen/forms.py `Into`): how the emitter writes the
                  op into a buffer of the memory plan, and which operands the result may be
                  written over; an op with a `ufunc` gets `into_call(ufunc)`
    plannable     the planned NumPy emitter can write the op into a preallocated buffer (it
                  has an `into` form)
    bounded       every element lies in [−1, 1] whatever the input (simplify's finiteness test)
    through       moves its operand's elements without making them larger in magnitude (neg,
                  abs, relu, views): a bounded operand gives a bounded result
    nonneg        every element is ≥ 0 (or nan) whatever the input
    multilinear   linear in each operand, a sum of products of one element of each (matmul,
                  sum): op(2ᵃ·A, 2ᵇ·B) = 2ᵃ⁺ᵇ·op(A, B), so the multiprecision check computes it
                  in exact integers
    ordered       the operands' order matters enough to label the edges in drawings (dot.py)
    literal       the value is the node's attributes `value`, `dtype`, `shape` (np.full; no
                  inputs): constant folding and the rewriter read it, memory planning gives it
                  no per-call buffer, drawings show the value
    epilogue      the LLVM lowering writes the result tile by tile and can apply the fusion
                  group that is the result's only reader to each tile while it is in cache
                  (`lower_with_epilogue`: bias and activation inside the convolution;
                  compiler/passes/fusion.py `epilogue_heads`), so the result is never stored
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from types import MappingProxyType
from typing import Any, Callable, Optional

from ..codegen.forms import into_call


@dataclass(frozen=True)
class OpRecord:
    name: str
    shape: Callable
    eval: Callable
    gate: tuple
    sympy: Callable
    numpy: Any
    llvm: Any = None
    attrs: Any = field(default_factory=dict)
    label: Optional[Callable] = None
    elementwise: bool = False
    view: bool = False
    reduction: bool = False
    selects: bool = False
    zero_safe: bool = False
    ufunc: Optional[str] = None
    into: Any = None
    plannable: bool = False
    bounded: bool = False
    through: bool = False
    nonneg: bool = False
    multilinear: bool = False
    ordered: bool = False
    literal: bool = False
    epilogue: bool = False

    def __post_init__(self):
        object.__setattr__(self, "attrs", MappingProxyType(dict(self.attrs)))
        if self.ufunc is not None and self.into is None:
            object.__setattr__(self, "into", into_call(self.ufunc))
        if self.plannable != (self.into is not None):
            raise ValueError(f"op {self.name}: plannable exactly when it has a NumPy out= form "
                             "(into, or a ufunc)")


    def gate_rules(self, n_inputs: int) -> tuple:
        """The (text, fn) or None of each input of a node with `n_inputs` inputs."""
        return self.gate.expand(n_inputs) if isinstance(self.gate, Each) else self.gate


class Each(tuple):
    """The gate rule of a variadic op: `Each([(text, fn)])`, fn(k, g, out, *inputs, **attrs)
    building the downstream gradient of input k (one rule for every position)."""

    def expand(self, n: int) -> tuple:
        cache = self.__dict__.setdefault("_rules", {})
        if n not in cache:
            (text, fn), = self
            cache[n] = tuple((text, partial(fn, k)) for k in range(n))
        return cache[n]


class OpTable(dict):
    """name -> OpRecord: the primitives, filled by the family modules through `declare`.  A
    user's custom gate (compiler/custom.py) is in `custom` and found by name like a primitive
    (`OPS[name]`, `name in OPS`, `OPS.get(name)`), but it is not one of the table's items, so
    walking the table (the op-table tests, `known_ops`) walks the primitives only."""

    def __init__(self):
        super().__init__()
        self.custom: dict = {}

    def __missing__(self, name):
        try:
            return self.custom[name]
        except (KeyError, TypeError):
            raise KeyError(name) from None

    def __contains__(self, name) -> bool:
        return dict.__contains__(self, name) or name in self.custom

    def get(self, name, default=None):
        return self[name] if name in self else default


OPS = OpTable()

RULES = ("shape", "eval", "gate", "sympy", "numpy", "llvm")
TRAITS = ("elementwise", "view", "reduction", "selects", "zero_safe", "ufunc", "into", "plannable",
          "bounded", "through", "nonneg", "multilinear", "ordered", "literal", "epilogue")


def declare(name: str, **fields) -> OpRecord:
    """Declare primitive `name` (once)."""
    if name in OPS:
        raise ValueError(f"op {name!r} is declared twice")
    record = OpRecord(name=name, **fields)
    OPS[name] = record
    return record


def known_ops() -> str:
    return ", ".join(sorted(OPS))


def gate(*pairs):
    """`gate("dA = G·B", fa, "dB = G·A", fb)` -> ((text, fa), (text, fb)).  Pass `None` in place
    of a (text, fn) pair for an input that gets no gradient (integer labels, conditions)."""
    out, items = [], list(pairs)
    while items:
        head = items.pop(0)
        if head is None:
            out.append(None)
        else:
            out.append((head, items.pop(0)))
    return tuple(out)

