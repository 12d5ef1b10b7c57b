"""The textbook delta chain: the error terms of a layered network, read off the optimized
graph and spelled as textbooks write them (`δ1 = (δ2 @ W2ᵀ) ⊙ σ'(z1)`), with the derivative
SymPy found for each activation on the way.

Layered networks backpropagate "error terms": the delta of a layer is the next layer's delta
times its weights transposed, times the derivative of this layer's activation. The optimized
graph holds exactly those steps (a matmul by a transposed weight; an elementwise product of
an adjoint with an activation's derivative), so `ChainReader` reads them off it rather than
assume a shape; where a step is anything else, there is no textbook chain to print. `Plain`
and `Latex` spell what it read; `textbook` turns it into equations for `show` to print.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import sympy

from ..differentiate.symbolic import SIGN_PRESERVING, partial
from ..graph.expressions import ATOM, MUL, Code, ExpressionPrinter
from ..graph.functions import Elu, LeakyRelu, Relu, Sigmoid, Softplus
from ..graph.ir import OUT, Graph, Op, operand
from ..graph.spelling import Speller
from .notebook import FUNCTION_LATEX, latex, name_latex, texttt

# The activations a delta may pass through, as `f` is written in `f'(z)` in plain text.
ACTIVATIONS: dict[type, str] = {
    Sigmoid: "σ", sympy.tanh: "tanh", Relu: "relu", Softplus: "softplus",
    LeakyRelu: "leaky_relu", Elu: "elu", sympy.exp: "exp", sympy.sin: "sin", sympy.cos: "cos",
}


def latex_name(kind: type) -> str:
    """`f` of `f'(z)` in LaTeX: ours as `notebook.latex` prints them everywhere else; SymPy's
    (tanh, exp, sin, cos) are LaTeX's own operators of the same name."""
    return FUNCTION_LATEX.get(kind, rf"\{kind.__name__}")


# Structural nodes that only recompute forward values (a softmax the backward re-reads).
RECOMPUTED = frozenset({Op.TRANSPOSE, Op.RESHAPE, Op.SOFTMAX, Op.LOG_SOFTMAX, Op.LOGSUMEXP})

Z = sympy.Symbol("z", real=True)


@dataclass(frozen=True)
class Activation:
    """A forward value `node = f(pre)`, `pre` an expression over the node's operands."""

    node: int
    kind: type
    options: tuple[sympy.Expr, ...]  # leaky_relu's alpha, elu's alpha

    def function(self, x: sympy.Expr) -> sympy.Expr:
        return self.kind(x, *self.options)

    def slope(self) -> sympy.Expr | None:
        """f'(z) in its cheapest form over OUT (the value f(z)), or None if it needs z."""
        z, f = operand(0), self.function(operand(0))
        derivative = partial(f, 0)
        if self.kind in SIGN_PRESERVING:  # relu'(z) = (z > 0) = (relu(z) > 0)
            derivative = derivative.xreplace({sympy.StrictGreaterThan(z, 0): OUT > 0})
        derivative = derivative.subs(f, OUT)
        return None if z in derivative.free_symbols else derivative


@dataclass(frozen=True)
class Delta:
    """One error term: (source @ backᵀ, or source, or seed) ⊙ f'(z) when `activation`."""

    node: int
    activation: Activation | None = None
    back: int | None = None           # the weight W of `source @ Wᵀ`
    source: Delta | None = None       # the next layer's delta
    seed: tuple[sympy.Expr, tuple[int, ...]] | None = None  # the loss's own derivative

    def depth(self) -> int:
        return 0 if self.source is None else self.source.depth() + 1

    def layers(self) -> list[Delta]:
        """This delta and the ones it reads, from the loss back to here."""
        return ([] if self.source is None else self.source.layers()) + [self]


@dataclass(frozen=True)
class GradientStep:
    """How a param's gradient reads its delta: `Xᵀ @ δ` (X = `data`) or a sum over rows."""

    delta: Delta
    data: int | None


