"""`bpcompile show NET.bp`: each param's gradient as math and as the code computing it."""

from __future__ import annotations

import argparse
import sys

from ..api import compile_file

HELP = "show each param's gradient as math and as code"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--param", help="only this param")
    parser.add_argument("--backend", choices=("numpy", "llvm"), default="numpy")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float64")
    parser.add_argument("--latex", action="store_true", help="print LaTeX instead of text")


def run(args: argparse.Namespace) -> int:
    from ..inspect.show import describe  # SymPy's printers load only for this command

    net = compile_file(args.net, backend=args.backend, dtype=args.dtype)
    sys.stdout.write(describe(net, args.param, latex=args.latex))
    return 0
