"""`show` checked by evaluating it: the math it prints is the math the code runs.

Every `NAME = EXPR` line `show` prints (the forward values, the chain of adjoints and each
param's gradient) is Python over NumPy-like functions. This test runs those lines, in the
order printed, on the params and data of a real call, with each function written here from
SPEC's definition (the oracle: NumPy, not bpcompile's helpers), and compares every param's
printed gradient with `value_and_grad` to 1e-9. It does so on every example, on networks
where two paths add up (tied weights, a def as an activation, shared values) and on random
networks of the differential test. It also checks that a person reads only names the file
wrote: `d_` adjoints of them and the documented suffixes (graph/naming.py), never `tmp`.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from bp_strategies import Case, networks
from conftest import example_paths
from hypothesis import HealthCheck, given, settings

import bpcompile as bpc
from bpcompile.backends.numpy.helpers import HELPERS
from bpcompile.graph.naming import Naming
from bpcompile.inspect.show import describe
from bpcompile.runtime import randomness


def _softmax(x, axis=-1):
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis, keepdims=True)


def _log_softmax(x, axis=-1):
    shifted = x - np.max(x, axis=axis, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))


def _logsumexp(x, axis=None, keepdims=False):
    m = np.max(x, axis=axis, keepdims=True)
    total = m + np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True))
    return total if keepdims else np.squeeze(total, axis=axis)


def _onehot_argmax(x, axis):
    """1 at the first maximum over `axis` (an int or a tuple), in row-major order, as SPEC's
    max gradient goes."""
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    axes = tuple(a % x.ndim for a in axes)
    kept = [a for a in range(x.ndim) if a not in axes]
    moved = np.transpose(x, kept + list(axes))
    flat = moved.reshape(moved.shape[:len(kept)] + (-1,))
    onehot = np.zeros_like(flat)
    np.put_along_axis(onehot, np.argmax(flat, axis=-1)[..., None], 1.0, axis=-1)
    return np.transpose(onehot.reshape(moved.shape), np.argsort(kept + list(axes)))


def _cross_entropy(z, t):
    rows = z.size // z.shape[-1]
    return -np.sum(t * _log_softmax(z, -1)) / rows


FUNCTIONS = {
    "sigmoid": lambda x: 1 / (1 + np.exp(-x)),
    "relu": lambda x: np.maximum(x, 0),
    "softplus": lambda x: np.logaddexp(0, x),
    "leaky_relu": lambda x, alpha: np.where(x > 0, x, alpha * x),
    "elu": lambda x, alpha: np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0))),
    "exp": np.exp, "log": np.log, "sqrt": np.sqrt, "abs": np.abs, "sign": np.sign,
    "tanh": np.tanh, "sin": np.sin, "cos": np.cos, "maximum": np.maximum,
    "minimum": np.minimum, "where": np.where, "heaviside": np.heaviside,
    "logical_and": np.logical_and, "logical_or": np.logical_or,
    "logical_not": np.logical_not, "sum": np.sum, "max": np.max, "reshape": np.reshape,
    "full": np.full, "broadcast_to": np.broadcast_to, "softmax": _softmax,
    "log_softmax": _log_softmax, "logsumexp": _logsumexp, "onehot_argmax": _onehot_argmax,
    "cross_entropy": _cross_entropy,
    # the functions added with tensors of any rank, as NumPy names them
    "tan": np.tan, "sinh": np.sinh, "cosh": np.cosh, "asin": np.arcsin, "acos": np.arccos,
    "atan": np.arctan, "asinh": np.arcsinh, "acosh": np.arccosh, "atanh": np.arctanh,
    "log1p": np.log1p, "expm1": np.expm1, "log2": np.log2, "log10": np.log10,
    "erf": np.vectorize(math.erf, otypes=[float]), "logaddexp": np.logaddexp,
    "hypot": np.hypot, "atan2": np.arctan2, "clip": np.clip, "floor": np.floor,
    "ceil": np.ceil, "round": np.round, "prod": np.prod, "transpose": np.transpose,
    "concatenate": np.concatenate, "argmax": np.argmax, "s_": np.s_, "mean": np.mean,
}
# The helpers show's math calls for the structural ops (conv, conv_transpose, correlate,
# the pools, onehot, take, scatter_add, unslice): the generated module's own definitions,
# whose meaning tests/test_convolution.py and tests/test_tensor_ops.py check against PyTorch.
_HELPERS: dict[str, object] = {"np": np, "DTYPE": np.float64}
exec("\n\n".join(HELPERS.values()), _HELPERS)  # noqa: S102
FUNCTIONS.update({name: _HELPERS[name] for name in (
    "conv", "conv_transpose", "correlate", "max_pool", "avg_pool", "max_pool_grad",
    "avg_pool_grad", "onehot", "take", "scatter_add", "unslice")})
EQUATION = re.compile(r"^    (?P<name>[A-Za-z_]\w*) *= (?P<expr>.+)$")
# Sections of `show` whose lines are equations over values (the others are prose, textbook
# notation or generated code).
MATH_SECTIONS = ("forward values", "chain rule", "gradient:")
# a name read in an expression; a keyword argument's name (`padding=(1, 1)`) is not one
IDENTIFIER = re.compile(r"(?<![\w.])[A-Za-z_]\w*(?!\w|\s*=(?!=))")
# The documented affixes a name may carry (graph/naming.py), and the words of NAME_FUNCTION.
PREFIXES = ("d_", "new_")
SUFFIX = re.compile(r"_(pre|part|\d+|[a-z]+(_[a-z]+)?|T)")


def names_people_wrote(net: bpc.CompiledNet) -> set[str]:
    """The names the `.bp` file wrote, as code spells them, and `loss`."""
    graph = net.compiled.graph
    written = {n.name for n in graph.nodes if n.name and not n.derived and not n.adjoint}
    sizes = {d for shape in net.network.data.values() for d in shape if isinstance(d, str)}
    return {name.replace(".", "_") for name in written | sizes} | {"loss"}


def readable(name: str, written: set[str]) -> bool:
    """Is `name` one the file wrote, or made from one with the documented affixes?"""
    if name in written or name.rstrip("_") in written or name in FUNCTIONS \
            or name in ("axis", "keepdims", "True", "False"):
        return True
    for prefix in PREFIXES:
        if name.startswith(prefix) and readable(name[len(prefix):], written):
            return True
    return any(SUFFIX.fullmatch(name[k:]) and readable(name[:k], written)
               for k in range(1, len(name)) if name[k] == "_")


def equations(text: str) -> list[tuple[str, str]]:
    """(name, expression) of every equation line in `show`'s math sections, in order."""
    found, inside = [], False
    for line in text.splitlines():
        if line.startswith("  ") and not line.startswith("    "):
            inside = line.strip().startswith(MATH_SECTIONS)
            continue
        if not line.startswith(" "):
            inside = False
            continue
        match = EQUATION.match(line)
        if inside and match:
            found.append((match["name"], match["expr"]))
    return found


