"""FILE:FUNC targets of the `gradc` command line: loading the model function, its input specs
(annotations and `--shape` overrides), the traced graph, the inputs to differentiate, and the
pass list.  Mistakes raise CliError, which the command line reports as one line (exit 2).

    fn, path = load_function("examples/lecture.py:neuron")   # or "examples.lecture:neuron"
    parse_spec("f64[64,2]"), parse_spec("64,2", "i64")       # -> TensorType
    m = Model(args)      # args: target, shape, wrt, data, of (an argparse namespace)
    m.graph, m.wrt, m.gradient(), m.train_step("adam")
"""
from __future__ import annotations

import contextlib
import difflib
import importlib
import importlib.util
import inspect
import os
import re
import sys
import traceback

import numpy as np

import compiler
from compiler import trees
from compiler.ir import NUMPY_DTYPE, GradcError, TensorType, is_dim_name
from compiler.optim import append_update
from compiler.passes import PASSES

from . import dsl

NUMPY_ITEMSIZE = {d: np.dtype(t).itemsize for d, t in NUMPY_DTYPE.items()}

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
OPTIMIZERS = {"sgd": "SGD", "momentum": "Momentum", "rmsprop": "RMSProp", "adam": "Adam",
              "adamw": "AdamW"}
_OPTIMIZER_DEFAULT_LR = {"sgd": 1e-2, "momentum": 1e-2, "rmsprop": 1e-3}


class CliError(Exception):
    """A user mistake: reported as one line, exit status 2."""


# ---- loading the model -----------------------------------------------------------------------
def _functions(module) -> list:
    return sorted(k for k, v in vars(module).items()
                  if inspect.isfunction(v) and v.__module__ == module.__name__
                  and not k.startswith("_"))


def _where(exc: BaseException, filename: str | None) -> str:
    """` (file.py:12)`: the innermost traceback frame in `filename` (or any non-gradc file)."""
    frames = traceback.extract_tb(exc.__traceback__)
    for fr in reversed(frames):
        if filename is None or os.path.abspath(fr.filename) == os.path.abspath(filename):
            return f" ({os.path.basename(fr.filename)}:{fr.lineno})"
    return ""


def load_function(target: str):
    """`path/to/model.py:func` or `package.module:func` -> (function, model file path)."""
    if ":" not in target:
        raise CliError(f"{target!r}: name the function too, as FILE:FUNC "
                       "(examples/lecture.py:neuron)")
    where, func = target.rsplit(":", 1)
    if os.path.isdir(where):
        raise CliError(f"{where} is a directory; give a Python file (FILE:FUNC)")
    if os.path.exists(where):
        name = "gradc_model_" + re.sub(r"\W", "_", os.path.splitext(os.path.basename(where))[0])
        spec = importlib.util.spec_from_file_location(name, where)
        if spec is None or spec.loader is None:
            raise CliError(f"{where}: not a Python file")
        module = importlib.util.module_from_spec(spec)
        folder = os.path.dirname(os.path.abspath(where))
        sys.path.insert(0, folder)
        sys.modules[name] = module          # dataclasses and pickling look the module up
        try:
            spec.loader.exec_module(module)
        except SyntaxError as e:
            del sys.modules[name]
            raise CliError(f"{where}:{e.lineno}: syntax error: {e.msg}") from e
        except Exception as e:
            del sys.modules[name]
            raise CliError(f"loading {where} failed: {type(e).__name__}: {e}"
                           f"{_where(e, where)}") from e
        finally:
            with contextlib.suppress(ValueError):
                sys.path.remove(folder)
        path = where
    elif re.fullmatch(r"[A-Za-z_][\w.]*", where) and not where.endswith(".py"):
        sys.path.insert(0, os.getcwd())      # as `python -m` does
        try:
            module = importlib.import_module(where)
        except ImportError as e:
            raise CliError(f"no file {where} and no importable module {where!r} ({e})") from e
        except Exception as e:
            raise CliError(f"importing {where} failed: {type(e).__name__}: {e}"
                           f"{_where(e, None)}") from e
        finally:
            sys.path.remove(os.getcwd())
        path = getattr(module, "__file__", where)
    else:
        raise CliError(f"no such file: {where}")
    fn = getattr(module, func, None)
    if not callable(fn):
        have = _functions(module)
        close = difflib.get_close_matches(func, have, n=1)
        raise CliError(f"{where} has no function {func!r}"
                       + (f"; did you mean {close[0]!r}?" if close else "")
                       + (f" (it defines: {', '.join(have)})" if have else ""))
    return fn, path


