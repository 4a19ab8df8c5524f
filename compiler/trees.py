"""Parameter trees: specs and arguments may be nested dicts, lists and tuples of arrays.

    g = dsl.trace(loss, params={"l1": {"W": f64[2, 100], "b": f64[100]}, "l2": [f64[100, 3]]},
                  X=f64[64, 2], y=i64[64])
    fn = compiler.compile(compiler.grad(g, wrt=["params"]))
    out = fn(params={"l1": {"W": W, "b": b}, "l2": [V]}, X=X, y=y)
    out["dparams"]["l1"]["W"]                       # the gradient, in the same structure

The graph's inputs are the flat leaves.  A leaf is named after its whole path, the parts joined
by `_` (`params["l1"]["W"]` -> `params_l1_W`, `params["l2"][0]` -> `params_l2_0`; a key's
characters other than ASCII letters, digits and `_` become `_`, and the Namer makes names
unique), so names stay the same when the tree grows and read like the model.  The structure is
graph metadata: `graph.input_trees` (argument name -> the tree with leaf input names at its
leaves) and `graph.output_trees` (a grouped output, `dparams` -> the tree with output keys at
its leaves, None where a leaf has no gradient).  The text form prints them (trees_text.py:
`input tree params = {...}` after the header, `output tree dparams = {...}` after `return`)
and parse reads them back.

A path is written with dots in the CLI and in `grad(wrt=...)`: `params.l1.W`, `params.l2.0`.
Dict keys are non-empty strings without dots; containers keep their order (dict insertion
order).  A compiled function of a graph with trees (`TreeFunction`) takes each tree argument as
its structure and returns grouped outputs as trees; a tree whose structure differs from the
spec is a `TreeError` naming the path and the caller's line.  Called with the leaves by name
instead (no tree argument given), it is the kernel's flat call (`fn.flat`, the kernel itself),
with flat outputs: what gradc's own checks and tools use.
"""
from __future__ import annotations

import os
import re
import sys

from .ir import GradcError, Namer, TensorType, UnknownNameError, UnsupportedError

CONTAINERS = (dict, list, tuple)
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_PACKAGES = tuple(os.path.join(_ROOT, p) + os.sep for p in ("compiler", "runtime", "frontends"))
MAX_DEPTH = 32                      # nesting of a tree in the text form


class TreeError(UnsupportedError):
    """A tree (spec, argument, path) that does not fit: the message names the path."""


def is_tree(x) -> bool:
    return isinstance(x, CONTAINERS)


def spelled(top: str, path: tuple) -> str:
    """The path as the model writes it: params['l1']['W'], params['l2'][0]."""
    return top + "".join(f"[{p!r}]" for p in path)


def dotted(top: str, path: tuple) -> str:
    """The path as the CLI and grad(wrt=...) write it: params.l1.W, params.l2.0."""
    return ".".join([top] + [str(p) for p in path])


def leaves(tree, path: tuple = (), what: str = "tree") -> list:
    """[(path, leaf)] in order; dict keys must be non-empty strings without a dot."""
    out, stack = [], [(path, tree, 0)]
    while stack:
        p, node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise TreeError(f"{what}: nested deeper than {MAX_DEPTH} levels at {p!r}")
        if isinstance(node, dict):
            for k in node:
                if not isinstance(k, str) or not k or "." in k:
                    raise TreeError(f"{what}: key {k!r} at {p or 'the top'}: tree keys must be "
                                    "non-empty strings without '.' (paths are written a.b.c)")
            items = list(node.items())
        elif isinstance(node, (list, tuple)):
            items = list(enumerate(node))
        else:
            out.append((p, node))
            continue
        stack.extend((p + (k,), v, depth + 1) for k, v in reversed(items))
    return out


