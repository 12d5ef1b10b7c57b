"""Gradients of every built-in, operator and structural op against central finite differences.

Oracle: a fourth-order central difference, (-L(v+2h) + 8 L(v+h) - 8 L(v-h) + L(v-2h)) / 12h,
taken entry by entry in float64 by the loop in this file (not by bpcompile.gradcheck), on the
network's own `loss`. Where the loss is a simple formula, its value is also checked against
NumPy written here. Inputs are drawn away from kinks (relu and abs at 0, ties of max and
maximum, log and sqrt of non-positive numbers), so the differences are exact to rounding.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable

import numpy as np
import pytest

import bpcompile as bpc

Arrays = dict[str, np.ndarray]

STEP = 1e-4          # relative finite-difference step
RTOL = 1e-7          # a wrong derivative is off by far more; rounding is far less
ATOL = 1e-9          # times the scale of the loss and gradient


# ------------------------------------------------------------------------ the oracle


def central_differences(net: bpc.CompiledNet, p: Arrays, data: Arrays) -> Arrays:
    """d loss / d p, entry by entry, by a fourth-order central difference in float64."""
    grads: Arrays = {}
    for name, value in p.items():
        grad = np.zeros_like(value, dtype=np.float64)
        for index in np.ndindex(value.shape):
            h = STEP * max(1.0, abs(float(value[index])))
            losses = []
            for k in (2, 1, -1, -2):
                shifted = {n: v.copy() for n, v in p.items()}
                shifted[name][index] = value[index] + k * h
                losses.append(net.loss(shifted, **data))
            grad[index] = (-losses[0] + 8 * losses[1] - 8 * losses[2] + losses[3]) / (12 * h)
        grads[name] = grad
    return grads


def assert_gradients_match(net, p: Arrays, data: Arrays) -> tuple[float, Arrays]:
    """value_and_grad agrees with `loss` and with central differences; returns them."""
    value, grads = net.value_and_grad(p, **data)
    assert set(grads) == set(p), "a gradient for every param, and nothing else"
    assert math.isfinite(value)
    assert value == pytest.approx(net.loss(p, **data), rel=1e-13, abs=1e-13)
    numeric = central_differences(net, p, data)
    scale = max([1.0, abs(value)] + [float(np.max(np.abs(g))) for g in numeric.values()])
    for name, expected in numeric.items():
        got = np.asarray(grads[name])
        assert got.shape == p[name].shape, f"d_{name} has shape {got.shape}"
        assert np.all(np.isfinite(got)), f"d_{name} is not finite"
        np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL * scale,
                                   err_msg=f"gradient of {name}")
    return value, grads


def away_from(rng: np.random.Generator, shape: tuple[int, ...], low: float, high: float,
              margin: float = 0.1, positive: bool = False) -> np.ndarray:
    """Uniform in [low, high] (random sign unless `positive`), |x| >= margin."""
    magnitude = rng.uniform(max(low, margin), high, size=shape)
    if positive:
        return magnitude
    return magnitude * rng.choice([-1.0, 1.0], size=shape)


def distinct_pair(rng: np.random.Generator, shape: tuple[int, ...],
                  gap: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """Two positive arrays whose entries differ by at least `gap` everywhere (no ties)."""
    a = rng.uniform(0.5, 2.0, size=shape)
    b = a + rng.uniform(gap, 1.0, size=shape) * rng.choice([-1.0, 1.0], size=shape)
    b = np.where(b < 0.3, a + rng.uniform(gap, 1.0, size=shape), b)
    assert np.min(np.abs(a - b)) >= gap - 1e-12 and np.min(b) > 0
    return a, b


def random_params(net, rng: np.random.Generator, scale: float = 0.7) -> Arrays:
    return {name: rng.normal(0.0, scale, size=shape) for name, shape in net.params.items()}


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


# --------------------------------------------------- elementwise built-ins of one tensor

# bp expression of z -> (NumPy reference, domain of z)
UNARY: dict[str, tuple[Callable[[np.ndarray], np.ndarray], str]] = {
    "exp(z)": (np.exp, "any"),
    "log(z)": (np.log, "positive"),
    "sqrt(z)": (np.sqrt, "positive"),
    "abs(z)": (np.abs, "any"),
    "square(z)": (np.square, "any"),
    "sin(z)": (np.sin, "any"),
    "cos(z)": (np.cos, "any"),
    "tanh(z)": (np.tanh, "any"),
    "sigmoid(z)": (sigmoid, "any"),
    "relu(z)": (lambda x: np.maximum(x, 0.0), "any"),
    "softplus(z)": (lambda x: np.log1p(np.exp(x)), "any"),
    "leaky_relu(z)": (lambda x: np.where(x > 0, x, 0.01 * x), "any"),
    "leaky_relu(z, alpha=0.2)": (lambda x: np.where(x > 0, x, 0.2 * x), "any"),
    "leaky_relu(z, 0.3)": (lambda x: np.where(x > 0, x, 0.3 * x), "any"),
    "elu(z)": (lambda x: np.where(x > 0, x, np.expm1(x)), "any"),
    "elu(z, alpha=0.5)": (lambda x: np.where(x > 0, x, 0.5 * np.expm1(x)), "any"),
    "elu(z, 2)": (lambda x: np.where(x > 0, x, 2.0 * np.expm1(x)), "any"),
    "gelu(z)": (gelu, "any"),
    "linear(z)": (lambda x: x, "any"),
    "-z": (lambda x: -x, "any"),
    "z ** 3": (lambda x: x**3, "any"),
    "z ** 0.5": (np.sqrt, "positive"),
    "z ** -2": (lambda x: x**-2.0, "any"),
    "2 ** z": (lambda x: 2.0**x, "any"),
    "1 / z": (lambda x: 1.0 / x, "any"),
    "z / 4": (lambda x: x / 4.0, "any"),
    "3 - z": (lambda x: 3.0 - x, "any"),
    "--z": (lambda x: x, "any"),
    "-z ** 2": (lambda x: -(x**2), "any"),
    "(z > 0.05) * z": (lambda x: (x > 0.05) * x, "any"),
}


@pytest.mark.parametrize("expr", list(UNARY))
def test_elementwise_builtin(backend: str, expr: str) -> None:
    reference, domain = UNARY[expr]
    source = f"""
