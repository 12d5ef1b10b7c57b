"""Every elementwise built-in and operator at the points that break derivative rewrites.

Each case is a tiny network `loss sum(EXPR)` of params (and, in variants, an input), whose
entries are a grid of the points 0, 1, -1, 0.5, -2 over the operands (so one call meets
every pair, the ties a == b of maximum, minimum and comparisons included), plus the
function's own kinks. Entries where the *forward* value is not finite (log of 0 and of
negatives, sqrt of negatives, 0 ** negative, 0 / 0 ...) are left out; entries where the value
is finite and the derivative infinite (sqrt at 0) are kept.

Oracles, on both backends, float64:
a. the two backends agree to 1e-12 (relative), NaNs and infinities (with sign) in the same
   places; both forward values equal NumPy's meaning of EXPR written here;
b. no NaN in a gradient where the forward value is finite, except where the one-sided
   derivatives do not both exist and agree (each case names those points: `undefined`);
c. central differences, second order with step 1e-6 and a fourth-order stencil with step
   1e-3, on the loss, entry by entry, where the function is smooth (each case names the
   points where it is not: `rough`): equal to 1e-6 relative;
d. PyTorch's autograd on the same function at the same points, to 1e-12, where PyTorch is
   installed (`pytest.importorskip("torch")` inside the test: the file runs without it);
e. the conventions below, written out as numbers, so they are checked without PyTorch too.

Conventions at singular points (PyTorch's unless SPEC says otherwise):
- relu'(0) = 0 (PyTorch's threshold_backward); abs'(0) = sign(0) = 0;
- leaky_relu'(0) = alpha and elu'(0) = alpha (the x <= 0 branch, as PyTorch); for
  elu(x, alpha=1) that is the true derivative, 1, since elu is C1 there;
- maximum(a, b) and minimum(a, b) at a tie: 1/2 to each operand (PyTorch's maximum /
  minimum backward: `grad / 2` where self == other), also against a constant
  (maximum(x, 0) at x = 0 gives 1/2, unlike relu); maximum(x, x) is x: gradient 1;
- where(cond, a, b): the gradient flows to the branch chosen (at cond's flip, the one the
  condition picks: where(x > 0, x * x, 3 * x) has gradient 3 at 0); a cond that is not a
  comparison is true where non-zero. The derivative of the other branch should not enter:
  where(x >= 0, sqrt(x), -x) has derivative -1 at x < 0, and the bump
  where(x > 0, exp(-1 / x), 0) has derivative 0 at 0. PyTorch gives NaN at both (its
  where passes a 0 adjoint into the unselected branch, whose own derivative is NaN there:
  0 * NaN), so at those points central differences and the explicit conventions are the
  oracles, not PyTorch. bpcompile gives NaN there too at present: see the known bugs;
- sqrt(x * x): SymPy reads it as abs(x), so bpcompile gives sign(0) = 0 at 0 where
  PyTorch's chain rule gives inf * 0 = NaN; no derivative exists there, both are allowed;
- comparisons give 0/1 with no gradient; a param reached only through comparisons or a
  `where` condition has a gradient of zeros (PyTorch: no grad, read as zeros);
- x ** c for a constant c: d/dx is 0 where c == 0, else c * x ** (c - 1) (inf at x = 0 for
  0 < c < 1); x ** y for a varying y (param or input): d/dx is 0 where y == 0, else
  y * x ** (y - 1); d/dy is 0 where x == 0 and y >= 0, else x ** y * log(x) (NaN for x < 0:
  the power is not real near such y, so no derivative exists);
- sqrt'(0) = inf (forward 0 is finite: the backends must agree on the infinity); x ** 0.5
  likewise; sqrt(relu(x)) at 0 is 0 (relu's mask, not inf * 0), as PyTorch.

- `(-2) ** x` (a negative constant base, a varying exponent): real at whole x, its
  gradient NaN there, as PyTorch's (log(-2) is NaN in real arithmetic; the power is not
  real near such x);
- `where(c, a, b)` selects its derivative as it selects its value: the branch not taken
  cannot make the gradient NaN (`where(x >= 0, sqrt(x), -x)` has slope -1 at x < 0, where
  PyTorch, multiplying a zero adjoint by sqrt's NaN, gives NaN: such points are left out
  of the PyTorch comparison).

Known bugs would be kept as tests marked `xfail(strict=True)` (KNOWN below), so a fix shows
up as an unexpected pass; there are none.

Variants: each binary case runs with both operands params, then with each operand in turn an
input; `where(c, a, b)` with its condition a param (whose gradient is zeros) and an input.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cache, lru_cache
from types import SimpleNamespace

import numpy as np
import pytest

import bpcompile as bpc

BACKENDS = ("numpy", "llvm")
POINTS = (0.0, 1.0, -1.0, 0.5, -2.0)

BACKEND_RTOL = 1e-12
TORCH_RTOL = 1e-12
ABS_TOL = 1e-15          # for entries that are 0 in one and rounding noise in the other
FD_STEPS = ((1e-6, 2), (1e-3, 4))
FD_RTOL = 1e-6
FD_ATOL = 1e-8           # times max(1, |loss|): the loss's rounding, divided by the step

Mask = Callable[..., object]


def nowhere(**v: np.ndarray) -> bool:
    return False


# ----------------------------------------------------------------- the same math, twice

def _numpy_namespace() -> SimpleNamespace:
    def gelu(x):
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))

    return SimpleNamespace(
        exp=np.exp, log=np.log, sqrt=np.sqrt, abs=np.abs, square=np.square, sin=np.sin,
        cos=np.cos, tanh=np.tanh, sigmoid=lambda x: 1 / (1 + np.exp(-x)),
        relu=lambda x: np.maximum(x, 0.0), softplus=lambda x: np.logaddexp(0.0, x),
        leaky_relu=lambda x, alpha=0.01: np.where(x > 0, x, alpha * x),
        elu=lambda x, alpha=1.0: np.where(x > 0, x, alpha * np.expm1(x)),
        gelu=gelu, maximum=np.maximum, minimum=np.minimum,
        where=lambda c, a, b: np.where(np.asarray(c) != 0, a, b),
    )


NP = _numpy_namespace()


@lru_cache(maxsize=1)
def _torch_namespace() -> SimpleNamespace:
    import torch
    F = torch.nn.functional

    def t(v):
        return v if isinstance(v, torch.Tensor) else torch.tensor(v, dtype=torch.float64)

    return SimpleNamespace(
        exp=torch.exp, log=torch.log, sqrt=torch.sqrt, abs=torch.abs, square=torch.square,
        sin=torch.sin, cos=torch.cos, tanh=torch.tanh, sigmoid=torch.sigmoid, relu=F.relu,
        softplus=F.softplus,
        leaky_relu=lambda x, alpha=0.01: F.leaky_relu(x, alpha),
        elu=lambda x, alpha=1.0: F.elu(x, alpha),
        gelu=lambda x: F.gelu(x, approximate="tanh"),
        maximum=lambda a, b: torch.maximum(t(a), t(b)),
        minimum=lambda a, b: torch.minimum(t(a), t(b)),
        where=lambda c, a, b: torch.where(t(c) != 0, t(a), t(b)),
    )


# ----------------------------------------------------------------------------- cases

@dataclass(frozen=True)
class Case:
    """`loss sum(expr)`; `f(m, **operands)` is the same math in namespace m (NumPy or
    torch). `rough(**v)`: where the function is not smooth (kinks, ties, the edge of its
    domain), a mask or {operand: mask}; `undefined(**v)`: where the one-sided derivatives
    do not both exist and agree, so a NaN is allowed; `torch_differs(**v)`: where PyTorch's
    autograd gives NaN and bpcompile is right to give a number (see the docstring)."""

    expr: str
    f: Callable
    operands: tuple[str, ...] = ("x",)
    inputs: frozenset[str] = frozenset()
    rough: Mask = nowhere
    undefined: Mask = nowhere
    torch_differs: Mask = nowhere
    extra: tuple[float, ...] = ()
    points: dict[str, tuple[float, ...]] = field(default_factory=dict)
    variant: str = ""

    @property
    def id(self) -> str:
        return self.expr + (f" [{self.variant}]" if self.variant else "")

    @property
    def params(self) -> tuple[str, ...]:
        return tuple(n for n in self.operands if n not in self.inputs)


def at0(**v):
    (x,) = v.values()
    return x == 0


def tie(a, b, **_):
    return a == b


def nonpositive(x):
    return x <= 0


def everywhere(**v: np.ndarray) -> bool:
    return True


def power_of(c: float) -> Callable:
    return lambda m, x: x**c


def compared_product(op: str) -> Callable:
    """(a op b) * a * b, in either namespace."""
    def f(m, a, b):
        return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b, "==": a == b,
                "!=": a != b}[op] * a * b
    return f


unary = Case


UNARY = [
    # built-ins
    unary("exp(x)", lambda m, x: m.exp(x)),
    unary("log(x)", lambda m, x: m.log(x), extra=(2.0,)),
    unary("sqrt(x)", lambda m, x: m.sqrt(x), rough=at0, extra=(2.0,)),
    unary("abs(x)", lambda m, x: m.abs(x), rough=at0),
    unary("square(x)", lambda m, x: m.square(x)),
    unary("sin(x)", lambda m, x: m.sin(x)),
    unary("cos(x)", lambda m, x: m.cos(x)),
    unary("tanh(x)", lambda m, x: m.tanh(x)),
    unary("sigmoid(x)", lambda m, x: m.sigmoid(x)),
    unary("relu(x)", lambda m, x: m.relu(x), rough=at0),
    unary("softplus(x)", lambda m, x: m.softplus(x)),
    unary("linear(x)", lambda m, x: x),
    unary("gelu(x)", lambda m, x: m.gelu(x)),
    unary("leaky_relu(x)", lambda m, x: m.leaky_relu(x), rough=at0),
    unary("leaky_relu(x, alpha=0.2)", lambda m, x: m.leaky_relu(x, 0.2), rough=at0),
    unary("leaky_relu(x, alpha=-0.5)", lambda m, x: m.leaky_relu(x, -0.5), rough=at0),
    unary("elu(x)", lambda m, x: m.elu(x), rough=at0),  # C1 at 0, not C2
    unary("elu(x, alpha=0.5)", lambda m, x: m.elu(x, 0.5), rough=at0),
    unary("elu(x, alpha=-1)", lambda m, x: m.elu(x, -1.0), rough=at0),
    unary("maximum(x, 0)", lambda m, x: m.maximum(x, 0.0), rough=at0),
    unary("maximum(0, x)", lambda m, x: m.maximum(0.0, x), rough=at0),
    unary("minimum(x, 1)", lambda m, x: m.minimum(x, 1.0), rough=lambda x: x == 1),
    unary("maximum(x, x)", lambda m, x: m.maximum(x, x)),
    unary("minimum(x, -x)", lambda m, x: m.minimum(x, -x), rough=at0),
    unary("where(x > 0, x * x, 3 * x)", lambda m, x: m.where(x > 0, x * x, 3 * x),
          rough=at0),
    unary("where(x >= 0, sqrt(x), -x)", lambda m, x: m.where(x >= 0, m.sqrt(x), -x),
          rough=at0, torch_differs=lambda x: x < 0),
    unary("where(x, x * x, 1)", lambda m, x: m.where(x, x * x, 1.0), rough=at0),
    # the smooth bump: exp(-1/x) is 0 at 0, with every derivative 0 from both sides
    unary("where(x > 0, exp(-1 / x), 0)", lambda m, x: m.where(x > 0, m.exp(-1 / x), 0.0),
          torch_differs=at0),
    unary("maximum(exp(x), 1)", lambda m, x: m.maximum(m.exp(x), 1.0), rough=at0),
    # operators
    unary("-x", lambda m, x: -x),
    unary("x - x", lambda m, x: x - x),  # 0 for every x: a gradient of zeros
    unary("-x ** 2", lambda m, x: -x**2),
    unary("x + 1", lambda m, x: x + 1),
    unary("1 - x", lambda m, x: 1 - x),
    unary("2 * x", lambda m, x: 2 * x),
    unary("x / 2", lambda m, x: x / 2),
    unary("1 / x", lambda m, x: 1 / x),
    unary("x * (x > 0)", lambda m, x: x * (x > 0), rough=at0),
    unary("x * (x >= 0)", lambda m, x: x * (x >= 0), rough=at0),
    unary("(x == 1) * x", lambda m, x: (x == 1) * x, rough=lambda x: x == 1),
    unary("(x != 1) * x", lambda m, x: (x != 1) * x, rough=lambda x: x == 1),
    # powers with a constant exponent
    *(unary(f"x ** {c}", power_of(c), rough=at0 if c in (0.5, 1.5, 2.5) else nowhere)
      for c in (2, 3, 0.5, 1.5, 2.5, -1, -2, 0, 1, -0.5)),
    # powers with a varying exponent
    unary("2 ** x", lambda m, x: 2.0**x),
    unary("0 ** x", lambda m, x: 0.0**x, rough=at0, undefined=at0),
    unary("(-2) ** x", lambda m, x: (-2.0) ** x, undefined=everywhere, rough=everywhere),
    unary("x ** x", lambda m, x: x**x, rough=nonpositive, undefined=nonpositive),
    # compositions the fusion pass makes one node of
    unary("x * sigmoid(x)", lambda m, x: x * m.sigmoid(x)),
    unary("x * exp(x)", lambda m, x: x * m.exp(x)),
    unary("tanh(x) ** 2", lambda m, x: m.tanh(x) ** 2),
    unary("x / (1 + abs(x))", lambda m, x: x / (1 + m.abs(x)), rough=at0),
    unary("log(1 + x * x)", lambda m, x: m.log(1 + x * x)),
    unary("sqrt(x * x + 1)", lambda m, x: m.sqrt(x * x + 1)),
    unary("exp(-x * x)", lambda m, x: m.exp(-x * x)),
    unary("relu(x) ** 2", lambda m, x: m.relu(x) ** 2, rough=at0),
    unary("abs(x) ** 3", lambda m, x: m.abs(x) ** 3, rough=at0),
    unary("maximum(x, 0) ** 2", lambda m, x: m.maximum(x, 0.0) ** 2, rough=at0),
    # SymPy reads sqrt(x * x) as abs(x): gradient sign(0) = 0 at 0, where PyTorch's chain
    # rule gives inf * 0 = NaN; no derivative exists there, so neither is wrong
    unary("sqrt(x * x)", lambda m, x: m.sqrt(x * x), rough=at0, undefined=at0,
          torch_differs=at0),
    unary("sqrt(abs(x))", lambda m, x: m.sqrt(m.abs(x)), rough=at0, undefined=at0),
    unary("sqrt(relu(x))", lambda m, x: m.sqrt(m.relu(x)), rough=at0, undefined=at0),
]


def binary(expr: str, f: Callable, **kw) -> list[Case]:
    """All operands params, then each operand in turn an input."""
    case = Case(expr, f, operands=("a", "b"), **kw)
    return [case, *(replace(case, inputs=frozenset({n}), variant=f"{n} input")
                    for n in case.operands)]


def pow_rough(a, b):
    # at a base of 0 (not smooth in either operand, except for whole exponents >= 1 in a),
    # and for a negative base: not smooth in the exponent
    return {"a": (a == 0) & ~((b >= 1) & (b == np.round(b))), "b": a <= 0}


BINARY = [
    *binary("a + b", lambda m, a, b: a + b),
    *binary("a - b", lambda m, a, b: a - b),
    *binary("a * b", lambda m, a, b: a * b),
    *binary("a / b", lambda m, a, b: a / b),
    *binary("a ** b", lambda m, a, b: a**b, rough=pow_rough, extra=(2.0,),
            undefined=lambda a, b: {"a": False, "b": a < 0}),
    *binary("maximum(a, b)", lambda m, a, b: m.maximum(a, b), rough=tie),
    *binary("minimum(a, b)", lambda m, a, b: m.minimum(a, b), rough=tie),
    *binary("where(a > b, a, b)", lambda m, a, b: m.where(a > b, a, b), rough=tie),
    *binary("where(a <= b, a * b, b)", lambda m, a, b: m.where(a <= b, a * b, b), rough=tie),
    *binary("a < b", lambda m, a, b: a < b, rough=tie),
    *(case for op in ("<", "<=", ">", ">=", "==", "!=")
      for case in binary(f"(a {op} b) * a * b",
                         compared_product(op), rough=tie)),
]
CONDITIONED = [
    Case("where(c, a, b)", lambda m, c, a, b: m.where(c, a, b), operands=("c", "a", "b"),
         points={"c": (0.0, 1.0, -1.0)}),
    Case("where(c, a, b)", lambda m, c, a, b: m.where(c, a, b), operands=("c", "a", "b"),
         points={"c": (0.0, 1.0, -1.0)}, inputs=frozenset({"c"}), variant="c input"),
    Case("where(c, a * b, a / 2)", lambda m, c, a, b: m.where(c, a * b, a / 2),
         operands=("c", "a", "b"), points={"c": (0.0, -1.0)}),
]



CASES = {case.id: case for case in UNARY + BINARY + CONDITIONED}
assert len(CASES) == len(UNARY) + len(BINARY) + len(CONDITIONED), "duplicate case ids"


# ----------------------------------------------------------------------------- points

@cache
def grid(case_id: str) -> dict[str, np.ndarray]:
    """Every combination of the points over the operands, where the forward is finite."""
    case = CASES[case_id]
    axes = [case.points.get(n, POINTS + case.extra) for n in case.operands]
    rows = np.array(list(itertools.product(*axes)), dtype=np.float64)
    values = {n: rows[:, k].copy() for k, n in enumerate(case.operands)}
    with np.errstate(all="ignore"):
        forward = np.asarray(case.f(NP, **values), dtype=np.float64)
    keep = np.isfinite(np.broadcast_to(forward, rows[:, 0].shape))
    return {n: v[keep] for n, v in values.items()}


def mask(fn: Mask, case: Case, name: str) -> np.ndarray:
    v = grid(case.id)
    result = fn(**v)
    if isinstance(result, dict):
        result = result[name]
    return np.broadcast_to(np.asarray(result, dtype=bool), v[name].shape)


def source(case: Case) -> str:
    n = len(grid(case.id)[case.operands[0]])
    lines = [f"{'input' if name in case.inputs else 'param'} {name}[{n}]"
             for name in case.operands]
    return "\n".join(lines) + f"\nloss sum({case.expr})\n"


@cache
def network(case_id: str, backend: str) -> bpc.CompiledNet:
    return bpc.compile(source(CASES[case_id]), backend=backend)


def split(case: Case) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    v = grid(case.id)
    p = {n: v[n].copy() for n in case.params}
    data = {n: v[n].copy() for n in case.inputs}
    return p, data


@cache
def gradients(case_id: str, backend: str) -> tuple[float, dict[str, np.ndarray]]:
    case = CASES[case_id]
    p, data = split(case)
    with np.errstate(all="ignore"):
        loss, grads = network(case_id, backend).value_and_grad(p, **data)
    return loss, grads


def point(case: Case, i: int) -> str:
    """Entry i of the grid, as `(a=0, b=-1)`."""
    v = grid(case.id)
    return "(" + ", ".join(f"{n}={v[n][i]:g}" for n in case.operands) + ")"


def where_points(case: Case, where: np.ndarray) -> str:
    return ", ".join(point(case, i) for i in np.flatnonzero(where)[:8])


def describe(case: Case, name: str, got: np.ndarray, expected: np.ndarray) -> str:
    v = grid(case.id)
    bad = ~np.isclose(got, expected, rtol=1e-12, atol=ABS_TOL, equal_nan=True)
    rows = [f"  {point(case, i)}: got {got[i]!r}, "
            f"expected {expected[i]!r}" for i in np.flatnonzero(bad)[:10]]
    return (f"\n{source(case)}d loss / d {name}, {int(bad.sum())} of {len(v[name])} "
            "entries differ:\n" + "\n".join(rows))


def assert_same(case: Case, name: str, got, expected, rtol: float) -> None:
    got = np.asarray(got, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert got.shape == expected.shape, (name, got.shape, expected.shape)
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=ABS_TOL, equal_nan=True,
                               err_msg=describe(case, name, got, expected))


# Known bugs, kept visible: (test, case id) -> reason. strict: a fix makes them fail, so
# the entry is removed with the fix. (The two this file found, `(-2) ** x` not compiling and
# NaN through `where`'s untaken branch, are fixed: graph/functions.py, passes/fuse.py.)
KNOWN: dict[tuple[str, str], str] = {}


def ids_for(test: str) -> list:
    """The case ids for one oracle, each known bug marked."""
    return [pytest.param(case_id, marks=pytest.mark.xfail(strict=True,
                                                          reason=KNOWN[test, case_id]))
            if (test, case_id) in KNOWN else case_id for case_id in CASES]


# ---------------------------------------------------------------------------- oracles

@pytest.mark.parametrize("case_id", ids_for("agree"))
def test_backends_agree(case_id: str) -> None:
    """a. numpy and llvm: the same loss and gradients, NaNs and infinities included; both
    forwards equal NumPy's meaning of the expression."""
    case = CASES[case_id]
    with np.errstate(all="ignore"):
        expected_loss = float(np.sum(case.f(NP, **grid(case_id))))
    results = {b: gradients(case_id, b) for b in BACKENDS}
    for backend, (loss, _) in results.items():
        assert loss == pytest.approx(expected_loss, rel=1e-12, abs=1e-12), backend
    (loss0, g0), (loss1, g1) = results["numpy"], results["llvm"]
    assert loss1 == pytest.approx(loss0, rel=BACKEND_RTOL, abs=ABS_TOL)
    assert set(g0) == set(g1) == set(case.params)
    for name in case.params:
        assert g0[name].shape == grid(case_id)[name].shape
        assert_same(case, name, g1[name], g0[name], BACKEND_RTOL)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case_id", ids_for("nan"))
