"""`bpcompile compile NET.bp`: write the generated NumPy module (.py) or LLVM IR (.ll)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .. import atomic
from ..api import compile_file

HELP = "write the generated module (.py) or LLVM IR (.ll)"
EXTENSIONS = {"numpy": ".py", "llvm": ".ll"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", choices=tuple(EXTENSIONS), default="numpy")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float64")
    parser.add_argument("-o", "--output", help="output file ('-' for standard output; "
                        "default: NET.py or NET.ll in the current directory)")


def run(args: argparse.Namespace) -> int:
    net = compile_file(args.net, backend=args.backend, dtype=args.dtype)
    if args.output == "-":
        sys.stdout.write(net.code())
        return 0
    out = Path(args.output) if args.output else Path(Path(args.net).stem +
                                                      EXTENSIONS[args.backend])
    atomic.write_text(out, net.code())
    print(f"wrote {out}")
    return 0
