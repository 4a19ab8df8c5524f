"""Modules loaded on first use (issue 17.2: `import compiler` stays fast).

`from compiler.lazy import sympy as sp` gives a stand-in for the module: the first attribute
read (`sp.exp`, `sp.Function`) imports SymPy and from then on every read is the module's own
attribute.  SymPy costs about a quarter of a second to import and only the checks, the SymPy
renderer and the SymPy front end need it, so code that runs at import time must not read an
attribute of the stand-in: the op records give their SymPy meaning as functions
(`lambda x: sp.exp(x)`), evaluated when a check renders a graph.  `loaded("sympy")` says
whether the real module has been imported (tests: `import compiler` loads no SymPy).
"""
from __future__ import annotations

import importlib
import sys
import threading
import types

_lock = threading.Lock()


class LazyModule(types.ModuleType):
    """A module object standing for `name`, imported at the first attribute read."""

    def __init__(self, name: str):
        super().__init__(f"lazy {name}")
        self.__dict__["_lazy_name"] = name
        self.__dict__["_lazy_module"] = None

    def _load(self):
        mod = self.__dict__["_lazy_module"]
        if mod is None:
            with _lock:                 # two threads' first reads import once
                mod = self.__dict__["_lazy_module"]
                if mod is None:
                    mod = importlib.import_module(self.__dict__["_lazy_name"])
                    self.__dict__["_lazy_module"] = mod
        return mod

    def __getattr__(self, attr: str):
        if attr.startswith("__") and attr.endswith("__") and attr != "__version__":
            raise AttributeError(attr)      # copy/pickle/inspect probes do not import
        return getattr(self._load(), attr)

    def __repr__(self) -> str:
        name = self.__dict__["_lazy_name"]
        return f"<lazy module {name!r} ({'loaded' if name in sys.modules else 'not loaded'})>"


def loaded(name: str) -> bool:
    """Whether the real module `name` has been imported (by anyone) in this process."""
    return name in sys.modules


sympy = LazyModule("sympy")
mpmath = LazyModule("mpmath")
llvm_binding = LazyModule("llvmlite.binding")
