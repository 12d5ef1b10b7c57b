"""Hypothesis strategies for random, valid `.bp` programs, each with a NumPy meaning.

`networks()` draws a whole network from the language of SPEC section 1: inputs and targets
with a symbolic batch dim, params of rank 0-2 with random initializers, consts (in dims and
in expressions), `def` functions (calling earlier ones), `dense` layers with random `act=`,
every elementwise built-in and operator, broadcasting, reductions over random axes (negative
ones and keepdims too), softmax and log_softmax, matmul in its 1-D and 2-D combinations,
`.T`, several outputs, a scalar loss from the loss built-ins or reductions, and a random
optimizer line. It also draws the data: a batch size (1 included), a seed, and from the seed
the arrays and a point in parameter space.

Tensors of any rank (SPEC, "Tensors of any rank"): params and inputs of rank 3 and 4
(images [N, C, H, W] and sequences [N, C, L] among them; data of rank 3 or 4 is also a
reshape of [N, count]), and the ops in TENSOR_OPS: indexing and slicing (negative steps,
negative indices and bounds, `...`, indices along N), concat and stack (several operands,
negative axes), reshape (with -1 and N), flatten, transpose with permutations, reductions
over lists of axes (min, prod, var and std too, keepdims), batched `@` with broadcast batch
dims and 1-D operands, take with repeated indices from inputs of whole numbers, conv1d and
conv2d (stride, padding, dilation, groups, a bias or not) and the four poolings, reduced or
flattened back to rank 2; the `conv` and `embedding` layers; class-index targets for
cross_entropy. Each network features one of FEATURES for sure, and its value goes into the
loss, so its gradient is checked.

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
import random
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

import numpy as np
from hypothesis import strategies as st

from bpcompile.graph.network import MaskInfo
from bpcompile.runtime.randomness import draw_mask

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
    # added with tensors of any rank; var and std divide by the count, as NumPy's
    "min": lambda x, axis, kd: np.min(x, axis=axis, keepdims=kd),
    "prod": lambda x, axis, kd: np.prod(x, axis=axis, keepdims=kd),
    "var": lambda x, axis, kd: np.var(x, axis=axis, keepdims=kd),
    "std": lambda x, axis, kd: np.std(x, axis=axis, keepdims=kd),
}


def _reduced_interval(func: str, lo: float, hi: float, n: int) -> tuple[float, float]:
    """The interval of `func` over n values in [lo, hi]."""
    if func == "sum":
        return min(lo * n, lo), max(hi * n, hi)
    if func in ("mean", "max", "min"):
        return lo, hi
    if func == "logsumexp":
        return lo, hi + math.log(max(n, 1))
    if func == "prod":
        if lo >= 0:
            return lo**n, hi**n
        top = max(abs(lo), abs(hi)) ** n
        return -top, top
    half = (hi - lo) / 2  # var and std: the spread is at most half the width
    return 0.0, half * half if func == "var" else half


def reduce(func: str, a: Ex, axis: int | tuple[int, ...] | None, keepdims: bool,
           args: list[str], keywords: list[tuple[str, str]]) -> Ex:
    """`func(a, ...)` over `axis` (normalized: an axis, a tuple of them, or None for all);
    args/keywords spell the options."""
    if axis is None:
        axes = tuple(range(len(a.shape)))
    else:
        axes = tuple(sorted(axis)) if isinstance(axis, tuple) else (axis,)
    if keepdims:
        shape = tuple(1 if i in axes else d for i, d in enumerate(a.shape))
    else:
        shape = tuple(d for i, d in enumerate(a.shape) if i not in axes)
    n = math.prod(dim_size(a.shape[i]) for i in axes)
    lo, hi = _reduced_interval(func, a.lo, a.hi, n)
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


def matmul_shape(left: Shape, right: Shape) -> Shape:
    """NumPy's matmul: a 1-D operand is a row (left) or a column (right), then dropped;
    the batch dims broadcast."""
    inner = right[0] if len(right) == 1 else right[-2]
    assert left[-1] == inner, (left, right)
    rows = left[-2:-1]
    cols = right[-1:] if len(right) > 1 else ()
    return broadcast(left[:-2], right[:-2]) + rows + cols


def matmul(a: Ex, b: Ex) -> Ex:
    m = dim_size(a.shape[-1]) * a.bound * b.bound
    return Ex(f"{a.at(MUL)} @ {b.at(MUL + 1)}", MUL, matmul_shape(a.shape, b.shape), -m, m,
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
        logs = log_softmax(z.ev(env), -1)   # z first: the order dropout's masks are drawn in
        rows = -np.sum(_f(t.ev(env)) * logs, axis=-1)
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


def class_cross_entropy(z: Ex, t: str, classes: int) -> Ex:
    """cross_entropy(z, t) where t, of z's shape without its last axis, holds class
    indices (as torch.nn.functional.cross_entropy takes them)."""
    top = z.hi - z.lo + math.log(classes)

    def ev(env: Env) -> np.ndarray:
        picked = np.asarray(env[t]).astype(np.intp)[..., None]
        rows = -np.take_along_axis(log_softmax(z.ev(env), -1), picked, axis=-1)
        return np.mean(rows)

    return Ex(call_text("cross_entropy", [z.text, t]), ATOM, (), -top, top, ev,
              **{**_merge(z), "target": True})


# ---------------------------------------------------------- tensors of any rank
# Each builder takes its operands and the text of its options, and gives the value with
# its NumPy meaning, written from SPEC's section "Tensors of any rank".


def hull(*exs: Ex) -> tuple[float, float]:
    return min(e.lo for e in exs), max(e.hi for e in exs)


def sizes_in(shape: Shape, env: Env) -> tuple[int, ...]:
    """A shape with its size symbols bound by the call (Case.evaluate puts them in env)."""
    return tuple(int(env[d]) if isinstance(d, str) else d for d in shape)


def indexed(a: Ex, key: tuple[slice | int, ...], subscripts: str, shape: Shape) -> Ex:
    """a[subscripts], whose meaning is NumPy's a[key] (key: one slice or int per axis)."""
    return Ex(f"{a.at(POST)}[{subscripts}]", POST, shape, a.lo, a.hi,
              lambda env: _f(a.ev(env))[key], **_merge(a))


def joined(func: str, parts: list[Ex], axis: int, keywords: list[tuple[str, str]],
           shape: Shape) -> Ex:
    """concat or stack of `parts` along `axis` (normalized)."""
    fn = np.concatenate if func == "concat" else np.stack
    return Ex(call_text(func, [e.text for e in parts], keywords), ATOM, shape, *hull(*parts),
              lambda env: fn([_f(e.ev(env)) for e in parts], axis=axis), **_merge(*parts))


def reshaped(func: str, a: Ex, args: list[str], keywords: list[tuple[str, str]],
             shape: Shape) -> Ex:
    """reshape or flatten of `a` to `shape`: the same elements in row-major order."""
    return Ex(call_text(func, [a.text] + args, keywords), ATOM, shape, a.lo, a.hi,
              lambda env: np.reshape(_f(a.ev(env)), sizes_in(shape, env)), **_merge(a))


def permuted(a: Ex, perm: tuple[int, ...], args: list[str]) -> Ex:
    """transpose(a, perm) as numpy.transpose: axis i of the result is axis perm[i] of a."""
    shape = tuple(a.shape[k] for k in perm)
    return Ex(call_text("transpose", [a.text] + args), ATOM, shape, a.lo, a.hi,
              lambda env: np.transpose(_f(a.ev(env)), perm), **_merge(a))


def taken(func_text: str, table: Ex, index: str, index_shape: Shape, axis: int) -> Ex:
    """numpy.take(table, index, axis); index names an input of whole numbers."""
    shape = table.shape[:axis] + index_shape + table.shape[axis + 1:]
    return Ex(func_text, ATOM, shape, table.lo, table.hi,
              lambda env: np.take(_f(table.ev(env)), np.asarray(env[index]).astype(np.intp),
                                  axis=axis), **_merge(table))


