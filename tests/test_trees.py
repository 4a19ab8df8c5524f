"""Parameter trees (issue 18.1, compiler/trees.py): specs and arguments as nested dicts, lists and
tuples; leaves named by their paths; the text form keeps the structure; compiled functions take
and return trees; gradients by tree or path.  Oracles: the same model written with flat
arguments, float64 central differences, the interpreter."""
from __future__ import annotations

import numpy as np
import pytest

import compiler
from compiler.text import ParseError, parse_graph, print_graph
from compiler.trees import TreeError
from frontends import dsl
from frontends.dsl import f64, i64

SPEC = {"l1": {"W": f64[2, 4], "b": f64[4]}, "l2": [f64[4, 3]], "scale": (f64[()],)}


def tree_loss(params, X, y):
    h = dsl.tanh(X @ params["l1"]["W"] + params["l1"]["b"])
    scores = (h @ params["l2"][0]) * params["scale"][0]
    return dsl.softmax_cross_entropy(scores, y)


def flat_loss(W, b, V, s, X, y):                 # the oracle: the same model, flat arguments
    h = dsl.tanh(X @ W + b)
    return dsl.softmax_cross_entropy((h @ V) * s, y)


def _values(rng):
    params = {"l1": {"W": rng.standard_normal((2, 4)), "b": rng.standard_normal(4)},
              "l2": [rng.standard_normal((4, 3))], "scale": (np.float64(1.3),)}
    return params, rng.standard_normal((5, 2)), np.array([0, 2, 1, 1, 0])


def _trace():
    return dsl.trace(tree_loss, params=SPEC, X=f64[5, 2], y=i64[5])


def test_leaves_are_named_by_their_paths_and_the_model_gets_the_structure():
    seen = {}

    def model(params, x):
        seen["types"] = (type(params), type(params["l2"]), type(params["scale"]))
        return dsl.sum(params["l1"]["W"] * x) + dsl.sum(params["l2"][0]) + params["scale"][0]
    g = dsl.trace(model, params=SPEC, x=f64[2, 4])
    assert [v.name for v in g.inputs] == ["params_l1_W", "params_l1_b", "params_l2_0",
                                          "params_scale_0", "x"]
    assert issubclass(seen["types"][0], dict) and issubclass(seen["types"][1], list)
    assert seen["types"][2] is tuple
    assert g.input_trees == {"params": {"l1": {"W": "params_l1_W", "b": "params_l1_b"},
                                        "l2": ["params_l2_0"], "scale": ("params_scale_0",)}}


@pytest.mark.parametrize("backend", ["numpy", "llvm"])
def test_tree_gradients_equal_the_flat_model(backend, rng):
    params, X, y = _values(rng)
    dg = compiler.grad(_trace(), wrt=["params"])
    out = compiler.compile(dg, backend=backend)(params=params, X=X, y=y)
    flat = compiler.grad(dsl.trace(flat_loss, W=f64[2, 4], b=f64[4], V=f64[4, 3], s=f64[()],
                                   X=f64[5, 2], y=i64[5]), wrt=["W", "b", "V", "s"])
    ref = compiler.compile(flat, backend=backend)(W=params["l1"]["W"], b=params["l1"]["b"],
                                                  V=params["l2"][0], s=params["scale"][0],
                                                  X=X, y=y)
    assert set(out) == {"out", "dparams"}
    d = out["dparams"]
    assert list(d) == ["l1", "l2", "scale"] and isinstance(d["l2"], list) \
        and isinstance(d["scale"], tuple)
    np.testing.assert_allclose(out["out"], ref["out"], rtol=1e-14)
    np.testing.assert_allclose(d["l1"]["W"], ref["dW"], rtol=1e-12)
    np.testing.assert_allclose(d["l1"]["b"], ref["db"], rtol=1e-12)
    np.testing.assert_allclose(d["l2"][0], ref["dV"], rtol=1e-12)
    np.testing.assert_allclose(d["scale"][0], ref["ds"], rtol=1e-12)


def test_tree_gradients_match_finite_differences(rng):
    params, X, y = _values(rng)
    g = _trace()
    got = compiler.compile(compiler.grad(g, wrt="params"))(params=params, X=X, y=y)["dparams"]
    fwd = compiler.compile(g)
    eps = 1e-6
    for path in (("l1", "W"), ("l1", "b"), ("l2", 0), ("scale", 0)):
        leaf = params[path[0]][path[1]]
        grad = got[path[0]][path[1]]
        for k in range(np.size(leaf)):
            def at(delta):
                p = {"l1": dict(params["l1"]), "l2": list(params["l2"]),
                     "scale": params["scale"]}
                moved = np.array(leaf, dtype=float)
                moved.reshape(-1)[k] += delta
                if path[0] == "scale":
                    p["scale"] = (moved[()],)
                else:
                    p[path[0]][path[1]] = moved
                return float(fwd(params=p, X=X, y=y)["out"])
            fd = (at(eps) - at(-eps)) / (2 * eps)
            assert abs(fd - np.ravel(grad)[k]) < 1e-7, (path, k)


