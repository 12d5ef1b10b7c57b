"""SymPy expressions printed as NumPy code a person would write (`d_y * y * (1 - y)`,
`np.where(z > 0, d_h, 0)`), or as math (`where(z > 0, d_h, 0)`, `sigmoid(z)`): spaces around
operators and no redundant parentheses.

The printer returns code with its precedence, so callers can nest expressions (an operand
may itself be inlined code, like `x @ W1`). Operands print in the order of their inputs, so
`x @ W1 + b1` keeps the order of the `.bp` source and an adjoint comes first in a product.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import sympy

from .functions import Elu, LeakyRelu, Power, Relu, Sigmoid, Softplus, is_size
from .vocabulary import FUNCTIONS, Function

# Python's precedence levels, loosest first.
COMPARE, ADD, MUL, UNARY, POWER, ATOM = range(6)


@dataclass(frozen=True)
class Code:
    text: str
    precedence: int

    def at(self, level: int) -> str:
        """The text, parenthesized if it binds looser than `level`."""
        return self.text if self.precedence >= level else f"({self.text})"


def number(value: sympy.Expr) -> Code:
    """A literal: integers as integers, everything else as the nearest float."""
    if value.is_Integer:
        text = str(int(value))
    else:
        text = repr(float(value))
        if text in ("inf", "-inf", "nan"):
            text = {"inf": "np.inf", "-inf": "-np.inf", "nan": "np.nan"}[text]
    return Code(text, UNARY if text.startswith("-") else ATOM)


class ExpressionPrinter:
    """Prints one expression; `names` gives the code of each free symbol.

    With `math=True` it writes the same expression for people rather than NumPy: `exp(x)`,
    `where(x > 0, d_h, 0)`, a comparison as a 0/1 value without a dtype conversion.
    """

    def __init__(self, names: Mapping[sympy.Symbol, Code], dtype: str = "DTYPE",
                 math: bool = False, helpers: set[str] | None = None, iverson: bool = True):
        self.names = names
        # math: a comparison's 0/1 as `(z > 0)`, or as `where(z > 0, 1, 0)`, which computes
        # as numbers (NumPy's booleans refuse `-`)
        self.iverson = iverson
        self.dtype = dtype
        self.math = math
        self.np = "" if math else "np."
        # helper functions the printed code calls (the module defines them)
        self.helpers: set[str] = set() if helpers is None else helpers

    def print(self, expr: sympy.Basic) -> Code:
        if expr.is_Symbol:
            return self.names.get(expr) or Code(str(expr), ATOM)
        if expr.is_Number or (isinstance(expr, sympy.Expr) and not expr.free_symbols):
            return number(sympy.N(expr, 17) if not expr.is_Number else expr)
        for kind, method in _DISPATCH:
            if isinstance(expr, kind):
                return method(self, expr)
        raise NotImplementedError(f"no NumPy spelling for {type(expr).__name__}: {expr}")

    # ------------------------------------------------------------------ helpers

    def call(self, function: str, *args: sympy.Basic) -> Code:
        return Code(f"{function}({', '.join(self.print(a).text for a in args)})", ATOM)

    def _order(self, expr: sympy.Basic) -> tuple:
        """Sort key: by the first operand read, so source order survives."""
        names = list(self.names)
        read = [names.index(s) for s in expr.free_symbols if s in self.names]
        return (min(read) if read else len(names), sympy.default_sort_key(expr))

    # ------------------------------------------------------------------- arithmetic

    def add(self, expr: sympy.Add) -> Code:
        terms = sorted(expr.args, key=lambda t: (t.could_extract_minus_sign(), self._order(t)))
        text = self.print(terms[0]).at(ADD)
        for term in terms[1:]:
            if term.could_extract_minus_sign():
                text += f" - {self.print(-term).at(MUL)}"
            else:
                text += f" + {self.print(term).at(ADD)}"
        return Code(text, ADD)

    def mul(self, expr: sympy.Mul) -> Code:
        if expr.could_extract_minus_sign():
            inner = self.print(-expr)
            return Code(f"-{inner.at(UNARY)}", UNARY)
        coefficient, rest = expr.as_coeff_Mul()
        numerator, denominator = [], []
        for factor in sympy.Mul.make_args(rest):
            if factor.is_Pow and factor.exp.is_Number and factor.exp < 0:
                denominator.append(factor.base ** -factor.exp)
            else:
                numerator.append(factor)
        if coefficient.is_Rational and coefficient.q != 1 and coefficient.p in (1, -1):
            # x / 2 reads better than 0.5 * x
            denominator.insert(0, sympy.Integer(coefficient.q))
            coefficient = sympy.Integer(coefficient.p)
        if coefficient != 1:
            numerator.insert(0, coefficient)
        # numbers and named constants (LR, N) lead, as coefficients do: LR * d_W
        numerator.sort(key=lambda f: (not _coefficient(f), self._order(f)))
        text = _product([self.print(f) for f in numerator]) if numerator else "1"
        if denominator:
            parts = [self.print(f) for f in sorted(denominator, key=self._order)]
            if len(parts) == 1:
                text += f" / {parts[0].at(POWER)}"
            else:
                text += f" / ({_product(parts)})"
        return Code(text, MUL)

    def pow(self, expr: sympy.Pow | Power) -> Code:
        base, exponent = expr.args
        if isinstance(expr, Power):
            return Code(f"{self.print(base).at(ATOM)} ** {self.print(exponent).at(UNARY)}",
                        POWER)
        if exponent == sympy.Rational(1, 2):
            return self.call(f"{self.np}sqrt", base)
        if exponent.is_Number and exponent < 0:
            return Code(f"1 / {self.print(base ** -exponent).at(POWER)}", MUL)
        return Code(f"{self.print(base).at(ATOM)} ** {self.print(exponent).at(UNARY)}", POWER)

    # ------------------------------------------------------------------- functions

    def relational(self, expr: sympy.core.relational.Relational) -> Code:
        left, right = (self.print(a).at(ADD) for a in expr.args)
        return Code(f"{left} {expr.rel_op} {right}", COMPARE)

    def piecewise(self, expr: sympy.Piecewise) -> Code:
        (value, condition), *rest = expr.args
        if not rest or condition == sympy.true:
            return self.print(value)
        otherwise = sympy.Piecewise(*rest) if len(rest) > 1 or rest[0].cond != sympy.true \
            else rest[0].expr
        if value == 1 and otherwise == 0 and (not self.math or self.iverson):
            # an indicator: the comparison as 0/1 values, `(z > 0)` as textbooks write it
            text = f"({self.print(condition).text})"
            if self.math:
                return Code(text, ATOM)
            if not any(map(_is_array, condition.free_symbols)):
                # sizes only, as `N > 2`: a Python bool, which has no astype
                return Code(f"{self.dtype}{text}", ATOM)
            return Code(f"{text}.astype({self.dtype})", ATOM)
        code = self.call(f"{self.np}where", condition, value, otherwise)
        if not self.math and all(not v.free_symbols for v in (value, otherwise)):
            # np.where of two Python numbers would make float64 whatever the dtype
            return Code(f"{code.text}.astype({self.dtype})", ATOM)
        return code


def _coefficient(factor: sympy.Expr) -> bool:
    """A number, or made only of sizes and named constants (`dim:N`, `hyper:LR`)."""
    return all(":" in s.name for s in factor.free_symbols)


def _is_array(symbol: sympy.Symbol) -> bool:
    """Does this symbol stand for an array? The others are sizes (`dim:N`), Python ints."""
    return not is_size(symbol)


def _product(factors: list[Code]) -> str:
    """`a * b * c`. Python's `*` and `@` share a level and group to the left, so a factor
    after the first that is itself at that level (an inlined `x @ W`) needs parentheses."""
    first, *rest = factors
    return " * ".join([first.at(MUL), *(f.at(UNARY) for f in rest)])


def _logical(function: str) -> Callable[[ExpressionPrinter, sympy.Basic], Code]:
    """And / Or / Not of conditions (nested piecewise derivatives make them), elementwise."""
    def method(printer: ExpressionPrinter, expr: sympy.Basic) -> Code:
        if len(expr.args) == 1:  # Not
            return printer.call(printer.np + function, *expr.args)
        code = printer.print(expr.args[0])
        for arg in expr.args[1:]:
            code = Code(f"{printer.np}{function}({code.text}, {printer.print(arg).text})", ATOM)
        return code
    return method


def _spelled(function: str) -> Callable[[ExpressionPrinter, sympy.Basic], Code]:
    """A NumPy function of the same arguments: exp -> np.exp."""
    return lambda printer, expr: printer.call(printer.np + function, *expr.args)


def _helper(name: str) -> Callable[[ExpressionPrinter, sympy.Basic], Code]:
    """A function the generated module defines (see numpy_helpers)."""
    def method(printer: ExpressionPrinter, expr: sympy.Basic) -> Code:
        printer.helpers.add(name)
        return printer.call(name, *expr.args)
    return method


def _nested(function: str) -> Callable[[ExpressionPrinter, sympy.Basic], Code]:
    """np.maximum(a, np.maximum(b, c)) for Max(a, b, c)."""
    def method(printer: ExpressionPrinter, expr: sympy.Basic) -> Code:
        args = sorted(expr.args, key=printer._order)
        code = printer.print(args[-1])
        for arg in reversed(args[:-1]):
            code = Code(f"{printer.np}{function}({printer.print(arg).text}, {code.text})", ATOM)
        return code
    return method


def _plain(function: Function) -> Callable[[ExpressionPrinter, sympy.Basic], Code]:
    """A function of the vocabulary: its `.bp` word in math, NumPy's function (or the
    module's helper) in code."""
    def method(printer: ExpressionPrinter, expr: sympy.Basic) -> Code:
        if printer.math:
            return printer.call(function.word, *expr.args)
        if function.numpy is None:
            printer.helpers.add(function.word)
            return printer.call(function.word, *expr.args)
        return printer.call(f"np.{function.numpy}", *expr.args)
    return method


