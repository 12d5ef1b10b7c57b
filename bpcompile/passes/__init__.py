"""The optimization pipeline: straight lists of named passes, each Graph -> Graph.

Forward passes run on the network as written, before differentiation, so that the backward
pass is derived from stable, fused expressions. Backward passes run on the whole training
graph (forward, gradients, optimizer updates). Set BPCOMPILE_DEBUG=1 to print the graph
after every stage.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from ..ir import Graph, rebuild
from .constants import fold_constants
from .fuse import fuse
from .split import split_transcendentals
from .stability import stabilize_graph

Pass = tuple[str, Callable[[Graph], Graph]]

FORWARD: list[Pass] = [
    ("cse", rebuild),
    ("stabilize", stabilize_graph),
    ("split", split_transcendentals),
    ("fuse", fuse),
]

BACKWARD: list[Pass] = [
    ("fold constants", fold_constants),
    ("fuse", lambda graph: fuse(graph, differentiate=False)),
]


def debug(stage: str, graph: Graph) -> None:
    if os.environ.get("BPCOMPILE_DEBUG"):
        print(f"--- after {stage} ---\n{graph.pretty()}", file=sys.stderr)


def run(passes: list[Pass], graph: Graph) -> Graph:
    for name, apply in passes:
        graph = apply(graph)
        debug(name, graph)
    return graph
