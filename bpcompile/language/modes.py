"""What depends on the mode: `dropout(x, p)` and the layer `h = batchnorm(x, momentum=0.1,
eps=1e-5)`. A program is lowered once per mode (`Lowering.training`), so each mode's graph
holds only its own arithmetic; reading the mode marks the network modal, and only then is
the second mode compiled at all.

Dropout's mask is an input of the training graph that the runtime draws before each call
from a counter-based generator (runtime/randomness.py): the graph multiplies by it, and
SymPy derives the gradient (the same mask times the adjoint) as for any product.

Batch norm is torch.nn.BatchNorm1d/2d: in training mode the batch's mean and biased
variance over every axis but the channels (axis 1), and new running statistics
`(1 - momentum) * running + momentum * batch` (the variance unbiased) that `step` writes
into the buffers; in inference mode the running statistics.
"""

from __future__ import annotations

import sympy

from ..errors import BPShapeError, BPTypeError
from ..graph.functions import count
from ..graph.ir import Op, operand
from ..graph.network import Init
from ..graph.shapes import format_shape, reduced_shape
from . import syntax as S
from .arguments import bind, number_option, tensor_argument
from .context import Lowering
from .norms import centered_squares, normalized
from .values import Tensor, Value


def _fraction(lw: Lowering, expr: object, what: str, top_open: bool = False) -> float:
    """An option in [0, 1] (or [0, 1) with `top_open`), known without data."""
    value = number_option(lw, expr, what)
    if not (0 <= value <= 1) or (top_open and value == 1):
        allowed = "from 0 up to, not including, 1" if top_open else "from 0 to 1"
        raise lw.error(BPTypeError, f"{what} must be {allowed}, not {value}",
                       getattr(expr, "pos", None))
    return float(value)


def dropout_call(lw: Lowering, call: S.Call) -> Value:
    """`dropout(x, p)`: x times a fresh mask of 0 (probability p) and 1 / (1 - p) in
    training mode; x itself in inference mode."""
    bound = bind(lw, call, ("x", "p"))
    x = tensor_argument(lw, bound["x"])
    rate = _fraction(lw, bound["p"], "dropout()'s p")
    lw.modal = True
    if not lw.training or rate == 0:
        return x
    mask = lw.add_mask(x.shape, rate, call.pos)
    node = lw.builder.elementwise(operand(0) * operand(1), (x.node, mask), x.shape,
                                  lines=(lw.line,))
    return Tensor(node, x.shape)


def batchnorm(lw: Lowering, call: S.Call, name: str) -> Value:
    """`name = batchnorm(x, momentum=0.1, eps=1e-5)` over x[N, C, ...]: declares the params
    name.gamma (ones) and name.beta (zeros) and the buffers name.running_mean (zeros) and
    name.running_var (ones), each of size C."""
    bound = bind(lw, call, ("x", "momentum", "eps"),
                 {"momentum": S.Number("0.1", call.pos), "eps": S.Number("1e-5", call.pos)})
    x = tensor_argument(lw, bound["x"])
    if len(x.shape) < 2 or not isinstance(x.shape[1], int):
        raise lw.error(BPShapeError, "batchnorm() needs x[N, C] or x[N, C, ...] with a fixed "
                       f"number of channels C, but {S.expr_text(bound['x'])} is "
                       f"{format_shape(x.shape)}", call.pos)
    momentum = sympy.Rational(repr(_fraction(lw, bound["momentum"], "batchnorm()'s momentum")))
    eps = number_option(lw, bound["eps"], "batchnorm()'s eps")
    if not eps >= 0:
        raise lw.error(BPTypeError, f"batchnorm()'s eps must be 0 or more, not {eps}",
                       bound["eps"].pos)
    channels = (x.shape[1],)
    gamma = lw.add_param(f"{name}.gamma", channels, Init("ones"), call.pos)
    beta = lw.add_param(f"{name}.beta", channels, Init("zeros"), call.pos)
    running_mean = lw.add_buffer(f"{name}.running_mean", channels, Init("zeros"), call.pos)
    running_var = lw.add_buffer(f"{name}.running_var", channels, Init("ones"), call.pos)
    lw.modal = True
    axes = (0, *range(2, len(x.shape)))
    per_channel = (x.shape[1], *(1,) * (len(x.shape) - 2))  # broadcasts against x
    gamma, beta, running_mean, running_var = (
        lw.node(Op.RESHAPE, (v,), per_channel).node if len(x.shape) > 2 else v
        for v in (gamma, beta, running_mean, running_var))
    values = count(tuple(x.shape[a] for a in axes))
    if values.is_Integer and values < 2 and lw.training:
        raise lw.error(BPShapeError, "batchnorm() needs more than one value per channel to "
                       f"normalize with in training mode, but {S.expr_text(bound['x'])} is "
                       f"{format_shape(x.shape)}", call.pos)
    u, m, v, g, b = (operand(k) for k in range(5))
    if not lw.training:
        node = lw.builder.elementwise((u - m) / sympy.sqrt(v + eps) * g + b,
                                      (x.node, running_mean, running_var, gamma, beta),
                                      x.shape, lines=(lw.line,))
        return Tensor(node, x.shape)
    y = normalized(lw, x, axes, eps)
    node = lw.builder.elementwise(operand(0) * operand(1) + operand(2), (y.node, gamma, beta),
                                  x.shape, lines=(lw.line,))
    _update_running(lw, name, x, axes, momentum)
    lw.batch_counts.append((tuple(x.shape[a] for a in axes), lw.line))
    return Tensor(node, x.shape)


def _update_running(lw: Lowering, name: str, x: Tensor, axes: tuple[int, ...],
                    momentum: sympy.Rational) -> None:
    """The buffers' values after a training step: each running statistic moved `momentum`
    of the way to the batch's (its variance unbiased, as torch's running_var)."""
    n = count(tuple(x.shape[a] for a in axes))
    mean, squares = centered_squares(lw, x, axes)  # the nodes `normalized` made
    kept = reduced_shape(x.shape, axes, True)
    total = lw.node(Op.SUM, (squares,), kept, axes=axes, keepdims=True).node
    channels = (x.shape[1],)
    old, new = operand(0), operand(1)
    batch = {"running_mean": lw.node(Op.RESHAPE, (mean,), channels).node,
             "running_var": lw.builder.elementwise(operand(0) / (n - 1),
                                                   (lw.node(Op.RESHAPE, (total,), channels).node,),
                                                   channels, lines=(lw.line,))}
    for stat, value in batch.items():
        buffer = lw.lookup(f"{name}.{stat}")
        lw.buffer_updates[f"{name}.{stat}"] = lw.builder.elementwise(
            (1 - momentum) * old + momentum * new, (buffer, value), channels, lines=(lw.line,))
