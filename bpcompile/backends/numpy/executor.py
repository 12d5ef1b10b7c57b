"""Runs the generated NumPy module: the `numpy` backend's executor."""

from __future__ import annotations

import itertools
import linecache
import types

import numpy as np

from ...driver import Compiled
from ...errors import BPNumericError
from .module import generate

Arrays = dict[str, np.ndarray]


_MODULES = itertools.count(1)


def load_module(code: str, name: str) -> types.ModuleType:
    """Execute generated source as a module, with its lines visible in tracebacks (under a
    name of its own: two networks called alike must not show each other's lines)."""
    filename = f"<bpcompile {name} #{next(_MODULES)}>"
    linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
    module = types.ModuleType(name)
    module.__file__ = filename
    exec(compile(code, filename, "exec"), module.__dict__)
    return module


class NumpyExecutor:
    def __init__(self, compiled: Compiled, dtype: np.dtype):
        network = compiled.network
        self.dtype = dtype
        self.code = generate(compiled, dtype.name)
        self.module = load_module(self.code, network.name)
        self.inputs = list(network.inputs)
        self.data = list(network.data)

    def _array(self, value: object) -> np.ndarray:
        # NumPy reductions give scalars for 0-d results; callers get arrays of the net's dtype
        return np.asarray(value, dtype=self.dtype)

    def forward(self, p: Arrays, data: Arrays, sizes: dict[str, int]) -> Arrays:
        outputs = self.module.forward(p, *(data[n] for n in self.inputs))
        return {name: self._array(value) for name, value in outputs.items()}

    def loss(self, p: Arrays, data: Arrays, sizes: dict[str, int]) -> float:
        return self.module.loss(p, *(data[n] for n in self.data))

    def value_and_grad(self, p: Arrays, data: Arrays,
                       sizes: dict[str, int]) -> tuple[float, Arrays]:
        loss, grads = self.module.value_and_grad(p, *(data[n] for n in self.data))
        return loss, {name: np.array(g, dtype=self.dtype) for name, g in grads.items()}

    def step(self, p: Arrays, s: Arrays, data: Arrays, sizes: dict[str, int]) -> float:
        try:
            return self.module.step(p, s, *(data[n] for n in self.data))
        except self.module.NonFiniteError as error:
            raise BPNumericError(f"step: {error}") from None

    def apply_gradients(self, p: Arrays, s: Arrays, grads: Arrays) -> None:
        try:
            self.module.apply_gradients(p, s, grads)
        except self.module.NonFiniteError as error:
            raise BPNumericError(f"apply_gradients: {error}") from None
