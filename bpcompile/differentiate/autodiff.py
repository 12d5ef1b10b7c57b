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
from ..graph.ir import Graph, Node, Op, operand
from ..graph.shapes import reduced_shape
from ..passes.fuse import depends_on_params
from .backward import Backward, Contributions
from .moves import MOVES, batched_matmul
from .symbolic import ADJOINT, OUT, backward

VjpRule = Callable[["Backward", int, Node, int, tuple[bool, ...]], Contributions]


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
    if max(rank) > 2:
        return batched_matmul(bw, i, node, g, wanted)
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
BACKWARD_ONLY = frozenset({Op.ARGMAX_ONEHOT, Op.CONV_INPUT_GRAD, Op.CONV_WEIGHT_GRAD,
                           Op.POOL_GRAD})

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
    **MOVES,
}


def differentiate(graph: Graph) -> Graph:
    """`graph` with `grads`: for each param (not buffer), the node computing
    d loss / d param."""
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
    for name, p in graph.trained.items():
        shape = graph.nodes[p].shape
        if p in adjoints:
            grads[name] = bw.accumulate(adjoints[p], shape, name)
        else:  # the loss does not depend on this param: zero, from its declaration line
            grads[name] = bw.elementwise(sympy.Integer(0), (), shape,
                                         lines=graph.nodes[p].lines)
    return replace(graph, nodes=tuple(bw.builder.nodes), grads=grads)
