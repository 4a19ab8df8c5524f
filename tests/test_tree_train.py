"""Train steps on parameter trees (issue 18.1): the tree's arrays are the step's, updated in
place, checkpointed by path and loaded back strictly; the CLI's --wrt takes a path.  Oracle: a
hand-written NumPy forward, backward and Adam step."""
from __future__ import annotations

import zipfile

import numpy as np
import pytest

import compiler
from compiler.checkpoint import CheckpointError
from compiler.trees import TreeError
from frontends import cli, dsl
from frontends.dsl import f64, i64


def loss(net, X, y):
    h = dsl.tanh(X @ net["hidden"]["W"] + net["hidden"]["b"])
    return dsl.softmax_cross_entropy(h @ net["out"][0], y)


def _init(rng):
    return {"hidden": {"W": rng.standard_normal((2, 4)) * 0.5, "b": np.zeros(4)},
            "out": [rng.standard_normal((4, 3)) * 0.5]}


def _numpy_grads(p, X, y):
    a = X @ p["hidden"]["W"] + p["hidden"]["b"]
    h = np.tanh(a)
    s = h @ p["out"][0]
    e = np.exp(s - s.max(axis=1, keepdims=True))
    prob = e / e.sum(axis=1, keepdims=True)
    loss_value = -np.mean(np.log(prob[np.arange(len(y)), y]))
    ds = prob.copy()
    ds[np.arange(len(y)), y] -= 1
    ds /= len(y)
    dV = h.T @ ds
    da = (ds @ p["out"][0].T) * (1 - h * h)
    return loss_value, {"hidden": {"W": X.T @ da, "b": da.sum(axis=0)}, "out": [dV]}


def _adam(p, g, m, v, k, lr=1e-2, b1=0.9, b2=0.999, eps=1e-8):
    m[...] = b1 * m + (1 - b1) * g
    v[...] = b2 * v + (1 - b2) * g * g
    p -= lr * (m / (1 - b1 ** k)) / (np.sqrt(v / (1 - b2 ** k)) + eps)


@pytest.mark.parametrize("backend", ["numpy", "llvm"])
def test_adam_on_a_tree_matches_a_numpy_step_and_updates_in_place(backend, rng):
    init = _init(rng)
    X, y = rng.standard_normal((6, 2)), np.array([0, 1, 2, 0, 1, 2])
    step = compiler.train_step(loss, params={"net": init}, inputs={"X": f64[6, 2], "y": i64[6]},
                               optimizer=compiler.optim.Adam(lr=1e-2), backend=backend)
    tree = step.params["net"]
    W = tree["hidden"]["W"]
    assert W is not init["hidden"]["W"]                    # the step owns its copies
    ref = {"hidden": {"W": init["hidden"]["W"].copy(), "b": init["hidden"]["b"].copy()},
           "out": [init["out"][0].copy()]}
    leaves = [(("hidden", "W"),), (("hidden", "b"),), (("out", 0),)]
    moments = {k: (np.zeros_like(ref[k[0][0]][k[0][1]]), np.zeros_like(ref[k[0][0]][k[0][1]]))
               for k in leaves}
    for k in range(1, 4):
        want_loss, g = _numpy_grads(ref, X, y)
        got_loss = step(X=X, y=y)
        assert abs(got_loss - want_loss) < 1e-12
        for (a, b), in leaves:
            _adam(ref[a][b], g[a][b], *moments[((a, b),)], k)
    assert step.params["net"]["hidden"]["W"] is W            # updated in place
    for (a, b), in leaves:
        np.testing.assert_allclose(step.params["net"][a][b], ref[a][b], rtol=1e-11, atol=1e-14)
    assert list(step.evaluate(X=X, y=y)) == ["loss"]


