"""`bpcompile explain NET.bp`: a small network's gradients unrolled into scalars."""

from __future__ import annotations

import argparse
import sys

from ..api import compile_file

HELP = "unroll a small network's gradients into scalars, simplified by SymPy"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch", type=int, default=1, help="samples to unroll (default 1)")
    parser.add_argument("--param", help="only this param's gradients")
    parser.add_argument("--latex", action="store_true", help="print LaTeX instead of text")


def run(args: argparse.Namespace) -> int:
    from ..inspect.explain import explain

    net = compile_file(args.net, backend="numpy", dtype="float64")
    explanation = explain(net, batch=args.batch, param=args.param)
    sys.stdout.write(explanation.latex() if args.latex else explanation.text())
    return 0
