"""What generated source is built from: identifiers the emitter made, and quoted free text.

Emitted code (NumPy modules, `gradc emit` files, LLVM IR) contains three kinds of text:

    identifiers   made here from the model's names (`identifiers`): ASCII `[A-Za-z_][A-Za-z0-9_]*`,
                  never a keyword, a builtin or a name the module itself defines; readable
                  names are kept as they are (`h`, `dW1`), others are spelled out (`if` -> `if_`,
                  `x²` -> `x_`) and a collision gets a numeric suffix (`h_1`)
    comments      one line of printable text (`comment`): every character Python's
                  `str.splitlines` or the LLVM lexer would break at, and every other
                  unprintable one, is written as an escape (`\\n`, `\\u2028`), so a comment can
                  never end early and start a code line
    string values a docstring whose value is exactly the text (`docstring`), or `repr`

Locations, gate rule texts, output keys and the IR header are free text: they go in only
through `comment` or `docstring`/`repr`.  tests/test_injection.py checks this against hostile
names and locations.
"""
from __future__ import annotations

import builtins
import keyword
import re
import unicodedata

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")      # used with fullmatch: `$` would accept "h\n"
# names a module or function body of gradc's emitted code refers to
_EMITTED = frozenset({"np", "math", "inputs", "outputs", "self", "_buf", "LabelError"})
_RESERVED = frozenset(dir(builtins)) | frozenset(keyword.kwlist) | frozenset(
    keyword.softkwlist) | _EMITTED
_BUFFER = re.compile(r"^_b\d+$")          # the memory-planned emitter's buffer locals


def _escape(ch: str) -> str:
    code = ord(ch)
    named = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
    if ch in named:
        return named[ch]
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else \
        f"\\U{code:08x}"


def comment(text) -> str:
    """`text` as the body of a one-line comment: every unprintable character (line breaks of
    every kind, controls, NUL, lone surrogates) written as its escape."""
    text = str(text)
    if text.isprintable():          # the common case, without a pass per character
        return text
    return "".join(ch if ch.isprintable() else _escape(ch) for ch in text)


def docstring(text: str, indent: str = "") -> str:
    """A triple-quoted Python literal whose value is exactly `text` (for a module or function
    docstring), with real newlines kept so that it reads as the text does: backslashes and
    quotes are escaped, and unprintable characters other than newline are escapes.
    `indent` is prepended to every line after the first (the value then holds it too)."""
    return '"""' + docstring_body(text, indent) + '"""'


def docstring_body(text: str, indent: str = "") -> str:
    """`docstring` without the quotes: text that may stand anywhere inside a triple-quoted
    literal (it cannot end it, nor end with a backslash)."""
    # str methods, not a loop per character: the IR header of a deep model is ~10⁶ characters
    text = str(text).replace("\\", "\\\\").replace('"', '\\"')
    if not text.replace("\n", "").isprintable():
        text = "".join(ch if ch == "\n" or ch.isprintable() else _escape(ch) for ch in text)
    return text.replace("\n", "\n" + indent) if indent else text


def identifier(hint, taken=frozenset(), reserved=frozenset()) -> str:
    """A Python (and LLVM) identifier like `hint`, not in `taken`, not a keyword, builtin or
    name the emitted code uses, nor in `reserved`: `x²` -> `x2`, `é` -> `e`, `if` -> `if_`."""
    text = "".join(c for c in unicodedata.normalize("NFKD", str(hint))
                   if not unicodedata.combining(c))
    base = re.sub(r"[^A-Za-z0-9_]+", "_", text) or "v"
    if base[0].isdigit():
        base = "v" + base
    if base in _RESERVED or base in reserved or _BUFFER.match(base):
        base = base + "_"
    name, k = base, 1
    while name in taken or name in reserved or name in _RESERVED:
        name = f"{base}_{k}"
        k += 1
    return name


def identifiers(names, reserved=frozenset()) -> dict:
    """name -> identifier for each of `names` (in order; distinct names get distinct
    identifiers).  A name that is already a fine identifier keeps it unless an earlier name
    took it; `reserved` names (helpers the module defines) are renamed."""
    names = list(dict.fromkeys(names))
    keep = {n for n in names if isinstance(n, str) and _IDENT.fullmatch(n) and n not in _RESERVED
            and n not in reserved and not _BUFFER.match(n)}
    out: dict = {}
    taken = set()
    for n in names:                      # the model's own good names first: they stay
        if n in keep:
            out[n] = n
            taken.add(n)
    for n in names:
        if n not in out:
            out[n] = identifier(n, taken | keep, reserved)
            taken.add(out[n])
    return out
