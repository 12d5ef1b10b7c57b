"""Stability rewrites: compute what the math defines in a form that cannot overflow.

Two kinds, both tables. Structural: `log` of a SOFTMAX node reads a LOG_SOFTMAX node
instead, `log` of a SUM of `exp` reads a LOGSUMEXP node (both max-shifted). Elementwise:
the SymPy rules of `symbolic.STABILITY_RULES` (`log(sigmoid(z)) = -softplus(-z)`, ...), tried
on each node with its elementwise producers substituted in, since `p = sigmoid(z)` and
`log(1 - p)` are usually separate statements.
"""

from __future__ import annotations

from collections.abc import Callable

import sympy
from sympy.codegen.cfunctions import log1p

from ..graph.functions import Logaddexp, Sigmoid, Softplus
from ..graph.ir import (
    Graph,
    GraphBuilder,
    Node,
    Op,
    copy_node,
    inline,
    operand,
    rebuild,
)


def _log_of_sigmoid(expr: sympy.Expr) -> sympy.Expr | None:
    """log(sigmoid(u)) = -softplus(-u)."""
    if isinstance(expr, sympy.log) and isinstance(expr.args[0], Sigmoid):
        return -Softplus(-expr.args[0].args[0])
    return None


def _log_of_one_minus_sigmoid(expr: sympy.Expr) -> sympy.Expr | None:
    """log(1 - sigmoid(u)) = -softplus(u)."""
    if not isinstance(expr, sympy.log):
        return None
    rest = expr.args[0] - 1
    if rest.could_extract_minus_sign() and isinstance(-rest, Sigmoid):
        return -Softplus((-rest).args[0])
    return None


def _log_one_plus_exp(expr: sympy.Expr) -> sympy.Expr | None:
    """log(1 + exp(u)) = softplus(u)."""
    if isinstance(expr, sympy.log):
        rest = expr.args[0] - 1
        if isinstance(rest, sympy.exp):
            return Softplus(rest.args[0])
    return None


def _reciprocal_one_plus_exp(expr: sympy.Expr) -> sympy.Expr | None:
    """1 / (1 + exp(-u)) = sigmoid(u), so a hand-written sigmoid gets sigmoid's rewrites."""
    if expr.is_Pow and expr.exp == -1:
        rest = expr.base - 1
        if isinstance(rest, sympy.exp):
            return Sigmoid(-rest.args[0])
    return None


def _log1p_of_exp(expr: sympy.Expr) -> sympy.Expr | None:
    """log1p(exp(u)) = softplus(u)."""
    if isinstance(expr, log1p) and isinstance(expr.args[0], sympy.exp):
        return Softplus(expr.args[0].args[0])
    return None


def _log_of_two_exps(expr: sympy.Expr) -> sympy.Expr | None:
    """log(exp(a) + exp(b)) = logaddexp(a, b)."""
    if isinstance(expr, sympy.log) and expr.args[0].is_Add and len(expr.args[0].args) == 2:
        first, second = expr.args[0].args
        if isinstance(first, sympy.exp) and isinstance(second, sympy.exp):
            return Logaddexp(first.args[0], second.args[0])
    return None


STABILITY_RULES: tuple[Callable[[sympy.Expr], sympy.Expr | None], ...] = (
    _reciprocal_one_plus_exp,
    _log_of_sigmoid,
    _log_of_one_minus_sigmoid,
    _log_one_plus_exp,
    _log1p_of_exp,
    _log_of_two_exps,
)


def stabilize(expr: sympy.Expr) -> tuple[sympy.Expr, int]:
    """Apply STABILITY_RULES bottom-up until none fires; return the result and how many fired."""
    fired = 0

    def visit(e: sympy.Expr) -> sympy.Expr:
        nonlocal fired
        if e.args:
            e = e.func(*(visit(a) for a in e.args))
        for rule in STABILITY_RULES:
            new = rule(e)
            if new is not None:
                fired += 1
                return visit(new)
        return e

    return visit(expr), fired


INLINE_DEPTH = 3  # how many producers deep to look for a rule's pattern


def _log_softmax(builder: GraphBuilder, producer: Node) -> int | None:
    if producer.op is not Op.SOFTMAX:
        return None
    return builder.add(Node(Op.LOG_SOFTMAX, producer.inputs, producer.shape,
                            axes=producer.axes, lines=producer.lines))


