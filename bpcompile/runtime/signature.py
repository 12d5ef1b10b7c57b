"""What calling a compiled network needs, without its graph (and so without SymPy): names,
shapes, inits, the optimizer and its state. Small, and stored as JSON in the disk cache, so
a cached network starts in milliseconds."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from ..graph.network import Init, MaskInfo, OptimizerConfig, ParamInfo
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
    # dropout's masks: inputs of the training graph that the runtime draws (not in `inputs`)
    masks: dict[str, MaskInfo] = field(default_factory=dict)
    modal: bool = False  # whether training and inference compile differently
    batch_counts: tuple[tuple[tuple[int | str, ...], int], ...] = ()  # see Network
    mode: str = "training"  # the graph an executor is built from: training or inference

    @property
    def data(self) -> dict[str, Shape]:
        """What callers give: inputs, then targets."""
        return {**self.inputs, **self.targets}

    @property
    def arguments(self) -> dict[str, Shape]:
        """What compiled code reads, in its order: inputs, dropout's masks, targets."""
        return {**self.forward_arguments, **self.targets}

    @property
    def forward_arguments(self) -> dict[str, Shape]:
        """What the compiled forward reads: inputs, then dropout's masks."""
        return {**self.inputs, **{n: m.shape for n, m in self.masks.items()}}

    @property
    def trained(self) -> dict[str, ParamInfo]:
        """The params with gradients (all but the buffers)."""
        return {n: info for n, info in self.params.items() if not info.buffer}

    @property
    def buffers(self) -> dict[str, ParamInfo]:
        return {n: info for n, info in self.params.items() if info.buffer}

    def for_inference(self) -> Signature:
        """The signature of the inference graph: no masks to draw."""
        return replace(self, masks={}, mode="inference")

    @property
    def dims(self) -> tuple[str, ...]:
        """The symbolic sizes, sorted: the order compiled code receives them in."""
        return tuple(sorted({d for shape in self.data.values() for d in shape
                             if isinstance(d, str)}))

    def to_json(self) -> dict:
        return {
            "name": self.name, "filename": self.filename, "source": self.source,
            "params": [[p.name, list(p.shape), p.init.kind, list(p.init.args), p.line,
                        p.buffer] for p in self.params.values()],
            "inputs": [[n, list(s)] for n, s in self.inputs.items()],
            "targets": [[n, list(s)] for n, s in self.targets.items()],
            "outputs": list(self.outputs),
            "output_shapes": {n: list(s) for n, s in self.output_shapes.items()},
            "optimizer": [self.optimizer.kind, self.optimizer.options, self.optimizer.line,
                          self.optimizer.text,
                          [[kind, list(args)] for kind, args in self.optimizer.schedule]],
            "state": [[n, list(s)] for n, s in self.state.items()],
            "has_loss": self.has_loss,
            "indices": self.indices,
            "least_sizes": {n: list(v) for n, v in self.least_sizes.items()},
            "masks": [[m.name, list(m.shape), m.rate, m.site, m.line]
                      for m in self.masks.values()],
            "modal": self.modal,
            "batch_counts": [[list(sizes), line] for sizes, line in self.batch_counts],
            "mode": self.mode,
        }

    @classmethod
    def from_json(cls, value: dict) -> Signature:
        kind, options, line, text, schedule = value["optimizer"]
        return cls(
            name=value["name"], filename=value["filename"], source=value["source"],
            params={n: ParamInfo(n, tuple(s), Init(k, tuple(a)), ln, buffer)
                    for n, s, k, a, ln, buffer in value["params"]},
            inputs={n: tuple(s) for n, s in value["inputs"]},
            targets={n: tuple(s) for n, s in value["targets"]},
            outputs=tuple(value["outputs"]),
            output_shapes={n: tuple(s) for n, s in value["output_shapes"].items()},
            optimizer=OptimizerConfig(kind, options, line, text,
                                      tuple((k, tuple(a)) for k, a in schedule)),
            state={n: tuple(s) for n, s in value["state"]},
            has_loss=value["has_loss"],
            indices=dict(value.get("indices", {})),
            least_sizes={n: tuple(v) for n, v in value.get("least_sizes", {}).items()},
            masks={n: MaskInfo(n, tuple(s), rate, site, ln)
                   for n, s, rate, site, ln in value["masks"]},
            modal=value["modal"],
            batch_counts=tuple((tuple(sizes), line) for sizes, line in value["batch_counts"]),
            mode=value["mode"],
        )