# ---- specs and the graph -------------------------------------------------------------------
_SPEC = re.compile(r"^\s*(?:(f32|f64|i64)\s*)?\[?\s*\(?([\w\s,]*)\)?\s*\]?\s*$")


def _named(d: str) -> bool:
    """A dimension name on the command line: an identifier starting with a capital (N, B),
    so that a typo such as f64[3,x] stays a bad shape."""
    return is_dim_name(d) and d[0].isupper()


def parse_spec(text: str, default_dtype: str = "f64") -> TensorType:
    """`f64[64,2]`, `i64[64]`, `f64[]`, `f64[()]`, `64,2`, `[64, 2]`, `()` -> TensorType;
    `f64[N,2]` names a dimension whose size is given at run time (compiler/shapes.py)."""
    m = _SPEC.match(text)
    if not m:
        raise CliError(f"bad shape {text!r}: write f64[64,2], i64[64], f64[], f64[N,2] or 64,2")
    dims = [d.strip() for d in m.group(2).split(",") if d.strip()]
    if not all(d.isdigit() or _named(d) for d in dims):
        raise CliError(f"bad shape {text!r}: a dimension is a non-negative int or a name that "
                       "starts with a capital letter (f64[N,2])")
    t = TensorType(m.group(1) or default_dtype, tuple(d if _named(d) else int(d)
                                                      for d in dims))
    if t.symbolic:
        return t
    nbytes = t.size * NUMPY_ITEMSIZE[t.dtype]
    if nbytes > sys.maxsize:          # NumPy's limit: sizes in bytes are a signed index
        raise CliError(f"bad shape {text!r}: {t} would be {nbytes:.3g} bytes; no array can hold "
                       f"more than {sys.maxsize} (2**63 - 1)")
    return t


def specs_for(fn, shapes: list) -> dict:
    """The --shape overrides as trace keywords, checked against fn's parameters; also checks
    that every parameter without a default has a spec (annotation or override)."""
    sig = inspect.signature(fn)
    try:
        hints = inspect.get_annotations(fn, eval_str=True)
    except Exception:
        hints = getattr(fn, "__annotations__", {}) or {}
    out = {}
    for item in shapes or []:
        name, eq, text = item.partition("=")
        name = name.strip()
        if not eq or not name:
            raise CliError(f"bad --shape {item!r}: write NAME=f64[64,2] or NAME=64,2")
        if name not in sig.parameters:
            raise CliError(f"--shape {name}: {fn.__name__} has no parameter {name!r} "
                           f"(its parameters: {', '.join(sig.parameters)})")
        known = hints.get(name)
        out[name] = parse_spec(text, known.dtype if isinstance(known, TensorType) else "f64")
    for name, p in sig.parameters.items():
        if name not in out and not isinstance(hints.get(name), TensorType) \
                and not trees.is_spec_tree(hints.get(name)) \
                and p.default is inspect.Parameter.empty:
            raise CliError(f"parameter {name!r} of {fn.__name__} has no spec: annotate it "
                           f"({name}: f64[3]) or pass --shape {name}=f64[3]")
    return out


def _names(text: str | None) -> list:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def _leaves_of(graph, w: str, floats: list) -> list:
    """The float inputs `--wrt w` names: an input, or a path into a parameter tree
    (`params`, `params.l1`, `params.l1.W`: compiler/trees.py) for the float leaves under it."""
    try:
        found = trees.find(graph, w)
    except trees.TreeError as e:
        raise CliError(f"--wrt {w}: {str(e).removeprefix('grad: ')}") from None
    if found is not None:
        names = [n for _, n in trees.leaves(found[2]) if n in floats]
        if names:
            return names
    elif w in floats:
        return [w]
    paths = [trees.dotted(top, p) for top, t in graph.input_trees.items()
             for p, _ in trees.leaves(t)]
    raise CliError(f"--wrt {w}: not a float input of {graph.name} (float inputs: "
                   f"{', '.join(floats)}"
                   + (f"; tree leaves: {', '.join(paths)}" if paths else "") + ")")


