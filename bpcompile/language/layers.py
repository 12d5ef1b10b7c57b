"""Layer sugar: `h1 = dense(x, units, act=relu)` declares the params `h1.W` and `h1.b` and
computes `act(x @ h1.W + h1.b)`. A layer is the whole right side of an assignment, since
the assigned name names its params."""

from __future__ import annotations

from collections.abc import Callable

import sympy

from ..errors import BPShapeError, BPTypeError, Pos
from ..graph.ir import Op, operand
from ..graph.network import Init
from ..graph.shapes import format_shape
from . import syntax as S
from .arguments import bind, number_option, tensor_argument
from .builtins import ELEMENTWISE
from .context import Lowering
from .values import Tensor, Value

RELU_FAMILY = frozenset({"relu", "leaky_relu", "elu", "gelu"})


def dense(lw: Lowering, call: S.Call, name: str) -> Value:
    """`name = dense(x, units, act=linear)`: declares name.W and name.b, computes act(x@W+b)."""
    bound = bind(lw, call, ("x", "units", "act"), {"act": None})
    x = tensor_argument(lw, bound["x"])
    units = number_option(lw, bound["units"], "dense()'s units")
    if not (units.is_Integer and units > 0):
        raise lw.error(BPTypeError, "dense()'s units must be a positive integer",
                       bound["units"].pos)
    if not x.shape or not isinstance(x.shape[-1], int):
        raise lw.error(
            BPShapeError,
            f"dense() needs a fixed number of input features, but "
            f"{S.expr_text(bound['x'])} is {format_shape(x.shape)}",
            call.pos,
        )
    if len(x.shape) > 2:  # it computes x @ W, and '@' takes 1-D and 2-D tensors
        raise lw.error(
            BPShapeError,
            f"dense() takes a 1-D or 2-D tensor (it computes x @ W), but "
            f"{S.expr_text(bound['x'])} is {format_shape(x.shape)}",
            call.pos,
        )
    act = bound["act"]
    act_name = "linear" if act is None else act.id if isinstance(act, S.Name) else None
    activation = _activation(lw, act_name, act, call.pos)
    init = Init("he") if act_name in RELU_FAMILY else Init("xavier")
    w = lw.add_param(f"{name}.W", (x.shape[-1], int(units)), init, call.pos)
    b = lw.add_param(f"{name}.b", (int(units),), Init("zeros"), call.pos)
    shape = x.shape[:-1] + (int(units),)
    product = lw.node(Op.MATMUL, (x.node, w), shape)
    u, v = operand(0), operand(1)
    node = lw.builder.elementwise(activation(u + v), (product.node, b), shape, lines=(lw.line,))
    return Tensor(node, shape)


def _activation(lw: Lowering, name: str | None, expr: object,
                pos: Pos) -> Callable[[sympy.Expr], sympy.Expr]:
    if name in ELEMENTWISE and ELEMENTWISE[name].arity == 1:
        builtin = ELEMENTWISE[name]
        defaults = [sympy.sympify(v) for v in builtin.options.values()]
        return lambda u: builtin.make(u, *defaults)
    if name in lw.defs and len(lw.defs[name][0]) == 1:
        (symbol,), body = lw.defs[name]
        return lambda u: body.xreplace({symbol: u})
    where = getattr(expr, "pos", pos)
    raise lw.error(
        BPTypeError,
        "act= must name an elementwise function of one argument (relu, tanh, a def, ...)",
        where,
    )


def dense_elsewhere(lw: Lowering, call: S.Call) -> Value:
    raise lw.error(
        BPTypeError,
        "dense(...) must be the whole right side of an assignment, as in "
        "h1 = dense(x, 64, act=relu): the assigned name names its params",
        call.pos,
    )
