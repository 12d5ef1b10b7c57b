"""The compiler's stages in order: `.bp` text to the optimized training graph.

    text --language--> Network (forward graph) --passes.FORWARD--> --differentiate-->
      --optimizer--> --passes.BACKWARD--> Compiled.graph   (what people read: the NumPy
      module, show, graph, explain)
      --passes.BACKENDS[backend]--> the graph the backend prints (Compiled.for_backend)

Set BPCOMPILE_DEBUG=1 to print the graph after every stage.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from . import passes
from .differentiate.autodiff import differentiate
from .differentiate.optimizers import add_updates, state_shapes
from .graph.ir import Graph, Op
from .graph.network import Network
from .language.lower import lower
from .language.parser import parse
from .runtime.signature import Signature


@dataclass(frozen=True)
class Compiled:
    """A network and its optimized training graph: outputs, loss, gradients and updates."""

    network: Network
    graph: Graph

    @cached_property
    def backend_graphs(self) -> dict[str, Graph]:
        return {}

    def for_backend(self, backend: str) -> Graph:
        """The graph `backend` prints: `graph` through that backend's own pass list."""
        if backend not in self.backend_graphs:
            self.backend_graphs[backend] = passes.run(passes.BACKENDS[backend], self.graph)
        return self.backend_graphs[backend]


def build(text: str, filename: str = "<string>", training: bool = True) -> Compiled:
    """Parse, lower, optimize and differentiate a `.bp` program for one mode (training, or
    inference: dropout the identity, batch norm with its running statistics); BPError if it
    is bad."""
    network = lower(parse(text, filename), training)
    passes.debug("lower", network.graph)
    graph = passes.run(passes.FORWARD, network.graph)
    if graph.loss is not None:
        graph = differentiate(graph)
        passes.debug("differentiate", graph)
        shapes = {name: info.shape for name, info in network.trained.items()}
        graph = add_updates(graph, network.optimizer, shapes)
        passes.debug("optimizer", graph)
        graph = passes.run(passes.BACKWARD, graph)
    return Compiled(network, graph)


def signature(compiled: Compiled) -> Signature:
    """The sympy-free summary of a compiled network that calls need."""
    network, graph = compiled.network, compiled.graph
    shapes = {name: info.shape for name, info in network.trained.items()}
    return Signature(
        name=network.name, filename=network.source.filename, source=network.source.text,
        params=dict(network.params),
        inputs={n: s for n, s in network.inputs.items() if n not in network.masks},
        targets=dict(network.targets), outputs=tuple(network.outputs),
        output_shapes={n: graph.nodes[i].shape for n, i in graph.outputs.items()},
        optimizer=network.optimizer,
        state=state_shapes(network.optimizer, shapes) if graph.loss is not None else {},
        has_loss=graph.loss is not None,
        indices=index_data(network.graph),
        least_sizes=least_sizes(network.graph),
        masks=dict(network.masks), modal=network.modal,
        batch_counts=network.batch_counts,
    )


def least_sizes(graph: Graph) -> dict[str, tuple[int, int]]:
    """For each size bound at call time that an index reads along (`x[5]` along N): the
    least size it needs, and the `.bp` line of the first index that needs the most."""
    found: dict[str, tuple[int, int]] = {}
    for node in graph.nodes:
        if node.op is not Op.SLICE:
            continue
        source = graph.nodes[node.inputs[0]].shape
        for axis in node.axes:
            start, size = node.attrs[axis][0], source[axis]
            if isinstance(size, str):
                least = start + 1 if start >= 0 else -start
                if least > found.get(size, (1, 0))[0]:
                    found[size] = (least, node.lines[0] if node.lines else 0)
    return found


def index_data(graph: Graph) -> dict[str, int]:
    """The data arrays read as class indices, and how many classes each indexes."""
    found: dict[str, int] = {}
    for node in graph.nodes:
        if node.op in (Op.ONEHOT, Op.TAKE):
            data = node.inputs[0] if node.op is Op.ONEHOT else node.inputs[1]
            name, limit = graph.nodes[data].name, node.attrs[0]
            found[name] = min(found.get(name, limit), limit)
    return found