def rebuild(tree, values):
    """`tree`'s structure with its leaves replaced, in order, by `values` (an iterator)."""
    if isinstance(tree, dict):
        return {k: rebuild(v, values) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(rebuild(v, values) for v in tree)
    return next(values)


def leaf_name(top: str, path: tuple) -> str:
    return "_".join([top] + [re.sub(r"[^A-Za-z0-9_]", "_", str(p)) for p in path])


def spec_leaves(top: str, spec) -> list:
    """[(path, TensorType)] of a tree spec; a TreeError naming the first leaf that is not one."""
    out = leaves(spec, what=f"the spec of {top!r}")
    for path, leaf in out:
        if not isinstance(leaf, TensorType):
            hint = (f" (a shape? write f64[{', '.join(map(str, spec))}])"
                    if isinstance(spec, tuple) and all(isinstance(d, int) for d in spec) else "")
            raise TreeError(f"trace: the spec of {top!r} must look like f64[3, 2], or be a tree "
                            f"(dict, list, tuple) of such specs; {spelled(top, path)} is "
                            f"{leaf!r}{hint}")
    return out


def is_spec_tree(x) -> bool:
    """Whether x is a tree whose leaves are all specs (a tree annotation: `params: {...}`)."""
    if not is_tree(x):
        return False
    try:
        return all(isinstance(t, TensorType) for _, t in leaves(x))
    except TreeError:
        return False


def input_names(specs: dict) -> dict:
    """Argument name -> its input name (a flat spec) or its tree of leaf input names, as
    `trace_inputs` names them (the same Namer sequence), for callers that need the names
    before tracing (compiler/train.py)."""
    namer, out = Namer(), {}
    for k, spec in specs.items():
        if is_tree(spec):
            names = [namer.fresh(leaf_name(k, p)) for p, _ in spec_leaves(k, spec)]
            out[k] = rebuild(spec, iter(names))
        else:
            out[k] = namer.fresh(k)
    return out


def trace_inputs(builder, specs: dict, locate=None) -> dict:
    """The graph inputs for `specs` (name -> TensorType or tree of them), added in order, and
    the model's arguments: a Var, or the same structure of Vars (dicts and lists that say
    which key or index the spec lacks, and where).  Records `graph.input_trees`."""
    args = {}
    for k, spec in specs.items():
        if not is_tree(spec):
            args[k] = builder.add_input(k, spec)
            continue
        vars_ = [builder.add_input(leaf_name(k, p), t) for p, t in spec_leaves(k, spec)]
        builder.graph.input_trees[k] = rebuild(spec, iter(v.name for v in vars_))
        args[k] = _traced(rebuild(spec, iter(vars_)), k, (), locate)
    return args


def _traced(tree, top, path, locate):
    if isinstance(tree, dict):
        return _Dict({key: _traced(v, top, path + (key,), locate) for key, v in tree.items()},
                     spelled(top, path), locate)
    if isinstance(tree, list):
        return _List([_traced(v, top, path + (i,), locate) for i, v in enumerate(tree)],
                     spelled(top, path), locate)
    if isinstance(tree, tuple):
        return tuple(_traced(v, top, path + (i,), locate) for i, v in enumerate(tree))
    return tree


def _where(locate) -> str:
    loc = locate() if locate else None
    return f" at {loc}" if loc else ""


class _Dict(dict):
    """A traced dict: a key the spec lacks is an error naming the path and the model line."""

    def __init__(self, items, path, locate):
        super().__init__(items)
        self._path, self._locate = path, locate

    def __missing__(self, key):
        raise UnknownNameError(f"{self._path}[{key!r}]: the spec of {self._path} has no key "
                               f"{key!r} (its keys: {', '.join(map(repr, self)) or 'none'})"
                               f"{_where(self._locate)}")


class _List(list):
    """A traced list: an index the spec lacks is an error naming the path and the model line."""

    def __init__(self, items, path, locate):
        super().__init__(items)
        self._path, self._locate = path, locate

    def __getitem__(self, i):
        try:
            return super().__getitem__(i)
        except IndexError:
            raise TreeError(f"{self._path}[{i!r}]: the spec of {self._path} has {len(self)} "
                            f"entries{_where(self._locate)}") from None


# ---- arguments and results of compiled functions ------------------------------------------
def _caller() -> str:
    """` (called at file:line)`: the innermost frame outside gradc."""
    f = sys._getframe(1)
    while f is not None and os.path.abspath(f.f_code.co_filename).startswith(_PACKAGES):
        f = f.f_back
    if f is None:
        return ""
    return f" (called at {os.path.basename(f.f_code.co_filename)}:{f.f_lineno})"


def match(top: str, spec, value, what: str) -> list:
    """[(path, leaf of value)] with value's structure checked against spec's: a TreeError
    naming the first path where they differ."""
    out, stack = [], [((), spec, value)]
    while stack:
        path, s, v = stack.pop()
        here = spelled(top, path)
        if isinstance(s, dict):
            if not isinstance(v, dict):
                raise TreeError(f"{what}: {here} must be a dict with keys "
                                f"{list(s)}, got {type(v).__name__}{_caller()}")
            if list(v) != list(s) and set(v) != set(s):
                missing = [k for k in s if k not in v]
                extra = [k for k in v if k not in s]
                raise TreeError(f"{what}: {here} "
                                + "; ".join(([f"lacks key(s) {missing}"] if missing else [])
                                            + ([f"has unexpected key(s) {extra}"] if extra
                                               else []))
                                + f" (the spec's keys: {list(s)}){_caller()}")
            stack.extend((path + (k,), s[k], v[k]) for k in reversed(list(s)))
        elif isinstance(s, (list, tuple)):
            if not isinstance(v, (list, tuple)) or len(v) != len(s):
                got = (f"{type(v).__name__} of length {len(v)}" if isinstance(v, (list, tuple))
                       else type(v).__name__)
                raise TreeError(f"{what}: {here} must be a {type(s).__name__} of {len(s)} "
                                f"entries, got a {got}{_caller()}")
            stack.extend((path + (i,), s[i], v[i]) for i in reversed(range(len(s))))
        else:
            if is_tree(v):
                raise TreeError(f"{what}: {here} must be an array, got a {type(v).__name__}"
                                f"{_caller()}")
            out.append((path, s, v))
    return out


def flat_arguments(graph, kwargs: dict) -> dict:
    """Keyword arguments with each tree argument replaced by its leaves (by input name).  A
    call that passes no tree at all passes the leaves by name (gradc's own checks and tools
    call so) and is handed on as it is."""
    trees = graph.input_trees
    if not any(k in trees for k in kwargs):
        absent = [t for t, tree in trees.items() if not any(n in kwargs for _, n in leaves(tree))]
        if absent:
            raise TreeError(f"{graph.name}(): missing tree argument(s) {absent}{_caller()}")
        return kwargs
    flat = {}
    leaf_of = {}
    for top, spec in trees.items():
        for path, name in leaves(spec):
            leaf_of[name] = (top, dotted(top, path))
    for k, v in kwargs.items():
        if k in trees:
            for _path, name, leaf in match(k, trees[k], v, f"{graph.name}()"):
                flat[name] = leaf
        elif k in leaf_of:
            top, where = leaf_of[k]
            raise TreeError(f"{graph.name}(): {k!r} is the leaf {where} of tree argument "
                            f"{top!r}: pass the trees ({top}={{...}}) or every leaf by name, "
                            f"not both{_caller()}")
        else:
            flat[k] = v
    missing = [t for t in trees if t not in kwargs]
    if missing:
        raise TreeError(f"{graph.name}(): missing tree argument(s) {missing}{_caller()}")
    return flat


def grouped_outputs(graph, out: dict) -> dict:
    """The kernel's flat outputs with each output tree's leaves gathered under its key."""
    if not graph.output_trees:
        return out
    out = dict(out)
    for key, tree in graph.output_trees.items():
        names = [name for _, name in leaves(tree)]
        out[key] = rebuild(tree, iter(None if n is None else out[n] for n in names))
        for n in names:
            if n is not None:
                out.pop(n, None)
    return out


def _paths(graph) -> dict:
    """Leaf input name -> its path as the model writes it (params['l1']['W'])."""
    return {name: spelled(top, path) for top, tree in graph.input_trees.items()
            for path, name in leaves(tree)}


class TreeFunction:
    """A compiled function of a graph with trees: `fn(params={...}, X=...)`.  Everything else
    (`source`, `ir`, `graph`, `memory_report`, ...) is the kernel's; `flat` is the kernel."""

    def __init__(self, kernel, graph):
        self.flat = kernel
        self.trees_graph = graph

    def __call__(self, **kwargs) -> dict:
        """Tree arguments in, grouped outputs (`dparams`) out; called with the leaves by name
        instead (no tree argument given), the kernel's own flat call."""
        flat = flat_arguments(self.trees_graph, kwargs)
        if flat is kwargs:
            return self.flat(**flat)
        try:
            out = self.flat(**flat)
        except (TypeError, ValueError) as e:     # "argument 'params_l1_b': ..." names the path
            m = re.match(r"argument '(\w+)'", str(e))
            where = _paths(self.trees_graph).get(m.group(1)) if m else None
            if where is None or type(e) not in (TypeError, ValueError):
                raise
            raise type(e)(f"argument {where} (input {m.group(1)!r})"
                          f"{str(e)[m.end():]}{_caller()}") from None
        return grouped_outputs(self.trees_graph, out)

    def __getattr__(self, name):
        if name in ("flat", "trees_graph"):
            raise AttributeError(name)
        return getattr(self.flat, name)

    def __setattr__(self, name, value):
        """Settings (`check_finite`, `max_sizes`) are the kernel's: set on the wrapper they
        would be read by nothing."""
        if name in ("flat", "trees_graph"):
            object.__setattr__(self, name, value)
        else:
            setattr(self.flat, name, value)

    def __repr__(self) -> str:
        return f"<tree arguments {list(self.trees_graph.input_trees)} of {self.flat!r}>"


def unwrapped(fn):
    """The kernel of a compiled function (itself when it takes no trees)."""
    return fn.flat if isinstance(fn, TreeFunction) else fn


def wrap(kernel, graph):
    """The kernel itself for a graph without trees, else a TreeFunction."""
    if not graph.input_trees and not graph.output_trees:
        return kernel
    return TreeFunction(kernel, graph)


# ---- grad with respect to trees and paths ---------------------------------------------------
def find(graph, path_text: str):
    """(top, path, subtree of input names) for a dotted path into an input tree, or None when
    `path_text` names no tree (a plain input name)."""
    top, *rest = path_text.split(".")
    if top not in graph.input_trees:
        return None
    node, path = graph.input_trees[top], ()
    for part in rest:
        if isinstance(node, dict) and part in node:
            node = node[part]
            path += (part,)
        elif isinstance(node, (list, tuple)) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
            path += (int(part),)
        else:
            keys = (list(node) if isinstance(node, dict) else
                    f"indices 0..{len(node) - 1}" if isinstance(node, (list, tuple)) else None)
            raise TreeError(f"grad: {path_text!r}: {spelled(top, path)} has no entry {part!r}"
                            + (f" (it has {keys})" if keys is not None else
                               " (it is a leaf)"))
    return top, path, node


def resolve_wrt(graph, wrt):
    """(the flat input names to differentiate, or None for every float input; the groups:
    [(output key, subtree of input names)] whose gradients come back as trees)."""
    if wrt is None:
        types = {v.name: v.type for v in graph.inputs}
        groups = [("d" + top, tree) for top, tree in graph.input_trees.items()
                  if any(types[n].is_float for _, n in leaves(tree))]
        return None, groups
    if not graph.input_trees:
        return wrt, []
    items = [wrt] if isinstance(wrt, str) else list(wrt)
    flat, groups = [], []
    types = {v.name: v.type for v in graph.inputs}
    for item in items:
        found = find(graph, item) if isinstance(item, str) else None
        if found is None:
            flat.append(item)
            continue
        top, path, sub = found
        if not is_tree(sub):
            flat.append(sub)
            continue
        names = [n for _, n in leaves(sub) if types[n].is_float]
        if not names:
            raise TreeError(f"grad: {item!r} has no float leaves to differentiate")
        flat.extend(names)
        groups.append(("d" + leaf_name(top, path), sub))
    return flat, groups


def attach_gradients(graph, new, flat, groups):
    """Carry the trees of `graph` to its gradient graph `new`, and group the gradients of each
    tree in `groups` under its key (`dparams`; None at a leaf without a gradient)."""
    new.input_trees = dict(graph.input_trees)
    new.output_trees = dict(graph.output_trees)
    if not groups:
        return new
    if flat is None:
        flat = [v.name for v in graph.inputs if v.type.is_float]
    keys = list(new.outputs)[len(graph.outputs):]
    key_of = dict(zip(flat, keys))
    for key, sub in groups:
        if key in new.outputs or key in new.output_trees:
            raise GradcError(f"grad: the gradient tree {key!r} would take the name of an "
                             "output; rename the tree argument or that output")
        new.output_trees[key] = rebuild(sub, iter(key_of.get(n) for _, n in leaves(sub)))
    return new


# ---- train steps: parameters as trees -----------------------------------------------------
def own_params(params: dict, own) -> tuple:
    """(flat, view, paths) for compiler.train_step's `params` (name -> array or tree of
    arrays): flat is leaf input name -> own(what, leaf) (the step's copy), view the same
    structure as `params` holding those copies, paths leaf input name -> dotted path (the
    checkpoint's member names).  Leaf names are `leaf_name`s; two that coincide (or meet a
    plain parameter's name) are a TreeError."""
    flat, view, paths = {}, {}, {}
    for k, v in params.items():
        if not is_tree(v):
            flat[k] = view[k] = own(f"parameter {k!r}", v)
            paths[k] = k
            continue
        got = []
        for path, leaf in leaves(v, what=f"train_step: parameter {k!r}"):
            name = leaf_name(k, path)
            if name in flat:
                raise TreeError(f"train_step: {spelled(k, path)} and {paths[name]} would both "
                                f"be named {name!r}; rename a key")
            flat[name] = own(f"parameter {spelled(k, path)}", leaf)
            paths[name] = dotted(k, path)
            got.append(flat[name])
        view[k] = rebuild(v, iter(got))
    return flat, view, paths


def spec_of(view: dict, type_of) -> dict:
    """The trace specs of a view of parameters: type_of(array) at each leaf."""
    return {k: rebuild(v, iter(type_of(a) for _, a in leaves(v))) if is_tree(v) else type_of(v)
            for k, v in view.items()}


def check_names(graph, view: dict) -> None:
    """The traced graph named every parameter leaf as own_params did (a name the Namer had to
    change, a Python keyword or `np`, is a TreeError asking for another key)."""
    for k, v in view.items():
        if not is_tree(v):
            continue
        got = graph.input_trees.get(k)
        for (path, _), (_, name) in zip(leaves(v), leaves(got) if got is not None else []):
            if name != leaf_name(k, path):
                raise TreeError(f"train_step: {spelled(k, path)} was traced as input {name!r}, "
                                f"not {leaf_name(k, path)!r} (a reserved or taken name); "
                                "rename that key")
