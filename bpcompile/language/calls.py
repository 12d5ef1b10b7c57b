"""Built-in calls and `@`: shape rules, and the nodes each one lowers to.

`CALLS` is the table the lowerer dispatches on; each handler takes the lowering context and
the call.
"""

from __future__ import annotations

from collections.abc import Callable

import sympy

from ..errors import BPNameError, BPShapeError, BPTypeError
from ..graph.functions import Softplus, count
from ..graph.ir import Op, operand
from ..graph.shapes import Shape, format_shape, reduced_shape
from . import syntax as S
from .arguments import axis_option, bind, bool_option, number_option, tensor_argument
from .builtins import ELEMENTWISE
from .context import Lowering
from .layers import dense_elsewhere
from .values import Scalar, Tensor, Value

# --------------------------------------------------------------------- elementwise


def elementwise_call(lw: Lowering, call: S.Call) -> Value:
    builtin = ELEMENTWISE[call.func]
    tensor_names = builtin.args
    names = tensor_names + tuple(builtin.options)
    bound = bind(lw, call, names, dict(builtin.options))
    options = [number_option(lw, bound[n], f"{call.func}'s {n}") for n in builtin.options]
    operands = [bound[n] for n in tensor_names]
    values = [lw.expression(e) for e in operands]
    return lw.combine(call.func, lambda *a: builtin.make(*a, *options), values, operands,
                      call.pos)


def def_call(lw: Lowering, call: S.Call) -> Value:
    symbols, body = lw.defs[call.func]
    if call.keywords:
        raise lw.error(BPTypeError, f"{call.func}() takes no keyword arguments",
                       call.keywords[0].pos)
    if len(call.args) != len(symbols):
        raise lw.error(
            BPTypeError,
            f"{call.func}() takes {len(symbols)} arguments ({len(call.args)} given)", call.pos,
        )
    values = [lw.expression(e) for e in call.args]
    make = lambda *a: body.xreplace(dict(zip(symbols, a)))  # noqa: E731
    return lw.combine(call.func, make, values, list(call.args), call.pos)


# ----------------------------------------------------------------------- reductions


def _reduce(lw: Lowering, call: S.Call, op: Op) -> tuple[Tensor, tuple[int, ...], bool]:
    bound = bind(lw, call, ("x", "axis", "keepdims"), {"axis": None, "keepdims": False})
    x = tensor_argument(lw, bound["x"])
    axis = axis_option(lw, bound["axis"], len(x.shape), f"{call.func}()", call.pos)
    keepdims = bool_option(lw, bound["keepdims"], "keepdims")
    axes = tuple(range(len(x.shape))) if axis is None else (axis,)
    shape = reduced_shape(x.shape, axes, keepdims)
    return lw.node(op, (x.node,), shape, axes=axes, keepdims=keepdims), axes, keepdims


def sum_call(lw: Lowering, call: S.Call) -> Value:
    return _reduce(lw, call, Op.SUM)[0]


def max_call(lw: Lowering, call: S.Call) -> Value:
    return _reduce(lw, call, Op.MAX)[0]


def logsumexp_call(lw: Lowering, call: S.Call) -> Value:
    return _reduce(lw, call, Op.LOGSUMEXP)[0]


def mean_call(lw: Lowering, call: S.Call) -> Value:
    total, axes, _ = _reduce(lw, call, Op.SUM)
    source = lw.builder.nodes[lw.builder.nodes[total.node].inputs[0]].shape
    return divide_by_count(lw, total, tuple(source[a] for a in axes))


def divide_by_count(lw: Lowering, total: Tensor, dims: Shape) -> Tensor:
    """`total` divided by the number of elements in `dims` (a size bound at call time too)."""
    n = count(dims)
    node = lw.builder.elementwise(operand(0) / n, (total.node,), total.shape,
                                  lines=(lw.line,))
    return Tensor(node, total.shape)


def _softmax_family(lw: Lowering, call: S.Call, op: Op) -> Value:
    bound = bind(lw, call, ("x", "axis"), {"axis": S.Number("-1", call.pos)})
    x = tensor_argument(lw, bound["x"])
    if not x.shape:
        raise lw.error(BPShapeError, f"{call.func}() needs a tensor of rank 1 or more, "
                       f"not a scalar", call.pos)
    axis = axis_option(lw, bound["axis"], len(x.shape), f"{call.func}()", call.pos)
    return lw.node(op, (x.node,), x.shape, axes=(axis,))


# --------------------------------------------------------------------------- losses


def _mean_all(lw: Lowering, value: Value) -> Tensor:
    x = value if isinstance(value, Tensor) else Tensor(lw.materialize(value), value.shape)
    axes = tuple(range(len(x.shape)))
    total = lw.node(Op.SUM, (x.node,), (), axes=axes)
    return divide_by_count(lw, total, x.shape)


