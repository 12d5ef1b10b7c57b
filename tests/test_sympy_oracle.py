"""Small networks unrolled by hand into scalar SymPy expressions: the textbook oracle.

Every weight is its own `sympy.Symbol`, every data entry an exact number (the binary value of
the float the network is given). The loss is written out sample by sample and unit by unit
with plain loops, `sympy.diff` takes its derivative by each weight symbol, and the result is
evaluated at the params to 30 digits. bpcompile's `value_and_grad` must agree to 1e-12.
Nothing here goes through bpcompile's own SymPy bridge: the formulas are written from the
math (sigmoid as 1 / (1 + exp(-u)), softmax from exp), not from its built-ins.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import sympy

import bpcompile as bpc

DIGITS = 30
RTOL = 1e-12

Matrix = list[list[sympy.Expr]]


def weights(name: str, shape: tuple[int, ...]) -> list:
    """A nested list of fresh symbols named like `W1[0,1]`."""
    if len(shape) == 0:
        return sympy.Symbol(name, real=True)
    if len(shape) == 1:
        return [sympy.Symbol(f"{name}[{i}]", real=True) for i in range(shape[0])]
    return [[sympy.Symbol(f"{name}[{i},{j}]", real=True) for j in range(shape[1])]
            for i in range(shape[0])]


def exact(array: np.ndarray) -> list:
    """The exact binary value of every float, as SymPy rationals, nested like the array."""
    if array.ndim == 0:
        return sympy.Rational(float(array))
    return [exact(row) for row in array]


def flat_symbols(value) -> list[sympy.Symbol]:
    if isinstance(value, list):
        return [s for item in value for s in flat_symbols(item)]
    return [value]


def affine(rows: Matrix, w: Matrix, b: list) -> Matrix:
    """rows @ w + b, written out as sums of products."""
    return [[sum(row[k] * w[k][j] for k in range(len(w))) + b[j] for j in range(len(b))]
            for row in rows]


def elementwise(f: Callable[[sympy.Expr], sympy.Expr], rows: Matrix) -> Matrix:
    return [[f(v) for v in row] for row in rows]


def sigmoid(u: sympy.Expr) -> sympy.Expr:
    return 1 / (1 + sympy.exp(-u))


def check_against_sympy(net: bpc.CompiledNet, symbols: dict[str, list], loss: sympy.Expr,
                        p: dict[str, np.ndarray], data: dict[str, np.ndarray]) -> None:
    """value_and_grad at p against the SymPy loss and its derivative by every weight."""
    values = {}
    for name, tree in symbols.items():
        for symbol, number in zip(flat_symbols(tree), flat_symbols(exact(p[name]))):
            values[symbol] = number
    value, grads = net.value_and_grad(p, **data)
    expected_value = float(loss.evalf(DIGITS, subs=values))
    assert value == pytest.approx(expected_value, rel=RTOL)
    for name, tree in symbols.items():
        expected = np.array([float(sympy.diff(loss, s).evalf(DIGITS, subs=values))
                             for s in flat_symbols(tree)]).reshape(p[name].shape)
        floor = 1e-14 * max(1.0, float(np.max(np.abs(expected))))
        np.testing.assert_allclose(grads[name], expected, rtol=RTOL, atol=floor,
                                   err_msg=f"d loss / d {name}")


def _params(net: bpc.CompiledNet, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {name: rng.normal(0.0, 0.8, size=shape) for name, shape in net.params.items()}


# --------------------------------------------------------------------------- networks


def test_sigmoid_network_with_squared_error(backend: str) -> None:
    """2-2-1, sigmoid hidden and output units, 0.5 * sum of squared errors, batch of 3."""
    source = """
input x[N, 2]
target t[N, 1]
param W1[2, 2]
param b1[2]
param W2[2, 1]
param b2[1]
h = sigmoid(x @ W1 + b1)
y = sigmoid(h @ W2 + b2)
loss 0.5 * sum((y - t) ** 2)
"""
    net = bpc.compile(source, backend=backend)
    x = np.array([[0.0, 1.0], [0.7, -0.4], [1.5, 0.25]])
    t = np.array([[1.0], [0.0], [0.3]])
    p = _params(net, 1)

    s = {"W1": weights("W1", (2, 2)), "b1": weights("b1", (2,)),
         "W2": weights("W2", (2, 1)), "b2": weights("b2", (1,))}
    h = elementwise(sigmoid, affine(exact(x), s["W1"], s["b1"]))
    y = elementwise(sigmoid, affine(h, s["W2"], s["b2"]))
    target = exact(t)
    loss = sympy.Rational(1, 2) * sum((y[n][0] - target[n][0]) ** 2 for n in range(3))
    check_against_sympy(net, s, loss, p, {"x": x, "t": t})


@pytest.mark.parametrize("targets", ["one-hot", "probabilities"])
def test_tanh_network_with_softmax_cross_entropy(backend: str, targets: str) -> None:
    """2-3-3, tanh hidden units, cross_entropy of the logits, batch of 3."""
    source = """
