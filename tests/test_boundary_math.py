"""Gradients at the points that break derivative rewrites: zeros of a power's base and
exponent, gradients that cancel, and losses given operands of two shapes.

Oracles: SymPy's own `diff` (every cheaper form `symbolic.partial` picks must equal it
wherever it is finite), central differences where the function is smooth, PyTorch's
conventions at singular points written out in NumPy (`pow_backward_self`: 0 where the
exponent is 0; `pow_backward_exponent`: 0 where the base is 0 and the exponent is not
negative), and PyTorch itself where it is installed.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import sympy

import bpcompile as bpc
from bpcompile.differentiate.symbolic import OUT, partial
from bpcompile.graph.functions import Power
from bpcompile.graph.ir import operand
from bpcompile.language.builtins import ELEMENTWISE, REQUIRED

BACKENDS = ["numpy", "llvm"]
a0, a1 = operand(0), operand(1)


def central(net: bpc.CompiledNet, p: dict, data: dict, name: str, h: float = 1e-6
            ) -> np.ndarray:
    """d loss / d p[name], entry by entry, by a central difference."""
    grad = np.zeros_like(p[name])
    for index in np.ndindex(p[name].shape):
        up = {n: v.copy() for n, v in p.items()}
        down = {n: v.copy() for n, v in p.items()}
        up[name][index] += h
        down[name][index] -= h
        grad[index] = (net.loss(up, **data) - net.loss(down, **data)) / (2 * h)
    return grad


# ------------------------------------------------------- every rewrite is an identity

# Forms whose derivative `partial` rewrites: every one-argument built-in of a0, the
# operators between a0 and a1, and compositions the fusion pass makes of them.
UNARY = [name for name, b in ELEMENTWISE.items() if b.arity == 1]
# options without a default (clip's bounds) take these values here
REQUIRED_VALUES = {"low": -1, "high": 1}


def _options(name: str) -> list[sympy.Basic]:
    return [sympy.sympify(REQUIRED_VALUES[k] if v is REQUIRED else v)
            for k, v in ELEMENTWISE[name].options.items()]


FORMS = [
    *(ELEMENTWISE[name].make(a0, *_options(name)) for name in UNARY),
    a0 + a1, a0 - a1, a0 * a1, a0 / a1, Power(a0, a1), a0**2, a0**3, a0**-1,
    a0 ** sympy.Rational(1, 2), a0 ** sympy.Rational(3, 2), Power(a0, 2 * a1),
    a0 * sympy.exp(a1), a0 * sympy.tanh(a0), sympy.exp(a0) / a1, sympy.log(a0) * a1,
    a1 * ELEMENTWISE["sigmoid"].make(a0), sympy.Max(a0, a1), sympy.Min(a0, a1),
    sympy.sqrt(a0**2 + 1), a0 / (a0**2 + 1), sympy.tanh(a0) ** 2, sympy.exp(a0 * a1),
]
POINTS = [-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0]


def _evaluate(expr: sympy.Expr, values: dict) -> float:
    try:
        result = complex(sympy.N(expr.xreplace(values).rewrite(sympy.Piecewise), 30))
    except (TypeError, ValueError, ZeroDivisionError):
        return math.nan
    return result.real if abs(result.imag) < 1e-12 else math.nan


@pytest.mark.parametrize("form", FORMS, ids=str)
def test_every_cheaper_form_equals_the_derivative_where_it_is_finite(form) -> None:
    """Oracle: sympy.diff of the same form, evaluated exactly at points that include 0, 1
    and -1, where rewrites that divide by a forward value break."""
    symbols = sorted(form.free_symbols, key=str)
    for k, symbol in enumerate(symbols):
        index = int(symbol.name[1:])
        plain = sympy.diff(form, symbol)
        cheap = partial(form, index)
        for values in itertools.product(POINTS, repeat=len(symbols)):
            point = dict(zip(symbols, (sympy.Float(v) for v in values)))
            value, expected = _evaluate(form, point), _evaluate(plain, point)
            if not (math.isfinite(value) and math.isfinite(expected)):
                continue  # a real value and derivative only: (-1) ** 0.5 is not one
            got = _evaluate(cheap, {**point, OUT: sympy.Float(value, 30)})
            assert got == pytest.approx(expected, rel=1e-9, abs=1e-12), (
                f"d/d{symbol} of {form} at {values}: {cheap} gives {got}, "
                f"{plain} gives {expected}")


# --------------------------------------------------------------------- x ** y, 0 ** y

def _torch_pow_grads(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """d sum(x ** y) by PyTorch's rules (FunctionsManual.cpp), written out in NumPy."""
    with np.errstate(divide="ignore", invalid="ignore"):
        d_x = np.where(y == 0, 0.0, y * x ** (y - 1))
        d_y = np.where((x == 0) & (y >= 0), 0.0, x**y * np.log(x))
    return d_x, d_y


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("exponent", [2.0, 3.0, 1.0, 0.0, 2.5])
def test_a_power_with_an_input_exponent_at_a_zero_base(backend: str, exponent: float) -> None:
    """The issue's example: d sum(x ** y) / dx at x = [0, 1, 2], y = 2 is [0, 2, 4].
    Oracles: PyTorch's rule in NumPy; central differences, where x ** y is smooth at 0."""
    net = bpc.compile("param x[3]\ninput y[]\nloss sum(x ** y)\n", backend=backend)
    p = {"x": np.array([0.0, 1.0, 2.0])}
    y = np.array(exponent)
    loss, grads = net.value_and_grad(p, y=y)
    expected, _ = _torch_pow_grads(p["x"], np.full(3, exponent))
    np.testing.assert_allclose(grads["x"], expected, rtol=1e-12)
    if exponent in (2.0, 3.0):  # smooth at 0, and defined on both sides of it
        np.testing.assert_allclose(grads["x"], central(net, p, {"y": y}, "x"), atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_learnable_exponent_at_a_zero_base(backend: str) -> None:
    """d sum(x ** y) / dy where some x are 0: PyTorch gives 0 for those terms (log(0) * 0
    is NaN); central differences agree, since 0 ** (y +- h) is 0."""
    net = bpc.compile("input x[4]\nparam y[]\nloss sum(x ** y)\n", backend=backend)
    x = np.array([0.0, 0.5, 1.0, 2.0])
    p = {"y": np.array(1.5)}
    _, grads = net.value_and_grad(p, x=x)
    _, expected = _torch_pow_grads(x, np.full(4, 1.5))
    assert np.isfinite(grads["y"])
    np.testing.assert_allclose(grads["y"], np.sum(expected), rtol=1e-12)
    np.testing.assert_allclose(grads["y"], central(net, p, {"x": x}, "y"), rtol=1e-7)


@pytest.mark.parametrize("backend", BACKENDS)
def test_both_sides_of_a_power_learn(backend: str) -> None:
    """Base and exponent both params, at the zeros of each. Oracle: PyTorch's rules."""
    net = bpc.compile("param x[4]\nparam y[4]\nloss sum(x ** y)\n", backend=backend)
    p = {"x": np.array([0.0, 0.0, 1.5, 2.0]), "y": np.array([0.0, 2.0, 0.0, 3.0])}
    _, grads = net.value_and_grad(p)
    d_x, d_y = _torch_pow_grads(p["x"], p["y"])
    np.testing.assert_allclose(grads["x"], d_x, rtol=1e-12)
    np.testing.assert_allclose(grads["y"], d_y, rtol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_zero_to_a_learnable_power(backend: str) -> None:
    """`0 ** y`: no slope in y wherever it is finite (PyTorch and central differences)."""
    net = bpc.compile("param y[2]\nloss sum(0 ** y) + sum(y)\n", backend=backend)
    p = {"y": np.array([0.5, 2.0])}
    loss, grads = net.value_and_grad(p)
    assert loss == pytest.approx(2.5)
    np.testing.assert_allclose(grads["y"], [1.0, 1.0], rtol=1e-12)
    np.testing.assert_allclose(grads["y"], central(net, p, {}, "y"), rtol=1e-8)


@pytest.mark.parametrize("backend", BACKENDS)
def test_pow_gradients_match_torch(backend: str) -> None:
    """Oracle: PyTorch's autograd on the same program, where it is installed."""
    torch = pytest.importorskip("torch")
    net = bpc.compile("param x[6]\nparam y[6]\nloss sum(x ** y)\n", backend=backend)
    p = {"x": np.array([0.0, 0.0, 0.0, 1.0, 2.0, 0.5]),
         "y": np.array([0.0, 1.0, 2.0, 0.0, 1.5, 3.0])}
    _, grads = net.value_and_grad(p)
    x = torch.tensor(p["x"], requires_grad=True)
    y = torch.tensor(p["y"], requires_grad=True)
    (x**y).sum().backward()
    np.testing.assert_allclose(grads["x"], x.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(grads["y"], y.grad.numpy(), rtol=1e-12)


# ------------------------------------------------------- gradients that cancel to zero

@pytest.mark.parametrize("backend", BACKENDS)
def test_a_gradient_that_cancels_has_the_params_shape(backend: str) -> None:
    """x - sum(x, axis=0) over an axis of size 1 is 0 for every x: the gradient is an array
    of zeros of x's shape (SPEC), not the number 0. Oracle: central differences."""
    net = bpc.compile("param x[1, 3]\ninput c[1, 3]\n"
                      "loss sum(c * (x - sum(x, axis=0, keepdims=true)) ** 2)\n",
                      backend=backend)
    p = {"x": np.array([[0.5, -1.0, 2.0]])}
    c = np.array([[1.0, 2.0, 3.0]])
    _, grads = net.value_and_grad(p, c=c)
    assert isinstance(grads["x"], np.ndarray) and grads["x"].shape == (1, 3)
    assert grads["x"].dtype == np.float64
    np.testing.assert_array_equal(grads["x"], central(net, p, {"c": c}, "x"))


def test_the_standalone_module_returns_the_params_shape_too(tmp_path) -> None:
    """The generated module itself, without the runtime's conversions."""
    net = bpc.compile("param x[1, 3]\ninput c[1, 3]\n"
                      "loss sum(c * (x - sum(x, axis=0, keepdims=true)) ** 2)\n")
    namespace: dict = {}
    exec(compile(net.code(), "generated", "exec"), namespace)
    _, grads = namespace["value_and_grad"]({"x": np.ones((1, 3))}, np.ones((1, 3)))
    assert np.shape(grads["x"]) == (1, 3)


# ------------------------------------------------------------- losses of one shape

LOSSES = ["mse(y, t)", "binary_cross_entropy(sigmoid(y), t)", "bce_with_logits(y, t)",
          "cross_entropy(y, t)"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("loss", LOSSES)
def test_a_loss_of_two_shapes_is_a_located_shape_error(backend: str, loss: str) -> None:
    """mse(y, t) with y [N, 1] and t [N, 2] broadcast silently; now a BPShapeError at the
    call, naming both shapes. Oracle: the message itself, and the position it points at."""
    source = f"input x[N, 2]\ntarget t[N, 2]\nparam W[2, 1]\ny = x @ W\nloss {loss}\n"
    with pytest.raises(bpc.BPShapeError) as caught:
        bpc.compile(source, backend=backend)
    message = str(caught.value)
    assert message.startswith("<string>:5:6: error:")
    assert "[N, 1]" in message and "[N, 2]" in message


@pytest.mark.parametrize("loss", ["mse(y, 0.5)", "bce_with_logits(y, 1)"])
def test_a_loss_of_a_tensor_and_a_number_is_refused_too(loss: str) -> None:
    with pytest.raises(bpc.BPShapeError, match=r"\[N, 1\] and .*\[\]"):
        bpc.compile(f"input x[N, 2]\nparam W[2, 1]\ny = x @ W\nloss {loss}\n")
