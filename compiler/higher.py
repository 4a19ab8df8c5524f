"""Second derivatives as graph transformations: Hessian-vector products and Hessians.

Reverse mode (`compiler.grad`) turns a graph into an ordinary graph, so its result can be
differentiated again.  Both functions here are built from two reverse passes ("reverse over
reverse"), never from numbers:

    hvp(graph, wrt)       H·v.  The first pass gives ∇f; a new input v_x per x in `wrt` and
                          the scalar ⟨∇f, v⟩ = Σ_x Σ dx ⊙ v_x are appended; the second pass
                          differentiates ⟨∇f, v⟩ w.r.t. `wrt`:
                              ∂/∂x ⟨∇f(x), v⟩ = Σ_j v_j ∂²f/∂x∂x_j = (H·v)_x   (H symmetric).
                          Its cost is a small multiple of one gradient (the second pass walks
                          the forward and the first backward pass once: about 2-3x).

    hessian(graph, wrt)   the full Hessian of f w.r.t. one input w, H[i, j] = ∂²f/∂w_i∂w_j, of
                          shape w.shape + w.shape.  Row i is the HVP with v = e_i (the i-th unit
                          vector), ⟨∇f, e_i⟩ = (∇f)_i, so it is one second reverse pass per
                          element of w, stacked with putitem: n passes for n elements.  Meant
                          for small inputs (at most `max_elements`, default 256).

Gradients of gradients with `compiler.grad` work too: the output to differentiate must be a
float scalar, so `compiler.grad(compiler.grad(g), of="dx", wrt=["x", "y"])` differentiates
the scalar gradient dx (outputs ddx_dx = ∂²f/∂x², ddx_dy = ∂²f/∂x∂y: a name `d<x>` already taken
by the first pass becomes `d<of>_d<x>`).  A non-scalar gradient dw has no gradient of its own
(reverse mode needs a scalar): its second derivatives are `hvp` (any size) and `hessian` (small).
"""
from __future__ import annotations

import numpy as np

from . import builder as B
from . import trees
from .autodiff import _copy_forward, _pick_output, _wrt_list, grad, gradient_name, reverse_mode
from .builder import Builder, Var
from .ir import GradcError, Graph, Namer

HESSIAN_MAX_ELEMENTS = 256


def _reverse_pass(guard: bool):
    """`compiler.grad`, or with guard=False reverse mode before the selected-zero pass
    (compiler/passes/selected_zeros.py): the same values wherever no selected zero meets an
    infinite local derivative (0·inf), which is what check_hessian_against_sympy renders."""
    return grad if guard else (lambda graph, wrt, of: reverse_mode(graph, wrt, of)[0])


def _with_dot(first: Graph, wrt: list, name: str, dnames: dict):
    """A copy of the gradient graph `first` with new inputs v_<x> and the scalar
    gv = Σ_x Σ d<x> ⊙ v_<x> as its only output (the seed of the second reverse pass);
    `dnames[x]` is the output name of d<x> in `first`."""
    new, env = _copy_forward(first, name)
    b = Builder(new, Namer(env))
    for x in wrt:
        if "v_" + x in env:
            raise GradcError(f"hvp: the graph already has a value named 'v_{x}' (the name of "
                             f"the direction input for {x!r}); rename it")
    dirs = {x: b.add_input("v_" + x, env[x].type) for x in wrt}
    b.rule, b.of = "hvp: gv = ⟨∇f, v⟩ = Σ d<x>·v_<x>", None
    total = None
    for x in wrt:
        d = Var(b, env[first.outputs[dnames[x]].name])
        term = B.sum(d * dirs[x])
        total = term if total is None else total + term
    b.rename(total, "gv")
    new.outputs = {"gv": total.value}
    return new


