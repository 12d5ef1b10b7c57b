"""Split out of an elementwise node each transcendental subterm that its own derivative needs.

A def's body or a dense layer's activation arrives as one node: swish is `u * sigmoid(u)`.
Its derivative, `sigmoid(u) * (1 + u * (1 - sigmoid(u)))`, needs `sigmoid(u)` again, so as one
node the backward pass would evaluate sigmoid a second time. Given a node of its own,
`sigmoid(u)` is a value the backward reads. The fusion pass that follows merges back every
split that does not pay for itself, by the same transcendental count.
"""

from __future__ import annotations

import sympy

from ..differentiate.symbolic import partial, transcendental_terms
from ..graph.ir import Graph, GraphBuilder, Node, Op, copy_node, operand, rebuild
from ..graph.shapes import broadcast


def _needed(expr: sympy.Expr, arity: int) -> list[sympy.Expr]:
    """Transcendental subterms of `expr`, other than `expr` itself, that its partials
    evaluate; outermost first, so an inner one is split out of the outer one's node."""
    inside = transcendental_terms(expr) - {expr}
    if not inside:
        return []
    needed: set[sympy.Expr] = set()
    for k in range(arity):
        needed |= transcendental_terms(partial(expr, k)) & inside
    return sorted(needed, key=lambda e: (-sympy.count_ops(e), sympy.default_sort_key(e)))


def _split(builder: GraphBuilder, expr: sympy.Expr, inputs: tuple[int, ...], node: Node) -> int:
    for term in _needed(expr, len(inputs)):
        if not expr.has(term):  # went into the node of an enclosing term split before it
            continue
        used = [j for k, j in enumerate(inputs) if term.has(operand(k))]
        shape = broadcast(*(builder.nodes[j].shape for j in used))
        value = _split(builder, term, inputs, Node(Op.ELEMENTWISE, inputs, shape,
                                                    lines=node.lines))
        expr = expr.xreplace({term: operand(len(inputs))})
        inputs = inputs + (value,)
    return builder.elementwise(expr, inputs, node.shape, node.name, node.lines)


def split_transcendentals(graph: Graph) -> Graph:
    """Only a graph with a loss is differentiated; a forward-only one is left as it is."""
    if graph.loss is None:
        return graph

    def visit(builder: GraphBuilder, node: Node, inputs: tuple[int, ...]) -> int:
        if node.op is Op.ELEMENTWISE and inputs:
            return _split(builder, node.expr, inputs, node)
        return copy_node(builder, node, inputs)

    return rebuild(graph, visit)
