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
from ..graph.naming import function_word
from ..graph.shapes import Shape, broadcast


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


def _split(builder: GraphBuilder, expr: sympy.Expr, inputs: tuple[int, ...], node: Node,
           owner: str | None) -> int:
    """`node` (`expr` over `inputs`) with its needed transcendentals as values of their own,
    named after the value `owner` they are computed for (h_sigmoid)."""
    expr, inputs = _split_argument(builder, expr, inputs, node, owner)
    for term in _needed(expr, len(inputs)):
        if not expr.has(term):  # went into the node of an enclosing term split before it
            continue
        name = None if owner is None else f"{owner}_{function_word(term) or 'part'}"
        part = Node(Op.ELEMENTWISE, inputs, _shape(builder, term, inputs), lines=node.lines,
                    name=name, derived=True)
        value = _split(builder, term, inputs, part, owner)
        expr = expr.xreplace({term: operand(len(inputs))})
        inputs = inputs + (value,)
    return builder.elementwise(expr, inputs, node.shape, lines=node.lines, like=node)


def _split_argument(builder: GraphBuilder, expr: sympy.Expr, inputs: tuple[int, ...],
                    node: Node, owner: str | None) -> tuple[sympy.Expr, tuple[int, ...]]:
    """In `z * sigmoid(z)` with z = x @ W + b, z itself is a value of its own (h_pre): both
    the activation and the rest of the statement read it, and so does its adjoint, which
    then is one value (d_h_pre) that the gradients of W and b both read."""
    for term in _needed(expr, len(inputs)):
        if len(term.args) != 1 or term.args[0].is_Symbol or term.args[0].is_Number:
            continue
        argument = term.args[0]
        if not expr.xreplace({term: sympy.Dummy()}).has(argument):
            continue  # only the activation reads it: it stays inside
        name = None if owner is None else f"{owner}_pre"
        value = builder.elementwise(argument, inputs, _shape(builder, argument, inputs),
                                    name=name, lines=node.lines, derived=True)
        return expr.xreplace({argument: operand(len(inputs))}), inputs + (value,)
    return expr, inputs


def _shape(builder: GraphBuilder, term: sympy.Expr, inputs: tuple[int, ...]) -> Shape:
    """The shape of `term` over `inputs`: its operands' shapes broadcast together."""
    used = [j for k, j in enumerate(inputs) if term.has(operand(k))]
    return broadcast(*(builder.nodes[j].shape for j in used))


def split_transcendentals(graph: Graph) -> Graph:
    """Only a graph with a loss is differentiated; a forward-only one is left as it is."""
    if graph.loss is None:
        return graph

    def visit(builder: GraphBuilder, node: Node, inputs: tuple[int, ...]) -> int:
        if node.op is Op.ELEMENTWISE and inputs:
            return _split(builder, node.expr, inputs, node, node.name)
        return copy_node(builder, node, inputs)

    return rebuild(graph, visit)