def evaluate(net: bpc.CompiledNet, p: dict, data: dict) -> dict[str, np.ndarray]:
    """Run what `show` prints; each param's printed gradient, by param name."""
    naming = Naming(net.compiled.graph)
    _, env = run_show(net, p, data)
    return {param: np.asarray(env[f"d_{naming[net.compiled.graph.params[param]].code}"])
            for param in net.compiled.graph.trained}


def run_show(net: bpc.CompiledNet, p: dict, data: dict) -> tuple[str, dict[str, object]]:
    """What `show` prints, and the values of its equations run in order."""
    text = describe(net)
    naming = Naming(net.compiled.graph)
    graph = net.compiled.graph
    env: dict[str, object] = dict(FUNCTIONS)
    for name, i in graph.params.items():
        env[naming[i].code] = p[name]
    for name, i in graph.inputs.items():
        env[naming[i].code] = np.asarray(data[name], dtype=np.float64)
        for axis, dim in enumerate(net.network.data[name]):
            if isinstance(dim, str):
                env[dim] = data[name].shape[axis]
    printed = equations(text)
    assert printed, text
    written = names_people_wrote(net)
    for name, expr in printed:
        for identifier in [name, *IDENTIFIER.findall(expr)]:
            assert readable(identifier, written), (identifier, f"{name} = {expr}")
        with np.errstate(all="ignore"):
            env[name] = eval(expr, {"__builtins__": {}}, env)  # noqa: S307
    return text, env


