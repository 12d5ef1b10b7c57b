"""`bpcompile evaluate NET.bp --params P.npz --data DATA`: a trained network's mean loss over
data in inference mode and, for a classifier, its accuracy and (`--confusion`) its
confusion matrix (training/metrics.py)."""

from __future__ import annotations

import argparse

import numpy as np

from ..errors import BPNameError
from ..training import dataset as datasets
from ..training.metrics import classes, mean_loss
from .predict import add_common, prepare

HELP = "a trained network's mean loss and, for a classifier, accuracy"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common(parser, ".npz, .csv or a folder of NAME.npy files holding the network's "
                       "inputs and targets")
    parser.add_argument("--confusion", action="store_true",
                        help="also print the confusion matrix (rows: true class, columns: "
                             "predicted), for a classifier")


def run(args: argparse.Namespace) -> int:
    net, p = prepare(args)
    if not net.has_loss:
        raise BPNameError(f"network {net.name} has no loss to evaluate; `bpcompile predict` "
                          f"gives its outputs")
    data = datasets.load(args.data, net.signature)
    rows = f"{data.rows} rows" if data.rows is not None else "all of it"
    print(f"{net.name} on {args.data} ({rows}), inference mode")
    print(f"  mean loss {mean_loss(net, p, data, args.batch_size):.6g}")
    found = classes(net, p, data)
    if found is not None:
        right = int(np.sum(found.predicted == found.true))
        print(f"  accuracy  {found.accuracy():.2%} ({right} of {found.true.size})")
        if args.confusion:
            print(confusion_text(found.confusion()))
    elif args.confusion:
        print("  (no confusion matrix: no output is compared with a target of classes)")
    return 0


def confusion_text(counts: np.ndarray) -> str:
    """The matrix with its class numbers: rows are the true class, columns the predicted."""
    width = max(len(str(counts.max())), len(str(len(counts) - 1)), 4)
    head = "  true \\ predicted " + " ".join(f"{k:>{width}}" for k in range(len(counts)))
    rows = [f"  {t:>17} " + " ".join(f"{c:>{width}}" for c in row)
            for t, row in enumerate(counts)]
    return "\n".join([head, *rows])
