"""Constant folding: structural ops applied to a constant give a constant.

The backward pass starts from the constant 1 and pushes it through reshapes, broadcasts and
reductions; folding those lets the constant reach (and be simplified into) the elementwise
expressions that use it, so `0.5 * sum((y - t) ** 2)` differentiates to `y - t`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import sympy

from ..graph.functions import count
from ..graph.ir import Graph, GraphBuilder, Node, Op, copy_node, operand, rebuild


def _same_value(node: Node, value: sympy.Expr, source: Node) -> sympy.Expr:
    return value


def _summed(node: Node, value: sympy.Expr, source: Node) -> sympy.Expr:
    return value * count(tuple(source.shape[a] for a in node.axes))


# op -> the constant it gives when its input is the constant `value` (every element equal).
FOLD: dict[Op, Callable[[Node, sympy.Expr, Node], sympy.Expr]] = {
    Op.RESHAPE: _same_value,
    Op.TRANSPOSE: _same_value,
    Op.PERMUTE: _same_value,
    Op.SLICE: _same_value,
    Op.MAX: _same_value,
    Op.SUM: _summed,
}


def _constant(node: Node) -> bool:
    return node.op is Op.ELEMENTWISE and not node.inputs


def fold_constants(graph: Graph) -> Graph:
    def visit(builder: GraphBuilder, node: Node, inputs: tuple[int, ...]) -> int:
        sources = [builder.nodes[i] for i in inputs]
        if node.op is Op.ELEMENTWISE and inputs and all(map(_constant, sources)):
            value = node.expr.xreplace({operand(k): s.expr for k, s in enumerate(sources)})
            return builder.elementwise(value, (), node.shape, lines=node.lines, like=node)
        rule = FOLD.get(node.op)
        if rule is not None:
            source = sources[0]
            if _constant(source):
                value = rule(node, source.expr, source)
                return builder.elementwise(value, (), node.shape, lines=node.lines, like=node)
        return copy_node(builder, node, inputs)

    return rebuild(graph, visit)


def bind_constants(graph: Graph) -> Graph:
    """The graph's named constants (`LR`, `BETA1`) written in as their values, and the
    expressions simplified with them (Adam's `BETA1 * m + (1 - BETA1) * g` is `g` when
    beta1 = 0)."""
    values = graph.constants

    def visit(builder: GraphBuilder, node: Node, inputs: tuple[int, ...]) -> int:
        if node.op is Op.ELEMENTWISE:
            return builder.elementwise(node.expr.xreplace(values), inputs, node.shape,
                                       lines=node.lines, like=node)
        return copy_node(builder, node, inputs)

    return replace(rebuild(graph, visit), constants={})
