"""Issue 15 part 1: IR text, names and locations never become code.

Hostile text (a model's names, locations, gate rule texts, output keys, the graph's name, IR
read by `compiler.parse_graph`) goes into generated NumPy modules, `gradc emit` files and LLVM
IR.  Each test plants payloads that would leave a mark if any of it ran as code (a builtins
attribute, a file, an LLVM global) and checks that no mark appears, that the generated code
still parses as one statement/comment per line, and that the numbers equal the reference
interpreter's (the independent oracle).  docs/security.md points here.
"""
import ast
import builtins
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import compiler
from compiler.export import export_module
from frontends import dsl
from frontends.dsl import f64
from compiler.ir import Graph, Node, TensorType, Value
from compiler.ops.attrs import AttrError

MARK = "_gradc_injected_mark"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# text that would run if it reached code unquoted: from a docstring, a string, a comment line
PAYLOADS = [
    f'"""+str(setattr(__import__("builtins"), "{MARK}", 1))+"""',
    f"'''+str(setattr(__import__('builtins'), '{MARK}', 1))+'''",
    f'"+str(setattr(__import__("builtins"), "{MARK}", 1))+"',
    f'\nsetattr(__import__("builtins"), "{MARK}", 1)\n',
    f'\rsetattr(__import__("builtins"), "{MARK}", 1)\r',
    f'\u2028setattr(__import__("builtins"), "{MARK}", 1)#',
    '\r@gradc_injected = global i64 7 ;',
    '\n@gradc_injected = global i64 7 ;',
]
# line breaks of every kind Python's str.splitlines knows, quotes, escapes, keywords, unicode
PIECES = ['"""', "'''", '"', "'", "\\", "\\n", "\n", "\r", "\r\n", "\x0b", "\x0c", "\x1c", "\x1d",
          "\x1e", "\x85", "\u2028", "\u2029", "\x00", "#", "%", "@", ";", "{", "}", "(", ")",
          "if", "None", "True", "np", "sum", "_b0", "_buf", "é", "x²", "ｘ", " ", "h",
          "dW1", "sigmoid", "inf"]
TEXT = st.lists(st.sampled_from(PIECES + PAYLOADS) | st.text(max_size=3), max_size=6).map("".join)


@pytest.fixture(autouse=True)
def _no_mark():
    yield
    assert not hasattr(builtins, MARK), "generated code ran injected text"


def _graph(name, names, keys, locs, rules, ops, alpha) -> Graph:
    """a, b: f64[3] -> op1 -> op2 -> sum, every name and text chosen by the caller."""
    t3, t0 = TensorType("f64", (3,)), TensorType("f64", ())
    a, b = Value(names[0], t3), Value(names[1], t3)
    g = Graph(name, [a, b])
    v1 = Value(names[2], t3)
    attrs = {"alpha": alpha} if ops[0] == "leaky_relu" else {}
    ins = (a,) if ops[0] in ("exp", "tanh", "leaky_relu") else (a, b)
    g.nodes.append(Node(ops[0], ins, attrs, v1, locs[0], rules[0], names[0]))
    v2 = Value(names[3], t3)
    g.nodes.append(Node(ops[1], (v1, b), {}, v2, locs[1], None, None))
    v3 = Value(names[4], t0)
    g.nodes.append(Node("sum", (v2,), {"axes": (0,), "keepdims": False}, v3, locs[2], rules[1],
                        names[3]))
    g.outputs[keys[0]] = v3
    g.outputs[keys[1]] = v1
    return compiler.verify(g)


def _inputs(g):
    rng = np.random.default_rng(0)
    return {v.name: rng.uniform(-1, 1, v.shape) for v in g.inputs}


def _one_line_each(source: str) -> None:
    """No character the generated code holds starts a line that its author did not mean:
    str.splitlines (which breaks at \\x0b, \\x85, \\u2028, ...) sees exactly the '\\n' lines."""
    assert source.splitlines() == source.split("\n")[:-1 if source.endswith("\n") else None]
    assert "\x00" not in source