def out_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    """SPEC's HO = (H + 2*padding - dilation*(KH - 1) - 1) // stride + 1."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def _windows(xp: np.ndarray, kernel: Shape, stride: Shape, dilation: Shape,
             sizes: Shape) -> list[np.ndarray]:
    """For each kernel offset (row-major), the padded input's entries it meets, one per
    output position: [N, C, *sizes] each."""
    found = []
    for offset in np.ndindex(*kernel):
        window = tuple(slice(k * d, k * d + s * (m - 1) + 1, s)
                       for k, d, s, m in zip(offset, dilation, stride, sizes))
        found.append(xp[(slice(None), slice(None)) + window])
    return found


def conv_reference(x: np.ndarray, w: np.ndarray, stride: Shape, padding: Shape,
                   dilation: Shape, groups: int) -> np.ndarray:
    """torch.nn.functional.conv1d/conv2d (a cross-correlation), zero padding, groups."""
    kernel = w.shape[2:]
    sizes = tuple(out_size(n, k, s, p, d) for n, k, s, p, d in
                  zip(x.shape[2:], kernel, stride, padding, dilation))
    xp = np.pad(x, [(0, 0), (0, 0)] + [(p, p) for p in padding])
    cg, og = x.shape[1] // groups, w.shape[0] // groups
    out = np.zeros((x.shape[0], w.shape[0]) + sizes)
    for offset, patch in zip(np.ndindex(*kernel), _windows(xp, kernel, stride, dilation,
                                                           sizes)):
        for g in range(groups):
            taps = w[(slice(g * og, (g + 1) * og), slice(None)) + offset]   # [og, cg]
            out[:, g * og:(g + 1) * og] += np.einsum(
                "nc...,oc->no...", patch[:, g * cg:(g + 1) * cg], taps)
    return out


def pool_reference(kind: str, x: np.ndarray, kernel: Shape, stride: Shape,
                   padding: Shape) -> np.ndarray:
    """max pooling (padding with -inf) or average pooling (padding counted, as PyTorch's
    default count_include_pad)."""
    sizes = tuple(out_size(n, k, s, p, 1) for n, k, s, p in
                  zip(x.shape[2:], kernel, stride, padding))
    fill = -np.inf if kind == "max" else 0.0
    xp = np.pad(x, [(0, 0), (0, 0)] + [(p, p) for p in padding], constant_values=fill)
    taps = np.stack(_windows(xp, kernel, stride, (1,) * len(kernel), sizes))
    return np.max(taps, axis=0) if kind == "max" else np.mean(taps, axis=0)


def convolved(func: str, x: Ex, w: Ex, options: tuple[Shape, Shape, Shape, int],
              keywords: list[tuple[str, str]], shape: Shape) -> Ex:
    """conv1d / conv2d of x and w; options are (stride, padding, dilation, groups)."""
    taps = math.prod(w.shape[1:])  # each output sums C/groups * KH * KW products
    m = taps * x.bound * w.bound
    return Ex(call_text(func, [x.text, w.text], keywords), ATOM, shape, -m, m,
              lambda env: conv_reference(_f(x.ev(env)), _f(w.ev(env)), *options),
              **_merge(x, w))


def pooled(func: str, x: Ex, kernel: Shape, stride: Shape, padding: Shape,
           args: list[str], keywords: list[tuple[str, str]], shape: Shape) -> Ex:
    kind = func.split("_")[0]
    lo, hi = (x.lo, x.hi) if kind == "max" else (min(x.lo, 0.0), max(x.hi, 0.0))
    return Ex(call_text(func, [x.text] + args, keywords), ATOM, shape, lo, hi,
              lambda env: pool_reference(kind, _f(x.ev(env)), kernel, stride, padding),
              **_merge(x))


# ------------------------------------------------- training and inference modes
# SPEC, "Training and inference modes": dropout, batchnorm, layernorm and normalize. What
# depends on the mode reads it from the Env, under a key no .bp name can take.

MODE = "#mode"
RUNNING_VAR_LOW = 0.5   # the random point's running variances lie in [0.5, 1.5]


@dataclass
class Mode:
    """How the reference evaluates what depends on the mode. Inference: dropout is the
    identity, batchnorm divides by the running statistics (buffers in the Env). Training:
    dropout multiplies by the masks of `seed` and `step`, batchnorm by the batch's
    statistics, which it records in `stats` for the buffers a step writes."""

    training: bool = False
    seed: int = 0
    step: int = 0
    masks: list[tuple[tuple[int, ...], float]] = field(default_factory=list)  # drawn: shape, p
    # batchnorm's name -> the batch's mean and unbiased variance, per channel
    stats: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    def mask(self, shape: tuple[int, ...], rate: float) -> np.ndarray:
        """The next dropout's mask. The compiler numbers dropouts (their `site`) in the order
        it lowers them: statements in file order, in each the operands of an operator or
        call left to right before the call itself. `Ex.ev` evaluates each occurrence in the
        text once, in that order, so the k-th mask drawn here is the k-th site's."""
        site = len(self.masks)
        self.masks.append((shape, rate))
        info = MaskInfo(f"site {site}", shape, rate, site, 0)
        return draw_mask(info, shape, self.seed, self.step, np.dtype(np.float64))


def dropout(a: Ex, rate_text: str, keyword: bool = False) -> Ex:
    """dropout(a, p): the identity in inference mode; in training mode a times a mask of 0
    (probability p) and 1 / (1 - p). The interval holds both."""
    rate = float(rate_text)
    scale = 0.0 if rate >= 1 else 1.0 / (1.0 - rate)
    lo, hi = min(a.lo, a.lo * scale, 0.0), max(a.hi, a.hi * scale, 0.0)
    text = call_text("dropout", [a.text], [("p", rate_text)]) if keyword else \
        call_text("dropout", [a.text, rate_text])

    def ev(env: Env) -> np.ndarray:
        x = _f(a.ev(env))
        mode: Mode = env[MODE]
        if not mode.training or rate == 0:   # p = 0 draws no mask in either mode
            return x
        shape = sizes_in(a.shape, env)
        return np.broadcast_to(x, shape) * mode.mask(shape, rate)

    return Ex(text, ATOM, a.shape, lo, hi, ev, **_merge(a))


def _spread(count: int) -> float:
    """The largest |x - mean| / std over `count` values: sqrt(count - 1)."""
    return math.sqrt(max(count - 1, 0))


def normalized(x: Ex, axes: tuple[int, ...], eps: float, args: list[str],
               keywords: list[tuple[str, str]]) -> Ex:
    """normalize(x, ...) over `axes` (normalized, sorted): (x - mean) / sqrt(var + eps),
    the variance the population's."""
    top = _spread(math.prod(dim_size(x.shape[a]) for a in axes))

    def ev(env: Env) -> np.ndarray:
        v = _f(x.ev(env))
        mean = np.mean(v, axis=axes, keepdims=True)
        return (v - mean) / np.sqrt(np.var(v, axis=axes, keepdims=True) + eps)

    return Ex(call_text("normalize", [x.text] + args, keywords), ATOM, x.shape, -top, top, ev,
              **_merge(x))


def layernorm_layer(name: str, x: Ex, eps: float, text: str) -> Ex:
    """`name = layernorm(x, eps)`: normalize over the last axis, times name.gamma, plus
    name.beta (torch.nn.LayerNorm)."""
    top = _spread(dim_size(x.shape[-1])) * PARAM_BOUND + PARAM_BOUND

    def ev(env: Env) -> np.ndarray:
        v = _f(x.ev(env))
        mean = np.mean(v, axis=-1, keepdims=True)
        z = (v - mean) / np.sqrt(np.var(v, axis=-1, keepdims=True) + eps)
        return z * _f(env[f"{name}.gamma"]) + _f(env[f"{name}.beta"])

    return Ex(text, ATOM, x.shape, -top, top, ev, param=True, target=x.target)


def batchnorm_layer(name: str, x: Ex, eps: float, text: str) -> Ex:
    """`name = batchnorm(x, ...)` over x[N, C, ...] (torch.nn.BatchNorm1d/2d): in training
    mode the batch's mean and biased variance over every axis but 1 (recorded, the variance
    unbiased, for the buffers a step writes); in inference mode the running ones."""
    axes = (0, *range(2, len(x.shape)))
    trained = _spread(math.prod(dim_size(x.shape[a]) for a in axes))
    running = (x.bound + PARAM_BOUND) / math.sqrt(RUNNING_VAR_LOW + eps)
    top = max(trained, running) * PARAM_BOUND + PARAM_BOUND

    def ev(env: Env) -> np.ndarray:
        v = _f(x.ev(env))
        mode: Mode = env[MODE]
        per_channel = (1, -1) + (1,) * (v.ndim - 2)   # broadcasts against x
        if mode.training:
            mean = np.mean(v, axis=axes, keepdims=True)
            var = np.var(v, axis=axes, keepdims=True)
            count = v.size // v.shape[1]
            mode.stats[name] = (mean.ravel(), var.ravel() * count / (count - 1))
        else:
            mean = _f(env[f"{name}.running_mean"]).reshape(per_channel)
            var = _f(env[f"{name}.running_var"]).reshape(per_channel)
        z = (v - mean) / np.sqrt(var + eps)
        return z * _f(env[f"{name}.gamma"]).reshape(per_channel) + \
            _f(env[f"{name}.beta"]).reshape(per_channel)

    return Ex(text, ATOM, x.shape, -top, top, ev, param=True, target=x.target)


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
    # arrays of whole numbers (a gather's indices, class targets) -> how many they index
    indices: dict[str, int] = field(default_factory=dict)
    # batchnorm's running statistics: in `point` beside the params, not trained
    buffers: dict[str, tuple[int, ...]] = field(default_factory=dict)
    batchnorms: dict[str, float] = field(default_factory=dict)   # layer name -> momentum
    # the arrays a layer declares with a fixed init (gamma ones, running_mean zeros, ...)
    inits: dict[str, float] = field(default_factory=dict)

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

    @property
    def modal(self) -> bool:
        """Does anything depend on the mode? (Then training mode is checked apart.)"""
        return "dropout(" in self.source or bool(self.batchnorms)

    def evaluate(self, params: dict[str, np.ndarray], data: dict[str, np.ndarray],
                 mode: Mode | None = None) -> tuple[dict[str, np.ndarray], float | None]:
        """Outputs and loss computed in NumPy from the generated expressions, in `mode`
        (inference when None); `params` holds the buffers too."""
        env: Env = {**params, **data, **self.sizes, MODE: mode or Mode()}
        for name, ex in self.assignments:
            env[name] = _f(ex.ev(env))
        outputs = {n: _f(env[n]) for n in self.outputs}
        loss = None if self.loss is None else float(self.loss.ev(env))
        return outputs, loss

    def buffers_after_step(self, params: dict[str, np.ndarray],
                           stats: dict[str, tuple[np.ndarray, np.ndarray]]
                           ) -> dict[str, np.ndarray]:
        """The buffers a training step writes, from the batch statistics a training-mode
        `evaluate` recorded: running = (1 - momentum) * running + momentum * batch."""
        found = {}
        for name, momentum in self.batchnorms.items():
            for stat, batch in zip(("running_mean", "running_var"), stats[name]):
                old = params[f"{name}.{stat}"]
                found[f"{name}.{stat}"] = (1 - momentum) * old + momentum * batch
        return found