class ChainReader:
    """Reads deltas off the backward part of an optimized graph."""

    def __init__(self, graph: Graph, forward: set[int]):
        self.graph = graph
        self.values = set(forward)  # forward values, and recomputations of them
        for i, node in enumerate(graph.nodes):
            if node.op in RECOMPUTED and all(j in self.values for j in node.inputs):
                self.values.add(i)

    def gradient(self, grad: int) -> GradientStep | None:
        node = self.graph.nodes[grad]
        if node.op is Op.SUM and node.axes == (0,) and not node.keepdims:
            delta = self.delta(node.inputs[0])
            return None if delta is None else GradientStep(delta, None)
        if node.op is Op.MATMUL:
            left = self.graph.nodes[node.inputs[0]]
            if left.op is Op.TRANSPOSE and left.inputs[0] in self.values:
                delta = self.delta(node.inputs[1])
                return None if delta is None else GradientStep(delta, left.inputs[0])
        return None

    def delta(self, i: int) -> Delta | None:
        if i in self.values:
            return None
        rule = {Op.MATMUL: self._matmul, Op.ELEMENTWISE: self._elementwise}.get(
            self.graph.nodes[i].op)
        return None if rule is None else rule(i)

    def _matmul(self, i: int) -> Delta | None:
        """δ @ Wᵀ: the next layer's delta sent back through its weights."""
        a, b = self.graph.nodes[i].inputs
        right = self.graph.nodes[b]
        if right.op is not Op.TRANSPOSE or right.inputs[0] not in self.values:
            return None
        source = self.delta(a)
        return None if source is None else Delta(i, back=right.inputs[0], source=source)

    def _elementwise(self, i: int) -> Delta | None:
        """An adjoint times an activation's derivative, or the loss's own derivative."""
        node = self.graph.nodes[i]
        for k, j in enumerate(node.inputs):
            activation = self.activation(j)
            slope = activation.slope() if activation else None
            rest = None if slope is None else _divide(node.expr, slope.xreplace({OUT: operand(k)}),
                                                      operand(k))
            if rest is not None:
                return self._through(i, rest, activation)
        if all(j in self.values for j in node.inputs):
            return Delta(i, seed=(node.expr, node.inputs))
        return None

    def _through(self, i: int, rest: sympy.Expr, activation: Activation) -> Delta | None:
        inputs = self.graph.nodes[i].inputs
        adjoints = [operand(k) for k, j in enumerate(inputs)
                    if j not in self.values and operand(k) in rest.free_symbols]
        if not adjoints:
            return Delta(i, activation, seed=(rest, inputs))
        if len(adjoints) > 1 or rest != adjoints[0]:
            return None
        inner = self.delta(inputs[int(adjoints[0].name[1:])])
        if inner is None:
            return None
        if inner.activation is None and inner.seed is not None:
            return Delta(i, activation, seed=inner.seed)
        if inner.activation is None:
            return Delta(i, activation, back=inner.back, source=inner.source)
        return Delta(i, activation, source=inner)

    def activation(self, i: int) -> Activation | None:
        node = self.graph.nodes[i]
        if i not in self.values or node.op is not Op.ELEMENTWISE:
            return None
        expr = node.expr
        if type(expr) not in ACTIVATIONS or any(a.free_symbols for a in expr.args[1:]):
            return None
        return Activation(i, type(expr), expr.args[1:])


def _divide(expr: sympy.Expr, slope: sympy.Expr, value: sympy.Symbol) -> sympy.Expr | None:
    """`expr / slope` when `expr` is that times `slope` (no division by the value left)."""
    if isinstance(slope, sympy.Piecewise):
        if not isinstance(expr, sympy.Piecewise) or len(expr.args) != len(slope.args):
            return None
        rests = set()
        for (e, c), (s, d) in zip(expr.args, slope.args):
            if c != d or (s == 0 and e != 0):
                return None
            if s != 0:
                rests.add(sympy.cancel(e / s))
        return rests.pop() if len(rests) == 1 else None
    if slope == 1 or not _small_powers(expr):
        return None  # a linear layer: no activation to factor out; or too big to cancel
    rest = sympy.cancel(expr / slope)
    return None if sympy.fraction(rest)[1].has(value) else rest


