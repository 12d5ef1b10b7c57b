"""The elementwise functions that every printer spells by one rule, one row each: how the
`.bp` language names it, which SymPy class it is, NumPy's function for it and the LLVM
backend's. The language, both printers, `show`, the naming source and the cost model read
their entries from here, so a function added here is added everywhere at once.

Functions with their own spelling rules (sigmoid, relu, where, powers, ...) keep them in the
printers' tables; these are the plain ones: `f(a, b)` in math, `np.g(a, b)` in NumPy.
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy
from sympy.codegen.cfunctions import expm1, hypot, log1p, log2, log10

from .functions import Atan2, Ceil, Clip, Floor, Logaddexp, Round


@dataclass(frozen=True)
class Function:
    kind: type                 # the SymPy class of its expressions
    word: str                  # the `.bp` name, which math displays print too
    numpy: str | None          # np.<numpy>; None: a helper of the generated module, `word`
    llvm: str                  # a MathFunctions body, or an `llvm.` intrinsic
    transcendental: bool = True  # priced as one (the cost model's 20), else as cheap


FUNCTIONS: tuple[Function, ...] = (
    Function(sympy.tan, "tan", "tan", "tan"),
    Function(sympy.sinh, "sinh", "sinh", "sinh"),
    Function(sympy.cosh, "cosh", "cosh", "cosh"),
    Function(sympy.asin, "asin", "arcsin", "asin"),
    Function(sympy.acos, "acos", "arccos", "acos"),
    Function(sympy.atan, "atan", "arctan", "atan"),
    Function(sympy.asinh, "asinh", "arcsinh", "asinh"),
    Function(sympy.acosh, "acosh", "arccosh", "acosh"),
    Function(sympy.atanh, "atanh", "arctanh", "atanh"),
    Function(log1p, "log1p", "log1p", "log1p"),
    Function(expm1, "expm1", "expm1", "expm1"),
    Function(log2, "log2", "log2", "log2"),
    Function(log10, "log10", "log10", "log10"),
    Function(sympy.erf, "erf", None, "erf"),
    Function(Logaddexp, "logaddexp", "logaddexp", "logaddexp"),
    Function(hypot, "hypot", "hypot", "hypot"),
    Function(Atan2, "atan2", "arctan2", "atan2"),
    Function(Clip, "clip", "clip", "clip", transcendental=False),
    Function(Floor, "floor", "floor", "llvm.floor", transcendental=False),
    Function(Ceil, "ceil", "ceil", "llvm.ceil", transcendental=False),
    # rint rounds halves to even in the default rounding mode, as NumPy's round does
    Function(Round, "round", "round", "llvm.rint", transcendental=False),
)

BY_KIND: dict[type, Function] = {f.kind: f for f in FUNCTIONS}
KINDS: tuple[type, ...] = tuple(BY_KIND)
TRANSCENDENTAL_KINDS: tuple[type, ...] = tuple(f.kind for f in FUNCTIONS if f.transcendental)
CHEAP_KINDS: tuple[type, ...] = tuple(f.kind for f in FUNCTIONS if not f.transcendental)
