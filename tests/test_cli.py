"""Issue 8: the `gradc` command line (frontends/cli.py) and docs/inspecting.md.

The real console script runs in a subprocess for the end-to-end checks (help, show, errors,
check); the rest calls `frontends.cli.main` in-process (the function the console script runs).
Oracles: the library's own answers computed here independently of the CLI (compiler.grad's
text form, compiler.optimize, compiler.train_step's source), golden text of the emitted code
for the lecture's circuit (checked by hand against the lecture's derivation), and a gate rule
broken on purpose for the failing check."""
import os
import re
import shutil
import subprocess
import sys
import textwrap

import pytest

import compiler
from compiler.ops import OPS, gate
from graphs import set_gate
from frontends import cli, dsl
from frontends.dsl import f64, i64

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LECTURE = "examples/lecture.py"
TWO_LAYER = "examples/two_layer_net.py"


def gradc_exe() -> list:
    """The installed console script, or the module it points at (same `main`)."""
    exe = shutil.which("gradc")
    return [exe] if exe else [sys.executable, "-m", "frontends.cli"]


def gradc(*args, cwd=ROOT):
    return subprocess.run(gradc_exe() + list(args), capture_output=True, text=True, cwd=cwd,
                          timeout=120)


def run(capsys, *args):
    """cli.main in-process from the repository root: (exit status, stdout, stderr)."""
    old = os.getcwd()
    os.chdir(ROOT)
    try:
        rc = cli.main(list(args))
    finally:
        os.chdir(old)
    out = capsys.readouterr()
    return rc, out.out, out.err


def function_body(source: str, name: str) -> str:
    """The statements of `def name(...)` after its docstring."""
    body = source.split(f"\ndef {name}(", 1)[1].split('"""', 2)[2]
    return textwrap.dedent(body.split("\n\n\n", 1)[0]).strip("\n")


# ---- the real console script -------------------------------------------------------------
def test_console_script_help_and_show_grad():
    from examples.lecture import neuron
    done = gradc("--help")
    assert done.returncode == 0, done.stderr
    for command in ("show", "emit", "check", "dot", "bench"):
        assert re.search(rf"^\s+{command}\s", done.stdout, re.M), done.stdout
    done = gradc("show", f"{LECTURE}:neuron", "--grad")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(compiler.grad(dsl.trace(neuron))).strip()


def test_console_script_user_mistake_is_one_line_and_exit_2():
    done = gradc("show", "no/such/model.py:f")
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.strip().splitlines() == ["gradc show: error: no such file: no/such/model.py"]
    assert "Traceback" not in done.stderr


def test_console_script_check_passes_on_the_lecture_neuron():
    done = gradc("check", f"{LECTURE}:neuron", "--points", "2")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "check_against_sympy: neuron" in done.stdout
    assert "check_finite_differences: neuron" in done.stdout
    assert done.stdout.count("  OK") == 2 and "FAIL" not in done.stdout


# ---- show ----------------------------------------------------------------------------------
def test_show_forward_and_shape_override(capsys):
    from examples.lecture import neuron
    rc, out, _ = run(capsys, "show", f"{LECTURE}:neuron")
    assert rc == 0 and out.strip() == str(dsl.trace(neuron)).strip()
    rc, out, _ = run(capsys, "show", f"{LECTURE}:neuron", "--shape", "w=4", "--shape",
                     "x=f64[3]")
    assert rc == 0
    assert out.splitlines()[0] == "graph neuron(w: f64[4], x: f64[3]) {"


def apply_unified_diff(lines: list, diff: list) -> list:
    """Apply a unified diff (the lines after ---/+++) to `lines`, checking every context and
    removed line."""
    out, i = [], 0
    for ln in diff:
        m = re.match(r"^@@ -(\d+)(?:,(\d+))? \+\d+(?:,\d+)? @@", ln)
        if m:
            start = int(m.group(1)) - (0 if m.group(2) == "0" else 1)
            out += lines[i:start]
            i = start
        elif ln.startswith((" ", "-")):
            assert lines[i] == ln[1:], (lines[i], ln)
            if ln.startswith(" "):
                out.append(lines[i])
            i += 1
        elif ln.startswith("+"):
            out.append(ln[1:])
    return out + lines[i:]


def test_show_passes_diffs_lead_to_the_optimized_graph(capsys):
    """The printed stages are the pipeline's: applying each diff to the previous text gives
    the next, and the last is compiler.optimize's graph, which is also printed at the end."""
    from examples.lecture import neuron
    dg = compiler.grad(dsl.trace(neuron))
    rc, out, _ = run(capsys, "show", f"{LECTURE}:neuron", "--grad", "--passes")
    assert rc == 0
    final = str(compiler.optimize(dg)).strip()
    assert out.rstrip().endswith(final)
    text = str(dg).strip().splitlines()
    stages = re.split(r"^== round \d+, pass (\w+): \d+ -> \d+ nodes$", out, flags=re.M)
    assert len(stages) > 1, out
    for name, chunk in zip(stages[1::2], stages[2::2]):
        assert name in compiler.passes.PASSES
        diff = chunk.split("\n== ")[0].strip("\n").splitlines()
        assert diff[0] == f"--- before {name}" and diff[1] == f"+++ after {name}"
        text = apply_unified_diff(text, diff[2:])
    assert "\n".join(text) == final