def assert_show_is_the_gradient(net: bpc.CompiledNet, p: dict, data: dict) -> None:
    # dropout's masks are arrays the printed math reads; value_and_grad draws them itself
    _, grads = net.value_and_grad(p, **{n: v for n, v in data.items()
                                        if n not in net.signature.masks})
    shown = evaluate(net, p, data)
    for name, grad in grads.items():
        scale = max(1.0, float(np.max(np.abs(grad), initial=0.0)))
        got = np.broadcast_to(shown[name], grad.shape)
        np.testing.assert_allclose(got, grad, rtol=1e-9, atol=1e-9 * scale, err_msg=name)


def random_point(net: bpc.CompiledNet, seed: int, batch: int = 3) -> tuple[dict, dict]:
    rng = np.random.default_rng(seed)
    p = {n: rng.uniform(-1, 1, size=s) for n, s in net.params.items()}
    p.update({n: rng.uniform(0.5, 1.5, size=s) for n, s in net.buffers.items()})
    data = {}
    for name, shape in net.network.data.items():
        concrete = tuple(batch if isinstance(d, str) else d for d in shape)
        values = rng.uniform(0.05, 0.95, size=concrete)
        if name in net.signature.indices:  # class indices, a gather's rows: in range
            values = rng.integers(0, net.signature.indices[name], concrete).astype(float)
        elif name in net.targets and concrete:  # rows summing to 1 suit every loss
            values = values / np.sum(values, axis=-1, keepdims=True)
        data[name] = values
    return p, with_masks(net, data)


def with_masks(net: bpc.CompiledNet, data: dict) -> dict:
    """data and the masks value_and_grad draws with no state (seed 0, step 0)."""
    sizes = {d: np.shape(data[name])[axis] for name, shape in net.network.data.items()
             if name in data for axis, d in enumerate(shape) if isinstance(d, str)}
    masks = randomness.draw_masks(net.signature.masks, sizes, None, np.dtype(np.float64))
    return {**data, **masks}


@pytest.mark.parametrize("example", example_paths(), ids=lambda p: p.name)
def test_show_of_every_example_evaluates_to_the_gradient(example) -> None:
    net = bpc.compile_file(example)
    p, data = random_point(net, seed=1)
    assert_show_is_the_gradient(net, p, data)


# Two paths that add up (the examples), and values the backward pass shares.
NETWORKS = {
    "tied weights": """
input x[N, 4]
param W[4, 2]
param b[2] = zeros
param c[4] = zeros
code = tanh(x @ W + b)
recon = code @ W.T + c
loss mse(recon, x)
""",
    "swish activation": """
def swish(z) = z * sigmoid(z)
input x[N, 3]
target t[N, 1]
h = dense(x, 4, act=swish)
y = dense(h, 1)
loss mse(y, t)
""",
    "sigmoid with binary cross-entropy": """
input x[N, 2]
target t[N, 1]
h = dense(x, 3, act=tanh)
y = dense(h, 1, act=sigmoid)
loss binary_cross_entropy(y, t)
""",
    "a value read by every later line": """
input x[N, 3]
param W[3, 3]
param v[3]
u = x @ W
s = sum(u * v, axis=1, keepdims=true)
loss mean(logsumexp(u - s, axis=1)) + sum(max(u, axis=0) * v) + sum(W @ W.T)
""",
    "a user tensor named d_x": """
input x[N, 2]
param W[2, 2]
d_x = x @ W
y = tanh(d_x) + x
loss sum(y ** 2)
""",
}


@pytest.mark.parametrize("name", list(NETWORKS))
def test_show_evaluates_to_the_gradient_where_paths_add_up(name: str) -> None:
    net = bpc.compile(NETWORKS[name])
    p, data = random_point(net, seed=2)
    assert_show_is_the_gradient(net, p, data)


