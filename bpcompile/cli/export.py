"""`bpcompile export NET.bp --params P.npz --to numpy`: ship a trained network as a
standalone module (export/)."""

from __future__ import annotations

import argparse

from ..api import compile_file
from ..export import numpy_module

HELP = "write a trained network as a standalone NumPy module holding its params"
TARGETS = ("numpy",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", required=True, metavar="P.npz",
                        help="trained params: `train --out`'s file or `net.save_params`'s")
    parser.add_argument("--to", choices=TARGETS, default="numpy",
                        help="numpy: NET.py, importable with NumPy alone")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float64")
    parser.add_argument("-o", "--out", default=".", metavar="DIR",
                        help="the folder to write into (default: the current one)")


def run(args: argparse.Namespace) -> int:
    net = compile_file(args.net, backend="numpy", dtype=args.dtype)
    params = net.load_params(args.params)
    path = numpy_module.export(net, params, args.params, args.out)
    print(f"wrote {path}: `from {path.stem} import predict`; predict("
          f"{', '.join(net.inputs)}) gives {', '.join(net.outputs)}")
    return 0
