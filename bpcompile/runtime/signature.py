"""What calling a compiled network needs, without its graph (and so without SymPy): names,
shapes, inits, the optimizer and its state. Small, and stored as JSON in the disk cache, so
a cached network starts in milliseconds."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..graph.network import Init, OptimizerConfig, ParamInfo
from ..graph.shapes import Shape


@dataclass(frozen=True)
class Signature:
    """What calling a compiled network needs, without its graph (and so without SymPy):
    small, and stored as JSON in the disk cache so a cached network starts in milliseconds."""

    name: str
    filename: str
    source: str
    params: dict[str, ParamInfo]
    inputs: dict[str, Shape]
    targets: dict[str, Shape]
    outputs: tuple[str, ...]
    output_shapes: dict[str, Shape]
    optimizer: OptimizerConfig
    state: dict[str, tuple[int, ...]]   # optimizer state name -> shape
    has_loss: bool
    # data arrays of class indices -> how many classes: whole numbers in [0, classes),
    # checked at every call
    indices: dict[str, int] = field(default_factory=dict)
    # sizes bound at call time that an index needs large enough (`x[5]` along N): the
    # least size, and the `.bp` line that indexes
    least_sizes: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def data(self) -> dict[str, Shape]:
        return {**self.inputs, **self.targets}

    @property
    def dims(self) -> tuple[str, ...]:
        """The symbolic sizes, sorted: the order compiled code receives them in."""
        return tuple(sorted({d for shape in self.data.values() for d in shape
                             if isinstance(d, str)}))

    def to_json(self) -> dict:
        return {
            "name": self.name, "filename": self.filename, "source": self.source,
            "params": [[p.name, list(p.shape), p.init.kind, list(p.init.args), p.line]
                       for p in self.params.values()],
            "inputs": [[n, list(s)] for n, s in self.inputs.items()],
            "targets": [[n, list(s)] for n, s in self.targets.items()],
            "outputs": list(self.outputs),
            "output_shapes": {n: list(s) for n, s in self.output_shapes.items()},
            "optimizer": [self.optimizer.kind, self.optimizer.options, self.optimizer.line,
                          self.optimizer.text],
            "state": [[n, list(s)] for n, s in self.state.items()],
            "has_loss": self.has_loss,
            "indices": self.indices,
            "least_sizes": {n: list(v) for n, v in self.least_sizes.items()},
        }

    @classmethod
    def from_json(cls, value: dict) -> Signature:
        kind, options, line, text = value["optimizer"]
        return cls(
            name=value["name"], filename=value["filename"], source=value["source"],
            params={n: ParamInfo(n, tuple(s), Init(k, tuple(a)), ln)
                    for n, s, k, a, ln in value["params"]},
            inputs={n: tuple(s) for n, s in value["inputs"]},
            targets={n: tuple(s) for n, s in value["targets"]},
            outputs=tuple(value["outputs"]),
            output_shapes={n: tuple(s) for n, s in value["output_shapes"].items()},
            optimizer=OptimizerConfig(kind, options, line, text),
            state={n: tuple(s) for n, s in value["state"]},
            has_loss=value["has_loss"],
            indices=dict(value.get("indices", {})),
            least_sizes={n: tuple(v) for n, v in value.get("least_sizes", {}).items()},
        )
