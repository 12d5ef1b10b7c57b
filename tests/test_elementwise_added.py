"""The elementwise built-ins added with tensors of any rank (SPEC, "Elementwise, added"):
`tan sinh cosh asin acos atan asinh acosh atanh log1p expm1 log2 log10 erf silu sign floor
ceil round`, `clip(x, low, high)`, `logaddexp(a, b)`, `hypot(a, b)`, `atan2(a, b)` and
`gelu(x, exact=false)`.

One network holds them all: a param per function (`x_tan`, or `a_hypot` and `b_hypot`),
its value an output (`y_tan`), and the loss the sum of every output, so d loss / d x_tan is
tan's derivative entry by entry. It is compiled once per backend and dtype.

Oracles:
a. values, both backends, float64 (to 1e-12) and float32 (to 1e-5 relative, 1e-6
   absolute, evaluated at the float32 points), against NumPy's own
   functions (`math.erf` for erf, the SPEC's formulas for silu and the two gelus) at points
   inside each function's domain: 0, 1, -1 where defined, the domain's edges (asin at +-1,
   acosh at 1), large magnitudes (1000 for the functions that do not overflow there, 1e20
   and 1e200 for hypot), tiny ones (1e-10, where log1p, expm1, sinh, asinh, atanh and tan
   must not lose their digits) and, for round, half-integers (half to even, as NumPy and
   PyTorch) and the doubles next to them;
b. gradients, float64, against the textbook derivatives written out in NumPy, with the
   conventions: `sign floor ceil round` have gradient 0 everywhere (as PyTorch), clip's is 1
   where low <= x <= high, bounds included (as torch.clamp), and 0 elsewhere; asin, acos
   at +-1 and acosh at 1 have infinite slopes (as PyTorch); atan2 has no slope at (0, 0)
   (PyTorch's convention; hypot's slope there is left open: PyTorch gives NaN); each slope
   to its relative precision, so logaddexp's d/db is sigmoid(b - a) even where it is
   4e-18;
c. gradients against central differences of the network's own forward, where the function
   is smooth;
d. PyTorch's autograd at the same points, where PyTorch is installed (the file runs
   without it);
e. the two backends agree to 1e-12 on the loss and gradients of a small network mixing
   the new functions, whose gradient also passes central differences;
f. stability, both dtypes: logaddexp(a, b) finite at |a|, |b| = 1000 with gradient
   sigmoid(a - b), and log1p(exp(x)) finite at x = 1000 (the stability pass makes it
   softplus), inside an expression and as a statement of its own;
g. a wrong call is a located BPTypeError naming the function.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache

import numpy as np
import pytest

import bpcompile as bpc
from bpcompile.errors import BPTypeError

BACKENDS = ("numpy", "llvm")
DTYPES = ("float64", "float32")

# values: relative, plus an absolute part for entries that should be 0 (or are below the
# rounding of the formula the SPEC defines them by, as gelu's erf form at x = -3)
VALUE_TOL = {"float64": (1e-12, 1e-300), "float32": (1e-5, 1e-6)}
GRAD_RTOL = 1e-12
GRAD_ATOL = 1e-300        # the formulas below keep their relative precision near 0
TORCH_RTOL = 1e-12
TORCH_ATOL = 1e-15       # PyTorch's own formulas do not: expm1'(-50) is 0 there
FD_RTOL = 1e-6
FD_ATOL = 1e-8           # times max(1, |f(x)|): the forward's rounding, divided by the step
FLOAT32_MAX = float(np.finfo(np.float32).max)

erf = np.vectorize(math.erf, otypes=[np.float64])
SQRT2 = math.sqrt(2.0)
SQRT_2_PI = math.sqrt(2.0 / math.pi)


def sigmoid(x):
    return np.exp(-np.logaddexp(0.0, -x))


def gelu_tanh(x):
    return 0.5 * x * (1 + np.tanh(SQRT_2_PI * (x + 0.044715 * x**3)))


def gelu_tanh_grad(x):
    u = np.tanh(SQRT_2_PI * (x + 0.044715 * x**3))
    return 0.5 * (1 + u) + 0.5 * x * (1 - u * u) * SQRT_2_PI * (1 + 3 * 0.044715 * x**2)


def zero(*v):
    return np.zeros_like(v[0])


# ------------------------------------------------------------------------------ cases

@dataclass(frozen=True)
class Fn:
    """One built-in: `expr` with `{x}` (or `{a}`, `{b}`) for its param(s); `value` and
    `grad` (a tuple of partials for two operands) in NumPy; `torch(torch, F, *t)`;
    `points` (tuples of (a, b) for two operands); `rough(lo, hi, *v)`: a mask (or
    {operand: mask}) of the points whose central-difference interval [lo, hi] of the shifted
    operand meets a kink, a jump or the edge of the domain: left out of central
    differences."""

    key: str
    expr: str
    value: object
    grad: object
    torch: object
    points: tuple
    rough: object = None
    operands: tuple[str, ...] = ("x",)

    def names(self) -> tuple[str, ...]:
        return tuple(f"{o}_{self.key}" for o in self.operands)

    @property
    def out(self) -> str:
        return f"y_{self.key}"


def unary(key, expr, value, grad, torch, points, rough=None) -> Fn:
    return Fn(key, expr, value, grad, torch, tuple(points), rough)


def binary(key, expr, value, grad, torch, points, rough=None) -> Fn:
    return Fn(key, expr, value, grad, torch, tuple(points), rough, ("a", "b"))


def crosses(lo, hi, *c):
    """Where [lo, hi] holds one of the points c."""
    return np.logical_or.reduce([(lo <= v) & (v <= hi) for v in c])


def crosses_integer(lo, hi, *_):
    return np.ceil(lo) <= np.floor(hi)


def crosses_half_integer(lo, hi, *_):
    return np.ceil(lo - 0.5) <= np.floor(hi - 0.5)


def leaves(low, high):
    """Where [lo, hi] reaches the edge of the domain [low, high]."""
    return lambda lo, hi, *_: (lo <= low) | (hi >= high)


ROUND_POINTS = (0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 0.0, 3.0, 0.4, 0.6, -0.6,
                0.49999999999999994,     # floor(x + 0.5) gives 1: NumPy gives 0
                2.5000000000000004, 2.4999999999999996, 4503599627370497.0)  # 2 ** 52 + 1

FUNCTIONS = [
    unary("tan", "tan({x})", np.tan, lambda x: 1 + np.tan(x) ** 2,
          lambda torch, F, x: torch.tan(x), (0.0, 1.0, -1.0, 0.5, -1.2, 1.5, 1e-10)),
    unary("sinh", "sinh({x})", np.sinh, np.cosh, lambda torch, F, x: torch.sinh(x),
          (0.0, 1.0, -1.0, 3.0, -5.0, 20.0, 1e-10, -1e-10)),
    unary("cosh", "cosh({x})", np.cosh, np.sinh, lambda torch, F, x: torch.cosh(x),
          (0.0, 1.0, -1.0, 3.0, -5.0, 20.0)),
    unary("asin", "asin({x})", np.arcsin, lambda x: 1 / np.sqrt(1 - x * x),
          lambda torch, F, x: torch.asin(x), (0.0, 1.0, -1.0, 0.5, -0.3, 1e-10),
          rough=leaves(-1, 1)),
    unary("acos", "acos({x})", np.arccos, lambda x: -1 / np.sqrt(1 - x * x),
          lambda torch, F, x: torch.acos(x), (0.0, 1.0, -1.0, 0.5, -0.3),
          rough=leaves(-1, 1)),
    unary("atan", "atan({x})", np.arctan, lambda x: 1 / (1 + x * x),
          lambda torch, F, x: torch.atan(x), (0.0, 1.0, -1.0, 0.5, -3.0, 1000.0, -1000.0,
                                              1e-10)),
    unary("asinh", "asinh({x})", np.arcsinh, lambda x: 1 / np.sqrt(x * x + 1),
          lambda torch, F, x: torch.asinh(x), (0.0, 1.0, -1.0, 0.5, -3.0, 1000.0, -1000.0,
                                               1e-10, -1e-10)),
    unary("acosh", "acosh({x})", np.arccosh, lambda x: 1 / np.sqrt(x * x - 1),
          lambda torch, F, x: torch.acosh(x), (1.0, 1.5, 2.0, 10.0, 1000.0),
          rough=leaves(1, np.inf)),
    unary("atanh", "atanh({x})", np.arctanh, lambda x: 1 / (1 - x * x),
          lambda torch, F, x: torch.atanh(x), (0.0, 0.5, -0.5, 0.9, -0.99, 1e-10, -1e-10)),
    unary("log1p", "log1p({x})", np.log1p, lambda x: 1 / (1 + x),
          lambda torch, F, x: torch.log1p(x), (0.0, 1.0, -0.5, 0.5, 3.0, 1000.0, 1e-10,
                                               -1e-10, -0.999)),
    unary("expm1", "expm1({x})", np.expm1, np.exp, lambda torch, F, x: torch.expm1(x),
          (0.0, 1.0, -1.0, 0.5, -3.0, 20.0, -50.0, 1e-10, -1e-10)),
    unary("log2", "log2({x})", np.log2, lambda x: 1 / (x * math.log(2)),
          lambda torch, F, x: torch.log2(x), (1.0, 2.0, 0.5, 8.0, 3.0, 1000.0, 1e-3)),
    unary("log10", "log10({x})", np.log10, lambda x: 1 / (x * math.log(10)),
          lambda torch, F, x: torch.log10(x), (1.0, 10.0, 0.5, 100.0, 3.0, 1000.0, 1e-3)),
    unary("erf", "erf({x})", erf, lambda x: 2 / math.sqrt(math.pi) * np.exp(-x * x),
          lambda torch, F, x: torch.special.erf(x), (0.0, 1.0, -1.0, 0.5, -2.0, 3.0, 6.0,
                                                     1e-10)),
    unary("silu", "silu({x})", lambda x: x * sigmoid(x),
          lambda x: sigmoid(x) * (1 + x * (1 - sigmoid(x))),
          lambda torch, F, x: F.silu(x), (0.0, 1.0, -1.0, 0.5, -3.0, 20.0, -20.0, 1000.0,
                                          -1000.0)),
    unary("sign", "sign({x})", np.sign, zero, lambda torch, F, x: torch.sign(x),
          (0.0, 1.0, -1.0, 0.5, -3.0, 1000.0, 1e-10),
          rough=lambda lo, hi, x: crosses(lo, hi, 0.0)),
    unary("floor", "floor({x})", np.floor, zero, lambda torch, F, x: torch.floor(x),
          (0.0, 1.0, -1.0, 0.5, -0.5, 2.7, -2.7, 1e6 + 0.25, 0.9999999999999999),
          rough=crosses_integer),
    unary("ceil", "ceil({x})", np.ceil, zero, lambda torch, F, x: torch.ceil(x),
          (0.0, 1.0, -1.0, 0.5, -0.5, 2.7, -2.7, 1e6 + 0.25, 1.0000000000000002),
          rough=crosses_integer),
    unary("round", "round({x})", np.round, zero, lambda torch, F, x: torch.round(x),
          ROUND_POINTS, rough=crosses_half_integer),
    unary("clip", "clip({x}, -0.5, 1.5)", lambda x: np.clip(x, -0.5, 1.5),
          lambda x: ((x >= -0.5) & (x <= 1.5)).astype(np.float64),
          lambda torch, F, x: torch.clamp(x, -0.5, 1.5),
          (-1000.0, -1.0, -0.5, -0.5000000000000001, 0.0, 1.0, 1.5, 1.5000000000000002, 2.0,
           1000.0),
          rough=lambda lo, hi, x: crosses(lo, hi, -0.5, 1.5)),
    unary("gelu_exact", "gelu({x}, exact=true)", lambda x: 0.5 * x * (1 + erf(x / SQRT2)),
          lambda x: 0.5 * (1 + erf(x / SQRT2)) + x * np.exp(-x * x / 2) / math.sqrt(2 * math.pi),
          lambda torch, F, x: F.gelu(x, approximate="none"),
          (0.0, 1.0, -1.0, 0.5, -3.0, 3.0, 1e-10)),
    unary("gelu_tanh", "gelu({x}, exact=false)", gelu_tanh, gelu_tanh_grad,
          lambda torch, F, x: F.gelu(x, approximate="tanh"), (0.0, 1.0, -1.0, 0.5, -3.0, 3.0)),
    binary("logaddexp", "logaddexp({a}, {b})", np.logaddexp,
           lambda a, b: (sigmoid(a - b), sigmoid(b - a)),
           lambda torch, F, a, b: torch.logaddexp(a, b),
           ((0.0, 0.0), (1.0, -1.0), (-1.0, 1.0), (0.5, 2.0), (-3.0, 1e-10),
            (1000.0, 1000.0), (-1000.0, -1000.0), (1000.0, -1000.0), (-1000.0, 1000.0),
            (1000.0, 999.0), (-1000.0, -999.0), (0.0, -40.0), (-40.0, 0.0), (0.0, -20.0),
            (5.0, -30.0))),
    # at (0, 0) neither has a derivative: hypot's is left open (NaN here: not checked;
    # PyTorch gives NaN), atan2's is PyTorch's convention, no slope
    binary("hypot", "hypot({a}, {b})", np.hypot,
           lambda a, b: (np.where(np.hypot(a, b) == 0, np.nan, a / np.hypot(a, b)),
                         np.where(np.hypot(a, b) == 0, np.nan, b / np.hypot(a, b))),
           lambda torch, F, a, b: torch.hypot(a, b),
           ((3.0, 4.0), (0.0, 1.0), (1.0, 0.0), (-3.0, 4.0), (0.5, -2.0), (1000.0, 1e-3),
            (1e20, -1e20), (1e200, 1e200), (-1e200, 3e199), (0.0, 0.0)),
           rough=lambda lo, hi, a, b: {"a": crosses(lo, hi, 0.0) & (b == 0),
                                       "b": crosses(lo, hi, 0.0) & (a == 0)}),
    binary("atan2", "atan2({a}, {b})", np.arctan2,
           lambda a, b: (np.where((a == 0) & (b == 0), 0.0, b / (a * a + b * b)),
                         np.where((a == 0) & (b == 0), 0.0, -a / (a * a + b * b))),
           lambda torch, F, a, b: torch.atan2(a, b),
           ((1.0, 1.0), (1.0, -1.0), (-1.0, -1.0), (-1.0, 1.0), (0.0, 1.0), (0.0, -1.0),
            (1.0, 0.0), (-1.0, 0.0), (0.5, -2.0), (1000.0, 1e-3), (-3.0, 4.0), (0.0, 0.0)),
           # the branch cut: atan2 jumps from pi to -pi across a = 0 where b <= 0, and
           # from 0 to pi across b = 0 where a = 0
           rough=lambda lo, hi, a, b: {"a": crosses(lo, hi, 0.0) & (b <= 0),
                                       "b": crosses(lo, hi, 0.0) & (a == 0)}),
]
BY_KEY = {f.key: f for f in FUNCTIONS}
assert len(BY_KEY) == len(FUNCTIONS)


def points(fn: Fn, dtype: str) -> dict[str, np.ndarray]:
    """fn's points as {param name: array}, those the dtype cannot hold left out."""
    rows = np.array(fn.points, dtype=np.float64).reshape(len(fn.points), len(fn.operands))
    if dtype == "float32":
        rows = rows[np.all(np.abs(rows) <= FLOAT32_MAX, axis=1)]
    return {name: rows[:, k].astype(dtype) for k, name in enumerate(fn.names())}