# ---- emit ----------------------------------------------------------------------------------
GOLDEN_ADD_MUL_NO_PASSES = """\
q = x + y  # lecture.py:25
f = q * z  # lecture.py:26
dq = 1.0 * z  # mul gate: dA = G·B [of f]  (lecture.py:26)
dz = 1.0 * q  # mul gate: dB = G·A [of f]  (lecture.py:26)
return {'out': f, 'dx': dq, 'dy': dq, 'dz': dz}"""

GOLDEN_NEURON = """\
t0 = w[0]  # lecture.py:32
t1 = x[0]  # lecture.py:32
t3 = w[1]  # lecture.py:32
t4 = x[1]  # lecture.py:32
dot = t0 * t1 + t3 * t4 + w[2]  # lecture.py:32
f = sigmoid(dot)  # lecture.py:33
ddot = f * (1.0 - f)  # sigmoid gate: dx = G·σ(x)(1−σ(x)) [of f]  (lecture.py:33)"""


def test_emit_golden_lecture_circuit_without_passes(capsys):
    """f = (x+y)·z: the add gate passes dq to dx and dy unchanged; the mul gate swaps."""
    rc, out, _ = run(capsys, "emit", f"{LECTURE}:add_mul", "-O", "none")
    assert rc == 0
    assert function_body(out, "add_mul") == GOLDEN_ADD_MUL_NO_PASSES
    assert re.findall(r"^\s*(?:import|from)\s+(\w+)", out, re.M) == ["numpy"]


def test_emit_golden_sigmoid_neuron_default_pipeline(capsys):
    """The neuron's forward lines and the sigmoid gate line (one statement per gate, the
    model's names `dot`, `f`, `ddot`), then one getitem/mul gate line per use of w and x."""
    rc, out, _ = run(capsys, "emit", f"{LECTURE}:neuron")
    assert rc == 0
    body = function_body(out, "neuron")
    assert body.startswith(GOLDEN_NEURON), body
    for line in body.splitlines():
        if " = " in line and not line.startswith(("dw_1[", "dx_1[", "dw_2[", "dx_2[",
                                                   "dw_3[", "return")) and "[" not in \
                line.split(" = ")[0]:
            assert re.search(r"#.*lecture\.py:3[23]\)?$", line), line
    assert re.search(r"^dw = dw_1 \+ dw_2 \+ dw_3  # fan-out: .* \[of w\]", body, re.M)


def test_emit_train_step_is_compiler_train_step(capsys):
    """--train-step adam --data X builds the graph compiler.train_step builds: W1, b1, W2,
    b2 are the parameters, X and y the data; the kernel source is identical."""
    from examples.two_layer_net import init_params, loss
    step = compiler.train_step(loss, params=init_params(0), inputs={"X": f64[300, 2],
                               "y": i64[300]}, optimizer=compiler.optim.Adam())
    rc, out, _ = run(capsys, "emit", f"{TWO_LAYER}:loss", "--data", "X", "--train-step",
                     "adam", "--kernel")
    assert rc == 0
    assert out == step.source


def test_emit_llvm_ir_and_asm(capsys, tmp_path):
    rc, out, _ = run(capsys, "emit", f"{LECTURE}:neuron", "--backend", "llvm")
    # the graph's function returns its status: 0, or 1 + the label check that failed
    assert rc == 0 and re.search(r"^define i64 @", out, re.M) and "sigmoid gate" in out
    path = tmp_path / "neuron.s"
    rc, out, _ = run(capsys, "emit", f"{LECTURE}:neuron", "--backend", "llvm", "--asm",
                     "-o", str(path))
    assert rc == 0 and out.startswith(f"wrote {path}")
    assert re.search(r"^\s+\.(text|section|file)\b", path.read_text(), re.M)


def test_emit_forward_only_for_non_scalar_output(capsys):
    """`scores` returns a matrix: emit gives its forward function (no gradient outputs)."""
    rc, out, _ = run(capsys, "emit", f"{TWO_LAYER}:scores")
    assert rc == 0
    assert re.search(r"^def scores\(W1, b1, W2, b2, X\):", out, re.M)
    assert "Returns (dict keys):\n    out: float64 (300, 3)\n\n" in out


# ---- check ---------------------------------------------------------------------------------
def test_check_exits_1_on_a_wrong_gate_rule(capsys, monkeypatch):
    """mul's dB rule with its sign flipped: both checks must fail and the exit status is 1."""
    set_gate(monkeypatch, "mul", gate("dA = G·B", lambda g, out, a, b: g * b,
                                                "dB = G·A", lambda g, out, a, b: -(g * a)))
    rc, out, _ = run(capsys, "check", f"{LECTURE}:neuron", "--points", "1")
    assert rc == 1
    assert out.count("  FAILED") == 2, out


