"""Read forward values where the backward pass would compute them again.

After stability rewrites a loss to read a pre-activation (`binary_cross_entropy(y, t)` with
`y = sigmoid(y_pre)` reads `y_pre`), the loss's gradient is `(sigmoid(y_pre) - t) / N`:
the forward value `y`, computed a second time. Reading `y` instead costs the same (the
sigmoid is computed once either way) and reads as textbooks write it: `(y - t) / N`.
"""

from __future__ import annotations

import sympy

from ..differentiate.symbolic import transcendental_terms
from ..graph.ir import (
    Graph,
    GraphBuilder,
    Node,
    Op,
    canonical,
    copy_node,
    operand,
    rebuild,
)
from ..graph.shapes import Shape, broadcast

Key = tuple[sympy.Expr, tuple[int, ...], Shape]


def reuse_forward_values(graph: Graph) -> Graph:
    if graph.loss is None:
        return graph
    roots = [graph.loss, *graph.outputs.values()]
    forward = {graph.nodes[i].key() for i in graph.live(roots)}
    values: dict[Key, int] = {}  # a forward elementwise value, by what it computes

    def visit(builder: GraphBuilder, node: Node, inputs: tuple[int, ...]) -> int:
        if node.op is not Op.ELEMENTWISE or not inputs:
            return copy_node(builder, node, inputs)
        if node.key() in forward:
            new = copy_node(builder, node, inputs)
            if builder.nodes[new].op is Op.ELEMENTWISE:
                made = builder.nodes[new]
                values[(made.expr, made.inputs, made.shape)] = new
            return new
        expr = node.expr
        for term in sorted(transcendental_terms(expr), key=sympy.count_ops, reverse=True):
            if not expr.has(term):  # inside a larger term already read
                continue
            found = values.get(_key(builder, term, inputs))
            if found is not None:
                expr = expr.xreplace({term: operand(len(inputs))})
                inputs = inputs + (found,)
        return builder.elementwise(expr, inputs, node.shape, lines=node.lines, like=node)

    return rebuild(graph, visit)


def _key(builder: GraphBuilder, term: sympy.Expr, inputs: tuple[int, ...]) -> Key:
    """What `term` over `inputs` computes, as a forward node's key would say it."""
    expr, order = canonical(term, inputs)
    shape = broadcast(*(builder.nodes[j].shape for j in order)) if order else ()
    return expr, order, shape