def test_no_nan_where_the_derivative_exists(case_id: str, backend: str) -> None:
    """b. The forward is finite at every point; a NaN gradient is allowed only where no
    derivative exists (`undefined`)."""
    case = CASES[case_id]
    _, grads = gradients(case_id, backend)
    for name in case.params:
        nan = np.isnan(grads[name]) & ~mask(case.undefined, case, name)
        assert not nan.any(), (f"\n{source(case)}NaN in d loss / d {name} at "
                               f"{where_points(case, nan)}")


def central(net: bpc.CompiledNet, p: dict, data: dict, name: str, i: int, h: float,
            order: int) -> float:
    def at(delta: float) -> float:
        q = {n: v.copy() for n, v in p.items()}
        q[name][i] += delta
        with np.errstate(all="ignore"):
            return net.loss(q, **data)

    if order == 2:
        return (at(h) - at(-h)) / (2 * h)
    return (8 * (at(h) - at(-h)) - (at(2 * h) - at(-2 * h))) / (12 * h)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case_id", ids_for("central"))
def test_central_differences_where_smooth(case_id: str, backend: str) -> None:
    """c. Where the function is smooth: the gradient equals central differences."""
    case = CASES[case_id]
    net = network(case_id, backend)
    p, data = split(case)
    loss, grads = gradients(case_id, backend)
    failures = []
    for name in case.params:
        smooth = ~mask(case.rough, case, name)
        for i in np.flatnonzero(smooth):
            for h, order in FD_STEPS:
                numeric = central(net, p, data, name, i, h, order)
                got = grads[name][i]
                tolerance = FD_RTOL * abs(numeric) + FD_ATOL * max(1.0, abs(loss))
                if not abs(got - numeric) <= tolerance:  # a NaN fails too
                    failures.append(f"  d/d{name} at {point(case, i)}: {got!r}, central "
                                    f"(h={h}, order {order}) {numeric!r}")
    assert not failures, f"\n{source(case)}" + "\n".join(failures)


