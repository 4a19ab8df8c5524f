"""Array constants: a NumPy array the model captures (a closure or global variable) becomes one
`const_array` node whose `data` attribute is a `ConstData`, the array stored once.

    W = np.array([[1., 2.], [3., 4.]])
    def model(x):
        return dsl.sum(W @ x)          # W: f64[2,2] = const_array() {data='1f0c…', dtype='f64'}

`const` (ops/elementwise.py) stays what it was: one scalar standing for every element (folding,
simplification and the LLVM immediates read it so); `const_array` holds any array.  Its `dtype`
attribute is the node's type and may differ from the stored data's (as_float64 widens an f32
model by text: the data keeps its bits, the node converts on use).

The text form prints the node compactly, the data's digest as the attribute, and the data
itself once, in a table after the graph's closing brace, which `parse_graph` reads first:

    graph model(x: f64[2]) {
      W: f64[2,2] = const_array() {data='1f0c3a9e5b7d2c40', dtype='f64'}  @ m.py:4
      ...
    }
    constants {
      1f0c3a9e5b7d2c40: float64 (2, 2) 'AAAAAAAA8D8AAAAAAAAAQAAAAAAAAAhAAAAAAAAAEEA='
    }

The data is the little-endian C-order bytes in base64 (exact, bit for bit); the digest is the
first 16 hex digits of SHA-256 over dtype, shape and bytes, checked when the table is read (a
table line whose data does not match its digest is a ParseError).  The emitted NumPy module
defines each constant once at module level, read-only (`_const_1f0c3a9e`); the LLVM kernel
holds it as a private global it copies from.
"""
from __future__ import annotations

import base64
import hashlib
import re

import numpy as np

from .codegen.forms import literal
from .ir import NUMPY_DTYPE, UnsupportedError

DIGEST = 16                     # hex digits of the digest printed in the node's attribute
_DTYPE_OF = {np.dtype(v): k for k, v in NUMPY_DTYPE.items()}
MAX_TEXT_ELEMENTS = 1 << 24     # a table line longer than this many elements is refused
LITERAL_ELEMENTS = 1024         # larger constants are emitted as their bytes, not numbers


class ConstData:
    """An immutable array (a private, read-only, C-contiguous copy) with its digest; equal
    ConstData are the same bytes of the same dtype and shape."""

    __slots__ = ("array", "digest")

    def __init__(self, array):
        arr = np.array(array, copy=True, order="C")
        if arr.dtype not in _DTYPE_OF:
            raise UnsupportedError(f"a constant array of dtype {arr.dtype}: gradc's constants "
                                   "are float64, float32, int64 or bool arrays")
        arr.setflags(write=False)
        self.array = arr
        h = hashlib.sha256(f"{arr.dtype.str} {arr.shape}\n".encode())
        h.update(arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes())
        self.digest = h.hexdigest()

    @property
    def dtype(self) -> str:
        return _DTYPE_OF[self.array.dtype]

    @property
    def shape(self) -> tuple:
        return self.array.shape

    @property
    def short(self) -> str:
        return self.digest[:DIGEST]

    def __eq__(self, other) -> bool:
        return isinstance(other, ConstData) and other.digest == self.digest

    def __hash__(self) -> int:
        return hash(self.digest)

    def __repr__(self) -> str:      # what the attribute prints as (ir text, DOT, errors)
        return repr(self.short)

    def as_dtype(self, dtype: str) -> np.ndarray:
        """The data as the node's dtype (a fresh array)."""
        return self.array.astype(NUMPY_DTYPE[dtype])


def from_python(x) -> ConstData:
    """A captured array as constant data: float64/float32/int64/bool kept, other integer
    arrays widened to int64 when every value fits; anything else refused."""
    arr = np.asarray(x)
    if arr.dtype.kind in "iu" and arr.dtype != np.int64:
        wide = arr.astype(np.int64)
        if not np.array_equal(wide, arr):
            raise UnsupportedError(f"a constant {arr.dtype} array with values outside int64")
        arr = wide
    if arr.dtype not in _DTYPE_OF:
        raise UnsupportedError(
            f"a NumPy array of dtype {arr.dtype} and shape {arr.shape} appears in the model "
            "as a constant; gradc's constants are float64, float32, int64 or bool arrays: "
            "convert it (e.g. a.astype(np.float64))")
    return ConstData(arr)


# ---- the text form's table ----------------------------------------------------------------
def table_lines(graph) -> list:
    """The `constants { ... }` block for the graph's array constants ([] when it has none)."""
    seen: dict = {}
    for n in graph.nodes:
        for v in n.attrs.values():
            if isinstance(v, ConstData):
                seen.setdefault(v.short, v)
    if not seen:
        return []
    lines = ["constants {"]
    for short, d in seen.items():
        raw = d.array.astype(d.array.dtype.newbyteorder("<"), copy=False).tobytes()
        lines.append(f"  {short}: {d.array.dtype.name} {tuple(d.shape)!r} "
                     f"'{base64.b64encode(raw).decode()}'")
    lines.append("}")
    return lines


