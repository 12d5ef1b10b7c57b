"""`bpcompile check NET.bp`: gradcheck on random data; exit 0 when it passes, 1 when not."""

from __future__ import annotations

import argparse

import numpy as np

from ..api import compile_file
from ..errors import BPError
from ..graph.ir import Op
from ..inspect.gradcheck import gradcheck
from ..runtime.net import CompiledNet

HELP = "compare gradients with central differences on random data (exit 0 or 1)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch", type=int, default=5, help="batch size for symbolic dims")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backend", choices=("numpy", "llvm"), default="numpy")


def random_data(net: CompiledNet, batch: int, rng: np.random.Generator,
                positive: bool = False) -> dict[str, np.ndarray]:
    """Data for a check: inputs ~ N(0, 1) (or U(0.1, 1) when `positive`); targets in [0, 1],
    one-hot rows for targets of a cross_entropy, and whole numbers in range for arrays of
    indices (class indices, a gather's rows)."""
    graph = net.compiled.graph
    one_hot = {graph.nodes[n.inputs[1]].name for n in graph.nodes if n.op is Op.SOFTMAX_XENT}
    data = {}
    arrays = {**net.inputs, **net.targets}   # the user's: not dropout's masks
    for name, shape in arrays.items():
        concrete = tuple(batch if isinstance(d, str) else d for d in shape)
        if name in net.signature.indices:
            limit = net.signature.indices[name]
            data[name] = rng.integers(0, limit, size=concrete).astype(np.float64)
        elif name in one_hot and concrete:
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


def run(args: argparse.Namespace) -> int:
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