def _relu(printer: ExpressionPrinter, expr: sympy.Basic) -> Code:
    if printer.math:
        return printer.call("relu", *expr.args)
    return Code(f"np.maximum({printer.print(expr.args[0]).text}, 0)", ATOM)


def _softplus(printer: ExpressionPrinter, expr: sympy.Basic) -> Code:
    if printer.math:
        return printer.call("softplus", *expr.args)
    # log(1 + exp(x)) without overflow for any x
    return Code(f"np.logaddexp(0, {printer.print(expr.args[0]).text})", ATOM)


def _leaky_relu(printer: ExpressionPrinter, expr: sympy.Basic) -> Code:
    if printer.math:
        return printer.call("leaky_relu", *expr.args)
    x, alpha = expr.args
    # Spelled here, not as a SymPy Piecewise: for an x that is itself piecewise (a `where`)
    # SymPy folds `x > 0` into an ITE condition, which has no NumPy spelling.
    value = printer.print(x)
    slope = printer.print(alpha * x)
    return Code(f"np.where({value.at(ADD)} > 0, {value.text}, {slope.text})", ATOM)


def _heaviside(printer: ExpressionPrinter, expr: sympy.Basic) -> Code:
    # the derivative of max/min: 1/2 at ties, as central differences and PyTorch see it
    return Code(f"{printer.np}heaviside({printer.print(expr.args[0]).text}, 0.5)", ATOM)


