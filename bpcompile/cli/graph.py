"""`bpcompile graph NET.bp`: the graph as Graphviz DOT or Mermaid, or rendered."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..api import compile_file

HELP = ("draw the forward graph (with --backward, the backward graph too) as Graphviz DOT "
        "or Mermaid, or render it to SVG or PNG")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", choices=("dot", "mermaid", "svg", "png"), default="dot",
                        help="svg and png need Graphviz's `dot` program (default: dot)")
    parser.add_argument("--backward", action="store_true",
                        help="add the backward pass: adjoints d_NAME and each param's "
                        "gradient")
    parser.add_argument("-o", "--output", help="output file ('-' for standard output; "
                        "default: standard output for dot and mermaid, NET.svg or NET.png "
                        "in the current directory for svg and png)")
    parser.add_argument("--backend", choices=("numpy", "llvm"), default="numpy")


def run(args: argparse.Namespace) -> int:
    from ..inspect.picture import TEXT_FORMATS, draw, save

    net = compile_file(args.net, backend=args.backend)
    data = draw(net, args.format, backward=args.backward)
    if args.output == "-" or (args.output is None and args.format in TEXT_FORMATS):
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return 0
    out = Path(args.output) if args.output else Path(f"{Path(args.net).stem}.{args.format}")
    save(out, data)
    print(f"wrote {out}")
    return 0
