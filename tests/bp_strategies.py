"""Hypothesis strategies for random, valid `.bp` programs, each with a NumPy meaning.

`networks()` draws a whole network from the language of SPEC section 1: inputs and targets
with a symbolic batch dim, params of rank 0-2 with random initializers, consts (in dims and
in expressions), `def` functions (calling earlier ones), `dense` layers with random `act=`,
every elementwise built-in and operator, broadcasting, reductions over random axes (negative
ones and keepdims too), softmax and log_softmax, matmul in its 1-D and 2-D combinations,
`.T`, several outputs, a scalar loss from the loss built-ins or reductions, and a random
optimizer line. It also draws the data: a batch size (1 included), a seed, and from the seed
the arrays and a point in parameter space.

Programs are valid by construction: every expression is built for a shape it is known to
have (symbolic dims only ever meet themselves or 1s), so a BPError compiling one is a bug.

Every expression is built together with
- its text, printed with the fewest parentheses the grammar's precedence needs (and, now and
  then, redundant ones), so precedence and associativity are exercised;
- an interval bounding its value given data in [-1, 1], targets in [0, 1] and params in
  [-1, 1]: log and sqrt only see values >= 0.1, a divisor is >= 0.3, exp's argument is <= 4,
  a fractional or negative power has a base >= 0.1, magnitudes stay below about 30, so
  finite differences are meaningful;
- its meaning in NumPy (`Ex.ev`), written here from SPEC, not from the compiler: the test
  compares the compiled forward and loss with it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
from hypothesis import strategies as st

Dim = int | str
Shape = tuple[Dim, ...]
Env = dict[str, object]   # name -> array (data, params, assigned values, def arguments)
Eval = Callable[[Env], np.ndarray]

# Precedence of the grammar, loosest first: comparison, + -, * / @, unary -, **, postfix .T,
# atoms (names, numbers, calls, parenthesized expressions).
CMP, ADD, MUL, NEG, POW, POST, ATOM = range(7)

# Batch sizes: mostly small, now and then past a vector of float64 (8 on AVX-512) with a
# tail, and past the 4-row blocks of the llvm backend's matmul and row kernels.
BATCH_SIZES = (1, 2, 3, 4, 5, 8, 9, 17)
NMAX = max(BATCH_SIZES)   # intervals use it for sums over the batch
LARGE_FEATURES = (5, 8, 9, 16, 17, 33)
BIG = 30.0        # expressions larger than this are squashed before going further
DEF_DOMAIN = 3.0  # a def's arguments are kept in [-3, 3]; its output interval assumes that
PARAM_BOUND = 1.0


# ------------------------------------------------------------------ reference math


def sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=np.float64)))


def softplus(x):
    return np.logaddexp(0.0, x)


def gelu(x):
    x = np.asarray(x, dtype=np.float64)
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def logsumexp(x, axis=None, keepdims=False):
    x = np.asarray(x, dtype=np.float64)
    m = np.max(x, axis=axis, keepdims=True)
    out = m + np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True))
    return out if keepdims else np.squeeze(out, axis=axis)


def softmax(x, axis):
    x = np.asarray(x, dtype=np.float64)
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis, keepdims=True)


def log_softmax(x, axis):
    return np.asarray(x, dtype=np.float64) - logsumexp(x, axis=axis, keepdims=True)


def _f(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


# ------------------------------------------------------------------- expressions


@dataclass(frozen=True)
class Ex:
    """A generated expression: text, precedence, shape, value interval and NumPy meaning."""

    text: str
    prec: int
    shape: Shape
    lo: float
    hi: float
    ev: Eval
    tensor: bool = True     # False: a compile-time number (literals, consts, dims)
    param: bool = False     # depends on a param
    target: bool = False    # depends on a target

    @property
    def bound(self) -> float:
        return max(abs(self.lo), abs(self.hi))

    def at(self, level: int) -> str:
        return self.text if self.prec >= level else f"({self.text})"


def _merge(*exs: Ex) -> dict:
    return {"tensor": any(e.tensor for e in exs), "param": any(e.param for e in exs),
            "target": any(e.target for e in exs)}


def broadcast(*shapes: Shape) -> Shape:
    rank = max((len(s) for s in shapes), default=0)
    out = []
    for axis in range(-rank, 0):
        dims = {s[axis] for s in shapes if len(s) >= -axis} - {1}
        assert len(dims) <= 1, shapes
        out.append(dims.pop() if dims else 1)
    return tuple(out)


def _interval(values) -> tuple[float, float]:
    values = [float(v) for v in values]
    return min(values), max(values)


def lit(text: str) -> Ex:
    value = float(text)
    return Ex(text, ATOM, (), value, value, lambda env, v=value: np.float64(v), tensor=False)


def ref(name: str, shape: Shape, lo: float, hi: float, *, tensor: bool = True,
        param: bool = False, target: bool = False) -> Ex:
    return Ex(name, ATOM, shape, lo, hi, lambda env, n=name: env[n], tensor=tensor,
              param=param, target=target)


def paren(e: Ex) -> Ex:
    return replace(e, text=f"({e.text})", prec=ATOM)


def neg(a: Ex) -> Ex:
    return Ex(f"-{a.at(NEG)}", NEG, a.shape, -a.hi, -a.lo, lambda env: -_f(a.ev(env)),
              **_merge(a))


_ARITH: dict[str, Callable] = {
    "+": lambda x, y: x + y, "-": lambda x, y: x - y, "*": lambda x, y: x * y,
    "/": lambda x, y: x / y,
}
_LEVEL = {"+": ADD, "-": ADD, "*": MUL, "/": MUL, "@": MUL}


def binop(op: str, a: Ex, b: Ex) -> Ex:
    """a op b for + - * /; a divisor must be bounded away from 0 (the caller sees to it)."""
    level = _LEVEL[op]
    text = f"{a.at(level)} {op} {b.at(level + 1)}"
    if op == "/":
        assert b.lo > 0 or b.hi < 0, b
        corners = [x / y for x in (a.lo, a.hi) for y in (b.lo, b.hi)]
    elif op == "*":
        corners = [x * y for x in (a.lo, a.hi) for y in (b.lo, b.hi)]
    elif op == "+":
        corners = [a.lo + b.lo, a.hi + b.hi]
    else:
        corners = [a.lo - b.hi, a.hi - b.lo]
    fn = _ARITH[op]
    return Ex(text, level, broadcast(a.shape, b.shape), *_interval(corners),
              lambda env: fn(_f(a.ev(env)), _f(b.ev(env))), **_merge(a, b))


def power(a: Ex, b: Ex) -> Ex:
    """a ** b: an integer exponent for any base, anything else only for a base >= 0.1."""
    text = f"{a.at(POST)} ** {b.at(NEG)}"
    if b.tensor or b.lo != b.hi or b.lo != int(b.lo):
        assert a.lo >= 0.1, a
        corners = [x**y for x in (a.lo, a.hi) for y in (b.lo, b.hi)]
        lo, hi = _interval(corners)
    else:
        n = int(b.lo)
        xs = [a.lo, a.hi] + ([0.0] if a.lo < 0 < a.hi else [])
        if n < 0:
            assert a.lo > 0 or a.hi < 0, a
        lo, hi = _interval([x**n for x in xs if x != 0 or n >= 0])
    return Ex(text, POW, broadcast(a.shape, b.shape), lo, hi,
              lambda env: np.power(_f(a.ev(env)), _f(b.ev(env))), **_merge(a, b))


_COMPARE: dict[str, Callable] = {
    "<": np.less, "<=": np.less_equal, ">": np.greater, ">=": np.greater_equal,
    "==": np.equal, "!=": np.not_equal,
}


def compare(op: str, a: Ex, b: Ex) -> Ex:
    fn = _COMPARE[op]
    return Ex(f"{a.at(ADD)} {op} {b.at(ADD)}", CMP, broadcast(a.shape, b.shape), 0.0, 1.0,
              lambda env: fn(_f(a.ev(env)), _f(b.ev(env))).astype(np.float64),
              **_merge(a, b))


def call_text(func: str, args: list[str], keywords: list[tuple[str, str]] = ()) -> str:
    parts = list(args) + [f"{k}={v}" for k, v in keywords]
    return f"{func}({', '.join(parts)})"


# Elementwise built-ins of one tensor argument: name -> (NumPy meaning, interval map).
def _monotone(fn: Callable[[float], float]) -> Callable[[float, float], tuple[float, float]]:
    return lambda lo, hi: (fn(lo), fn(hi))


def _even(fn: Callable[[float], float]) -> Callable[[float, float], tuple[float, float]]:
    def bounds(lo: float, hi: float) -> tuple[float, float]:
        top = max(fn(lo), fn(hi))
        return (fn(0.0) if lo <= 0 <= hi else min(fn(lo), fn(hi))), top
    return bounds


def _gelu_bounds(lo: float, hi: float) -> tuple[float, float]:
    if lo >= 0:
        return float(gelu(lo)), float(gelu(hi))
    return -0.18, max(float(gelu(hi)), 0.0)


def _silu_bounds(lo: float, hi: float) -> tuple[float, float]:
    silu = lambda v: v * float(sigmoid(v))  # noqa: E731
    if lo >= 0:
        return silu(lo), silu(hi)
    return -0.28, max(silu(hi), 0.0)  # its minimum is -0.2785, at -1.2785


UNARY: dict[str, tuple[Callable, Callable[[float, float], tuple[float, float]]]] = {
    "exp": (np.exp, _monotone(math.exp)),
    "log": (np.log, _monotone(math.log)),
    "sqrt": (np.sqrt, _monotone(math.sqrt)),
    "abs": (np.abs, _even(abs)),
    "square": (np.square, _even(lambda v: v * v)),
    "sin": (np.sin, lambda lo, hi: (-1.0, 1.0)),
    "cos": (np.cos, lambda lo, hi: (-1.0, 1.0)),
    "tanh": (np.tanh, _monotone(math.tanh)),
    "sigmoid": (sigmoid, _monotone(lambda v: float(sigmoid(v)))),
    "relu": (lambda x: np.maximum(x, 0.0), _monotone(lambda v: max(v, 0.0))),
    "softplus": (softplus, _monotone(lambda v: float(softplus(v)))),
    "gelu": (gelu, _gelu_bounds),
    "linear": (lambda x: x, _monotone(lambda v: v)),
    # added with tensors of any rank: defined everywhere, and growing slowly
    "atan": (np.arctan, _monotone(math.atan)),
    "asinh": (np.arcsinh, _monotone(math.asinh)),
    "erf": (lambda x: np.vectorize(math.erf)(x), _monotone(math.erf)),
    "silu": (lambda x: x * sigmoid(x), _silu_bounds),
}
# Activations with a numeric option: name -> (option name, default, NumPy meaning).
OPTIONED: dict[str, tuple[str, float, Callable]] = {
    "leaky_relu": ("alpha", 0.01, lambda x, a: np.where(x > 0, x, a * x)),
    "elu": ("alpha", 1.0, lambda x, a: np.where(x > 0, x, a * (np.exp(np.minimum(x, 0)) - 1))),
}

def unary(func: str, a: Ex, option: tuple[str, float] | None = None) -> Ex:
    """A one-argument elementwise built-in; `option` is (text, value) of alpha, if given."""
    if func in OPTIONED:
        name, default, fn = OPTIONED[func]
        alpha = default if option is None else option[1]
        keywords = [] if option is None else [(name, option[0])]
        text = call_text(func, [a.text], keywords)
        corners = [v if v > 0 else alpha * (v if func == "leaky_relu" else math.exp(v) - 1)
                   for v in (a.lo, a.hi)]
        return Ex(text, ATOM, a.shape, *_interval(corners),
                  lambda env: fn(_f(a.ev(env)), alpha), **_merge(a))
    fn, bounds = UNARY[func]
    if func in ("log", "sqrt"):
        assert a.lo >= 0.1, a
    if func == "exp":
        assert a.hi <= 4.5, a
    lo, hi = bounds(a.lo, a.hi)
    return Ex(call_text(func, [a.text]), ATOM, a.shape, lo, hi, lambda env: fn(_f(a.ev(env))),
              **_merge(a))


def maximum(func: str, a: Ex, b: Ex) -> Ex:
    pick = max if func == "maximum" else min
    fn = np.maximum if func == "maximum" else np.minimum
    return Ex(call_text(func, [a.text, b.text]), ATOM, broadcast(a.shape, b.shape),
              pick(a.lo, b.lo), pick(a.hi, b.hi),
              lambda env: fn(_f(a.ev(env)), _f(b.ev(env))), **_merge(a, b))


def where(c: Ex, a: Ex, b: Ex) -> Ex:
    return Ex(call_text("where", [c.text, a.text, b.text]), ATOM,
              broadcast(c.shape, a.shape, b.shape), min(a.lo, b.lo), max(a.hi, b.hi),
              lambda env: np.where(_f(c.ev(env)) != 0, _f(a.ev(env)), _f(b.ev(env))),
              **_merge(c, a, b))


def dim_size(d: Dim) -> int:
    return NMAX if isinstance(d, str) else d


_REDUCE = {
    "sum": lambda x, axis, kd: np.sum(x, axis=axis, keepdims=kd),
    "mean": lambda x, axis, kd: np.mean(x, axis=axis, keepdims=kd),
    "max": lambda x, axis, kd: np.max(x, axis=axis, keepdims=kd),
    "logsumexp": lambda x, axis, kd: logsumexp(x, axis=axis, keepdims=kd),
}


def reduce(func: str, a: Ex, axis: int | None, keepdims: bool, args: list[str],
           keywords: list[tuple[str, str]]) -> Ex:
    """`func(a, ...)` over `axis` (normalized; None: all); args/keywords spell the options."""
    axes = tuple(range(len(a.shape))) if axis is None else (axis,)
    if keepdims:
        shape = tuple(1 if i in axes else d for i, d in enumerate(a.shape))
    else:
        shape = tuple(d for i, d in enumerate(a.shape) if i not in axes)
    n = math.prod(dim_size(a.shape[i]) for i in axes)
    lo, hi = {
        "sum": (min(a.lo * n, a.lo), max(a.hi * n, a.hi)),
        "mean": (a.lo, a.hi),
        "max": (a.lo, a.hi),
        "logsumexp": (a.lo, a.hi + math.log(max(n, 1))),
    }[func]
    fn = _REDUCE[func]
    return Ex(call_text(func, [a.text] + args, keywords), ATOM, shape, lo, hi,
              lambda env: fn(_f(a.ev(env)), axis, keepdims), tensor=True, param=a.param,
              target=a.target)


def softmax_call(func: str, a: Ex, axis: int, args: list[str],
                 keywords: list[tuple[str, str]]) -> Ex:
    n = dim_size(a.shape[axis])
    if func == "softmax":
        lo, hi, fn = 0.0, 1.0, softmax
    else:
        lo, hi, fn = a.lo - a.hi - math.log(n), 0.0, log_softmax
    return Ex(call_text(func, [a.text] + args, keywords), ATOM, a.shape, lo, hi,
              lambda env: fn(a.ev(env), axis), param=a.param, target=a.target)


def matmul(a: Ex, b: Ex) -> Ex:
    assert a.shape[-1] == b.shape[0], (a.shape, b.shape)
    m = dim_size(a.shape[-1]) * a.bound * b.bound
    return Ex(f"{a.at(MUL)} @ {b.at(MUL + 1)}", MUL, a.shape[:-1] + b.shape[1:], -m, m,
              lambda env: np.matmul(_f(a.ev(env)), _f(b.ev(env))), param=a.param or b.param,
              target=a.target or b.target)


def transpose(a: Ex) -> Ex:
    assert len(a.shape) == 2 and a.tensor
    return Ex(f"{a.at(POST)}.T", POST, a.shape[::-1], a.lo, a.hi,
              lambda env: _f(a.ev(env)).T, param=a.param, target=a.target)


# ------------------------------------------------------------------------- losses


def mse(y: Ex, t: Ex) -> Ex:
    top = max((y.hi - t.lo) ** 2, (y.lo - t.hi) ** 2)
    return Ex(call_text("mse", [y.text, t.text]), ATOM, (), 0.0, top,
              lambda env: np.mean((_f(y.ev(env)) - _f(t.ev(env))) ** 2), **_merge(y, t))


def cross_entropy(z: Ex, t: Ex) -> Ex:
    n = dim_size(z.shape[-1])
    top = z.hi - z.lo + math.log(n)

    def ev(env: Env) -> np.ndarray:
        rows = -np.sum(_f(t.ev(env)) * log_softmax(z.ev(env), -1), axis=-1)
        return np.mean(rows)

    return Ex(call_text("cross_entropy", [z.text, t.text]), ATOM, (), -top, top, ev,
              **_merge(z, t))


def binary_cross_entropy(p: Ex, t: Ex) -> Ex:
    assert 0.005 <= p.lo and p.hi <= 0.995, p
    top = -math.log(min(p.lo, 1 - p.hi)) * max(1.0, t.bound) * 2

    def ev(env: Env) -> np.ndarray:
        pv, tv = _f(p.ev(env)), _f(t.ev(env))
        return np.mean(-(tv * np.log(pv) + (1 - tv) * np.log(1 - pv)))

    return Ex(call_text("binary_cross_entropy", [p.text, t.text]), ATOM, (), -top, top, ev,
              **_merge(p, t))


def bce_with_logits(z: Ex, t: Ex) -> Ex:
    top = (z.bound + math.log(2)) * (1 + t.bound)

    def ev(env: Env) -> np.ndarray:
        zv, tv = _f(z.ev(env)), _f(t.ev(env))
        return np.mean(softplus(zv) - tv * zv)

    return Ex(call_text("bce_with_logits", [z.text, t.text]), ATOM, (), -top, top, ev,
              **_merge(z, t))


# ---------------------------------------------------------------------- a program


@dataclass(frozen=True)
class Def:
    name: str
    args: tuple[str, ...]
    body: Ex          # over the argument names, each in [-DEF_DOMAIN, DEF_DOMAIN]


@dataclass
class Case:
    """One generated network, its data and a point in parameter space; `evaluate` gives its
    meaning in NumPy."""

    source: str
    params: dict[str, tuple[int, ...]]
    inputs: dict[str, Shape]
    targets: dict[str, tuple[Shape, str]]       # shape and kind: "prob" rows sum to 1
    outputs: tuple[str, ...]
    assignments: list[tuple[str, Ex]]
    loss: Ex | None
    optimizer: str
    sizes: dict[str, int]
    seed: int
    data: dict[str, np.ndarray] = field(default_factory=dict)
    point: dict[str, np.ndarray] = field(default_factory=dict)   # params, uniform in [-1, 1]
    other_sizes: dict[str, int] = field(default_factory=dict)    # for a second call

    def __repr__(self) -> str:
        sizes = ", ".join(f"{k}={v}" for k, v in self.sizes.items())
        return f"Case(sizes: {sizes}, seed: {self.seed}, source:\n{self.source})"

    def resized(self, sizes: dict[str, int], seed: int) -> Case:
        """The same network and point with other batch sizes and data."""
        other = replace(self, sizes=dict(sizes), seed=seed, data={}, point=self.point)
        make_data(other, point=False)
        return other

    def _repr_pretty_(self, printer, cycle: bool) -> None:  # how hypothesis shows it
        printer.text(repr(self))

    def evaluate(self, params: dict[str, np.ndarray],
                 data: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], float | None]:
        """Outputs and loss computed in NumPy from the generated expressions."""
        env: Env = {**params, **data, **self.sizes}
        for name, ex in self.assignments:
            env[name] = _f(ex.ev(env))
        outputs = {n: _f(env[n]) for n in self.outputs}
        loss = None if self.loss is None else float(self.loss.ev(env))
        return outputs, loss


def concrete(shape: Shape, sizes: dict[str, int]) -> tuple[int, ...]:
    return tuple(sizes[d] if isinstance(d, str) else d for d in shape)


def make_data(case: Case, point: bool = True) -> None:
    """Arrays for the inputs and targets, and a random point for the params, from the seed."""
    rng = np.random.default_rng(case.seed)
    for name, shape in case.inputs.items():
        case.data[name] = rng.uniform(-1.0, 1.0, concrete(shape, case.sizes))
    for name, (shape, kind) in case.targets.items():
        values = rng.uniform(0.0, 1.0, concrete(shape, case.sizes))
        if kind == "prob":  # rows along the last axis sum to 1, as cross_entropy needs
            values = values + 0.05
            values = values / np.sum(values, axis=-1, keepdims=True)
        case.data[name] = values
    if point:
        case.point = {name: rng.uniform(-PARAM_BOUND, PARAM_BOUND, shape)
                      for name, shape in case.params.items()}


# ------------------------------------------------------------------- the generator


NUMBER_TEXTS = ("2", "0.5", "3", "0.1", "1.5", "0.25", "1e-1", "2.5E-1", ".5", "1.0", "4",
                "0.75", "1e0", "0.2")
POWERS = ("2", "3", "0.5", "1.5", "-1", "-2", "-0.5", "2.0", "4")
INITS = ("zeros", "ones", "xavier", "he", "0.5", "-0.25", "normal(0.3)", "normal(std=0.1)",
         "uniform(-0.5, 0.5)", "uniform(low=0, high=1)", "3e-1")
DENSE_ACTS = ("linear", "relu", "tanh", "sigmoid", "softplus", "leaky_relu", "elu", "gelu",
              "sin", "cos", "abs", "square", "exp")


class Generator:
    """Draws one program. `draw` is the composite strategy's draw."""

    def __init__(self, draw):
        self.draw = draw
        self.n = draw(st.sampled_from(["N", "batch", "S"]))   # the batch symbol
        self.statements: list[str] = []   # in program order
        self.pending: list[str] = []      # declarations the statement being built needs
        self.inputs: dict[str, Shape] = {}
        self.targets: dict[str, tuple[Shape, str]] = {}
        self.params: dict[str, tuple[int, ...]] = {}
        self.tensors: dict[str, Ex] = {}  # assigned names, as references
        self.defs: dict[str, Def] = {}
        self.dim_consts: dict[int, str] = {}    # size -> const naming it
        self.value_consts: dict[str, float] = {}
        self.assignments: list[tuple[str, Ex]] = []
        self.counter = 0
        self.extra_symbol: tuple[str, str] | None = None   # (input name, symbol)

    # ---------------------------------------------------------------- choices

    def choice(self, options):
        return self.draw(st.sampled_from(list(options)))

    def integer(self, lo: int, hi: int) -> int:
        return self.draw(st.integers(lo, hi))

    def coin(self, p: float) -> bool:
        """True with probability p; shrinks to False."""
        return self.draw(st.integers(0, 99)) >= 100 - round(100 * p)

    def weighted(self, options: list[tuple[float, object]]):
        """One of `options` (weight, value), shrinking to the first."""
        total = sum(w for w, _ in options)
        pick = self.draw(st.integers(0, 999)) / 1000 * total
        for weight, value in options:
            if pick < weight:
                return value
            pick -= weight
        return options[-1][1]

    def fresh(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    # ------------------------------------------------------------ declarations

    def dim_text(self, d: Dim) -> str:
        if isinstance(d, int) and d in self.dim_consts:
            return self.dim_consts[d]
        return str(d)

    def dims_text(self, shape: Shape) -> str:
        return "[" + ", ".join(self.dim_text(d) for d in shape) + "]"

    def declare_param(self, shape: tuple[int, ...], now: bool = False) -> Ex:
        name = self.fresh(self.choice(["w", "W", "p", "theta_"]))
        init = "" if self.coin(0.2) else " = " + self.choice(INITS)
        stmt = f"param {name}{self.dims_text(shape)}{init}"
        (self.statements if now else self.pending).append(stmt)
        self.params[name] = shape
        return self.param_ref(name)

    def param_ref(self, name: str) -> Ex:
        return ref(name, self.params[name], -PARAM_BOUND, PARAM_BOUND, param=True)

    def declare_target(self, shape: Shape, kind: str) -> Ex:
        name = self.fresh("t")
        self.pending.append(f"target {name}{self.dims_text(shape)}")
        self.targets[name] = (shape, kind)
        return self.target_ref(name)

    def target_ref(self, name: str) -> Ex:
        return ref(name, self.targets[name][0], 0.0, 1.0, target=True)

    def input_ref(self, name: str) -> Ex:
        return ref(name, self.inputs[name], -1.0, 1.0)

    # ----------------------------------------------------------------- shapes

    def feature(self) -> int:
        if self.coin(0.1):
            return self.choice(LARGE_FEATURES)
        return self.integer(1, 4)

    def batch_inputs(self) -> list[str]:
        return [n for n, s in self.inputs.items() if len(s) == 2 and s[0] == self.n]

    def constructible(self, shape: Shape) -> bool:
        """Can an expression of exactly `shape` be built (see `data_leaf`)?"""
        symbolic = [i for i, d in enumerate(shape) if isinstance(d, str)]
        if not symbolic:
            return True
        if any(shape[i] != self.n for i in symbolic) or len(symbolic) > 1:
            return False
        if not self.batch_inputs():
            return False
        if len(shape) <= 2:
            return True
        return shape in self.inputs.values()

    def partners(self, shape: Shape) -> list[Shape]:
        """Shapes that broadcast with `shape` to `shape`."""
        found = {shape, ()}
        for k in range(1, len(shape)):
            found.add(shape[k:])
        for i in range(len(shape)):
            found.add(shape[:i] + (1,) + shape[i + 1:])
        return sorted((s for s in found if self.constructible(s)), key=lambda s: (len(s), str(s)))

    # ------------------------------------------------------------------ leaves

    def names_of(self, shape: Shape, *, targets: bool) -> list[Ex]:
        found = [self.param_ref(n) for n, s in self.params.items() if s == shape]
        found += [self.input_ref(n) for n, s in self.inputs.items() if s == shape]
        found += [t for t in self.tensors.values() if t.shape == shape
                  and (targets or not t.target)]
        if targets:
            found += [self.target_ref(n) for n, (s, _) in self.targets.items() if s == shape]
        return found

    def number_leaf(self) -> Ex:
        options: list[tuple[float, object]] = [(4, "lit")]
        if self.value_consts:
            options.append((1, "const"))
        if self.batch_inputs() and not self.in_def:
            options.append((0.5, "dim"))
        kind = self.weighted(options)
        if kind == "const":
            name = self.choice(sorted(self.value_consts))
            v = self.value_consts[name]
            return Ex(name, ATOM, (), v, v, lambda env, v=v: np.float64(v), tensor=False)
        if kind == "dim":
            return Ex(self.n, ATOM, (), 1.0, float(NMAX),
                      lambda env, n=self.n: np.float64(env[n]), tensor=False)
        return lit(self.choice(NUMBER_TEXTS))

    def leaf(self, shape: Shape, *, tensor: bool, targets: bool) -> Ex:
        if self.in_def:
            if self.args and self.coin(0.8):
                name = self.choice(self.args)
                return ref(name, (), -DEF_DOMAIN, DEF_DOMAIN)
            return self.number_leaf()
        options: list[tuple[float, object]] = []
        named = self.names_of(shape, targets=targets)
        if named:
            options.append((6, "name"))
        if len(shape) == 2 and self.names_of(shape[::-1], targets=targets):
            options.append((1, "transposed"))
        if shape == () and not tensor:
            options.append((3, "number"))
        if all(isinstance(d, int) for d in shape):
            options.append((2, "new param"))
        else:
            options.append((3, "data"))
        if shape == () and self.extra_symbol is not None:
            options.append((1, "other batch"))
        kind = self.weighted(options)
        if kind == "name":
            return self.choice(named)
        if kind == "transposed":
            return transpose(self.choice(self.names_of(shape[::-1], targets=targets)))
        if kind == "number":
            return self.number_leaf()
        if kind == "new param":
            return self.declare_param(shape)
        if kind == "other batch":
            return self.other_batch()
        return self.data_leaf(shape)

    def param_of(self, shape: tuple[int, ...]) -> Ex:
        existing = [n for n, s in self.params.items() if s == shape]
        if existing and self.coin(0.5):
            return self.param_ref(self.choice(existing))
        return self.declare_param(shape)

    def data_leaf(self, shape: Shape) -> Ex:
        """An expression of a shape with the batch dim, from a batch input."""
        if len(shape) == 2 and shape[1] == self.n:
            return transpose(self.data_leaf(shape[::-1]))
        exact = [n for n, s in self.inputs.items() if s == shape]
        if exact and (len(shape) == 3 or self.coin(0.6)):
            return self.input_ref(self.choice(exact))
        x = self.input_ref(self.choice(self.batch_inputs()))
        j = x.shape[1]
        if shape == (self.n,):
            if self.coin(0.5):
                return matmul(x, self.param_of((j,)))
            func = self.choice(["sum", "mean", "max", "logsumexp"])
            axis = self.choice([1, -1])
            return reduce(func, x, 1, False, [], [("axis", str(axis))])
        assert len(shape) == 2 and shape[0] == self.n, shape
        k = shape[1]
        if k == j and self.coin(0.3):
            return x
        if k == 1 and self.coin(0.4):
            return reduce("sum", x, 1, True, [], [("axis", "1"), ("keepdims", "true")])
        return matmul(x, self.param_of((j, k)))

    def other_batch(self) -> Ex:
        """A scalar from the input whose batch dim is a second symbol."""
        name, _ = self.extra_symbol
        z = self.input_ref(name)
        if self.coin(0.5):
            z = matmul(z, self.param_of((z.shape[1],)))
        func = self.choice(["sum", "mean", "logsumexp", "max"])
        return reduce(func, z, None, False, [], [])

    # ----------------------------------------------------- domain adjustments

    def fit(self, e: Ex, limit: float) -> Ex:
        """`e`, squashed into [-limit, limit] if its interval is not inside it."""
        if e.bound <= limit:
            return e
        how = self.choice(["tanh", "scale", "sin", "softsign", "clip"])
        if how == "scale" and e.bound * 0.1 <= limit:
            return binop("*", lit("0.1"), e)
        if how == "sin" and limit >= 1:
            return unary("sin", e)
        if how == "softsign" and limit >= 1:  # x / (1 + |x|) lies in (-1, 1)
            return replace(binop("/", e, binop("+", lit("1"), unary("abs", e))), lo=-1.0,
                           hi=1.0)
        if how == "clip" and limit >= 1:
            return maximum("minimum", maximum("maximum", e, neg(lit("1"))), lit("1"))
        return unary("tanh", e) if limit >= 1 else binop("*", lit("0.5"), unary("tanh", e))

    def positive(self, e: Ex, floor: float = 0.1) -> Ex:
        """`e` if it is surely >= floor, else a positive function of it plus a margin."""
        if e.lo >= floor:
            return e
        margin = lit(self.choice(["0.5", "1", "1.5"]) if floor > 0.1 else
                     self.choice(["0.1", "0.5", "1"]))
        how = self.choice(["softplus", "square", "exp", "sigmoid", "abs", "hypot"])
        if how == "exp":  # exp(-1) = 0.37 is above either floor
            return unary("exp", self.fit(e, 1.0))
        if how == "hypot":
            return unary("sqrt", binop("+", unary("square", self.fit(e, BIG)), lit("1")))
        if how == "square":
            inner = unary("square", self.fit(e, 5.0))
        elif how == "sigmoid":
            inner = unary("sigmoid", e)
        elif how == "abs":
            inner = unary("abs", e)
        else:
            inner = unary("softplus", e)
        return binop("+", inner, margin)

    def probability(self, e: Ex) -> Ex:
        """A value in [0.01, 0.99] made from `e`, for binary_cross_entropy."""
        if 0.01 <= e.lo and e.hi <= 0.99:
            return e
        how = self.choice(["sigmoid", "tanh", "affine sigmoid"])
        if how == "sigmoid":
            return unary("sigmoid", self.fit(e, 4.0))
        if how == "tanh":
            return binop("+", lit("0.5"), binop("*", lit("0.4"), unary("tanh", e)))
        return binop("+", lit("0.05"), binop("*", lit("0.9"), unary("sigmoid", e)))

    # ------------------------------------------------------------ expressions

    in_def = False
    args: tuple[str, ...] = ()

    def gen(self, shape: Shape, depth: int, *, tensor: bool = False,
            targets: bool = False, loss: bool = False) -> Ex:
        """An expression of exactly `shape` (a tensor if `tensor`), at most `depth` deep."""
        e = self._gen(shape, depth, tensor=tensor, targets=targets, loss=loss)
        assert e.shape == shape, (e.text, e.shape, shape)
        assert e.tensor or not tensor, e.text
        if e.bound > BIG:
            e = self.fit(e, BIG)
        if e.prec < ATOM and self.coin(0.05):
            e = paren(e)
        return e

    def _gen(self, shape: Shape, depth: int, *, tensor: bool, targets: bool,
             loss: bool) -> Ex:
        if depth <= 0:
            return self.leaf(shape, tensor=tensor, targets=targets)
        kw = {"targets": targets}
        rank = len(shape)
        options: list[tuple[float, str]] = [(3, "leaf"), (3, "unary"), (4, "binary"),
                                            (1, "neg"), (1, "power"), (1, "where"),
                                            (1, "minmax"), (0.4, "compare")]
        if self.defs:
            options.append((1.5, "def"))
        if not self.in_def:
            options += [(2, "reduce"), (1.5, "matmul")]
            if rank >= 1:
                options.append((1, "softmax"))
            if rank == 2:
                options.append((0.7, "transpose"))
                options.append((0.7, "outer"))
            if shape == () and loss:
                options.append((5, "loss"))
        kind = self.weighted(options)
        sub = depth - 1
        if kind == "leaf":
            return self.leaf(shape, tensor=tensor, targets=targets)
        if kind == "unary":
            return self.gen_unary(shape, sub, tensor, kw)
        if kind == "neg":
            return neg(self.gen(shape, sub, tensor=tensor, **kw))
        if kind == "binary":
            return self.gen_binary(shape, sub, tensor, kw)
        if kind == "power":
            return self.gen_power(shape, sub, tensor, kw)
        if kind == "compare":
            a, b = self.two(shape, sub, tensor, kw)
            return compare(self.choice(["<", "<=", ">", ">=", "==", "!="]), a, b)
        if kind == "where":
            return self.gen_where(shape, sub, tensor, kw)
        if kind == "minmax":
            a, b = self.two(shape, sub, tensor, kw)
            return maximum(self.choice(["maximum", "minimum"]), a, b)
        if kind == "def":
            return self.gen_def_call(shape, sub, tensor, kw)
        if kind == "reduce":
            return self.gen_reduce(shape, sub, kw)
        if kind == "matmul":
            made = self.gen_matmul(shape, sub, kw)
            return made if made is not None else self.leaf(shape, tensor=tensor, **kw)
        if kind == "softmax":
            return self.gen_softmax(shape, sub, kw)
        if kind == "transpose":
            return transpose(self.gen(shape[::-1], sub, tensor=True, **kw))
        if kind == "outer":
            return self.gen_outer(shape, sub, kw)
        return self.gen_loss(sub)

    def two(self, shape: Shape, depth: int, tensor: bool, kw) -> tuple[Ex, Ex]:
        """Two operands broadcasting to `shape`, one of exactly `shape`, in random order."""
        a = self.gen(shape, depth, tensor=tensor, **kw)
        b = self.gen(self.choice(self.partners(shape)), depth, **kw)
        return (a, b) if self.coin(0.5) else (b, a)

    def gen_unary(self, shape: Shape, depth: int, tensor: bool, kw) -> Ex:
        func = self.choice(list(UNARY) + list(OPTIONED))
        a = self.gen(shape, depth, tensor=tensor, **kw)
        if func in ("log", "sqrt"):
            a = self.positive(a)
        elif func == "exp":
            a = self.fit(a, 4.0) if a.hi > 4 else a
        elif func == "square":
            a = self.fit(a, 5.0)
        option = None
        if func in OPTIONED and self.coin(0.5):
            text = self.choice(["0.1", "0.2", "0.5", "1.5", "0.01"])
            option = (text, float(text))
        return unary(func, a, option)

    def gen_binary(self, shape: Shape, depth: int, tensor: bool, kw) -> Ex:
        op = self.choice(["+", "-", "*", "/"])
        a, b = self.two(shape, depth, tensor, kw)
        if op == "/":
            if self.coin(0.5) and b.shape == shape and a.shape != shape:
                a, b = b, a
            if not a.tensor and tensor:
                a, b = b, a
            return binop("/", a, self.positive(b, 0.3))
        if op == "*":
            a, b = self.fit(a, 6.0), self.fit(b, 6.0)
        return binop(op, a, b)

    def gen_power(self, shape: Shape, depth: int, tensor: bool, kw) -> Ex:
        how = self.weighted([(4, "number"), (1, "tensor exponent"), (1, "number base"),
                             (0.5, "right assoc")])
        if how == "number base":
            e = self.gen(shape, depth, tensor=True, **kw)
            return power(lit(self.choice(["2", "0.5", "3"])), self.fit(e, 3.0))
        base = self.gen(shape, depth, tensor=tensor, **kw)
        if how == "tensor exponent":
            e = self.gen(self.choice(self.partners(shape)), depth, **kw)
            return power(self.positive(base), self.fit(e, 2.0))
        if how == "right assoc":  # a ** 2 ** 0.5 is a ** (2 ** 0.5)
            inner = lit("0.5") if self.coin(0.5) else neg(lit("1"))
            return power(self.positive(base), power(lit("2"), inner))
        text = self.choice(POWERS)
        exponent = neg(lit(text[1:])) if text.startswith("-") else lit(text)
        if self.coin(0.3) and text.startswith("-"):
            exponent = paren(exponent)
        value = float(text)
        if value != int(value) or value < 0:
            base = self.positive(base)
        else:
            base = self.fit(base, 3.0)
        return power(base, exponent)

    def gen_where(self, shape: Shape, depth: int, tensor: bool, kw) -> Ex:
        a, b = self.two(shape, depth, tensor, kw)
        c_shape = self.choice(self.partners(shape))
        if self.coin(0.8):
            x = self.gen(c_shape, depth, **kw)
            y = self.gen(self.choice(self.partners(c_shape)), max(depth - 1, 0), **kw)
            cond = compare(self.choice(["<", ">", "<=", ">=", "!="]), x, y)
        else:
            cond = self.gen(c_shape, depth, **kw)
        return where(cond, a, b)

    def gen_def_call(self, shape: Shape, depth: int, tensor: bool, kw) -> Ex:
        d = self.defs[self.choice(sorted(self.defs))]
        if not d.args:
            if shape == () and not tensor:
                return def_call(d, [])
            return self.leaf(shape, tensor=tensor, **kw)
        args = [self.fit(self.gen(self.choice(self.partners(shape)), depth, **kw), DEF_DOMAIN)
                for _ in d.args]
        k = self.integer(0, len(args) - 1)
        args[k] = self.fit(self.gen(shape, depth, tensor=tensor, **kw), DEF_DOMAIN)
        return def_call(d, args)

    def gen_reduce(self, shape: Shape, depth: int, kw) -> Ex:
        func = self.choice(["sum", "mean", "max", "logsumexp"])
        rank = len(shape)
        keepdims = 1 in shape and self.coin(0.4)
        if shape == () or (keepdims and all(d == 1 for d in shape) and self.coin(0.5)):
            # over every axis: any constructible source of the right rank
            source_rank = rank if keepdims else self.choice([0, 1, 1, 2, 2])
            source = self.source_shape(source_rank) if source_rank else ()
            x = self.gen(source, depth, **kw)
            keywords = [("keepdims", "true")] if keepdims else \
                ([("keepdims", "false")] if self.coin(0.1) else [])
            return reduce(func, x, None, keepdims, [], keywords)
        if keepdims:
            axis = self.choice([i for i, d in enumerate(shape) if d == 1])
            rest = shape[:axis] + shape[axis + 1:]
        else:
            axis = self.integer(0, rank)
            rest = shape
        source = rest[:axis] + (self.reduced_dim(rest, axis),) + rest[axis:]
        if not self.constructible(source):
            source = rest[:axis] + (self.feature(),) + rest[axis:]
        if not self.constructible(source):  # as [3, N] with an axis in front: no such value
            return self.leaf(shape, tensor=True, **kw)
        x = self.gen(source, depth, **kw)
        spelled = self.choice([axis, axis - len(source)])
        if keepdims:
            style = self.choice(["keywords", "positional"])
            if style == "positional":
                return reduce(func, x, axis, True, [str(spelled), "true"], [])
            return reduce(func, x, axis, True, [], [("axis", str(spelled)),
                                                    ("keepdims", "true")])
        if self.coin(0.3):
            return reduce(func, x, axis, False, [str(spelled)], [])
        return reduce(func, x, axis, False, [], [("axis", str(spelled))])

    def reduced_dim(self, rest: Shape, axis: int) -> Dim:
        """The size of the axis a reduction removes: the batch dim now and then."""
        if axis == 0 and self.n not in rest and self.batch_inputs() and self.coin(0.5):
            return self.n
        return self.feature()

    def source_shape(self, rank: int) -> Shape:
        candidates: list[Shape] = [tuple(self.feature() for _ in range(rank))]
        if self.batch_inputs():
            candidates.append((self.n,) + tuple(self.feature() for _ in range(rank - 1)))
        return self.choice(candidates)

    def gen_softmax(self, shape: Shape, depth: int, kw) -> Ex:
        func = self.choice(["softmax", "log_softmax"])
        x = self.gen(shape, depth, tensor=True, **kw)
        axis = self.integer(0, len(shape) - 1)
        spelled = self.choice([axis, axis - len(shape)])
        style = self.choice(["default", "keyword", "positional"])
        if style == "default" and axis == len(shape) - 1:
            return softmax_call(func, x, axis, [], [])
        if style == "positional":
            return softmax_call(func, x, axis, [str(spelled)], [])
        return softmax_call(func, x, axis, [], [("axis", str(spelled))])

    def gen_matmul(self, shape: Shape, depth: int, kw) -> Ex | None:
        rank = len(shape)
        if rank > 2:
            return None
        inner: list[Dim] = [self.feature()]
        if self.batch_inputs() and self.n not in shape:
            inner.append(self.n)
        k = self.choice(inner)
        if rank == 0:
            sides = [((k,), (k,))]
        elif rank == 1:
            sides = [((shape[0], k), (k,)), ((k,), (k, shape[0]))]
        else:
            sides = [((shape[0], k), (k, shape[1]))]
        left, right = self.choice(sides)
        if not (self.constructible(left) and self.constructible(right)):
            return None
        a = self.fit(self.gen(left, depth, tensor=True, **kw), 3.0)
        b = self.fit(self.gen(right, depth, tensor=True, **kw), 3.0)
        if not (a.tensor and b.tensor):
            return None
        return matmul(a, b)

    def gen_outer(self, shape: Shape, depth: int, kw) -> Ex:
        """[m, 1] op [n] (or [1, n]): neither operand has the result's shape."""
        m, n = shape
        column = (m, 1)
        row = self.choice([(n,), (1, n)])
        if not (self.constructible(column) and self.constructible(row)):
            return self.leaf(shape, tensor=True, **kw)
        a, b = self.gen(column, depth, tensor=True, **kw), self.gen(row, depth, **kw)
        op = self.choice(["+", "-", "*"])
        return binop(op, a, b) if self.coin(0.5) else binop(op, b, a)

    # ------------------------------------------------------------------ losses

    def loss_shape(self) -> Shape:
        options: list[Shape] = [(self.feature(),), (self.feature(), self.feature())]
        if self.batch_inputs():
            options += [(self.n, self.feature()), (self.n,), (self.n, self.feature())]
        return self.choice(options)

    def target_for(self, shape: Shape, kind: str) -> Ex:
        """A target of `shape` (existing or new), or a value playing one."""
        existing = [n for n, (s, k) in self.targets.items()
                    if s == shape and (k == kind or kind == "unit")]
        how = self.weighted([(3, "target"), (1, "expression")])
        if how == "expression":
            x = self.gen(shape, 1, tensor=True)
            if kind == "prob":
                return softmax_call("softmax", x, len(shape) - 1, [], [])
            return unary("sigmoid", x)
        if existing and self.coin(0.6):
            return self.target_ref(self.choice(existing))
        return self.declare_target(shape, kind)

    def gen_loss(self, depth: int) -> Ex:
        func = self.choice(["mse", "cross_entropy", "binary_cross_entropy", "bce_with_logits"])
        shape = self.loss_shape()
        y = self.gen(shape, depth, tensor=True)
        if func == "mse":  # the built-in losses take operands of one shape
            t = self.target_for(shape, "unit")
            return mse(y, t) if self.coin(0.8) else mse(t, y)
        if func == "cross_entropy":
            return cross_entropy(y, self.target_for(shape, "prob"))
        if func == "binary_cross_entropy":
            return binary_cross_entropy(self.probability(y), self.target_for(shape, "unit"))
        return bce_with_logits(y, self.target_for(shape, "unit"))

    # --------------------------------------------------------------- statements

    def flush(self, statement: str) -> None:
        self.statements.extend(self.pending)
        self.pending.clear()
        self.statements.append(statement)

    def statement_text(self, text: str) -> str:
        """Now and then a statement continues onto the next line inside a call."""
        if ", " in text and self.coin(0.15):
            text = text.replace(", ", ",\n    ", 1)
        if self.coin(0.1):
            text += "  # " + self.choice(["why not", "a comment", "x = 1 (not code)"])
        return text

    def gen_def(self) -> None:
        name = self.fresh("f")
        arity = self.weighted([(1, 1), (1, 2), (0.5, 3), (0.15, 0)])
        args = tuple(["a", "u", "v"][:arity])
        self.in_def, self.args = True, args
        body = self.gen((), self.integer(1, 3))
        self.in_def, self.args = False, ()
        self.defs[name] = Def(name, args, body)
        self.flush(self.statement_text(f"def {name}({', '.join(args)}) = {body.text}"))

    def gen_dense(self) -> None:
        name = self.fresh(self.choice(["h", "layer", "d"]))
        sources = [e for shape in self.dense_sources()
                   for e in self.names_of(shape, targets=False)]
        if sources and self.coin(0.7):
            x = self.choice(sources)
        else:
            x = self.gen(self.choice(self.dense_sources()), 1, tensor=True)
        x = self.fit(x, 3.0)
        units = self.feature()
        j = x.shape[-1]
        pre_bound = dim_size(j) * x.bound * PARAM_BOUND + PARAM_BOUND
        acts = [a for a in DENSE_ACTS if a != "exp" or pre_bound <= 4]
        acts += [d.name for d in self.defs.values()
                 if len(d.args) == 1 and pre_bound <= DEF_DOMAIN]
        act = self.choice(acts)
        w = f"{name}.W"
        b = f"{name}.b"
        self.params[w] = (j, units)
        self.params[b] = (units,)
        pre = binop("+", matmul(x, self.param_ref(w)), self.param_ref(b))
        value = def_call(self.defs[act], [pre]) if act in self.defs else unary(act, pre)
        spelled = []
        if act != "linear" or self.coin(0.5):
            spelled = [("act", act)]
        units_text = str(units) if units not in self.dim_consts or self.coin(0.5) \
            else self.dim_consts[units]
        text = call_text("dense", [x.text, units_text], spelled)
        self.record(name, replace(value, text=text, prec=ATOM))

    def dense_sources(self) -> list[Shape]:
        shapes: list[Shape] = [(self.feature(),)]
        if self.batch_inputs():
            shapes.append((self.n, self.feature()))
        return shapes

    def record(self, name: str, value: Ex) -> None:
        self.flush(self.statement_text(f"{name} = {value.text}"))
        self.assignments.append((name, value))
        self.tensors[name] = ref(name, value.shape, value.lo, value.hi, param=value.param,
                                 target=value.target)

    def gen_assignment(self) -> None:
        name = self.fresh(self.choice(["h", "y", "z", "hidden_", "out"]))
        options: list[Shape] = [(), (self.feature(),), (self.feature(), self.feature())]
        if self.batch_inputs():
            options += [(self.n, self.feature())] * 3 + [(self.n,), (self.n, 1),
                                                         (self.feature(), self.n)]
        options += [s for s in self.inputs.values() if len(s) == 3]
        shape = self.choice(options)
        uses_target = bool(self.targets) and self.coin(0.1)
        value = self.gen(shape, self.integer(1, 4), tensor=True, targets=uses_target)
        self.record(name, value)

    def optimizer(self) -> str:
        kind = self.choice(["sgd", "adam"])
        options: list[tuple[str, str]] = []
        if kind == "sgd":
            options.append(("lr", self.choice(["0.01", "0.05", "1e-3"])))
            momentum = self.coin(0.5)
            if momentum:
                options.append(("momentum", self.choice(["0.9", "0.5"])))
                if self.coin(0.5):
                    options.append(("nesterov", self.choice(["true", "false"])))
            elif self.coin(0.2):
                options.append(("nesterov", "false"))
        else:
            if self.coin(0.7):
                options.append(("lr", self.choice(["0.01", "0.001", "0.05"])))
            if self.coin(0.3):
                options.append(("beta1", self.choice(["0.9", "0.8", "0"])))
            if self.coin(0.3):
                options.append(("beta2", self.choice(["0.999", "0.99"])))
            if self.coin(0.3):
                options.append(("eps", self.choice(["1e-8", "1e-6"])))
        if self.coin(0.3):
            options.append(("weight_decay", self.choice(["0.01", "1e-4", "0"])))
        if self.coin(0.3):
            options.append(("clip_norm", self.choice(["1.0", "0.5", "10"])))
        order = self.draw(st.permutations(options))
        return call_text(kind, [], list(order))


def def_call(d: Def, args: list[Ex]) -> Ex:
    shape = broadcast(*(a.shape for a in args)) if args else ()

    def ev(env: Env) -> np.ndarray:
        values = [_f(a.ev(env)) for a in args]
        local = {**env, **dict(zip(d.args, values))}
        # a body that ignores an argument still has the shape all arguments broadcast to
        return np.broadcast_to(_f(d.body.ev(local)), np.broadcast_shapes(*map(np.shape, values)))

    flags = _merge(*args) if args else {"tensor": False, "param": False, "target": False}
    return Ex(call_text(d.name, [a.text for a in args]), ATOM, shape, d.body.lo, d.body.hi, ev,
              **flags)


@st.composite
def networks(draw, loss: bool | None = None) -> Case:
    """A random valid network with data; `loss=None` gives a loss almost always."""
    g = Generator(draw)
    header: list[str] = []
    if g.coin(0.5):
        header.append(f"network {g.choice(['fuzz', 'net_1', 'Model'])}")
    # consts: one naming a size used in dims, one a value used in expressions
    if g.coin(0.3):
        size = g.feature()
        name = g.fresh("K")
        g.dim_consts[size] = name
        header.append(f"const {name} = {g.choice([str(size), f'{size * 2} / 2'])}")
    if g.coin(0.3):
        name = g.fresh("c")
        text, value = g.choice([("0.5", 0.5), ("2 * 0.25", 0.5), ("-0.3", -0.3),
                                ("2 ** -1", 0.5), ("1e-1", 0.1)])
        g.value_consts[name] = value
        header.append(f"const {name} = {text}")
    g.statements.extend(header)

    n_inputs = g.weighted([(0.3, 0), (4, 1), (2, 2), (1, 3)])
    for k in range(n_inputs):
        name = g.fresh(g.choice(["x", "inp", "features"]))
        if k == 0:
            shape: Shape = (g.n, g.feature())
        else:
            shape = g.choice([(g.n, g.feature()), (g.n,), (g.n, g.feature(), g.feature()),
                              (g.feature(),), ("M", g.feature())])
            if shape[0] == "M":
                if g.extra_symbol is not None:
                    shape = (g.n, g.feature())
                else:
                    g.extra_symbol = (name, "M")
        g.inputs[name] = shape
        g.statements.append(f"input {name}{g.dims_text(shape)}")
    for _ in range(g.weighted([(2, 0), (1, 1)])):
        g.declare_param(g.choice([(), (g.feature(),), (g.feature(), g.feature())]), now=True)

    for _ in range(g.integer(1, 6)):
        kind = g.weighted([(4, "assign"), (1, "dense"), (1, "def")])
        if kind == "def":
            g.gen_def()
        elif kind == "dense":
            g.gen_dense()
        else:
            g.gen_assignment()

    outputs: tuple[str, ...] = ()
    plain = [n for n, t in g.tensors.items() if not t.target]
    last = list(g.tensors)[-1] if g.tensors else None
    explicit = g.coin(0.5) or (last is not None and g.tensors[last].target)
    output_stmt = None
    # `output` takes plain names: a layer's `h.W` is not one (the grammar's NAME has no dot)
    undotted = [n for n in g.params if "." not in n]
    pool = plain + (undotted if g.coin(0.1) else []) + (list(g.inputs) if g.coin(0.05) else [])
    if explicit and pool:
        count = g.integer(1, min(3, len(pool)))
        outputs = tuple(draw(st.permutations(pool))[:count])
        output_stmt = "output " + ", ".join(outputs)
    elif last is not None and not g.tensors[last].target:
        outputs = (last,)
    elif last is not None:  # the default output would depend on a target: name another
        named = plain + undotted + list(g.inputs)
        if named:
            outputs = (named[0],)
            output_stmt = f"output {named[0]}"
        else:  # no name can be an output: add one that does not need the target
            g.record("shown", g.gen((), 1, tensor=True))
            outputs = ("shown",)
    want_loss = loss if loss is not None else not g.coin(0.03)
    loss_ex = None
    if want_loss:
        terms = []
        for _ in range(g.integer(1, 3)):
            how = g.weighted([(3, "loss"), (2, "reduce"), (1, "penalty"), (1, "any")])
            if how == "loss":
                term = g.gen_loss(g.integer(1, 2))
            elif how == "reduce":
                term = g.gen_reduce((), g.integer(1, 2), {"targets": True})
            elif how == "penalty" and g.params:
                name = g.choice(sorted(g.params))
                term = reduce(g.choice(["sum", "mean"]), unary("square", g.param_ref(name)),
                              None, False, [], [])
                term = binop("*", lit(g.choice(["0.01", "1e-3", "0.5"])), term)
            else:
                term = g.gen((), g.integer(1, 3), targets=True, loss=True)
            if g.coin(0.3):
                term = binop("*", lit(g.choice(["0.5", "2", "0.1"])), term)
            if g.coin(0.1) and g.batch_inputs():
                term = binop("/", term, Ex(g.n, ATOM, (), 1.0, float(NMAX),
                                           lambda env, n=g.n: np.float64(env[n]), tensor=False))
            terms.append(term)
        loss_ex = terms[0]
        for term in terms[1:]:
            loss_ex = binop(g.choice(["+", "-"]), loss_ex, term)
        if loss_ex.bound > 1e3:
            loss_ex = g.fit(loss_ex, BIG)
    tail: list[str] = []
    if output_stmt is not None:
        tail.append(output_stmt)
    if loss_ex is not None:
        g.flush(f"loss {loss_ex.text}")
    else:
        g.statements.extend(g.pending)
        g.pending.clear()
    optimizer = ""
    if loss_ex is not None and g.coin(0.8):
        optimizer = g.optimizer()
    body = g.statements
    if optimizer:
        where_at = g.integer(0, len(body))
        body = body[:where_at] + [f"optimize {optimizer}"] + body[where_at:]
    if output_stmt is not None and g.coin(0.5):
        body = body + tail
    elif output_stmt is not None:
        # before the loss (which may come last) is fine too: the output's names exist by then
        at = len(body) - (1 if loss_ex is not None and body[-1].startswith("loss") else 0)
        body = body[:at] + tail + body[at:]
    lines = []
    for stmt in body:
        if g.coin(0.05):
            lines.append("")
        if g.coin(0.03):
            lines.append("# " + g.choice(["a comment line", "loss later", "(unbalanced"]))
        lines.append(stmt)
    source = "\n".join(lines) + "\n"

    sizes = {g.n: draw(st.sampled_from(BATCH_SIZES))}
    other_sizes = {g.n: draw(st.sampled_from(BATCH_SIZES))}
    if g.extra_symbol is not None:
        sizes["M"] = draw(st.integers(1, 3))
        other_sizes["M"] = draw(st.integers(1, 3))
    case = Case(source=source, params=dict(g.params), inputs=dict(g.inputs),
                targets=dict(g.targets), outputs=outputs, assignments=g.assignments,
                loss=loss_ex, optimizer=optimizer, sizes=sizes,
                seed=draw(st.integers(0, 2**32 - 1)))
    make_data(case)
    case.other_sizes = other_sizes
    return case
