"""Shapes whose dims are integers or symbols bound at call time (`N`), and NumPy's broadcasting
rules over them. A symbol only ever matches itself or a 1: `N` against `3` is an error at
compile time, because nothing guarantees that a batch has 3 rows."""

from __future__ import annotations

import math
from typing import Union

Dim = Union[int, str]
Shape = tuple[Dim, ...]


class ShapeMismatch(ValueError):
    """Two shapes that cannot be combined; the caller turns this into a located BPShapeError."""


def format_shape(shape: Shape) -> str:
    """`[N, 2]` as the `.bp` language writes shapes."""
    return "[" + ", ".join(str(d) for d in shape) + "]"


def broadcast(*shapes: Shape) -> Shape:
    """NumPy's broadcast of `shapes`; raise ShapeMismatch when two dims disagree."""
    rank = max((len(s) for s in shapes), default=0)
    result: list[Dim] = []
    for axis in range(-rank, 0):
        dims = {s[axis] for s in shapes if len(s) >= -axis} - {1}
        if len(dims) > 1:
            raise ShapeMismatch(f"dims {' and '.join(sorted(map(str, dims)))} do not broadcast")
        result.append(dims.pop() if dims else 1)
    return tuple(result)


def broadcast_axes(source: Shape, target: Shape) -> tuple[int, ...]:
    """The axes of `target` along which `source` was broadcast (summed to undo it)."""
    lead = len(target) - len(source)
    return tuple(
        axis for axis, dim in enumerate(target)
        if axis < lead or (source[axis - lead] == 1 and dim != 1)
    )


def normalize_axis(axis: int, rank: int) -> int:
    """A possibly negative axis as a non-negative one; raise IndexError if out of range."""
    if not -rank <= axis < rank:
        raise IndexError(axis)
    return axis % rank


def reduced_shape(shape: Shape, axes: tuple[int, ...], keepdims: bool) -> Shape:
    """The shape left after reducing `axes` of `shape`."""
    if keepdims:
        return tuple(1 if i in axes else d for i, d in enumerate(shape))
    return tuple(d for i, d in enumerate(shape) if i not in axes)


def symbols_of(shape: Shape) -> tuple[str, ...]:
    return tuple(d for d in shape if isinstance(d, str))


def concrete(shape: Shape, bindings: dict[str, int]) -> tuple[int, ...]:
    """`shape` with each symbol replaced by its bound size."""
    return tuple(d if isinstance(d, int) else bindings[d] for d in shape)


def static_size(shape: Shape) -> int | None:
    """The number of elements if no dim is symbolic, else None."""
    if any(isinstance(d, str) for d in shape):
        return None
    return math.prod(shape)  # type: ignore[arg-type]