def concrete(shape: Shape, sizes: dict[str, int]) -> tuple[int, ...]:
    return tuple(sizes[d] if isinstance(d, str) else d for d in shape)


def make_data(case: Case, point: bool = True) -> None:
    """Arrays for the inputs and targets, and a random point for the params, from the seed."""
    rng = np.random.default_rng(case.seed)
    for name, shape in case.inputs.items():
        if name in case.indices:  # small tables: indices repeat, and gradients add up
            values = rng.integers(0, case.indices[name], concrete(shape, case.sizes))
            case.data[name] = values.astype(np.float64)
            continue
        case.data[name] = rng.uniform(-1.0, 1.0, concrete(shape, case.sizes))
    for name, (shape, kind) in case.targets.items():
        if kind == "class":
            values = rng.integers(0, case.indices[name], concrete(shape, case.sizes))
            case.data[name] = values.astype(np.float64)
            continue
        values = rng.uniform(0.0, 1.0, concrete(shape, case.sizes))
        if kind == "prob":  # rows along the last axis sum to 1, as cross_entropy needs
            values = values + 0.05
            values = values / np.sum(values, axis=-1, keepdims=True)
        case.data[name] = values
    if point:
        case.point = {name: rng.uniform(-PARAM_BOUND, PARAM_BOUND, shape)
                      for name, shape in case.params.items()}
        for name, shape in case.buffers.items():   # (drawn last: the params stay as they were)
            low, high = (RUNNING_VAR_LOW, RUNNING_VAR_LOW + 1) if name.endswith("_var") \
                else (-PARAM_BOUND, PARAM_BOUND)
            case.point[name] = rng.uniform(low, high, shape)


# ------------------------------------------------------------------- the generator


NUMBER_TEXTS = ("2", "0.5", "3", "0.1", "1.5", "0.25", "1e-1", "2.5E-1", ".5", "1.0", "4",
                "0.75", "1e0", "0.2")
POWERS = ("2", "3", "0.5", "1.5", "-1", "-2", "-0.5", "2.0", "4")
INITS = ("zeros", "ones", "xavier", "he", "0.5", "-0.25", "normal(0.3)", "normal(std=0.1)",
         "uniform(-0.5, 0.5)", "uniform(low=0, high=1)", "3e-1")
DENSE_ACTS = ("linear", "relu", "tanh", "sigmoid", "softplus", "leaky_relu", "elu", "gelu",
              "sin", "cos", "abs", "square", "exp")


# Ops of tensors of any rank the generator draws (each a `tensor_` method below), and the
# reductions it draws over lists of axes.
TENSOR_OPS = ("slice", "concat", "stack", "reshape", "flatten", "transpose", "reduce",
              "matmul", "take", "spatial")
LIST_REDUCTIONS = ("sum", "mean", "max", "min", "logsumexp", "prod", "var", "std")
# Each network features one or two of these for sure (see `networks`): random draws alone
# leave some of them out of the CI slice of 80 networks. (Reductions over lists of axes and
# reshape come up often without: data of rank 3 and 4 is a reshape of [N, count].)
SPATIAL_FEATURES = {"conv2d": ("conv", 2), "conv1d": ("conv", 1), "max_pool2d": ("max", 2),
                    "max_pool1d": ("max", 1), "avg_pool2d": ("avg", 2),
                    "avg_pool1d": ("avg", 1)}
FEATURES = tuple(op for op in TENSOR_OPS if op not in ("spatial", "reduce", "reshape")) + \
    tuple(SPATIAL_FEATURES) + (
    "min", "prod", "var", "std", "embedding", "conv layer", "class target")
# The share of networks with a featured op. Each costs some 0.35 s to check (mostly the
# llvm backend building its kernels): at 1.0 the CI slice takes about 40% longer than
# before tensors of any rank; at 0.7 some 28% longer, but features go missing from it.
FEATURED_SHARE = 1.0
MAX_ITEM = 128   # [N, ...] of rank 3 or 4 is built as a reshape of [N, count] up to this

# Training and inference modes. A share of networks also features one or two of these, in
# statements drawn after all else from a generator seeded as FEATURES' is, so the networks
# of the CI slice stay those drawn before the modes came (with statements added to some):
# its time, and the coverage of the rest, stay comparable. Within those statements alone,
# expressions hold dropout (MODE_WEIGHT) and normalize (half that) among their nodes.
MODE_FEATURES = ("dropout", "batchnorm1d", "batchnorm2d", "layernorm", "normalize")
MODE_SHARE = 0.3
SECOND_MODE = 0.25   # of a featured network holding a second one
MODE_WEIGHT = 0.8    # against some 20 for the other nodes
DROPOUT_RATES = ("0.5", "0.1", "0.25", "0.2", "0.75", "0.3", "0", "1")
EPS_TEXTS = ("1e-3", "0.01", "1e-5", "0.1")
MOMENTUM_TEXTS = ("0.1", "0.2", "0.5", "0.9", "0", "1")
TENSOR_WEIGHT = 0.2   # of an expression node being an op of tensors of any rank