def torch_gradients(case: Case) -> dict[str, np.ndarray]:
    import torch
    v = grid(case.id)
    tensors = {n: torch.tensor(v[n], dtype=torch.float64, requires_grad=n in case.params)
               for n in case.operands}
    total = torch.sum(case.f(_torch_namespace(), **tensors) * 1.0)
    if total.requires_grad:
        total.backward()
    return {n: (np.zeros_like(v[n]) if tensors[n].grad is None
                else tensors[n].grad.numpy().copy()) for n in case.params}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case_id", ids_for("torch"))
def test_matches_torch(case_id: str, backend: str) -> None:
    """d. PyTorch's autograd at the same points, except where PyTorch gives NaN for a
    derivative that exists (`torch_differs`; central differences decide there)."""
    pytest.importorskip("torch")
    case = CASES[case_id]
    _, grads = gradients(case_id, backend)
    expected = torch_gradients(case)
    for name in case.params:
        skip = mask(case.torch_differs, case, name)
        expected[name][skip] = grads[name][skip]
        assert_same(case, name, grads[name], expected[name], TORCH_RTOL)


# ------------------------------------------------------------------ the conventions, as numbers

INF, NAN = math.inf, math.nan
# (case id, the point, the gradient there): the docstring's conventions, checked without
# PyTorch. Where no derivative exists the value is a convention; elsewhere it is the
# derivative itself, at a point where a rewrite could break it.
CONVENTIONS: list[tuple[str, dict[str, float], dict[str, float]]] = [
    ("relu(x)", {"x": 0.0}, {"x": 0.0}),
    ("abs(x)", {"x": 0.0}, {"x": 0.0}),
    ("sqrt(x)", {"x": 0.0}, {"x": INF}),
    ("x ** 0.5", {"x": 0.0}, {"x": INF}),
    ("x ** 1.5", {"x": 0.0}, {"x": 0.0}),
    ("x ** 2.5", {"x": 0.0}, {"x": 0.0}),
    ("x ** 0", {"x": 0.0}, {"x": 0.0}),
    ("x ** 1", {"x": 0.0}, {"x": 1.0}),
    ("x ** 2", {"x": 0.0}, {"x": 0.0}),
    ("leaky_relu(x)", {"x": 0.0}, {"x": 0.01}),
    ("leaky_relu(x, alpha=0.2)", {"x": 0.0}, {"x": 0.2}),
    ("leaky_relu(x, alpha=-0.5)", {"x": 0.0}, {"x": -0.5}),
    ("leaky_relu(x, alpha=-0.5)", {"x": -1.0}, {"x": -0.5}),
    ("elu(x)", {"x": 0.0}, {"x": 1.0}),
    ("elu(x, alpha=0.5)", {"x": 0.0}, {"x": 0.5}),
    ("elu(x, alpha=-1)", {"x": 0.0}, {"x": -1.0}),
    ("elu(x, alpha=-1)", {"x": 1.0}, {"x": 1.0}),
    ("maximum(x, 0)", {"x": 0.0}, {"x": 0.5}),
    ("maximum(0, x)", {"x": 0.0}, {"x": 0.5}),
    ("minimum(x, 1)", {"x": 1.0}, {"x": 0.5}),
    ("maximum(x, x)", {"x": 0.0}, {"x": 1.0}),
    ("minimum(x, -x)", {"x": 0.0}, {"x": 0.0}),
    ("maximum(a, b)", {"a": 1.0, "b": 1.0}, {"a": 0.5, "b": 0.5}),
    ("maximum(a, b) [b input]", {"a": 0.0, "b": 0.0}, {"a": 0.5}),
    ("minimum(a, b)", {"a": -2.0, "b": -2.0}, {"a": 0.5, "b": 0.5}),
    ("where(a > b, a, b)", {"a": 0.5, "b": 0.5}, {"a": 0.0, "b": 1.0}),
    ("where(x > 0, x * x, 3 * x)", {"x": 0.0}, {"x": 3.0}),
    ("where(x, x * x, 1)", {"x": 0.0}, {"x": 0.0}),
    ("where(c, a, b)", {"c": 0.0, "a": 1.0, "b": 1.0}, {"c": 0.0, "a": 0.0, "b": 1.0}),
    ("where(c, a, b)", {"c": -1.0, "a": 1.0, "b": 1.0}, {"c": 0.0, "a": 1.0, "b": 0.0}),
    ("x * (x > 0)", {"x": 0.0}, {"x": 0.0}),
    ("x * (x >= 0)", {"x": 0.0}, {"x": 1.0}),
    ("(x == 1) * x", {"x": 1.0}, {"x": 1.0}),
    ("(x != 1) * x", {"x": 1.0}, {"x": 0.0}),
    ("(a < b) * a * b", {"a": 1.0, "b": 1.0}, {"a": 0.0, "b": 0.0}),
    ("(a <= b) * a * b", {"a": 1.0, "b": 1.0}, {"a": 1.0, "b": 1.0}),
    ("a < b", {"a": 1.0, "b": 1.0}, {"a": 0.0, "b": 0.0}),
    ("0 ** x", {"x": 0.0}, {"x": 0.0}),
    ("0 ** x", {"x": 0.5}, {"x": 0.0}),
    ("(-2) ** x", {"x": 1.0}, {"x": NAN}),
    ("x ** x", {"x": 0.0}, {"x": 0.0}),
    ("a ** b", {"a": 0.0, "b": 0.0}, {"a": 0.0, "b": 0.0}),
    ("a ** b", {"a": 0.0, "b": 1.0}, {"a": 1.0, "b": 0.0}),
    ("a ** b", {"a": 0.0, "b": 0.5}, {"a": INF, "b": 0.0}),
    ("a ** b", {"a": 0.0, "b": 2.0}, {"a": 0.0, "b": 0.0}),
    ("a ** b", {"a": -1.0, "b": 1.0}, {"a": 1.0, "b": NAN}),
    ("a ** b", {"a": 1.0, "b": -2.0}, {"a": -2.0, "b": 0.0}),
    ("a ** b [b input]", {"a": 0.0, "b": 0.0}, {"a": 0.0}),
    ("a ** b [a input]", {"a": 0.0, "b": -1.0}, {}),  # 0 ** -1 is inf: not a point
    ("a / b", {"a": 0.0, "b": -1.0}, {"a": -1.0, "b": 0.0}),
    ("relu(x) ** 2", {"x": 0.0}, {"x": 0.0}),
    ("abs(x) ** 3", {"x": 0.0}, {"x": 0.0}),
    ("sqrt(relu(x))", {"x": 0.0}, {"x": 0.0}),
    ("sqrt(x * x)", {"x": 0.0}, {"x": 0.0}),
    ("where(x >= 0, sqrt(x), -x)", {"x": 0.0}, {"x": INF}),
    ("where(x >= 0, sqrt(x), -x)", {"x": -1.0}, {"x": -1.0}),
    ("where(x > 0, exp(-1 / x), 0)", {"x": 0.0}, {"x": 0.0}),
    ("maximum(exp(x), 1)", {"x": 0.0}, {"x": 0.5}),
]