def _check_all_backends(g) -> None:
    args = _inputs(g)
    want = compiler.interpret(g, args)
    for passes in (None, []):                     # memory-planned and plain NumPy modules
        fn = compiler.compile(g, backend="numpy", passes=passes)
        ast.parse(fn.source)
        _one_line_each(fn.source)
        got = fn(**args)
        for k in want:
            np.testing.assert_allclose(got[k], want[k], rtol=1e-12, atol=1e-12)
    fn = compiler.compile(g, backend="llvm")
    _one_line_each(fn.source)
    assert "gradc_injected" not in _llvm_globals(fn.source)
    got = fn(**args)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-12, atol=1e-12)
    source = export_module(g, origin=g.name, what=g.name)
    _one_line_each(source)
    namespace = {"__name__": "exported"}
    exec(compile(source, "<exported>", "exec"), namespace)
    entry = namespace.get("__all__", [None])[0] or _entry(source)
    got = namespace[entry](*[args[v.name] for v in g.inputs])
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-12, atol=1e-12)
    example = namespace["example_inputs"]()         # what its __main__ block runs
    assert list(example) == list(namespace["INPUTS"])
    namespace[entry](**example)


def _entry(source: str) -> str:
    return next(n.name for n in ast.parse(source).body if isinstance(n, ast.FunctionDef)
                and n.name not in ("example_inputs",) and not n.name.startswith("_")
                and n.name in source.split("result = ", 1)[1])


def _llvm_globals(text: str) -> set:
    import llvmlite.binding as llvm
    mod = llvm.parse_assembly(text)
    return {f.name for f in mod.functions} | {v.name for v in mod.global_variables}


@settings(max_examples=30)
@given(name=TEXT, names=st.lists(TEXT, min_size=5, max_size=5, unique=True),
       keys=st.lists(TEXT, min_size=2, max_size=2, unique=True),
       locs=st.lists(st.none() | TEXT, min_size=3, max_size=3),
       rules=st.lists(st.none() | TEXT, min_size=2, max_size=2),
       ops=st.tuples(st.sampled_from(["exp", "tanh", "leaky_relu", "mul", "add"]),
                     st.sampled_from(["mul", "add", "sub"])),
       alpha=st.floats(-2, 2))
def test_hostile_names_locations_and_rules_never_run(name, names, keys, locs, rules, ops, alpha):
    g = _graph(name, names, keys, locs, rules, ops, alpha)
    _check_all_backends(g)
    _check_all_backends(compiler.grad(g, of=keys[0]))   # gradient names d<name>, rule texts


ATTR_OPS = {"leaky_relu": ["alpha"], "elu": ["alpha"], "sum": ["axes", "keepdims"],
            "softmax": ["axis"], "transpose": ["perm"], "reshape": ["shape"], "exp": [],
            "cast": ["dtype"], "broadcast_to": ["shape"]}
ATTR_VALUE = st.one_of(st.integers(-3, 3), st.integers(), st.floats(), st.booleans(), st.none(),
                       TEXT, st.sampled_from(["f64", "f32", "i64"]),
                       st.lists(st.integers(-1, 3) | TEXT, max_size=3).map(tuple),
                       st.builds(lambda: _Evil()))


@settings(max_examples=60)
@given(op=st.sampled_from(sorted(ATTR_OPS)), data=st.data())
def test_hostile_attributes_are_refused_or_computed_exactly(op, data):
    """Any attribute dict on an op (its own names with values of every kind, unknown names,
    payload text, objects whose repr is code): compiling refuses it with a GradcError before
    any code is generated, or both backends compute the interpreter's numbers."""
    names = st.sampled_from(ATTR_OPS[op]) | TEXT if ATTR_OPS[op] else TEXT
    attrs = data.draw(st.dictionaries(names, ATTR_VALUE, max_size=3))
    t = TensorType("f64", (3,))
    x, y = Value("x", t), Value("y", t)
    g = Graph("f", [x], [Node(op, (x,), attrs, y)], {"out": y})
    try:
        compiler.verify(g)
    except compiler.GradcError:
        for backend in ("numpy", "llvm"):
            with pytest.raises(compiler.GradcError):
                compiler.compile(g, backend=backend)
        return
    _check_all_backends(g)


def test_docstring_payload_from_parsed_text_does_not_run(tmp_path):
    """The issue's reproduction: a location that closes the IR docstring."""
    marker = tmp_path / "PWNED"
    loc = f'"""+str(__import__("os").system("touch {marker}"))+"""'
    g = compiler.parse_graph(f"graph f(x: f64[2]) {{\n  y: f64[2] = exp(x)  @ {loc}\n"
                             "  return out=y\n}")
    assert g.nodes[0].loc == loc
    _check_all_backends(g)
    assert not marker.exists()
    assert loc.replace('"', '\\"') in compiler.compile(g).source     # shown, quoted


