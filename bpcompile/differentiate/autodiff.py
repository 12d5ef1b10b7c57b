"""Reverse-mode differentiation over the Graph.

Walking back from the loss, each node's adjoint (the gradient of the loss with respect to
its value) is pushed to its inputs by the node's vector-Jacobian product. ELEMENTWISE nodes
get theirs from SymPy (`symbolic.backward`, the cheapest form of each partial); structural
ops carry theirs in the `VJP` table below. Contributions to an input read several times are
summed; contributions to a broadcast input are summed back to its shape.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import sympy

from ..graph.functions import count
from ..graph.ir import Graph, GraphBuilder, Node, Op, operand
from ..graph.shapes import Shape, broadcast_axes, reduced_shape
from ..passes.fuse import depends_on_params
from .symbolic import ADJOINT, OUT, backward

Contributions = tuple[int | None, ...]
VjpRule = Callable[["Backward", int, Node, int, tuple[bool, ...]], Contributions]


class Backward:
    """Builds the backward nodes after the forward ones, in one builder."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.builder = GraphBuilder.extending(graph)
        self.forward = len(graph.nodes)  # ids below are forward values

    def node(self, op: Op, inputs: tuple[int, ...], shape: Shape, lines=(), **attrs) -> int:
        return self.builder.add(Node(op, inputs, shape, lines=lines, **attrs))

    def elementwise(self, expr: sympy.Expr, inputs, shape: Shape, lines=()) -> int:
        return self.builder.elementwise(expr, inputs, shape, lines=lines)

    def shape(self, i: int) -> Shape:
        return self.builder.nodes[i].shape

    def reshape(self, i: int, shape: Shape, lines=()) -> int:
        return i if self.shape(i) == shape else self.node(Op.RESHAPE, (i,), shape, lines)

    def transpose(self, i: int, lines=()) -> int:
        """i's transpose, written as textbooks simplify it: (W.T).T is W, and (A @ B).T is
        B.T @ A.T (a transposed product, not a product transposed)."""
        node = self.builder.nodes[i]
        if node.op is Op.TRANSPOSE:
            return node.inputs[0]
        if node.op is Op.MATMUL and all(len(self.shape(j)) == 2 for j in node.inputs):
            a, b = node.inputs
            return self.matmul(self.transpose(b, lines), self.transpose(a, lines), lines)
        rows, cols = self.shape(i)
        return self.node(Op.TRANSPOSE, (i,), (cols, rows), lines)

    def matmul(self, a: int, b: int, lines=()) -> int:
        shape = self.shape(a)[:-1] + self.shape(b)[1:]
        return self.node(Op.MATMUL, (a, b), shape, lines)

    def unbroadcast(self, i: int, shape: Shape, lines=()) -> int:
        """Sum `i` over the axes along which a value of `shape` was broadcast to it."""
        axes = broadcast_axes(shape, self.shape(i))
        if not axes:
            return i
        total = self.node(Op.SUM, (i,), reduced_shape(self.shape(i), axes, False), lines,
                          axes=axes)
        return self.reshape(total, shape, lines)

    def expand(self, g: int, node: Node, lines=()) -> int:
        """A reduction's adjoint `g` with the reduced axes back as 1s (to broadcast)."""
        source = self.shape(node.inputs[0])
        return self.reshape(g, reduced_shape(source, node.axes, True), lines)

    def accumulate(self, parts: list[int], shape: Shape, name: str | None,
                   derived: bool = False) -> int:
        if len(parts) == 1:
            total = parts[0]
        else:
            terms = sympy.Add(*(operand(k) for k in range(len(parts))))
            # the sum comes from every line that contributed a part: its statement says so
            lines = tuple(sorted(set().union(*(self.builder.nodes[k].lines for k in parts))))
            total = self.elementwise(terms, parts, shape, lines)
        if name is not None:
            self.name_adjoint(total, name, derived)
        return total

    def name_adjoint(self, i: int, name: str, derived: bool) -> None:
        """Call node `i` the adjoint of `name` (d_name), unless it is a forward value that
        the adjoint merely equals (d(a * b)/da is b when the adjoint is 1)."""
        if i >= self.forward:
            self.builder.note(i, name, (), adjoint=True, derived=derived)