def source(dtype: str) -> str:
    lines, outputs = [], []
    for fn in FUNCTIONS:
        v = points(fn, dtype)
        lines += [f"param {name}[{len(values)}]" for name, values in v.items()]
    for fn in FUNCTIONS:
        lines.append(f"{fn.out} = " + fn.expr.format(**dict(zip(fn.operands, fn.names()))))
        outputs.append(fn.out)
    lines.append("output " + ", ".join(outputs))
    lines.append("loss " + " + ".join(f"sum({o})" for o in outputs))
    return "\n".join(lines) + "\n"


@cache
def network(backend: str, dtype: str) -> bpc.CompiledNet:
    return bpc.compile(source(dtype), backend=backend, dtype=dtype)


def params(dtype: str) -> dict[str, np.ndarray]:
    p = {}
    for fn in FUNCTIONS:
        p.update(points(fn, dtype))
    return p


@cache
def forward(backend: str, dtype: str) -> dict[str, np.ndarray]:
    with np.errstate(all="ignore"):
        return network(backend, dtype).forward(params(dtype))


@cache
def gradients(backend: str) -> tuple[float, dict[str, np.ndarray]]:
    with np.errstate(all="ignore"):
        return network(backend, "float64").value_and_grad(params("float64"))


def as_tuple(result) -> tuple:
    return result if isinstance(result, tuple) else (result,)