param z[4, 3]
input c[4, 3]
loss sum(({expr}) * c)
"""
    net = bpc.compile(source, backend=backend)
    rng = np.random.default_rng(zlib.crc32(expr.encode()))
    z = away_from(rng, (4, 3), 0.2, 2.0, positive=(domain == "positive"))
    c = rng.normal(size=(4, 3))
    value, _ = assert_gradients_match(net, {"z": z}, {"c": c})
    assert value == pytest.approx(float(np.sum(reference(z) * c)), rel=1e-12, abs=1e-12)


# ------------------------------------------------------- operators of two tensors

BINARY: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "a + b": lambda a, b: a + b,
    "a - b": lambda a, b: a - b,
    "a * b": lambda a, b: a * b,
    "a / b": lambda a, b: a / b,
    "a ** b": lambda a, b: a**b,
    "b ** a": lambda a, b: b**a,
    "-(a * b)": lambda a, b: -(a * b),
    "a - -b": lambda a, b: a + b,
    "a * b / (a + b)": lambda a, b: a * b / (a + b),
    "maximum(a, b)": np.maximum,
    "minimum(a, b)": np.minimum,
    "where(a > b, a * a, 3 * b)": lambda a, b: np.where(a > b, a * a, 3 * b),
    "where(a < b, sin(a), b)": lambda a, b: np.where(a < b, np.sin(a), b),
    "(a > b) * a": lambda a, b: (a > b) * a,
    "(a >= b) * b + (a < b) * a": lambda a, b: (a >= b) * b + (a < b) * a,
    "(a <= b) * a * b": lambda a, b: (a <= b) * a * b,
    "(a == a) * b": lambda a, b: b,
    "(a != b) * a": lambda a, b: a,
    "a > b": lambda a, b: (a > b).astype(float),
    "(a > b) + (a < b) + (a == b)": lambda a, b: np.ones_like(a),
}


@pytest.mark.parametrize("expr", list(BINARY))
def test_operator(backend: str, expr: str) -> None:
    source = f"""
param a[4, 3]
param b[4, 3]
input c[4, 3]
loss sum(({expr}) * c)
"""
    net = bpc.compile(source, backend=backend)
    rng = np.random.default_rng(zlib.crc32(expr.encode()))
    a, b = distinct_pair(rng, (4, 3))
    c = rng.normal(size=(4, 3))
    value, grads = assert_gradients_match(net, {"a": a, "b": b}, {"c": c})
    assert value == pytest.approx(float(np.sum(BINARY[expr](a, b) * c)), rel=1e-12, abs=1e-12)


def test_comparisons_have_no_gradient(backend: str) -> None:
    source = """
