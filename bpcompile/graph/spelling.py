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
from .shapes import Shape, broadcast, slice_subscripts, subscript_text


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


def _permute(style: Style, node: Node, args: list[Code], shapes: list[Shape]) -> Code:
    return Code(f"{style.np}transpose({args[0].text}, {_tuple(node.axes)})", ATOM)


def _slice(style: Style, node: Node, args: list[Code], shapes: list[Shape]) -> Code:
    subscripts = slice_subscripts(node.attrs, node.axes, shapes[0], node.shape)
    return Code(f"{args[0].at(ATOM)}[{subscript_text(subscripts)}]", ATOM)


def _unslice(style: Style, node: Node, args: list[Code], shapes: list[Shape]) -> Code:
    """The adjoint of a slice, scattered into zeros of the sliced tensor's shape."""
    subscripts = slice_subscripts(node.attrs, node.axes, node.shape, shapes[0])
    return style.helper("unslice", args[0].text, style.shape(node.shape),
                        f"{style.np}s_[{subscript_text(subscripts)}]")


def _concat(style: Style, node: Node, args: list[Code], shapes: list[Shape]) -> Code:
    joined = ", ".join(a.text for a in args)
    return Code(f"{style.np}concatenate(({joined}), axis={node.axes[0]})", ATOM)


def _argmax(style: Style, node: Node, args: list[Code], shapes: list[Shape]) -> Code:
    call = f"{style.np}argmax({args[0].text}, axis={node.axes[0]})"
    # an index as a number of the network's dtype, as every value is
    return Code(f"{call}.astype(DTYPE)" if style.numpy else call, ATOM)


def _onehot(style: Style, node: Node, args: list[Code], shapes: list[Shape]) -> Code:
    return style.helper("onehot", args[0].text, str(node.attrs[0]))


def _take(style: Style, node: Node, args: list[Code], shapes: list[Shape]) -> Code:
    return style.helper("take", args[0].text, args[1].text, f"axis={node.axes[0]}")


def _take_grad(style: Style, node: Node, args: list[Code], shapes: list[Shape]) -> Code:
    return style.helper("scatter_add", args[0].text, args[1].text, style.shape(node.shape),
                        f"axis={node.axes[0]}")


def _conv_options(attrs: tuple) -> list[str]:
    """stride=, padding=, dilation=, groups= where they differ from the defaults."""
    stride, padding, dilation, groups = attrs
    options = [f"{name}={_tuple(value)}" for name, value, default in
               (("stride", stride, 1), ("padding", padding, 0), ("dilation", dilation, 1))
               if any(v != default for v in value)]
    return options + ([f"groups={groups}"] if groups != 1 else [])


def _conv(style: Style, node: Node, args: list[Code], shapes: list[Shape]) -> Code:
    return style.helper("conv", args[0].text, args[1].text, *_conv_options(node.attrs))


def _conv_transpose(style: Style, node: Node, args: list[Code], shapes: list[Shape]) -> Code:
    return style.helper("conv_transpose", args[0].text, args[1].text,
                        style.shape(node.shape), *_conv_options(node.attrs))


def _correlate(style: Style, node: Node, args: list[Code], shapes: list[Shape]) -> Code:
    return style.helper("correlate", args[0].text, args[1].text, style.shape(node.shape),
                        *_conv_options(node.attrs))


def _pool_options(attrs: tuple) -> list[str]:
    kind, kernel, stride, padding = attrs
    options = [] if stride == kernel else [f"stride={_tuple(stride)}"]
    return options + ([f"padding={_tuple(padding)}"] if any(padding) else [])


def _pool(style: Style, node: Node, args: list[Code], shapes: list[Shape]) -> Code:
    kind, kernel = node.attrs[:2]
    return style.helper(f"{kind}_pool", args[0].text, _tuple(kernel),
                        *_pool_options(node.attrs))


def _pool_grad(style: Style, node: Node, args: list[Code], shapes: list[Shape]) -> Code:
    kind, kernel = node.attrs[:2]
    return style.helper(f"{kind}_pool_grad", args[0].text, args[1].text, _tuple(kernel),
                        *_pool_options(node.attrs))


def _tuple(items: tuple) -> str:
    return f"({items[0]},)" if len(items) == 1 else f"({', '.join(map(str, items))})"


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
    Op.PERMUTE: _permute,
    Op.RESHAPE: _reshape,
    Op.SLICE: _slice,
    Op.UNSLICE: _unslice,
    Op.CONCAT: _concat,
    Op.SUM: _reduction("sum"),
    Op.PROD: _reduction("prod"),
    Op.MAX: _reduction("max"),
    Op.ARGMAX: _argmax,
    Op.ONEHOT: _onehot,
    Op.TAKE: _take,
    Op.CONV: _conv,
    Op.CONV_INPUT_GRAD: _conv_transpose,
    Op.CONV_WEIGHT_GRAD: _correlate,
    Op.POOL: _pool,
    Op.POOL_GRAD: _pool_grad,
    Op.TAKE_GRAD: _take_grad,
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
