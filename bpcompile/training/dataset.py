"""Training data for `bpcompile train`: arrays named like a network's inputs and targets, read
from an `.npz` archive or a `.csv` table, split into rows.

A network's rows run along one symbolic dim, its batch dim (`N` in `x[N, 2]`): the symbol
that leads the most of its data arrays. Arrays it leads are cut into minibatches; any other
array is handed to every step whole. Integer class labels given for an array declared as
`[N, C]` (a target, as `cross_entropy` wants, or an input) become one-hot rows.
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import BPError, BPNameError, BPShapeError, BPTypeError
from ..graph.shapes import Shape, format_shape
from ..runtime.checks import real_array
from ..runtime.params_file import read_archive
from ..runtime.signature import Signature

Arrays = dict[str, np.ndarray]

# A CSV column belongs to the array it names: `x` alone (one feature, or labels), or `x_3`,
# the fourth column of x[N, K].
COLUMN = re.compile(r"(?P<name>[A-Za-z_]\w*?)(?:_(?P<index>\d+))?")


@dataclass(frozen=True)
class Dataset:
    """Data for every input and target of a network. `batched` names the arrays that the
    batch dim leads, with `rows` samples each (None when no array has one: every step then
    sees all of the data)."""

    arrays: Arrays
    batched: frozenset[str]
    rows: int | None
    source: str

    def take(self, rows: np.ndarray) -> Arrays:
        """The arrays for these sample indices (arrays without the batch dim, whole)."""
        return {name: array[rows] if name in self.batched else array
                for name, array in self.arrays.items()}


def batch_dim(signature: Signature) -> str | None:
    """The symbol leading the most data arrays (inputs first on a tie), or None."""
    leading = [shape[0] for shape in signature.data.values()
               if shape and isinstance(shape[0], str)]
    if not leading:
        return None
    counts = Counter(leading)
    return max(leading, key=lambda symbol: counts[symbol])  # max keeps the first on ties


def load(path: str | Path, signature: Signature,
         names: Mapping[str, Shape] | None = None) -> Dataset:
    """The network's data from `path` (.npz or .csv), checked against its declarations;
    `names`: only these arrays (a network's inputs, to predict), else all its data."""
    path = Path(path)
    readers = {".npz": _read_npz, ".csv": _read_csv}
    reader = _read_folder if path.is_dir() else readers.get(path.suffix.lower())
    if reader is None:
        raise BPTypeError(f"{path}: data must be an .npz archive, a .csv table or a folder "
                          f"of NAME.npy files, not '{path.suffix or 'no extension'}'")
    arrays = reader(path, signature)
    return dataset(arrays, signature, str(path), names)


def dataset(given: dict[str, object], signature: Signature, source: str,
            names: Mapping[str, Shape] | None = None) -> Dataset:
    """Check arrays (from a file or a caller) against the network: every input and target
    (or every array of `names`) present, real numbers, each of its declared rank and sizes,
    one row count."""
    declared = signature.data if names is None else names
    missing = [n for n in declared if n not in given]
    if missing:
        have = ", ".join(map(repr, given)) or "none"
        raise BPNameError(f"{source}: no array named {', '.join(map(repr, missing))} "
                          f"(the network's data: {', '.join(map(repr, declared))}; "
                          f"the file has {have})")
    dim = batch_dim(signature)
    arrays: Arrays = {}
    sizes: dict[str, tuple[int, str]] = {}
    for name, shape in declared.items():
        array = real_array(given[name], f"{source}: {name}", "train")
        array = _as_one_hot(array, shape, name, source)
        _check_shape(array, shape, name, source, sizes)
        _check_finite(array, name, source)
        if name in signature.indices:
            _check_indices(array, signature.indices[name], name, source)
        arrays[name] = array
    # the batch dim of the network's data may lead none of these (predict reads inputs only)
    rows = sizes[dim][0] if dim in sizes else None
    batched = frozenset(n for n, s in declared.items() if rows is not None and s[:1] == (dim,))
    return Dataset(arrays, batched, rows, source)


def _check_shape(array: np.ndarray, shape: Shape, name: str, source: str,
                 sizes: dict[str, tuple[int, str]]) -> None:
    declared = f"{name}{format_shape(shape)}"
    if array.ndim != len(shape):
        raise BPShapeError(f"{source}: {name} has shape {array.shape}, but the network "
                           f"declares {declared}")
    for axis, (size, dim) in enumerate(zip(array.shape, shape)):
        if size == 0:
            raise BPShapeError(f"{source}: {name} has shape {array.shape}, with no elements "
                               f"along axis {axis}")
        if isinstance(dim, int) and size != dim:
            raise BPShapeError(f"{source}: {name} has shape {array.shape}, but the network "
                               f"declares {declared} (axis {axis} is {size}, not {dim})")
        if isinstance(dim, str):
            bound, by = sizes.setdefault(dim, (size, name))
            if bound != size:
                raise BPShapeError(f"{source}: {name} has {size} along {dim} (axis {axis}), "
                                   f"but {by} has {bound}")


def _check_finite(array: np.ndarray, name: str, source: str, rows: int = 65536) -> None:
    """NaN or inf anywhere is named by array, row and column before any step runs (a step
    would refuse it with no clue which sample): read `rows` rows at a time, so that
    memory-mapped data is checked without being held."""
    if array.dtype.kind != "f":
        return  # integers and booleans are always finite
    for start in range(0, max(len(array), 1) if array.ndim else 1, rows):
        part = array[start:start + rows] if array.ndim else array
        bad = ~np.isfinite(part)
        if bad.any():
            where = tuple(int(k) for k in np.argwhere(bad)[0])
            index = (start + where[0], *where[1:]) if array.ndim else ()
            place = (f" (row {index[0]}" + (f", column {index[1]}" if len(index) > 1 else "")
                     + ")") if index else ""
            raise BPTypeError(f"{source}: {name}{list(index) if index else ''} is "
                              f"{array[index]}{place}; data must be finite numbers")


def _check_indices(array: np.ndarray, classes: int, name: str, source: str,
                   rows: int = 65536) -> None:
    """Indices (class labels, a gather's rows) are whole numbers in [0, classes): the first
    that is not is named by its place in the file, before any call sees a batch of it."""
    for start in range(0, max(len(array), 1) if array.ndim else 1, rows):
        part = np.asarray(array[start:start + rows] if array.ndim else array)
        bad = ~((part == np.floor(part)) & (part >= 0) & (part < classes))
        if bad.any():
            where = tuple(int(k) for k in np.argwhere(bad)[0])
            index = (start + where[0], *where[1:]) if array.ndim else ()
            raise BPTypeError(f"{source}: {name} holds indices (whole numbers from 0 to "
                              f"{classes - 1}), but {name}{list(index) if index else ''} is "
                              f"{np.asarray(array)[index].item()!r}")


def _as_one_hot(array: np.ndarray, shape: Shape, name: str, source: str) -> np.ndarray:
    """Class labels (integers in [0, C)) as one-hot rows, when the network declares one more
    axis, of C classes, than the labels have."""
    if array.ndim + 1 != len(shape) or not isinstance(shape[-1], int) or shape[-1] < 2:
        return array
    classes = shape[-1]
    if array.size and not np.all(np.mod(array, 1) == 0):
        return array  # not labels: the shape check will say what is wrong
    labels = array.astype(np.int64)
    bad = (labels < 0) | (labels >= classes)
    if np.any(bad):
        where = tuple(int(k) for k in np.argwhere(bad)[0])
        raise BPShapeError(f"{source}: {name} holds class labels for {name}"
                           f"{format_shape(shape)}, {classes} classes, but {name}{list(where)}"
                           f" is {array[where]:g}, not in 0..{classes - 1}")
    return np.eye(classes)[labels]


def _read_npz(path: Path, signature: Signature) -> dict[str, object]:
    return read_archive(path, lambda name: name in signature.data)


def npy_files(path: Path, signature: Signature) -> dict[str, Path]:
    """The `NAME.npy` files of a folder named after the network's data arrays."""
    return {name: path / f"{name}.npy" for name in signature.data
            if (path / f"{name}.npy").is_file()}


def _read_folder(path: Path, signature: Signature) -> dict[str, object]:
    """`NAME.npy` files, memory-mapped: rows are read from disk as minibatches take them,
    so the data need not fit in memory."""
    arrays = {}
    for name, file in npy_files(path, signature).items():
        try:
            arrays[name] = np.load(file, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as error:
            raise BPError(f"{file}: not a readable .npy file ({error})") from None
    return arrays


def _read_csv(path: Path, signature: Signature) -> dict[str, object]:
    """Columns named `x` or `x_0, x_1, ...` after the network's arrays; other columns are
    ignored. Every value must be a number."""
    # utf-8-sig: a byte-order mark, as spreadsheets write, is not part of the first name
    with path.open(newline="", encoding="utf-8-sig") as file:
        try:
            table = list(csv.reader(file))
        except (csv.Error, UnicodeDecodeError) as error:
            raise BPError(f"{path}: not a readable CSV table ({error})") from None
    if not table:
        raise BPError(f"{path}: the file is empty; the first line must name the columns")
    header = [cell.strip() for cell in table[0]]
    columns: dict[str, dict[int | None, int]] = {}
    for position, title in enumerate(header):
        match = COLUMN.fullmatch(title)
        if match is None:
            continue
        name = match["name"] if match["name"] in signature.data else title
        if name not in signature.data:
            continue
        index = int(match["index"]) if match["index"] is not None and name != title else None
        if index in columns.setdefault(name, {}):
            raise BPError(f"{path}:1: column '{title}' appears twice")
        columns[name][index] = position
    body = [(number, row) for number, row in enumerate(table[1:], start=2)
            if any(cell.strip() for cell in row)]
    used = sorted(c for found in columns.values() for c in found.values())
    values = np.empty((len(body), len(header)))  # the columns not used stay unread
    for r, (number, row) in enumerate(body):
        if len(row) != len(header):
            raise BPError(f"{path}:{number}: {len(row)} values, but the header names "
                          f"{len(header)} columns")
        for c in used:
            cell = row[c]
            try:
                values[r, c] = float(cell)
            except ValueError:
                raise BPError(f"{path}:{number}: column '{header[c]}' holds {cell!r}, "
                              f"not a number") from None
    return {name: _gather(path, name, found, values, signature.data[name])
            for name, found in columns.items()}


def _gather(path: Path, name: str, found: dict[int | None, int], values: np.ndarray,
            shape: Shape) -> np.ndarray:
    """The array `name` from its columns: `name` alone, or `name_0 ... name_{K-1}`."""
    if None in found:
        if len(found) > 1:
            raise BPError(f"{path}:1: column '{name}' and columns '{name}_k' both name {name}")
        column = values[:, found[None]]
        return column[:, None] if len(shape) == 2 and shape[1] == 1 else column
    width = max(found) + 1
    absent = [k for k in range(width) if k not in found]
    if absent:
        raise BPError(f"{path}:1: columns {name}_0 to {name}_{width - 1} need "
                      f"{name}_{absent[0]} too")
    if len(shape) > 2:
        raise BPShapeError(f"{path}: {name}{format_shape(shape)} has rank {len(shape)}; "
                           f"a CSV table holds rank 1 and 2 arrays only: use an .npz")
    return values[:, [found[k] for k in range(width)]]
