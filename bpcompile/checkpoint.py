"""Saved training: params, optimizer state and progress in one `.npz`, written atomically.

Params keep their own names (`np.load(path)["W1"]` is W1); optimizer state is stored as
`state:NAME` and progress as `meta:...`, so a resumed run continues exactly where the saved
one stopped: the same epoch, the same step within it, the same shuffle.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import BPError, BPNameError, BPShapeError
from .runtime import CompiledNet

STATE = "state:"
META = "meta:"


@dataclass(frozen=True)
class Progress:
    """Where a run stands: epochs finished, steps taken in the current epoch, and the loss
    summed over that epoch so far (weighted by rows) with its row count."""

    epoch: int = 0
    step: int = 0
    loss_sum: float = 0.0
    loss_rows: int = 0


@dataclass(frozen=True)
class Checkpoint:
    params: dict[str, np.ndarray]
    state: dict[str, np.ndarray]
    progress: Progress
    seed: int


def save(path: str | Path, net: CompiledNet, checkpoint: Checkpoint) -> None:
    """Write `checkpoint` to `path` so that a reader (or a crash) never meets half a file:
    into a temporary file beside it, flushed to disk, then renamed over it."""
    path = Path(path)
    arrays: dict[str, np.ndarray] = dict(checkpoint.params)
    arrays.update({STATE + name: value for name, value in checkpoint.state.items()})
    progress = checkpoint.progress
    arrays.update({
        META + "network": np.array(net.name),
        META + "dtype": np.array(net.dtype.name),
        META + "seed": np.array(checkpoint.seed),
        META + "epoch": np.array(progress.epoch),
        META + "step": np.array(progress.step),
        META + "loss_sum": np.array(progress.loss_sum),
        META + "loss_rows": np.array(progress.loss_rows),
    })
    directory = path.parent if str(path.parent) else Path(".")
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(handle, "wb") as file:
            np.savez(file, **arrays)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def load(path: str | Path, net: CompiledNet) -> Checkpoint:
    """A checkpoint (or a plain `.npz` of params) for `net`: every param present with its
    shape; state and progress when the file has them, else fresh ones."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            stored = {name: archive[name] for name in archive.files}
    except FileNotFoundError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as error:
        raise BPError(f"{path}: not a readable .npz archive ({error})") from None
    params = {name: _param(path, stored, name, shape, net)
              for name, shape in net.params.items()}
    if any(STATE + name in stored for name in net.state):
        state = {name: _param(path, stored, STATE + name, shape, net)
                 for name, shape in net.state.items()}
    else:
        state = net.init_state(params)

    def meta(name: str, default: float) -> float:
        value = stored.get(META + name)
        return default if value is None else value.item()

    progress = Progress(int(meta("epoch", 0)), int(meta("step", 0)),
                        float(meta("loss_sum", 0.0)), int(meta("loss_rows", 0)))
    return Checkpoint(params, state, progress, int(meta("seed", 0)))


def _param(path: Path, stored: Mapping[str, np.ndarray], key: str, shape: tuple[int, ...],
           net: CompiledNet) -> np.ndarray:
    if key not in stored:
        raise BPNameError(f"{path}: no array '{key}', which network {net.name} needs "
                          f"(saved from another network?)")
    array = stored[key]
    if array.shape != shape or array.dtype.kind not in "biuf":
        raise BPShapeError(f"{path}: '{key}' is {array.dtype} {array.shape}, but network "
                           f"{net.name} needs {shape}")
    return np.array(array, dtype=net.dtype, order="C")
