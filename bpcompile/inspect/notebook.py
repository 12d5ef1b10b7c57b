"""Rendering for people: LaTeX of SymPy expressions (with bpcompile's own functions spelled
as textbooks write them) and the HTML that Jupyter shows for a compiled network.

`show --latex`, `explain --latex` and the notebook reprs all print math through `latex`, so
a sigmoid looks the same everywhere: `\\sigma\\left(z\\right)`, not `Sigmoid(z)`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import sympy
from sympy.codegen.cfunctions import expm1, log2, log10
from sympy.printing.latex import LatexPrinter

from ..graph.functions import (
    Atan2,
    Ceil,
    Clip,
    Elu,
    Floor,
    LeakyRelu,
    Logaddexp,
    Power,
    Relu,
    Round,
    Sigmoid,
    Softplus,
)

# Our functions' LaTeX names; SymPy's own (exp, tanh, ...) it already spells well.
FUNCTION_LATEX: dict[type[sympy.Function], str] = {
    Sigmoid: r"\sigma",
    Relu: r"\operatorname{relu}",
    Softplus: r"\operatorname{softplus}",
    LeakyRelu: r"\operatorname{leaky\_relu}",
    Elu: r"\operatorname{elu}",
    Floor: r"\operatorname{floor}",
    Ceil: r"\operatorname{ceil}",
    Round: r"\operatorname{round}",
    Clip: r"\operatorname{clip}",
    Logaddexp: r"\operatorname{logaddexp}",
    expm1: r"\operatorname{expm1}",  # SymPy's reads as expm with an index 1
    log2: r"\log_2",
    log10: r"\log_{10}",
    Atan2: r"\operatorname{atan2}",
}


class MathPrinter(LatexPrinter):
    """SymPy's LaTeX printer, taught the functions `symbolic` defines."""

    def _print_Function(self, expr: sympy.Basic, exp: str | None = None) -> str:
        if isinstance(expr, Power):  # written as the power it is: x^{y}
            return self._print(sympy.Pow(*expr.args, evaluate=False))
        name = FUNCTION_LATEX.get(type(expr))
        if name is None:
            return super()._print_Function(expr, exp)
        args = ", ".join(self._print(a) for a in expr.args)
        head = f"{name}^{{{exp}}}" if exp else name
        return rf"{head}\left({args}\right)"


def latex(expr: sympy.Basic, names: Mapping[sympy.Symbol, str] | None = None,
          order: Sequence[sympy.Symbol] | None = None) -> str:
    """`expr` as LaTeX; `names` gives the LaTeX of some symbols (others print as SymPy
    prints them). With `order`, products and sums keep the reading order the text shows
    (the chain rule's, from the loss back), not SymPy's alphabetical one."""
    settings = {"symbol_names": dict(names or {}), "mul_symbol": None}
    if order is None:
        return MathPrinter(settings).doprint(expr)
    position = {symbol: k for k, symbol in enumerate(order)}
    return MathPrinter({**settings, "order": "none"}).doprint(_reordered(expr, position))


def _reordered(expr: sympy.Basic, position: Mapping[sympy.Symbol, int]) -> sympy.Basic:
    """`expr` with every product and sum unevaluated, its terms by the position of the first
    symbol they read (numbers first in a product, negative terms last in a sum)."""
    if not expr.args or not isinstance(expr, (sympy.Add, sympy.Mul, sympy.Function,
                                             sympy.Pow)):
        return expr
    args = [_reordered(a, position) for a in expr.args]

    def first(term: sympy.Basic) -> int:
        read = [position[s] for s in term.free_symbols if s in position]
        return min(read, default=len(position))

    if isinstance(expr, sympy.Mul):
        args.sort(key=lambda a: (not a.is_Number, first(a)))
        return sympy.Mul(*args, evaluate=False)
    if isinstance(expr, sympy.Add):
        args.sort(key=lambda a: (a.could_extract_minus_sign(), first(a)))
        return sympy.Add(*args, evaluate=False)
    return expr.func(*args, evaluate=False) if isinstance(expr, sympy.Pow) else expr.func(*args)


LATEX_SPECIALS = {"\\": r"\textbackslash{}", "_": r"\_", "#": r"\#", "%": r"\%", "&": r"\&",
                  "{": r"\{", "}": r"\}", "$": r"\$", "^": r"\^{}", "~": r"\~{}"}


def latex_escape(text: str) -> str:
    """Plain text made safe inside LaTeX (a param called `h1.W`, a file `my_net.bp`)."""
    return "".join(LATEX_SPECIALS.get(c, c) for c in text)


def texttt(text: str) -> str:
    """Code-spelled text in LaTeX math or text mode."""
    return rf"\texttt{{{latex_escape(text)}}}"


def name_latex(name: str) -> str:
    """A `.bp` name as math: `W1` as W_{1} (SymPy's convention), `h1.W` and other names
    SymPy would mangle as code."""
    if name.isidentifier() and "_" not in name:
        return sympy.latex(sympy.Symbol(name))
    return texttt(name)
