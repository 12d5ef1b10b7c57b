"""Shapes whose dims are integers or symbols bound at call time (`N`), and NumPy's broadcasting
rules over them. A symbol only ever matches itself or a 1: `N` against `3` is an error at
compile time, because nothing guarantees that a batch has 3 rows."""

from __future__ import annotations

import math
from typing import Union

Dim = Union[int, str]
Shape = tuple[Dim, ...]
MAX_RANK = 6  # tensors have at most this many dims (SPEC)


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


def matmul_shape(left: Shape, right: Shape) -> Shape:
    """The shape of numpy.matmul(left, right), inner dims assumed equal: the batch dims
    broadcast, then [m, n]; a 1-D operand's axis is dropped."""
    batch = broadcast(left[:-2], right[:-2])
    return batch + left[-2:-1] + (right[-1:] if len(right) > 1 else ())


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


Subscript = Union[int, slice]


def slice_subscripts(attrs: tuple[tuple[int, int], ...], dropped: tuple[int, ...],
                     source: Shape, result: Shape) -> tuple[Subscript, ...]:
    """A SLICE node's `x[...]` subscripts: the index of each dropped axis, and for the others
    a slice of `length` elements from `start` by `step` (a negative start counts from the
    end), its ends left open where the slice reaches them."""
    lengths = iter(result)
    subscripts: list[Subscript] = []
    for axis, (start, step) in enumerate(attrs):
        if axis in dropped:
            subscripts.append(start)
            continue
        length, size = next(lengths), source[axis]
        step_text = None if step == 1 else step
        if isinstance(length, str):  # the whole axis, either way
            subscripts.append(slice(None, None, step_text))
            continue
        stop = start + length * step
        first_open = start == (0 if step > 0 else size - 1)
        last_open = stop >= size if step > 0 else stop < 0
        subscripts.append(slice(None if first_open else start, None if last_open else stop,
                                step_text))
    return tuple(subscripts)


def subscript_text(subscripts: tuple[Subscript, ...]) -> str:
    """`0:2, ::-1, 3` as Python writes the subscripts."""
    parts = []
    for s in subscripts:
        if isinstance(s, int):
            parts.append(str(s))
            continue
        text = f"{'' if s.start is None else s.start}:{'' if s.stop is None else s.stop}"
        parts.append(text + ("" if s.step is None else f":{s.step}"))
    return ", ".join(parts)