# ------------------------------------------------------------------------ spellings


def is_atom(text: str) -> bool:
    """A name, or one call like `softmax(z, axis=1)`: needs no parentheses. (Shared with
    `show`, which imports it from here.)"""
    return text.isidentifier() or re.fullmatch(r"[A-Za-z_][\w.]*\([^()]*\)", text) is not None


class Plain:
    """How the textbook chain is written in plain text (Unicode, NumPy-like operators)."""

    odot = " ⊙ "

    def __init__(self, graph: Graph, math: Speller, numbers: dict[int, int]):
        self.graph = graph
        self.math = math
        self.numbers = numbers

    def delta(self, d: Delta) -> str:
        return f"δ{self.numbers[d.node]}"

    def z(self, d: Delta) -> str:
        return f"z{self.numbers[d.node]}"

    def value(self, i: int) -> str:
        node = self.graph.nodes[i]
        return node.name if node.op is Op.PARAM and node.name else self.math.text(i)

    def expr(self, expr: sympy.Expr, inputs: tuple[int, ...]) -> str:
        names = {operand(k): self._code(j) for k, j in enumerate(inputs)}
        names.update(self.math.symbols)
        return ExpressionPrinter(names, math=True).print(expr).text

    def _code(self, i: int) -> Code:
        """A value as an operand: a param by its `.bp` name, `x @ W1` as tight as a product."""
        node = self.graph.nodes[i]
        if node.op is Op.PARAM and node.name:
            return Code(node.name, ATOM)
        if node.op is Op.MATMUL:
            return Code(" @ ".join(self._code(j).at(MUL + 1) for j in node.inputs), MUL)
        return self.math.code(i)

    def group(self, text: str) -> str:
        simple = is_atom(text) or re.fullmatch(r"[A-Za-z_][\w.]*", text)
        return text if simple else f"({text})"

    def transposed(self, i: int) -> str:
        return f"{self.group(self.value(i))}ᵀ"

    def back(self, source: Delta, weight: int) -> str:
        return f"{self.delta(source)} @ {self.transposed(weight)}"

    def function(self, a: Activation, argument: str, prime: str = "") -> str:
        return f"{ACTIVATIONS[a.kind]}{prime}({argument})"

    def grad(self, param: str) -> str:
        return f"∂L/∂{param}"

    def outer(self, data: int, delta: str) -> str:
        return f"{self.transposed(data)} @ {delta}"

    def rows(self, delta: str) -> str:
        return f"sum({delta}, axis=0)"

    def derivative(self, expr: sympy.Expr) -> str:
        """As SymPy prints it, so it reads back with sympy.sympify."""
        return str(expr)

    def slope(self, expr: sympy.Expr, a: Activation) -> str:
        return self.math.expression(expr, [], out=self.math.code(a.node)).text


