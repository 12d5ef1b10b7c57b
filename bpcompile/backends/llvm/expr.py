"""SymPy expressions compiled straight to IR, one element at a time.

The same dispatch-on-type design as the NumPy printer: each SymPy node type maps to a
function emitting its instructions. Transcendentals go through `MathFunctions`, so the loop
around an expression stays vectorizable. Multiplies and adds carry the `contract` flag (fma
is allowed); no flag that assumes values are finite, since `step` must see NaN and inf.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import sympy
from llvmlite import ir

from ...graph.functions import Elu, LeakyRelu, Power, Relu, Sigmoid, Softplus
from ...graph.vocabulary import FUNCTIONS
from .mathlib import CONTRACT, MathFunctions

Value = ir.Value


class ExprCompiler:
    """Emits one expression at the builder's position; `values` gives each free symbol.

    `t` is the value type: the dtype's float, or a vector of them for a vector loop body.
    """

    def __init__(self, builder: ir.IRBuilder, lib: MathFunctions,
                 values: Mapping[sympy.Symbol, Value], t: ir.Type | None = None):
        self.b = builder
        self.lib = lib
        self.ops = lib.ops(t or lib.t)
        self.t = self.ops.t
        self.values = values
        self.cache: dict[sympy.Basic, Value] = {}

    def const(self, value: float) -> ir.Constant:
        return self.ops.const(value)

    def flag(self, value: bool) -> ir.Constant:
        """A constant condition of the right shape (i1, or a vector of i1)."""
        if self.ops.lanes is None:
            return ir.Constant(ir.IntType(1), int(value))
        return ir.Constant(ir.VectorType(ir.IntType(1), self.ops.lanes),
                           [int(value)] * self.ops.lanes)

    def emit(self, expr: sympy.Basic) -> Value:
        cached = self.cache.get(expr)
        if cached is None:
            cached = self._emit(expr)
            self.cache[expr] = cached
        return cached

    def _emit(self, expr: sympy.Basic) -> Value:
        if expr.is_Symbol:
            return self.values[expr]
        if isinstance(expr, sympy.Expr) and not expr.free_symbols:
            return self.const(float(sympy.N(expr, 17)))
        for kind, method in _DISPATCH:
            if isinstance(expr, kind):
                return method(self, expr)
        raise NotImplementedError(f"no IR for {type(expr).__name__}: {expr}")

    def intrinsic(self, name: str, args: list[Value]) -> Value:
        return self.ops.call(self.b, name, *args)

    # ------------------------------------------------------------------ arithmetic

    def add(self, expr: sympy.Add) -> Value:
        terms = list(expr.args)
        total = self.emit(terms[0])
        for term in terms[1:]:
            if term.could_extract_minus_sign():
                total = self.b.fsub(total, self.emit(-term), flags=CONTRACT)
            else:
                total = self.b.fadd(total, self.emit(term), flags=CONTRACT)
        return total

    def mul(self, expr: sympy.Mul) -> Value:
        numerator, denominator = [], []
        for factor in expr.args:
            if factor.is_Pow and factor.exp.is_Number and factor.exp < 0:
                denominator.append(factor.base ** -factor.exp)
            else:
                numerator.append(factor)
        result = self.emit(numerator[0]) if numerator else self.const(1.0)
        for factor in numerator[1:]:
            result = self.b.fmul(result, self.emit(factor), flags=CONTRACT)
        if denominator:
            below = self.emit(denominator[0])
            for factor in denominator[1:]:
                below = self.b.fmul(below, self.emit(factor), flags=CONTRACT)
            result = self.b.fdiv(result, below)
        return result

    def pow(self, expr: sympy.Pow) -> Value:
        base, exponent = expr.args
        if exponent.is_Integer and abs(int(exponent)) <= 8:
            value = self._integer_power(self.emit(base), abs(int(exponent)))
            return value if exponent > 0 else self.b.fdiv(self.const(1.0), value)
        if exponent == sympy.Rational(1, 2):
            return self.intrinsic("llvm.sqrt", [self.emit(base)])
        if exponent == sympy.Rational(-1, 2):
            return self.b.fdiv(self.const(1.0), self.intrinsic("llvm.sqrt", [self.emit(base)]))
        return self.lib.call(self.b, "pow", self.emit(base), self.emit(exponent))

    def _integer_power(self, x: Value, n: int) -> Value:
        """x**n by squaring: x**2 is one multiply, x**8 three."""
        if n == 0:
            return self.const(1.0)
        result = None
        square = x
        while n:
            if n & 1:
                result = square if result is None else self.b.fmul(result, square)
            n >>= 1
            if n:
                square = self.b.fmul(square, square)
        return result

    # ------------------------------------------------------------------- logic

    def relational(self, expr: sympy.core.relational.Relational) -> Value:
        left, right = (self.emit(a) for a in expr.args)
        if expr.rel_op == "!=":  # NaN != x is true, as in NumPy
            return self.b.fcmp_unordered("!=", left, right)
        return self.b.fcmp_ordered(expr.rel_op, left, right)

    def boolean(self, expr: sympy.Basic) -> Value:
        if isinstance(expr, sympy.And):
            parts = [self.emit(a) for a in expr.args]
            result = parts[0]
            for part in parts[1:]:
                result = self.b.and_(result, part)
            return result
        if isinstance(expr, sympy.Or):
            parts = [self.emit(a) for a in expr.args]
            result = parts[0]
            for part in parts[1:]:
                result = self.b.or_(result, part)
            return result
        if isinstance(expr, sympy.Not):
            return self.b.not_(self.emit(expr.args[0]))
        if isinstance(expr, sympy.ITE):  # SymPy's if-then-else of conditions
            condition, then, otherwise = (self.emit(a) for a in expr.args)
            return self.b.select(condition, then, otherwise)
        if expr == sympy.true:
            return self.flag(True)
        if expr == sympy.false:
            return self.flag(False)
        raise NotImplementedError(expr)

    def piecewise(self, expr: sympy.Piecewise) -> Value:
        *pieces, (last, last_cond) = expr.args
        result = self.emit(last) if last_cond == sympy.true else self.const(float("nan"))
        for value, condition in reversed(pieces):
            result = self.b.select(self.emit(condition), self.emit(value), result)
        return result

    def nan_or(self, x: Value, value: Value) -> Value:
        """`value`, except NaN where x is NaN (comparisons alone would hide a NaN)."""
        return self.b.select(self.b.fcmp_unordered("!=", x, x), x, value)

    # --------------------------------------------------------------- functions

    def maximum(self, expr: sympy.Basic) -> Value:
        return self._fold("llvm.maximum", expr.args)

    def minimum(self, expr: sympy.Basic) -> Value:
        return self._fold("llvm.minimum", expr.args)

    def _fold(self, name: str, args) -> Value:
        result = self.emit(args[0])
        for arg in args[1:]:
            result = self.intrinsic(name, [result, self.emit(arg)])
        return result

    def relu(self, expr: sympy.Basic) -> Value:
        return self.intrinsic("llvm.maximum", [self.emit(expr.args[0]), self.const(0.0)])

    def leaky_relu(self, expr: sympy.Basic) -> Value:
        x, alpha = self.emit(expr.args[0]), self.emit(expr.args[1])
        positive = self.b.fcmp_ordered(">", x, self.const(0.0))
        return self.b.select(positive, x, self.b.fmul(x, alpha))

    def elu(self, expr: sympy.Basic) -> Value:
        x, alpha = self.emit(expr.args[0]), self.emit(expr.args[1])
        negative = self.intrinsic("llvm.minimum", [x, self.const(0.0)])
        tail = self.b.fmul(alpha, self.lib.call(self.b, "expm1", negative))
        return self.b.select(self.b.fcmp_ordered(">", x, self.const(0.0)), x, tail)

    def heaviside(self, expr: sympy.Basic) -> Value:
        """1 above 0, 1/2 at 0, 0 below: the derivative of max and min at ties."""
        x = self.emit(expr.args[0])
        step = self.b.select(self.b.fcmp_ordered(">", x, self.const(0.0)), self.const(1.0),
                             self.b.select(self.b.fcmp_ordered("==", x, self.const(0.0)),
                                           self.const(0.5), self.const(0.0)))
        return self.nan_or(x, step)

    def sign(self, expr: sympy.Basic) -> Value:
        x = self.emit(expr.args[0])
        positive = self.b.fcmp_ordered(">", x, self.const(0.0))
        negative = self.b.fcmp_ordered("<", x, self.const(0.0))
        return self.b.select(positive, self.const(1.0),
                             self.b.select(negative, self.const(-1.0), x))


def _math_function(name: str) -> Callable[[ExprCompiler, sympy.Basic], Value]:
    return lambda c, expr: c.lib.call(c.b, name, *(c.emit(a) for a in expr.args))


def _intrinsic(name: str) -> Callable[[ExprCompiler, sympy.Basic], Value]:
    return lambda c, expr: c.intrinsic(name, [c.emit(a) for a in expr.args])


_DISPATCH: tuple[tuple[type, Callable[[ExprCompiler, sympy.Basic], Value]], ...] = (
    (sympy.Add, ExprCompiler.add),
    (sympy.Mul, ExprCompiler.mul),
    (sympy.Pow, ExprCompiler.pow),
    (sympy.Piecewise, ExprCompiler.piecewise),
    (sympy.core.relational.Relational, ExprCompiler.relational),
    ((sympy.And, sympy.Or, sympy.Not, sympy.ITE, sympy.logic.boolalg.BooleanAtom),
     ExprCompiler.boolean),
    (Power, _math_function("pow")),
    (sympy.exp, _math_function("exp")),
    (sympy.log, _math_function("log")),
    (sympy.tanh, _math_function("tanh")),
    (Sigmoid, _math_function("sigmoid")),
    (Softplus, _math_function("softplus")),
    (sympy.sin, _intrinsic("llvm.sin")),
    (sympy.cos, _intrinsic("llvm.cos")),
    (sympy.Abs, _intrinsic("llvm.fabs")),
    (sympy.sign, ExprCompiler.sign),
    (sympy.Max, ExprCompiler.maximum),
    (sympy.Min, ExprCompiler.minimum),
    (sympy.Heaviside, ExprCompiler.heaviside),
    (Relu, ExprCompiler.relu),
    (LeakyRelu, ExprCompiler.leaky_relu),
    (Elu, ExprCompiler.elu),
    *((f.kind, _intrinsic(f.llvm) if f.llvm.startswith("llvm.") else _math_function(f.llvm))
      for f in FUNCTIONS),
)
