"""Saved training: params, optimizer state and progress in one `.npz`, written atomically.

Params keep their own names (`np.load(path)["W1"]` is W1); optimizer state is stored as
`state:NAME` and progress as `meta:...`, so a resumed run continues exactly where the saved
one stopped: the same epoch, the same step within it, the same shuffle.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import atomic
from ..errors import BPNameError, BPShapeError, BPTypeError
from ..runtime.net import CompiledNet
from ..runtime.params_file import META, STATE, load_params, read_archive, write_npz
from ..runtime.randomness import RNG, fresh_rng

STEPS = "step"  # the state entry counting updates (Adam's, and any schedule's)


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
    """Params and state, and where the run stood: its seed, and the batch size and row count
    its epochs were cut with (None for a plain file of params)."""

    params: dict[str, np.ndarray]
    state: dict[str, np.ndarray]
    progress: Progress
    seed: int | None
    batch_size: int | None = None
    rows: int | None = None
    optimizer: str | None = None   # the optimizer it was trained with, as `optimizer_text`
    network: str | None = None     # the network it was saved from


def save(path: str | Path, net: CompiledNet, checkpoint: Checkpoint) -> None:
    """Write `checkpoint` to `path`, atomically."""
    path = Path(path)
    arrays: dict[str, np.ndarray] = dict(checkpoint.params)
    arrays.update({STATE + name: value for name, value in checkpoint.state.items()})
    progress = checkpoint.progress
    arrays.update({
        META + "network": np.array(net.name),
        META + "optimizer": np.array(optimizer_text(net)),
        META + "dtype": np.array(net.dtype.name),
        META + "seed": np.array(-1 if checkpoint.seed is None else checkpoint.seed),
        META + "batch_size": np.array(checkpoint.batch_size or 0),
        META + "rows": np.array(-1 if checkpoint.rows is None else checkpoint.rows),
        META + "epoch": np.array(progress.epoch),
        META + "step": np.array(progress.step),
        META + "loss_sum": np.array(progress.loss_sum),
        META + "loss_rows": np.array(progress.loss_rows),
    })
    atomic.write(path, lambda file: write_npz(file, arrays))


def load(path: str | Path, net: CompiledNet) -> Checkpoint:
    """A checkpoint (or a plain `.npz` of params) for `net`: every param present with its
    shape; state and progress when the file has them, else fresh ones."""
    path = Path(path)
    stored = read_archive(path)

    def meta(name: str, default: float) -> float:
        value = stored.get(META + name)
        return default if value is None else value.item()

    # buffers too: they are in p
    params = load_params(path, {**net.params, **net.buffers}, net.dtype, net.name)
    saved_optimizer = str(stored[META + "optimizer"]) if META + "optimizer" in stored else None
    _check_same_optimizer(path, stored, net, saved_optimizer)
    state = net.init_state(params)
    for name, shape in net.state.items():
        if STATE + name in stored:
            state[name] = _param(path, stored, STATE + name, shape, net)
        elif name == STEPS:  # a schedule added on resuming: count the updates taken
            state[name][...] = _updates_taken(meta)
    if net.signature.masks:  # dropout's seed and step count: the resumed run's masks
        state[RNG] = _rng(path, stored, net, int(meta("seed", 0)))

    progress = Progress(int(meta("epoch", 0)), int(meta("step", 0)),
                        float(meta("loss_sum", 0.0)), int(meta("loss_rows", 0)))

    def known(name: str, absent: int) -> int | None:
        """A number saved only when known; `absent` stands for unknown."""
        value = int(meta(name, absent))
        return None if value == absent else value

    network = str(stored[META + "network"]) if META + "network" in stored else None
    return Checkpoint(params, state, progress, known("seed", -1), known("batch_size", 0),
                      known("rows", -1), saved_optimizer, network)


def optimizer_text(net: CompiledNet) -> str:
    """The optimizer with every option, defaults filled in: `sgd(lr=0.1, momentum=0.9)`."""
    config = net.signature.optimizer
    options = [f"{k}={v}" for k, v in sorted(config.options.items())]
    calls = [f"{kind}({', '.join(f'{v:g}' for v in args)})" for kind, args in config.schedule]
    if calls:
        options.append(f"schedule={calls[0] if len(calls) == 1 else '[' + ', '.join(calls) + ']'}")
    return f"{config.kind}({', '.join(options)})"


def _check_same_optimizer(path: Path, stored: Mapping[str, np.ndarray], net: CompiledNet,
                          saved: str | None) -> None:
    """Resuming with another kind of optimizer, or one keeping other state (momentum
    buffers, Adam's moments), would drop the saved state: refused, both named. A changed
    option (a smaller lr) keeps the state's meaning and is allowed."""
    # the step count is state a schedule adds or leaves out; what the updates keep per
    # param (momentum, Adam's moments) must carry over
    kept = {name[len(STATE):] for name in stored if name.startswith(STATE)} - {RNG, STEPS}
    wanted = set(net.state) - {STEPS}
    now = optimizer_text(net)
    kind = saved.split("(")[0] if saved else None
    if (kind is not None and kind != net.signature.optimizer.kind) or \
            (kept and kept != wanted):
        was = saved or f"an optimizer keeping state {', '.join(sorted(kept))}"
        raise BPTypeError(f"{path} was trained with {was}, but network {net.name} now "
                          f"optimizes with {now}: resuming would drop the saved optimizer "
                          f"state. Resume with the optimizer it was trained with, or train "
                          f"afresh without --resume")


def _updates_taken(meta: Callable[[str, float], float]) -> int:
    """The updates a saved run took, from its progress (0 when it does not say)."""
    batch, rows = int(meta("batch_size", 0)), int(meta("rows", -1))
    per_epoch = -(-rows // batch) if batch > 0 and rows > 0 else 0
    return int(meta("epoch", 0)) * per_epoch + int(meta("step", 0))


def _rng(path: Path, stored: Mapping[str, np.ndarray], net: CompiledNet,
         seed: int) -> np.ndarray:
    """The saved [seed, step count] of dropout's generator; a file without one (params
    only) starts the run's seed at step 0."""
    array = stored.get(STATE + RNG)
    if array is None:
        return fresh_rng(max(seed, 0))
    if array.shape != (2,) or array.dtype.kind not in "iu":
        raise BPShapeError(f"{path}: '{STATE + RNG}' is {array.dtype} {array.shape}, but "
                           f"network {net.name} needs 2 whole numbers, [seed, step count]")
    return np.array(array, dtype=np.uint64)


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