def test_grad_by_path_subtree_and_default():
    g = _trace()
    sub = compiler.grad(g, wrt=["params.l1", "X"])
    assert sub.output_trees == {"dparams_l1": {"W": "dparams_l1_W", "b": "dparams_l1_b"}}
    assert list(sub.outputs) == ["out", "dparams_l1_W", "dparams_l1_b", "dX"]
    leaf = compiler.grad(g, wrt="params.l2.0")
    assert list(leaf.outputs) == ["out", "dparams_l2_0"] and not leaf.output_trees
    every = compiler.grad(g)
    assert every.output_trees["dparams"]["l2"] == ["dparams_l2_0"]
    with pytest.raises(TreeError, match=r"params\['l1'\] has no entry 'c'"):
        compiler.grad(g, wrt="params.l1.c")
    with pytest.raises(TreeError, match=r"has no entry '5'"):
        compiler.grad(g, wrt="params.l2.5")


def test_a_mixed_tree_gives_none_where_a_leaf_has_no_gradient(rng):
    g = dsl.trace(lambda batch: dsl.sum(batch["x"] * dsl.cast(batch["k"], "f64")),
                  batch={"x": f64[3], "k": i64[3]})
    dg = compiler.grad(g, wrt=["batch"])
    out = compiler.compile(dg)(batch={"x": np.ones(3), "k": np.array([1, 2, 3])})
    assert out["dbatch"]["k"] is None
    np.testing.assert_array_equal(out["dbatch"]["x"], [1.0, 2.0, 3.0])
    assert parse_graph(print_graph(dg)) == dg


def test_text_form_round_trips_the_trees():
    dg = compiler.grad(_trace(), wrt=["params"])
    text = print_graph(dg)
    assert ("input tree params = {'l1': {'W': params_l1_W, 'b': params_l1_b}, "
            "'l2': [params_l2_0], 'scale': (params_scale_0,)}") in text
    assert "output tree dparams = {'l1': {'W': dparams_l1_W" in text
    back = parse_graph(text)
    assert back == dg and back.output_trees == dg.output_trees
    other = parse_graph(text.replace("'l2': [params_l2_0]", "'l2': (params_l2_0,)"))
    assert other != dg       # the structure is part of the graph's identity


@pytest.mark.parametrize("bad, message", [
    ("input tree params = {'l1': {'W': nope}}", "not an input"),
    ("input tree params = {'l1': {'W': params_l1_W, 'b': params_l1_W}}", "used twice"),
    ("input tree params = {1: params_l1_W}", "non-empty strings"),
    ("input tree params = {'a.b': params_l1_W}", "non-empty strings"),
    ("input tree params = {'l1': f(params_l1_W)}", "leaves must be names"),
    ("input tree params = " + "[" * 40 + "params_l1_W" + "]" * 40, "deeper"),
    ("input tree params = {'l1': params_l1_W", "cannot read"),
])
def test_malformed_tree_lines_are_parse_errors(bad, message):
    text = print_graph(_trace())
    lines = text.split("\n")
    lines[1] = "  " + bad
    with pytest.raises(ParseError, match=message):
        parse_graph("\n".join(lines))


def test_a_tree_whose_structure_differs_is_an_error_naming_the_path(rng):
    params, X, y = _values(rng)
    fn = compiler.compile(compiler.grad(_trace(), wrt=["params"]))
    cases = [
        ({**params, "l1": {"W": params["l1"]["W"]}}, r"params\['l1'\] lacks key\(s\) \['b'\]"),
        ({**params, "l1": {**params["l1"], "c": 1.0}}, r"unexpected key\(s\) \['c'\]"),
        ({**params, "l2": []}, r"params\['l2'\] must be a list of 1 entries, got a list of "
                               "length 0"),
        ({**params, "l2": params["l2"][0]}, r"params\['l2'\] must be a list"),
        ({**params, "l1": {**params["l1"], "b": {"x": 1}}}, r"params\['l1'\]\['b'\] must be "
                                                            "an array"),
        ([params], r"params must be a dict"),
    ]
    for tree, message in cases:
        with pytest.raises(TreeError, match=message) as e:
            fn(params=tree, X=X, y=y)
        assert "test_trees.py:" in str(e.value)      # the caller's line
    with pytest.raises(ValueError, match=r"argument params\['l1'\]\['b'\] \(input "
                                         r"'params_l1_b'\): shape \(5,\) does not match"):
        fn(params={**params, "l1": {**params["l1"], "b": np.ones(5)}}, X=X, y=y)
    with pytest.raises(TreeError, match=r"missing tree argument\(s\) \['params'\]"):
        fn(X=X, y=y)
    with pytest.raises(TreeError, match="not both"):
        fn(params=params, X=X, y=y, params_l1_W=params["l1"]["W"])


