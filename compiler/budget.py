"""A time limit that holds in any thread: the budget of the SymPy checks (compiler/check.py).

SymPy cannot be told to stop, so the limit interrupts it: `_Budget` is raised inside the
block once the time has passed, by a SIGALRM timer in the main thread, elsewhere by a trace
function that looks at the clock on each Python call (SymPy is pure Python, so calls come
often).  Nested limits keep the earlier deadline."""
from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time

from .lazy import sympy as sp


class _Budget(BaseException):
    """The time limit ran out (a BaseException, so `except Exception` in SymPy or in the
    renderer does not swallow it)."""


_limits = threading.local()


@contextlib.contextmanager
def time_limit(seconds: float):
    """Raise _Budget inside the block once `seconds` have passed, from any thread: a SIGALRM
    timer in the main thread; elsewhere a trace function that looks at the clock on each Python
    call (SymPy is pure Python).  Nested limits keep the earlier deadline."""
    stack = _limits.__dict__.setdefault("stack", [])
    end = time.perf_counter() + min(max(seconds, 0.0), 1e7)   # inf: no limit in practice
    if stack:
        end = min(end, stack[-1])
    stack.append(end)
    main = threading.current_thread() is threading.main_thread() and hasattr(signal, "SIGALRM")
    old_trace = sys.gettrace()

    live = [True]

    def arm():
        # the timer repeats every 50 ms past the deadline: a _Budget raised while a finalizer or
        # __del__ runs is swallowed by Python ("Exception ignored in"), and the next one stops it
        if main:
            signal.setitimer(signal.ITIMER_REAL, max(stack[-1] - time.perf_counter(), 1e-6), 0.05)

    if main:
        def stop(*_):
            if live[0]:
                raise _Budget()
        theirs = signal.getitimer(signal.ITIMER_REAL) if len(stack) == 1 else (0.0, 0.0)
        started = time.perf_counter()
        old = signal.signal(signal.SIGALRM, stop)
        arm()
    else:
        def tracer(frame, event, arg):
            if time.perf_counter() > stack[-1]:
                raise _Budget()
            return old_trace(frame, event, arg) if old_trace is not None else None
        sys.settrace(tracer)
    try:
        yield
    except BaseException as e:
        live[0] = False
        if isinstance(e, _Budget) or _from_budget(e):
            # raised from Python code that C code called (a __hash__ inside SymPy's cache),
            # _Budget arrives wrapped in a SystemError; either way, drop SymPy's caches in
            # case a half-built entry went in
            sp.core.cache.clear_cache()
            if not isinstance(e, _Budget):
                raise _Budget() from e
        raise
    finally:
        live[0] = False
        stack.pop()
        if main:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)
            if stack:
                arm()   # the enclosing limit goes on (raising at once if it has passed)
            elif theirs[0] > 0:     # the caller's own timer goes on, less the time spent here
                left = theirs[0] - (time.perf_counter() - started)
                signal.setitimer(signal.ITIMER_REAL, max(left, 1e-6), theirs[1])
        else:
            sys.settrace(old_trace)


def _from_budget(e: BaseException) -> bool:
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, _Budget):
            return True
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return False
