"""How the graph is written, for NumPy and for people: one spelling of every node, used by
the NumPy backend, `show`, `graph` and `explain` alike.

Elementwise nodes print their SymPy expression (expressions.py); structural ops are spelled
by the table `OP_SPELLING`, in NumPy code (`np.sum(x, axis=0)`) or as math for people
(`sum(x, axis=0)`). `Speller` writes a value by its name where it has one, else inline.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import sympy

from .expressions import ATOM, MUL, UNARY, Code, ExpressionPrinter
from .ir import OUT, Graph, Node, Op, operand
from .shapes import Shape, broadcast


@dataclass
class Style:
    """What differs between the two ways a node is written: NumPy code (`np.sum(x,
    axis=0)`, helpers the module defines) and math for people (`sum(x, axis=0)`). Both read
    as Python, so a test can evaluate what `show` prints."""

    numpy: bool
    shape: Callable[[Shape], str]  # a shape as a tuple literal, its sizes as variables
    helpers: set[str] = field(default_factory=set)  # helper functions the code calls

    @property
    def np(self) -> str:
        return "np." if self.numpy else ""

    def helper(self, name: str, *args: str) -> Code:
        """A call of a function the generated module defines (softmax, cross_entropy, ...)."""
        if self.numpy:
            self.helpers.add(name)
        return Code(f"{name}({', '.join(args)})", ATOM)


def axes_argument(node: Node, rank: int) -> str:
    """`, axis=...` of a reduction ('' when it reduces everything to a scalar), then
    `, keepdims=True` where it keeps them."""
    keep = ", keepdims=True" if node.keepdims else ""
    if len(node.axes) == rank and not node.keepdims:
        return ""
    axis = str(node.axes[0]) if len(node.axes) == 1 else str(node.axes)
    return f", axis={axis}{keep}"


Spell = Callable[[Style, Node, list[Code], list[Shape]], Code]


def _matmul(style: Style, node: Node, args: list[Code], shapes: list[Shape]) -> Code:
    return Code(f"{args[0].at(MUL)} @ {args[1].at(UNARY)}", MUL)


def _transpose(style: Style, node: Node, args: list[Code], shapes: list[Shape]) -> Code:
    return Code(f"{args[0].at(ATOM)}.T", ATOM)


def _reshape(style: Style, node: Node, args: list[Code], shapes: list[Shape]) -> Code:
    return Code(f"{style.np}reshape({args[0].text}, {style.shape(node.shape)})", ATOM)


def _reduction(function: str) -> Spell:
    def spell(style: Style, node: Node, args: list[Code], shapes: list[Shape]) -> Code:
        return Code(f"{style.np}{function}({args[0].text}"
                    f"{axes_argument(node, len(shapes[0]))})", ATOM)
    return spell


def _along_axis(function: str) -> Spell:
    """A function the module defines, along the node's axes (all of them, for logsumexp)."""
    def spell(style: Style, node: Node, args: list[Code], shapes: list[Shape]) -> Code:
        axis = str(node.axes[0]) if len(node.axes) == 1 else str(node.axes)
        keep = ["keepdims=True"] if node.keepdims else []
        return style.helper(function, args[0].text, f"axis={axis}", *keep)
    return spell


def _cross_entropy(style: Style, node: Node, args: list[Code], shapes: list[Shape]) -> Code:
    return style.helper("cross_entropy", args[0].text, args[1].text)


# How each structural op is written; ELEMENTWISE nodes print their expression, and leaves
# their name (graph/naming.py).
OP_SPELLING: dict[Op, Spell] = {
    Op.MATMUL: _matmul,
    Op.TRANSPOSE: _transpose,
    Op.RESHAPE: _reshape,
    Op.SUM: _reduction("sum"),
    Op.MAX: _reduction("max"),
    Op.ARGMAX_ONEHOT: _along_axis("onehot_argmax"),
    Op.SOFTMAX: _along_axis("softmax"),
    Op.LOG_SOFTMAX: _along_axis("log_softmax"),
    Op.LOGSUMEXP: _along_axis("logsumexp"),
    Op.SOFTMAX_XENT: _cross_entropy,
}


class Speller:
    """Values written for people: a value by its name where it has one in `names` (a line
    of its own in the generated code), else its expression inline, as the code inlines it.
    The math reads as Python over NumPy-like functions (`sum(d_h, axis=0)`, `sigmoid(z)`),
    so what `show` prints can be evaluated."""

    def __init__(self, graph: Graph, names: Mapping[int, str],
                 symbols: Mapping[sympy.Symbol, Code]):
        self.graph = graph
        self.names = names
        self.symbols = symbols  # sizes and named constants: N, LR
        self.style = Style(numpy=False, shape=_shape_text)
        self._inline: dict[int, Code] = {}

    def code(self, i: int) -> Code:
        if i in self.names:
            return Code(self.names[i], ATOM)
        if i not in self._inline:
            self._inline[i] = self.spell(i)
        return self._inline[i]

    def text(self, i: int) -> str:
        return self.code(i).text

    def spell(self, i: int) -> Code:
        """The expression computing node i from its inputs."""
        node = self.graph.nodes[i]
        args = [self.code(j) for j in node.inputs]
        if node.op is Op.ELEMENTWISE:
            code = self.expression(node.expr, args, node.shape)
            reached = broadcast(*(self.graph.nodes[j].shape for j in node.inputs))
            if node.inputs and reached != node.shape:  # the operands do not fill its shape
                return Code(f"broadcast_to({code.text}, {self.style.shape(node.shape)})", ATOM)
            return code
        shapes = [self.graph.nodes[j].shape for j in node.inputs]
        return OP_SPELLING[node.op](self.style, node, args, shapes)

    def expression(self, expr: sympy.Expr, args: list[Code], shape: Shape = (),
                   out: Code | None = None) -> Code:
        """`expr` over operands spelled `args` (and OUT, the value itself, as `out`)."""
        names = {operand(k): code for k, code in enumerate(args)}
        names.update(self.symbols)
        if out is not None:
            names[OUT] = out
        code = ExpressionPrinter(names, math=True, iverson=False).print(expr)
        if not args and shape:  # a constant filling a tensor: full((N, 3), 0)
            return Code(f"full({self.style.shape(shape)}, {code.text})", ATOM)
        return code


def _shape_text(shape: Shape) -> str:
    dims = [str(d) for d in shape]
    return f"({dims[0]},)" if len(dims) == 1 else f"({', '.join(dims)})"
