"""Call arguments as Python binds them (positional, then by name, then defaults), and the
checks an option's value must pass: a number known without data, an axis in range, a
boolean. Shared by built-in calls, layers, defs and declarations."""

from __future__ import annotations

import math

import sympy

from ..errors import BPShapeError, BPTypeError, Pos
from ..graph.shapes import normalize_axis
from . import syntax as S
from .context import Lowering
from .values import Scalar, Tensor

_REQUIRED = object()


# ------------------------------------------------------------------ argument binding


def bind(lw: Lowering, call: S.Call, names: tuple[str, ...],
         defaults: dict[str, object] | None = None) -> dict[str, object]:
    """Match a call's arguments to `names` as Python does; defaults fill the rest."""
    defaults = defaults or {}
    if len(call.args) > len(names):
        raise lw.error(
            BPTypeError,
            f"{call.func}() takes at most {len(names)} arguments ({len(call.args)} given)",
            call.args[len(names)].pos,
        )
    bound: dict[str, object] = dict(zip(names, call.args))
    for keyword in call.keywords:
        if keyword.name not in names:
            allowed = ", ".join(names)
            raise lw.error(
                BPTypeError,
                f"{call.func}() has no argument '{keyword.name}' (it takes {allowed})",
                keyword.pos,
            )
        if keyword.name in bound:
            raise lw.error(
                BPTypeError, f"{call.func}() got '{keyword.name}' twice", keyword.pos
            )
        bound[keyword.name] = keyword.value
    for name in names:
        if name not in bound:
            if name not in defaults:
                raise lw.error(
                    BPTypeError, f"{call.func}() is missing its argument '{name}'", call.pos
                )
            bound[name] = defaults[name]
    return bound


def number_option(lw: Lowering, expr: object, what: str) -> sympy.Expr:
    """A numeric option (alpha=0.2): must be known without data."""
    if not hasattr(expr, "pos"):  # a default, not something written in the file
        return sympy.sympify(expr)
    value = lw.expression(expr)
    if not isinstance(value, Scalar) or value.shape or value.expr.free_symbols:
        raise lw.error(BPTypeError, f"{what} must be a number", expr.pos)
    # exp(1000) is exact in SymPy but inf as a float, and options are used as floats.
    if not math.isfinite(float(value.expr)):
        raise lw.error(BPTypeError, f"{what} must be a finite number", expr.pos)
    return value.expr


def axis_option(lw: Lowering, expr: object, rank: int, what: str, pos: Pos) -> int | None:
    """An axis: an integer (negative counts from the end) checked against `rank`, or None."""
    if expr is None:
        return None
    value = number_option(lw, expr, f"the axis of {what}")
    if not value.is_Integer:
        raise lw.error(BPTypeError, f"the axis of {what} must be an integer", expr.pos)
    try:
        return normalize_axis(int(value), rank)
    except IndexError:
        raise lw.error(
            BPShapeError, f"axis {int(value)} is out of range for a tensor of rank {rank}",
            expr.pos,
        ) from None


def bool_option(lw: Lowering, expr: object, what: str) -> bool:
    if isinstance(expr, bool):
        return expr
    if not isinstance(expr, S.Boolean):
        raise lw.error(BPTypeError, f"{what} must be true or false", expr.pos)
    return expr.value


def tensor_argument(lw: Lowering, expr: S.Expr) -> Tensor:
    """Evaluate `expr`; a constant becomes a constant node so structural ops can take it."""
    value = lw.expression(expr)
    if isinstance(value, Scalar):
        return Tensor(lw.materialize(value), value.shape)
    return value
