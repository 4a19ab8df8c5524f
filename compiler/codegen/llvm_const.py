"""The LLVM lowering of an array constant (`const_array`, compiler/constants.py): its data is a
private constant global of the module (the bytes, little-endian, as the node's dtype), copied
into the node's buffer in one loop (which the optimizer turns into a memcpy)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from llvmlite import ir

from ..ir import NUMPY_DTYPE
from .llvm_types import I8, const_i64


@dataclass(frozen=True)
class ConstArray:
    runtime_sizes = True     # its shape is its data's, always fixed (a graph with run-time
                             # sizes keeps one native function when it holds constants)

    def lower(self, em, node):
        data = node.attrs["data"]
        raw = data.as_dtype(node.out.dtype)
        raw = raw.astype(raw.dtype.newbyteorder("<"), copy=False).tobytes()
        name = f"const.{data.short}.{node.out.dtype}"
        gv = em.module.globals.get(name)
        if gv is None:
            ty = ir.ArrayType(I8, len(raw))
            gv = ir.GlobalVariable(em.module, ty, name=name)
            gv.linkage = "private"
            gv.global_constant = True
            gv.align = 64
            gv.initializer = ir.Constant(ty, bytearray(raw))
        size = np.dtype(NUMPY_DTYPE[node.out.dtype]).itemsize
        elem = em.ll(node.out.dtype)

        def body(idx):
            at = em.b.gep(gv, [em.b.mul(idx[0], const_i64(size))], inbounds=True,
                          source_etype=I8)
            em.store(em.b.load(at, typ=elem), node.out, idx[0])
        em.nest(node.out.shape, [em.view(node.out)], body)
