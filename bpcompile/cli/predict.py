"""`bpcompile predict NET.bp --params P.npz --data DATA`: a trained network's outputs over
data of any size, in inference mode, a batch at a time (training/predictions.py)."""

from __future__ import annotations

import argparse
import sys

from ..api import compile_file
from ..errors import BPTypeError
from ..runtime.net import Arrays, CompiledNet
from ..training import dataset as datasets
from ..training import predictions

HELP = "run a trained network over data (inputs only), writing every output"


def add_common(parser: argparse.ArgumentParser, data_help: str) -> None:
    """The options `predict` and `evaluate` share."""
    parser.add_argument("--params", required=True, metavar="P.npz",
                        help="trained params: `train --out`'s file (a checkpoint) or "
                             "`net.save_params`'s")
    parser.add_argument("--data", required=True, metavar="DATA", help=data_help)
    parser.add_argument("--batch-size", type=int, default=1024,
                        help="rows computed at a time (default 1024)")
    parser.add_argument("--backend", choices=("numpy", "llvm"), default="numpy")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float64")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common(parser, ".npz, .csv or a folder of NAME.npy files holding the network's "
                       "inputs (targets, if there, are ignored)")
    parser.add_argument("-o", "--out", metavar="OUT",
                        help="OUT.csv, OUT.npz, or a folder for NAME.npy files "
                             "(default: CSV on standard output)")


def prepare(args: argparse.Namespace) -> tuple[CompiledNet, Arrays]:
    """The network and its trained params, checked."""
    if args.batch_size < 1:
        raise BPTypeError(f"--batch-size must be at least 1, not {args.batch_size}")
    net = compile_file(args.net, backend=args.backend, dtype=args.dtype)
    return net, net.load_params(args.params)


def run(args: argparse.Namespace) -> int:
    net, p = prepare(args)
    data = datasets.load(args.data, net.signature, net.inputs)
    written = predictions.write(net, p, data, args.batch_size, args.out)
    if args.out is not None:
        rows = f"{data.rows} rows" if data.rows is not None else "the data"
        print(f"predicted {', '.join(net.outputs)} for {rows} of {args.data}: {written}",
              file=sys.stderr)
    return 0
