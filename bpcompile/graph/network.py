"""What lowering learns about a network besides its graph: declared names and shapes, how
params start, how the network trains."""

from __future__ import annotations

from dataclasses import dataclass, field
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
    """A tensor kept in `p`: a trained param, or a buffer (batch norm's running statistics),
    which has no gradient and which `step` updates in training mode."""

    name: str
    shape: tuple[int, ...]
    init: Init
    line: int
    buffer: bool = False


@dataclass(frozen=True)
class MaskInfo:
    """A dropout mask: an input of the training graph that the runtime draws before each
    call (runtime/randomness.py), never one a caller gives. `site` numbers the dropouts in
    the order the file writes them; each draws its own stream."""

    name: str
    shape: Shape
    rate: float
    site: int
    line: int


@dataclass(frozen=True)
class OptimizerConfig:
    """`kind` is sgd or adam; `options` holds every option, defaults filled in."""

    kind: str
    options: dict[str, float | bool]
    line: int = 0
    text: str = ""  # as written in the `.bp` file, for comments in generated code
    # the learning-rate schedule (differentiate/schedules.py): (kind, numbers) in order
    schedule: tuple[tuple[str, tuple[float, ...]], ...] = ()


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
    masks: dict[str, MaskInfo] = field(default_factory=dict)  # also in `inputs`, last
    # whether the program reads the mode (dropout, batch norm): then training and
    # inference compile to different graphs
    modal: bool = False
    # batch norm's reduced sizes in training mode with its line: each call needs their
    # product above 1 (torch refuses one value per channel too)
    batch_counts: tuple[tuple[tuple[int | str, ...], int], ...] = ()

    @property
    def data(self) -> dict[str, Shape]:
        """Inputs (dropout's masks last) then targets: every array compiled code reads."""
        return {**self.inputs, **self.targets}

    @property
    def trained(self) -> dict[str, ParamInfo]:
        """The params with gradients: every one but the buffers."""
        return {n: info for n, info in self.params.items() if not info.buffer}
