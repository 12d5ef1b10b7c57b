"""The elementwise functions the IR speaks beyond SymPy's own: sigmoid, softplus, relu,
leaky_relu, elu, logaddexp, atan2, clip, floor, ceil, round, and a power whose exponent
varies. Each knows its derivative (SymPy's `fdiff`), its sign where that is a domain fact
the derivative rewrites rely on (sigmoid and softplus are positive), how it prints, and its
value at numbers (`STANDARD_FORMS`)."""

from __future__ import annotations

from collections.abc import Callable

import sympy
from sympy import Piecewise
from sympy.core.evalf import prec_to_dps
from sympy.printing.precedence import PRECEDENCE
from sympy.printing.str import StrPrinter

from .shapes import Dim, Shape


class Sigmoid(sympy.Function):
    """The logistic function 1 / (1 + exp(-x))."""

    nargs = 1
    _name = "sigmoid"  # how math displays spell it

    @classmethod
    def eval(cls, x: sympy.Expr) -> sympy.Expr | None:
        # sigmoid(-x) stays itself: as 1 - sigmoid(x) it would be 0 in the far tail, where
        # it is 4e-18 at x = 40 (and logaddexp's slopes are sigmoids of both signs)
        if x.is_zero:
            return sympy.Rational(1, 2)
        return None

    def fdiff(self, argindex: int = 1) -> sympy.Expr:
        return self * (1 - self)

    def _eval_is_real(self) -> bool | None:
        return self.args[0].is_real

    def _eval_is_positive(self) -> bool | None:
        return self.args[0].is_real  # in (0, 1) for every real x


class Softplus(sympy.Function):
    """log(1 + exp(x)), always computed in a form that cannot overflow."""

    nargs = 1
    _name = "softplus"  # how math displays spell it

    def fdiff(self, argindex: int = 1) -> sympy.Expr:
        return Sigmoid(self.args[0])

    def _eval_is_real(self) -> bool | None:
        return self.args[0].is_real

    def _eval_is_positive(self) -> bool | None:
        return self.args[0].is_real  # log(1 + exp(x)) > 0 for every real x


class Relu(sympy.Function):
    """max(x, 0); its derivative at 0 is 0, as in PyTorch."""

    nargs = 1
    _name = "relu"  # how math displays spell it

    def fdiff(self, argindex: int = 1) -> sympy.Expr:
        return Piecewise((1, self.args[0] > 0), (0, True))

    def _eval_is_real(self) -> bool | None:
        return self.args[0].is_real


class LeakyRelu(sympy.Function):
    """x where x > 0, else alpha * x."""

    nargs = 2
    _name = "leaky_relu"  # how math displays spell it

    def fdiff(self, argindex: int = 1) -> sympy.Expr:
        x, alpha = self.args
        if argindex == 1:
            return Piecewise((1, x > 0), (alpha, True))
        return Piecewise((0, x > 0), (x, True))

    def _eval_is_real(self) -> bool | None:
        return self.args[0].is_real


class Elu(sympy.Function):
    """x where x > 0, else alpha * (exp(x) - 1)."""

    nargs = 2
    _name = "elu"  # how math displays spell it

    def fdiff(self, argindex: int = 1) -> sympy.Expr:
        x, alpha = self.args
        if argindex == 1:
            # alpha * exp(x) written through the value itself, so no exp is recomputed.
            return Piecewise((1, x > 0), (self + alpha, True))
        return Piecewise((0, x > 0), (sympy.exp(x) - 1, True))

    def _eval_is_real(self) -> bool | None:
        return self.args[0].is_real


class Logaddexp(sympy.Function):
    """log(exp(a) + exp(b)), computed so neither exp can overflow; its slopes are
    sigmoid(a - b) and sigmoid(b - a), each accurate in its own tail."""

    nargs = 2
    _name = "logaddexp"

    def fdiff(self, argindex: int = 1) -> sympy.Expr:
        a, b = self.args
        return Sigmoid(a - b) if argindex == 1 else Sigmoid(b - a)

    def _eval_is_real(self) -> bool | None:
        return self.args[0].is_real and self.args[1].is_real


