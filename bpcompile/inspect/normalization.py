"""The input gradient of a normalization (batchnorm, layernorm, normalize) the way textbooks
write it, `dx = gamma / sigma * (dy - mean(dy) - xhat * mean(dy * xhat))`, found by SymPy
from the network's own definition rather than typed in.

The forward graph computes `z = F(x, mean(G1(x)), mean(G2(x, ...)), ...)`: elementwise
arithmetic over x and over means along the normalized axes (the graph's keepdims sums, which
the fused code divides by the count). Each mean becomes a symbol m_k with its argument G_k,
and reverse mode over that small chain of means gives, for an adjoint dy of z,

    A_k = mean(dy * dF/dm_k) + sum over later j of A_j * mean(dG_j/dm_k)
    dx  = dy * dF/dx + sum over k of A_k * dG_k/dx

(A_k is d loss / d m_k over the count, so the count cancels). Then SymPy rewrites it: the
means are read back as the values the code names (`z_part` is mean(x), `z_part_3` is
1 / sqrt(mean((x - z_part) ** 2) + eps)), x as `mean + z_hat / rstd`, each mean is expanded
linearly with what is constant along the axes taken out, and mean(z_hat) is 0. What is
printed is evaluated by the tests against the chain rule `show` prints above it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import sympy

from ..graph.expressions import ATOM, Code, ExpressionPrinter
from ..graph.functions import count
from ..graph.ir import Graph, Op, operand
from ..graph.spelling import Speller

Mean = sympy.Function("Mean")  # the mean along the normalized axes, kept dims


@dataclass(frozen=True)
class TextbookGradient:
    """One normalization's input gradient in textbook form, as `NAME = EXPR` lines."""

    statement: str              # `z, normalizing h`, for the heading
    lines: list[tuple[str, str]]  # (name, expression), in the order to evaluate them
    gradient: int               # the node of x's adjoint in the chain rule


def textbook_gradients(graph: Graph, speller: Speller, forward: set[int]
                       ) -> list[TextbookGradient]:
    """Every normalization in the forward values whose input gradient folds into the
    textbook form, in graph order."""
    _MEMO.clear()
    try:
        return _textbook_gradients(graph, speller, forward)
    finally:
        _MEMO.clear()


def _textbook_gradients(graph: Graph, speller: Speller, forward: set[int]
                        ) -> list[TextbookGradient]:
    readers: dict[int, set[int]] = {}
    for i in forward:
        for j in graph.nodes[i].inputs:
            readers.setdefault(j, set()).add(i)
    found = []
    for z in sorted(forward):
        x = _normalized_input(graph, z)
        if x is None or z not in speller.names or x not in speller.names:
            continue
        adjoint, gradient = _adjoint(graph, z, speller), _adjoint(graph, x, speller)
        if adjoint is None or gradient is None:  # x an input: the chain never reaches it
            continue
        result = _derive(graph, speller, z, x, adjoint, gradient,
                         only_reader=_only_reader(graph, z, x, readers))
        if result is not None:
            found.append(result)
    return found


# ---------------------------------------------------------------- finding normalizations


def _normalized_input(graph: Graph, z: int) -> int | None:
    """x, where z is an elementwise node reading x itself and a keepdims sum of x."""
    node = graph.nodes[z]
    if node.op is not Op.ELEMENTWISE:
        return None
    for x in node.inputs:
        if graph.nodes[x].shape == node.shape and \
                any(_sums(graph, j, x) for j in node.inputs if j != x):
            return x
    return None


def _sums(graph: Graph, i: int, x: int) -> bool:
    """Does value i reach x through a keepdims sum (elementwise nodes and sums only)?"""
    reaching = _reaching(graph, x)
    if i not in reaching:
        return False
    stack, seen = [i], set()
    while stack:
        j = stack.pop()
        node = graph.nodes[j]
        if j in seen or j == x:
            continue
        seen.add(j)
        if node.op is Op.SUM and node.keepdims:
            return True
        stack += [k for k in node.inputs if k in reaching]
    return False


def _reaches(graph: Graph, i: int, x: int) -> bool:
    """Does value i depend on x through elementwise nodes and sums only?"""
    return i in _reaching(graph, x)


def _reaching(graph: Graph, x: int) -> frozenset[int]:
    """Every node that depends on x through elementwise nodes and sums only, x included: one
    pass over the nodes after x (in topological order), remembered for the graph, since a
    recursion over shared subexpressions would be exponential."""
    memo = _MEMO.setdefault(id(graph), (graph, {}))[1]
    if x not in memo:
        found = {x}
        for i in range(x + 1, len(graph.nodes)):
            node = graph.nodes[i]
            if node.op in (Op.ELEMENTWISE, Op.SUM) and any(j in found for j in node.inputs):
                found.add(i)
        memo[x] = frozenset(found)
    return memo[x]


