"""Issue 8: graph pictures (compiler/dot.py, `gradc dot`).

The DOT text is parsed back here (node statements, edges, clusters) and compared with the
graph it came from: every value is a node, every operand an edge, gradient nodes (those with a
gate rule) and forward nodes get their colours, outputs their double border, fusion groups
(compiler/passes/fusion.py) their clusters.  Rendering runs Graphviz's `dot` only when it is
installed (those tests are skipped otherwise); without it the error must say so."""
import os
import re

import pytest

import compiler
from compiler import dot as D
from compiler.ir import GradcError
from frontends import cli, dsl

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NODE = re.compile(r'^\s+"([^"]+)" \[(.*)\];$', re.M)
EDGE = re.compile(r'^\s+"([^"]+)" -> "([^"]+)"', re.M)
needs_dot = pytest.mark.skipif(D.dot_program() is None, reason="Graphviz `dot` not installed")


def neuron_grad():
    from examples.lecture import neuron
    return compiler.grad(dsl.trace(neuron))


def attrs(text: str) -> dict:
    return dict(re.findall(r'(\w+)=("(?:[^"\\]|\\.)*"|[^,\s]+)', text))


def test_every_value_is_a_node_and_every_operand_an_edge():
    g = neuron_grad()
    text = D.to_dot(g, legend=False)
    nodes = {name: attrs(a) for name, a in NODE.findall(text)}
    assert set(nodes) == {v.name for v in g.inputs} | {n.out.name for n in g.nodes}
    edges = EDGE.findall(text)
    assert sorted(edges) == sorted((v.name, n.out.name) for n in g.nodes for v in n.inputs)
    assert text.startswith('digraph "neuron" {') and text.rstrip().endswith("}")


def test_forward_and_gradient_nodes_are_coloured_apart():
    g = neuron_grad()
    nodes = {name: attrs(a) for name, a in NODE.findall(D.to_dot(g))}
    for n in g.nodes:
        if n.op == "const":
            assert nodes[n.out.name]["shape"] == "note"
            continue
        want = D.GRADIENT if n.rule else D.FORWARD
        assert nodes[n.out.name]["fillcolor"] == f'"{want}"', n
        if n.rule:
            assert n.rule.replace("\\", "\\\\") in nodes[n.out.name]["label"]
    for key, v in g.outputs.items():
        assert nodes[v.name].get("peripheries") == "2"
        assert key in nodes[v.name]["label"].split("⇒ ")[1].rstrip('"').split(", ")
    assert nodes["legend_0"] and nodes["legend_1"]     # forward and gradient, both present


def test_train_step_update_nodes_are_green():
    from compiler.optim import SGD, append_update
    from frontends.dsl import f64
    g = dsl.trace(lambda w, x: dsl.sum((w * x) ** 2), w=f64[3], x=f64[3])
    dg = compiler.grad(g, wrt=["w"])
    append_update(dg, ["w"], SGD(lr=0.1))
    nodes = {name: attrs(a) for name, a in NODE.findall(D.to_dot(dg))}
    update = [n for n in dg.nodes if n.rule and n.rule.startswith("SGD")]
    assert update
    for n in update:
        assert nodes[n.out.name]["fillcolor"] == f'"{D.UPDATE}"'


def test_fusion_groups_are_clusters():
    fusion = pytest.importorskip("compiler.passes.fusion")
    from examples.two_layer_net import loss
    g = compiler.optimize(compiler.grad(dsl.trace(loss)))
    groups = fusion.fusion_groups(g)
    assert groups, "the two-layer net's gradient has elementwise chains"
    text = D.to_dot(g)
    clusters = re.findall(r'subgraph "cluster_fusion_(\d+)" \{\n.*\n    (.*)\n  \}', text)
    assert len(clusters) == len(groups)
    for (k, members), grp in zip(clusters, groups):
        want = list(grp.nodes) + ([grp.reduction] if grp.reduction and grp.reduction
                                  not in grp.nodes else [])
        assert re.findall(r'"([^"]+)";', members) == want
    assert "cluster_fusion" not in D.to_dot(g, fusion=False)


def test_quoting_survives_odd_text():
    assert D._q('a "b" \\ c\nd') == '"a \\"b\\" \\\\ c\\nd"'


def test_missing_dot_program_gives_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(D.shutil, "which", lambda name: None)
    with pytest.raises(GradcError, match=r"needs Graphviz's `dot` program, which is not "
                                         r"installed.*write a \.dot file"):
        D.write_picture(neuron_grad(), str(tmp_path / "net.svg"))
    D.write_picture(neuron_grad(), str(tmp_path / "net.dot"))     # text needs nothing
    assert (tmp_path / "net.dot").read_text().startswith("digraph")


@needs_dot
def test_cli_renders_svg_and_the_text_is_valid_dot(tmp_path, capsys):
    out = tmp_path / "net.svg"
    old = os.getcwd()
    os.chdir(ROOT)
    try:
        rc = cli.main(["dot", "examples/two_layer_net.py:loss", "--grad", "-O", "default",
                       "-o", str(out)])
    finally:
        os.chdir(old)
    assert rc == 0 and f"wrote {out}" in capsys.readouterr().out
    svg = out.read_text()
    assert "<svg" in svg and "dW1 = add" in svg and "fusion group 0" in svg


def test_cli_writes_dot_text(tmp_path, capsys):
    out = tmp_path / "net.dot"
    old = os.getcwd()
    os.chdir(ROOT)
    try:
        rc = cli.main(["dot", "examples/lecture.py:neuron", "-o", str(out)])
    finally:
        os.chdir(old)
    assert rc == 0
    from examples.lecture import neuron
    assert out.read_text() == D.to_dot(dsl.trace(neuron))
