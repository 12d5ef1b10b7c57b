"""The `.bp` language's elementwise vocabulary as SymPy: built-in functions with their
arguments and options, operators, comparisons, and numbers read exactly."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import sympy
from sympy import Piecewise

from ..graph.functions import Clip, Elu, LeakyRelu, Power, Relu, Sigmoid, Softplus
from ..graph.vocabulary import FUNCTIONS


def _gelu(x: sympy.Expr, exact: bool = False) -> sympy.Expr:
    """GELU: x * Phi(x) with the normal CDF Phi through erf (exact=true), or its tanh
    approximation (PyTorch's approximate='tanh', our default)."""
    if exact:
        return sympy.Rational(1, 2) * x * (1 + sympy.erf(x / sympy.sqrt(2)))
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


REQUIRED = object()  # an option the call must give


@dataclass(frozen=True)
class Builtin:
    """An elementwise built-in: its tensor arguments, numeric options and SymPy meaning."""

    make: Callable[..., sympy.Expr]
    args: tuple[str, ...] = ("x",)  # the tensor arguments, by name
    # options, numbers or true/false, and their defaults (REQUIRED: no default)
    options: dict[str, float | bool | object] = field(default_factory=dict)

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
    "gelu": Builtin(_gelu, options={"exact": False}),
    "silu": Builtin(lambda x: x * Sigmoid(x)),
    "sign": Builtin(sympy.sign),
    "leaky_relu": Builtin(lambda x, alpha: LeakyRelu(x, alpha), options={"alpha": 0.01}),
    "elu": Builtin(lambda x, alpha: Elu(x, alpha), options={"alpha": 1.0}),
    "maximum": Builtin(sympy.Max, ("a", "b")),
    "minimum": Builtin(sympy.Min, ("a", "b")),
    "where": Builtin(where, ("cond", "a", "b")),
}

# The plain functions of the vocabulary, by their SymPy arity: one or two tensor arguments;
# clip's bounds are numbers, so options.
_ARGUMENTS = {1: ("x",), 2: ("a", "b")}
for _function in FUNCTIONS:
    ELEMENTWISE[_function.word] = (
        Builtin(_function.kind, options={"low": REQUIRED, "high": REQUIRED})
        if _function.kind is Clip else
        Builtin(_function.kind, _ARGUMENTS[int(min(_function.kind.nargs))])
    )


def number(text: str) -> sympy.Rational:
    """A `.bp` number, exactly: 0.1 is one tenth, not the nearest double."""
    return sympy.Rational(text)