def test_checkpoint_round_trips_a_tree_and_stays_strict(rng, tmp_path):
    X, y = rng.standard_normal((6, 2)), np.array([0, 1, 2, 0, 1, 2])
    spec = {"X": f64[6, 2], "y": i64[6]}

    def make(params):
        return compiler.train_step(loss, params={"net": params}, inputs=spec,
                                   optimizer=compiler.optim.Adam(lr=1e-2))
    a = make(_init(rng))
    a(X=X, y=y)
    path = tmp_path / "tree.npz"
    a.save(path)
    names = set(zipfile.ZipFile(path).namelist())
    assert {"param/net.hidden.W.npy", "param/net.out.0.npy", "state/m/net.hidden.b.npy"} <= names
    b = make(_init(np.random.default_rng(99)))
    b.load(path)
    for part in (("hidden", "W"), ("hidden", "b"), ("out", 0)):
        np.testing.assert_array_equal(b.params["net"][part[0]][part[1]],
                                      a.params["net"][part[0]][part[1]])
    assert b(X=X, y=y) == a(X=X, y=y) and b.t == a.t == 2
    # a step whose tree differs (other keys) refuses the file, naming the members
    c = compiler.train_step(lambda net, X, y: loss({"hidden": net["h"], "out": net["o"]}, X, y),
                            params={"net": {"h": _init(rng)["hidden"], "o": _init(rng)["out"]}},
                            inputs=spec, optimizer=compiler.optim.Adam(lr=1e-2))
    before = c.params["net"]["h"]["W"].copy()
    with pytest.raises(CheckpointError, match="net.hidden.W|net.h.W"):
        c.load(path)
    np.testing.assert_array_equal(c.params["net"]["h"]["W"], before)   # nothing changed


def test_train_step_tree_errors(rng):
    spec = {"X": f64[6, 2], "y": i64[6]}
    opt = compiler.optim.Adam()
    with pytest.raises(compiler.GradcError, match=r"parameter net\['hidden'\]\['b'\] has "
                                                  "dtype int64"):
        compiler.train_step(loss, params={"net": {"hidden": {"W": np.zeros((2, 4)),
                                                             "b": np.zeros(4, dtype=int)},
                                                  "out": [np.zeros((4, 3))]}},
                            inputs=spec, optimizer=opt)
    with pytest.raises(TreeError, match="would both be named 'net_a_b'"):
        compiler.train_step(lambda net, X, y: dsl.sum(net["a_b"]) + dsl.sum(net["a"]["b"]),
                            params={"net": {"a_b": np.zeros(2), "a": {"b": np.zeros(2)}}},
                            inputs=spec, optimizer=opt)
    with pytest.raises(compiler.UnknownNameError, match=r"net\['out'\]: the spec of net has no "
                                                        "key 'out'"):
        compiler.train_step(loss, params={"net": {"hidden": _init(rng)["hidden"]}},
                            inputs=spec, optimizer=opt)


MODEL = '''
from frontends import dsl
from frontends.dsl import f64, i64

SPEC = {"l1": {"W": f64[2, 4], "b": f64[4]}, "l2": [f64[4, 3]]}


def loss(params: SPEC, X: f64[5, 2], y: i64[5]):
    h = dsl.tanh(X @ params["l1"]["W"] + params["l1"]["b"])
    return dsl.softmax_cross_entropy(h @ params["l2"][0], y)
'''


def _gradc(tmp_path, capsys, *args):
    """cli.main in-process on a model file in tmp_path: (exit status, stdout, stderr)."""
    (tmp_path / "treemodel.py").write_text(MODEL)
    rc = cli.main([*args[:-1], str(tmp_path / args[-1])])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_cli_wrt_takes_a_path(tmp_path, capsys):
    rc, out, err = _gradc(tmp_path, capsys, "show", "--grad", "--wrt", "params.l1.W",
                          "treemodel.py:loss")
    assert rc == 0, err
    assert "return out=" in out and "dparams_l1_W=dparams_l1_W" in out
    assert "dparams_l1_b" not in out and "dparams_l2_0" not in out
    rc, out, err = _gradc(tmp_path, capsys, "show", "--grad", "--wrt", "params.l2",
                          "treemodel.py:loss")
    assert rc == 0 and "dparams_l2_0=" in out and "dparams_l1_W" not in out
    rc, out, err = _gradc(tmp_path, capsys, "show", "--grad", "--wrt", "params.l3",
                          "treemodel.py:loss")
    assert rc == 2 and "params has no entry 'l3'" in err
    rc, out, err = _gradc(tmp_path, capsys, "check", "--only", "fd", "--wrt", "params.l1.b",
                          "treemodel.py:loss")
    assert rc == 0 and "dparams_l1_b" in out and "OK" in out