input x[N, 2]
target t[N, 3]
param W1[2, 3]
param b1[3]
param W2[3, 3]
param b2[3]
h = tanh(x @ W1 + b1)
logits = h @ W2 + b2
loss cross_entropy(logits, t)
"""
    net = bpc.compile(source, backend=backend)
    x = np.array([[0.5, -1.0], [2.0, 0.1], [-0.3, 0.8]])
    if targets == "one-hot":
        t = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    else:
        t = np.array([[0.25, 0.25, 0.5], [0.1, 0.6, 0.3], [0.0, 0.125, 0.875]])
    p = _params(net, 2)

    s = {"W1": weights("W1", (2, 3)), "b1": weights("b1", (3,)),
         "W2": weights("W2", (3, 3)), "b2": weights("b2", (3,))}
    h = elementwise(sympy.tanh, affine(exact(x), s["W1"], s["b1"]))
    z = affine(h, s["W2"], s["b2"])
    target = exact(t)
    total = 0
    for n in range(3):
        normalizer = sympy.log(sum(sympy.exp(z[n][j]) for j in range(3)))
        total += -sum(target[n][k] * (z[n][k] - normalizer) for k in range(3))
    check_against_sympy(net, s, total / 3, p, {"x": x, "t": t})


def test_tanh_dense_network_with_mse(backend: str) -> None:
    """2-2-1 from layer sugar: tanh hidden layer, linear output, mse, batch of 3."""
    source = """
input x[N, 2]
target t[N, 1]
h = dense(x, 2, act=tanh)
y = dense(h, 1)
loss mse(y, t)
"""
    net = bpc.compile(source, backend=backend)
    x = np.array([[1.0, 2.0], [-0.5, 0.5], [0.25, -1.25]])
    t = np.array([[0.5], [-1.0], [2.0]])
    p = _params(net, 3)

    s = {"h.W": weights("hW", (2, 2)), "h.b": weights("hb", (2,)),
         "y.W": weights("yW", (2, 1)), "y.b": weights("yb", (1,))}
    h = elementwise(sympy.tanh, affine(exact(x), s["h.W"], s["h.b"]))
    y = affine(h, s["y.W"], s["y.b"])
    target = exact(t)
    loss = sum((y[n][0] - target[n][0]) ** 2 for n in range(3)) / 3
    check_against_sympy(net, s, loss, p, {"x": x, "t": t})


def test_softplus_network_with_logistic_loss_and_scalar_param(backend: str) -> None:
    """2-2-1, softplus hidden units scaled by a scalar param, bce_with_logits, L2 penalty."""
    source = """
input x[N, 2]
target t[N, 1]
param W1[2, 2]
param a[]
param W2[2, 1]
h = a * softplus(x @ W1)
z = h @ W2
loss bce_with_logits(z, t) + 0.01 * sum(W1 ** 2)
"""
    net = bpc.compile(source, backend=backend)
    x = np.array([[0.3, -0.6], [1.1, 0.9], [-2.0, 0.4]])
    t = np.array([[1.0], [0.0], [0.75]])
    p = _params(net, 4)

    s = {"W1": weights("W1", (2, 2)), "a": weights("a", ()), "W2": weights("W2", (2, 1))}
    pre = affine(exact(x), s["W1"], [0, 0])
    h = elementwise(lambda u: s["a"] * sympy.log(1 + sympy.exp(u)), pre)
    z = affine(h, s["W2"], [0])
    target = exact(t)
    bce = sum(-(target[n][0] * sympy.log(sigmoid(z[n][0]))
                + (1 - target[n][0]) * sympy.log(1 - sigmoid(z[n][0]))) for n in range(3)) / 3
    penalty = sympy.Rational(1, 100) * sum(w**2 for w in flat_symbols(s["W1"]))
    check_against_sympy(net, s, bce + penalty, p, {"x": x, "t": t})
