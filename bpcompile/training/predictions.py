"""A trained network's outputs over data of any size, written as they are computed: the rows
go through `forward` (inference mode) a batch at a time, and each batch's outputs go
straight to the file, so memory holds one batch whatever the data's size (a folder of
`.npy` files is read through memory maps).

Three ways out: a CSV table (`NAME` or `NAME_0, NAME_1, ...` columns, as `train` reads, to a
file or standard output), a folder of `NAME.npy` files (memory-mapped, filled in place) and
an `.npz` archive (the same `.npy` files first, in a temporary folder beside it, then
streamed into the archive, which appears atomically).
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

import numpy as np

from .. import atomic
from ..errors import BPShapeError, BPTypeError
from ..graph.shapes import format_shape
from ..runtime.net import Arrays, CompiledNet
from . import dataset as datasets
from .metrics import per_row_outputs, row_parts


def batches_of_outputs(net: CompiledNet, p: Arrays, data: datasets.Dataset,
                       batch_size: int) -> Iterator[Arrays]:
    """The outputs of each batch of rows, in order; all of them at once without rows."""
    if data.rows is None:
        yield net.forward(p, **data.arrays)
        return
    for _, part in row_parts(data, batch_size):
        yield net.forward(p, **part)


def output_shapes(net: CompiledNet, data: datasets.Dataset, first: Arrays,
                  batch_size: int) -> dict[str, tuple]:
    """Each output's full shape over all rows, from the first batch's. An output without
    one row per sample (a mean over the batch) is a value of all the rows at once: refused
    when the rows come in more than one batch, rather than written for the last one."""
    per_row = per_row_outputs(net)
    if data.rows is not None and data.rows > batch_size:
        whole = [n for n in net.outputs if n not in per_row]
        if whole:
            raise BPShapeError(
                f"output {whole[0]}{format_shape(net.signature.output_shapes[whole[0]])} "
                f"has no row per sample: it reads all the rows at once, and --batch-size "
                f"{batch_size} splits the {data.rows} rows; give --batch-size {data.rows}")
    return {name: (data.rows, *array.shape[1:]) if name in per_row and data.rows is not None
            else array.shape for name, array in first.items()}


def write(net: CompiledNet, p: Arrays, data: datasets.Dataset, batch_size: int,
          out: str | None) -> str:
    """Every output over `data` to `out` (CSV when it ends .csv or is None, for standard
    output; an .npz archive; else a folder of .npy files); what was written, in words."""
    _check_out(out)
    parts = batches_of_outputs(net, p, data, batch_size)
    first = next(parts)
    shapes = output_shapes(net, data, first, batch_size)
    if out is None or out.endswith(".csv"):
        return _write_csv(net, data, first, parts, shapes, out)
    if out.endswith(".npz"):
        return _write_npz(Path(out), first, parts, shapes)
    return _write_folder(Path(out), first, parts, shapes)


def _check_out(out: str | None) -> None:
    """Where the outputs go can take them, before any is computed."""
    if out is None:
        return
    path = Path(out)
    if path.suffix.lower() == ".npy":
        raise BPTypeError(f"{out}: an .npy file holds one array; write a folder (a NAME.npy "
                          f"for each output), an .npz or a .csv")
    if path.suffix.lower() in (".csv", ".npz"):
        if path.is_dir():
            raise BPTypeError(f"{out} is a folder, not a {path.suffix} file")
        parent = path.parent if str(path.parent) else Path(".")
        if not parent.is_dir():
            raise BPTypeError(f"{out}: there is no folder {parent} to write it into")
    elif path.exists() and not path.is_dir():
        raise BPTypeError(f"{out} is a file; -o takes a .csv, an .npz or a folder")


def _chained(first: Arrays, rest: Iterator[Arrays]) -> Iterator[Arrays]:
    yield first
    yield from rest


def _fill(folder: Path, first: Arrays, rest: Iterator[Arrays], shapes: dict[str, tuple]
          ) -> dict[str, Path]:
    """NAME.npy in `folder` for each output, filled batch after batch through memory maps."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {name: folder / f"{name}.npy" for name in first}
    maps = {name: np.lib.format.open_memmap(files[name], mode="w+", dtype=first[name].dtype,
                                            shape=shapes[name]) for name in first}
    row = 0
    for part in _chained(first, rest):
        count = None
        for name, array in part.items():
            if array.shape == shapes[name]:  # an output without rows: once is enough
                maps[name][...] = array
                continue
            count = len(array)
            maps[name][row:row + count] = array
        row += count or 0
    for array in maps.values():
        array.flush()
    del maps
    return files


def _write_folder(folder: Path, first: Arrays, rest: Iterator[Arrays],
                  shapes: dict[str, tuple]) -> str:
    """NAME.npy files filled in a temporary folder inside `folder` (the same file system),
    then each moved over its old self: a failure part way leaves what was there before."""
    folder.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(prefix=".predict.", dir=folder))
    try:
        files = _fill(temp, first, rest, shapes)
        for name, file in files.items():
            os.replace(file, folder / file.name)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    return ", ".join(str(folder / f"{name}.npy") for name in files)


def _write_npz(path: Path, first: Arrays, rest: Iterator[Arrays],
               shapes: dict[str, tuple]) -> str:
    directory = path.parent if str(path.parent) else Path(".")
    temp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=directory))
    try:
        files = _fill(temp, first, rest, shapes)

        def archive(file: io.BufferedIOBase) -> None:
            with zipfile.ZipFile(file, "w", zipfile.ZIP_STORED, allowZip64=True) as z:
                for name, npy in files.items():
                    with npy.open("rb") as source, \
                            z.open(f"{name}.npy", "w", force_zip64=True) as member:
                        shutil.copyfileobj(source, member, 1 << 20)

        atomic.write(path, archive)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    return str(path)


def _write_csv(net: CompiledNet, data: datasets.Dataset, first: Arrays,
               rest: Iterator[Arrays], shapes: dict[str, tuple], out: str | None) -> str:
    for name, shape in shapes.items():
        if data.rows is None or not shape or shape[0] != data.rows or len(shape) > 2:
            raise BPShapeError(
                f"output {name}{format_shape(net.signature.output_shapes[name])} is not a "
                f"table of one row per sample; a CSV holds only those: write an .npz")
    # `y` for y[N] and y[N, 1], `y_0, y_1, ...` for more columns: as `train` reads them
    header = [name if len(shape) == 1 or shape[1] == 1 else f"{name}_{k}"
              for name, shape in shapes.items()
              for k in range(1 if len(shape) == 1 else shape[1])]

    def fill(text: TextIO) -> None:
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(header)
        for part in _chained(first, rest):
            columns = [a.reshape(len(a), -1) for a in part.values()]
            for row in np.concatenate(columns, axis=1):
                writer.writerow([repr(float(v)) for v in row])

    if out is None:
        fill(sys.stdout)
        return "standard output"

    def binary(file: io.BufferedIOBase) -> None:
        text = io.TextIOWrapper(file, encoding="utf-8", newline="")
        fill(text)
        text.flush()
        text.detach()

    atomic.write(out, binary)
    return out
