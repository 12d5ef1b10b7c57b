"""The front end both backends share: text -> AST -> Graph -> optimized training graph."""

from __future__ import annotations

from dataclasses import dataclass

from . import passes
from .differentiate.autodiff import differentiate
from .differentiate.optimizers import add_updates
from .graph.ir import Graph
from .graph.network import Network
from .runtime.signature import Signature
from .language.lower import lower
from .language.parser import parse


@dataclass(frozen=True)
class Compiled:
    """A network and its optimized graph: outputs, loss, gradients and optimizer updates."""

    network: Network
    graph: Graph


def build(text: str, filename: str = "<string>") -> Compiled:
    """Parse, lower, optimize and differentiate a `.bp` program; BPError if it is bad."""
    network = lower(parse(text, filename))
    passes.debug("lower", network.graph)
    graph = passes.run(passes.FORWARD, network.graph)
    if graph.loss is not None:
        graph = differentiate(graph)
        passes.debug("differentiate", graph)
        shapes = {name: info.shape for name, info in network.params.items()}
        graph = add_updates(graph, network.optimizer, shapes)
        passes.debug("optimizer", graph)
        graph = passes.run(passes.BACKWARD, graph)
    return Compiled(network, graph)


def signature(compiled: Compiled) -> Signature:
    """The sympy-free summary of a compiled network that calls need."""
    network, graph = compiled.network, compiled.graph
    shapes = {name: info.shape for name, info in network.params.items()}
    return Signature(
        name=network.name, filename=network.source.filename, source=network.source.text,
        params=dict(network.params), inputs=dict(network.inputs),
        targets=dict(network.targets), outputs=tuple(network.outputs),
        output_shapes={n: graph.nodes[i].shape for n, i in graph.outputs.items()},
        optimizer=network.optimizer,
        state={name: () if name == "step" else shapes[name.rsplit(".", 1)[0]]
               for name in graph.state},
        has_loss=graph.loss is not None,
    )
