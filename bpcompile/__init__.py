"""bpcompile: a symbolic-to-code compiler for backpropagation.

    import bpcompile as bpc
    net = bpc.compile_file("xor.bp", backend="numpy")
    p = net.init(seed=0)
    loss, grads = net.value_and_grad(p, x=X, t=T)
"""

from ._version import __version__ as __version__
from .api import compile, compile_file  # noqa: E402
from .errors import (
    BPError,
    BPNameError,
    BPNumericError,
    BPShapeError,
    BPSyntaxError,
    BPTypeError,
)
from .inspect.explain import Explanation, explain  # noqa: E402
from .inspect.gradcheck import GradcheckResult, gradcheck  # noqa: E402
from .inspect.health import HealthReport, gradient_health  # noqa: E402
from .runtime.net import CompiledNet  # noqa: E402
from .train.loop import TrainResult, train  # noqa: E402

__all__ = [
    "compile", "compile_file", "gradcheck", "GradcheckResult", "CompiledNet",
    "explain", "Explanation",
    "train", "TrainResult", "gradient_health", "HealthReport",
    "BPError", "BPSyntaxError", "BPNameError", "BPShapeError", "BPTypeError", "BPNumericError",
]


def _finish_sympy_import() -> None:
    """SymPy imports more of itself (combinatorics, tensor) the first time it adds two
    expressions. Do that while bpcompile is imported, not inside the first compile."""
    import sympy

    sympy.Symbol("a", real=True) + 2 * sympy.Symbol("b", real=True)


_finish_sympy_import()
