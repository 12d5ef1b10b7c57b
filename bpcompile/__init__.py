"""bpcompile: a symbolic-to-code compiler for backpropagation.

    import bpcompile as bpc
    net = bpc.compile_file("xor.bp", backend="numpy")
    p = net.init(seed=0)
    loss, grads = net.value_and_grad(p, x=X, t=T)

Importing bpcompile loads only what opening a compiled network needs: SymPy, lark and the
inspection tools load when something first needs them, so a network from the disk cache
starts in about a tenth of a second.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ._version import __version__ as __version__
from .api import compile, compile_file
from .errors import (
    BPError,
    BPNameError,
    BPNumericError,
    BPShapeError,
    BPSyntaxError,
    BPTypeError,
)

if TYPE_CHECKING:
    from .inspect.explain import Explanation, explain
    from .inspect.gradcheck import GradcheckResult, gradcheck
    from .inspect.health import HealthReport, gradient_health
    from .runtime.net import CompiledNet
    from .training.loop import TrainResult, train

# name -> the module defining it, imported on first use
LAZY: dict[str, str] = {
    "explain": "inspect.explain", "Explanation": "inspect.explain",
    "gradcheck": "inspect.gradcheck", "GradcheckResult": "inspect.gradcheck",
    "gradient_health": "inspect.health", "HealthReport": "inspect.health",
    "CompiledNet": "runtime.net",
    "train": "training.loop", "TrainResult": "training.loop",
}

__all__ = [
    "compile", "compile_file", "gradcheck", "GradcheckResult", "CompiledNet",
    "explain", "Explanation",
    "train", "TrainResult", "gradient_health", "HealthReport",
    "BPError", "BPSyntaxError", "BPNameError", "BPShapeError", "BPTypeError", "BPNumericError",
]


def __getattr__(name: str) -> object:
    if name not in LAZY:
        raise AttributeError(f"module 'bpcompile' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{LAZY[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(LAZY))