class Model:
    """The model named on the command line: its function, traced graph and chosen inputs."""

    def __init__(self, args):
        self.target = args.target
        self.fn, self.path = load_function(args.target)
        self.specs = specs_for(self.fn, args.shape)
        self.graph = self.trace()
        floats = [v.name for v in self.graph.inputs if v.type.is_float]
        names = {v.name for v in self.graph.inputs}
        data = _names(getattr(args, "data", None))
        for d in data:
            if d not in names:
                raise CliError(f"--data {d}: {self.graph.name} has no input {d!r} "
                               f"(its inputs: {', '.join(sorted(names))})")
        wrt = [leaf for w in _names(getattr(args, "wrt", None))   # a path: params.l1.W
               for leaf in _leaves_of(self.graph, w, floats)]
        self.wrt = wrt or [x for x in floats if x not in data]
        self.of = getattr(args, "of", None)
        if self.of is not None and self.of not in self.graph.outputs:
            raise CliError(f"--of {self.of}: {self.graph.name} has no output {self.of!r} "
                           f"(its outputs: {', '.join(self.graph.outputs)})")

    def trace(self, **kw):
        try:
            return dsl.trace(self.fn, **self.specs, **kw)
        except GradcError:
            raise
        except Exception as e:
            raise CliError(f"tracing {self.fn.__name__} failed: {type(e).__name__}: {e}"
                           f"{_where(e, self.path)}") from e

    def scalar_output(self) -> bool:
        outs = list(self.graph.outputs.values())
        v = self.graph.outputs[self.of] if self.of else (outs[0] if len(outs) == 1 else None)
        return v is not None and v.shape == () and v.type.is_float

    def gradient(self):
        if not self.wrt:
            raise CliError(f"{self.graph.name} has no float input to differentiate with "
                           "respect to (check --wrt/--data)")
        return compiler.grad(self.graph, wrt=self.wrt, of=self.of)

    def train_step(self, optimizer: str, comm: bool = False):
        """The train-step graph (as compiler.train_step builds it) and its layout; with
        comm=True the data-parallel step's parts (compiler.distributed.StepParts: gradient,
        all-reduce, update), as train_step(..., comm=...) builds them."""
        cls = getattr(compiler.optim, OPTIMIZERS[optimizer])
        opt = cls(lr=_OPTIMIZER_DEFAULT_LR.get(optimizer, 1e-3))
        g = self.trace(name=f"{self.fn.__name__}_step", training=True)
        loss = self.of or ("loss" if "loss" in g.outputs else None)
        if loss is None:
            if len(g.outputs) != 1:
                raise CliError(f"--train-step: {g.name} returns {list(g.outputs)}; name the "
                               "loss with --of")
            loss = next(iter(g.outputs))
        dg = compiler.grad(g, wrt=self.wrt, of=loss)
        if comm:
            return compiler.distributed.split_step(dg, list(self.wrt), opt, loss)
        layout = append_update(dg, list(self.wrt), opt, loss=loss)
        return dg, layout

    def about(self, grad: bool) -> str:
        if not grad:
            return f"{self.graph.name}"
        return f"{self.graph.name} and its gradient with respect to {', '.join(self.wrt)}"


def parse_pipeline(text: str | None):
    """`default` -> None (the default pipeline), `none` -> [], `a,b` -> [a, b]."""
    if text is None or text == "default":
        return None
    if text == "none":
        return []
    names = _names(text)
    for n in names:
        if n not in PASSES:
            raise CliError(f"--pipeline: unknown pass {n!r} (passes: {', '.join(PASSES)}; "
                           "or default, none)")
    return names