# ---- bench ---------------------------------------------------------------------------------
def test_bench_reports_both_backends(capsys):
    rc, out, _ = run(capsys, "bench", f"{LECTURE}:neuron", "--backend", "numpy,llvm",
                     "--repeat", "5")
    assert rc == 0
    rows = {ln.split()[0]: ln.split() for ln in out.splitlines()[3:]}
    assert set(rows) == {"numpy", "llvm"}
    for r in rows.values():                # compile, median, min: "<number> <unit>" each
        assert re.fullmatch(r"(\S+ (ns|µs|ms|s) ?){3}", " ".join(r[1:])), r
    assert "neuron and its gradient with respect to w, x" in out


# ---- user mistakes -------------------------------------------------------------------------
MODEL = """\
from frontends import dsl
from frontends.dsl import f64

def plain(w, x):
    return dsl.sum(w * x)

def broken(w: f64[3]):
    return dsl.sum(w * undefined_name)

def ok(w: f64[3]):
    return dsl.sum(w * w)
"""


@pytest.mark.parametrize("args, message", [
    (["show", "examples/lecture.py"], "name the function too, as FILE:FUNC"),
    (["show", "examples/lecture.py:nueron"], "has no function 'nueron'; did you mean 'neuron'?"),
    (["show", "examples"], "name the function too"),
    (["show", "examples:neuron"], "examples is a directory"),
    (["show", "examples/lecture.py:neuron", "--shape", "w=f64[3,x]"], "bad shape 'f64[3,x]'"),
    (["show", "examples/lecture.py:neuron", "--shape", "w"], "bad --shape 'w'"),
    (["show", "examples/lecture.py:neuron", "--shape", "q=3"], "has no parameter 'q'"),
    (["show", "examples/two_layer_net.py:loss", "--shape", "X=64,2"], "labels must be i64[64]"),
    (["show", "examples/lecture.py:neuron", "--wrt", "y"], "--wrt y: not a float input"),
    (["show", "examples/lecture.py:neuron", "-O", "nope"], "unknown pass 'nope'"),
    (["emit", "examples/lecture.py:neuron", "--asm"], "--asm is for --backend llvm"),
    (["bench", "examples/lecture.py:neuron", "--backend", "cuda"], "--backend cuda"),
    (["dot", "examples/lecture.py:neuron", "-o", "net.jpg"], "picture formats are"),
    (["show", "MODEL:plain"], "parameter 'w' of plain has no spec"),
    (["show", "MODEL:broken"], "NameError: name 'undefined_name' is not defined (model.py:8)"),
    (["show", "MODEL:ok", "--data", "z"], "--data z: ok has no input 'z'"),
])
def test_user_mistakes_are_one_line_exit_2(capsys, tmp_path, args, message):
    (tmp_path / "model.py").write_text(MODEL)
    args = [a.replace("MODEL", str(tmp_path / "model.py")) for a in args]
    rc, out, err = run(capsys, *args)
    assert rc == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"gradc {args[0]}: error: "), err
    assert message in lines[0], lines[0]


def test_debug_shows_the_traceback(capsys):
    rc, _, err = run(capsys, "show", "examples/lecture.py:neuron", "--shape", "q=3", "--debug")
    assert rc == 2 and "Traceback" in err and err.strip().endswith("(its parameters: w, x)")


def test_parse_spec_forms():
    T = compiler.TensorType
    assert cli.parse_spec("f64[64,2]") == T("f64", (64, 2))
    assert cli.parse_spec("64, 2", "i64") == T("i64", (64, 2))
    assert cli.parse_spec("[3]") == T("f64", (3,))
    assert cli.parse_spec("f32[]") == T("f32", ())
    assert cli.parse_spec("f64[()]") == T("f64", ())
    assert cli.parse_spec("i64[7]", "f64") == T("i64", (7,))
    for bad in ("f16[3]", "3x2", "f64[3,-1]", "abc"):
        with pytest.raises(cli.CliError, match="bad shape"):
            cli.parse_spec(bad)


# ---- the generated page ----------------------------------------------------------------------
def test_docs_inspecting_is_up_to_date(capsys):
    """docs/inspecting.md holds the real output of the commands: regenerating it gives the
    same page (timings and last-digit rounding masked)."""
    sys.path.insert(0, os.path.join(ROOT, "docs"))
    try:
        import make_inspecting
    finally:
        sys.path.remove(os.path.join(ROOT, "docs"))
    old = os.getcwd()
    try:
        rc = make_inspecting.main(["--check"])
    finally:
        os.chdir(old)
    assert rc == 0, capsys.readouterr().out + "\nrun: python docs/make_inspecting.py"
