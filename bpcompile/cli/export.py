"""`bpcompile export NET.bp --params P.npz --to numpy|c`: ship a trained network as a
standalone NumPy module or a C library (export/)."""

from __future__ import annotations

import argparse

from ..api import compile_file
from ..export import c_library, numpy_module

HELP = "write a trained network as a standalone NumPy module or a C library"
TARGETS = ("numpy", "c")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", metavar="P.npz",
                        help="trained params: `train --out`'s file or `net.save_params`'s "
                             "(default: fresh ones, init(seed=--seed), to train elsewhere)")
    parser.add_argument("--seed", type=int, default=0,
                        help="the seed of the fresh params when --params is not given")
    parser.add_argument("--to", choices=TARGETS, default="numpy",
                        help="numpy: NET.py, importable with NumPy alone; c: NET.h and NET.o, "
                             "a C library calling only the C and math libraries")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float64")
    parser.add_argument("--cpu", metavar="NAME",
                        help="c: the CPU the object is for (default: this machine's; "
                             "x86-64 runs on any x86-64, more slowly)")
    parser.add_argument("-o", "--out", default=".", metavar="DIR",
                        help="the folder to write into (default: the current one)")


def run(args: argparse.Namespace) -> int:
    net = compile_file(args.net, backend="numpy" if args.to == "numpy" else "llvm",
                       dtype=args.dtype)
    if args.params is not None:
        params, source = net.load_params(args.params), args.params
    else:
        params, source = net.init(seed=args.seed), f"init(seed={args.seed})"
    if args.to == "numpy":
        path = numpy_module.export(net, params, source, args.out)
        print(f"wrote {path}: `from {path.stem} import predict`; predict("
              f"{', '.join(net.inputs)}) gives {', '.join(net.outputs)}")
        return 0
    header, objects = c_library.export(net, params, args.out, args.cpu)
    print(f"wrote {header} and {objects} (params: {source}); build a program with "
          f"`cc -O2 -I{header.parent} main.c {objects} -lm`")
    return 0
