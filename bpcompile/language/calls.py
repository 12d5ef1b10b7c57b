"""Built-in calls and `@`: shape rules, and the nodes each one lowers to.

`CALLS` is the table the lowerer dispatches on; each handler takes the lowering context and
the call.
"""

from __future__ import annotations

from collections.abc import Callable

import sympy

from ..errors import BPNameError, BPShapeError, BPTypeError, did_you_mean
from ..graph.functions import Softplus, count
from ..graph.ir import Op, operand
from ..graph.shapes import Shape, ShapeMismatch, broadcast, format_shape, reduced_shape
from . import syntax as S
from .arguments import (
    axes_option,
    axis_option,
    bind,
    bool_option,
    number_option,
    tensor_argument,
)
from .builtins import ELEMENTWISE, REQUIRED
from .context import Lowering
from .convolution import CONVOLUTION_CALLS
from .layers import layer_elsewhere
from .modes import dropout_call
from .norms import centered_squares, normalize_call
from .structure import (
    concat_call,
    flatten_call,
    reshape_call,
    stack_call,
    take_call,
    transpose_call,
)
from .values import Scalar, Tensor, Value

# --------------------------------------------------------------------- elementwise


def elementwise_call(lw: Lowering, call: S.Call) -> Value:
    builtin = ELEMENTWISE[call.func]
    tensor_names = builtin.args
    names = tensor_names + tuple(builtin.options)
    defaults = {n: v for n, v in builtin.options.items() if v is not REQUIRED}
    bound = bind(lw, call, names, defaults)
    options = [
        bool_option(lw, bound[n], f"{call.func}'s {n}") if isinstance(default, bool)
        else number_option(lw, bound[n], f"{call.func}'s {n}")
        for n, default in builtin.options.items()
    ]
    if call.func == "clip" and options[0] > options[1]:
        raise lw.error(BPTypeError, f"clip()'s low ({options[0]}) is above its high "
                       f"({options[1]})", call.pos)
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
    """sum or prod over `axis` (None, an integer or a list), as one node."""
    x, axes, keepdims = _reduction_arguments(lw, call)
    shape = reduced_shape(x.shape, axes, keepdims)
    return lw.node(op, (x.node,), shape, axes=axes, keepdims=keepdims), axes, keepdims


def _reduction_arguments(lw: Lowering, call: S.Call) -> tuple[Tensor, tuple[int, ...], bool]:
    bound = bind(lw, call, ("x", "axis", "keepdims"), {"axis": None, "keepdims": False})
    x = tensor_argument(lw, bound["x"])
    axes = axes_option(lw, bound["axis"], len(x.shape), f"{call.func}()", call.pos)
    keepdims = bool_option(lw, bound["keepdims"], "keepdims")
    return x, tuple(range(len(x.shape))) if axes is None else axes, keepdims


def _one_axis_at_a_time(lw: Lowering, x: Tensor, axes: tuple[int, ...], keepdims: bool,
                        op: Op) -> Tensor:
    """max or logsumexp over `axes`: one node over one axis or over all of them (what the
    kernels along an axis take), else one node per axis, innermost first. For max that is
    the same first maximum in row-major order, so the same gradient."""
    if len(axes) in (1, len(x.shape)):
        return lw.node(op, (x.node,), reduced_shape(x.shape, axes, keepdims), axes=axes,
                       keepdims=keepdims)
    result = x
    for axis in reversed(axes):  # innermost first, so the outer axes keep their numbers
        shape = reduced_shape(result.shape, (axis,), keepdims)
        result = lw.node(op, (result.node,), shape, axes=(axis,), keepdims=keepdims)
    return result


def sum_call(lw: Lowering, call: S.Call) -> Value:
    return _reduce(lw, call, Op.SUM)[0]


def prod_call(lw: Lowering, call: S.Call) -> Value:
    return _reduce(lw, call, Op.PROD)[0]


