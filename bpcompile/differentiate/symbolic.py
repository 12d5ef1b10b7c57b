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

from functools import lru_cache

import sympy

from ..graph.functions import Elu, LeakyRelu, Power, Relu, Sigmoid, Softplus
from ..graph.ir import OUT, operand
from ..graph.vocabulary import CHEAP_KINDS, TRANSCENDENTAL_KINDS

# The adjoint flowing into the node being differentiated (OUT is the node's own value).
ADJOINT = sympy.Symbol("adjoint", real=True)


# ------------------------------------------------------------------------ cost model

TRANSCENDENTAL = (sympy.exp, sympy.log, sympy.sin, sympy.cos, sympy.tanh, Sigmoid, Softplus, Elu,
                  Power, *TRANSCENDENTAL_KINDS)
CHEAP_FUNCTIONS = (Relu, LeakyRelu, sympy.Max, sympy.Min, sympy.Heaviside, sympy.Abs, sympy.sign,
                   *CHEAP_KINDS)


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
    if isinstance(expr, (sympy.Piecewise, *CHEAP_FUNCTIONS)):
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
    # sign's derivative is 2 * DiracDelta: 0 almost everywhere, as PyTorch takes it
    derivative = sympy.diff(forward, operand(index)).replace(sympy.DiracDelta,
                                                            lambda *args: sympy.Integer(0))
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
