"""The one driver: `.bp` text to a CompiledNet on either backend, through the disk cache.

`open_network` is the path every compile takes. The network's signature comes from the disk
cache when it is there, so a network compiled before opens without parsing and without
SymPy; the compiler's stages (pipeline.py) run only when something needs the graph: code
that is not cached, `show`, `explain`. Each backend's executor then builds or loads its code
from the graph the pipeline hands it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from ._version import __version__
from .runtime import cache
from .runtime.net import CompiledNet, Executor
from .runtime.signature import Signature

if TYPE_CHECKING:
    from .pipeline import Compiled

Build = Callable[[], "Compiled"]


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


def build(text: str, filename: str, training: bool = True) -> Compiled:
    """The compiler's stages on `text` for one mode (pipeline.py, which loads SymPy and
    lark)."""
    from .pipeline import build as run_pipeline

    return run_pipeline(text, filename, training)


def open_network(source: str, filename: str, backend: str, dtype: np.dtype) -> CompiledNet:
    """`source` compiled for `backend` and `dtype`. The signature comes from the disk cache
    when it has it, so a second compile of a network skips parsing and SymPy; the graph is
    built only when something needs it."""
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
        from .pipeline import signature

        summary = signature(compiled())
        cache.store(name, summary.to_json(), b"")
    executor = EXECUTORS[backend](summary, dtype, compiled)

    def reopen(other: np.dtype) -> CompiledNet:
        return open_network(source, filename, backend, other)

    def inference() -> Executor:
        """The inference mode's executor, for a network with dropout or batch norm."""
        return EXECUTORS[backend](summary.for_inference(), dtype,
                                  lambda: build(source, filename, training=False))

    def module() -> str:
        """The standalone NumPy module of a network with modes: both modes in one."""
        from .backends.numpy.executor import modal_module_source

        return modal_module_source(summary, dtype, compiled,
                                   lambda: build(source, filename, training=False))

    modal = summary.modal
    return CompiledNet(summary, backend, dtype, executor, compiled, reopen,
                       inference if modal else None,
                       module if modal and backend == "numpy" else None)
