"""How well a network does on data: its outputs computed a part at a time, the mean loss,
and for a classifier the class it picks against the true one (accuracy, confusion matrix).

A network is a classifier here when one of its outputs has a target's shape and the target
reads as classes: one-hot rows (compared by argmax), 0/1 values (the output thresholded at
0.5 if it lies in [0, 1], else at 0, as logits), or class indices (against the argmax of an
output with one more axis).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ..runtime.net import Arrays, CompiledNet
from . import dataset as datasets


@dataclass(frozen=True)
class Classes:
    """Each row's class as the network picks it and as the target says, of `count`."""

    predicted: np.ndarray
    true: np.ndarray
    count: int

    def accuracy(self) -> float:
        return float(np.mean(self.predicted == self.true))

    def confusion(self) -> np.ndarray:
        """counts[true, predicted], as scikit-learn's confusion_matrix."""
        counts = np.zeros((self.count, self.count), dtype=np.int64)
        np.add.at(counts, (self.true.ravel(), self.predicted.ravel()), 1)
        return counts


def row_parts(data: datasets.Dataset, rows: int) -> Iterator[tuple[int, Arrays]]:
    """`data` a part of `rows` rows at a time, in order, with each part's row count
    (memory-mapped data is then read a part at a time)."""
    for k in range(0, data.rows, rows):
        taken = np.arange(k, min(k + rows, data.rows))
        yield len(taken), data.take(taken)


def forward_in_batches(net: CompiledNet, p: Arrays, data: datasets.Dataset,
                       rows: int = 4096) -> Arrays:
    """The outputs for all of `data`, computed `rows` at a time."""
    if data.rows is None or data.rows <= rows:
        return net.forward(p, **{n: data.arrays[n] for n in net.inputs})
    parts = [net.forward(p, **{n: part[n] for n in net.inputs})
             for _, part in row_parts(data, rows)]
    batched = per_row_outputs(net)
    # an output without rows reads all of a batch: only the outputs per row are kept
    return {n: np.concatenate([part[n] for part in parts]) for n in batched}


def per_row_outputs(net: CompiledNet) -> list[str]:
    """The outputs with one row per sample: those the network's batch dim leads."""
    dim = datasets.batch_dim(net.signature)
    shapes = net.signature.output_shapes
    return [n for n in net.outputs if dim is not None and shapes[n][:1] == (dim,)]


def mean_loss(net: CompiledNet, p: Arrays, data: datasets.Dataset, batch_size: int) -> float:
    """The loss over `data` in batches of `batch_size`, weighted by rows (as training's)."""
    if data.rows is None:
        return net.loss(p, **data.arrays)
    total = sum(net.loss(p, **part) * count for count, part in row_parts(data, batch_size))
    return total / data.rows


def classes(net: CompiledNet, p: Arrays, data: datasets.Dataset,
            outputs: Arrays | None = None) -> Classes | None:
    """The class each row gets and should get, for a classifier; None for another network."""
    outputs = forward_in_batches(net, p, data) if outputs is None else outputs
    for name in net.signature.indices:
        if name not in net.targets:
            continue
        target = data.arrays[name]
        output = next((outputs[o] for o in net.outputs
                       if outputs[o].shape[:-1] == target.shape), None)
        if output is not None:
            return Classes(np.argmax(output, axis=-1), np.asarray(target, dtype=np.int64),
                           output.shape[-1])
    for name, target in ((n, data.arrays[n]) for n in net.targets):
        output = next((outputs[o] for o in net.outputs if outputs[o].shape == target.shape),
                      None)
        if output is None or not np.all((target == 0) | (target == 1)):
            continue
        if target.ndim >= 2 and target.shape[-1] > 1:
            if not np.all(target.sum(axis=-1) == 1):
                continue
            return Classes(np.argmax(output, axis=-1), np.argmax(target, axis=-1),
                           target.shape[-1])
        threshold = 0.5 if np.all((output >= 0) & (output <= 1)) else 0.0
        return Classes((output > threshold).astype(np.int64), (target == 1).astype(np.int64), 2)
    return None


def accuracy(net: CompiledNet, p: Arrays, data: datasets.Dataset) -> float | None:
    """The fraction classified right, for a classifier (module docstring); else None."""
    found = classes(net, p, data)
    return None if found is None else found.accuracy()
