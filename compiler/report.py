"""Reports of the gradient checks: one row per gradient, printable, with `ok`."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

BACKEND_TOL = 1e-8


def _short(expr, limit: int = 160) -> str:
    text = str(expr)
    return text if len(text) <= limit else text[:limit - 3] + "..."


@dataclass
class GradientRow:
    """The comparison of one gradient (`dW1`) with the oracle."""
    name: str
    shape: tuple
    max_abs: float = 0.0
    max_rel: float = 0.0
    count: int = 0
    failure: tuple | None = None          # (index text, point, oracle, gradc, exprs)
    symbolic: tuple | None = None         # (proven, total) or None when not attempted
    why: str | None = None                # why the unproven elements are checked numerically only
    backends: dict = field(default_factory=dict)   # name -> max relative error

    def add_numeric(self, ref: float, got: float, tol: float, where=(0, 0), exprs=None,
                    err: float | None = None) -> None:
        """Record one element: `err` (default |got − ref|) may come from a higher-precision
        subtraction than the float64 values show."""
        err = abs(got - ref) if err is None else abs(err)
        if not np.isfinite(got) or not np.isfinite(err):
            err = float("inf")
        scale = max(1.0, abs(ref))
        self.count += 1
        self.max_abs = max(self.max_abs, err)
        self.max_rel = max(self.max_rel, err / max(abs(ref), 1e-300) if ref else err)
        if err > tol * scale and self.failure is None:
            p, k = where
            idx = "" if k < 0 else self._index(k)
            self.failure = (idx, p, ref, got, exprs)

    def add_backend(self, name: str, got, ref) -> None:
        got = np.asarray(got, dtype=np.float64)
        ref = np.asarray(ref, dtype=np.float64)
        err = float(np.max(np.abs(got - ref) / np.maximum(1.0, np.abs(ref)), initial=0.0))
        if not np.all(np.isfinite(got)):
            err = float("inf")
        self.backends[name] = max(self.backends.get(name, 0.0), err)

    def _index(self, k: int) -> str:
        if not self.shape:
            return ""
        return "[" + ", ".join(str(int(i)) for i in np.unravel_index(k, self.shape)) + "]"

    @property
    def ok(self) -> bool:
        return self.failure is None and all(e <= BACKEND_TOL for e in self.backends.values())


@dataclass
class CheckReport:
    title: str
    rows: list
    notes: list = field(default_factory=list)
    oracle: str = "SymPy"
    suspect: str | None = None
    seconds: float = 0.0
    budget: float | None = None           # the time budget the check ran under (seconds)
    stages: dict = field(default_factory=dict)   # stage -> seconds it took
    custom_gates: list = field(default_factory=list)  # check_custom.CustomGateCheck, flagged
                                                      # or not: never a failure

    @property
    def proven(self) -> dict:
        """Gradient name -> (elements proven symbolically, elements)."""
        return {r.name: r.symbolic for r in self.rows if r.symbolic is not None}

    @property
    def numeric_only(self) -> dict:
        """Gradient name -> why some of its elements were checked numerically only."""
        return {r.name: r.why for r in self.rows if r.why}

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.rows)

    def __bool__(self) -> bool:
        return self.ok

    def __str__(self) -> str:
        backends = sorted({b for r in self.rows for b in r.backends})
        head = ["gradient", "shape"] + (["symbolic"] if any(r.symbolic for r in self.rows)
                                        else []) + ["max abs err", "max rel err"] + backends
        table = [head]
        for r in self.rows:
            line = [r.name, str(tuple(r.shape))]
            if "symbolic" in head:
                line.append(f"proven {r.symbolic[0]}/{r.symbolic[1]}" if r.symbolic else "-")
            line += [f"{r.max_abs:.1e}", f"{r.max_rel:.1e}"]
            line += [f"{r.backends[b]:.1e}" if b in r.backends else "-" for b in backends]
            table.append(line)
        widths = [max(len(row[k]) for row in table) for k in range(len(head))]
        out = [self.title]
        out += ["  " + "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip()
                for row in table]
        for r in self.rows:
            if r.failure:
                idx, p, ref, got, exprs = r.failure
                out.append(f"  FAIL {r.name}{idx} at point {p}: {self.oracle} {ref:.10g}, "
                           f"gradc {got:.10g}")
                if exprs:
                    out.append(f"       {self.oracle}: {_short(exprs[0])}")
                    out.append(f"       gradc: {_short(exprs[1])}")
            for b, e in r.backends.items():
                if e > BACKEND_TOL:
                    out.append(f"  FAIL {r.name}: the {b} backend differs by {e:.1e}")
        by_why = {}
        for r in self.rows:
            if r.why and r.symbolic:
                by_why.setdefault(r.why, []).append(r)
        for why, rs in by_why.items():
            left = sum(r.symbolic[1] - r.symbolic[0] for r in rs)
            out.append(f"  not proven: {left} of {sum(r.symbolic[1] for r in rs)} element(s) "
                       f"of {', '.join(r.name for r in rs)}, checked numerically only "
                       f"({sum(r.count for r in rs)} comparisons at 30 digits): {why}")
        if self.suspect:
            out.append(f"  suspect: {self.suspect}")
        out += [f"  {c}" for c in self.custom_gates]
        out += [f"  note: {n}" for n in self.notes]
        out.append("  OK" if self.ok else "  FAILED")
        return "\n".join(out)

    __repr__ = __str__
