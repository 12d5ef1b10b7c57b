"""Call arguments as Python binds them (positional, then by name, then defaults), and the
checks an option's value must pass: a number known without data, an axis in range, a
boolean. Shared by built-in calls, layers, defs and declarations."""

from __future__ import annotations

import math

import sympy

from ..errors import BPShapeError, BPTypeError, Pos
from ..graph.functions import is_size, size_name
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
    if is_none(expr):
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


# ------------------------------------------------------------------------- lists


def is_none(expr: object) -> bool:
    """`None` written out (`axis=None`), or an option left at a default of None."""
    return expr is None or isinstance(expr, S.Name) and expr.id == "None"


def size_item(lw: Lowering, expr: S.Expr, what: str) -> int | str:
    """One item of a shape-like list: an integer (negative allowed), a const, or a size
    symbol (`N`), which stays a symbol."""
    value = lw.expression(expr)
    if isinstance(value, Scalar) and not value.shape:
        if value.expr.is_Integer:
            return int(value.expr)
        if value.expr.is_Symbol and is_size(value.expr):
            return size_name(value.expr)
    raise lw.error(BPTypeError, f"{what} must be an integer or a size such as N", expr.pos)


def int_list_option(lw: Lowering, expr: object, what: str, length: int | None = None,
                    ) -> tuple[int | str, ...]:
    """An integer or a list of them (`stride=2`, `stride=[2, 1]`); a single integer is
    repeated `length` times where a list of that length is wanted."""
    if isinstance(expr, S.List):
        items = tuple(size_item(lw, item, f"each item of {what}") for item in expr.items)
        if length is not None and len(items) != length:
            raise lw.error(BPShapeError, f"{what} needs {length} items, not {len(items)}",
                           expr.pos)
        return items
    if isinstance(expr, int):  # a default
        return (expr,) * (length or 1)
    item = size_item(lw, expr, what)
    return (item,) * (length or 1)


def axes_option(lw: Lowering, expr: object, rank: int, what: str,
                pos: Pos) -> tuple[int, ...] | None:
    """`axis=`: None (every axis), an integer, or a list of distinct integers; each may be
    negative. Returned sorted and non-negative."""
    if is_none(expr):
        return None
    if not isinstance(expr, S.List):
        return (axis_option(lw, expr, rank, what, pos),)
    axes = [axis_option(lw, item, rank, what, pos) for item in expr.items]
    if len(set(axes)) != len(axes):
        raise lw.error(BPShapeError, f"the axes of {what} repeat an axis", expr.pos)
    if not axes:
        raise lw.error(BPShapeError, f"the axes of {what} are an empty list", expr.pos)
    return tuple(sorted(axes))