def hvp(graph: Graph, wrt=None, of=None, *, guard: bool = True) -> Graph:
    """The Hessian-vector product of output `of` (a float scalar f) w.r.t. the inputs `wrt`
    (default: every float input), by reverse over reverse (see the module docstring).

    The returned graph takes the inputs of `graph` plus one direction `v_<x>` per x in `wrt`
    (x's type) and returns the outputs of `graph`, the gradients `d<x>`, and `hv_<x>`:
        hv_<x> = Σ_y ∂²f/∂x∂y · v_<y>      (the x block of H·v over all of `wrt`).
    guard=False: both reverse passes without the selected-zero guards (see _reverse_pass)."""
    wrt = _wrt_list(graph, trees.resolve_wrt(graph, wrt)[0])   # a tree or path: its leaves
    of, _ = _pick_output(graph, of)
    reverse = _reverse_pass(guard)
    first = reverse(graph, wrt, of)
    dnames = {x: gradient_name(graph.outputs, of, x) for x in wrt}
    seeded = _with_dot(first, wrt, f"{graph.name}_hvp", dnames)
    second = reverse(seeded, wrt, "gv")
    vals = second.values()
    created = {n.out.name for n in second.nodes[len(seeded.nodes):]}
    outputs = {k: vals[v.name] for k, v in first.outputs.items()}
    for x in wrt:
        key = "hv_" + x
        if key in outputs:
            raise GradcError(f"hvp: output name {key!r} is taken; rename the input {x!r}")
        hv = second.outputs["d" + x]
        if hv.name in created and key not in vals:    # `hv_w = ...` in the emitted code
            hv.name = key
        outputs[key] = hv
    second.outputs = outputs
    return second


def hessian(graph: Graph, wrt=None, of=None, max_elements: int = HESSIAN_MAX_ELEMENTS, *,
            guard: bool = True) -> Graph:
    """The full Hessian of output `of` (a float scalar f) w.r.t. the one input `wrt`, stacked
    from one second reverse pass per element (see the module docstring): for small inputs.

    The returned graph takes the inputs of `graph` and returns its outputs, the gradient
    `d<w>` and `hessian_<w>` of shape w.shape + w.shape, hessian_<w>[i..., j...] =
    ∂²f/∂w[i...]∂w[j...].  guard=False: every reverse pass without the selected-zero guards
    (see _reverse_pass)."""
    names = _wrt_list(graph, trees.resolve_wrt(graph, wrt)[0])   # a leaf's path too
    if len(names) != 1:
        raise GradcError(f"hessian: give one input, wrt='name' (got {names}); for several "
                         "inputs use hvp, or one hessian per input")
    w = names[0]
    of, _ = _pick_output(graph, of)
    wtype = graph.input(w).type
    if wtype.size > max_elements:
        raise GradcError(f"hessian: input {w!r} has {wtype.size} elements (limit "
                         f"{max_elements}): the Hessian is stacked from one reverse pass per "
                         "element; use hvp(graph, wrt) for H·v at this size")
    reverse = _reverse_pass(guard)
    first = reverse(graph, [w], of)
    current, _ = _copy_forward(first, f"{graph.name}_hessian")
    dname = first.outputs[gradient_name(graph.outputs, of, w)].name
    rows = []
    for idx in np.ndindex(*wtype.shape):
        b = Builder(current, Namer(current.values()))
        b.rule, b.of = f"hessian: row {list(idx)} = ∂(∇f){list(idx)}/∂{w}", None
        d = Var(b, current.values()[dname])
        key = "gv" + "".join(f"_{i}" for i in idx)
        pick = B.getitem(d, idx)          # d itself when w is a scalar
        if pick.value.temp:
            b.rename(pick, key)
        current.outputs = {key: pick.value}
        current = reverse(current, [w], key)   # the second pass for this row
        rows.append((idx, current.outputs["d" + w].name))
    vals = current.values()
    b = Builder(current, Namer(vals))
    b.rule, b.of = "hessian: rows stacked", None
    full = wtype.shape + wtype.shape
    total = None
    for idx, name in rows:
        row = Var(b, vals[name])
        if not idx:
            total = B.reshape(row, full) if row.shape != full else row
            continue
        index = tuple(idx) + tuple((0, n, 1) for n in wtype.shape)
        placed = b.emit("putitem", [row], index=index, shape=full)
        total = placed if total is None else total + placed
    if total.value.temp:
        b.rename(total, "hessian_" + w)
    outputs = {k: vals[v.name] for k, v in first.outputs.items()}
    if "hessian_" + w in outputs:
        raise GradcError(f"hessian: output name 'hessian_{w}' is taken; rename the input {w!r}")
    outputs["hessian_" + w] = total.value
    current.outputs = outputs
    return current
