"""Ops that shape what autodiff sees rather than what is computed: `stop_gradient` (the
identity, through which no gradient flows) and `const_array` (an array captured from the
model's scope, stored once in the graph: compiler/constants.py)."""
from __future__ import annotations

import functools

import numpy as np
from ..lazy import sympy as sp

from ..codegen import llvm_shape as LS
from ..codegen.forms import ATOM, Expr, wrap
from ..codegen.llvm_const import ConstArray
from ..constants import ConstData, numpy_text
from ..ir import TensorType
from .record import gate
from .attrs import DTYPE, Kind
from .elementwise import _sym_const
from .record import declare


@functools.cache
def stop_gradient_function():
    """The SymPy function StopGradient, made at the first SymPy rendering (SymPy loads on first
    use, compiler/lazy.py; a subclass needs the real sp.Function)."""

    class StopGradient(sp.Function):
        """stop_gradient(x) in SymPy: x in value (on a number it is the number), derivative 0,
        so that SymPy's derivative of a model holds the stopped value constant."""

        @classmethod
        def eval(cls, x):
            if x.is_Number or x in (sp.true, sp.false):
                return x
            return None

        def fdiff(self, argindex=1):
            return sp.Integer(0)

        @staticmethod
        def mpmath(x):          # compiler/mpeval.py: its value in numbers
            return x
    return StopGradient


class _Data(Kind):
    """A ConstData; in the text form the digest of an entry of the constants table."""
    reads_table = True


DATA = _Data("constant data (a digest of the graph's constants table)",
             lambda v: isinstance(v, ConstData))

# stop_gradient(x) = x, with no gate rule: ∂/∂x is 0 (the value is held constant).
declare("stop_gradient",
        shape=lambda ins: ins[0],
        eval=lambda x: x,
        gate=gate(None),
        sympy=lambda x: _sym_each(stop_gradient_function(), x),
        numpy=Expr(lambda args, attrs, node: wrap(args[0], ATOM, False)),
        llvm=LS.Lowering(LS.lower_reshape),
        view=True, through=True)

declare("const_array",
        shape=lambda ins, data, dtype: TensorType(dtype, data.shape),
        attrs={"data": DATA, "dtype": DTYPE},
        eval=lambda data, dtype: data.as_dtype(dtype),
        gate=gate(),
        sympy=lambda data, dtype: _sym_array(data.as_dtype(dtype)),
        numpy=Expr(numpy_text),
        llvm=ConstArray())


def _sym_each(fn, x):
    x = np.asarray(x, dtype=object)
    out = np.empty(x.shape, dtype=object)
    for idx in np.ndindex(*x.shape):
        out[idx] = fn(x[idx])
    return out


def _sym_array(arr):
    out = np.empty(arr.shape, dtype=object)
    for idx in np.ndindex(*arr.shape):
        out[idx] = _sym_const(arr[idx].item(), ())[()]
    return out