# graph id -> (the graph, kept alive so the id is not reused; x -> what reaches it); cleared
# by each `textbook_gradients` call, which is the only reader
_MEMO: dict[int, tuple[Graph, dict[int, frozenset[int]]]] = {}


def _only_reader(graph: Graph, z: int, x: int, readers: dict[int, set[int]]) -> bool:
    """Is the normalization the only use of x (so its input gradient is all of d_x)?"""
    inside = {i for i in range(x + 1, z + 1) if _reaches(graph, i, x) and
              graph.nodes[i].op in (Op.ELEMENTWISE, Op.SUM)}
    return all(r in inside for r in readers.get(x, ())) and \
        all(r in inside for i in inside - {z} for r in readers.get(i, ()))


def _adjoint(graph: Graph, i: int, speller: Speller) -> int | None:
    """The node of value i's adjoint in the printed chain, where the code names it."""
    name = graph.nodes[i].name
    return next((j for j, node in enumerate(graph.nodes)
                 if node.adjoint and node.name == name and j in speller.names), None)


# ---------------------------------------------------------------- deriving


class _Definition:
    """z as SymPy over the symbol x, its means as symbols m_k with their arguments."""

    def __init__(self, graph: Graph, speller: Speller, x: int):
        self.graph, self.speller, self.x = graph, speller, x
        self.X = sympy.Symbol(speller.names[x], real=True)
        self.means: dict[sympy.Symbol, sympy.Expr] = {}  # in the order made: inner first
        self.axes: tuple[int, ...] | None = None
        self.values: dict[int, sympy.Expr] = {}
        self.leaves: dict[sympy.Symbol, int] = {}

    def of(self, i: int) -> sympy.Expr:
        if i not in self.values:
            self.values[i] = self._convert(i)
        return self.values[i]

    def _convert(self, i: int) -> sympy.Expr:
        node = self.graph.nodes[i]
        if i == self.x:
            return self.X
        if _reaches(self.graph, i, self.x):
            if node.op is Op.ELEMENTWISE:
                return node.expr.xreplace({operand(k): self.of(j)
                                           for k, j in enumerate(node.inputs)})
            if node.op is Op.SUM and node.keepdims:
                if self.axes not in (None, node.axes):
                    raise _NotTextbook
                self.axes = node.axes
                argument = self.of(node.inputs[0])
                m = sympy.Dummy(f"mean{len(self.means)}", real=True)
                self.means[m] = argument
                source = self.graph.nodes[node.inputs[0]].shape
                return count(tuple(source[a] for a in node.axes)) * m
            raise _NotTextbook
        leaf = sympy.Symbol(self.speller.text(i), real=True)
        self.leaves[leaf] = i
        return leaf


class _NotTextbook(Exception):
    """The value is not a normalization this module folds (other ops between)."""


def _derive(graph: Graph, speller: Speller, z: int, x: int, adjoint: int, gradient: int,
            only_reader: bool) -> TextbookGradient | None:
    try:
        definition = _Definition(graph, speller, x)
        F = definition.of(z)
    except _NotTextbook:
        return None
    X, means = definition.X, definition.means
    dy = sympy.Symbol(speller.names[adjoint], real=True)
    order = list(means)
    A: dict[sympy.Symbol, sympy.Expr] = {}
    for k in reversed(order):
        a = Mean(dy * sympy.diff(F, k))
        for j in order[order.index(k) + 1:]:
            a += A[j] * Mean(sympy.diff(means[j], k))
        A[k] = a
    dx = dy * sympy.diff(F, X) + sum((A[k] * sympy.diff(means[k], X) for k in order),
                                     sympy.Integer(0))
    folded = _fold(graph, speller, definition, z, dx, dy)
    if folded is None:
        return None
    hat_name, hat_value, dx = folded
    hat = sympy.Symbol(hat_name, real=True)
    first = [*definition.leaves, *sorted(dx.free_symbols - set(definition.leaves)
                                         - {dy, hat}, key=lambda s: s.name)]
    printer = _printer(speller, definition.axes or (), first, dy, hat)
    name = speller.names[z]
    left = speller.names[gradient]
    statement = f"{name}, normalizing {speller.names[x]}"
    lines = [(hat_name, printer(hat_value)),
             (left if only_reader else f"{left} (the part through {name})", printer(dx))]
    return TextbookGradient(statement, lines, gradient)


