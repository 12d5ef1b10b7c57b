"""Transcendentals as plain IR arithmetic, for scalars and vectors alike.

LLVM has no vector `exp` it can call through llvmlite, so a loop calling libm stays scalar.
These functions use arithmetic, selects, bit casts and the `rint`/`fma`/`fptosi.sat`
intrinsics only, so the same body works on `float` and on `<16 x float>`; kernels call the
vector form in their vector loops. Accuracy is a few ulp: Taylor polynomials long enough
for each dtype after the usual range reductions (x = n ln2 + r for exp, x = 2^e m for log).

Each function is defined on first use for each type: `MathFunctions.call(builder, "exp", x)`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from llvmlite import ir

from .loops import I64, PTR

CONTRACT = ("contract",)  # let mul+add become fma; never nnan: step must see NaNs


@dataclass(frozen=True)
class FloatFormat:
    """What the bit tricks need to know about a float type."""

    type: ir.Type
    int_width: int
    mantissa_bits: int
    bias: int
    exp_terms: int     # Taylor terms of expm1 on |r| <= ln2 / 2
    log_terms: int     # terms of the atanh series for log on [sqrt(1/2), sqrt(2))
    exp_max: float     # exp overflows above this
    exp_min: float     # and underflows to 0 below this
    ln2_hi: float      # ln2 split in two so that n * ln2_hi is exact for the n we meet
    ln2_lo: float


FORMATS = {
    # fdlibm's split of ln2 for double, Cephes' for float
    "float64": FloatFormat(ir.DoubleType(), 64, 52, 1023, 13, 11, 709.8, -745.2,
                           6.93147180369123816490e-01, 1.90821492927058770002e-10),
    "float32": FloatFormat(ir.FloatType(), 32, 23, 127, 7, 5, 88.8, -104.0,
                           0.693359375, -2.12194440e-4),
}


def _mangle(t: ir.Type) -> str:
    """The type suffix LLVM gives an overloaded intrinsic."""
    if isinstance(t, ir.VectorType):
        return f"v{t.count}{_mangle(t.element)}"
    if isinstance(t, ir.IntType):
        return f"i{t.width}"
    if isinstance(t, ir.PointerType):
        return "p0"
    return {ir.DoubleType: "f64", ir.FloatType: "f32"}[type(t)]


def declare_intrinsic(module: ir.Module, name: str, arg_types: list[ir.Type],
                      result: ir.Type, overload: list[ir.Type]) -> ir.Function:
    """An LLVM intrinsic (`llvm.fma` -> `llvm.fma.v16f32`), declared once per module."""
    mangled = ".".join([name, *(_mangle(t) for t in overload)])
    existing = module.globals.get(mangled)
    if existing is not None:
        return existing
    return ir.Function(module, ir.FunctionType(result, arg_types), mangled)


class Ops:
    """Building blocks for one value type: a float, or a vector of them."""

    def __init__(self, module: ir.Module, fmt: FloatFormat, t: ir.Type):
        self.module = module
        self.fmt = fmt
        self.t = t
        lanes = t.count if isinstance(t, ir.VectorType) else None
        self.it = ir.IntType(fmt.int_width)
        if lanes is not None:
            self.it = ir.VectorType(self.it, lanes)
        self.lanes = lanes

    def const(self, value: float) -> ir.Constant:
        if self.lanes is None:
            return ir.Constant(self.t, value)
        return ir.Constant(self.t, [value] * self.lanes)

    def int_const(self, value: int) -> ir.Constant:
        if self.lanes is None:
            return ir.Constant(self.it, value)
        return ir.Constant(self.it, [value] * self.lanes)

    def intrinsic(self, name: str, arity: int = 1) -> ir.Function:
        return declare_intrinsic(self.module, name, [self.t] * arity, self.t, [self.t])

    def call(self, b: ir.IRBuilder, name: str, *args: ir.Value) -> ir.Value:
        return b.call(self.intrinsic(name, len(args)), list(args))

    def fma(self, b: ir.IRBuilder, x: ir.Value, y: ir.Value, z: ir.Value) -> ir.Value:
        return self.call(b, "llvm.fma", x, y, z)

    def horner(self, b: ir.IRBuilder, x: ir.Value, coefficients: list[float]) -> ir.Value:
        """c0 + x (c1 + x (c2 + ...))."""
        acc = self.const(coefficients[-1])
        for c in reversed(coefficients[:-1]):
            acc = self.fma(b, acc, x, self.const(c))
        return acc

    def clamp(self, b: ir.IRBuilder, x: ir.Value, low: float, high: float) -> ir.Value:
        x = b.select(b.fcmp_ordered(">", x, self.const(high)), self.const(high), x)
        return b.select(b.fcmp_ordered("<", x, self.const(low)), self.const(low), x)

    def pow2(self, b: ir.IRBuilder, n: ir.Value) -> ir.Value:
        """2**n for integers n in the normal range, by building the bits."""
        biased = b.add(n, self.int_const(self.fmt.bias))
        return b.bitcast(b.shl(biased, self.int_const(self.fmt.mantissa_bits)), self.t)

    def scale(self, b: ir.IRBuilder, y: ir.Value, n: ir.Value) -> ir.Value:
        """y * 2**n for n a float holding an integer, in two halves so that subnormal and
        overflowing results come out right (each half stays a normal power of two)."""
        # n is a clamped exponent, or NaN when y is NaN already: make that 0, so that
        # fptosi (one instruction on vectors, where fptosi.sat is sixteen) is never poison
        k = b.fptosi(b.select(b.fcmp_unordered("!=", n, n), self.const(0.0), n), self.it)
        half = b.ashr(k, self.int_const(1))
        return b.fmul(b.fmul(y, self.pow2(b, half)), self.pow2(b, b.sub(k, half)))

    def reduce_exp(self, b: ir.IRBuilder, x: ir.Value) -> tuple[ir.Value, ir.Value]:
        """x = n ln2 + r with |r| <= ln2/2; returns (n as a float, expm1(r))."""
        fmt = self.fmt
        x = self.clamp(b, x, fmt.exp_min, fmt.exp_max)
        n = self.call(b, "llvm.rint", b.fmul(x, self.const(1 / math.log(2))))
        r = self.fma(b, n, self.const(-fmt.ln2_hi), x)
        r = self.fma(b, n, self.const(-fmt.ln2_lo), r)
        # expm1(r) = r (1 + r/2 + r^2/6 + ...): Taylor, enough terms for the dtype
        coefficients = [1 / math.factorial(k + 1) for k in range(fmt.exp_terms)]
        return n, b.fmul(r, self.horner(b, r, coefficients))


class MathFunctions:
    """Defines and calls the vectorizable functions of one module and dtype."""

    def __init__(self, module: ir.Module, dtype: str):
        self.module = module
        self.fmt = FORMATS[dtype]
        self.t = self.fmt.type
        self.functions: dict[tuple[str, str], ir.Function] = {}

    def zero_bytes(self, b: ir.IRBuilder, target: ir.Value, nbytes: ir.Value) -> None:
        """Set `nbytes` bytes at `target` to 0 (0.0 in both float types): llvm.memset."""
        memset = self.intrinsic("llvm.memset", PTR, ir.IntType(8), I64, ir.IntType(1),
                                result=ir.VoidType(), overload=(PTR, I64))
        b.call(memset, [target, ir.Constant(ir.IntType(8), 0), nbytes,
                        ir.Constant(ir.IntType(1), 0)])

    def copy_bytes(self, b: ir.IRBuilder, target: ir.Value, source: ir.Value,
                   nbytes: ir.Value) -> None:
        """Copy `nbytes` bytes from `source` to `target` (not overlapping): llvm.memcpy."""
        memcpy = self.intrinsic("llvm.memcpy", PTR, PTR, I64, ir.IntType(1),
                                result=ir.VoidType(), overload=(PTR, PTR, I64))
        b.call(memcpy, [target, source, nbytes, ir.Constant(ir.IntType(1), 0)])

    def ops(self, t: ir.Type) -> Ops:
        return Ops(self.module, self.fmt, t)

    def intrinsic(self, name: str, *arg_types: ir.Type, result: ir.Type | None = None,
                  overload: tuple[ir.Type, ...] | None = None) -> ir.Function:
        overload = overload if overload is not None else (arg_types[0],)
        return declare_intrinsic(self.module, name, list(arg_types), result or arg_types[0],
                                 list(overload))

    def call(self, builder: ir.IRBuilder, name: str, *args: ir.Value) -> ir.Value:
        t = args[0].type
        key = (name, _mangle(t))
        if key not in self.functions:
            self.functions[key] = self._define(name, t, len(args))
        return builder.call(self.functions[key], list(args), name=name)

    def _define(self, name: str, t: ir.Type, arity: int) -> ir.Function:
        function = ir.Function(self.module, ir.FunctionType(t, [t] * arity),
                               f"bpc.{name}.{_mangle(t)}")
        function.linkage = "internal"
        function.attributes.add("alwaysinline")
        function.attributes.add("nounwind")
        builder = ir.IRBuilder(function.append_basic_block("entry"))
        builder.ret(BODIES[name](self, self.ops(t), builder, *function.args))
        return function


# ----------------------------------------------------------------------- bodies

Body = Callable[..., ir.Value]


def _exp(lib: MathFunctions, o: Ops, b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    n, p = o.reduce_exp(b, x)
    return o.scale(b, b.fadd(p, o.const(1.0)), n)


def _expm1(lib: MathFunctions, o: Ops, b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """exp(x) - 1 without cancellation near 0: 2^n expm1(r) + (2^n - 1)."""
    n, p = o.reduce_exp(b, x)
    two_n = o.scale(b, o.const(1.0), n)
    small = o.fma(b, two_n, p, b.fsub(two_n, o.const(1.0)))
    # for large n, 2^n alone may overflow while exp(x) does not: use exp(x) - 1 there
    large = b.fsub(o.scale(b, b.fadd(p, o.const(1.0)), n), o.const(1.0))
    far = b.fcmp_ordered(">", n, o.const(float(o.fmt.mantissa_bits + 2)))
    # the reduction turns -0 into +0 (-0 * -ln2 + -0 is +0); expm1(-0) is -0
    zero = b.fcmp_ordered("==", x, o.const(0.0))
    return b.select(zero, x, b.select(far, large, small))


def _log(lib: MathFunctions, o: Ops, b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """log(x) = e ln2 + 2 atanh((m - 1) / (m + 1)), x = 2^e m, m in [sqrt(1/2), sqrt(2))."""
    fmt = o.fmt
    tiny = 2.0 ** (1 - fmt.bias)  # smallest normal: scale subnormals up first
    subnormal = b.fcmp_ordered("<", x, o.const(tiny))
    boost = fmt.mantissa_bits + 2
    y = b.select(subnormal, b.fmul(x, o.const(2.0 ** boost)), x)
    bits = b.bitcast(y, o.it)
    exponent = b.sub(b.lshr(bits, o.int_const(fmt.mantissa_bits)), o.int_const(fmt.bias))
    mantissa = b.and_(bits, o.int_const((1 << fmt.mantissa_bits) - 1))
    m = b.bitcast(b.or_(mantissa, o.int_const(fmt.bias << fmt.mantissa_bits)), o.t)
    big = b.fcmp_ordered(">", m, o.const(math.sqrt(2.0)))
    m = b.select(big, b.fmul(m, o.const(0.5)), m)
    exponent = b.select(big, b.add(exponent, o.int_const(1)), exponent)
    e = b.sitofp(exponent, o.t)
    e = b.select(subnormal, b.fsub(e, o.const(float(boost))), e)
    s = b.fdiv(b.fsub(m, o.const(1.0)), b.fadd(m, o.const(1.0)))
    z = b.fmul(s, s)
    # 2 atanh(s) = 2s (1 + z/3 + z^2/5 + ...)
    series = o.horner(b, z, [1 / (2 * k + 1) for k in range(fmt.log_terms)])
    log_m = b.fmul(b.fmul(s, o.const(2.0)), series)
    result = b.fadd(o.fma(b, e, o.const(fmt.ln2_lo), log_m), b.fmul(e, o.const(fmt.ln2_hi)))
    # the edges: log(0) = -inf, log(inf) = inf, log(negative or NaN) = NaN
    result = b.select(b.fcmp_ordered("==", x, o.const(0.0)), o.const(-math.inf), result)
    result = b.select(b.fcmp_ordered("==", x, o.const(math.inf)), x, result)
    return b.select(b.fcmp_unordered("<", x, o.const(0.0)), o.const(math.nan), result)


def _log1p(lib: MathFunctions, o: Ops, b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """log(1 + x), accurate for tiny x: log(u) * x / (u - 1) with u = 1 + x (Goldberg)."""
    u = b.fadd(x, o.const(1.0))
    d = b.fsub(u, o.const(1.0))
    # x / d first: it is near 1, where log(u) * x would overflow for x above max / log(max)
    exact = b.fmul(lib.call(b, "log", u), b.fdiv(x, d))
    exact = b.select(b.fcmp_ordered("==", x, o.const(math.inf)), x, exact)
    return b.select(b.fcmp_ordered("==", d, o.const(0.0)), x, exact)


def _tanh(lib: MathFunctions, o: Ops, b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """tanh(|x|) = -t / (t + 2) with t = expm1(-2|x|): no overflow, no cancellation."""
    t = lib.call(b, "expm1", b.fmul(o.call(b, "llvm.fabs", x), o.const(-2.0)))
    magnitude = b.fdiv(b.fneg(t), b.fadd(t, o.const(2.0)))
    return o.call(b, "llvm.copysign", magnitude, x)


def _sigmoid(lib: MathFunctions, o: Ops, b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """1 / (1 + e) for x >= 0 and e / (1 + e) below, e = exp(-|x|): exp never overflows,
    so where sigmoid(x) is subnormal (x below about -709 in float64) it keeps exp(x)'s
    digits instead of flushing to 0 through 1 / inf."""
    e = lib.call(b, "exp", b.fneg(o.call(b, "llvm.fabs", x)))
    top = b.select(b.fcmp_ordered("<", x, o.const(0.0)), e, o.const(1.0))
    return b.fdiv(top, b.fadd(o.const(1.0), e))


def _softplus(lib: MathFunctions, o: Ops, b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """log(1 + exp(x)) = max(x, 0) + log1p(exp(-|x|)): finite for every finite x."""
    tail = lib.call(b, "log1p", lib.call(b, "exp", b.fneg(o.call(b, "llvm.fabs", x))))
    positive = b.select(b.fcmp_ordered(">", x, o.const(0.0)), x, o.const(0.0))
    # NaN in, NaN out (the select above would turn it into 0)
    return b.fadd(b.select(b.fcmp_unordered("!=", x, x), x, positive), tail)


def _pow(lib: MathFunctions, o: Ops, b: ir.IRBuilder, x: ir.Value, y: ir.Value) -> ir.Value:
    """x ** y = exp(y log|x|), with the special cases of C99's pow, which NumPy follows: a
    finite negative x needs an integer y; the sign of x (-0 and -inf too) goes to odd
    integer powers; x ** 0, 1 ** y and (-1) ** +-inf are 1, even for NaN or inf operands."""
    magnitude = lib.call(b, "exp", b.fmul(y, lib.call(b, "log", o.call(b, "llvm.fabs", x))))
    whole = b.fcmp_ordered("==", o.call(b, "llvm.rint", y), y)
    half = b.fmul(y, o.const(0.5))
    odd = b.and_(whole, b.fcmp_ordered("!=", o.call(b, "llvm.rint", half), half))
    sign_bit = b.icmp_signed("<", b.bitcast(x, o.it), o.int_const(0))
    signed = b.select(b.and_(sign_bit, odd), b.fneg(magnitude), magnitude)
    negative = b.and_(b.fcmp_ordered("<", x, o.const(0.0)),
                      b.fcmp_ordered("!=", x, o.const(-math.inf)))
    result = b.select(b.and_(negative, b.not_(whole)), o.const(math.nan), signed)
    infinite_y = b.fcmp_ordered("==", o.call(b, "llvm.fabs", y), o.const(math.inf))
    one = b.or_(b.or_(b.fcmp_ordered("==", y, o.const(0.0)),
                      b.fcmp_ordered("==", x, o.const(1.0))),
                b.and_(b.fcmp_ordered("==", x, o.const(-1.0)), infinite_y))
    return b.select(one, o.const(1.0), result)


def _sinh(lib: MathFunctions, o: Ops, b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """sinh(|x|) = (u + u / (u + 1)) / 2 with u = expm1(|x|): no cancellation near 0; far
    out, exp(|x|) / 2, as exp(|x| - ln2) where exp(|x|) alone would overflow."""
    a = o.call(b, "llvm.fabs", x)
    u = lib.call(b, "expm1", a)
    near = b.fmul(o.const(0.5), b.fadd(u, b.fdiv(u, b.fadd(u, o.const(1.0)))))
    magnitude = b.select(b.fcmp_ordered(">", a, o.const(20.0)), _half_exp(lib, o, b, a), near)
    return o.call(b, "llvm.copysign", magnitude, x)


def _cosh(lib: MathFunctions, o: Ops, b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """(e + 1 / e) / 2 with e = exp(|x|); exp(|x|) / 2 far out, as sinh."""
    a = o.call(b, "llvm.fabs", x)
    e = lib.call(b, "exp", a)
    near = b.fmul(o.const(0.5), b.fadd(e, b.fdiv(o.const(1.0), e)))
    return b.select(b.fcmp_ordered(">", a, o.const(20.0)), _half_exp(lib, o, b, a), near)


def _half_exp(lib: MathFunctions, o: Ops, b: ir.IRBuilder, a: ir.Value) -> ir.Value:
    """exp(a) / 2, finite up to where it overflows itself (a little past exp's limit)."""
    shifted = lib.call(b, "exp", b.fsub(a, o.const(math.log(2.0))))
    halved = b.fmul(o.const(0.5), lib.call(b, "exp", a))
    return b.select(b.fcmp_ordered(">", a, o.const(o.fmt.exp_max - 1.0)), shifted, halved)


def _logaddexp(lib: MathFunctions, o: Ops, b: ir.IRBuilder, x: ir.Value,
               y: ir.Value) -> ir.Value:
    """max(x, y) + log1p(exp(-|x - y|)): exp never overflows; x + ln2 where x == y, so
    two equal infinities give that infinity (as NumPy), not inf - inf."""
    larger = o.call(b, "llvm.maximum", x, y)
    gap = b.fneg(o.call(b, "llvm.fabs", b.fsub(x, y)))
    result = b.fadd(larger, lib.call(b, "log1p", lib.call(b, "exp", gap)))
    return b.select(b.fcmp_ordered("==", x, y), b.fadd(x, o.const(math.log(2.0))), result)


def _clip(lib: MathFunctions, o: Ops, b: ir.IRBuilder, x: ir.Value, low: ir.Value,
          high: ir.Value) -> ir.Value:
    """min(max(x, low), high); NaN stays NaN, as NumPy's clip."""
    return o.call(b, "llvm.minimum", o.call(b, "llvm.maximum", x, low), high)


def _libm(name: str) -> Body:
    """C's libm function `name` (`namef` in float32): one call per element, a vector taken
    apart lane by lane. For the functions no loop here needs fast (tan, erf, atan2, ...)."""
    def body(lib: MathFunctions, o: Ops, b: ir.IRBuilder, *args: ir.Value) -> ir.Value:
        scalar = o.fmt.type
        symbol = name + ("f" if isinstance(scalar, ir.FloatType) else "")
        function = lib.module.globals.get(symbol) or ir.Function(
            lib.module, ir.FunctionType(scalar, [scalar] * len(args)), symbol)
        if o.lanes is None:
            return b.call(function, list(args))
        result = ir.Constant(o.t, ir.Undefined)
        for lane in range(o.lanes):
            index = ir.Constant(ir.IntType(32), lane)
            value = b.call(function, [b.extract_element(a, index) for a in args])
            result = b.insert_element(result, value, index)
        return result
    return body


BODIES: dict[str, Body] = {
    "exp": _exp,
    "expm1": _expm1,
    "log": _log,
    "log1p": _log1p,
    "tanh": _tanh,
    "sigmoid": _sigmoid,
    "softplus": _softplus,
    "pow": _pow,
    "sinh": _sinh,
    "cosh": _cosh,
    "logaddexp": _logaddexp,
    "clip": _clip,
    **{name: _libm(name) for name in ("tan", "asin", "acos", "atan", "asinh", "acosh", "atanh",
                                      "log2", "log10", "erf", "hypot", "atan2")},
}