_ENTRY = re.compile(r"^([0-9a-f]{16,64}): (float64|float32|int64|bool) \(([0-9, ]*)\) "
                    r"'([A-Za-z0-9+/=]*)'$")


def split_table(lines: list, error) -> tuple:
    """(the graph's lines, {digest: ConstData}) from the parser's numbered lines: a trailing
    `constants { ... }` block is read and removed.  `error(message, line)` makes the
    ParseError."""
    start = next((k for k, (_, ln) in enumerate(lines) if ln == "constants {"), None)
    if start is None:
        return lines, {}
    if start == 0 or lines[start - 1][1] != "}":
        raise error("'constants {' must follow the graph's closing '}'", lines[start][0])
    block, table = lines[start + 1:], {}
    if not block or block[-1][1] != "}":
        raise error("missing closing '}' of the constants table", lines[-1][0])
    for lineno, ln in block[:-1]:
        m = _ENTRY.match(ln)
        if not m:
            raise error(f"cannot read constant {ln[:60]!r}: expected \"DIGEST: dtype (shape) "
                        "'base64'\"", lineno)
        short, dtype, dims, data = m.groups()
        if short in table:
            raise error(f"constant {short} defined twice", lineno)
        try:
            shape = tuple(int(d) for d in dims.split(",") if d.strip())
            count = int(np.prod(shape, dtype=np.int64)) if shape else 1
            if count > MAX_TEXT_ELEMENTS:
                raise ValueError(f"{count} elements is more than the text form holds")
            raw = base64.b64decode(data, validate=True)
            arr = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<")).reshape(shape)
        except (ValueError, TypeError) as e:
            raise error(f"constant {short}: bad data ({e})", lineno) from None
        d = ConstData(arr.astype(np.dtype(dtype)))
        if not d.digest.startswith(short):
            raise error(f"constant {short}: its data has digest {d.short} (the table was "
                        "edited or damaged)", lineno)
        table[short] = d
    return lines[:start], table


def resolve(attrs: dict, declared, table: dict, error, lineno: int) -> dict:
    """An attribute read from text that names constant data (a digest string, for an
    attribute of the DATA kind) replaced by the table's ConstData."""
    for k, v in attrs.items():
        if getattr(declared.get(k), "reads_table", False):
            if not isinstance(v, str) or v not in table:
                raise error(f"attribute {k}={v!r} names no constant of the table after the "
                            "graph", lineno)
            attrs[k] = table[v]
    return attrs


# ---- the emitted NumPy module --------------------------------------------------------------
def module_name(node) -> str:
    """The module-level name of a const_array node's data in the emitted NumPy source."""
    return f"_const_{node.attrs['data'].short[:8]}"


def module_names(graph) -> set:
    """The module-level names `module_definitions` defines (reserved for the emitted module)."""
    return {numpy_text(None, n.attrs, n) for n in graph.nodes
            if isinstance(n.attrs.get("data"), ConstData)}


def module_definitions(graph) -> dict:
    """Module-level name -> its definition (a read-only array literal), once per data and
    dtype, for the graph's const_array nodes."""
    out: dict = {}
    for n in graph.nodes:
        d = n.attrs.get("data")
        if not isinstance(d, ConstData):
            continue
        name = module_name(n)
        if n.out.dtype != d.dtype:
            name += f"_{n.out.dtype}"
        if name in out:
            continue
        flat = d.as_dtype(n.out.dtype).reshape(-1)
        dt = NUMPY_DTYPE[n.out.dtype]
        if flat.size <= LITERAL_ELEMENTS:      # readable: the numbers
            items = ", ".join(literal(x.item())[0] for x in flat)
            text = f"np.array([{items}], dtype=np.{dt})"
        else:                                  # large: its bytes (fast to compile, exact)
            little = flat.astype(flat.dtype.newbyteorder("<"))
            text = (f"np.frombuffer(bytes.fromhex('{little.tobytes().hex()}'), "
                    f"dtype={little.dtype.str!r}).astype(np.{dt})")
        if d.shape != (len(flat),):
            text += f".reshape({tuple(d.shape)!r})"
        out[name] = f"{name} = {text}  # {n.out.type}\n{name}.setflags(write=False)"
    return out


def numpy_text(args, attrs, node) -> str:
    name = module_name(node)
    return name if node.out.dtype == attrs["data"].dtype else f"{name}_{node.out.dtype}"