param a[4, 3]
param b[4, 3]
input c[4, 3]
loss sum(((a < b) + (a <= b) + (a > b) + (a >= b) + (a == b) + (a != b)) * c)
"""
    net = bpc.compile(source, backend=backend)
    rng = np.random.default_rng(7)
    a, b = distinct_pair(rng, (4, 3))
    c = rng.normal(size=(4, 3))
    _, grads = assert_gradients_match(net, {"a": a, "b": b}, {"c": c})
    assert not np.any(grads["a"]) and not np.any(grads["b"])


# ------------------------------------------------------------------------- matmul


MATMUL_CASES = [
    # (declarations, loss, data shapes)
    ("param u[3]\nparam v[3]", "sin(u @ v)", {}),
    ("param u[3]\nparam B[3, 4]\ninput c[4]", "sum((u @ B) * c)", {"c": (4,)}),
    ("param A[4, 3]\nparam v[3]\ninput c[4]", "sum((A @ v) * c)", {"c": (4,)}),
    ("param A[4, 3]\nparam B[3, 2]\ninput c[4, 2]", "sum((A @ B) * c)", {"c": (4, 2)}),
    ("input u[3]\nparam B[3, 4]\ninput c[4]", "sum(tanh(u @ B) * c)", {"u": (3,), "c": (4,)}),
    ("param A[4, 3]\ninput v[3]\ninput c[4]", "sum(tanh(A @ v) * c)", {"v": (3,), "c": (4,)}),
    ("input x[N, 3]\nparam W[3, 2]\ninput c[N, 2]", "sum((x @ W) * c)",
     {"x": (5, 3), "c": (5, 2)}),
    ("input x[N, 3]\nparam W[2, 3]\ninput c[2, N]", "sum((W @ x.T) * c)",
     {"x": (5, 3), "c": (2, 5)}),
    ("param A[3, 4]\nparam B[3, 2]\ninput c[4, 2]", "sum((A.T @ B) * c)", {"c": (4, 2)}),
    ("param A[3, 4]\ninput c[4, 3]", "sum(A.T * c)", {"c": (4, 3)}),
    ("param A[3, 4]\ninput c[3, 3]", "sum((A @ A.T) * c)", {"c": (3, 3)}),
    ("param A[3, 3]\ninput c[3, 3]", "sum((A @ A) * c)", {"c": (3, 3)}),
    ("param W[3, 3]\ninput x[N, 3]\ninput c[N, 3]", "sum((x @ W + x @ W.T) * c)",
     {"x": (4, 3), "c": (4, 3)}),
    ("param W[3, 3]", "sum(W * W.T) + sum(W.T.T * W)", {}),
    ("param u[3]\nparam A[3, 3]", "u @ A @ u", {}),
    ("param u[3]\nparam A[3, 3]", "(u @ A) @ (A @ u)", {}),
    ("input x[N, 3]\nparam W[3, 2]\ninput c[2, N]", "sum((x @ W).T * c)",
     {"x": (5, 3), "c": (2, 5)}),
    ("input x[N, 3]\nparam W[3, 2]", "max(x @ W) + sum(max(x @ W, axis=0))", {"x": (5, 3)}),
    # products and quotients of matmuls: `*`, `/` and `@` share one precedence level
    ("param z[4, 3]\ninput c[4, 3]", "sum((z @ z.T) * (c @ c.T))", {"c": (4, 3)}),
    ("input x[N, 3]\nparam W[3, 2]\nparam V[3, 2]", "sum(x @ W * (x @ V) * 2)", {"x": (5, 3)}),
    ("input x[N, 3]\nparam W[3, 2]\nparam V[3, 2]",
     "sum((x @ W) / (3 + (x @ V) * (x @ V)))", {"x": (5, 3)}),
    ("input x[N, 3]\nparam W[3, 3]\nparam V[3, 3]", "sum(x @ (W * V) @ (W / (1 + V * V)))",
     {"x": (5, 3)}),
]


@pytest.mark.parametrize("declarations, loss, data", MATMUL_CASES,
                         ids=[case[1] for case in MATMUL_CASES])
def test_matmul_and_transpose(backend: str, declarations: str, loss: str,
                              data: dict[str, tuple[int, ...]]) -> None:
    net = bpc.compile(f"{declarations}\nloss {loss}\n", backend=backend)
    rng = np.random.default_rng(11)
    p = random_params(net, rng)
    arrays = {name: rng.normal(size=shape) for name, shape in data.items()}
    assert_gradients_match(net, p, arrays)


def test_where_with_a_data_condition(backend: str) -> None:
    source = """