# ------------------------------------------------------------------------ VJP rules


def _elementwise(bw: Backward, i: int, node: Node, g: int, wanted) -> Contributions:
    n = len(node.inputs)
    renaming = {ADJOINT: operand(n), OUT: operand(n + 1)}
    inputs = (*node.inputs, g, i)
    unnamed = [k for k, j in enumerate(node.inputs) if wanted[k]
               and bw.builder.nodes[j].name is None]
    result = []
    for k, want in enumerate(wanted):
        if not want:
            result.append(None)
            continue
        expr = backward(node.expr, k).xreplace(renaming)
        full = bw.elementwise(expr, inputs, node.shape, node.lines)
        if node.name is not None and unnamed == [k]:
            # the gradient with respect to what `name = f(...)` applied f to: d_name_pre
            bw.name_adjoint(full, f"{node.name}_pre", node.derived)
        result.append(bw.unbroadcast(full, bw.shape(node.inputs[k]), node.lines))
    return tuple(result)


def _matmul(bw: Backward, i: int, node: Node, g: int, wanted) -> Contributions:
    a, b = node.inputs
    rank = (len(bw.shape(a)), len(bw.shape(b)))
    lines = node.lines
    da = db = None
    if rank == (2, 2):
        da = wanted[0] and bw.matmul(g, bw.transpose(b, lines), lines)
        db = wanted[1] and bw.matmul(bw.transpose(a, lines), g, lines)
    elif rank == (1, 2):  # [k] @ [k, n] -> [n]
        (k_,), (_, n_) = bw.shape(a), bw.shape(b)
        da = wanted[0] and bw.matmul(b, g, lines)
        db = wanted[1] and bw.matmul(bw.reshape(a, (k_, 1), lines),
                                     bw.reshape(g, (1, n_), lines), lines)
    elif rank == (2, 1):  # [m, k] @ [k] -> [m]
        (m_, k_), _ = bw.shape(a), bw.shape(b)
        da = wanted[0] and bw.matmul(bw.reshape(g, (m_, 1), lines),
                                     bw.reshape(b, (1, k_), lines), lines)
        db = wanted[1] and bw.matmul(bw.transpose(a, lines), g, lines)
    else:  # [k] @ [k] -> []
        da = wanted[0] and bw.elementwise(operand(0) * operand(1), (g, b), bw.shape(a), lines)
        db = wanted[1] and bw.elementwise(operand(0) * operand(1), (g, a), bw.shape(b), lines)
    return (da if wanted[0] else None, db if wanted[1] else None)


def _transpose(bw: Backward, i: int, node: Node, g: int, wanted) -> Contributions:
    return (bw.transpose(g, node.lines),)


def _reshape(bw: Backward, i: int, node: Node, g: int, wanted) -> Contributions:
    return (bw.reshape(g, bw.shape(node.inputs[0]), node.lines),)


def _sum(bw: Backward, i: int, node: Node, g: int, wanted) -> Contributions:
    source = bw.shape(node.inputs[0])
    return (bw.elementwise(operand(0), (bw.expand(g, node, node.lines),), source, node.lines),)


def _max(bw: Backward, i: int, node: Node, g: int, wanted) -> Contributions:
    """To the first arg-max only, as NumPy's argmax picks it."""
    x = node.inputs[0]
    onehot = bw.node(Op.ARGMAX_ONEHOT, (x,), bw.shape(x), node.lines, axes=node.axes)
    return (bw.elementwise(operand(0) * operand(1), (onehot, bw.expand(g, node, node.lines)),
                           bw.shape(x), node.lines),)


def _logsumexp(bw: Backward, i: int, node: Node, g: int, wanted) -> Contributions:
    x = node.inputs[0]
    y, gk = bw.expand(i, node, node.lines), bw.expand(g, node, node.lines)
    expr = operand(2) * sympy.exp(operand(0) - operand(1))
    return (bw.elementwise(expr, (x, y, gk), bw.shape(x), node.lines),)