def _fold(graph: Graph, speller: Speller, definition: _Definition, z: int,
          dx: sympy.Expr, dy: sympy.Symbol) -> tuple[str, sympy.Expr, sympy.Expr] | None:
    """dx over the names the code gives the mean and 1/std, x as mean + hat / rstd."""
    X, means = definition.X, definition.means
    mean_of_x = next((m for m, g in means.items() if g == X), None)
    spread = next((m for m, g in means.items() if mean_of_x is not None
                   and sympy.expand(g - (X - mean_of_x) ** 2) == 0), None)
    if mean_of_x is None or spread is None or len(means) != 2:
        return None
    named: dict[sympy.Symbol, sympy.Symbol] = {}  # mean symbol -> the name computing it
    rstd_name = None
    for i, value in definition.values.items():
        if i in (z, definition.x) or i not in speller.names:
            continue
        symbol = sympy.Symbol(speller.names[i], positive=True)
        if value == mean_of_x:
            named[mean_of_x] = sympy.Symbol(speller.names[i], real=True)
        elif value.free_symbols & set(means) == {spread} and X not in value.free_symbols:
            solutions = sympy.solve(sympy.Eq(value, symbol), spread)
            if len(solutions) == 1:
                rstd_name, rstd_of_spread = symbol, solutions[0]
    if mean_of_x not in named or rstd_name is None:
        return None
    mu = named[mean_of_x]
    taken = set(speller.names.values())
    hat_name = next(name for k in range(1, len(taken) + 2)
                    if (name := f"{speller.names[z]}_hat" + (f"_{k}" if k > 1 else ""))
                    not in taken)
    hat = sympy.Symbol(hat_name, real=True)
    dx = dx.subs(spread, rstd_of_spread).subs(mean_of_x, mu)
    dx = dx.subs(X, mu + hat / rstd_name)
    # a leaf that varies along the normalized axes (layer norm's gamma, one per feature)
    # stays inside the means
    varying = {leaf for leaf, i in definition.leaves.items()
               if not _constant_along(graph.nodes[i].shape, graph.nodes[z].shape,
                                      definition.axes or ())}
    dx = _linear_means(dx, {hat, dy, *varying}, zero={hat})
    if dx.free_symbols - set(definition.leaves) - {mu, rstd_name, hat, dy}:
        return None
    gradient = sympy.collect(sympy.expand(dx), [dy], evaluate=True)
    gradient = sympy.factor_terms(gradient)
    return hat.name, (X - mu) * rstd_name, gradient


def _constant_along(shape: tuple, full: tuple, axes: tuple[int, ...]) -> bool:
    """Is a value of `shape`, broadcast to `full`, the same all along `axes`?"""
    offset = len(full) - len(shape)
    return all(a < offset or shape[a - offset] == 1 for a in axes)


def _linear_means(expr: sympy.Expr, varying: set[sympy.Symbol],
                  zero: set[sympy.Symbol]) -> sympy.Expr:
    """Each mean expanded as a linear map: sums split, factors constant along the axes
    taken out, mean(c) = c, and mean(v) = 0 for v in `zero`."""

    def expand(argument: sympy.Expr) -> sympy.Expr:
        total = sympy.Integer(0)
        for term in sympy.Add.make_args(sympy.expand(argument)):
            constant, rest = term.as_independent(*varying, as_Add=False)
            if rest == 1:
                total += constant
            elif rest not in zero:
                total += constant * Mean(rest)
        return total

    return expr.replace(lambda e: isinstance(e, sympy.Function) and e.func == Mean,
                        lambda e: expand(e.args[0]))


def _printer(speller: Speller, axes: tuple[int, ...], first: list[sympy.Symbol],
             dy: sympy.Symbol, hat: sympy.Symbol) -> Callable[[sympy.Expr], str]:
    """Prints an expression as `show` does, a mean as NumPy's `mean(E, axis=...,
    keepdims=True)`. Factors and terms sort by the order of the symbols they read: `first`
    (gamma, the names of the statistics), dy, the means without the hat, the hat, the means
    with it, so it reads as textbooks write it: gamma * rstd * (dy - mean(dy) - hat *
    mean(dy * hat))."""
    axis = str(axes[0]) if len(axes) == 1 else str(tuple(axes))

    def print_(expr: sympy.Expr) -> str:
        calls = sorted(expr.atoms(Mean), key=lambda c: (hat in c.free_symbols,
                                                         sympy.default_sort_key(c)))
        places = {call: sympy.Dummy(f"mean{k}", real=True) for k, call in enumerate(calls)}
        before = [places[c] for c in calls if hat not in c.free_symbols]
        after = [places[c] for c in calls if hat in c.free_symbols]
        names: dict[sympy.Symbol, Code] = {}
        for symbol in [*first, dy, *before, hat, *after]:
            names[symbol] = Code(symbol.name, ATOM)
        for call, place in places.items():
            names[place] = Code(f"mean({print_(call.args[0])}, axis={axis}, keepdims=True)",
                                ATOM)
        names.update(speller.symbols)
        return ExpressionPrinter(names, math=True, iverson=False).print(
            expr.xreplace(places)).text

    return print_
