"""`paused()`: the cyclic garbage collector held off while the compiler builds graphs.

grad and the passes allocate tens of thousands of Nodes, Values and tuples for a deep model
and free them by reference counting (graphs hold no reference cycles); the collector is
nevertheless triggered by the allocation count, and each of its full collections walks the
whole heap (NumPy's, llvmlite's and the program's objects too): at 256 layers that was an
eighth of the front end's time, for nothing to collect.  Inside `paused()` the collector
does not run; when the last thread leaves it, it runs again as before (it is not touched when
the program had turned it off).  Nothing about the results changes: only when cyclic garbage
made meanwhile (by any thread) is reclaimed.  Used around `grad` and `optimize` only, which
run gradc's own code on graphs; never around user code (tracing) or code generation
(llvmlite's IR objects are cyclic garbage once emitted).
"""
from __future__ import annotations

import gc
import threading
from contextlib import contextmanager

_lock = threading.Lock()
_depth = 0             # threads (and nested calls) inside paused()
_resume = False        # whether the collector was on when the first of them came in


@contextmanager
def paused():
    global _depth, _resume
    with _lock:
        if _depth == 0:
            _resume = gc.isenabled()
            if _resume:
                gc.disable()
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _resume:
                gc.enable()
