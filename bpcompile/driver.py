"""The one driver: `.bp` text through every stage to a CompiledNet on either backend.

    text --language--> Network (forward graph) --passes.FORWARD--> --differentiate-->
      --optimizer--> --passes.BACKWARD--> Compiled.graph   (what people read: the NumPy
      module, show, graph, explain)
      --passes.BACKENDS[backend]--> the graph the backend prints --backend--> executor

`open_network` is the path every compile takes: the network's signature comes from the disk
cache when it is there (so a cached network opens without SymPy), and the executor builds
(or loads) its code from the compiled graph, which is built on first need.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from . import passes
from ._version import __version__
from .differentiate.autodiff import differentiate
from .differentiate.optimizers import add_updates, state_shapes
from .graph.ir import Graph
from .graph.network import Network
from .language.lower import lower
from .language.parser import parse
from .runtime import cache
from .runtime.net import CompiledNet, Executor
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
        state=state_shapes(network.optimizer, shapes) if graph.loss is not None else {},
        has_loss=graph.loss is not None,
    )


Build = Callable[[], Compiled]


def _numpy(signature: Signature, dtype: np.dtype, compiled: Build) -> Executor:
    from .backends.numpy.executor import NumpyExecutor

    return NumpyExecutor(signature, dtype, compiled)


def _llvm(signature: Signature, dtype: np.dtype, compiled: Build) -> Executor:
    from .backends.llvm.executor import LLVMExecutor  # llvmlite loads only when used

    return LLVMExecutor(signature, dtype, compiled)


EXECUTORS: dict[str, Callable[[Signature, np.dtype, Build], Executor]] = {
    "numpy": _numpy,
    "llvm": _llvm,
}


def open_network(source: str, filename: str, backend: str, dtype: np.dtype) -> CompiledNet:
    """`source` compiled for `backend` and `dtype`. The signature comes from the disk cache
    when it has it, so a second compile of a network skips parsing and SymPy; the graph is
    built only when something needs it (code that is not cached, `show`, `explain`)."""
    built: list[Compiled] = []

    def compiled() -> Compiled:
        if not built:
            built.append(build(source, filename))
        return built[0]

    name = cache.key("signature", __version__, filename, source) + ".json"
    cached = cache.load(name)
    if cached is not None:
        summary = Signature.from_json(cached[0])
    else:
        summary = signature(compiled())
        cache.store(name, summary.to_json(), b"")
    executor = EXECUTORS[backend](summary, dtype, compiled)

    def reopen(other: np.dtype) -> CompiledNet:
        return open_network(source, filename, backend, other)

    return CompiledNet(summary, backend, dtype, executor, compiled, reopen)