class Atan2(sympy.Function):
    """The angle of the point (b, a), as NumPy's arctan2(a, b); its slopes b / (a^2 + b^2)
    and -a / (a^2 + b^2) are 0 at the origin, as PyTorch's (not 0 / 0)."""

    nargs = 2
    _name = "atan2"

    @classmethod
    def eval(cls, a: sympy.Expr, b: sympy.Expr) -> sympy.Expr | None:
        return sympy.atan2(a, b) if a.is_Number and b.is_Number else None

    def fdiff(self, argindex: int = 1) -> sympy.Expr:
        a, b = self.args
        slope = b if argindex == 1 else -a
        origin = sympy.And(sympy.Eq(a, 0), sympy.Eq(b, 0))
        return Piecewise((0, origin), (slope / (a**2 + b**2), True))

    def _eval_is_real(self) -> bool | None:
        return self.args[0].is_real and self.args[1].is_real


class Clip(sympy.Function):
    """x limited to [low, high] (low and high are numbers); its slope is 1 where
    low <= x <= high, ends included, as torch.clamp's."""

    nargs = 3
    _name = "clip"

    def fdiff(self, argindex: int = 1) -> sympy.Expr:
        x, low, high = self.args
        inside = sympy.And(x >= low, x <= high)
        return {1: Piecewise((1, inside), (0, True)),
                2: Piecewise((1, x < low), (0, True)),
                3: Piecewise((1, x > high), (0, True))}[argindex]

    def _eval_is_real(self) -> bool | None:
        return self.args[0].is_real


class _Step(sympy.Function):
    """A function that is constant between jumps: its gradient is 0 almost everywhere, as
    PyTorch's is (SymPy leaves floor's derivative unevaluated)."""

    nargs = 1

    def fdiff(self, argindex: int = 1) -> sympy.Expr:
        return sympy.Integer(0)

    def _eval_is_real(self) -> bool | None:
        return self.args[0].is_real

    def _eval_is_integer(self) -> bool | None:
        return self.args[0].is_real


class Floor(_Step):
    _name = "floor"

    @classmethod
    def eval(cls, x: sympy.Expr) -> sympy.Expr | None:
        return sympy.floor(x) if x.is_Number else None


class Ceil(_Step):
    _name = "ceil"

    @classmethod
    def eval(cls, x: sympy.Expr) -> sympy.Expr | None:
        return sympy.ceiling(x) if x.is_Number else None


class Round(_Step):
    """To the nearest whole number, halves to the even one (NumPy's and PyTorch's round)."""

    _name = "round"

    @classmethod
    def eval(cls, x: sympy.Expr) -> sympy.Expr | None:
        if not x.is_Rational:
            return None
        low = sympy.floor(x)
        if x - low != sympy.Rational(1, 2):
            return sympy.floor(x + sympy.Rational(1, 2))
        return low if low.is_even else low + 1


def dim_symbol(name: str) -> sympy.Symbol:
    """The SymPy symbol standing for the size bound to `name` at call time."""
    return sympy.Symbol(f"{SIZE}{name}", positive=True, integer=True)


def dim_value(dim: Dim) -> sympy.Expr:
    return sympy.Integer(dim) if isinstance(dim, int) else dim_symbol(dim)


def count(shape: Shape) -> sympy.Expr:
    """The number of elements of `shape`, as a SymPy expression in its symbols."""
    return sympy.Mul(*(dim_value(d) for d in shape)) if shape else sympy.Integer(1)


SIZE = "dim:"  # the prefix of the symbols dim_symbol makes


def is_size(symbol: sympy.Basic) -> bool:
    """Does this symbol stand for a size bound at call time (`dim:N`), not for an array?"""
    return symbol.is_Symbol and symbol.name.startswith(SIZE)


