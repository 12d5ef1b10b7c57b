"""The pointer table every entry function reads: which slot holds which array (params,
optimizer state, data, outputs, the loss, gradients, the workspace). The executor fills it;
the entry functions and the native fast path read it."""

from __future__ import annotations

from dataclasses import dataclass

from ...graph.shapes import Shape
from ...runtime.signature import Signature

ALIGN = 64  # bytes: every workspace buffer starts on a cache line


@dataclass(frozen=True)
class Layout:
    """Which slot of the pointer table holds which array."""

    params: tuple[str, ...]
    state: tuple[str, ...]
    data: tuple[str, ...]
    outputs: tuple[str, ...]
    dims: tuple[str, ...]

    def param(self, name: str) -> int:
        return self.params.index(name)

    def state_slot(self, name: str) -> int:
        return len(self.params) + self.state.index(name)

    def data_slot(self, name: str) -> int:
        return len(self.params) + len(self.state) + self.data.index(name)

    def output(self, name: str) -> int:
        return len(self.params) + len(self.state) + len(self.data) + self.outputs.index(name)

    @property
    def loss(self) -> int:
        return len(self.params) + len(self.state) + len(self.data) + len(self.outputs)

    def grad(self, name: str) -> int:
        return self.loss + 1 + self.params.index(name)

    @property
    def workspace(self) -> int:
        return self.loss + 1 + len(self.params)

    @property
    def size(self) -> int:
        return self.workspace + 1


def layout_of(signature: Signature) -> Layout:
    """The pointer table's layout for a network."""
    return Layout(
        params=tuple(signature.params), state=tuple(signature.state),
        data=tuple(signature.arguments), outputs=tuple(signature.outputs),
        dims=signature.dims,
    )


def workspace_bytes(shapes: list[Shape], sizes: dict[str, int], itemsize: int) -> int:
    """Bytes the buffers of `shapes` take once sizes are bound (aligned as the IR aligns)."""
    total = 0
    for shape in shapes:
        count = 1
        for d in shape:
            count *= d if isinstance(d, int) else sizes[d]
        total += -(-count * itemsize // ALIGN) * ALIGN
    return total