def _convention_params() -> list:
    params = []
    for case_id, point, expected in CONVENTIONS:
        marks = []
        if ("convention", case_id) in KNOWN:
            marks = [pytest.mark.xfail(strict=True, reason=KNOWN["convention", case_id])]
        label = ", ".join(f"{n}={v:g}" for n, v in point.items())
        params.append(pytest.param(case_id, point, expected, marks=marks,
                                   id=f"{case_id} at {label}"))
    return params


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case_id, point, expected", _convention_params())
def test_convention_at_singular_points(case_id: str, point: dict, expected: dict,
                                       backend: str) -> None:
    """e. The docstring's conventions as numbers (exact: each is one rounding at most)."""
    case = CASES[case_id]
    v = grid(case_id)
    at = np.logical_and.reduce([v[n] == value for n, value in point.items()])
    if not expected:  # the forward is not finite there: the point must have been left out
        assert not at.any()
        return
    assert at.sum() == 1, f"{point} is not one of the points of {case_id}"
    _, grads = gradients(case_id, backend)
    for name, value in expected.items():
        got = float(grads[name][at][0])
        assert got == pytest.approx(value, rel=1e-15, abs=0, nan_ok=True), (
            f"\n{source(case)}d loss / d {name} at {point}: {got!r}, convention {value!r}")
