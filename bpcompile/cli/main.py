"""The `bpcompile` command. A bad `.bp` file prints the located error and exits with status 2,
never a traceback."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from .. import atomic
from .._version import __version__
from ..api import compile_file
from ..errors import BPError
from ..graph.ir import Op
from ..inspect.gradcheck import gradcheck
from ..runtime.net import CompiledNet
from . import train as train_command

EXTENSIONS = {"numpy": ".py", "llvm": ".ll"}


def cmd_compile(args: argparse.Namespace) -> int:
    net = compile_file(args.net, backend=args.backend, dtype=args.dtype)
    if args.output == "-":
        sys.stdout.write(net.code())
        return 0
    out = Path(args.output) if args.output else Path(Path(args.net).stem +
                                                      EXTENSIONS[args.backend])
    atomic.write_text(out, net.code())
    print(f"wrote {out}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from ..inspect.show import describe

    net = compile_file(args.net, backend=args.backend, dtype=args.dtype)
    sys.stdout.write(describe(net, args.param, latex=args.latex))
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from ..inspect.explain import explain

    net = compile_file(args.net, backend="numpy", dtype="float64")
    explanation = explain(net, batch=args.batch, param=args.param)
    sys.stdout.write(explanation.latex() if args.latex else explanation.text())
    return 0


def random_data(net: CompiledNet, batch: int, rng: np.random.Generator,
                positive: bool = False) -> dict[str, np.ndarray]:
    """Data for a check: inputs ~ N(0, 1) (or U(0.1, 1) when `positive`); targets in [0, 1],
    and one-hot rows for targets of a cross_entropy."""
    graph = net.compiled.graph
    one_hot = {graph.nodes[n.inputs[1]].name for n in graph.nodes if n.op is Op.SOFTMAX_XENT}
    data = {}
    for name, shape in net.network.data.items():
        concrete = tuple(batch if isinstance(d, str) else d for d in shape)
        if name in one_hot and concrete:
            classes = concrete[-1]
            labels = rng.integers(0, classes, size=concrete[:-1])
            data[name] = np.eye(classes)[labels]
        elif name in net.targets:
            data[name] = rng.uniform(0.0, 1.0, size=concrete)
        elif positive:
            data[name] = rng.uniform(0.1, 1.0, size=concrete)
        else:
            data[name] = rng.standard_normal(concrete)
    return data


def cmd_check(args: argparse.Namespace) -> int:
    net = compile_file(args.net, backend=args.backend, dtype="float64")
    if not net.has_loss:
        raise BPError(f"{args.net}: the network has no loss, so there is no gradient to check")
    rng = np.random.default_rng(args.seed)
    p = net.init(seed=args.seed)
    data = random_data(net, args.batch, rng)
    if not np.isfinite(net.loss(p, **data)):  # e.g. log of a negative input: try positives
        data = random_data(net, args.batch, rng, positive=True)
    result = gradcheck(net, p, seed=args.seed, **data)
    print(f"{args.net}: batch {args.batch}, seed {args.seed}, backend {args.backend}")
    print(result)
    return 0 if result.ok else 1


def cmd_graph(args: argparse.Namespace) -> int:
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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bpcompile", description="Compile .bp networks to NumPy or LLVM, with gradients."
    )
    parser.add_argument("--version", action="version", version=f"bpcompile {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, run: Callable[[argparse.Namespace], int], help: str):
        p = sub.add_parser(name, help=help, description=help)
        p.add_argument("net", metavar="NET.bp", help="the network to compile")
        p.set_defaults(run=run)
        return p

    backends = ("numpy", "llvm")
    p = command("compile", cmd_compile, "write the generated module (.py) or LLVM IR (.ll)")
    p.add_argument("--backend", choices=backends, default="numpy")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float64")
    p.add_argument("-o", "--output", help="output file ('-' for standard output; default: "
                   "NET.py or NET.ll in the current directory)")

    p = command("show", cmd_show, "show each param's gradient as math and as code")
    p.add_argument("--param", help="only this param")
    p.add_argument("--backend", choices=backends, default="numpy")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float64")
    p.add_argument("--latex", action="store_true", help="print LaTeX instead of text")

    p = command("explain", cmd_explain,
                "unroll a small network's gradients into scalars, simplified by SymPy")
    p.add_argument("--batch", type=int, default=1, help="samples to unroll (default 1)")
    p.add_argument("--param", help="only this param's gradients")
    p.add_argument("--latex", action="store_true", help="print LaTeX instead of text")

    p = command("check", cmd_check,
                "compare gradients with central differences on random data (exit 0 or 1)")
    p.add_argument("--batch", type=int, default=5, help="batch size for symbolic dims")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backend", choices=backends, default="numpy")

    p = command("graph", cmd_graph, "draw the forward graph (with --backward, the backward "
                "graph too) as Graphviz DOT or Mermaid, or render it to SVG or PNG")
    p.add_argument("--format", choices=("dot", "mermaid", "svg", "png"), default="dot",
                   help="svg and png need Graphviz's `dot` program (default: dot)")
    p.add_argument("--backward", action="store_true",
                   help="add the backward pass: adjoints d_NAME and each param's gradient")
    p.add_argument("-o", "--output", help="output file ('-' for standard output; default: "
                   "standard output for dot and mermaid, NET.svg or NET.png in the current "
                   "directory for svg and png)")
    p.add_argument("--backend", choices=backends, default="numpy")

    p = command("train", train_command.run,
                "train on an .npz or .csv: minibatches, progress bar, checkpoints")
    train_command.add_arguments(p)
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


if __name__ == "__main__":
    sys.exit(main())
