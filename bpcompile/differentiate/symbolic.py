"""The SymPy bridge: elementwise math as SymPy expressions, their derivatives, and the
cheapest way to compute those derivatives given what the forward pass already computed.

An elementwise node computes `out = f(a0, a1, ...)`. Its partial derivative by `ai` comes
from `sympy.diff`; then we look for a cheaper equal form that reads `out` instead of
recomputing a transcendental (the derivative of `sigmoid(z)` is `out * (1 - out)`, of `exp(z)`
is `out`), pricing each candidate with a cost model in which exp, log, tanh and friends cost
twenty multiplies. Results are cached by expression, so a network of twenty identical layers
derives each distinct expression once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache

import sympy
from sympy import Piecewise
from sympy.core.evalf import prec_to_dps
from sympy.printing.precedence import PRECEDENCE
from sympy.printing.str import StrPrinter

from ..graph.ir import operand

# The value of the node being differentiated, and the adjoint flowing into it.
OUT = sympy.Symbol("out", real=True)
ADJOINT = sympy.Symbol("adjoint", real=True)


# ------------------------------------------------------------ functions SymPy lacks


class Sigmoid(sympy.Function):
    """The logistic function 1 / (1 + exp(-x))."""

    nargs = 1
    _name = "sigmoid"  # how math displays spell it

    @classmethod
    def eval(cls, x: sympy.Expr) -> sympy.Expr | None:
        if x.is_zero:
            return sympy.Rational(1, 2)
        if x.could_extract_minus_sign():  # one canonical form: sigmoid(-x) = 1 - sigmoid(x)
            return 1 - cls(-x)
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


def is_size(symbol: sympy.Basic) -> bool:
    """Does this symbol stand for a size bound at call time (`dim:N`), not for an array?"""
    return symbol.is_Symbol and symbol.name.startswith("dim:")


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
    for function in (Sigmoid, Softplus, Relu, LeakyRelu, Elu):
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


def _gelu(x: sympy.Expr) -> sympy.Expr:
    """GELU, tanh approximation (PyTorch's approximate='tanh')."""
    inner = sympy.sqrt(2 / sympy.pi) * (x + sympy.Float("0.044715") * x**3)
    return sympy.Rational(1, 2) * x * (1 + sympy.tanh(inner))


def indicator(condition: sympy.Basic) -> sympy.Expr:
    """1 where `condition` holds, else 0 (comparisons give these; they have no gradient)."""
    return Piecewise((1, condition), (0, True))


def where(cond: sympy.Expr, a: sympy.Expr, b: sympy.Expr) -> sympy.Expr:
    """`a` where `cond` is non-zero, else `b`; a comparison's condition is used directly."""
    if isinstance(cond, Piecewise) and len(cond.args) == 2 and cond.args[0].expr == 1 \
            and cond.args[1].expr == 0 and cond.args[1].cond == sympy.true:
        return Piecewise((a, cond.args[0].cond), (b, True))
    return Piecewise((a, sympy.Ne(cond, 0)), (b, True))


COMPARISONS: dict[str, Callable[[sympy.Expr, sympy.Expr], sympy.Basic]] = {
    "<": sympy.StrictLessThan, "<=": sympy.LessThan,
    ">": sympy.StrictGreaterThan, ">=": sympy.GreaterThan,
    "==": sympy.Eq, "!=": sympy.Ne,
}

BINARY: dict[str, Callable[[sympy.Expr, sympy.Expr], sympy.Expr]] = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "/": lambda a, b: a / b,
    "**": Power,
}


@dataclass(frozen=True)
class Builtin:
    """An elementwise built-in: its tensor arguments, numeric options and SymPy meaning."""

    make: Callable[..., sympy.Expr]
    args: tuple[str, ...] = ("x",)  # the tensor arguments, by name
    options: dict[str, float] = field(default_factory=dict)  # numeric options and defaults

    @property
    def arity(self) -> int:
        return len(self.args)


ELEMENTWISE: dict[str, Builtin] = {
    "exp": Builtin(sympy.exp),
    "log": Builtin(sympy.log),
    "sqrt": Builtin(sympy.sqrt),
    "abs": Builtin(sympy.Abs),
    "square": Builtin(lambda x: x**2),
    "sin": Builtin(sympy.sin),
    "cos": Builtin(sympy.cos),
    "tanh": Builtin(sympy.tanh),
    "sigmoid": Builtin(Sigmoid),
    "relu": Builtin(Relu),
    "softplus": Builtin(Softplus),
    "linear": Builtin(lambda x: x),
    "gelu": Builtin(_gelu),
    "leaky_relu": Builtin(lambda x, alpha: LeakyRelu(x, alpha), options={"alpha": 0.01}),
    "elu": Builtin(lambda x, alpha: Elu(x, alpha), options={"alpha": 1.0}),
    "maximum": Builtin(sympy.Max, ("a", "b")),
    "minimum": Builtin(sympy.Min, ("a", "b")),
    "where": Builtin(where, ("cond", "a", "b")),
}