class Latex(Plain):
    """The same in LaTeX: \\delta_{k}, \\odot, ^\\top, math through SymPy's printer."""

    odot = r" \odot "

    def delta(self, d: Delta) -> str:
        return rf"\delta_{{{self.numbers[d.node]}}}"

    def z(self, d: Delta) -> str:
        return f"z_{{{self.numbers[d.node]}}}"

    def value(self, i: int) -> str:
        node = self.graph.nodes[i]
        if node.op is Op.PARAM and node.name:
            return name_latex(node.name)
        if node.op is Op.MATMUL:
            return " ".join(self.group(self.value(j)) for j in node.inputs)
        if node.op is Op.TRANSPOSE:
            return self.transposed(node.inputs[0])
        text = self.math.text(i)
        return name_latex(text) if text.isidentifier() else texttt(text)

    def names(self, inputs: tuple[int, ...]) -> dict[sympy.Symbol, str]:
        names = {operand(k): self.value(j) for k, j in enumerate(inputs)}
        names.update({s: str(code.text) for s, code in self.math.symbols.items()})
        return names

    def expr(self, expr: sympy.Expr, inputs: tuple[int, ...]) -> str:
        return latex(expr, self.names(inputs))

    def group(self, text: str) -> str:
        simple = text.isidentifier() or re.fullmatch(r"[A-Za-z]_\{\w+\}|\\texttt\{[^{} ]*\}", text)
        return text if simple else rf"\left({text}\right)"

    def transposed(self, i: int) -> str:
        return rf"{{{self.group(self.value(i))}}}^\top"

    def back(self, source: Delta, weight: int) -> str:
        return f"{self.delta(source)} {self.transposed(weight)}"

    def function(self, a: Activation, argument: str, prime: str = "") -> str:
        return rf"{latex_name(a.kind)}{prime}\left({argument}\right)"

    def grad(self, param: str) -> str:
        return rf"\frac{{\partial L}}{{\partial {name_latex(param)}}}"

    def outer(self, data: int, delta: str) -> str:
        return f"{self.transposed(data)} {delta}"

    def rows(self, delta: str) -> str:
        return rf"\textstyle\sum_{{n}} \left({delta}\right)_{{n}}"

    def derivative(self, expr: sympy.Expr) -> str:
        return latex(expr, {Z: "z"})

    def slope(self, expr: sympy.Expr, a: Activation) -> str:
        return latex(expr, {OUT: self.value(a.node)})


def numbering(steps: list[GradientStep]) -> dict[int, int]:
    """Layer numbers of the deltas, 1 nearest the input: the loss's delta is the highest."""
    depths = {d.node: d.depth() for step in steps for d in step.delta.layers()}
    top = max(depths.values(), default=0) + 1
    return {node: top - depth for node, depth in depths.items()}


def textbook(step: GradientStep, param: str, spell: Plain) -> tuple[list[tuple[str, str]],
                                                                    list[tuple[str, str]]]:
    """(activation derivatives, delta chain) as (left, right) sides of equations."""
    layers = step.delta.layers()
    derivatives: list[tuple[str, str]] = []
    chain: list[tuple[str, str]] = []
    found: dict[tuple, None] = {}
    for d in reversed(layers):  # the forward pass: layer 1 first
        a = d.activation
        if a is None:
            continue
        if (a.kind, a.options) not in found:
            found[(a.kind, a.options)] = None
            derivative = simplest(sympy.diff(a.function(Z), Z))
            derivatives.append((spell.function(a, spell.derivative(Z), "'"),
                                spell.derivative(derivative)))
        derivatives.append((spell.function(a, spell.z(d), "'"), spell.slope(a.slope(), a)))
        node = spell.graph.nodes[a.node]
        chain.append((spell.z(d), spell.expr(node.expr.args[0], node.inputs)))
        chain.append((spell.value(a.node), spell.function(a, spell.z(d))))
    for d in layers:
        if d.seed is not None:
            incoming = spell.expr(*d.seed)
        elif d.back is not None:
            incoming = spell.back(d.source, d.back)
        else:
            incoming = spell.delta(d.source)
        if d.activation is not None:
            prime = spell.function(d.activation, spell.z(d), "'")
            incoming = f"{spell.group(incoming)}{spell.odot}{prime}"
        chain.append((spell.delta(d), incoming))
    delta = spell.delta(step.delta)
    chain.append((spell.grad(param), spell.rows(delta) if step.data is None
                  else spell.outer(step.data, delta)))
    return derivatives, chain


def _small_powers(expr: sympy.Expr) -> bool:
    """Safe to cancel: `(y - t) ** 1e300` would never finish."""
    return all(not p.is_Pow or not p.exp.is_Number or abs(p.exp) <= 8
               for p in sympy.preorder_traversal(expr))


def simplest(expr: sympy.Expr) -> sympy.Expr:
    """The shortest of a few SymPy simplifications (tried only on small expressions)."""
    candidates = [expr, sympy.factor_terms(expr)]
    if sympy.count_ops(expr) <= 20:
        candidates.append(sympy.simplify(expr))
    return min(candidates, key=sympy.count_ops)