input m[4, 3]
input c[4, 3]
param a[4, 3]
param b[3]
loss sum(where(m, exp(a), b * a) * c)
"""
    net = bpc.compile(source, backend=backend)
    rng = np.random.default_rng(13)
    m = rng.integers(0, 2, size=(4, 3)).astype(float)
    c = rng.normal(size=(4, 3))
    p = {"a": rng.normal(size=(4, 3)), "b": rng.normal(size=3)}
    value, grads = assert_gradients_match(net, p, {"m": m, "c": c})
    expected = np.sum(np.where(m != 0, np.exp(p["a"]), p["b"] * p["a"]) * c)
    assert value == pytest.approx(float(expected), rel=1e-12)


# ---------------------------------------------------------------------- reductions


def _reduced(shape: tuple[int, ...], axis: int | None, keepdims: bool) -> tuple[int, ...]:
    return np.sum(np.zeros(shape), axis=axis, keepdims=keepdims).shape


REDUCTIONS = ["sum", "mean", "max", "logsumexp"]
AXES = [((3, 4), None), ((3, 4), 0), ((3, 4), 1), ((3, 4), -1), ((3, 4), -2),
        ((2, 3, 4), None), ((2, 3, 4), 1), ((2, 3, 4), -1), ((2, 3, 4), -3), ((5,), 0),
        ((5,), None)]


def _numpy_reduction(op: str, z: np.ndarray, axis: int | None, keepdims: bool) -> np.ndarray:
    if op == "logsumexp":
        m = np.max(z, axis=axis, keepdims=True)
        total = m + np.log(np.sum(np.exp(z - m), axis=axis, keepdims=True))
        return total if keepdims else np.squeeze(total, axis=axis)
    return getattr(np, op)(z, axis=axis, keepdims=keepdims)


@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("shape, axis", AXES, ids=[f"{s}-axis{a}" for s, a in AXES])
@pytest.mark.parametrize("op", REDUCTIONS)
def test_reduction(backend: str, op: str, shape: tuple[int, ...], axis: int | None,
                   keepdims: bool) -> None:
    dims = ", ".join(map(str, shape))
    args = "z" + ("" if axis is None else f", axis={axis}") + \
        (", keepdims=true" if keepdims else "")
    reduced = _reduced(shape, axis, keepdims)
    if reduced:
        c_dims = ", ".join(map(str, reduced))
        source = f"param z[{dims}]\ninput c[{c_dims}]\nloss sum(sin({op}({args})) * c)\n"
    else:
        source = f"param z[{dims}]\nloss sin({op}({args}))\n"
    net = bpc.compile(source, backend=backend)
    rng = np.random.default_rng(3)
    z = rng.permutation(np.linspace(-2.0, 2.0, int(np.prod(shape)))).reshape(shape)  # no ties
    data = {"c": rng.normal(size=reduced)} if reduced else {}
    value, _ = assert_gradients_match(net, {"z": z}, data)
    r = np.sin(_numpy_reduction(op, z, axis, keepdims))
    assert r.shape == reduced
    expected = float(np.sum(r * data["c"])) if reduced else float(r)
    assert value == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_max_gradient_goes_to_one_entry(backend: str) -> None:
    """Away from ties, the gradient of max is 1 at the arg-max and 0 elsewhere."""
    net = bpc.compile("param z[3, 4]\nloss sum(max(z, axis=1))\n", backend=backend)
    z = np.random.default_rng(5).normal(size=(3, 4))
    _, grads = assert_gradients_match(net, {"z": z}, {})
    expected = (z == z.max(axis=1, keepdims=True)).astype(float)
    np.testing.assert_array_equal(grads["z"], expected)


@pytest.mark.parametrize("axis", [None, 1])
def test_max_gradient_at_ties_goes_to_the_first_arg_max(backend: str, axis: int | None) -> None:
    """The spec's rule where differences cannot decide: the first arg-max gets it all."""
    args = "z" if axis is None else f"z, axis={axis}"
    net = bpc.compile(f"param z[2, 4]\nloss sum({args.join(['max(', ')'])})\n",
                      backend=backend)
    z = np.array([[1.0, 3.0, 3.0, 0.0], [3.0, -1.0, 2.0, 3.0]])
    _, grads = net.value_and_grad({"z": z})
    flat_first = np.zeros(z.size)
    flat_first[int(np.argmax(z))] = 1.0
    expected = flat_first.reshape(z.shape) if axis is None else \
        np.eye(4)[np.argmax(z, axis=1)]
    np.testing.assert_array_equal(grads["z"], expected)


def test_sizes_in_expressions(backend: str) -> None:
    """A symbolic size read as a number: sum(...) / N is the mean."""
    source = """
input x[N, 2]
target t[N, 2]
param W[2, 2]
loss sum((x @ W - t) ** 2) / N + N * sum(W ** 2) / 100
"""
    net = bpc.compile(source, backend=backend)
    rng = np.random.default_rng(14)
    p = random_params(net, rng)
    for n in (1, 3, 7):
        x, t = rng.normal(size=(n, 2)), rng.normal(size=(n, 2))
        value, _ = assert_gradients_match(net, p, {"x": x, "t": t})
        expected = np.sum((x @ p["W"] - t) ** 2) / n + n * np.sum(p["W"] ** 2) / 100
        assert value == pytest.approx(float(expected), rel=1e-12)


