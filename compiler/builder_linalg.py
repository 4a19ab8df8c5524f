"""`@` on stacks of matrices (np.matmul's rules) and `einsum` for one or two operands.

    matmul_nd(A, B)      A: [..., M, K], B: [..., K, N] -> [..., M, N], batch axes broadcast
    einsum("bhqd,bhkd->bhqk", Q, K)

Both are built at trace time from the primitives (compiler/ops/linalg.py): a stack times one
matrix is one 2-D matmul over the stacked rows (X[B, T, E] @ W[E, F] is X reshaped to
[B·T, E]); otherwise the ranks are padded with leading axes of size 1 and the batch_matmul
primitive broadcasts them.  einsum sums the indices only one operand has, moves each
operand's axes into (batch, kept, contracted) order with one transpose and one reshape, and
multiplies (a broadcast product when nothing is contracted): so it is as fast as matmul, and
its gradient is the gate rules of the primitives it is made of.  Nothing here builds a Jacobian.

This module uses only the methods of traced values (`.reshape`, `.transpose`, `.sum`, `@`),
so compiler/builder.py can import it without a cycle.
"""
from __future__ import annotations

import math
import re

from .ir import ShapeError, UnsupportedError


def _at(x) -> str:
    loc = x.b.where()
    return f" at {loc}" if loc else ""


def _prod(dims) -> int:
    return math.prod(dims)


def matmul_nd(a, b):
    """np.matmul for operands of which one has rank >= 3 (both traced, one dtype, rank >= 1)."""
    a2 = a.reshape((1,) + a.shape) if a.ndim == 1 else a
    b2 = b.reshape(b.shape + (1,)) if b.ndim == 1 else b
    if a2.shape[-1] != b2.shape[-2]:
        raise ShapeError(f"matmul: shapes {a.shape} and {b.shape} do not chain "
                         f"({a2.shape[-1]} != {b2.shape[-2]}){_at(a)}")
    if b2.ndim == 2 and all(type(d) is int for d in a2.shape[:-1]):
        # a stack times one matrix: one 2-D product over all the rows (a stack with a named
        # size, [N, T, E] @ W, has no row count N·T to name: it is a batched product)
        m, k = a2.shape[-2:]
        y = a2.reshape((_prod(a2.shape[:-1]), k)) @ b2
        y = y.reshape(a2.shape[:-2] + (m, b2.shape[1]))
    else:
        r = max(a2.ndim, b2.ndim)
        a3 = a2.reshape((1,) * (r - a2.ndim) + a2.shape) if a2.ndim < r else a2
        b3 = b2.reshape((1,) * (r - b2.ndim) + b2.shape) if b2.ndim < r else b2
        for x, y_ in zip(a3.shape[:-2], b3.shape[:-2]):
            if x != y_ and 1 not in (x, y_):
                raise ShapeError(f"matmul: the batch axes of {a.shape} and {b.shape} do not "
                                 f"broadcast ({a3.shape[:-2]} against {b3.shape[:-2]}){_at(a)}")
        y = a.b.emit("batch_matmul", [a3, b3])
    if a.ndim == 1:
        y = y.reshape(y.shape[:-2] + y.shape[-1:])
    if b.ndim == 1:
        y = y.reshape(y.shape[:-1])
    return y


# ---- einsum --------------------------------------------------------------------------------
_TERM = re.compile(r"^[A-Za-z]*\Z")


def _parse(spec, operands) -> tuple:
    """(input index strings, output index string) of an explicit or implicit spec."""
    if not isinstance(spec, str):
        raise UnsupportedError(f"einsum: the spec must be a string such as 'ij,jk->ik', got "
                               f"{type(spec).__name__}")
    s = spec.replace(" ", "")
    if "..." in s:
        raise UnsupportedError(f"einsum {spec!r}: '...' is not supported; name every axis "
                               "with a letter")
    lhs, arrow, out = s.partition("->")
    if "->" in out:
        raise ShapeError(f"einsum {spec!r}: more than one '->'")
    terms = lhs.split(",")
    if len(terms) != len(operands):
        raise ShapeError(f"einsum {spec!r}: the spec names {len(terms)} operand(s) and "
                         f"{len(operands)} were given")
    for t in terms + [out]:
        if not _TERM.match(t):
            bad = sorted(set(re.sub(r"[A-Za-z]", "", t)))
            raise ShapeError(f"einsum {spec!r}: indices are letters; {''.join(bad)!r} is not")
    if not arrow:
        seen = "".join(terms)
        out = "".join(sorted(c for c in set(seen) if seen.count(c) == 1))
    for t, x in zip(terms, operands):
        if len(set(t)) != len(t):
            rep = sorted({c for c in t if t.count(c) > 1})
            raise UnsupportedError(f"einsum {spec!r}: index {''.join(rep)!r} repeats within "
                                   f"operand {t!r} (a diagonal); gradc's einsum does not take "
                                   "diagonals")
        if len(t) != x.ndim:
            raise ShapeError(f"einsum {spec!r}: operand {t!r} has {len(t)} indices but shape "
                             f"{x.shape}{_at(x)}")
    if len(set(out)) != len(out):
        raise ShapeError(f"einsum {spec!r}: an output index repeats in {out!r}")
    missing = set(out) - set("".join(terms))
    if missing:
        raise ShapeError(f"einsum {spec!r}: output index {''.join(sorted(missing))!r} is in no "
                         "operand")
    return terms, out