def operands64(fn: Fn, dtype: str) -> list[np.ndarray]:
    """The points as the network holds them, in float64 for the oracles."""
    return [v.astype(np.float64) for v in points(fn, dtype).values()]


def table(fn: Fn, dtype: str, got, expected, bad) -> str:
    xs = operands64(fn, dtype)
    rows = [f"  {fn.key}{tuple(float(x[i]) for x in xs)}: got {got[i]!r}, "
            f"expected {expected[i]!r}" for i in np.flatnonzero(bad)[:10]]
    return "\n" + "\n".join(rows)


def check(fn: Fn, dtype: str, what: str, got, expected, rtol: float, atol: float) -> list:
    got = np.asarray(got, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert got.shape == expected.shape, (fn.key, what, got.shape, expected.shape)
    with np.errstate(invalid="ignore"):
        bad = ~np.isclose(got, expected, rtol=rtol, atol=atol, equal_nan=True)
    # infinities must match with their signs (isclose already demands that)
    return [f"{what} of {fn.expr}:" + table(fn, dtype, got, expected, bad)] if bad.any() else []


# ---------------------------------------------------------------------------- a. values

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_values_match_numpy(backend: str, dtype: str) -> None:
    out = forward(backend, dtype)
    rtol, atol = VALUE_TOL[dtype]
    failures = []
    for fn in FUNCTIONS:
        got = out[fn.out]
        assert got.dtype == np.dtype(dtype), (fn.key, got.dtype)
        with np.errstate(all="ignore"):
            expected = fn.value(*operands64(fn, dtype))
        failures += check(fn, dtype, "value", got, expected, rtol, atol)
    assert not failures, f"\n{backend}, {dtype}:\n" + "\n".join(failures)


@pytest.mark.parametrize("backend", BACKENDS)
def test_round_is_half_to_even(backend: str) -> None:
    """The convention written out (NumPy's and PyTorch's), not only NumPy's answer."""
    got = forward(backend, "float64")["y_round"]
    expected = {0.5: 0.0, 1.5: 2.0, 2.5: 2.0, -0.5: -0.0, -1.5: -2.0, -2.5: -2.0,
                0.49999999999999994: 0.0, 2.5000000000000004: 3.0, 2.4999999999999996: 2.0,
                4503599627370497.0: 4503599627370497.0}
    for x, y in expected.items():
        assert got[ROUND_POINTS.index(x)] == y, (x, got[ROUND_POINTS.index(x)], y)


@pytest.mark.parametrize("backend", BACKENDS)
def test_loss_is_the_sum_of_the_values(backend: str) -> None:
    loss, _ = gradients(backend)
    with np.errstate(all="ignore"):
        expected = sum(float(np.sum(fn.value(*operands64(fn, "float64"))))
                       for fn in FUNCTIONS)
    assert math.isfinite(loss)
    assert loss == pytest.approx(expected, rel=1e-12)


# ------------------------------------------------------------------------- b. gradients

@pytest.mark.parametrize("backend", BACKENDS)
def test_gradients_match_the_derivatives(backend: str) -> None:
    """Textbook derivatives in NumPy, at every point, the conventions included: zeros for
    sign, floor, ceil and round (at their jumps too), clip's inclusive mask, atan2's 0 at
    (0, 0), and the infinite slopes at the edges of asin, acos and acosh. Where the oracle
    is NaN (hypot at (0, 0)) any answer goes."""
    _, grads = gradients(backend)
    failures = []
    for fn in FUNCTIONS:
        xs = operands64(fn, "float64")
        with np.errstate(all="ignore"):
            expected = as_tuple(fn.grad(*xs))
        for name, e in zip(fn.names(), expected):
            e = np.broadcast_to(e, xs[0].shape)
            got = np.where(np.isnan(e), np.nan, grads[name])
            failures += check(fn, "float64", f"d/d{name}", got, e, GRAD_RTOL, GRAD_ATOL)
    assert not failures, f"\n{backend}:\n" + "\n".join(failures)


@pytest.mark.parametrize("backend", BACKENDS)
def test_conventions_at_jumps_and_bounds(backend: str) -> None:
    """Written out as numbers: no slope for sign, floor, ceil and round anywhere; clip's
    slope is 1 at low and at high exactly (torch.clamp), 0 just outside."""
    _, grads = gradients(backend)
    for key in ("sign", "floor", "ceil", "round"):
        g = grads[f"x_{key}"]
        assert np.array_equal(g, np.zeros_like(g)), (key, g)
    x = points(BY_KEY["clip"], "float64")["x_clip"]
    g = grads["x_clip"]
    slope = dict(zip(x.tolist(), g.tolist()))
    assert slope[-0.5] == 1.0 and slope[1.5] == 1.0, slope
    assert slope[-0.5000000000000001] == 0.0 and slope[1.5000000000000002] == 0.0, slope
    assert slope[0.0] == 1.0 and slope[-1000.0] == 0.0 and slope[1000.0] == 0.0, slope


# ----------------------------------------------------------------- c. central differences

@pytest.mark.parametrize("backend", BACKENDS)
def test_gradients_match_central_differences(backend: str) -> None:
    """Each output depends on its own param only, so shifting every first operand at once
    (then every second one) gives every partial, entry by entry, in four forward calls."""
    net = network(backend, "float64")
    p = params("float64")
    _, grads = gradients(backend)
    failures = []
    for k in (0, 1):
        shifted = {n for fn in FUNCTIONS if len(fn.names()) > k for n in [fn.names()[k]]}
        steps = {n: 1e-6 * np.maximum(np.abs(p[n]), 0.1) for n in shifted}
        up = {n: (v + steps[n] if n in shifted else v) for n, v in p.items()}
        down = {n: (v - steps[n] if n in shifted else v) for n, v in p.items()}
        with np.errstate(all="ignore"):
            f_up, f_down = net.forward(up), net.forward(down)
        for fn in FUNCTIONS:
            if len(fn.names()) <= k:
                continue
            name = fn.names()[k]
            h2 = up[name] - down[name]  # the step as the doubles hold it
            numeric = (f_up[fn.out] - f_down[fn.out]) / h2
            rough = np.zeros(len(h2), dtype=bool)
            if fn.rough is not None:
                r = fn.rough(down[name], up[name], *operands64(fn, "float64"))
                r = r[fn.operands[k]] if isinstance(r, dict) else r
                rough = np.broadcast_to(np.asarray(r, dtype=bool), h2.shape)
            value = np.abs(forward(backend, "float64")[fn.out])
            got = grads[name]
            tolerance = FD_RTOL * np.abs(numeric) + FD_ATOL * np.maximum(1.0, value)
            bad = ~(np.abs(got - numeric) <= tolerance) & ~rough  # a NaN fails too
            if bad.any():
                failures.append(f"d/d{name} of {fn.expr}:" +
                                table(fn, "float64", got, numeric, bad))
    assert not failures, f"\n{backend}:\n" + "\n".join(failures)


# ---------------------------------------------------------------------------- d. PyTorch

@pytest.mark.parametrize("backend", BACKENDS)
def test_values_and_gradients_match_torch(backend: str) -> None:
    """PyTorch's autograd on the same functions at the same points (float64), wherever
    PyTorch's gradient is not NaN."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    out = forward(backend, "float64")
    _, grads = gradients(backend)
    failures = []
    for fn in FUNCTIONS:
        xs = [torch.tensor(x, dtype=torch.float64, requires_grad=True)
              for x in operands64(fn, "float64")]
        y = fn.torch(torch, F, *xs)
        y.sum().backward()
        failures += check(fn, "float64", "value (torch)", out[fn.out],
                          y.detach().numpy(), TORCH_RTOL, TORCH_ATOL)
        for name, x in zip(fn.names(), xs):
            expected = x.grad.numpy().copy()
            defined = ~np.isnan(expected)
            got = np.where(defined, grads[name], np.nan)
            failures += check(fn, "float64", f"d/d{name} (torch)", got,
                              np.where(defined, expected, np.nan), TORCH_RTOL, TORCH_ATOL)
    assert not failures, f"\n{backend}:\n" + "\n".join(failures)


# ------------------------------------------------------- e. the backends on one network

MIXED = """
input  x[N, 3]
target t[N, 2]
param W[3, 4] = normal(0.7)
param b[4]    = uniform(-0.3, 0.3)
param V[4, 2] = normal(0.5)
param c[4]    = uniform(0.5, 1.5)
z = x @ W + b
h = silu(z) + gelu(z, exact=true) + 0.3 * atan2(z, c) + 0.1 * hypot(z, 0.5)
u = clip(h, -0.8, 1.2) * erf(z) + log1p(square(h)) + tan(0.3 * tanh(z)) + 0.1 * round(2 * z) * z
y = (u + 0.1 * asinh(2 * z) + 0.2 * acos(0.8 * sigmoid(z)) + 0.1 * expm1(-abs(z))) @ V
output y
loss mean(logaddexp(y, t)) + 0.01 * sum(logaddexp(W, -W)) + 0.1 * sum(hypot(c, 1))
"""


@cache
def mixed(backend: str) -> bpc.CompiledNet:
    return bpc.compile(MIXED, backend=backend)


def mixed_data() -> tuple[dict, dict]:
    rng = np.random.default_rng(7)
    data = {"x": rng.normal(size=(5, 3)), "t": rng.normal(size=(5, 2))}
    return mixed("numpy").init(seed=3), data


def test_backends_agree_on_every_function() -> None:
    """The table's network, float64: the same loss and gradients to 1e-12 (NaN and
    infinities in the same places)."""
    (loss0, g0), (loss1, g1) = gradients("numpy"), gradients("llvm")
    assert loss1 == pytest.approx(loss0, rel=1e-12, abs=0)
    for fn in FUNCTIONS:
        for name in fn.names():
            np.testing.assert_allclose(g1[name], g0[name], rtol=1e-12, atol=1e-300,
                                       equal_nan=True, err_msg=name)


def test_backends_agree_on_a_network_of_the_new_functions() -> None:
    p, data = mixed_data()
    loss0, g0 = mixed("numpy").value_and_grad(p, **data)
    loss1, g1 = mixed("llvm").value_and_grad(p, **data)
    assert math.isfinite(loss0)
    assert loss1 == pytest.approx(loss0, rel=1e-12, abs=0)
    assert set(g0) == set(g1) == {"W", "b", "V", "c"}
    for name in g0:
        assert np.all(np.isfinite(g0[name])), name
        scale = float(np.max(np.abs(g0[name])))
        np.testing.assert_allclose(g1[name], g0[name], rtol=1e-12, atol=1e-12 * scale,
                                   err_msg=name)
    y0 = mixed("numpy").forward(p, x=data["x"])["y"]
    y1 = mixed("llvm").forward(p, x=data["x"])["y"]
    np.testing.assert_allclose(y1, y0, rtol=1e-12, atol=1e-12 * float(np.max(np.abs(y0))))


def test_the_mixed_network_passes_central_differences() -> None:
    """Every entry (the net is small), on the NumPy backend: the agreement above carries it
    to LLVM."""
    p, data = mixed_data()
    report = bpc.gradcheck(mixed("numpy"), p, max_entries=64, **data)
    assert report.ok, report


# --------------------------------------------------------------------------- f. stability

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_logaddexp_is_finite_at_1000(backend: str, dtype: str) -> None:
    """Both slopes to their relative precision: d/db is sigmoid(b - a), not
    1 - sigmoid(a - b), which is 0 at (0, -40) where the slope is 4.2e-18."""
    net = bpc.compile("param a[9]\nparam b[9]\nloss sum(logaddexp(a, b))\n",
                      backend=backend, dtype=dtype)
    a = np.array([1000.0, -1000.0, 1000.0, -1000.0, 1000.0, -1000.0, 0.0, -40.0, 0.0])
    b = np.array([1000.0, -1000.0, -1000.0, 1000.0, 999.0, -999.0, -40.0, 0.0, -20.0])
    loss, g = net.value_and_grad({"a": a.astype(dtype), "b": b.astype(dtype)})
    rtol = 1e-12 if dtype == "float64" else 1e-5
    assert math.isfinite(loss)
    assert loss == pytest.approx(float(np.sum(np.logaddexp(a, b))), rel=rtol)
    np.testing.assert_allclose(g["a"], sigmoid(a - b), rtol=rtol, atol=1e-300)
    np.testing.assert_allclose(g["b"], sigmoid(b - a), rtol=rtol, atol=1e-300)


LOG1P_OF_EXP = {
    "a statement": "param x[6]\ny = log1p(exp(x))\noutput y\nloss sum(y)\n",
    "inside the loss": "param x[6]\ny = 2 * log1p(exp(x))\noutput y\nloss sum(y) / 2\n",
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("form", LOG1P_OF_EXP)
def test_log1p_of_exp_is_finite_at_1000(form: str, backend: str, dtype: str) -> None:
    """log1p(exp(x)) is softplus: finite where exp(x) overflows, slope sigmoid(x); as a
    statement of its own too."""
    net = bpc.compile(LOG1P_OF_EXP[form], backend=backend, dtype=dtype)
    x = np.array([1000.0, -1000.0, 0.0, 30.0, -30.0, 100.0])
    p = {"x": x.astype(dtype)}
    loss, g = net.value_and_grad(p)
    y = net.forward(p)["y"] / (2 if form == "inside the loss" else 1)
    rtol = 1e-12 if dtype == "float64" else 1e-6
    expected = np.logaddexp(0.0, x)
    np.testing.assert_allclose(y, expected, rtol=rtol, atol=1e-300)
    assert math.isfinite(loss)
    assert loss == pytest.approx(float(np.sum(expected)), rel=rtol)
    np.testing.assert_allclose(g["x"], sigmoid(x), rtol=rtol, atol=1e-300)


# ------------------------------------------------------------------------------ g. errors

@pytest.mark.parametrize("call, name", [
    ("clip(x)", "clip"),
    ("clip(x, 0)", "clip"),
    ("hypot(x)", "hypot"),
    ("logaddexp(x)", "logaddexp"),
    ("atan2(x, x, x)", "atan2"),
    ("tan(x, x)", "tan"),
    ("clip(x, x, 1)", "clip"),          # the bounds are numbers (SPEC)
    ("gelu(x, exact=2)", "gelu"),       # exact is true or false
])
def test_a_wrong_call_is_a_located_type_error(call: str, name: str) -> None:
    """A BPTypeError (not a traceback) whose first line names the function and points
    into the call, on line 2."""
    text = f"input x[N]\ny = {call}\nloss sum(y)\n"
    with pytest.raises(BPTypeError) as caught:
        bpc.compile(text)
    message = str(caught.value)
    first = message.splitlines()[0]
    assert first.startswith("<string>:2:"), message
    column = int(first.split(":")[2])
    start = len("y = ") + 1
    assert start <= column < start + len(call), message
    assert name in first, message