def test_the_model_reading_a_key_the_spec_lacks_names_the_path_and_line():
    def model(params, x):
        return dsl.sum(params["l1"]["W"] * x) + dsl.sum(params["l3"])
    with pytest.raises(compiler.UnknownNameError,
                       match=r"params\['l3'\]: the spec of params has no key 'l3' .* at "
                             r"test_trees.py:\d+"):
        dsl.trace(model, params=SPEC, x=f64[2, 4])

    def model2(params, x):
        return dsl.sum(params["l2"][1])
    with pytest.raises(TreeError, match=r"params\['l2'\]\[1\]: the spec of params\['l2'\] has "
                                        r"1 entries at test_trees.py:\d+"):
        dsl.trace(model2, params=SPEC, x=f64[2, 4])


def test_bad_specs_are_clear_errors():
    with pytest.raises(TreeError, match=r"params\['a'\] is 3"):
        dsl.trace(lambda params: dsl.sum(params["a"]), params={"a": 3})
    with pytest.raises(TreeError, match="key 1 .* non-empty strings"):
        dsl.trace(lambda params: dsl.sum(params[1]), params={1: f64[2]})
    with pytest.raises(TreeError, match=r"a shape\? write f64\[2, 3\]"):
        dsl.trace(lambda x: x, x=(2, 3))


def test_flat_calls_by_leaf_name_still_work(rng):
    """gradc's own checks and tools call with the leaves by name: flat outputs come back."""
    params, X, y = _values(rng)
    dg = compiler.grad(_trace(), wrt=["params"])
    fn = compiler.compile(dg)
    flat = fn(params_l1_W=params["l1"]["W"], params_l1_b=params["l1"]["b"],
              params_l2_0=params["l2"][0], params_scale_0=params["scale"][0], X=X, y=y)
    tree = fn(params=params, X=X, y=y)
    np.testing.assert_array_equal(flat["dparams_l2_0"], tree["dparams"]["l2"][0])
    assert compiler.check_finite_differences(_trace()).ok


def test_tree_calls_from_threads_agree(rng):
    from concurrent.futures import ThreadPoolExecutor
    dg = compiler.grad(_trace(), wrt=["params"])
    fn = compiler.compile(dg, backend="llvm")
    cases = [_values(np.random.default_rng(k)) for k in range(8)]
    want = [compiler.interpret(dg, params_l1_W=p["l1"]["W"], params_l1_b=p["l1"]["b"],
                               params_l2_0=p["l2"][0], params_scale_0=p["scale"][0], X=X, y=y)
            for p, X, y in cases]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda c: fn(params=c[0], X=c[1], y=c[2]), cases * 4))
    for k, out in enumerate(got):
        np.testing.assert_allclose(out["dparams"]["l1"]["W"], want[k % 8]["dparams_l1_W"],
                                   rtol=1e-13)


def test_hvp_and_hessian_take_trees_and_paths(rng):
    g = _trace()
    params, X, y = _values(rng)
    by_tree = compiler.hvp(g, wrt=["params.l1"])
    by_leaf = compiler.hvp(g, wrt=["params_l1_W", "params_l1_b"])
    assert by_tree == by_leaf
    h = compiler.hessian(g, wrt="params.scale.0")
    assert "hessian_params_scale_0" in h.outputs


@pytest.mark.parametrize("backend", ["numpy", "llvm"])
def test_settings_on_a_tree_function_reach_its_kernel(backend, rng):
    """`fn.check_finite = True` on a function taking trees refuses a NaN input (set on the
    wrapper alone it would be read by nothing), and `fn.max_sizes` bounds a symbolic kernel."""
    params, X, y = _values(rng)
    fn = compiler.compile(compiler.grad(_trace(), wrt=["params"]), backend=backend)
    fn.check_finite = True
    assert fn.flat.check_finite
    bad = dict(params, l1={"W": params["l1"]["W"].copy(), "b": params["l1"]["b"]})
    bad["l1"]["W"][0, 0] = np.nan
    with pytest.raises(ValueError, match="params"):
        fn(params=bad, X=X, y=y)
    g = dsl.trace(tree_loss, params=SPEC, X=f64["N", 2], y=i64["N"])
    sym = compiler.compile(compiler.grad(g, wrt=["params"]), backend="llvm")
    sym.max_sizes = 2
    for n in (1, 2, 3, 4):
        sym(params=params, X=rng.standard_normal((n, 2)), y=np.zeros(n, np.int64))
    assert sym.flat.max_sizes == 2 and len(sym.flat.sizes) == 2
