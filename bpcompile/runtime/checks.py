"""Checks on the arrays a call is given, before any of them reaches compiled code.

Data (inputs and targets) of any real dtype or layout is converted to the network's dtype;
params are converted too, except for `step`, which updates them in place and so needs them
exactly right. Symbolic sizes are bound from the arrays, one size per symbol per call.
Every failure is a BPError naming the array and both shapes; nothing has been computed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from ..errors import BPNameError, BPShapeError, BPTypeError, did_you_mean
from ..graph.shapes import Shape, format_shape


def _names(kind: str, given: Mapping, expected: Mapping | list, call: str) -> None:
    if not isinstance(given, Mapping):
        raise BPTypeError(f"{call}: {kind} must be a dict of arrays, not {type(given).__name__}")
    missing = [n for n in expected if n not in given]
    unknown = [n for n in given if n not in expected]
    if missing:
        hints = [repr(n) + did_you_mean(n, unknown) for n in missing]
        raise BPNameError(f"{call}: missing {kind} {', '.join(hints)}")
    if unknown:
        known = ", ".join(map(repr, expected)) or "none"
        hints = [repr(n) + did_you_mean(n, expected) for n in unknown]
        raise BPNameError(f"{call}: unknown {kind} {', '.join(hints)} (expected {known})")



def real_array(value: object, name: str, call: str) -> np.ndarray:
    """`value` as an array (not yet converted) if it holds real numbers: bools, ints, floats."""
    try:
        array = np.asarray(value)
    except (ValueError, TypeError) as error:  # ragged lists and the like: NumPy says why
        raise BPTypeError(f"{call}: {name} is not an array of numbers ({error})") from None
    except MemoryError:
        raise BPTypeError(f"{call}: {name} is too large to hold in memory") from None
    if array.dtype.kind not in "biuf":
        raise BPTypeError(
            f"{call}: {name} must hold real numbers, but its dtype is {array.dtype}"
        )
    return array


def converted(array: np.ndarray, name: str, dtype: np.dtype, call: str) -> np.ndarray:
    """`array` as a C-contiguous array of `dtype` (a copy only where it must be)."""
    try:
        # Not np.ascontiguousarray: it turns a 0-d array into shape (1,), and `[]` params
        # are 0-d.
        return np.asarray(array, dtype=dtype, order="C")
    except MemoryError:  # e.g. a broadcast view of a vast shape, which has to be copied
        raise BPTypeError(
            f"{call}: {name} {array.shape} would need "
            f"{array.size * dtype.itemsize:,} bytes as a C-contiguous {dtype}, more memory "
            f"than there is"
        ) from None


def as_real_array(value: object, name: str, dtype: np.dtype, call: str) -> np.ndarray:
    """`value` as a C-contiguous array of `dtype`; only real numbers (bools, ints, floats)."""
    return converted(real_array(value, name, call), name, dtype, call)


def bind_shape(name: str, actual: tuple[int, ...], declared: Shape,
               bindings: dict[str, tuple[int, str]], call: str) -> None:
    """Check `actual` against `declared`, binding symbols (size, array that bound it)."""
    if len(actual) != len(declared):
        raise BPShapeError(
            f"{call}: {name} has shape {actual} but the network declares {name}"
            f"{format_shape(declared)} (rank {len(declared)}, not {len(actual)})"
        )
    for axis, (size, dim) in enumerate(zip(actual, declared)):
        if size == 0:
            raise BPShapeError(
                f"{call}: {name} has shape {actual}, with no elements along axis {axis}"
            )
        if isinstance(dim, int):
            if size != dim:
                raise BPShapeError(
                    f"{call}: {name} has shape {actual} but the network declares {name}"
                    f"{format_shape(declared)} (axis {axis} is {size}, not {dim})"
                )
        elif dim in bindings and bindings[dim][0] != size:
            bound, source = bindings[dim]
            raise BPShapeError(
                f"{call}: {name} has shape {actual}, so {dim} = {size}, but {source} "
                f"already set {dim} = {bound}"
            )
        else:
            bindings[dim] = (size, name)


def check_data(data: Mapping, declared: dict[str, Shape], dtype: np.dtype,
               call: str) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """Converted data arrays, and the size bound to each symbol."""
    _names("array", data, declared, call)
    arrays: dict[str, np.ndarray] = {}
    bindings: dict[str, tuple[int, str]] = {}
    for name, shape in declared.items():
        array = real_array(data[name], name, call)
        bind_shape(name, array.shape, shape, bindings, call)  # before any copy is made
        arrays[name] = converted(array, name, dtype, call)
    return arrays, {symbol: size for symbol, (size, _) in bindings.items()}


def check_least_sizes(sizes: Mapping[str, int], least: Mapping[str, tuple[int, int]],
                      filename: str, call: str) -> None:
    """Each size an index reads along is large enough: else a BPShapeError naming the size,
    its value and the line that indexes. Nothing has been computed yet."""
    for name, (needed, line) in least.items():
        if name in sizes and sizes[name] < needed:
            raise BPShapeError(f"{call}: an index on {filename}:{line} needs {name} >= "
                               f"{needed}, but {name} = {sizes[name]} here")


def check_indices(arrays: Mapping[str, np.ndarray], indices: Mapping[str, int],
                  call: str) -> None:
    """Arrays of class indices hold whole numbers in [0, classes): else a BPError naming
    the array, the first bad value and where it is. Nothing has been computed yet."""
    for name, classes in indices.items():
        if name not in arrays:
            continue
        values = arrays[name]
        bad = ~((values == np.floor(values)) & (values >= 0) & (values < classes))
        if bad.any():
            where = tuple(int(k) for k in np.argwhere(bad)[0])
            raise BPTypeError(
                f"{call}: {name} holds indices (whole numbers from 0 to "
                f"{classes - 1}), but {name}[{', '.join(map(str, where))}] is "
                f"{values[where].item()!r}"
            )


def check_params(p: Mapping, shapes: dict[str, tuple[int, ...]], dtype: np.dtype,
                 call: str, kind: str = "param") -> dict[str, np.ndarray]:
    """Params (or gradients, one per param) converted to `dtype`, for calls that only read
    them."""
    _names(kind, p, shapes, call)
    result = {}
    for name, shape in shapes.items():
        array = real_array(p[name], f"{kind} {name}", call)
        if array.shape != shape:
            raise BPShapeError(
                f"{call}: {kind} {name} has shape {array.shape}, not {shape}"
            )
        result[name] = converted(array, f"{kind} {name}", dtype, call)
    return result


def check_in_place(arrays: Mapping, shapes: dict[str, tuple[int, ...]], dtype: np.dtype,
                   kind: str, call: str) -> dict[str, np.ndarray]:
    """Arrays `step` will update in place: exactly the dtype, shape and layout, and writeable.
    (`check_disjoint` then checks that no two of them share memory.)"""
    _names(kind, arrays, shapes, call)
    for name, shape in shapes.items():
        array = arrays[name]
        where = f"{call}: {kind} {name}"
        if not isinstance(array, np.ndarray):
            raise BPTypeError(f"{where} must be a NumPy array (step updates it in place), "
                              f"not {type(array).__name__}")
        if array.dtype != dtype:
            raise BPTypeError(f"{where} is {array.dtype}, but this network is {dtype}; "
                              f"step updates it in place, so it must be {dtype}")
        if array.shape != shape:
            raise BPShapeError(f"{where} has shape {array.shape}, not {shape}")
        if not array.flags.c_contiguous:
            raise BPTypeError(f"{where} is not C-contiguous; step updates it in place")
        if not array.flags.writeable:
            raise BPTypeError(f"{where} is read-only; step updates it in place")
    return dict(arrays)


def check_disjoint(arrays: Mapping[str, np.ndarray], call: str) -> None:
    """No two arrays that `step` updates in place share memory (a param and its own state
    included), or one update would overwrite a value another still reads. They are
    C-contiguous, so two share memory exactly when their byte ranges overlap, and if any
    two ranges overlap, two neighbours in start order do."""
    spans = sorted(
        (array.__array_interface__["data"][0], array.nbytes, label)
        for label, array in arrays.items()
    )
    for (start, size, label), (next_start, _, next_label) in zip(spans, spans[1:]):
        if next_start < start + size:
            raise BPTypeError(f"{call}: {next_label} shares memory with {label}; "
                              f"step updates both in place")


def check_gradients(grads: Mapping, shapes: dict[str, tuple[int, ...]], dtype: np.dtype,
                    updated: Iterable[np.ndarray], call: str) -> dict[str, np.ndarray]:
    """Gradients for an update, checked as params are; copied where they share memory with
    an array the update writes (a param or state entry), which would change under the
    update while it still reads them."""
    written = list(updated)
    return {name: array.copy() if any(np.may_share_memory(array, w) for w in written)
            else array
            for name, array in check_params(grads, shapes, dtype, call, "gradient").items()}
