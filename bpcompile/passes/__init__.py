"""The optimization pipeline: straight lists of named passes, each Graph -> Graph.

Forward passes run on the network as written, before differentiation, so that the backward
pass is derived from stable, fused expressions. Backward passes run on the whole training
graph (forward, gradients, optimizer updates): its result is the graph people read. Each
backend then runs a list of its own (LLVM fuses across the names people read, and writes
the optimizer's options in as numbers). `updates.plan_updates` is the analysis both
backends print `step`'s updates from. Set BPCOMPILE_DEBUG=1 to print the graph after every
stage, the backend's own included.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from ..graph.ir import Graph, rebuild
from .activations import name_pre_activations
from .constants import bind_constants, fold_constants
from .fuse import fuse
from .reuse import reuse_forward_values
from .split import split_transcendentals
from .stability import stabilize_graph

Pass = tuple[str, Callable[[Graph], Graph]]

FORWARD: list[Pass] = [
    ("cse", rebuild),
    ("name pre-activations", name_pre_activations),
    ("stabilize", stabilize_graph),
    ("split", split_transcendentals),
    ("fuse", fuse),
]

def fold_and_fuse(graph: Graph) -> Graph:
    """Fold constants and fuse until neither changes the graph. Fusing can reduce an adjoint
    to a constant (0 * f'(x) is 0) whose sums and reshapes only folding removes, else a
    backend is left reshaping a number; and what folding frees, fusing merges further."""
    for _ in range(len(graph.nodes) + 1):  # a guard: two or three rounds settle it
        settled = fuse(fold_constants(graph), differentiate=False)
        if settled == graph:
            break
        graph = settled
    return settled


BACKWARD: list[Pass] = [
    ("fold constants and fuse", fold_and_fuse),
    ("reuse forward values", reuse_forward_values),
]


def fuse_across_names(graph: Graph) -> Graph:
    """LLVM runs elementwise chains as one loop each: fuse across `.bp` names too."""
    return fuse(graph, differentiate=False, respect_names=False)


BACKENDS: dict[str, list[Pass]] = {
    "numpy": [],
    "llvm": [
        ("bind constants", bind_constants),
        ("fuse across names", fuse_across_names),
    ],
}


def debug(stage: str, graph: Graph) -> None:
    if os.environ.get("BPCOMPILE_DEBUG"):
        print(f"--- after {stage} ---\n{graph.pretty()}", file=sys.stderr)


def run(passes: list[Pass], graph: Graph) -> Graph:
    for name, apply in passes:
        graph = apply(graph)
        debug(name, graph)
    return graph