def size_name(symbol: sympy.Symbol) -> str:
    """The `.bp` name of the size a dim symbol stands for: `N` for `dim:N`."""
    assert is_size(symbol), symbol
    return symbol.name[len(SIZE):]


class Power(sympy.Function):
    """base ** exponent where the exponent varies (an input or a param), differentiated with
    PyTorch's conventions at the singular points, where SymPy's plain derivatives give NaN:
    d/d base is 0 where the exponent is 0 (else exponent * base ** (exponent - 1), also at
    base 0), and d/d exponent is 0 where the base is 0 and the exponent is not negative.
    A constant exponent, or a base known to be positive, has no such points: those stay
    SymPy powers."""

    nargs = 2
    _name = "power"

    @classmethod
    def eval(cls, base: sympy.Expr, exponent: sympy.Expr) -> sympy.Expr | None:
        if not _varies(exponent) or base.is_positive:
            return base**exponent
        return None

    def fdiff(self, argindex: int = 1) -> sympy.Expr:
        base, exponent = self.args
        if argindex == 1:
            return Piecewise((0, sympy.Eq(exponent, 0)),
                             (exponent * Power(base, exponent - 1), True))
        if base.is_zero:  # 0 ** y: 0 or 1 where finite, with no slope
            return sympy.Integer(0)
        if base.is_negative:  # (-2) ** y is real only at whole y: no slope in y, as PyTorch
            return sympy.nan
        return Piecewise((0, sympy.Eq(base, 0) & (exponent >= 0)),
                         (self * sympy.log(base), True))

    def _sympystr(self, printer: StrPrinter) -> str:
        return (f"{printer.parenthesize(self.args[0], PRECEDENCE['Pow'])}**"
                f"{printer.parenthesize(self.args[1], PRECEDENCE['Pow'])}")


def _varies(expr: sympy.Expr) -> bool:
    """Does `expr` read an array (an operand or a def's argument), not only numbers and
    sizes?"""
    return any(not is_size(s) for s in expr.free_symbols)


def _lowercase_names() -> None:
    """Print our functions as the `.bp` language spells them: sigmoid(z), not Sigmoid(z)."""
    for function in (Sigmoid, Softplus, Relu, LeakyRelu, Elu, Logaddexp, Atan2, Clip, Floor,
                     Ceil, Round):
        function._sympystr = lambda self, printer: (
            f"{self._name}({', '.join(printer._print(a) for a in self.args)})"
        )


_lowercase_names()


# Each of our functions in standard SymPy terms. A constant such as sigmoid(1/4) stays
# symbolic (as exp(1/4) does), and the printers turn constants into numbers with
# sympy.N: that needs these forms, or it gives back sigmoid(0.25) and no float.
STANDARD_FORMS: dict[type[sympy.Function], Callable[..., sympy.Expr]] = {
    Sigmoid: lambda x: 1 / (1 + sympy.exp(-x)),
    Softplus: lambda x: sympy.log(1 + sympy.exp(x)),
    Relu: lambda x: sympy.Max(x, 0),
    LeakyRelu: lambda x, alpha: Piecewise((x, x > 0), (alpha * x, True)),
    Elu: lambda x, alpha: Piecewise((x, x > 0), (alpha * (sympy.exp(x) - 1), True)),
    Power: lambda base, exponent: base**exponent,
    Logaddexp: lambda a, b: sympy.log(sympy.exp(a) + sympy.exp(b)),
    Atan2: sympy.atan2,
    Clip: lambda x, low, high: sympy.Min(sympy.Max(x, low), high),
}


def _numeric_values() -> None:
    """Let sympy.N evaluate our functions of numbers (and leave them alone otherwise)."""
    for function, standard in STANDARD_FORMS.items():
        def evalf(self, prec: int, standard=standard) -> sympy.Expr | None:
            if any(arg.free_symbols for arg in self.args):
                return None
            return standard(*self.args).evalf(prec_to_dps(prec))

        function._eval_evalf = evalf


_numeric_values()