@pytest.mark.parametrize("loc", [r"C:\Users\me\model.py:3", "model.py:3\\", "\\N{x}", "\\u12"])
def test_backslashes_in_locations_compile(loc):
    g = compiler.parse_graph(f"graph f(x: f64[2]) {{\n  y: f64[2] = exp(x)  @ {loc}\n"
                             "  return out=y\n}")
    _check_all_backends(g)
    assert f"# {loc}" in compiler.compile(g, passes=[]).source     # the comment reads as given


@pytest.mark.parametrize("name", ["if", "None", "True", "class", "lambda", "np", "sum", "_b0",
                                  "_buf", "match", "print", "sigmoid", "f"])
def test_values_named_like_keywords_builtins_and_emitted_names(name):
    text = (f"graph f(x: f64[3]) {{\n  {name}: f64[3] = sigmoid(x)\n"
            f"  z: f64[3] = mul({name}, x)\n  s: f64[] = sum(z) {{axes=(0,), keepdims=False}}\n"
            "  return out=s\n}")
    g = compiler.parse_graph(text)
    _check_all_backends(g)
    _check_all_backends(compiler.grad(g))


def test_values_named_like_the_planned_buffers():
    """The memory-planned module names its buffers `_b0, _b1, ...` and takes `_buf`: values of
    those names (large enough to get buffers) must not overwrite them."""
    n = 1 << 14
    text = (f"graph f(_buf: f64[{n}], _b1: f64[{n}]) {{\n  _b0: f64[{n}] = exp(_buf)\n"
            f"  _b2: f64[{n}] = mul(_b0, _b1)\n  _b3: f64[{n}] = tanh(_b2)\n"
            f"  s: f64[] = sum(_b3) {{axes=(0,), keepdims=False}}\n  return out=s, h=_b2\n}}")
    g = compiler.parse_graph(text)
    assert "out=_b" in compiler.compile(g).source      # it is the planned module
    _check_all_backends(g)
    _check_all_backends(compiler.grad(g, of="out"))


@pytest.mark.parametrize("backend", ["numpy", "llvm"])
@pytest.mark.parametrize("rows", [5, 5000])          # 5000: the memory-planned module
def test_train_step_parameters_named_like_emitted_names(backend, rows):
    """Parameters named `_buf` (the planned module's keyword), `sum` (a builtin) and `np_`
    train as any others: the losses and updates of two SGD steps equal a NumPy derivation."""
    def loss(np_, sum, _buf, X):                   # noqa: A002 (the point of the test)
        h = dsl.tanh(X @ np_ + sum)
        return dsl.sum(h * h * _buf)
    rng = np.random.default_rng(0)
    params = {"np_": rng.standard_normal((3, 2)), "sum": rng.standard_normal(2),
              "_buf": rng.standard_normal(2)}
    ref = {k: v.copy() for k, v in params.items()}
    step = compiler.train_step(loss, params=params, inputs={"X": f64[rows, 3]},
                               optimizer=compiler.optim.SGD(lr=0.01), backend=backend)
    X = rng.standard_normal((rows, 3))
    for _ in range(2):
        got = step(X=X)
        h = np.tanh(X @ ref["np_"] + ref["sum"])
        dh = 2 * h * (1 - h * h) * ref["_buf"]
        np.testing.assert_allclose(got, (h * h * ref["_buf"]).sum(), rtol=1e-10)
        ref = {"np_": ref["np_"] - 0.01 * (X.T @ dh), "sum": ref["sum"] - 0.01 * dh.sum(0),
               "_buf": ref["_buf"] - 0.01 * (h * h).sum(0)}
        for k in ref:
            np.testing.assert_allclose(step.params[k], ref[k], rtol=1e-10, atol=1e-12)


def test_readable_names_are_kept():
    g = compiler.parse_graph("graph net(X: f64[4, 3], W1: f64[3, 2]) {\n"
                             "  h: f64[4, 2] = matmul(X, W1)\n"
                             "  s: f64[] = sum(h) {axes=(0, 1), keepdims=False}\n"
                             "  return out=s\n}")
    src = compiler.compile(compiler.grad(g, wrt=["W1"]), passes=[]).source
    assert "def net(X, W1):" in src and "dW1 = " in src and "h = " in src