def _logsumexp(builder: GraphBuilder, producer: Node) -> int | None:
    if producer.op is not Op.SUM:
        return None
    exponent = builder.nodes[producer.inputs[0]]
    if exponent.op is not Op.ELEMENTWISE or exponent.expr != sympy.exp(operand(0)):
        return None
    x = exponent.inputs[0]
    if builder.nodes[x].shape != exponent.shape:  # exp of a broadcast value: leave it
        return None
    if len(producer.axes) not in (1, len(exponent.shape)):
        # some axes but not all: one LOGSUMEXP per axis, innermost first, as the language
        # lowers logsumexp(x, axis=[...]) (the kernels work along one axis or all)
        keep = producer.keepdims
        shape = exponent.shape
        for axis in reversed(producer.axes):
            shape = tuple(1 if a == axis else d for a, d in enumerate(shape)) if keep \
                else shape[:axis] + shape[axis + 1:]
            x = builder.add(Node(Op.LOGSUMEXP, (x,), shape, axes=(axis,), keepdims=keep,
                                 lines=producer.lines))
        return x
    return builder.add(Node(Op.LOGSUMEXP, (x,), producer.shape, axes=producer.axes,
                            keepdims=producer.keepdims, lines=producer.lines))


# log(producer) -> a stable node computing the same, keyed by what the producer is.
LOG_OF: tuple[Callable[[GraphBuilder, Node], int | None], ...] = (_log_softmax, _logsumexp)


def _structural(builder: GraphBuilder, expr: sympy.Expr,
                inputs: tuple[int, ...]) -> tuple[sympy.Expr, tuple[int, ...]]:
    for k, j in enumerate(inputs):
        log_of_input = sympy.log(operand(k))
        if not expr.has(log_of_input):
            continue
        for rule in LOG_OF:
            stable = rule(builder, builder.nodes[j])
            if stable is not None:
                symbol = operand(len(inputs))
                expr, inputs = expr.xreplace({log_of_input: symbol}), inputs + (stable,)
                break
    return expr, inputs


def _inlined(builder: GraphBuilder, expr: sympy.Expr, inputs: tuple[int, ...], k: int,
             depth: int, protect: bool = True) -> tuple[sympy.Expr, tuple[int, ...]]:
    """`expr` with input k's elementwise producer substituted, `depth` producers deep; with
    `protect`, a value before an activation (`y_pre`) stays a value."""
    producer = builder.nodes[inputs[k]]
    if producer.op is not Op.ELEMENTWISE or depth == 0 or (
            protect and _before_activation(producer)):
        return expr, inputs
    if producer.expr.has(sympy.Piecewise) and expr.has(sympy.Piecewise):
        # A piecewise substituted into another's conditions makes SymPy rewrite them as
        # sets: seconds per node for nested minimum/maximum (most of the random networks'
        # compile time), and no stability pattern completes through a piecewise.
        return expr, inputs
    inner, inner_inputs = producer.expr, producer.inputs
    for j in producer.inputs:
        # Each substitution renumbers the operands and may merge an input read twice (as in
        # `(z > 0) * z`), so find each original input by node id, not by position.
        if j in inner_inputs:
            inner, inner_inputs = _inlined(builder, inner, inner_inputs,
                                           inner_inputs.index(j), depth - 1, protect)
    return inline(expr, inputs, k, inner, inner_inputs)


def _before_activation(node: Node) -> bool:
    """A value before an activation (`y_pre`) is left a value: a rewrite of
    `log(sigmoid(y_pre))` reads it, so the loss's gradient is its adjoint, `d_y_pre`."""
    return node.derived and node.name is not None and node.name.endswith("_pre")


def _elementwise(builder: GraphBuilder, node: Node, inputs: tuple[int, ...]) -> int:
    expr, inputs = _structural(builder, node.expr, inputs)
    expr, _ = stabilize(expr)
    for j in tuple(inputs):
        if j not in inputs:  # already substituted along with another producer
            continue
        # values before activations kept first (log(sigmoid(y_pre)) reads y_pre, so the
        # loss's gradient is d_y_pre); then not, for a statement that is itself the unstable
        # pattern (`y = log1p(exp(x))` was split into y_pre = exp(x), y = log1p(y_pre))
        for protect in (True, False):
            candidate, candidate_inputs = _inlined(builder, expr, inputs, inputs.index(j),
                                                   INLINE_DEPTH, protect)
            stable, fired = stabilize(candidate)
            if fired:  # the producer's expression completed a pattern: keep it substituted
                expr, inputs = stable, candidate_inputs
                break
    return builder.elementwise(expr, inputs, node.shape, lines=node.lines, like=node)


def stabilize_graph(graph: Graph) -> Graph:
    """Rewrite unstable patterns; producers no longer read disappear with dead code."""

    def visit(builder: GraphBuilder, node: Node, inputs: tuple[int, ...]) -> int:
        if node.op is Op.ELEMENTWISE:
            return _elementwise(builder, node, inputs)
        return copy_node(builder, node, inputs)

    return rebuild(graph, visit)