def test_the_adjoint_of_x_is_not_the_users_d_x() -> None:
    """A tensor the file calls `d_x` keeps its name; the adjoint of `x` takes another, and
    the picture does not draw the user's `d_x` as an adjoint."""
    from bpcompile.inspect.picture import picture

    net = bpc.compile(NETWORKS["a user tensor named d_x"])
    graph = net.compiled.graph
    user = next(i for i, n in enumerate(graph.nodes) if n.name == "d_x" and not n.adjoint)
    naming = Naming(graph)
    assert naming[user].code == "d_x"
    assert not graph.nodes[user].adjoint
    adjoints = [naming[i].code for i, n in enumerate(graph.nodes) if n.adjoint]
    assert "d_x" not in adjoints and "d_d_x" in adjoints
    pic = picture(net, backward=True)
    box = next(b for b in pic.boxes if b.id == f"n{user}")
    assert not box.backward and box.lines[0].startswith("d_x = ")


@settings(max_examples=30, deadline=None, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.large_base_example])
@given(case=networks(loss=True))
def test_show_of_random_networks_evaluates_to_the_gradient(case: Case) -> None:
    net = bpc.compile(case.source)
    data = {n: case.data[n] for n in net.network.data if n not in net.signature.masks}
    assert_show_is_the_gradient(net, dict(case.point), with_masks(net, data))


NORMALIZATIONS = {
    "batchnorm": """
input x[N, 2]
target t[N, 3]
h = dense(x, 3)
z = batchnorm(h)
loss mse(sigmoid(z), t)
""",
    "batchnorm 2-D": """
input x[N, 2, 4, 4]
target t[N, 3, 4, 4]
param K[3, 2, 3, 3] = normal(0.3)
h = conv2d(x, K, padding=1)
y = batchnorm(h)
loss mse(tanh(y), t)
""",
    "layernorm and normalize": """
input x[N, 4]
target t[N, 4]
h = dense(x, 4)
y = layernorm(h)
v = tanh(y)
u = normalize(v, axis=1)
loss mse(u * u, t)
""",
}


def textbook_sections(text: str) -> list[list[tuple[str, str]]]:
    """The equations of each `textbook form of the input gradient` section."""
    sections: list[list[tuple[str, str]]] = []
    inside = False
    for line in text.splitlines():
        if not line.startswith("    "):
            inside = line.startswith("  textbook form of the input gradient")
            if inside:
                sections.append([])
        elif inside and (match := EQUATION.match(line)):
            sections[-1].append((match["name"], match["expr"]))
    return sections


@pytest.mark.parametrize("source", NORMALIZATIONS.values(), ids=list(NORMALIZATIONS))
def test_textbook_normalization_gradient_is_the_chain_rule(source: str) -> None:
    """`dx = gamma * rstd * (dy - mean(dy) - x_hat * mean(dy * x_hat))`, which SymPy folded
    from the definition, run on real values: it equals the chain rule's d_x printed above
    (itself tied to value_and_grad by the tests above)."""
    net = bpc.compile("network n\n" + source + "optimize sgd(lr=0.1)\n")
    p, data = random_point(net, seed=3, batch=5)
    text, env = run_show(net, p, data)
    sections = textbook_sections(text)
    assert len(sections) == len(re.findall(r"(batchnorm|layernorm|normalize)\(", source)), text
    written = names_people_wrote(net)
    for section in sections:
        (hat, hat_expr), (gradient, expr) = section
        for identifier in [hat, *IDENTIFIER.findall(hat_expr + " " + expr)]:
            assert readable(identifier, written), identifier
        local = dict(env)
        local[hat] = eval(hat_expr, {"__builtins__": {}}, local)  # noqa: S307
        textbook = eval(expr, {"__builtins__": {}}, local)  # noqa: S307
        np.testing.assert_allclose(textbook, env[gradient], rtol=1e-9,
                                   atol=1e-12 * np.max(np.abs(env[gradient])))
        assert np.max(np.abs(textbook)) > 1e-6  # not a vanishing comparison