class Generator:
    """Draws one program. `draw` is the composite strategy's draw."""

    def __init__(self, draw):
        self._draw = draw
        self.trace = 0   # a stable hash of every value drawn (see `networks`)
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
        # arrays of whole numbers, kept apart from the data the expressions read
        self.index_inputs: dict[str, tuple[Shape, int]] = {}     # gathers' indices
        self.class_targets: dict[str, tuple[Shape, int]] = {}    # cross_entropy's classes
        self.features: list[str] = []    # drawn from FEATURES
        self.featured: list[str] = []    # the names assigned for them
        # training and inference modes (see MODE_FEATURES)
        self.mode_featured: list[str] = []   # the names assigned for them
        self.buffers: dict[str, tuple[int, ...]] = {}
        self.batchnorms: dict[str, float] = {}   # layer name -> momentum
        self.inits: dict[str, float] = {}        # a layer's arrays of fixed init -> value
        self.min_batch = 1   # batchnorm needs 2 or more values per channel (3 here: see there)
        # While set, every draw comes from it instead of hypothesis, and expressions may hold
        # dropout and normalize: the modes' statements are drawn so (see `networks`).
        self.picker: random.Random | None = None

    # ---------------------------------------------------------------- choices

    def draw(self, strategy):
        value = self._draw(strategy)
        # an Ex's repr holds addresses of functions, which differ from run to run
        spelled = value.text if isinstance(value, Ex) else repr(value)
        self.trace = zlib.crc32(spelled.encode(), self.trace)
        return value

    def choice(self, options):
        if self.picker is not None:
            return self.picker.choice(list(options))
        return self.draw(st.sampled_from(list(options)))

    def integer(self, lo: int, hi: int) -> int:
        if self.picker is not None:
            return self.picker.randint(lo, hi)
        return self.draw(st.integers(lo, hi))

    def coin(self, p: float) -> bool:
        """True with probability p; shrinks to False."""
        return self.integer(0, 99) >= 100 - round(100 * p)

    def permutation(self, items: Sequence) -> tuple:
        if self.picker is not None:
            return tuple(self.picker.sample(list(items), len(items)))
        return tuple(self.draw(st.permutations(items)))

    def distinct_integers(self, lo: int, hi: int, count: int) -> list[int]:
        """`count` different integers from lo to hi, in increasing order."""
        if self.picker is not None:
            return sorted(self.picker.sample(range(lo, hi + 1), count))
        return sorted(self.draw(st.lists(st.integers(lo, hi), min_size=count, max_size=count,
                                         unique=True)))

    def subset(self, items: list[int]) -> list[int]:
        """A nonempty subset of `items` (different integers), in increasing order."""
        if self.picker is not None:
            return sorted(self.picker.sample(items, self.picker.randint(1, len(items))))
        return sorted(self.draw(st.lists(st.sampled_from(items), min_size=1, unique=True)))

    @contextmanager
    def picking(self, picker: random.Random) -> Iterator[None]:
        """Draws from `picker` (not hypothesis) within, and the modes' ops allowed."""
        self.picker = picker
        try:
            yield
        finally:
            self.picker = None

    def weighted(self, options: list[tuple[float, object]]):
        """One of `options` (weight, value), shrinking to the first."""
        total = sum(w for w, _ in options)
        pick = self.integer(0, 999) / 1000 * total
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
        if shape in self.inputs.values() or self.named_batch(shape):
            return True
        # a batch of fixed-size items: a reshape of [N, their count] (see data_leaf)
        return shape[0] == self.n and len(shape) <= 4 and math.prod(shape[1:]) <= MAX_ITEM

    def named_batch(self, shape: Shape) -> list[Ex]:
        """Assigned values of `shape` that do not read a target."""
        return [t for t in self.tensors.values() if t.shape == shape and not t.target]

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
        if len(shape) >= 3:
            named = [self.input_ref(n) for n in exact] + self.named_batch(shape)
            if named and self.coin(0.8):
                return self.choice(named)
            if self.coin(0.3):  # a batch of images or sequences, as data
                name = self.fresh(self.choice(["img", "seq", "x"]))
                self.pending.append(f"input {name}{self.dims_text(shape)}")
                self.inputs[name] = shape
                return self.input_ref(name)
            flat = self.data_leaf((self.n, math.prod(shape[1:])))
            return reshaped("reshape", flat, [self.shape_list(shape)], [], shape)
        if exact and self.coin(0.6):
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
        # a clip of a clip: SymPy takes seconds over each nested Min/Max the compiler
        # rebuilds (one network of the CI slice took 30 s), so it is drawn once at most
        if how == "clip" and limit >= 1 and "maximum(" not in e.text:
            return maximum("minimum", maximum("maximum", e, neg(lit("1"))), lit("1"))
        return unary("tanh", e) if limit >= 1 else binop("*", lit("0.5"), unary("tanh", e))

    def squash(self, e: Ex, limit: float) -> Ex:
        """`e` in [-limit, limit] by a scale or a tanh: as fit, but never by clip or
        softsign, whose nested maximum/minimum or repeated operand made SymPy slow to
        compile the larger networks of tensors of any rank."""
        if e.bound <= limit:
            return e
        if e.bound * 0.1 <= limit and self.coin(0.5):
            return binop("*", lit("0.1"), e)
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
            options += [(2, "reduce"), (1.5, "matmul"), (TENSOR_WEIGHT, "tensor")]
            if rank >= 1:
                options.append((1, "softmax"))
            if rank == 2:
                options.append((0.7, "transpose"))
                options.append((0.7, "outer"))
            if shape == () and loss:
                options.append((5, "loss"))
            if self.picker is not None:   # in the modes' statements only (see `networks`)
                options.append((MODE_WEIGHT, "dropout"))
                if rank >= 1:
                    options.append((MODE_WEIGHT / 2, "normalize"))
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
        if kind == "tensor":
            made = self.gen_tensor_op(shape, sub, kw)
            return made if made is not None else self.leaf(shape, tensor=tensor, **kw)
        if kind == "transpose":
            return transpose(self.gen(shape[::-1], sub, tensor=True, **kw))
        if kind == "outer":
            return self.gen_outer(shape, sub, kw)
        if kind == "dropout":
            return self.gen_dropout(shape, sub, kw)
        if kind == "normalize":
            return self.gen_normalize(shape, sub, kw)
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
        if rank >= 4 and not keepdims:  # sources of rank 4 at most: the arrays stay small
            return self.leaf(shape, tensor=True, **kw)
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

    def class_target(self, shape: Shape, classes: int) -> str:
        """A target of class indices in [0, classes): an existing one or a new one."""
        return self.reuse_or_declare(self.class_targets, (shape, classes), "target",
                                     ["t", "label", "cls"])

    def reuse_or_declare(self, declared: dict[str, tuple[Shape, int]], key: tuple[Shape, int],
                         keyword: str, names: list[str]) -> str:
        """A name `declared` already maps to `key` (half the time, when there is one), or a
        new `keyword` declaration of shape key[0] recorded there."""
        existing = [n for n, v in declared.items() if v == key]
        if existing and self.coin(0.5):
            return self.choice(existing)
        name = self.fresh(self.choice(names))
        self.pending.append(f"{keyword} {name}{self.dims_text(key[0])}")
        declared[name] = key
        return name

    def gen_loss(self, depth: int) -> Ex:
        func = self.choice(["mse", "cross_entropy", "binary_cross_entropy", "bce_with_logits"])
        shape = self.loss_shape()
        y = self.gen(shape, depth, tensor=True)
        if func == "mse":  # the built-in losses take operands of one shape
            t = self.target_for(shape, "unit")
            return mse(y, t) if self.coin(0.8) else mse(t, y)
        if func == "cross_entropy":
            if isinstance(shape[-1], int) and shape[-1] >= 2 and self.coin(0.5):
                return class_cross_entropy(y, self.class_target(shape[:-1], shape[-1]),
                                           shape[-1])
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
        options += [s for s in self.inputs.values() if len(s) >= 3]
        options += [t.shape for t in self.tensors.values() if len(t.shape) >= 3]
        if self.coin(0.15):
            options.append((self.small(), self.small(), self.small()))
        shape = self.choice(options)
        uses_target = bool(self.targets) and self.coin(0.1)
        value = self.gen(shape, self.integer(1, 4), tensor=True, targets=uses_target)
        self.record(name, value)

    # --------------------------------------------------- tensors of any rank

    def small(self) -> int:
        return self.integer(1, 4)

    def factored(self, total: int, rank: int) -> tuple[int, ...]:
        """`total` as a random product of `rank` sizes (1s included)."""
        dims = []
        for _ in range(rank - 1):
            d = self.choice([k for k in range(1, total + 1) if total % k == 0])
            dims.append(d)
            total //= d
        return tuple(dims) + (total,)

    def shape_list(self, shape: Shape) -> str:
        """A shape as reshape() takes it: consts and N by name, now and then one -1."""
        items = [self.dim_text(d) for d in shape]
        if items and self.coin(0.5):
            items[self.integer(0, len(items) - 1)] = "-1"
        return "[" + ", ".join(items) + "]"

    def axis_text(self, axis: int, rank: int) -> str:
        return str(self.choice([axis, axis - rank]))

    def number_text(self, value: int) -> str:
        """An integer option, by a const's name now and then."""
        if value in self.dim_consts and self.coin(0.5):
            return self.dim_consts[value]
        return str(value)

    def per_axis_text(self, values: tuple[int, ...]) -> str:
        """stride=2 or stride=[2, 1]: an integer or a list of one per spatial axis."""
        if len(set(values)) == 1 and self.coin(0.6):
            return self.number_text(values[0])
        return "[" + ", ".join(self.number_text(v) for v in values) + "]"

    def gen_tensor_op(self, shape: Shape, depth: int, kw) -> Ex | None:
        """`shape` made by one op of tensors of any rank, or None where the drawn one cannot
        make it."""
        for _ in range(3):  # other tries where the first op does not fit the shape
            made = getattr(self, f"tensor_{self.choice(TENSOR_OPS)}")(shape, depth, kw)
            if made is not None:
                return made
        return None

    def operands(self, shapes: list[Shape], depth: int, kw) -> list[Ex]:
        """Several operands: one as deep as `depth`, the rest shallower (the tree stays
        small)."""
        deep = self.integer(0, len(shapes) - 1)
        return [self.gen(s, depth if k == deep else max(depth - 1, 0), tensor=True, **kw)
                for k, s in enumerate(shapes)]

    def slice_of(self, d: int, reverse: bool) -> tuple[int, slice, str]:
        """A slice picking d entries of a longer (or equal) axis: (its size, the slice, its
        text), negative steps and negative bounds included."""
        step = self.choice([-1, -2, -1, -3]) if reverse else self.choice([1, 1, 2, 3])
        if (d - 1) * abs(step) + 1 > 12:
            step = -1 if reverse else 1
        a = abs(step)
        least = (d - 1) * a + 1
        m = self.integer(least, max(least, min(7, least + 2)))
        if step > 0:
            first = self.integer(0, m - least)
            last = first + (d - 1) * a
            stop: int | None = self.integer(last + 1, min(last + a, m))
            if stop == m and self.coin(0.5):
                stop = None
            start: int | None = None if first == 0 and self.coin(0.5) else first
        else:
            first = self.integer(least - 1, m - 1)
            last = first - (d - 1) * a
            stops: list[int | None] = [v for v in range(last - a, last) if v >= 0]
            if last < a:  # nothing lies past index 0: the stop may be left out
                stops.append(None)
            stop = self.choice(stops)
            start = None if first == m - 1 and self.coin(0.5) else first
        spelled = []
        for bound in (start, stop):
            if bound is None:
                spelled.append("")
            elif bound < m and self.coin(0.5):
                spelled.append(str(bound - m))   # counted from the end
            else:
                spelled.append(self.number_text(bound))
        key = slice(start, stop, step)
        text = ":".join(spelled)
        if step != 1 or self.coin(0.2):
            text += f":{step}"
        assert len(range(m)[key]) == d, (m, key, d)
        return m, key, text

    def subscripts_text(self, parts: list[str]) -> str:
        """The subscripts, with a run of ':' as '...' now and then, else trailing ':'s
        left out now and then (they mean the same)."""
        parts = list(parts)
        if self.coin(0.3):
            runs = [(i, j) for i in range(len(parts) + 1) for j in range(i, len(parts) + 1)
                    if all(p == ":" for p in parts[i:j])]
            i, j = self.choice(runs)
            parts = parts[:i] + ["..."] + parts[j:]
        else:
            while len(parts) > 1 and parts[-1] == ":" and self.coin(0.6):
                parts.pop()
        return ", ".join(parts)

    def tensor_slice(self, shape: Shape, depth: int, kw) -> Ex | None:
        source: list[Dim] = []
        key: list[slice | int] = []
        parts: list[str] = []
        for d in shape:
            how = self.weighted([(2, "all"), (2, "part"), (2, "reverse")])
            if how == "all" or (how == "part" and isinstance(d, str)):
                source.append(d)
                key.append(slice(None))
                parts.append(":")
            elif isinstance(d, str):  # an axis bound at call time takes ':' or '::-1'
                source.append(d)
                key.append(slice(None, None, -1))
                parts.append("::-1")
            else:
                m, sliced, text = self.slice_of(d, how == "reverse")
                source.append(m)
                key.append(sliced)
                parts.append(text)
        dropped = self.weighted([(1, 0), (2, 1), (1, 2)])
        if all(p == ":" for p in parts) and not dropped:
            dropped = 1
        first = 1 if shape and shape[0] == self.n else 0   # the batch axis stays first
        for _ in range(min(dropped, 4 - len(source))):
            at = self.integer(first, len(source))
            if at == 0 and self.n not in shape and self.batch_inputs() and self.coin(0.3):
                size: Dim = self.n
                i = self.choice([0, -1])   # in range whatever the batch
            else:
                size = self.small()
                i = self.integer(-size, size - 1)
            source.insert(at, size)
            key.insert(at, i)
            parts.insert(at, str(i))
        if all(p == ":" for p in parts) or not self.constructible(tuple(source)):
            return None
        x = self.gen(tuple(source), depth, tensor=True, **kw)
        return indexed(x, tuple(key), self.subscripts_text(parts), shape)

    def tensor_concat(self, shape: Shape, depth: int, kw) -> Ex | None:
        axes = [i for i, d in enumerate(shape) if isinstance(d, int) and 2 <= d <= 12]
        if not axes:
            return None
        axis = self.choice(axes)
        d = shape[axis]
        count = self.integer(2, min(3, d))
        cuts = self.distinct_integers(1, d - 1, count - 1)
        sizes = [b - a for a, b in zip([0] + cuts, cuts + [d])]
        shapes = [shape[:axis] + (size,) + shape[axis + 1:] for size in sizes]
        if not all(self.constructible(s) for s in shapes):
            return None
        parts = self.operands(shapes, depth, kw)
        keywords = [] if axis == 0 and self.coin(0.4) else \
            [("axis", self.axis_text(axis, len(shape)))]
        return joined("concat", parts, axis, keywords, shape)

    def tensor_stack(self, shape: Shape, depth: int, kw) -> Ex | None:
        axes = [i for i, d in enumerate(shape) if isinstance(d, int) and d <= 3]
        if not axes:
            return None
        axis = self.choice(axes)
        inner = shape[:axis] + shape[axis + 1:]
        if not self.constructible(inner):
            return None
        parts = self.operands([inner] * shape[axis], depth, kw)
        keywords = [] if axis == 0 and self.coin(0.4) else \
            [("axis", self.axis_text(axis, len(shape)))]
        return joined("stack", parts, axis, keywords, shape)

    def tensor_reshape(self, shape: Shape, depth: int, kw) -> Ex | None:
        if all(isinstance(d, int) for d in shape):
            total = math.prod(shape)
            if total > 64:
                return None
            source = self.factored(total, self.integer(1, 4))
        elif shape[0] == self.n and all(isinstance(d, int) for d in shape[1:]):
            source = (self.n,) + self.factored(math.prod(shape[1:]), self.integer(1, 3))
        else:
            return None
        if source == shape or not self.constructible(source):
            return None
        x = self.gen(source, depth, tensor=True, **kw)
        return reshaped("reshape", x, [self.shape_list(shape)], [], shape)

    def tensor_flatten(self, shape: Shape, depth: int, kw) -> Ex | None:
        if not shape or not isinstance(shape[-1], int) or shape[-1] > 36 or len(shape) > 3:
            return None
        start = len(shape) - 1
        source = shape[:-1] + self.factored(shape[-1], self.integer(2, 4 - start))
        if not self.constructible(source):
            return None
        x = self.gen(source, depth, tensor=True, **kw)
        spelled = self.axis_text(start, len(source))
        how = self.choice(["default", "positional", "keyword"]) if start == 1 else \
            self.choice(["positional", "keyword"])
        if how == "default":
            return reshaped("flatten", x, [], [], shape)
        if how == "positional":
            return reshaped("flatten", x, [spelled], [], shape)
        return reshaped("flatten", x, [], [("start", spelled)], shape)

    def tensor_transpose(self, shape: Shape, depth: int, kw) -> Ex | None:
        rank = len(shape)
        if rank < 2:
            return None
        if rank >= 3 and shape[0] == self.n:  # a batch keeps its axis in front
            perm = (0,) + self.permutation(range(1, rank))
        else:
            perm = self.permutation(range(rank))
        if perm == tuple(range(rank)):
            return None
        source = tuple(shape[perm.index(j)] for j in range(rank))
        if not self.constructible(source):
            return None
        x = self.gen(source, depth, tensor=True, **kw)
        if perm == tuple(reversed(range(rank))) and self.coin(0.3):
            return permuted(x, perm, [])
        return permuted(x, perm, ["[" + ", ".join(self.axis_text(p, rank) for p in perm)
                                  + "]"])

    def tensor_reduce(self, shape: Shape, depth: int, kw, func: str | None = None
                      ) -> Ex | None:
        """A reduction over a list of axes (min, prod, var, std among them)."""
        func = func or self.choice(LIST_REDUCTIONS)
        ones = [i for i, d in enumerate(shape) if d == 1]
        keepdims = bool(ones) and self.coin(0.3)
        source: list[Dim] = list(shape)
        if keepdims:
            axes = self.subset(ones)
            for a in axes:
                source[a] = self.integer(2, 4) if func == "std" else self.small()
        else:
            count = min(self.integer(1, 2), 4 - len(shape))
            if count < 1:
                return None
            marks = [False] * len(source)
            for _ in range(count):
                at = self.integer(0, len(source))
                batch = at == 0 and self.n not in source and self.batch_inputs() and \
                    func != "std" and self.coin(0.3)
                size = self.integer(2, 4) if func == "std" else self.small()
                source.insert(at, self.n if batch else size)
                marks.insert(at, True)
            axes = [i for i, m in enumerate(marks) if m]
        source_shape = tuple(source)
        if not self.constructible(source_shape):
            return None
        # std's gradient is 1 / (2 std): keep it away from 0, with values that are distinct
        # (a param or data, perhaps through a monotone function), two or more along the axes
        if func == "std" and math.prod(dim_size(source[a]) for a in axes) < 2:
            func = "var"
        if func == "std":
            x = self.varied(source_shape)
        elif func == "prod":
            x = self.squash(self.gen(source_shape, depth, tensor=True, **kw), 1.0)
        else:
            x = self.gen(source_shape, depth, tensor=True, **kw)
        listed = [self.axis_text(a, len(source)) for a in axes]
        listed = list(self.permutation(listed))
        keywords = [("axis", "[" + ", ".join(listed) + "]")]
        if keepdims:
            keywords.append(("keepdims", "true"))
        return reduce(func, x, tuple(axes), keepdims, [], keywords)

    def varied(self, shape: Shape) -> Ex:
        """A value whose entries differ at a random point: a param or data, now and then
        through a strictly monotone function."""
        if all(isinstance(d, int) for d in shape):
            e = self.param_of(shape)
        else:
            e = self.data_leaf(shape)
        if self.coin(0.5):
            e = unary(self.choice(["tanh", "atan", "asinh", "sigmoid"]), e)
        return e

    def tensor_matmul(self, shape: Shape, depth: int, kw) -> Ex | None:
        """Batched `@`: rank-3 and rank-4 operands, batch dims broadcast, 1-D operands."""
        k = self.small()
        options: list[tuple[Shape, Shape]] = []
        if len(shape) == 2:
            b, m = shape
            options += [((b, m, k), (k,)), ((k,), (b, k, m))]
        elif len(shape) == 3:
            b, m, n = shape
            options += [((b, m, k), (k, n)), ((m, k), (b, k, n)), ((b, m, k), (b, k, n)),
                        ((1, m, k), (b, k, n)), ((b, m, k), (1, k, n))]
        elif len(shape) == 4:
            a, b, m, n = shape
            options += [((a, 1, m, k), (b, k, n)), ((a, b, m, k), (k, n)),
                        ((1, b, m, k), (a, 1, k, n))]
        options = [o for o in options if self.constructible(o[0]) and self.constructible(o[1])]
        if not options:
            return None
        left, right = self.choice(options)
        a = self.squash(self.gen(left, depth, tensor=True, **kw), 3.0)
        b = self.squash(self.gen(right, max(depth - 1, 0), tensor=True, **kw), 3.0)
        return matmul(a, b) if self.coin(0.9) else paren(matmul(a, b))

    def index_input(self, shape: Shape, limit: int) -> str:
        """An input of whole numbers in [0, limit): an existing one or a new one."""
        return self.reuse_or_declare(self.index_inputs, (shape, limit), "input",
                                     ["ids", "index", "pick"])

    def tensor_take(self, shape: Shape, depth: int, kw) -> Ex | None:
        """take(table, index, axis): the index an input of whole numbers, repeated (a table
        of 2 to 5 rows, a batch of up to 17)."""
        splits = []
        for axis in range(len(shape)):
            for j in (1, 2):
                index_shape, back = shape[axis:axis + j], shape[axis + j:]
                front = shape[:axis]
                if len(index_shape) < j or not all(isinstance(d, int) for d in front + back):
                    continue
                if any(isinstance(d, str) for d in index_shape[1:]):
                    continue
                if self.n in index_shape and not self.batch_inputs():
                    continue
                splits.append((axis, index_shape))
        if not splits:
            return None
        axis, index_shape = self.choice(splits)
        limit = self.integer(2, 5)
        name = self.index_input(index_shape, limit)
        limit = self.index_inputs[name][1]
        table_shape = shape[:axis] + (limit,) + shape[axis + len(index_shape):]
        table = self.gen(table_shape, depth, tensor=True, **kw)
        keywords = [] if axis == 0 and self.coin(0.5) else \
            [("axis", self.axis_text(axis, len(table_shape)))]
        return taken(call_text("take", [table.text, name], keywords), table, name,
                     index_shape, axis)

    def tensor_spatial(self, shape: Shape, depth: int, kw) -> Ex | None:
        """A convolution or a pooling: of exactly `shape` ([B, C, L] or [B, C, H, W]), or
        reduced over its spatial axes or flattened to `shape` ([B, m])."""
        if shape and (not (isinstance(shape[0], int) or shape[0] == self.n) or
                      not all(isinstance(d, int) for d in shape[1:])):
            return None
        if len(shape) in (3, 4):
            return self.spatial_core(shape, depth, kw)
        if len(shape) > 4:
            return None
        spatial = self.integer(1, 2)
        if len(shape) < 2 or self.coin(0.5) or shape[1] > 36:
            # [B, C] with B and C added where `shape` lacks them, then reduced away
            if len(shape) == 2:
                lead, kept = shape, (0, 1)
            elif len(shape) == 1 and isinstance(shape[0], str):
                lead, kept = shape + (self.small(),), (0,)   # [N, C], reduced over C
            elif len(shape) == 1:
                lead, kept = (self.small(),) + shape, (1,)   # [B, C], reduced over B
            else:
                lead, kept = (self.small(), self.small()), ()
            core = lead + tuple(self.integer(1, 3) for _ in range(spatial))
            x = self.spatial_core(core, depth, kw)
            if x is None:
                return None
            func = self.choice(["sum", "mean", "max"])
            if not shape:
                return reduce(func, x, None, False, [], [])
            axes = tuple(a for a in range(len(core)) if a not in kept)
            if len(axes) == 1 and self.coin(0.5):
                spelled = [("axis", self.axis_text(axes[0], len(core)))]
            else:
                spelled = [("axis", "[" + ", ".join(self.axis_text(a, len(core))
                                                    for a in axes) + "]")]
            return reduce(func, x, axes, False, [], spelled)
        core = shape[:1] + self.factored(shape[1], spatial + 1)
        x = self.spatial_core(core, depth, kw)
        return None if x is None else reshaped("flatten", x, [], [], shape)

    def spatial_core(self, shape: Shape, depth: int, kw, kind: str | None = None
                     ) -> Ex | None:
        batch, channels, *sizes = shape
        spatial = len(sizes)
        kind = kind or self.choice(["conv", "max", "conv", "avg"])
        for _ in range(4):   # options whose input sizes lie in 1 to 7
            kernel = tuple(self.integer(1, 3) for _ in sizes)
            stride = tuple(self.weighted([(3, 1), (2, 2), (0.5, 3)]) for _ in sizes)
            if kind == "conv":
                dilation = tuple(self.weighted([(3, 1), (1, 2)]) for _ in sizes)
                padding = tuple(self.integer(0, 2) for _ in sizes)
            else:
                dilation = (1,) * spatial
                padding = tuple(self.integer(0, k // 2) for k in kernel)
            found = []
            for n, k, s, p, d in zip(sizes, kernel, stride, padding, dilation):
                least = s * (n - 1) + d * (k - 1) + 1 - 2 * p
                lo, hi = max(least, 1), min(least + s - 1, 7)
                if lo > hi:
                    break
                found.append(self.integer(lo, hi))
            if len(found) == spatial:
                break
        else:
            return None
        assert all(out_size(h, k, s, p, d) == n for h, k, s, p, d, n in
                   zip(found, kernel, stride, padding, dilation, sizes))
        if kind != "conv":
            source = (batch, channels, *found)
            if not self.constructible(source):
                return None
            x = self.gen(source, depth, tensor=True, **kw)
            func = f"{kind}_pool{spatial}d"
            keywords = []
            if stride != kernel or self.coin(0.3):
                keywords.append(("stride", self.per_axis_text(stride)))
            if any(padding) or self.coin(0.2):
                keywords.append(("padding", self.per_axis_text(padding)))
            return pooled(func, x, kernel, stride, padding, [self.per_axis_text(kernel)],
                          keywords, shape)
        groups = self.choice([g for g in (1, 1, 1, 2, 3, 4) if channels % g == 0])
        per_group = self.integer(1, max(1, 4 // groups))
        source = (batch, groups * per_group, *found)
        if not self.constructible(source):
            return None
        x = self.squash(self.gen(source, depth, tensor=True, **kw), 1.0)
        w_shape = (channels, per_group, *kernel)
        if self.coin(0.7):
            w = self.param_of(w_shape)
        else:
            w = self.squash(self.gen(w_shape, max(depth - 1, 0), tensor=True, **kw), 1.0)
        keywords = []
        for name, values, default in (("stride", stride, 1), ("padding", padding, 0),
                                      ("dilation", dilation, 1)):
            if any(v != default for v in values) or self.coin(0.2):
                keywords.append((name, self.per_axis_text(values)))
        if groups > 1 or self.coin(0.2):
            keywords.append(("groups", str(groups)))
        keywords = list(self.permutation(keywords))
        func = "conv2d" if spatial == 2 else "conv1d"
        value = convolved(func, x, w, (stride, padding, dilation, groups), keywords, shape)
        if self.coin(0.4):  # a bias per output channel, broadcast over the spatial axes
            b = self.param_of((channels,))
            bias = reshaped("reshape", b, ["[" + ", ".join([str(channels)] + ["1"] * spatial)
                                           + "]"], [], (channels,) + (1,) * spatial)
            value = binop("+", value, bias)
        return value

    # ------------------------------------------- statements of tensors of any rank

    def gen_featured(self, feature: str) -> None:
        """A statement that surely holds `feature` (one of FEATURES); its value goes into
        the loss (see networks)."""
        if feature == "class target":
            return  # a term of the loss, drawn there
        if feature == "embedding":
            self.gen_embedding()
        elif feature == "conv layer":
            self.gen_conv_layer()
        else:
            value = None
            for _ in range(4):
                value = self.featured_value(feature)
                if value is not None:
                    break
            if value is None:
                return
            if value.bound > BIG:
                value = self.squash(value, BIG)
            self.record(self.fresh(self.choice(["f", "v", "part"])), value)
        self.featured.append(list(self.tensors)[-1])

    def featured_value(self, feature: str) -> Ex | None:
        kw = {"targets": False}
        depth = self.integer(0, 2)
        if feature in SPATIAL_FEATURES:
            kind, spatial = SPATIAL_FEATURES[feature]
            batch: Dim = self.n if self.batch_inputs() and self.coin(0.7) else self.small()
            shape = (batch, self.small()) + tuple(self.integer(1, 4) for _ in range(spatial))
            return self.spatial_core(shape, depth, kw, kind)
        shape = self.choice([(self.small(), self.integer(2, 5)),
                             (self.small(), self.small(), self.small()),
                             (self.small(), self.integer(2, 4), self.small(), self.small())]
                            + ([(self.n, self.integer(2, 5)), (self.n, self.small(),
                                                                self.small())]
                               if self.batch_inputs() else []))
        if feature in LIST_REDUCTIONS:
            return self.tensor_reduce(shape[:-1], depth, kw, feature)
        return getattr(self, f"tensor_{feature}")(shape, depth, kw)


    def spatial_shape(self, spatial: int) -> Shape:
        batch: Dim = self.n if self.batch_inputs() and self.coin(0.7) else self.small()
        return (batch, self.small()) + tuple(self.integer(3, 6) for _ in range(spatial))

    def gen_tensor_statement(self) -> None:
        """An assignment of rank 3 or 4: a layer (conv, embedding) or an op drawn from
        TENSOR_OPS; later expressions of its shape may read it by name."""
        kind = self.weighted([(2, "op"), (1, "conv"), (1, "embedding")])
        if kind == "conv":
            self.gen_conv_layer()
            return
        if kind == "embedding":
            self.gen_embedding()
            return
        name = self.fresh(self.choice(["t", "img", "feat"]))
        value = None
        for _ in range(3):
            shape = self.choice([self.spatial_shape(1), self.spatial_shape(2),
                                 (self.small(), self.small(), self.small())])
            value = self.gen_tensor_op(shape, self.integer(1, 2), {"targets": False})
            if value is not None:
                break
        if value is None:
            value = self.gen(shape, 2, tensor=True)
        if value.bound > BIG:
            value = self.squash(value, BIG)
        self.record(name, value)

    def gen_conv_layer(self) -> None:
        name = self.fresh(self.choice(["c", "conv_"]))
        source = self.spatial_shape(2)
        channels, kernel = self.small(), self.integer(1, 3)
        stride = (self.integer(1, 2), self.integer(1, 2))
        padding = (self.integer(0, 1),) * 2 if self.coin(0.7) else \
            (self.integer(0, 1), self.integer(0, 1))
        sizes = tuple(out_size(n, kernel, s, p, 1)
                      for n, s, p in zip(source[2:], stride, padding))
        if min(sizes) < 1:
            stride, padding = (1, 1), (1, 1)
            sizes = tuple(out_size(n, kernel, 1, 1, 1) for n in source[2:])
        x = self.squash(self.gen(source, 1, tensor=True), 1.0)
        pre_bound = source[1] * kernel * kernel * x.bound * PARAM_BOUND + PARAM_BOUND
        act = self.choice([a for a in DENSE_ACTS if a != "exp" or pre_bound <= 4])
        w, b = f"{name}.W", f"{name}.b"
        self.params[w] = (channels, source[1], kernel, kernel)
        self.params[b] = (channels,)
        shape = (source[0], channels) + sizes
        conv = convolved("conv2d", x, self.param_ref(w), (stride, padding, (1, 1), 1), [],
                         shape)
        bias = reshaped("reshape", self.param_ref(b), [], [], (channels, 1, 1))
        value = unary(act, binop("+", conv, bias))
        keywords = []
        if stride != (1, 1) or self.coin(0.2):
            keywords.append(("stride", self.per_axis_text(stride)))
        if padding != (0, 0) or self.coin(0.2):
            keywords.append(("padding", self.per_axis_text(padding)))
        if act != "linear" or self.coin(0.5):
            keywords.append(("act", act))
        text = call_text("conv", [x.text, self.number_text(channels), str(kernel)], keywords)
        self.record(name, replace(value, text=text, prec=ATOM))

    def gen_embedding(self) -> None:
        name = self.fresh(self.choice(["e", "emb"]))
        if self.batch_inputs():
            ids_shape: Shape = self.choice([(self.n,), (self.n, self.small())])
        else:
            ids_shape = (self.small(), self.small())
        vocab, dim = self.integer(2, 5), self.small()
        ids = self.index_input(ids_shape, vocab)
        vocab = self.index_inputs[ids][1]
        w = f"{name}.W"
        self.params[w] = (vocab, dim)
        value = taken(call_text("embedding", [ids, str(vocab), self.number_text(dim)]),
                      self.param_ref(w), ids, ids_shape, 0)
        self.record(name, value)

    # ------------------------------------------------- training and inference modes

    def gen_dropout(self, shape: Shape, depth: int, kw) -> Ex:
        x = self.gen(shape, depth, tensor=True, **kw)
        return dropout(x, self.choice(DROPOUT_RATES), keyword=self.coin(0.2))

    def norm_source(self, shape: Shape) -> Ex:
        """A value for a norm to divide by its spread: one whose entries differ (a param or
        data, see `varied`), now and then scaled by a param or dropped out. Not any
        expression: one constant along the axes (a broadcast, a sum of equal terms) has a
        spread of rounding noise, which the norm blows up by 1 / sqrt(eps) differently on
        each backend. (Exact constants are fine: with a param zeroed the spread is 0.)"""
        if self.constructible(shape):
            x = self.varied(shape)
        else:   # a batch when the network has no batch input yet: a new input
            name = self.fresh(self.choice(["x", "inp"]))
            self.pending.append(f"input {name}{self.dims_text(shape)}")
            self.inputs[name] = shape
            x = self.input_ref(name)
        how = self.weighted([(3, "plain"), (1, "scaled"), (1, "dropout")])
        if how == "scaled":   # by a factor constant along some axes: products stay exact
            fixed = [s for s in self.partners(shape) if all(isinstance(d, int) for d in s)]
            x = binop("*", x, self.param_of(self.choice(fixed)))
        elif how == "dropout":
            x = dropout(x, self.choice(DROPOUT_RATES))
        return x

    def eps_keyword(self) -> list[tuple[str, str]]:
        return [("eps", self.choice(EPS_TEXTS))] if self.coin(0.4) else []

    def gen_normalize(self, shape: Shape, depth: int, kw) -> Ex:
        """normalize(x, axis, eps) over the default, one, a list of or every axis."""
        x = self.norm_source(shape)
        rank = len(shape)
        how = self.weighted([(2, "default"), (2, "axis"), (1, "list"), (0.5, "all")])
        axes: tuple[int, ...] = (rank - 1,)
        spelled = None
        if how == "axis":
            axes = (self.integer(0, rank - 1),)
            spelled = self.axis_text(axes[0], rank)
        elif how == "list":
            axes = tuple(self.subset(list(range(rank))))
            listed = self.permutation([self.axis_text(a, rank) for a in axes])
            spelled = "[" + ", ".join(listed) + "]"
        elif how == "all":
            axes, spelled = tuple(range(rank)), "None"
        eps = self.eps_keyword()
        value = float(eps[0][1]) if eps else 1e-5
        if spelled is None:
            return normalized(x, axes, value, [], eps)
        if self.coin(0.3):   # positional
            return normalized(x, axes, value, [spelled] + [v for _, v in eps], [])
        return normalized(x, axes, value, [], [("axis", spelled)] + eps)

    def layer_params(self, name: str, size: int, buffers: bool) -> None:
        """What a norm layer declares: name.gamma (ones) and name.beta (zeros), and for
        batchnorm the buffers name.running_mean (zeros) and name.running_var (ones)."""
        for suffix, value in (("gamma", 1.0), ("beta", 0.0)):
            self.params[f"{name}.{suffix}"] = (size,)
            self.inits[f"{name}.{suffix}"] = value
        if buffers:
            for suffix, value in (("running_mean", 0.0), ("running_var", 1.0)):
                self.buffers[f"{name}.{suffix}"] = (size,)
                self.inits[f"{name}.{suffix}"] = value

    def gen_layernorm(self) -> None:
        name = self.fresh(self.choice(["ln", "norm"]))
        shapes = [(self.feature(),), (self.small(), self.integer(2, 5)),
                  (self.small(), self.small(), self.small())]
        if self.batch_inputs():
            shapes += [(self.n, self.feature()), (self.n, self.small(), self.integer(2, 4))]
        x = self.norm_source(self.choice(shapes))
        eps = self.eps_keyword()
        if eps and self.coin(0.3):   # positional
            text = call_text("layernorm", [x.text, eps[0][1]])
        else:
            text = call_text("layernorm", [x.text], eps)
        self.layer_params(name, x.shape[-1], buffers=False)
        value = float(eps[0][1]) if eps else 1e-5
        self.record(name, layernorm_layer(name, x, value, text))

    def gen_batchnorm(self, spatial: int) -> None:
        """`name = batchnorm(x, momentum, eps)` over x[N, C] (spatial 0), x[N, C, L] (1) or
        x[N, C, H, W] (2), x made from data so that it varies over the batch."""
        name = self.fresh(self.choice(["bn", "norm"]))
        sizes = tuple(self.integer(2, 4) for _ in range(spatial))
        shape = (self.n, self.small(), *sizes)
        x = self.squash(self.norm_source(shape), 3.0)
        # Two values per channel are enough to normalize, but with two, near-equal data
        # make a spread so small that central differences lose their precision: three.
        self.min_batch = max(self.min_batch, math.ceil(3 / math.prod(sizes)))
        options = []
        momentum = 0.1
        if self.coin(0.6):
            text = self.choice(MOMENTUM_TEXTS)
            options.append(("momentum", text))
            momentum = float(text)
        eps = 1e-5
        if self.coin(0.5):
            text = self.choice(EPS_TEXTS)
            options.append(("eps", text))
            eps = float(text)
        if len(options) == 2 and self.coin(0.3):   # positional: momentum, then eps
            text = call_text("batchnorm", [x.text] + [v for _, v in options])
        else:
            text = call_text("batchnorm", [x.text], list(self.permutation(options)))
        self.layer_params(name, shape[1], buffers=True)
        self.batchnorms[name] = momentum
        self.record(name, batchnorm_layer(name, x, eps, text))

    def bounded_term(self, e: Ex) -> Ex:
        """A term of the loss reading `e`, its gradient checked, of magnitude 64 at most (a
        sum over more would make `networks` squash the loss, a draw of hypothesis's)."""
        value = unary(self.choice(["sin", "tanh"]), e)   # bounded by 1
        small = math.prod(dim_size(d) for d in e.shape) <= 64
        return reduce(self.choice(["sum", "mean"]) if small else "mean", value, None, False,
                      [], [])

    def gen_mode_featured(self, feature: str) -> None:
        """A statement that surely holds `feature` (one of MODE_FEATURES); its value goes
        into the loss (see networks)."""
        if feature == "batchnorm1d":
            self.gen_batchnorm(self.choice([0, 0, 1]))
        elif feature == "batchnorm2d":
            self.gen_batchnorm(2)
        elif feature == "layernorm":
            self.gen_layernorm()
        else:
            shape = self.choice([(self.feature(),), (self.small(), self.integer(2, 5)),
                                 (self.small(), self.small(), self.small())]
                                + ([(self.n, self.feature()), (self.n,),
                                    (self.n, self.small(), self.small())]
                                   if self.batch_inputs() else []))
            depth = self.integer(0, 2)
            kw = {"targets": False}
            value = self.gen_dropout(shape, depth, kw) if feature == "dropout" else \
                self.gen_normalize(shape, depth, kw)
            if value.bound > BIG:
                value = self.squash(value, BIG)
            self.record(self.fresh(self.choice(["m", "drop", "v"])), value)
        self.mode_featured.append(list(self.tensors)[-1])

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
        order = self.permutation(options)
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
                              (g.feature(),), ("M", g.feature()), g.spatial_shape(1),
                              g.spatial_shape(2)])
            if shape[0] != g.n and len(shape) >= 3:   # images and sequences come in batches
                shape = (g.n,) + shape[1:]
            if shape[0] == "M":
                if g.extra_symbol is not None:
                    shape = (g.n, g.feature())
                else:
                    g.extra_symbol = (name, "M")
        g.inputs[name] = shape
        g.statements.append(f"input {name}{g.dims_text(shape)}")
    for _ in range(g.weighted([(2, 0), (1, 1)])):
        g.declare_param(g.choice([(), (g.feature(),), (g.feature(), g.feature()),
                                  (g.small(), g.small(), g.small()),
                                  (g.small(), g.small(), g.integer(2, 3), g.integer(2, 3))]),
                        now=True)

    for _ in range(g.integer(1, 6)):
        kind = g.weighted([(4, "assign"), (1, "dense"), (1, "def"), (0.1, "tensor")])
        if kind == "tensor":
            g.gen_tensor_statement()
        elif kind == "def":
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
        ranked = [t for t in g.tensors.values() if len(t.shape) >= 3]
        terms = []
        for _ in range(g.integer(1, 3)):
            how = g.weighted([(3, "loss"), (2, "reduce"), (1, "penalty"), (1, "any"),
                              (3 if ranked else 0, "ranked")])
            if how == "ranked":  # an assigned tensor of rank 3 or 4: its gradient is checked
                value = unary(g.choice(["sin", "tanh"]), g.choice(ranked))   # bounded by 1
                term = reduce(g.choice(["sum", "mean"]), value, None, False, [], [])
            elif how == "loss":
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

    # Featured ops, sampled with a seed that hashes everything drawn so far. Hypothesis
    # makes most examples by mutating earlier ones, so the CI slice of 80 is some 16
    # families of near-copies that share most draws: a feature drawn directly repeats
    # across a family and some features never came up, while the trace differs wherever
    # a near-copy does: its sizes and data seed are drawn here for that reason (after
    # the draws the generator made before tensors of any rank, so those stay as they were).
    sizes = {g.n: g.draw(st.sampled_from(BATCH_SIZES))}
    other_sizes = {g.n: g.draw(st.sampled_from(BATCH_SIZES))}
    data_seed = g.draw(st.integers(0, 2**32 - 1))
    picker = random.Random(g.trace)
    g.features = picker.sample(FEATURES, 1) if picker.random() < FEATURED_SHARE else []
    for feature in g.features:
        g.gen_featured(feature)
    # The modes' statements come last, every draw from a generator of their own (so the
    # hypothesis draws, and the networks without them, are those of before: MODE_FEATURES).
    modes = random.Random(f"modes {g.trace}")
    chosen = []
    if modes.random() < MODE_SHARE:
        chosen = [modes.choice(MODE_FEATURES) for _ in range(1 + (modes.random() < SECOND_MODE))]
    with g.picking(modes):
        for feature in chosen:
            g.gen_mode_featured(feature)
    if output_stmt is None and g.featured:  # the default output: the last assigned name
        outputs = (g.featured[-1],)
    if output_stmt is None and g.mode_featured:
        outputs = (g.mode_featured[-1],)
    if loss_ex is not None:
        for name in g.featured:  # so the featured ops' gradients are checked
            value = unary(g.choice(["sin", "tanh"]), g.tensors[name])   # bounded by 1
            term = reduce(g.choice(["sum", "mean"]), value, None, False, [], [])
            loss_ex = binop("+", loss_ex, term)
        with g.picking(modes):
            for name in g.mode_featured:
                loss_ex = binop("+", loss_ex, g.bounded_term(g.tensors[name]))
        if "class target" in g.features and g.batch_inputs():
            classes = g.integer(2, 5)
            z = g.gen((g.n, classes), g.integer(1, 2), tensor=True)
            term = class_cross_entropy(z, g.class_target((g.n,), classes), classes)
            loss_ex = binop("+", loss_ex, term)
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

    if g.extra_symbol is not None:
        sizes["M"] = draw(st.integers(1, 3))
        other_sizes["M"] = draw(st.integers(1, 3))
    for each in (sizes, other_sizes):   # batchnorm's values per channel (see gen_batchnorm)
        each[g.n] = max(each[g.n], g.min_batch)
    inputs = {**g.inputs, **{n: s for n, (s, _) in g.index_inputs.items()}}
    targets = {**g.targets, **{n: (s, "class") for n, (s, _) in g.class_targets.items()}}
    indices = {n: k for n, (_, k) in {**g.index_inputs, **g.class_targets}.items()}
    case = Case(source=source, params=dict(g.params), inputs=inputs, targets=targets,
                outputs=outputs, assignments=g.assignments, loss=loss_ex,
                optimizer=optimizer, sizes=sizes, seed=data_seed,
                indices=indices, buffers=dict(g.buffers), batchnorms=dict(g.batchnorms),
                inits=dict(g.inits))
    make_data(case)
    case.other_sizes = other_sizes
    return case
