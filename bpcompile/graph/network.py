"""What lowering learns about a network besides its graph: declared names and shapes, how
params start, how the network trains."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import Source
from .shapes import Shape

if TYPE_CHECKING:  # a signature's declarations load without SymPy
    from .ir import Graph


@dataclass(frozen=True)
class Init:
    """How a param starts: `kind` is zeros, ones, constant, normal, uniform, xavier or he."""

    kind: str
    args: tuple[float, ...] = ()

    def describe(self) -> str:
        if not self.args:
            return self.kind
        if self.kind == "constant":
            return repr(self.args[0])
        return f"{self.kind}({', '.join(repr(a) for a in self.args)})"


@dataclass(frozen=True)
class ParamInfo:
    name: str
    shape: tuple[int, ...]
    init: Init
    line: int


@dataclass(frozen=True)
class OptimizerConfig:
    """`kind` is sgd or adam; `options` holds every option, defaults filled in."""

    kind: str
    options: dict[str, float | bool]
    line: int = 0
    text: str = ""  # as written in the `.bp` file, for comments in generated code


@dataclass(frozen=True)
class Network:
    """A lowered `.bp` program: the forward graph (outputs and loss) and its declarations."""

    name: str
    source: Source
    graph: Graph
    params: dict[str, ParamInfo]
    inputs: dict[str, Shape]
    targets: dict[str, Shape]
    outputs: tuple[str, ...]
    optimizer: OptimizerConfig

    @property
    def data(self) -> dict[str, Shape]:
        """Inputs then targets: every array a call may be given."""
        return {**self.inputs, **self.targets}
