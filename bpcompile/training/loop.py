"""Minibatch training of a compiled network: seeded shuffles, epochs, a held-out validation
split, a progress bar, checkpoints, and Ctrl-C that stops between two steps.

Each epoch draws its own permutation from (seed, epoch), so a run resumed from a checkpoint
takes exactly the steps the uninterrupted run would have taken.

    result = bpcompile.train(net, "data.npz", epochs=10, batch_size=32, validation=0.1)
    result.params, result.history[-1].val_accuracy
"""

from __future__ import annotations

import math
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..errors import BPError, BPTypeError
from ..inspect.health import HealthReport, gradient_health
from ..runtime.net import Arrays, CompiledNet
from . import dataset as datasets
from .checkpoint import Checkpoint, Progress
from .metrics import accuracy, mean_loss

DIAGNOSE_ROWS = 1024  # rows the gradient health is measured on, each epoch
# Seed streams of their own, apart from every epoch's shuffle (epochs use 0, 1, 2, ...)
VALIDATION_STREAM = 2**31 - 1
DIAGNOSE_STREAM = 2**31 - 2


@dataclass(frozen=True)
class Epoch:
    """What one epoch achieved. Losses are means over rows (for a loss that sums over the
    batch, the mean of each batch's loss, weighted by its rows)."""

    epoch: int
    loss: float
    val_loss: float | None = None
    val_accuracy: float | None = None
    health: HealthReport | None = None


@dataclass
class TrainResult:
    params: Arrays
    state: Arrays
    history: list[Epoch] = field(default_factory=list)
    step_losses: list[float] = field(default_factory=list)
    progress: Progress = Progress()
    interrupted: bool = False
    error: BPError | None = None   # a step refused (a non-finite loss or gradient)
    batch_size: int | None = None
    rows: int | None = None         # the training rows the epochs were cut from
    best: Best | None = None        # with early stopping: the best epoch so far
    stopped_early: bool = False

    def checkpoint(self, seed: int) -> Checkpoint:
        return Checkpoint(self.params, self.state, self.progress, seed, self.batch_size,
                          self.rows)


@dataclass(frozen=True)
class Best:
    """The epoch with the lowest validation loss so far, and a copy of where it stood."""

    epoch: int
    val_loss: float
    checkpoint: Checkpoint


@dataclass(frozen=True)
class Split:
    train: datasets.Dataset
    validation: datasets.Dataset | None


def split(data: datasets.Dataset, fraction: float, seed: int) -> Split:
    """Hold out `fraction` of the rows (chosen by a seeded shuffle) for validation."""
    if not 0.0 <= fraction < 1.0:
        raise BPTypeError(f"validation fraction must be in [0, 1), not {fraction}")
    if fraction == 0.0:
        return Split(data, None)
    if data.rows is None:
        raise BPTypeError(f"{data.source}: no array has a batch dim, so there are no rows "
                          f"to hold out for validation")
    held = int(round(fraction * data.rows))
    if held < 1 or held >= data.rows:
        raise BPTypeError(f"{data.source}: a validation fraction of {fraction} of "
                          f"{data.rows} rows leaves {held} for validation and "
                          f"{data.rows - held} for training; each needs at least one")
    order = np.random.default_rng([seed, VALIDATION_STREAM]).permutation(data.rows)
    return Split(_subset(data, order[held:]), _subset(data, order[:held]))


def _subset(data: datasets.Dataset, rows: np.ndarray) -> datasets.Dataset:
    return replace(data, arrays=data.take(np.sort(rows)), rows=len(rows))


