"""The text form of parameter trees (compiler/trees.py): `input tree params = {...}` after
the graph's header line, `output tree dparams = {...}` after `return`.  Leaves are names (input
names, output keys) or None (a leaf without a gradient); dict keys are non-empty strings
without dots.  Read with a literal-only walker of Python's AST (nothing is evaluated), nested
at most MAX_DEPTH deep."""
from __future__ import annotations

import ast
import re

from .trees import MAX_DEPTH, leaves, spelled


def tree_text(tree) -> str:
    """A tree of names (None at an empty leaf) as text: {'l1': {'W': params_l1_W}, ...}."""
    if isinstance(tree, dict):
        return "{" + ", ".join(f"{k!r}: {tree_text(v)}" for k, v in tree.items()) + "}"
    if isinstance(tree, list):
        return "[" + ", ".join(tree_text(v) for v in tree) + "]"
    if isinstance(tree, tuple):
        inner = ", ".join(tree_text(v) for v in tree)
        return f"({inner},)" if len(tree) == 1 else f"({inner})"
    return "None" if tree is None else tree


def text_lines(graph, where: str) -> list:
    trees = graph.input_trees if where == "input" else graph.output_trees
    return [f"{where} tree {k} = {tree_text(t)}" for k, t in trees.items()]


_LINE = re.compile(r"^(input|output) tree ([A-Za-z_][A-Za-z0-9_]*) = (.+)$")


def read_line(text: str, error, lineno: int):
    """(where, name, tree) from an `input tree NAME = {...}` line; `error(msg, line)` makes
    the ParseError."""
    m = _LINE.match(text)
    if not m:
        raise error("expected 'input tree NAME = {...}' or 'output tree NAME = {...}'", lineno)
    body = m.group(3)
    depth = 0
    for ch in body:
        depth += ch in "([{"
        depth -= ch in ")]}"
        if depth > MAX_DEPTH:
            raise error(f"tree {m.group(2)} nests deeper than {MAX_DEPTH} levels", lineno)
    try:
        node = ast.parse(body, mode="eval").body
    except (SyntaxError, ValueError, RecursionError, MemoryError) as e:
        raise error(f"tree {m.group(2)}: cannot read {body[:60]!r} ({type(e).__name__})",
                    lineno) from None
    return m.group(1), m.group(2), _node_tree(node, error, lineno)


def _node_tree(node, error, lineno):
    if isinstance(node, ast.Dict):
        keys = []
        for k in node.keys:
            if not (isinstance(k, ast.Constant) and isinstance(k.value, str) and k.value
                    and "." not in k.value):
                raise error("tree keys must be non-empty strings without '.'", lineno)
            keys.append(k.value)
        if len(set(keys)) != len(keys):
            raise error("a tree key is given twice", lineno)
        return {k: _node_tree(v, error, lineno) for k, v in zip(keys, node.values)}
    if isinstance(node, (ast.List, ast.Tuple)):
        items = [_node_tree(e, error, lineno) for e in node.elts]
        return items if isinstance(node, ast.List) else tuple(items)
    if isinstance(node, ast.Constant) and node.value is None:
        return None
    if isinstance(node, ast.Name):
        return node.id
    raise error(f"tree leaves must be names, got {ast.dump(node)[:40]}", lineno)


def check_parsed(graph, error, lineno: int) -> None:
    """The trees read from text name existing inputs (outputs), each leaf once."""
    inputs = {v.name for v in graph.inputs}
    seen: set = set()
    for top, tree in graph.input_trees.items():
        for path, name in leaves(tree):
            if name not in inputs or name in seen:
                raise error(f"input tree {top}: leaf {spelled(top, path)} = {name} is "
                            + ("not an input" if name not in inputs else "used twice"), lineno)
            seen.add(name)
    for top, tree in graph.output_trees.items():
        if top in graph.outputs:
            raise error(f"output tree {top} has the name of an output", lineno)
        for path, name in leaves(tree):
            if name is not None and name not in graph.outputs:
                raise error(f"output tree {top}: leaf {spelled(top, path)} = {name} is not an "
                            "output", lineno)
