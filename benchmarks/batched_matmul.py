"""Batched matmul (issue 18.3): gradc's `A @ B` on stacks of matrices against np.matmul.

    OPENBLAS_NUM_THREADS=1 python benchmarks/batched_matmul.py [B N]    (default 8 64)

Forward only, B×N×N @ B×N×N in float64; each candidate is timed in rounds interleaved with the
others and the best round is kept (the machine is shared: the minimum is the least disturbed
number).  The results are checked against np.matmul first.
"""
import sys
import time

import numpy as np

import compiler
from frontends import dsl
from frontends.dsl import f64


def main(batch: int = 8, n: int = 64, rounds: int = 40, calls: int = 20) -> dict:
    rng = np.random.default_rng(0)
    A, B = rng.standard_normal((batch, n, n)), rng.standard_normal((batch, n, n))
    g = dsl.trace(lambda A, B: A @ B, A=f64[batch, n, n], B=f64[batch, n, n])
    E = dsl.trace(lambda A, B: dsl.einsum("bij,bjk->bik", A, B), A=f64[batch, n, n],
                  B=f64[batch, n, n])
    fl, fn, fe = (compiler.compile(g, backend="llvm"), compiler.compile(g, backend="numpy"),
                  compiler.compile(E, backend="llvm"))
    want = np.matmul(A, B)
    for f in (fl, fn, fe):
        np.testing.assert_allclose(f(A=A, B=B)["out"], want, rtol=1e-12)
    cands = {"np.matmul": lambda: np.matmul(A, B), "gradc llvm": lambda: fl(A=A, B=B),
             "gradc numpy": lambda: fn(A=A, B=B), "gradc llvm einsum": lambda: fe(A=A, B=B)}
    best = {k: float("inf") for k in cands}
    for _ in range(rounds):
        for k, f in cands.items():
            t = time.perf_counter()
            for _ in range(calls):
                f()
            best[k] = min(best[k], (time.perf_counter() - t) / calls * 1e6)
    print(f"{batch}x{n}x{n} @ {batch}x{n}x{n}, float64, best of {rounds} rounds of {calls} calls")
    for k, v in best.items():
        print(f"  {k:18s} {v:8.1f} us   {v / best['np.matmul']:5.2f}x np.matmul")
    return best


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
