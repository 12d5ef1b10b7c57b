"""Arrays and params too large for memory: a BPError naming what is too large, never a
MemoryError, and nothing changed. Oracle: the same calls on arrays that fit succeed."""

from __future__ import annotations

import numpy as np
import pytest

import bpcompile as bpc

SOURCE = """
input x[N, 2]
target t[N, 1]
param W[2, 1] = xavier
param b[1] = zeros
y = x @ W + b
output y
loss mse(y, t)
optimize sgd(lr=0.1)
"""


def vast(shape: tuple[int, ...]) -> np.ndarray:
    """A read-only view of that shape over one float: it has to be copied to be used, and
    the copy needs far more memory than any machine has."""
    return np.broadcast_to(np.ones(1), shape)


@pytest.mark.parametrize("call", ["forward", "loss", "value_and_grad", "step"])
def test_vast_data_is_a_bperror_and_changes_nothing(backend: str, call: str) -> None:
    net = bpc.compile(SOURCE, backend=backend)
    p = net.init(seed=0)
    s = net.init_state(p)
    before = {k: v.copy() for k, v in p.items()}
    x, t = vast((2**36, 2)), vast((2**36, 1))
    args = {"forward": ((p,), {"x": x}), "loss": ((p,), {"x": x, "t": t}),
            "value_and_grad": ((p,), {"x": x, "t": t}), "step": ((p, s), {"x": x, "t": t})}
    positional, data = args[call]
    with pytest.raises(bpc.BPError, match=r"memory|large"):
        getattr(net, call)(*positional, **data)
    for name, value in before.items():
        np.testing.assert_array_equal(p[name], value)
    # the same call on data that fits works
    small = {k: np.ones((3,) + v.shape[1:]) for k, v in data.items()}
    getattr(net, call)(*positional, **small)


def test_a_vast_wrong_shape_is_a_shape_error_not_a_copy(backend: str) -> None:
    """The shape is checked before anything is converted."""
    net = bpc.compile(SOURCE, backend=backend)
    with pytest.raises(bpc.BPShapeError, match="axis 1 is 3, not 2"):
        net.forward(net.init(), x=vast((2**36, 3)))


def test_a_param_too_large_to_draw(backend: str) -> None:
    net = bpc.compile("param W[1000000, 1000000] = normal(0.1)\nloss sum(W)\n",
                      backend=backend)
    with pytest.raises(bpc.BPShapeError, match="param W .* more than fit in memory"):
        net.init()


def test_huge_values_are_computed_or_refused(backend: str) -> None:
    """1e300 in the data: forward computes what float64 gives; a step whose loss overflows
    is refused and changes nothing."""
    net = bpc.compile(SOURCE, backend=backend)
    p = net.init(seed=0)
    s = net.init_state(p)
    x = np.full((4, 2), 1e300)
    expected = x @ p["W"] + p["b"]
    np.testing.assert_allclose(net.forward(p, x=x)["y"], expected, rtol=1e-12)
    before = {k: v.copy() for k, v in p.items()}
    with pytest.raises(bpc.BPNumericError):
        net.step(p, s, x=x, t=np.zeros((4, 1)))
    for name, value in before.items():
        np.testing.assert_array_equal(p[name], value)
