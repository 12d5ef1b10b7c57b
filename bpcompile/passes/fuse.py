"""Fuse elementwise chains: an ELEMENTWISE node read by exactly one other ELEMENTWISE node of
the same shape is substituted into it, so the pair becomes one SymPy expression (one loop in
LLVM, one line of NumPy). Constants are always substituted. With `respect_names`, values the
`.bp` file named (and their adjoints, `d_h`; not the names the compiler derives, `h_pre`)
stay values, so generated code keeps the
statements the user wrote.

A merge is refused when it would make the backward pass evaluate more transcendentals than
the two nodes did apart: in `sigmoid(a) * tanh(b)` keeping `sigmoid(a)` and `tanh(b)` as
values lets the backward read them instead of computing exp and tanh again.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import sympy

from ..differentiate.symbolic import backward_transcendentals
from ..graph.ir import Graph, Node, Op, inline, operand, rebuild


def uses(graph: Graph) -> Counter[int]:
    """How often each node is read, by other nodes or as one of the graph's results."""
    counts: Counter[int] = Counter(graph.roots())
    for node in graph.nodes:
        counts.update(node.inputs)
    return counts


def depends_on_params(graph: Graph) -> set[int]:
    """Nodes whose value changes with some param: only their inputs need gradients (a
    buffer's value is data to the loss: it has no gradient)."""
    result = set(graph.trained.values())
    for i, node in enumerate(graph.nodes):
        if any(j in result for j in node.inputs):
            result.add(i)
    return result


def fuse(graph: Graph, differentiate: bool = True, respect_names: bool = True) -> Graph:
    """Merge elementwise producers into consumers. With `differentiate`, refuse merges that
    cost the backward pass transcendentals (the graph will be differentiated later)."""
    graph = rebuild(graph)  # CSE first, so use counts are exact
    counts = uses(graph)
    varying = depends_on_params(graph) if differentiate else set()
    forward = _forward_values(graph)
    merged: dict[int, Node] = {}

    for i, node in enumerate(graph.nodes):
        if node.op is not Op.ELEMENTWISE:
            continue
        expr, inputs = node.expr, node.inputs
        k = 0
        while k < len(inputs):
            j = inputs[k]
            producer = merged.get(j, graph.nodes[j])
            if _can_merge(producer, node, counts[j], respect_names):
                new_expr, new_inputs = inline(expr, inputs, k, producer.expr, producer.inputs)
                new_expr = _selected(new_expr)
                if not varying or _cheap_enough(
                    (expr, inputs), (producer.expr, producer.inputs), (new_expr, new_inputs),
                    varying,
                ):
                    expr, inputs = new_expr, new_inputs
                    k = 0  # operands were renumbered
                    continue
            k += 1
        lines = tuple(sorted(set(node.lines).union(
            *(graph.nodes[j].lines for j in node.inputs if j not in inputs))))
        named = dict(name=node.name, adjoint=node.adjoint, derived=node.derived)
        if i not in forward and _is_copy_of(graph, expr, inputs, node.shape, forward):
            # An adjoint that merging reduced to a forward value (d(a * b)/da is b when the
            # adjoint is 1) is that value: it must not carry the adjoint's name or lines.
            named, lines = dict(name=None), ()
        merged[i] = Node(Op.ELEMENTWISE, inputs, node.shape, expr=expr, lines=lines, **named)

    replaced = replace(graph, nodes=tuple(merged.get(i, n) for i, n in enumerate(graph.nodes)))
    return rebuild(replaced)


def _selected(expr: sympy.Expr) -> sympy.Expr:
    """Products and sums of piecewise terms as one piecewise: `(x >= 0) / (2 * sqrt(x))`
    beside `where(x >= 0, 0, -1)` becomes `where(x >= 0, 1 / (2 * sqrt(x)), -1)`, which
    selects, so the NaN of the branch not taken (sqrt of a negative) cannot reach the
    result through `0 * NaN`. Kept only where folding does not blow the expression up."""
    if not expr.has(sympy.Piecewise):
        return expr
    folded = sympy.piecewise_fold(expr)
    if sympy.count_ops(folded) > 2 * sympy.count_ops(expr) + 10:
        return expr
    return folded


def _forward_values(graph: Graph) -> set[int]:
    """The nodes the outputs and the loss are computed from."""
    roots = [*graph.outputs.values(), *([] if graph.loss is None else [graph.loss])]
    return set(graph.live(roots))


def _is_copy_of(graph: Graph, expr, inputs: tuple[int, ...], shape, values: set[int]) -> bool:
    """Is `expr` over `inputs` just one of `values`, unchanged and of the same shape?"""
    return (len(inputs) == 1 and expr == operand(0) and inputs[0] in values
            and graph.nodes[inputs[0]].shape == shape)


def _can_merge(producer: Node, consumer: Node, readers: int, respect_names: bool) -> bool:
    if producer.op is not Op.ELEMENTWISE:
        return False
    if not producer.inputs:  # a constant: free to copy anywhere
        return True
    if respect_names and producer.name is not None and not producer.derived:
        return False
    return readers == 1 and producer.shape == consumer.shape


def _cheap_enough(consumer, producer, merged, varying: set[int]) -> bool:
    """Does the merged node's backward evaluate no more transcendentals than the two apart?"""

    def price(part) -> int:
        expr, inputs = part
        wanted = tuple(k for k, j in enumerate(inputs) if j in varying)
        return backward_transcendentals(expr, wanted)

    producer_needed = price(producer) if any(j in varying for j in producer[1]) else 0
    return price(merged) <= price(consumer) + producer_needed