@pytest.mark.parametrize("tail", ["\n", "\r", "\u2028", " "])
def test_names_with_a_trailing_line_break(tail):
    """`re.match("^[A-Za-z_]\\w*$", "A\\n")` matches (`$` matches before a final newline): a
    name 'A\\n' once passed as an identifier and split the function's signature."""
    _check_all_backends(_graph("g" + tail, ["A" + tail, "B" + tail, "h" + tail, "s" + tail,
                                            "t0" + tail], ["out" + tail, "h" + tail],
                               [None] * 3, [None] * 2, ("exp", "mul"), 0.0))


def test_llvm_comments_and_names_cannot_inject_ir():
    """A name or location with '\\r' (LLVM's lexer ends a comment there, Python's does too)
    would put `@gradc_injected` into the module as a top-level definition."""
    t = TensorType("f64", (2,))
    x = Value("x\r@gradc_injected = global i64 7 ;", t)
    y = Value("y", t)
    g = Graph("g\n@gradc_injected_2 = global i64 7 ;", [x])
    g.nodes.append(Node("exp", (x,), {}, y, "m.py:1\r@gradc_injected_3 = global i64 7 ;"))
    g.outputs["out"] = y
    fn = compiler.compile(g, backend="llvm")
    assert not {"gradc_injected", "gradc_injected_2", "gradc_injected_3"} & _llvm_globals(
        fn.source)
    _one_line_each(fn.source)
    np.testing.assert_allclose(fn(**{x.name: np.array([0.0, 1.0])})["out"], np.exp([0.0, 1.0]))


