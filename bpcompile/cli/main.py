"""The `bpcompile` command's entry point: parse the command line, run the subcommand. A bad
`.bp` file prints the located error and exits with status 2, never a traceback."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from types import ModuleType

from .._version import __version__
from ..errors import BPError
from . import check, compile, evaluate, explain, export, graph, predict, show, train

# subcommand -> its module: `HELP`, `add_arguments(parser)` and `run(args) -> exit status`
COMMANDS: dict[str, ModuleType] = {
    "compile": compile, "show": show, "explain": explain, "check": check, "graph": graph,
    "train": train, "predict": predict, "evaluate": evaluate, "export": export,
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bpcompile", description="Compile .bp networks to NumPy or LLVM, with gradients."
    )
    parser.add_argument("--version", action="version", version=f"bpcompile {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, command in COMMANDS.items():
        p = sub.add_parser(name, help=command.HELP, description=command.HELP)
        p.add_argument("net", metavar="NET.bp", help="the network to compile")
        p.set_defaults(run=command.run)
        command.add_arguments(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.run(args)
    except BPError as error:
        print(error, file=sys.stderr)
        return 2
    except OSError as error:
        print(f"bpcompile: {error}", file=sys.stderr)
        return 2
