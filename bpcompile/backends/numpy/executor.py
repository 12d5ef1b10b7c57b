"""Runs the generated NumPy module: the `numpy` backend's executor.

The module's source is kept in the disk cache, keyed by everything that decides it, so a
network compiled before opens without SymPy: its code is loaded, not generated.
"""

from __future__ import annotations

import functools
import itertools
import linecache
import types
from collections.abc import Callable

import numpy as np

from ..._version import __version__
from ...errors import BPNumericError
from ...runtime import cache
from ...runtime.net import Compiled
from ...runtime.signature import Signature

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


def module_source(signature: Signature, dtype: np.dtype,
                  compiled: Callable[[], Compiled]) -> str:
    """The generated module's text for one mode: from the disk cache, or generated (and
    stored there)."""
    def generated() -> str:
        from .module import (
            generate,  # SymPy's printers load only when code is generated
        )

        return generate(compiled(), dtype.name)

    return _cached(generated, "numpy-module", __version__, dtype.name, signature.filename,
                   signature.source, signature.mode)


def modal_module_source(signature: Signature, dtype: np.dtype, training: Callable[[], Compiled],
                        inference: Callable[[], Compiled]) -> str:
    """The standalone module of a network with modes, both in one (modal.py)."""
    def generated() -> str:
        from .modal import generate

        return generate(training, inference, dtype.name)

    return _cached(generated, "numpy-modal-module", __version__, dtype.name,
                   signature.filename, signature.source)


def _cached(generate: Callable[[], str], *key: str) -> str:
    name = cache.key(*key) + ".py"
    cached = cache.load(name)
    if cached is not None:
        return cached[1].decode("utf-8")
    code = generate()
    cache.store(name, {}, code.encode("utf-8"))
    return code


def _quiet(call: Callable) -> Callable:
    """The call with NumPy's floating-point warnings off: an overflow or 0/0 in the
    generated code shows as inf or nan in what it returns, which `step` refuses by name
    (and `np.where` computes both branches, so a branch not taken may warn for nothing);
    a raw RuntimeWarning says neither."""

    @functools.wraps(call)
    def quiet(*args: object, **kwargs: object) -> object:
        with np.errstate(all="ignore"):
            return call(*args, **kwargs)

    return quiet


class NumpyExecutor:
    def __init__(self, signature: Signature, dtype: np.dtype,
                 compiled: Callable[[], Compiled]):
        self.dtype = dtype
        self.code = module_source(signature, dtype, compiled)
        self.module = load_module(self.code, signature.name)
        self.inputs = list(signature.forward_arguments)
        self.data = list(signature.arguments)

    def _array(self, value: object) -> np.ndarray:
        # NumPy reductions give scalars for 0-d results; callers get arrays of the net's dtype
        return np.asarray(value, dtype=self.dtype)

    @_quiet
    def forward(self, p: Arrays, data: Arrays, sizes: dict[str, int]) -> Arrays:
        outputs = self.module.forward(p, *(data[n] for n in self.inputs))
        return {name: self._array(value) for name, value in outputs.items()}

    @_quiet
    def loss(self, p: Arrays, data: Arrays, sizes: dict[str, int]) -> float:
        return self.module.loss(p, *(data[n] for n in self.data))

    @_quiet
    def value_and_grad(self, p: Arrays, data: Arrays,
                       sizes: dict[str, int]) -> tuple[float, Arrays]:
        loss, grads = self.module.value_and_grad(p, *(data[n] for n in self.data))
        return loss, {name: np.array(g, dtype=self.dtype) for name, g in grads.items()}

    @_quiet
    def step(self, p: Arrays, s: Arrays, data: Arrays, sizes: dict[str, int]) -> float:
        try:
            return self.module.step(p, s, *(data[n] for n in self.data))
        except self.module.NonFiniteError as error:
            raise BPNumericError(f"step: {error}") from None

    @_quiet
    def apply_gradients(self, p: Arrays, s: Arrays, grads: Arrays) -> None:
        try:
            self.module.apply_gradients(p, s, grads)
        except self.module.NonFiniteError as error:
            raise BPNumericError(f"apply_gradients: {error}") from None
