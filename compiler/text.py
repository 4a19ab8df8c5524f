"""The IR's text form: `print_graph` writes it, `parse_graph` reads it back to an equal graph.

    graph neuron(w: f64[3], x: f64[2]) {
      t0: f64[] = getitem(w) {index=(0,)}  @ lecture.py:20
      dt0: f64[] = mul(dt2, t1)  @ lecture.py:20  # mul gate: dA = G·B [of t0]
      return out=f, dw=dw
    }

One node per line: `name: type = op(inputs) {attrs}`, then the source location after `@` and,
for gradient nodes, the gate rule after `#` with the forward value it belongs to in `[of ...]`.
Attribute values are literals (numbers, strings, tuples, None, inf, nan); the parser reads them
with a literal-only walker, so parsing never evaluates code.
"""
from __future__ import annotations

import ast
import keyword
import re
import warnings

from . import constants, trees_text
from .ir import GradcError, Graph, Node, TensorType, Value, verify
from .ops import OPS
from .ops.attrs import check_attrs


class ParseError(GradcError, ValueError):
    """Malformed IR text; the message names the line."""

    def __init__(self, message: str, line: int):
        super().__init__(f"line {line}: {message}")
        self.line = line


def _fmt(v) -> str:
    if isinstance(v, tuple):
        inner = ", ".join(_fmt(x) for x in v)
        return f"({inner},)" if len(v) == 1 else f"({inner})"
    return repr(v)


def format_attrs(attrs: dict) -> str:
    return "{" + ", ".join(f"{k}={_fmt(v)}" for k, v in attrs.items()) + "}" if attrs else ""


def format_node(n: Node) -> str:
    line = f"{n.out.name}: {n.out.type} = {n.op}({', '.join([v.name for v in n.inputs])})"
    if n.attrs:
        line += " " + format_attrs(n.attrs)
    if n.loc:
        line += f"  @ {n.loc}"
    if n.rule:
        line += f"  # {n.rule} [of {n.of}]"
    return line


def print_graph(g: Graph, data: bool = True) -> str:
    """The text form; `data=False` leaves out the table of array constants' data (compiler/
    constants.py), for headers that people read (the text then does not parse)."""
    head = ", ".join(f"{v.name}: {v.type}" for v in g.inputs)
    lines = [f"graph {g.name}({head}) {{"]
    lines += ["  " + t for t in trees_text.text_lines(g, "input")]
    lines += ["  " + format_node(n) for n in g.nodes]
    lines.append("  return " + ", ".join(f"{k}={v.name}" for k, v in g.outputs.items()))
    lines += ["  " + t for t in trees_text.text_lines(g, "output")]
    lines.append("}")
    if data:
        lines += constants.table_lines(g)
    return "\n".join(lines)


# ---- parsing ------------------------------------------------------------------------------
_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_TYPE = r"(bool|i64|f32|f64)\[([0-9A-Za-z_, ]*)\]"       # a size: an int or a dimension name
_HEAD = re.compile(rf"^graph ({_NAME})\((.*)\) \{{$")
_NODE = re.compile(rf"^({_NAME}): {_TYPE} = ({_NAME})\(([^)]*)\)(?: (\{{.*?\}}))?"
                   rf"(?:  @ ([^#]*?))?(?:  # (.*) \[of ({_NAME})\])?$")
_RET = re.compile(rf"^return((?: {_NAME}={_NAME},?)*)$")
_CONSTS = {"inf": float("inf"), "nan": float("nan"), "True": True, "False": False, "None": None}


def _type(dtype: str, dims: str, line: int) -> TensorType:
    dims = dims.strip()
    try:
        shape = tuple(_size(d.strip()) for d in dims.split(",")) if dims else ()
        return TensorType(dtype, shape)
    except (ValueError, GradcError) as e:
        raise ParseError(f"bad type {dtype}[{dims}]: {e}", line) from None


def _size(text: str):
    """A dimension in a type: an int, or a name (`f64[N,784]`; TensorType checks the name)."""
    return int(text) if text.isdigit() else text


def _literal(node, line: int):
    """A literal from an AST node: numbers, strings, tuples/lists, inf, nan, True/False/None."""
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str, bool, type(None))):
        return node.value
    if isinstance(node, ast.Name) and node.id in _CONSTS:
        return _CONSTS[node.id]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        v = _literal(node.operand, line)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return -v if isinstance(node.op, ast.USub) else v
    if isinstance(node, (ast.Tuple, ast.List)):
        return tuple(_literal(e, line) for e in node.elts)
    raise ParseError(f"attribute values must be literals, got {ast.dump(node)[:60]}", line)


_MAX_NESTING = 32      # brackets inside an attribute value, and signs in a row (`--1`)
_SIGNS = re.compile(r"[-+](?:\s*[-+]){%d}" % _MAX_NESTING)


def _too_deep(text: str) -> bool:
    """Whether attribute text nests deeper than any op's attributes do (which Python's own
    parser answers with MemoryError or RecursionError, not an error about the text)."""
    depth = 0
    for ch in text:
        depth += ch in "([{"
        depth -= ch in ")]}"
        if depth > _MAX_NESTING + 1:
            return True
    return _SIGNS.search(text) is not None