def _softmax(bw: Backward, i: int, node: Node, g: int, wanted) -> Contributions:
    """dx = y * (g - sum(g * y)) along the axis."""
    shape, lines = node.shape, node.lines
    gy = bw.elementwise(operand(0) * operand(1), (g, i), shape, lines)
    total = bw.node(Op.SUM, (gy,), reduced_shape(shape, node.axes, True), lines,
                    axes=node.axes, keepdims=True)
    return (bw.elementwise(operand(1) * (operand(0) - operand(2)), (g, i, total), shape,
                           lines),)


def _log_softmax(bw: Backward, i: int, node: Node, g: int, wanted) -> Contributions:
    """dx = g - softmax(x) * sum(g) along the axis; softmax(x) is exp(y)."""
    shape, lines = node.shape, node.lines
    total = bw.node(Op.SUM, (g,), reduced_shape(shape, node.axes, True), lines,
                    axes=node.axes, keepdims=True)
    return (bw.elementwise(operand(0) - sympy.exp(operand(1)) * operand(2), (g, i, total),
                           shape, lines),)


def _softmax_xent(bw: Backward, i: int, node: Node, g: int, wanted) -> Contributions:
    """d logits = (p - t) / N, the fused softmax cross-entropy gradient (rows of t sum to 1)."""
    logits, t = node.inputs
    shape, lines = bw.shape(logits), node.lines
    rows = count(shape[:-1])
    d_logits = d_t = None
    if wanted[0]:
        p = bw.node(Op.SOFTMAX, (logits,), shape, lines, axes=node.axes)
        d_logits = bw.elementwise(operand(2) * (operand(0) - operand(1)) / rows, (p, t, g),
                                  shape, lines)
    if wanted[1]:
        log_p = bw.node(Op.LOG_SOFTMAX, (logits,), shape, lines, axes=node.axes)
        d_t = bw.elementwise(-operand(1) * operand(0) / rows, (log_p, g), shape, lines)
    return (d_logits, d_t)


# Ops the backward pass makes but never differentiates: max's gradient mask.
BACKWARD_ONLY = frozenset({Op.ARGMAX_ONEHOT})

VJP: dict[Op, VjpRule] = {
    Op.ELEMENTWISE: _elementwise,
    Op.MATMUL: _matmul,
    Op.TRANSPOSE: _transpose,
    Op.RESHAPE: _reshape,
    Op.SUM: _sum,
    Op.MAX: _max,
    Op.LOGSUMEXP: _logsumexp,
    Op.SOFTMAX: _softmax,
    Op.LOG_SOFTMAX: _log_softmax,
    Op.SOFTMAX_XENT: _softmax_xent,
}


def differentiate(graph: Graph) -> Graph:
    """`graph` with `grads`: for each param, the node computing d loss / d param."""
    assert graph.loss is not None
    bw = Backward(graph)
    varying = depends_on_params(graph)
    seed = bw.elementwise(sympy.Integer(1), (), ())
    adjoints: dict[int, list[int]] = {graph.loss: [seed]}
    for i in reversed(graph.live([graph.loss])):
        if i not in adjoints or i not in varying:
            continue
        node = graph.nodes[i]
        g = bw.accumulate(adjoints[i], node.shape, node.name, node.derived)
        wanted = tuple(j in varying for j in node.inputs)
        if not any(wanted):
            continue
        rule = VJP.get(node.op)
        assert rule is not None, f"no gradient rule for {node.op}"
        for j, part in zip(node.inputs, rule(bw, i, node, g, wanted)):
            if part is not None:
                adjoints.setdefault(j, []).append(part)
    grads = {}
    for name, p in graph.params.items():
        shape = graph.nodes[p].shape
        if p in adjoints:
            grads[name] = bw.accumulate(adjoints[p], shape, name)
        else:  # the loss does not depend on this param: zero, from its declaration line
            grads[name] = bw.elementwise(sympy.Integer(0), (), shape,
                                         lines=graph.nodes[p].lines)
    return replace(graph, nodes=tuple(bw.builder.nodes), grads=grads)
