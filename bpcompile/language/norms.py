"""Normalization: `normalize(x, axis=-1, eps=1e-5)`, the plain differentiable form
(x - mean) / sqrt(var + eps) with the population variance, and the layer
`h = layernorm(x, eps=1e-5)`, which normalizes over the last axis and declares `h.gamma` and
`h.beta` (as torch.nn.LayerNorm). Both are built from the graph's sums and elementwise nodes,
so SymPy and the structural rules derive their gradients as they do any other's."""

from __future__ import annotations

import sympy

from ..errors import BPShapeError, BPTypeError
from ..graph.functions import count
from ..graph.ir import Op, operand
from ..graph.network import Init
from ..graph.shapes import format_shape, reduced_shape
from . import syntax as S
from .arguments import axes_option, bind, number_option, tensor_argument
from .context import Lowering
from .values import Tensor, Value


def centered_squares(lw: Lowering, x: Tensor, axes: tuple[int, ...]) -> tuple[int, int]:
    """(mean, squares): the mean of x over `axes` (kept as size-1 axes) and (x - mean)**2,
    as nodes; var and the norms sum the squares."""
    n = count(tuple(x.shape[a] for a in axes))
    kept = reduced_shape(x.shape, axes, True)
    total = lw.node(Op.SUM, (x.node,), kept, axes=axes, keepdims=True).node
    mean = lw.builder.elementwise(operand(0) / n, (total,), kept, lines=(lw.line,))
    squares = lw.builder.elementwise((operand(0) - operand(1)) ** 2, (x.node, mean), x.shape,
                                     lines=(lw.line,))
    return mean, squares


def normalized(lw: Lowering, x: Tensor, axes: tuple[int, ...], eps: sympy.Expr) -> Tensor:
    """(x - mean) / sqrt(var + eps) over `axes`, the variance the population's."""
    mean, squares = centered_squares(lw, x, axes)
    kept = reduced_shape(x.shape, axes, True)
    n = count(tuple(x.shape[a] for a in axes))
    total = lw.node(Op.SUM, (squares,), kept, axes=axes, keepdims=True).node
    u, m, s = operand(0), operand(1), operand(2)
    node = lw.builder.elementwise((u - m) / sympy.sqrt(s / n + eps), (x.node, mean, total),
                                  x.shape, lines=(lw.line,))
    return Tensor(node, x.shape)


def _eps(lw: Lowering, expr: object, what: str) -> sympy.Expr:
    value = number_option(lw, expr, f"{what}'s eps")
    if not value >= 0:
        raise lw.error(BPTypeError, f"{what}'s eps must be 0 or more, not {value}", expr.pos)
    return value


def normalize_call(lw: Lowering, call: S.Call) -> Value:
    bound = bind(lw, call, ("x", "axis", "eps"),
                 {"axis": S.Number("-1", call.pos), "eps": S.Number("1e-5", call.pos)})
    x = tensor_argument(lw, bound["x"])
    if not x.shape:
        raise lw.error(BPShapeError, "normalize() needs a tensor of rank 1 or more, not a "
                       "scalar", call.pos)
    axes = axes_option(lw, bound["axis"], len(x.shape), "normalize()", call.pos)
    return normalized(lw, x, tuple(range(len(x.shape))) if axes is None else axes,
                      _eps(lw, bound["eps"], "normalize()"))


def layernorm(lw: Lowering, call: S.Call, name: str) -> Value:
    """`name = layernorm(x, eps=1e-5)`: gamma * normalize(x, -1, eps) + beta, with the
    params name.gamma = ones and name.beta = zeros over x's last axis."""
    bound = bind(lw, call, ("x", "eps"), {"eps": S.Number("1e-5", call.pos)})
    x = tensor_argument(lw, bound["x"])
    if not x.shape or not isinstance(x.shape[-1], int):
        raise lw.error(BPShapeError, "layernorm() needs a fixed size along the last axis, but "
                       f"{S.expr_text(bound['x'])} is {format_shape(x.shape)}", call.pos)
    features = (x.shape[-1],)
    gamma = lw.add_param(f"{name}.gamma", features, Init("ones"), call.pos)
    beta = lw.add_param(f"{name}.beta", features, Init("zeros"), call.pos)
    y = normalized(lw, x, (len(x.shape) - 1,), _eps(lw, bound["eps"], "layernorm()"))
    node = lw.builder.elementwise(operand(0) * operand(1) + operand(2),
                                  (y.node, gamma, beta), x.shape, lines=(lw.line,))
    return Tensor(node, x.shape)