# ------------------------------------------------------------ softmax, log_softmax


SOFTMAX_AXES = [((3, 4), None), ((3, 4), 0), ((3, 4), 1), ((3, 4), -1), ((3, 4), -2),
                ((2, 3, 4), 1), ((2, 3, 4), -3), ((5,), None)]


def _numpy_softmax(z: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(z - np.max(z, axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis, keepdims=True)


@pytest.mark.parametrize("shape, axis", SOFTMAX_AXES,
                         ids=[f"{s}-axis{a}" for s, a in SOFTMAX_AXES])
@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
def test_softmax_family(backend: str, op: str, shape: tuple[int, ...],
                        axis: int | None) -> None:
    dims = ", ".join(map(str, shape))
    args = "z" if axis is None else f"z, axis={axis}"
    source = f"param z[{dims}]\ninput c[{dims}]\nloss sum({op}({args}) * c)\n"
    net = bpc.compile(source, backend=backend)
    rng = np.random.default_rng(8)
    z = rng.normal(size=shape)
    c = rng.normal(size=shape)
    value, _ = assert_gradients_match(net, {"z": z}, {"c": c})
    s = _numpy_softmax(z, -1 if axis is None else axis)
    expected = s if op == "softmax" else np.log(s)
    assert value == pytest.approx(float(np.sum(expected * c)), rel=1e-12, abs=1e-12)


def test_softmax_then_log_softmax_chain(backend: str) -> None:
    source = """
input x[N, 4]
param W[4, 3]
input c[N, 3]
p = softmax(x @ W, axis=1)
loss sum(log_softmax(p * 3, axis=0) * c) + sum(p * p)
"""
    net = bpc.compile(source, backend=backend)
    rng = np.random.default_rng(9)
    p = random_params(net, rng)
    assert_gradients_match(net, p, {"x": rng.normal(size=(5, 4)), "c": rng.normal(size=(5, 3))})


# --------------------------------------------------------------------------- losses


def _one_hot(rng: np.random.Generator, rows: int, classes: int) -> np.ndarray:
    return np.eye(classes)[rng.integers(0, classes, size=rows)]


def _probabilities(rng: np.random.Generator, rows: int, classes: int) -> np.ndarray:
    raw = rng.uniform(0.1, 1.0, size=(rows, classes))
    return raw / raw.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("n", [1, 3, 7])
def test_mse(backend: str, n: int) -> None:
    source = """
input x[N, 3]
target t[N, 2]
param W[3, 2]
param b[2]
y = x @ W + b
loss mse(y, t)
"""
    net = bpc.compile(source, backend=backend)
    rng = np.random.default_rng(n)
    p = random_params(net, rng)
    x, t = rng.normal(size=(n, 3)), rng.normal(size=(n, 2))
    value, _ = assert_gradients_match(net, p, {"x": x, "t": t})
    assert value == pytest.approx(float(np.mean((x @ p["W"] + p["b"] - t) ** 2)), rel=1e-12)


@pytest.mark.parametrize("n", [1, 3, 7])
@pytest.mark.parametrize("targets", ["one-hot", "probabilities"])
def test_cross_entropy(backend: str, targets: str, n: int) -> None:
    source = """
input x[N, 3]
target t[N, 4]
param W[3, 4]
param b[4]
logits = x @ W + b
loss cross_entropy(logits, t)
"""
    net = bpc.compile(source, backend=backend)
    rng = np.random.default_rng(20 + n)
    p = random_params(net, rng, scale=1.0)
    x = rng.normal(size=(n, 3))
    t = _one_hot(rng, n, 4) if targets == "one-hot" else _probabilities(rng, n, 4)
    value, _ = assert_gradients_match(net, p, {"x": x, "t": t})
    logits = x @ p["W"] + p["b"]
    log_p = np.log(_numpy_softmax(logits, 1))
    assert value == pytest.approx(float(np.mean(-np.sum(t * log_p, axis=1))), rel=1e-12)


@pytest.mark.parametrize("shape", [(5,), (2, 3, 4)])
def test_cross_entropy_other_ranks(backend: str, shape: tuple[int, ...]) -> None:
    dims = ", ".join(map(str, shape))
    source = f"param z[{dims}]\ninput t[{dims}]\nloss cross_entropy(z, t)\n"
    net = bpc.compile(source, backend=backend)
    rng = np.random.default_rng(4)
    z = rng.normal(size=shape)
    raw = rng.uniform(0.1, 1.0, size=shape)
    t = raw / raw.sum(axis=-1, keepdims=True)
    value, _ = assert_gradients_match(net, {"z": z}, {"t": t})
    rows = int(np.prod(shape[:-1]))
    expected = -np.sum(t * np.log(_numpy_softmax(z, -1))) / rows
    assert value == pytest.approx(float(expected), rel=1e-12)


def test_cross_entropy_gradient_into_targets(backend: str) -> None:
    """When the target depends on params too (distillation), both sides get gradients."""
    source = """
input x[N, 3]
param W[3, 4]
param V[3, 4]
loss cross_entropy(x @ W, softmax(x @ V))
"""
    net = bpc.compile(source, backend=backend)
    rng = np.random.default_rng(12)
    assert_gradients_match(net, random_params(net, rng), {"x": rng.normal(size=(3, 3))})


@pytest.mark.parametrize("n", [1, 3, 7])
def test_binary_cross_entropy(backend: str, n: int) -> None:
    source = """
param p[N0, 2]
target t[N0, 2]
loss binary_cross_entropy(p, t)
""".replace("N0", str(n))
    net = bpc.compile(source, backend=backend)
    rng = np.random.default_rng(30 + n)
    prob = rng.uniform(0.1, 0.9, size=(n, 2))
    t = rng.uniform(0.0, 1.0, size=(n, 2))
    value, _ = assert_gradients_match(net, {"p": prob}, {"t": t})
    expected = np.mean(-(t * np.log(prob) + (1 - t) * np.log(1 - prob)))
    assert value == pytest.approx(float(expected), rel=1e-12)


@pytest.mark.parametrize("n", [1, 3, 7])
@pytest.mark.parametrize("loss", ["binary_cross_entropy(sigmoid(z), t)",
                                  "bce_with_logits(z, t)"])
def test_logistic_losses(backend: str, loss: str, n: int) -> None:
    source = f"""
input x[N, 3]
target t[N, 1]
param w[3, 1]
param b[1]
z = x @ w + b
loss {loss}
"""
    net = bpc.compile(source, backend=backend)
    rng = np.random.default_rng(40 + n)
    p = random_params(net, rng, scale=1.0)
    x = rng.normal(size=(n, 3))
    t = np.concatenate([rng.integers(0, 2, size=(n - n // 2, 1)),
                        rng.uniform(0, 1, size=(n // 2, 1))]).astype(float)
    value, _ = assert_gradients_match(net, p, {"x": x, "t": t})
    q = sigmoid(x @ p["w"] + p["b"])
    expected = np.mean(-(t * np.log(q) + (1 - t) * np.log(1 - q)))
    assert value == pytest.approx(float(expected), rel=1e-11)


# -------------------------------------------------------------------- dense layers


ACTS = ["linear", "relu", "tanh", "sigmoid", "softplus", "gelu", "elu", "leaky_relu",
        "sin", "swish", "square"]


@pytest.mark.parametrize("n", [1, 3, 7])
@pytest.mark.parametrize("act", ACTS)
def test_dense(backend: str, act: str, n: int) -> None:
    source = f"""
def swish(u) = u * sigmoid(u)
input x[N, 3]
target t[N, 2]
h = dense(x, 4, act={act})
y = dense(h, 2)
loss mse(y, t)
"""
    net = bpc.compile(source, backend=backend)
    assert set(net.params) == {"h.W", "h.b", "y.W", "y.b"}
    assert net.params["h.W"] == (3, 4) and net.params["h.b"] == (4,)
    rng = np.random.default_rng(50 + n)
    p = random_params(net, rng, scale=0.8)
    x = rng.normal(size=(n, 3))
    while np.min(np.abs(x @ p["h.W"] + p["h.b"])) < 1e-2:  # keep relu-like acts off the kink
        x = rng.normal(size=(n, 3))
    assert_gradients_match(net, p, {"x": x, "t": rng.normal(size=(n, 2))})


# ---------------------------------------------------------- defs, consts, scalars


def test_defs_calling_defs(backend: str) -> None:
    source = """
const SCALE = 0.5
def swish(u) = u * sigmoid(u)
def bump(u) = exp(-u ** 2 / 2)
def mix(u, v) = swish(u) * v + SCALE * bump(u - v) + u ** 2 / (1 + v ** 2)
def hand_sigmoid(u) = 1 / (1 + exp(-u))
def hand_softplus(u) = log(1 + exp(u))
input x[N, 3]
target t[N, 2]
param W[3, 2]
param V[3, 2]
a = mix(x @ W, x @ V)
b = hand_sigmoid(a) + hand_softplus(x @ V) - bump(a)
loss mean((b - t) ** 2)
"""
    net = bpc.compile(source, backend=backend)
    rng = np.random.default_rng(60)
    p = random_params(net, rng)
    x, t = rng.normal(size=(5, 3)), rng.normal(size=(5, 2))
    value, _ = assert_gradients_match(net, p, {"x": x, "t": t})

    def swish(u):
        return u * sigmoid(u)

    def bump(u):
        return np.exp(-(u**2) / 2)

    u, v = x @ p["W"], x @ p["V"]
    a = swish(u) * v + 0.5 * bump(u - v) + u**2 / (1 + v**2)
    b = sigmoid(a) + np.log1p(np.exp(v)) - bump(a)
    assert value == pytest.approx(float(np.mean((b - t) ** 2)), rel=1e-12)


def test_nested_piecewise_defs(backend: str) -> None:
    """A def of a def with kinks: the derivative's conditions combine (x > 0 and y > 0)."""
    source = """
def lr(u) = leaky_relu(u, alpha=0.2)
def el(u) = elu(lr(u), alpha=0.5) * u
def hardclip(u) = minimum(maximum(u, -1), 1)
param z[4, 3]
input c[4, 3]
loss sum(el(z) * c) + sum(hardclip(3 * z) * relu(z - 0.5) * c)
"""
    net = bpc.compile(source, backend=backend)
    rng = np.random.default_rng(63)
    z = rng.choice([-1, 1], size=(4, 3)) * rng.choice([0.2, 0.45, 0.8, 1.5], size=(4, 3))
    c = rng.normal(size=(4, 3))
    value, _ = assert_gradients_match(net, {"z": z}, {"c": c})
    v = np.where(z > 0, z, 0.2 * z)
    el = np.where(v > 0, v, 0.5 * np.expm1(v)) * z
    expected = np.sum(el * c) + np.sum(np.clip(3 * z, -1, 1) * np.maximum(z - 0.5, 0) * c)
    assert value == pytest.approx(float(expected), rel=1e-12)


def test_def_as_activation_and_in_def(backend: str) -> None:
    source = """
def cube(u) = u ** 3 / 3
def act(u) = tanh(cube(u)) + leaky_relu(u, alpha=0.1)
input x[N, 2]
target t[N, 1]
h = dense(x, 3, act=act)
y = dense(h, 1, act=cube)
loss mse(y, t)
"""
    net = bpc.compile(source, backend=backend)
    rng = np.random.default_rng(61)
    p = random_params(net, rng)
    x = rng.normal(size=(7, 2))
    assert np.min(np.abs(x @ p["h.W"] + p["h.b"])) > 1e-3
    assert_gradients_match(net, p, {"x": x, "t": rng.normal(size=(7, 1))})


def test_consts_in_dims_and_expressions(backend: str) -> None:
    source = """
const K = 3
const H = 4
const RATE = 0.25
input x[N, K]
target t[N, 1]
param W1[K, H]
param b1[H]
param W2[H, 1]
h = tanh(RATE * (x @ W1) + b1 * K)
loss RATE * sum((h @ W2 - t) ** 2) + 1e-2 * sum(W1 ** 2)
"""
    net = bpc.compile(source, backend=backend)
    assert net.params == {"W1": (3, 4), "b1": (4,), "W2": (4, 1)}
    rng = np.random.default_rng(62)
    p = random_params(net, rng)
    x, t = rng.normal(size=(3, 3)), rng.normal(size=(3, 1))
    value, _ = assert_gradients_match(net, p, {"x": x, "t": t})
    h = np.tanh(0.25 * (x @ p["W1"]) + 3 * p["b1"])
    expected = 0.25 * np.sum((h @ p["W2"] - t) ** 2) + 0.01 * np.sum(p["W1"] ** 2)
    assert value == pytest.approx(float(expected), rel=1e-12)


@pytest.mark.parametrize("n", [1, 3, 7])
def test_scalar_params(backend: str, n: int) -> None:
    source = """
input x[N, 2]
target t[N, 2]
param a[]
param b[] = 0.5
param W[2, 2]
y = a * (x @ W) + exp(b) * x + a ** 2
loss mean((y - t) ** 2) + a * b
"""
    net = bpc.compile(source, backend=backend)
    assert net.params["a"] == ()
    rng = np.random.default_rng(70 + n)
    p = {"a": np.array(0.7), "b": np.array(-0.3), "W": rng.normal(size=(2, 2))}
    x, t = rng.normal(size=(n, 2)), rng.normal(size=(n, 2))
    value, grads = assert_gradients_match(net, p, {"x": x, "t": t})
    assert grads["a"].shape == () and grads["b"].shape == ()


def test_param_without_effect_gets_zero_gradient(backend: str) -> None:
    source = "param a[2]\nparam unused[3]\nloss sum(a ** 2)\n"
    net = bpc.compile(source, backend=backend)
    p = {"a": np.array([0.5, -1.5]), "unused": np.array([1.0, 2.0, 3.0])}
    _, grads = assert_gradients_match(net, p, {})
    np.testing.assert_array_equal(grads["unused"], np.zeros(3))


# --------------------------------------------------------------------- broadcasting


BROADCASTS = {
    "[N,3] + [3]": ("x * v + w", {}),
    "[3] + [N,3]": ("w + x * v", {}),
    "[N,1] * [1,3]": ("(x @ a) * r", {}),
    "[N,3] * [N,1]": ("(x * v) * (x @ a)", {}),
    "[N,1] + [3]": ("(x @ a) + w", {}),
    "[] * [N,3]": ("s * x - v / s", {}),
    "[1,3] - [N,1]": ("r - tanh(x @ a)", {}),
    "[N,3] / [N,1]": ("x / (2 + sin(x @ a))", {}),
}


@pytest.mark.parametrize("n", [1, 3, 7])
@pytest.mark.parametrize("case", list(BROADCASTS))
def test_broadcasting(backend: str, case: str, n: int) -> None:
    expr, _ = BROADCASTS[case]
    source = f"""
input x[N, 3]
input c[N, 3]
param v[3]
param w[3]
param a[3, 1]
param r[1, 3]
param s[]
y = {expr}
loss sum(sin(y) * c)
"""
    net = bpc.compile(source, backend=backend)
    rng = np.random.default_rng(80 + n)
    p = random_params(net, rng)
    p["s"] = np.array(1.3)
    x, c = rng.normal(size=(n, 3)), rng.normal(size=(n, 3))
    value, _ = assert_gradients_match(net, p, {"x": x, "c": c})
    env = {"x": x, "tanh": np.tanh, "sin": np.sin, **p}
    expected = np.sum(np.sin(eval(expr, {}, env)) * c)  # the same text means the same in NumPy
    assert value == pytest.approx(float(expected), rel=1e-12)


# ------------------------------------------------------------------- whole networks


@pytest.mark.parametrize("n", [1, 3, 7])
def test_two_layer_network_with_shared_weights(backend: str, n: int) -> None:
    """A weight used twice, once transposed (a tied autoencoder), with a reduction mix."""
    source = """
input x[N, 4]
param W[4, 3]
param b[3]
param c[4]
code = sigmoid(x @ W + b)
recon = code @ W.T + c
loss mean((recon - x) ** 2) + 0.1 * mean(logsumexp(code, axis=1)) + 0.01 * max(W)
"""
    net = bpc.compile(source, backend=backend)
    rng = np.random.default_rng(90 + n)
    p = random_params(net, rng)
    assert_gradients_match(net, p, {"x": rng.normal(size=(n, 4))})


def test_examples_gradients(backend: str) -> None:
    """Every example network: a few entries are enough when the params are large."""
    from conftest import example_paths, indices_in_range

    rng = np.random.default_rng(100)
    for path in example_paths():
        net = bpc.compile_file(path, backend=backend)
        p = {k: v.astype(np.float64) for k, v in net.init(seed=1).items()}
        p = {k: v + rng.normal(0, 0.05, size=v.shape) for k, v in p.items()}  # no zero biases
        data = {}
        for name, shape in {**net.inputs, **net.targets}.items():
            data[name] = rng.normal(size=tuple(3 if isinstance(d, str) else d for d in shape))
        if "digits" in path.name:
            data["t"] = _one_hot(rng, 3, 10)
        data = indices_in_range(net, data)
        value, grads = net.value_and_grad(p, **data)
        sample = {}
        for name, g in grads.items():
            flat = rng.choice(g.size, size=min(g.size, 6), replace=False)
            sample[name] = [np.unravel_index(k, g.shape) for k in flat]
        for name, indices in sample.items():
            for index in indices:
                h = STEP * max(1.0, abs(float(p[name][index])))
                losses = []
                for k in (2, 1, -1, -2):
                    shifted = dict(p)
                    shifted[name] = p[name].copy()
                    shifted[name][index] += k * h
                    # value_and_grad's mode (dropout's masks of seed 0 and step 0)
                    losses.append(net.loss(shifted, training=True, **data))
                numeric = (-losses[0] + 8 * losses[1] - 8 * losses[2] + losses[3]) / (12 * h)
                if grads[name][index] != pytest.approx(numeric, rel=1e-6, abs=1e-9):
                    # a relu kink within 2h: a step 1000 times smaller does not cross it
                    small = h / 1000
                    up, down = dict(p), dict(p)
                    up[name], down[name] = p[name].copy(), p[name].copy()
                    up[name][index] += small
                    down[name][index] -= small
                    numeric = (net.loss(up, training=True, **data)
                               - net.loss(down, training=True, **data)) / (2 * small)
                assert grads[name][index] == pytest.approx(numeric, rel=1e-6, abs=1e-9), \
                    f"{path.name}: d {name}{index}"
