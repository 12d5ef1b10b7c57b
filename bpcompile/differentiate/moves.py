"""Vector-Jacobian rules of the ops that move or pick elements (permutes, slices, joins,
batched products) and of the product and argmax reductions. Each is the textbook adjoint:
a slice's gradient is its adjoint scattered back into zeros, a join's is the slices of its
adjoint, a permute's is the inverse permute."""

from __future__ import annotations

from collections.abc import Callable

import sympy

from ..graph.ir import Node, Op, operand
from ..graph.shapes import matmul_shape, reduced_shape
from .backward import Backward, Contributions

MoveRule = Callable[[Backward, int, Node, int, tuple[bool, ...]], Contributions]


def batched_matmul(bw: Backward, i: int, node: Node, g: int, wanted) -> Contributions:
    """C = A @ B over a batch: dA = dC @ B^T and dB = A^T @ dC for each matrix, summed over
    the batch dims A or B was broadcast along. A 1-D operand is a row (A) or a column (B)."""
    a, b = node.inputs
    lines = node.lines
    a2 = bw.reshape(a, (1, *bw.shape(a)), lines) if len(bw.shape(a)) == 1 else a
    b2 = bw.reshape(b, (*bw.shape(b), 1), lines) if len(bw.shape(b)) == 1 else b
    g2 = bw.reshape(g, matmul_shape(bw.shape(a2), bw.shape(b2)), lines)
    da = db = None
    if wanted[0]:
        full = bw.matmul(g2, bw.swap_last(b2, lines), lines)
        da = bw.reshape(bw.unbroadcast(full, bw.shape(a2), lines), bw.shape(a), lines)
    if wanted[1]:
        full = bw.matmul(bw.swap_last(a2, lines), g2, lines)
        db = bw.reshape(bw.unbroadcast(full, bw.shape(b2), lines), bw.shape(b), lines)
    return (da, db)


def _permute(bw: Backward, i: int, node: Node, g: int, wanted) -> Contributions:
    inverse = tuple(sorted(range(len(node.axes)), key=lambda a: node.axes[a]))
    return (bw.permute(g, inverse, node.lines),)


def _slice(bw: Backward, i: int, node: Node, g: int, wanted) -> Contributions:
    """The adjoint scattered into zeros at the sliced positions."""
    source = bw.shape(node.inputs[0])
    return (bw.node(Op.UNSLICE, (g,), source, node.lines, axes=node.axes, attrs=node.attrs),)


def _unslice(bw: Backward, i: int, node: Node, g: int, wanted) -> Contributions:
    """The scattered positions read back: the same slice."""
    shape = bw.shape(node.inputs[0])
    return (bw.node(Op.SLICE, (g,), shape, node.lines, axes=node.axes, attrs=node.attrs),)


def _concat(bw: Backward, i: int, node: Node, g: int, wanted) -> Contributions:
    """Each input's part of the adjoint: its slice along the joined axis."""
    (axis,) = node.axes
    parts: list[int | None] = []
    offset = 0
    for j, want in zip(node.inputs, wanted):
        shape = bw.shape(j)
        if want:
            attrs = tuple((offset, 1) if a == axis else (0, 1) for a in range(len(shape)))
            parts.append(bw.node(Op.SLICE, (g,), shape, node.lines, attrs=attrs))
        else:
            parts.append(None)
        offset += shape[axis]
    return tuple(parts)


def _take(bw: Backward, i: int, node: Node, g: int, wanted) -> Contributions:
    """Each gathered row's adjoint added back into the row it came from (a row taken twice
    gets both): a scatter-add. Indices are data: no gradient."""
    table, index = node.inputs
    return (bw.node(Op.TAKE_GRAD, (g, index), bw.shape(table), node.lines, axes=node.axes,
                    attrs=node.attrs), None)


def _take_grad(bw: Backward, i: int, node: Node, g: int, wanted) -> Contributions:
    """A scatter-add's adjoint: the rows it added to, gathered again."""
    source, index = node.inputs
    return (bw.node(Op.TAKE, (g, index), bw.shape(source), node.lines, axes=node.axes,
                    attrs=node.attrs), None)


def _conv(bw: Backward, i: int, node: Node, g: int, wanted) -> Contributions:
    """d x = the transposed convolution of the adjoint with W; d W = the correlation of x
    with the adjoint (summed over the batch)."""
    x, w = node.inputs
    dx = wanted[0] and bw.node(Op.CONV_INPUT_GRAD, (g, w), bw.shape(x), node.lines,
                               attrs=node.attrs)
    dw = wanted[1] and bw.node(Op.CONV_WEIGHT_GRAD, (x, g), bw.shape(w), node.lines,
                               attrs=node.attrs)
    return (dx if wanted[0] else None, dw if wanted[1] else None)


def _pool(bw: Backward, i: int, node: Node, g: int, wanted) -> Contributions:
    x = node.inputs[0]
    return (bw.node(Op.POOL_GRAD, (x, g), bw.shape(x), node.lines, attrs=node.attrs),)


def _argmax(bw: Backward, i: int, node: Node, g: int, wanted) -> Contributions:
    """An index has no slope: nothing flows back, as through a comparison (argmax, and
    class indices made one-hot)."""
    return (None,)


def _prod(bw: Backward, i: int, node: Node, g: int, wanted) -> Contributions:
    """d prod / d x_k is the product of the others: prod / x_k where no factor is 0; where
    one is, that factor's slope is the product of the rest and the others' is 0; with two
    zeros every slope is 0. Computed from the count of zeros and the product of the
    non-zero factors, so no 0 / 0 is ever formed (as PyTorch's prod backward)."""
    x, lines = node.inputs[0], node.lines
    shape = bw.shape(x)
    kept = reduced_shape(shape, node.axes, True)
    zero = sympy.Eq(operand(0), 0)
    is_zero = bw.elementwise(sympy.Piecewise((1, zero), (0, True)), (x,), shape, lines)
    zeros = bw.node(Op.SUM, (is_zero,), kept, lines, axes=node.axes, keepdims=True)
    nonzero = bw.elementwise(sympy.Piecewise((1, zero), (operand(0), True)), (x,), shape,
                             lines)
    rest = bw.node(Op.PROD, (nonzero,), kept, lines, axes=node.axes, keepdims=True)
    xk, count, others, adjoint, divisor = (operand(k) for k in range(5))
    # divided by the factor with its zeros made 1s: equal where it is used (no zeros), and
    # never a division by 0 in the branch a vectorized select computes but does not take
    slope = sympy.Piecewise((adjoint * others / divisor, sympy.Eq(count, 0)),
                            (adjoint * others, sympy.Eq(count, 1) & sympy.Eq(xk, 0)),
                            (0, True))
    inputs = (x, zeros, rest, bw.expand(g, node, lines), nonzero)
    return (bw.elementwise(slope, inputs, shape, lines),)


MOVES: dict[Op, MoveRule] = {
    Op.PERMUTE: _permute,
    Op.SLICE: _slice,
    Op.UNSLICE: _unslice,
    Op.CONCAT: _concat,
    Op.ARGMAX: _argmax,
    Op.ONEHOT: _argmax,
    Op.TAKE: _take,
    Op.CONV: _conv,
    Op.POOL: _pool,
    Op.TAKE_GRAD: _take_grad,  # class indices are data: nothing to differentiate
    Op.PROD: _prod,
}