_DISPATCH: tuple[tuple[type, Callable[[ExpressionPrinter, sympy.Basic], Code]], ...] = (
    (sympy.Add, ExpressionPrinter.add),
    (sympy.Mul, ExpressionPrinter.mul),
    ((sympy.Pow, Power), ExpressionPrinter.pow),
    (sympy.Piecewise, ExpressionPrinter.piecewise),
    (sympy.core.relational.Relational, ExpressionPrinter.relational),
    (sympy.And, _logical("logical_and")),
    (sympy.Or, _logical("logical_or")),
    (sympy.Not, _logical("logical_not")),
    # a condition on a piecewise value, as `where(c, a, b) != 0.5`: SymPy makes it an ITE,
    # whose branches may be plain True or False
    (sympy.ITE, _spelled("where")),
    (sympy.logic.boolalg.BooleanAtom, lambda printer, expr: Code(str(bool(expr)), ATOM)),
    (sympy.exp, _spelled("exp")),
    (sympy.log, _spelled("log")),
    (sympy.sin, _spelled("sin")),
    (sympy.cos, _spelled("cos")),
    (sympy.tanh, _spelled("tanh")),
    (sympy.Abs, _spelled("abs")),
    (sympy.sign, _spelled("sign")),
    (sympy.Max, _nested("maximum")),
    (sympy.Min, _nested("minimum")),
    (sympy.Heaviside, _heaviside),
    (Sigmoid, _helper("sigmoid")),
    (Softplus, _softplus),
    (Relu, _relu),
    (LeakyRelu, _leaky_relu),
    (Elu, _helper("elu")),
    *((function.kind, _plain(function)) for function in FUNCTIONS),
)