def parse_attrs(text: str, line: int) -> dict:
    if not text:
        return {}
    if _too_deep(text):
        raise ParseError(f"attributes {text[:40]!r}... nest deeper than {_MAX_NESTING} levels",
                         line)
    try:
        with warnings.catch_warnings():   # bad text is a ParseError, not a SyntaxWarning
            warnings.simplefilter("ignore", SyntaxWarning)
            call = ast.parse("f(" + text[1:-1] + ")", mode="eval").body
    except SyntaxError as e:
        raise ParseError(f"bad attributes {text[:60]!r}: {e.msg}", line) from None
    except (RecursionError, MemoryError, ValueError) as e:   # ValueError: a NUL in the text
        raise ParseError(f"unreadable attributes {text[:40]!r}...: {type(e).__name__}",
                         line) from None
    if not isinstance(call, ast.Call) or call.args or any(k.arg is None for k in call.keywords):
        raise ParseError(f"attributes must be name=value pairs: {text[:60]!r}", line)
    names = [k.arg for k in call.keywords]
    if len(set(names)) != len(names):
        raise ParseError(f"an attribute is given twice in {text[:60]!r}", line)
    return {k.arg: _literal(k.value, line) for k in call.keywords}


def parse_graph(text: str) -> Graph:
    """Read the text form back into a Graph.  Raises ParseError (with a line number) for
    malformed text; the result is verified against the op rules."""
    lines = [(i + 1, ln.strip()) for i, ln in enumerate(text.splitlines())]
    lines = [(i, ln) for i, ln in lines if ln]
    lines, table = constants.split_table(lines, ParseError)   # array constants' data
    if not lines:
        raise ParseError("empty text: expected 'graph NAME(...) {'", 1)
    lineno, head = lines[0]
    m = _HEAD.match(head)
    if not m:
        raise ParseError("expected 'graph NAME(inputs) {'", lineno)
    if keyword.iskeyword(m.group(1)):
        raise ParseError(f"graph name {m.group(1)!r} is a Python keyword", lineno)
    g = Graph(m.group(1))
    env: dict = {}
    for part in filter(None, (p.strip() for p in _split_inputs(m.group(2)))):
        pm = re.match(rf"^({_NAME}): {_TYPE}$", part)
        if not pm:
            raise ParseError(f"bad input declaration {part!r}", lineno)
        if pm.group(1) in env:
            raise ParseError(f"input {pm.group(1)!r} declared twice", lineno)
        v = Value(pm.group(1), _type(pm.group(2), pm.group(3), lineno))
        env[v.name] = v
        g.inputs.append(v)
    body, closed = lines[1:], False
    for k, (lineno, ln) in enumerate(body):
        if ln == "}":
            if k != len(body) - 1:
                raise ParseError("text after the closing '}'", body[k + 1][0])
            closed = True
            break
        if ln.startswith(("input tree ", "output tree ")):      # compiler/trees_text.py
            where, tname, tree = trees_text.read_line(ln, ParseError, lineno)
            into = g.input_trees if where == "input" else g.output_trees
            if tname in into:
                raise ParseError(f"{where} tree {tname!r} given twice", lineno)
            into[tname] = tree
            continue
        if ln.startswith("return"):
            rm = _RET.match(ln)
            if not rm:
                raise ParseError("expected 'return NAME=VALUE, ...'", lineno)
            for pair in filter(None, (p.strip() for p in rm.group(1).split(","))):
                key, val = pair.split("=")
                if val not in env:
                    raise ParseError(f"output {key!r} refers to undefined value {val!r}", lineno)
                if key in g.outputs:
                    raise ParseError(f"output {key!r} named twice", lineno)
                g.outputs[key] = env[val]
            continue
        nm = _NODE.match(ln)
        if not nm:
            raise ParseError(f"cannot read {ln[:60]!r}: expected 'name: type = op(inputs) "
                             "{attrs}'", lineno)
        name, dtype, dims, op, args, attrs, loc, rule, of = nm.groups()
        if op not in OPS:
            raise ParseError(f"op {op!r} is neither a primitive nor a custom gate defined in this "
                             "process: a graph with a custom gate parses where the module that "
                             "defines it (@dsl.custom_gate) has been imported", lineno)
        if name in env:
            raise ParseError(f"value {name!r} defined twice", lineno)
        ins = []
        for a in filter(None, (x.strip() for x in args.split(","))):
            if a not in env:
                raise ParseError(f"{name} reads undefined value {a!r}", lineno)
            ins.append(env[a])
        out = Value(name, _type(dtype, dims, lineno))
        env[name] = out
        attrs = constants.resolve(parse_attrs(attrs, lineno), OPS[op].attrs if op in OPS else {},
                                  table, ParseError, lineno)
        try:                             # unknown or ill-typed attributes: this line's error
            check_attrs(op, attrs, (OPS[op].attrs if op in OPS else {}))
        except GradcError as e:
            raise ParseError(str(e), lineno) from None
        g.nodes.append(Node(op, tuple(ins), attrs, out,
                            loc.strip() if loc else None, rule, of))
    if not closed:
        raise ParseError("missing closing '}'", lines[-1][0])
    trees_text.check_parsed(g, ParseError, lineno)
    try:
        verify(g)
    except GradcError as e:
        raise ParseError(str(e), lineno) from None
    except (TypeError, ValueError, KeyError, IndexError) as e:
        raise ParseError(f"invalid graph: {type(e).__name__}: {e}", lineno) from None
    return g


def _split_inputs(text: str):
    """Split 'a: f64[2, 3], b: i64[4]' at the commas outside brackets."""
    depth, cur = 0, ""
    for ch in text:
        depth += ch == "["
        depth -= ch == "]"
        if ch == "," and depth == 0:
            yield cur
            cur = ""
        else:
            cur += ch
    yield cur