def _sum_out(x, term: str, keep) -> tuple:
    """x summed over the indices of `term` not in `keep`; returns (value, remaining term)."""
    axes = tuple(k for k, c in enumerate(term) if c not in keep)
    if not axes:
        return x, term
    return x.sum(axis=axes), "".join(c for c in term if c in keep)


def _mergeable(size: dict, letters: str) -> bool:
    """Whether the axes of `letters` can be one axis: a shape names no product N·T, so a
    dimension name merges only with axes of size 1."""
    return all(type(size[c]) is int for c in letters) or sum(size[c] != 1 for c in letters) <= 1


def _arrange(x, term: str, lead: str, rows: str, cols: str, split: bool = False):
    """x with its axes in order lead+rows+cols, shaped [prod(lead)…, prod(rows), prod(cols)]
    (no lead axis when `lead` is empty); with `split`, one axis per lead letter, of size 1
    where x lacks the letter (the product broadcasts it).  When x's axes already read
    lead+cols+rows, it is reshaped first and then its last two axes swapped, the transpose a
    matmul folds into a BLAS flag."""
    size = dict(zip(term, x.shape))

    def dims(letters):
        return _prod(size[c] for c in letters)
    if split:
        head = tuple(size.get(c, 1) for c in lead)
        lead = "".join(c for c in lead if c in term)
    else:
        head = (dims(lead),) if lead else ()
    if term == lead + cols + rows and rows and cols:
        y = x.reshape(head + (dims(cols), dims(rows)))
        r = y.ndim
        return y.transpose(*range(r - 2), r - 1, r - 2)
    y = x.transpose(*(term.index(c) for c in lead + rows + cols))
    return y.reshape(head + (dims(rows), dims(cols)))


def einsum(spec: str, *operands):
    """np.einsum for one or two traced operands (letters only; no '...' and no diagonal), as
    transposes, reshapes, sums and one matmul."""
    for x in operands:
        if not hasattr(x, "b") or not hasattr(x, "value"):
            raise UnsupportedError(f"einsum {spec!r}: operands must be traced values, got "
                                   f"{type(x).__name__}")
    if len(operands) not in (1, 2):
        raise UnsupportedError(f"einsum {spec!r}: gradc's einsum takes one or two operands, "
                               f"got {len(operands)}; chain two-operand einsums")
    terms, out = _parse(spec, operands)
    if len(operands) == 1:
        x, t = _sum_out(operands[0], terms[0], out)
        return x.transpose(*(t.index(c) for c in out))
    (a, b), (ta, tb) = operands, terms
    for c in set(ta) & set(tb):
        da, db = a.shape[ta.index(c)], b.shape[tb.index(c)]
        if da != db:
            raise ShapeError(f"einsum {spec!r}: index {c!r} has size {da} in {ta!r} and {db} in "
                             f"{tb!r} (shapes {a.shape} and {b.shape}){_at(a)}")
    a, ta = _sum_out(a, ta, set(tb) | set(out))
    b, tb = _sum_out(b, tb, set(ta) | set(out))
    batch = "".join(c for c in ta if c in tb and c in out)
    contract = "".join(c for c in ta if c in tb and c not in out)
    kept_a = "".join(c for c in ta if c not in tb)
    kept_b = "".join(c for c in tb if c not in ta)
    size = {**dict(zip(ta, a.shape)), **dict(zip(tb, b.shape))}
    split = not all(_mergeable(size, g) for g in (batch, kept_a, kept_b))
    if not _mergeable(size, contract):
        raise UnsupportedError(
            f"einsum {spec!r}: the contracted indices {contract!r} have sizes "
            f"{tuple(size[c] for c in contract)}; a dimension name cannot be merged with "
            f"another axis (no shape has N·T elements on one axis): contract the named index "
            f"in an einsum of its own{_at(a)}")
    if split:      # a named kept index is a batch axis of its own, of size 1 in the other operand
        named_a = "".join(c for c in kept_a if type(size[c]) is not int)
        named_b = "".join(c for c in kept_b if type(size[c]) is not int)
        batch, kept_a, kept_b = (batch + named_a + named_b,
                                 "".join(c for c in kept_a if c not in named_a),
                                 "".join(c for c in kept_b if c not in named_b))
    left = _arrange(a, ta, batch, kept_a, contract, split)
    right = _arrange(b, tb, batch, contract, kept_b, split)
    # nothing to contract: an outer product per batch element, [M, 1]·[1, N] broadcast
    y = left * right if not contract else left @ right
    order = batch + kept_a + kept_b
    y = y.reshape(tuple(size[c] for c in order))
    return y.transpose(*(order.index(c) for c in out))