def test_gradc_emit_file_named_with_a_payload(tmp_path):
    """`gradc emit` of a model whose file name (the locations' text) closes a docstring, then
    the emitted module run as a script: nothing but the graph runs."""
    folder = tmp_path / "models"
    folder.mkdir()
    model = folder / '''m"""+str(__import__("pathlib").Path("PWNED").touch())+"""\\n.py'''
    model.write_text("from frontends import dsl\n\n\ndef f(x):\n    h = dsl.tanh(x)\n"
                     "    return dsl.sum(h * x)\n")
    out = tmp_path / "emitted.py"
    env = dict(os.environ, PYTHONPATH=ROOT)
    run = subprocess.run([sys.executable, "-m", "frontends.cli", "emit", f"{model}:f",
                          "--shape", "x=f64[3]", "-o", str(out)], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    text = out.read_text(encoding="utf-8")
    ast.parse(text)
    run = subprocess.run([sys.executable, str(out)], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert not (tmp_path / "PWNED").exists()
    assert "h = np.tanh(x)" in text


# ---- the parser: hostile text is a ParseError, attributes are the op's ------------------
def _attr_graph(op: str, attrs: str) -> str:
    return f"graph f(x: f64[2]) {{\n  y: f64[2] = {op}(x) {attrs}\n  return out=y\n}}"


@pytest.mark.parametrize("attrs", ["{alpha=" + "-" * 100000 + "1}", "{alpha=" + "-" * 900 + "1}",
                                   "{alpha=" + "(" * 5000 + "1" + ")" * 5000 + "}",
                                   "{alpha=" + "[" * 100 + "]" * 100 + "}",
                                   "{alpha=1.0\x00}", "{alpha=" + "9" * 100000 + "}",
                                   "{alpha=__import__('os')}", "{alpha=1.0, alpha=2.0}",
                                   "{alpha=f'{1}'}", "{**{'alpha': 1}}"])
def test_hostile_attribute_text_is_a_parse_error(attrs):
    with pytest.raises(compiler.ParseError) as e:
        compiler.parse_graph(_attr_graph("leaky_relu", attrs))
    assert e.value.line == 2


@pytest.mark.parametrize("op,attrs,word", [
    ("exp", "{alpha=1.0}", "unknown attribute 'alpha'"),
    ("leaky_relu", "{alpha='x'}", "alpha='x' must be a finite real"),
    ("leaky_relu", "{alpha=inf}", "must be a finite real"),
    ("leaky_relu", "{alpha=True}", "must be a finite real"),
    ("leaky_relu", "{}", None),
    ("leaky_relu", "{beta=1.0}", "unknown attribute 'beta'"),
    ("sum", "{axes=('0',), keepdims=False}", "axes=('0',) must be a tuple of integers"),
    ("sum", "{axes=(0,), keepdims=1}", "keepdims=1 must be a bool"),
    ("cast", "{dtype='f64; import os'}", "must be a dtype name"),
])
def test_attributes_are_checked_against_the_op(op, attrs, word):
    with pytest.raises(compiler.ParseError) as e:
        compiler.parse_graph(_attr_graph(op, attrs))
    assert e.value.line == 2
    if word:
        assert word in str(e.value)


class _Evil:
    """An attribute whose repr is code: an emitter writing attributes with repr would run it."""

    def __repr__(self):
        return f'__import__("builtins").__setattr__("{MARK}", 1) or 0.5'


@pytest.mark.parametrize("backend", ["numpy", "llvm"])
def test_attribute_objects_are_refused_before_any_emitter(backend):
    t = TensorType("f64", (2,))
    x, y = Value("x", t), Value("y", t)
    g = Graph("f", [x], [Node("leaky_relu", (x,), {"alpha": _Evil()}, y)], {"out": y})
    with pytest.raises(AttrError, match="alpha=<_Evil object> must be a finite real number"):
        compiler.compile(g, backend=backend)
    g.nodes[0].attrs = {"alpha": 0.5, "code": "import os"}
    with pytest.raises(AttrError, match="unknown attribute 'code'"):
        compiler.compile(g, backend=backend)


def test_a_value_named_inf_is_not_an_attribute():
    """`alpha=inf` is refused, so `np.where(x > 0, x, inf * x)` can never read a value `inf`."""
    t = TensorType("f64", (2,))
    x, inf, y = Value("x", t), Value("inf", t), Value("y", t)
    g = Graph("f", [x], [Node("exp", (x,), {}, inf),
                         Node("leaky_relu", (inf,), {"alpha": float("inf")}, y)], {"out": y})
    with pytest.raises(AttrError):
        compiler.compile(g)


def test_non_string_names_and_keys_are_refused():
    t = TensorType("f64", (2,))
    x, y = Value("x", t), Value("y", t)
    g = Graph("f", [x], [Node("exp", (x,), {}, y)], {3: y})
    with pytest.raises(compiler.ShapeError, match="output key 3 is not a string"):
        compiler.compile(g)
    g.outputs = {"out\ud800": y}
    with pytest.raises(compiler.ShapeError, match="not valid Unicode"):
        compiler.compile(g)


def test_declared_attributes_match_the_shape_rules():
    """OPS[op].attrs names exactly the attributes an op's shape rule takes (required where the rule
    has no default), for every op whose rule lists them; the others declare theirs by hand
    (leaky_relu, elu: alpha; svm_loss: margin) and the hypothesis test above exercises them."""
    import inspect
    from compiler.ops import OPS
    checked = 0
    for op, rule in ((op, rec.shape) for op, rec in OPS.items()):
        params = list(inspect.signature(rule).parameters.values())[1:]
        if any(p.kind == p.VAR_KEYWORD for p in params):
            continue
        want = {p.name: p.default is p.empty for p in params}
        assert {k: kind.required for k, kind in OPS[op].attrs.items()} == want, op
        checked += 1
    assert checked >= 20


def test_sympy_trace_refuses_strings(tmp_path):
    """sympy.sympify("...") runs Python; the SymPy frontend must never hand it a string."""
    import sympy as sp
    from frontends import sympy as sympy_frontend
    from frontends.dsl import f64
    x = sp.Symbol("x", real=True)
    marker = tmp_path / "ran"
    payload = f"__import__('pathlib').Path({str(marker)!r}).touch() or x"
    for expr in (payload, [x, payload], {"out": payload}):
        with pytest.raises(compiler.UnsupportedError, match="pass a SymPy expression"):
            sympy_frontend.trace(expr, {x: f64[()]})
    assert not marker.exists()

    class Sneaky:                      # an object whose str() is code is not parsed either
        def __str__(self):
            return payload
    with pytest.raises(compiler.UnsupportedError, match="SymPy expressions or numbers"):
        sympy_frontend.trace(Sneaky(), {x: f64[()]})
    assert not marker.exists()
    g = sympy_frontend.trace(x ** 2 + 1, {x: f64[()]})      # expressions and numbers still work
    assert compiler.interpret(g, x=np.float64(3.0))["out"] == 10.0