# ------------------------------------------------------------------------ cost model

TRANSCENDENTAL = (sympy.exp, sympy.log, sympy.sin, sympy.cos, sympy.tanh, Sigmoid, Softplus, Elu,
                  Power)
CHEAP_FUNCTIONS = (Relu, LeakyRelu, sympy.Max, sympy.Min, sympy.Heaviside, sympy.Abs, sympy.sign)


def _is_transcendental(expr: sympy.Basic) -> bool:
    if isinstance(expr, TRANSCENDENTAL):
        return True
    return expr.is_Pow and not expr.exp.is_Integer


def _own_cost(expr: sympy.Basic) -> int:
    if _is_transcendental(expr):
        return 20
    if expr.is_Pow:  # integer power: repeated multiplies, a division if negative
        n = abs(int(expr.exp))
        return max(n - 1, 0) + (4 if expr.exp < 0 else 0)
    if expr.is_Add or expr.is_Mul:
        return len(expr.args) - 1
    if isinstance(expr, (Piecewise, *CHEAP_FUNCTIONS)):
        return 2
    return 0


def cost(expr: sympy.Basic) -> int:
    """A rough price of evaluating `expr` once per element; a transcendental costs 20."""
    if expr.is_Atom or expr.is_Relational and not expr.free_symbols:
        return 0
    return _own_cost(expr) + sum(cost(arg) for arg in expr.args)


def transcendental_terms(expr: sympy.Basic) -> set[sympy.Basic]:
    """The distinct transcendental subterms of `expr`, itself included."""
    return {e for e in sympy.preorder_traversal(expr) if _is_transcendental(e)}


def transcendentals(expr: sympy.Basic) -> int:
    """How many distinct transcendental evaluations `expr` needs."""
    return len(transcendental_terms(expr))


# -------------------------------------------------------------------- derivatives


def _recover_from_out(forward: sympy.Expr) -> list[dict[sympy.Expr, sympy.Expr]]:
    """Substitutions that read a transcendental subterm `g` of `forward` off its value.

    Only where `forward = c0 + c1 * g` with a constant `c1 != 0`, so `g = (out - c0) / c1`
    divides by no variable and can never create a 0/0 the forward pass did not have.
    """
    found = []
    probe = sympy.Dummy("g", real=True)
    for g in {e for e in sympy.preorder_traversal(forward) if _is_transcendental(e)}:
        linear = forward.xreplace({g: probe})
        if linear.has(g):  # g also occurs inside another function: not linear in it
            continue
        slope = sympy.diff(linear, probe)
        if slope.is_Number and slope != 0 and sympy.diff(slope, probe) == 0:
            offset = linear.xreplace({probe: 0})
            found.append({g: (OUT - offset) / slope})
    return found


# Functions with f(u) > 0 exactly where u > 0: their derivative's test `u > 0` can read the
# output instead, so the backward pass does not need the input kept.
SIGN_PRESERVING = (Relu, LeakyRelu, Elu, sympy.tanh)


def _sign_from_out(forward: sympy.Expr) -> dict[sympy.Basic, sympy.Basic]:
    if isinstance(forward, SIGN_PRESERVING) and all(a.is_positive for a in forward.args[1:]):
        u = forward.args[0]
        return {sympy.StrictGreaterThan(u, 0): sympy.StrictGreaterThan(OUT, 0)}
    return {}


def _expandable(expr: sympy.Expr) -> bool:
    """Only small integer powers may be expanded: (y - t) ** 1000 expands to a thousand
    terms, and ** 1e300 would never finish."""
    return all(not p.is_Pow or (p.exp.is_Integer and abs(p.exp) <= 8)
               for p in sympy.preorder_traversal(expr))