def max_call(lw: Lowering, call: S.Call) -> Value:
    return _one_axis_at_a_time(lw, *_reduction_arguments(lw, call), Op.MAX)


def min_call(lw: Lowering, call: S.Call) -> Value:
    """min(x) = -max(-x): the gradient goes to the first minimum, as max's to the first
    maximum."""
    x, axes, keepdims = _reduction_arguments(lw, call)
    return _negate(lw, _one_axis_at_a_time(lw, _negate(lw, x), axes, keepdims, Op.MAX))


def _negate(lw: Lowering, x: Tensor) -> Tensor:
    return Tensor(lw.builder.elementwise(-operand(0), (x.node,), x.shape, lines=(lw.line,)),
                  x.shape)


def logsumexp_call(lw: Lowering, call: S.Call) -> Value:
    return _one_axis_at_a_time(lw, *_reduction_arguments(lw, call), Op.LOGSUMEXP)


def mean_call(lw: Lowering, call: S.Call) -> Value:
    total, axes, _ = _reduce(lw, call, Op.SUM)
    source = lw.builder.nodes[lw.builder.nodes[total.node].inputs[0]].shape
    return divide_by_count(lw, total, tuple(source[a] for a in axes))


def var_call(lw: Lowering, call: S.Call) -> Value:
    """mean((x - mean(x)) ** 2) over `axis`, divided by the count (as NumPy's var)."""
    x, axes, keepdims = _reduction_arguments(lw, call)
    _, squares = centered_squares(lw, x, axes)
    shape = reduced_shape(x.shape, axes, keepdims)
    total = lw.node(Op.SUM, (squares,), shape, axes=axes, keepdims=keepdims)
    return divide_by_count(lw, total, tuple(x.shape[a] for a in axes))


def std_call(lw: Lowering, call: S.Call) -> Value:
    """sqrt(var), with PyTorch's gradient where the std is 0: 0, not 0/0 (torch's
    std_backward masks it). A plain sqrt gave NaN there, or 0 where fusion multiplied by
    an adjoint of 0 first, so the two backends disagreed (found by the random networks)."""
    variance = var_call(lw, call)
    v = operand(0)
    root = sympy.Piecewise((sympy.sqrt(v), v > 0), (0, True))
    return Tensor(lw.builder.elementwise(root, (variance.node,), variance.shape,
                                         lines=(lw.line,)), variance.shape)


def argmax_call(lw: Lowering, call: S.Call) -> Value:
    """The index of the first maximum along one axis, as a number; no gradient flows."""
    bound = bind(lw, call, ("x", "axis"), {"axis": S.Number("-1", call.pos)})
    x = tensor_argument(lw, bound["x"])
    if not x.shape:
        raise lw.error(BPShapeError, "argmax() needs a tensor of rank 1 or more, not a scalar",
                       call.pos)
    axis = axis_option(lw, bound["axis"], len(x.shape), "argmax()", call.pos)
    return lw.node(Op.ARGMAX, (x.node,), reduced_shape(x.shape, (axis,), False), axes=(axis,))


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
    if logits.shape and t.shape == logits.shape[:-1]:  # class indices, as PyTorch takes
        t = _onehot(lw, t, logits.shape[-1], bound["t"])
    if logits.shape != t.shape or not logits.shape:
        raise lw.error(
            BPShapeError,
            f"cross_entropy needs logits and targets of one shape (rank 1 or more), but "
            f"{S.expr_text(bound['logits'])} is {format_shape(logits.shape)} and "
            f"{S.expr_text(bound['t'])} is {format_shape(t.shape)}",
            call.pos,
        )
    return lw.node(Op.SOFTMAX_XENT, (logits.node, t.node), (), axes=(len(logits.shape) - 1,))


