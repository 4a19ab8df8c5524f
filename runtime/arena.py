"""One thread's buffer set for a compiled function: every buffer a slice of one allocation.

Both backends keep a set of buffers per calling thread (runtime/numpy_kernel.py,
runtime/llvm_kernel.py: see "Thread safety" in the README).  Allocating a set as one arena
makes the check "does this argument overlap any of my buffers?" (a `copy=False` output fed back
as an argument) a single bounds comparison, `overlaps(a, arena)`, whatever the buffer count.
"""
from __future__ import annotations

import numpy as np

ALIGN = 64        # bytes: a cache line, and the widest vector the LLVM backend emits


def allocate(specs) -> tuple:
    """(arena, arrays) for `specs`, a list of (dtype, shape): each array a C-contiguous slice
    of the arena starting at a multiple of ALIGN bytes, disjoint from the others."""
    specs = [(np.dtype(d), tuple(s)) for d, s in specs]
    offsets, total = [], 0
    for dt, shape in specs:
        offsets.append(total)
        total += -(-int(np.prod(shape, dtype=np.int64)) * dt.itemsize // ALIGN) * ALIGN
    arena = np.empty(total + ALIGN, dtype=np.uint8)
    start = -arena.ctypes.data % ALIGN
    arrays = []
    for (dt, shape), off in zip(specs, offsets):
        size = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
        arrays.append(arena[start + off:start + off + size].view(dt).reshape(shape))
    return arena, arrays


def overlaps(a, arena) -> bool:
    """Whether array `a`'s memory may overlap the arena (a bounds check: constant time)."""
    return a.size != 0 and np.may_share_memory(a, arena)