def _elementwise_loss(make: Callable[[sympy.Expr, sympy.Expr], sympy.Expr],
                      names: tuple[str, str]) -> Handler:
    """A loss that is the mean of an elementwise function of its two arguments."""

    def handler(lw: Lowering, call: S.Call) -> Value:
        bound = bind(lw, call, names)
        exprs = [bound[n] for n in names]
        values = [lw.expression(e) for e in exprs]
        if values[0].shape != values[1].shape:
            # PyTorch's losses warn of broadcasting here; it is almost always a bug
            raise lw.error(
                BPShapeError,
                f"{call.func} needs {names[0]} and {names[1]} of one shape, but "
                f"{S.expr_text(exprs[0])} is {format_shape(values[0].shape)} and "
                f"{S.expr_text(exprs[1])} is {format_shape(values[1].shape)}",
                call.pos,
            )
        return _mean_all(lw, lw.combine(call.func, make, values, exprs, call.pos))

    return handler


mse_call = _elementwise_loss(lambda y, t: (y - t) ** 2, ("y", "t"))
binary_cross_entropy_call = _elementwise_loss(
    lambda p, t: -(t * sympy.log(p) + (1 - t) * sympy.log(1 - p)), ("p", "t")
)
# mean(-(t log sigmoid(z) + (1 - t) log(1 - sigmoid(z)))) is mean(softplus(z) - t z).
bce_with_logits_call = _elementwise_loss(lambda z, t: Softplus(z) - t * z, ("z", "t"))


def cross_entropy_call(lw: Lowering, call: S.Call) -> Value:
    bound = bind(lw, call, ("logits", "t"))
    logits = tensor_argument(lw, bound["logits"])
    t = tensor_argument(lw, bound["t"])
    if logits.shape != t.shape or not logits.shape:
        raise lw.error(
            BPShapeError,
            f"cross_entropy needs logits and targets of one shape (rank 1 or more), but "
            f"{S.expr_text(bound['logits'])} is {format_shape(logits.shape)} and "
            f"{S.expr_text(bound['t'])} is {format_shape(t.shape)}",
            call.pos,
        )
    return lw.node(Op.SOFTMAX_XENT, (logits.node, t.node), (), axes=(len(logits.shape) - 1,))


# ------------------------------------------------------------------------- structure


def matmul(lw: Lowering, expr: S.BinOp) -> Value:
    """NumPy's matmul for 1-D and 2-D operands; the inner dims must be the same."""
    left, right = lw.expression(expr.left), lw.expression(expr.right)
    described = (f"{S.expr_text(expr.left)} is {format_shape(left.shape)}, "
                 f"{S.expr_text(expr.right)} is {format_shape(right.shape)}")
    if isinstance(left, Scalar) or isinstance(right, Scalar) or not (
        1 <= len(left.shape) <= 2 and 1 <= len(right.shape) <= 2
    ):
        raise lw.error(BPShapeError, f"'@' takes 1-D and 2-D tensors, but {described}",
                       expr.pos)
    inner_left = left.shape[-1]
    inner_right = right.shape[0]
    if inner_left != inner_right:
        raise lw.error(
            BPShapeError,
            f"shape mismatch in '@': {S.expr_text(expr.left)} is {format_shape(left.shape)} "
            f"but {S.expr_text(expr.right)} is {format_shape(right.shape)}",
            expr.pos,
        )
    shape = left.shape[:-1] + right.shape[1:]
    return lw.node(Op.MATMUL, (left.node, right.node), shape)


Handler = Callable[["Lowering", S.Call], Value]

CALLS: dict[str, Handler] = {
    **{name: elementwise_call for name in ELEMENTWISE},
    "sum": sum_call,
    "mean": mean_call,
    "max": max_call,
    "logsumexp": logsumexp_call,
    "softmax": lambda lw, c: _softmax_family(lw, c, Op.SOFTMAX),
    "log_softmax": lambda lw, c: _softmax_family(lw, c, Op.LOG_SOFTMAX),
    "mse": mse_call,
    "cross_entropy": cross_entropy_call,
    "binary_cross_entropy": binary_cross_entropy_call,
    "bce_with_logits": bce_with_logits_call,
    "dense": dense_elsewhere,
}


def call(lw: Lowering, expr: S.Call) -> Value:
    if expr.func in lw.defs:
        return def_call(lw, expr)
    handler = CALLS.get(expr.func)
    if handler is None:
        raise lw.error(BPNameError, f"unknown function '{expr.func}'", expr.pos)
    return handler(lw, expr)