def batches(data: datasets.Dataset, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """Epoch `epoch`'s minibatches: row indices from a permutation seeded by (seed, epoch).
    The last batch may be smaller; without a batch dim, one batch of everything."""
    if data.rows is None:
        return [np.arange(0)]
    order = np.random.default_rng([seed, epoch]).permutation(data.rows)
    return [order[k:k + batch_size] for k in range(0, data.rows, batch_size)]


class Interrupt:
    """Ctrl-C while training: remembered, and acted on between two steps, so that no step is
    cut in half (the NumPy backend updates one param after another)."""

    def __init__(self) -> None:
        self.requested = False

    def request(self) -> None:
        self.requested = True

    @contextmanager
    def deferring_sigint(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield  # only the main thread receives signals
            return
        previous = signal.getsignal(signal.SIGINT)

        def first_ctrl_c(number: int, frame: object) -> None:
            self.request()
            signal.signal(signal.SIGINT, previous)  # a second Ctrl-C stops a hung step

        signal.signal(signal.SIGINT, first_ctrl_c)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)


EpochHook = Callable[[Epoch, TrainResult], None]
# One step on the rows given, in place on params and state; the loss before it.
Stepper = Callable[[Arrays, Arrays, np.ndarray], float]


def local_stepper(net: CompiledNet, data: datasets.Dataset) -> Stepper:
    """Steps in this process: `net.step` on the rows, taken from `data`."""
    if data.rows is None:
        return lambda p, s, rows: net.step(p, s, **data.arrays)
    return lambda p, s, rows: net.step(p, s, **data.take(rows))


def fit(net: CompiledNet, data: datasets.Dataset, *, epochs: int, batch_size: int = 32,
        seed: int = 0, validation: datasets.Dataset | None = None, diagnose: bool = False,
        start: Checkpoint | None = None, progress_bar: bool = True,
        on_epoch: EpochHook | None = None, interrupt: Interrupt | None = None,
        after_step: Callable[[int, int], None] | None = None,
        stepper: Stepper | None = None, patience: int | None = None) -> TrainResult:
    """Train `net` on `data` until `epochs` epochs are done in all (counting a checkpoint's),
    from `start` or from `net.init(seed)`. Params and state are updated in place, by
    `stepper` (default: `net.step` in this process). `patience`: stop early once the
    validation loss has not improved for that many epochs (`result.best` keeps the best)."""
    if not net.has_loss:
        raise BPTypeError(f"network {net.name} has no loss, so it cannot be trained")
    if patience is not None and (patience < 1 or validation is None):
        raise BPTypeError("early stopping watches the validation loss: it needs a patience "
                          f"of at least 1 epoch (not {patience}) and validation rows")
    if batch_size < 1:
        raise BPTypeError(f"batch size must be at least 1, not {batch_size}")
    if start is None:
        params = net.init(seed=seed)
        start = Checkpoint(params, net.init_state(params, seed=seed), Progress(), seed)
    _check_resumable(start, batch_size, data.rows)
    result = TrainResult(start.params, start.state, progress=start.progress,
                         batch_size=batch_size, rows=data.rows)
    interrupt = interrupt or Interrupt()
    per_epoch = len(batches(data, batch_size, seed, 0))
    done = start.progress
    bar = tqdm(total=per_epoch * epochs, initial=per_epoch * done.epoch + done.step,
               unit="step", disable=not progress_bar, dynamic_ncols=True)
    with interrupt.deferring_sigint(), bar:
        for epoch in range(done.epoch, epochs):
            bar.set_description(f"epoch {epoch + 1}/{epochs}", refresh=False)
            _run_epoch(stepper or local_stepper(net, data), data, result, epoch, batch_size,
                       seed, interrupt, bar, after_step)
            if result.interrupted or result.error is not None:
                break
            record = _evaluate(net, data, validation, result, epoch, batch_size, seed,
                               diagnose)
            result.history.append(record)
            result.progress = Progress(epoch + 1)
            if patience is not None:
                _keep_best(result, record, seed)
            if on_epoch is not None:
                on_epoch(record, result)
            if patience is not None and result.best is not None and \
                    record.epoch - result.best.epoch >= patience:
                result.stopped_early = True
                break
    return result


def _keep_best(result: TrainResult, record: Epoch, seed: int) -> None:
    """Copy the params and state when the validation loss is the lowest yet (early
    stopping keeps them, not the last epoch's)."""
    if record.val_loss is None or not math.isfinite(record.val_loss):
        return
    if result.best is None or record.val_loss < result.best.val_loss:
        now = result.checkpoint(seed)
        copy = Checkpoint({n: a.copy() for n, a in now.params.items()},
                          {n: a.copy() for n, a in now.state.items()}, now.progress, seed,
                          now.batch_size, now.rows)
        result.best = Best(record.epoch, record.val_loss, copy)


def _check_resumable(start: Checkpoint, batch_size: int, rows: int | None) -> None:
    """A run stopped inside an epoch continues only with the same batches: the same batch
    size over the same rows (the same data and validation split)."""
    if start.progress.step == 0:
        return
    saved = (start.batch_size, start.rows)
    if saved != (batch_size, rows) and saved != (None, None):
        raise BPTypeError(
            f"the saved run stopped {start.progress.step} steps into epoch "
            f"{start.progress.epoch + 1}, cutting {start.rows} training rows into batches of "
            f"{start.batch_size}; this run has {rows} rows in batches of {batch_size}. "
            f"Resume with the same batch size, data and validation split, or from a "
            f"checkpoint saved at the end of an epoch")


def _run_epoch(stepper: Stepper, data: datasets.Dataset, result: TrainResult, epoch: int,
               batch_size: int, seed: int, interrupt: Interrupt, bar: tqdm,
               after_step: Callable[[int, int], None] | None) -> None:
    plan = batches(data, batch_size, seed, epoch)
    done = result.progress
    loss_sum, rows_seen = done.loss_sum, done.loss_rows
    for k in range(done.step, len(plan)):
        if interrupt.requested:
            result.interrupted = True
            return
        rows = len(plan[k]) if data.rows is not None else 1
        try:
            loss = stepper(result.params, result.state, plan[k])
        except BPError as error:  # refused: nothing changed; stop with what we have
            result.error = type(error)(
                f"training stopped in epoch {epoch + 1}, step {k + 1}: {error}")
            return
        result.step_losses.append(loss)
        loss_sum += loss * rows
        rows_seen += rows
        result.progress = Progress(epoch, k + 1, loss_sum, rows_seen)
        bar.update(1)
        bar.set_postfix(loss=f"{loss_sum / rows_seen:.4g}", refresh=False)
        if after_step is not None:
            after_step(epoch, k)


def _evaluate(net: CompiledNet, data: datasets.Dataset,
              validation: datasets.Dataset | None, result: TrainResult, epoch: int,
              batch_size: int, seed: int, diagnose: bool) -> Epoch:
    done = result.progress
    loss = done.loss_sum / done.loss_rows if done.loss_rows else math.nan
    record = Epoch(epoch + 1, loss)
    if validation is not None:
        record = replace(record, val_loss=mean_loss(net, result.params, validation, batch_size),
                         val_accuracy=accuracy(net, result.params, validation))
    if diagnose:
        if data.rows is None:
            arrays = data.arrays
        else:
            arrays = data.take(batches(data, DIAGNOSE_ROWS, seed, DIAGNOSE_STREAM)[0])
        record = replace(record, health=gradient_health(net, result.params, **arrays))
    return record


def train(net: CompiledNet, data: str | Path | dict, *, epochs: int, batch_size: int = 32,
          seed: int = 0, validation: float = 0.0, diagnose: bool = False,
          progress_bar: bool = False, on_epoch: EpochHook | None = None,
          patience: int | None = None) -> TrainResult:
    """Train `net` on `data` (an .npz or .csv path, or a dict of arrays), holding out the
    fraction `validation` of the rows. The API face of `bpcompile train`."""
    if isinstance(data, dict):
        loaded = datasets.dataset(data, net.signature, "data")
    else:
        loaded = datasets.load(data, net.signature)
    parts = split(loaded, validation, seed)
    return fit(net, parts.train, epochs=epochs, batch_size=batch_size, seed=seed,
               validation=parts.validation, diagnose=diagnose, progress_bar=progress_bar,
               on_epoch=on_epoch, patience=patience)
