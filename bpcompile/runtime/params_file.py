"""Params files: a network's params and buffers in an `.npz` archive, each under its `.bp`
name (`np.load(path)["h1.W"]`), read back checked against the network.

A training checkpoint is such a file with more in it: optimizer state under `state:NAME`
and the run's progress under `meta:NAME`. Reading params skips both, so a checkpoint is also
a params file; writing params writes neither, atomically (a crash leaves the old file or the
new one, never half of one).
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import BinaryIO

import numpy as np

from .. import atomic
from ..errors import BPError, BPNameError, BPShapeError, BPTypeError, closest

# the prefixes of what a checkpoint holds besides params: never a param's name, as `.bp`
# names have no colon
STATE = "state:"
META = "meta:"


def read_archive(path: Path, wanted: Callable[[str], bool] = lambda name: True
                 ) -> dict[str, np.ndarray]:
    """The arrays of an .npz archive that `wanted` names (each read only if wanted);
    BPError for anything else (a damaged file, an .npy under an .npz name, an archive
    holding Python objects)."""
    with open(path, "rb") as file:  # FileNotFoundError, IsADirectoryError: said as they are
        magic = file.read(6)
    if magic.startswith(b"\x93NUMPY"):
        raise BPError(f"{path}: an .npy array, not an .npz archive of named arrays")
    if not magic.startswith(b"PK"):
        raise BPError(f"{path}: not an .npz archive (a zip of NAME.npy arrays, as np.savez "
                      f"writes)")
    try:
        loaded = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as error:
        raise BPError(f"{path}: not a readable .npz archive ({error})") from None
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise BPError(f"{path}: an .npy array, not an .npz archive of named arrays")
    try:
        with loaded as archive:
            return {name: archive[name] for name in archive.files if wanted(name)}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as error:
        raise BPError(f"{path}: not a readable .npz archive ({error})") from None


def write_npz(file: BinaryIO, arrays: Mapping[str, np.ndarray]) -> None:
    """An .npz archive as np.load reads it, written member by member (np.savez takes names
    as keyword arguments, and a param may be called `file` or `allow_pickle`)."""
    with zipfile.ZipFile(file, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, array in arrays.items():
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)


def load_params(path: str | Path, shapes: Mapping[str, tuple[int, ...]], dtype: np.dtype,
                network: str) -> dict[str, np.ndarray]:
    """The arrays `shapes` names from a params file or checkpoint at `path`, converted to
    `dtype`, C-contiguous. BPError naming every array that is missing, of the wrong shape or
    not real numbers, and what the file holds instead."""
    path = Path(path)
    params = read_archive(path, lambda name: not name.startswith((STATE, META)))
    missing = [name for name in shapes if name not in params]
    if missing:
        extra = [name for name in params if name not in shapes]
        hints = [f"'{name}'" + (f" (the file has '{near}')" if (near := closest(name, extra))
                                else "") for name in missing]
        held = ", ".join(map(repr, params)) or "no params"
        raise BPNameError(f"{path}: no array {', '.join(hints)}, which network {network} needs "
                          f"(the file holds {held}; saved from another network?)")
    result = {}
    for name, shape in shapes.items():
        array = params[name]
        if array.dtype.kind not in "biuf":
            raise BPTypeError(f"{path}: '{name}' holds {array.dtype} values, not real numbers")
        if array.shape != tuple(shape):
            raise BPShapeError(f"{path}: '{name}' has shape {array.shape}, but network "
                               f"{network} needs {tuple(shape)}")
        with np.errstate(over="ignore"):  # said below, by name, rather than warned
            converted = np.array(array, dtype=dtype, order="C")
        if not np.all(np.isfinite(converted)):
            where = tuple(int(k) for k in np.argwhere(~np.isfinite(converted))[0])
            value = array[where].item()
            if np.isfinite(value):
                raise BPTypeError(f"{path}: '{name}'{list(where)} is {value!r}, too large "
                                  f"for {np.dtype(dtype).name}")
            raise BPTypeError(f"{path}: '{name}'{list(where)} is {value}; params must be "
                              f"finite")
        result[name] = converted
    return result


def save_params(path: str | Path, params: Mapping[str, np.ndarray]) -> None:
    """`params` (and buffers) to `path`, atomically, each under its own name."""
    atomic.write(Path(path), lambda file: write_npz(file, dict(params)))
