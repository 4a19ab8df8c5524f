"""Graph pictures: a graph as Graphviz DOT text, rendered to SVG or PNG by the `dot` program.

    text = to_dot(graph)                 # DOT source (needs nothing)
    write_picture(graph, "net.svg")      # .dot writes the text; .svg/.png/.pdf run `dot`

What the picture shows:
    inputs            grey ellipses, `name` and type
    forward nodes     blue boxes: `name = op`, type, the model line (`two_layer_net.py:61`)
    gradient nodes    orange boxes (nodes with a gate rule, made by the autodiff pass), with
                      the gate rule and `of <forward value>`; optimizer update nodes (a train
                      step) are green
    constants         small grey notes holding the value
    outputs           double border and `⇒ key` (the output's name)
    edges             value flow, producer → consumer (an operand used twice: two edges)
    fusion groups     dashed clusters (compiler/passes/fusion.py), when that analysis finds
                      groups of two or more elementwise nodes run as one loop
"""
from __future__ import annotations

import os
import shutil
import subprocess

from .ir import GradcError, Graph, Node
from .ops import OPS
from .passes.fusion import fusion_groups

FORWARD, GRADIENT, UPDATE, INPUT, CONST = "#cfe2f3", "#f9cb9c", "#d9ead3", "#eeeeee", "#f7f7f7"
FORMATS = ("svg", "png", "pdf")
_GRADIENT_PREFIXES = ("seed:", "fan-out:", "no path")


def _q(text: str) -> str:
    """A DOT string literal (newlines become DOT's centred line breaks)."""
    return '"' + str(text).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _kind(n: Node) -> str:
    """"forward", "gradient" (a gate rule made it) or "update" (an optimizer's rule did)."""
    if not n.rule:
        return "forward"
    if " gate: " in n.rule or n.rule.startswith(_GRADIENT_PREFIXES):
        return "gradient"
    return "update"


def to_dot(graph: Graph, *, fusion: bool = True, legend: bool = True) -> str:
    """The DOT text of `graph`: see the module docstring for what is drawn and how."""
    outputs: dict = {}
    for key, v in graph.outputs.items():
        outputs.setdefault(v.name, []).append(key)
    lines = [f"digraph {_q(graph.name)} {{",
             "  rankdir=TB;",
             '  node [fontname="Helvetica", fontsize=10, style="filled"];',
             '  edge [fontname="Helvetica", fontsize=9, color="#555555"];',
             f"  label={_q('graph ' + graph.name)}; labelloc=t; fontname=\"Helvetica\";"]

    def mark(name: str, label: str) -> tuple:
        keys = outputs.get(name)
        if not keys:
            return label, ""
        return label + "\n⇒ " + ", ".join(keys), ", peripheries=2"

    for v in graph.inputs:
        label, extra = mark(v.name, f"{v.name}\n{v.type}")
        lines.append(f"  {_q(v.name)} [shape=ellipse, fillcolor={_q(INPUT)}, "
                     f"label={_q(label)}{extra}];")
    for n in graph.nodes:
        name = n.out.name
        if getattr(OPS.get(n.op), "literal", False):
            label, extra = mark(name, f"{name} = {n.attrs.get('value')!r}")
            lines.append(f"  {_q(name)} [shape=note, fillcolor={_q(CONST)}, fontsize=9, "
                         f"label={_q(label)}{extra}];")
            continue
        kind = _kind(n)
        text = [f"{name} = {n.op}", str(n.out.type)]
        attrs = ", ".join(f"{k}={v}" for k, v in n.attrs.items())
        if attrs and len(attrs) <= 40:
            text[0] += f" {{{attrs}}}"
        if n.rule:
            text.append(n.rule + (f"  [of {n.of}]" if n.of else ""))
        if n.loc:
            text.append(n.loc)
        label, extra = mark(name, "\n".join(text))
        color = {"forward": FORWARD, "gradient": GRADIENT, "update": UPDATE}[kind]
        tooltip = f"{n.op} {dict(n.attrs)}" if n.attrs else n.op
        lines.append(f"  {_q(name)} [shape=box, fillcolor={_q(color)}, label={_q(label)}, "
                     f"tooltip={_q(tooltip)}{extra}];")
    for n in graph.nodes:
        for k, v in enumerate(n.inputs):
            ordered = len(n.inputs) > 1 and getattr(OPS.get(n.op), "ordered", False)
            attrs = f" [label={_q(k)}]" if ordered else ""
            lines.append(f"  {_q(v.name)} -> {_q(n.out.name)}{attrs};")
    if fusion and all(n.op in OPS for n in graph.nodes):    # (fusion reads the records)
        for k, grp in enumerate(fusion_groups(graph)):
            members = list(grp.nodes) + ([grp.reduction] if grp.reduction
                                         and grp.reduction not in grp.nodes else [])
            lines.append(f"  subgraph {_q(f'cluster_fusion_{k}')} {{")
            lines.append(f"    label={_q(f'fusion group {k}')}; style=dashed; color=\"#888888\";")
            lines.append("    " + " ".join(_q(m) + ";" for m in members))
            lines.append("  }")
    if legend:
        kinds = {_kind(n) for n in graph.nodes if not getattr(OPS.get(n.op), "literal", False)}
        entries = [("forward", FORWARD), ("gradient (gate rules)", GRADIENT),
                   ("optimizer update", UPDATE)]
        shown = [(t, c) for t, c in entries if t.split()[0] in kinds]
        if len(shown) > 1:
            lines.append('  subgraph "cluster_legend" {')
            lines.append('    label="legend"; style=solid; color="#cccccc";')
            for k, (text, color) in enumerate(shown):
                lines.append(f"    \"legend_{k}\" [shape=box, fillcolor={_q(color)}, "
                             f"label={_q(text)}];")
            lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def dot_program() -> str | None:
    """The path of Graphviz's `dot` program, or None when it is not installed."""
    return shutil.which("dot")


def render(dot_text: str, path: str, fmt: str | None = None) -> None:
    """Render DOT text to `path` (format from its extension: svg, png, pdf) with `dot`."""
    fmt = (fmt or os.path.splitext(str(path))[1].lstrip(".")).lower()
    if fmt not in FORMATS:
        raise GradcError(f"cannot render {path}: the picture formats are "
                         f"{', '.join('.' + f for f in FORMATS)} (or write .dot text)")
    exe = dot_program()
    if exe is None:
        raise GradcError(f"rendering {path} needs Graphviz's `dot` program, which is not "
                         "installed (apt-get install graphviz, brew install graphviz); write "
                         "a .dot file instead and render it with `dot -Tsvg net.dot -o net.svg`")
    done = subprocess.run([exe, f"-T{fmt}", "-o", str(path)], input=dot_text.encode("utf-8"),
                          capture_output=True, timeout=120)
    if done.returncode != 0:
        raise GradcError(f"dot failed on {path}: "
                         f"{done.stderr.decode('utf-8', 'replace').strip()}")


def write_picture(graph: Graph, path: str, **kw) -> str:
    """Write `graph` to `path`: DOT text for .dot/.gv, a rendered picture for .svg/.png/.pdf.
    Returns the DOT text."""
    text = to_dot(graph, **kw)
    ext = os.path.splitext(str(path))[1].lstrip(".").lower()
    if ext in ("dot", "gv"):
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        render(text, path, ext)
    return text


__all__ = ["to_dot", "render", "write_picture", "dot_program", "FORMATS"]