@lru_cache(maxsize=4096)
def partial(forward: sympy.Expr, index: int) -> sympy.Expr:
    """The cheapest form of d forward / d a<index>, free to read OUT (the forward's value)."""
    derivative = sympy.diff(forward, operand(index))
    candidates = [derivative, derivative.subs(forward, OUT)]
    sign = _sign_from_out(forward)
    if sign:
        candidates += [c.xreplace(sign).subs(forward, OUT) for c in candidates]
    for substitution in _recover_from_out(forward):
        candidates.append(derivative.xreplace(substitution))
    # Algebraic clean-ups, tried only on small expressions: expand can blow up large ones.
    small = [c for c in candidates if sympy.count_ops(c) <= 40 and _expandable(c)]
    candidates += [sympy.factor_terms(c) for c in small] + [sympy.expand(c) for c in small]
    # A cheaper form is an identity only where it divides by nothing the derivative itself
    # does not: `y * x**y / x` for d(x**y)/dx is NaN at x = 0, where the derivative is 0.
    allowed = _divisors(derivative, forward)
    safe = [c for c in candidates if _divisors(c, forward) <= allowed]
    return min(safe, key=lambda c: (cost(c), sympy.count_ops(c)))


def _divisors(expr: sympy.Expr, forward: sympy.Expr) -> set[sympy.Expr]:
    """What `expr` divides by that may be zero: the bases of its negative powers, reading
    OUT as `forward`, with positive powers taken off (sqrt(u) is 0 where u is). Values
    SymPy proves non-zero are left out: exp, sigmoid, softplus, x ** 2 + 1, constants."""
    found = set()
    for term in sympy.preorder_traversal(expr):
        if term.is_Pow and term.exp.is_negative:
            base = term.base.xreplace({OUT: forward})
            while base.is_Pow and base.exp.is_positive:
                base = base.base
            if not base.is_nonzero:
                found.add(base)
    return found


@lru_cache(maxsize=4096)
def backward(forward: sympy.Expr, index: int) -> sympy.Expr:
    """ADJOINT * d forward / d a<index>, folded so `adjoint * (x > 0)` reads as a select."""
    return sympy.piecewise_fold(ADJOINT * partial(forward, index))


def backward_transcendentals(forward: sympy.Expr, indices: tuple[int, ...]) -> int:
    """Transcendentals the backward of `forward` evaluates for the partials `indices`."""
    parts = [partial(forward, i) for i in indices]
    return transcendentals(sympy.Add(*parts)) if parts else 0


# -------------------------------------------------------------- stability rewrites

def _log_of_sigmoid(expr: sympy.Expr) -> sympy.Expr | None:
    """log(sigmoid(u)) = -softplus(-u)."""
    if isinstance(expr, sympy.log) and isinstance(expr.args[0], Sigmoid):
        return -Softplus(-expr.args[0].args[0])
    return None


def _log_of_one_minus_sigmoid(expr: sympy.Expr) -> sympy.Expr | None:
    """log(1 - sigmoid(u)) = -softplus(u)."""
    if not isinstance(expr, sympy.log):
        return None
    rest = expr.args[0] - 1
    if rest.could_extract_minus_sign() and isinstance(-rest, Sigmoid):
        return -Softplus((-rest).args[0])
    return None


def _log_one_plus_exp(expr: sympy.Expr) -> sympy.Expr | None:
    """log(1 + exp(u)) = softplus(u)."""
    if isinstance(expr, sympy.log):
        rest = expr.args[0] - 1
        if isinstance(rest, sympy.exp):
            return Softplus(rest.args[0])
    return None


def _reciprocal_one_plus_exp(expr: sympy.Expr) -> sympy.Expr | None:
    """1 / (1 + exp(-u)) = sigmoid(u), so a hand-written sigmoid gets sigmoid's rewrites."""
    if expr.is_Pow and expr.exp == -1:
        rest = expr.base - 1
        if isinstance(rest, sympy.exp):
            return Sigmoid(-rest.args[0])
    return None


STABILITY_RULES: tuple[Callable[[sympy.Expr], sympy.Expr | None], ...] = (
    _reciprocal_one_plus_exp,
    _log_of_sigmoid,
    _log_of_one_minus_sigmoid,
    _log_one_plus_exp,
)


def stabilize(expr: sympy.Expr) -> tuple[sympy.Expr, int]:
    """Apply STABILITY_RULES bottom-up until none fires; return the result and how many fired."""
    fired = 0

    def visit(e: sympy.Expr) -> sympy.Expr:
        nonlocal fired
        if e.args:
            e = e.func(*(visit(a) for a in e.args))
        for rule in STABILITY_RULES:
            new = rule(e)
            if new is not None:
                fired += 1
                return visit(new)
        return e

    return visit(expr), fired


def number(text: str) -> sympy.Rational:
    """A `.bp` number, exactly: 0.1 is one tenth, not the nearest double."""
    return sympy.Rational(text)