def _onehot(lw: Lowering, t: Tensor, classes: object, written: S.Expr) -> Tensor:
    """Class indices as one-hot rows; the indices must be data (an input or target), so
    each call can check them."""
    node = lw.builder.nodes[t.node]
    if node.op is not Op.INPUT:
        raise lw.error(BPTypeError, f"class indices must be an input or target array, and "
                       f"{S.expr_text(written)} is computed", written.pos)
    if not isinstance(classes, int):
        raise lw.error(BPShapeError, f"class indices need a fixed number of classes, not "
                       f"{classes}", written.pos)
    return lw.node(Op.ONEHOT, (t.node,), (*t.shape, classes), attrs=(classes,))


# ------------------------------------------------------------------------- structure


def matmul(lw: Lowering, expr: S.BinOp) -> Value:
    """NumPy's matmul at any rank: [..., m, k] @ [..., k, n] with the batch dims broadcast;
    a 1-D operand is a row (on the left) or a column (on the right) that is then dropped."""
    left, right = lw.expression(expr.left), lw.expression(expr.right)
    described = (f"{S.expr_text(expr.left)} is {format_shape(left.shape)}, "
                 f"{S.expr_text(expr.right)} is {format_shape(right.shape)}")
    if isinstance(left, Scalar) or isinstance(right, Scalar) or not left.shape \
            or not right.shape:
        raise lw.error(BPShapeError, f"'@' takes tensors of rank 1 or more, but {described}",
                       expr.pos)
    inner_right = right.shape[0] if len(right.shape) == 1 else right.shape[-2]
    if left.shape[-1] != inner_right:
        raise lw.error(BPShapeError,
                       f"shape mismatch in '@': {S.expr_text(expr.left)} is "
                       f"{format_shape(left.shape)} but {S.expr_text(expr.right)} is "
                       f"{format_shape(right.shape)}", expr.pos)
    try:
        batch = broadcast(left.shape[:-2], right.shape[:-2])
    except ShapeMismatch:
        raise lw.error(BPShapeError, f"the batch dims of '@' do not broadcast: {described}",
                       expr.pos) from None
    rows = left.shape[-2:-1]
    cols = right.shape[-1:] if len(right.shape) > 1 else ()
    return lw.node(Op.MATMUL, (left.node, right.node), batch + rows + cols)


Handler = Callable[["Lowering", S.Call], Value]

CALLS: dict[str, Handler] = {
    **{name: elementwise_call for name in ELEMENTWISE},
    "sum": sum_call,
    "mean": mean_call,
    "max": max_call,
    "min": min_call,
    "prod": prod_call,
    "var": var_call,
    "normalize": normalize_call,
    "std": std_call,
    "argmax": argmax_call,
    "logsumexp": logsumexp_call,
    "softmax": lambda lw, c: _softmax_family(lw, c, Op.SOFTMAX),
    "log_softmax": lambda lw, c: _softmax_family(lw, c, Op.LOG_SOFTMAX),
    "mse": mse_call,
    "cross_entropy": cross_entropy_call,
    "binary_cross_entropy": binary_cross_entropy_call,
    "bce_with_logits": bce_with_logits_call,
    "dense": layer_elsewhere,
    "reshape": reshape_call,
    "flatten": flatten_call,
    "transpose": transpose_call,
    "concat": concat_call,
    "stack": stack_call,
    "take": take_call,
    "embedding": layer_elsewhere,
    "conv": layer_elsewhere,
    "layernorm": layer_elsewhere,
    "batchnorm": layer_elsewhere,
    "dropout": dropout_call,
    **CONVOLUTION_CALLS,
}


def call(lw: Lowering, expr: S.Call) -> Value:
    if expr.func in lw.defs:
        return def_call(lw, expr)
    handler = CALLS.get(expr.func)
    if handler is None:
        hint = did_you_mean(expr.func, [*CALLS, *lw.defs])
        raise lw.error(BPNameError, f"unknown function '{expr.func}'{hint}", expr.pos)
    return handler(lw, expr)
