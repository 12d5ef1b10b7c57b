"""Elementwise kernels finish a row with one masked vector (backends/llvm/kernels.py,
`masked_loop`): its lanes past the row's end are computed but never stored. Checked where a
stray store would show: params updated in place that are views into a larger buffer, the
elements after them sentinels, for every row length from 1 to past two vectors, in both
dtypes; the updated params against the NumPy backend's."""

from __future__ import annotations

import numpy as np
import pytest

import bpcompile as bpc
from bpcompile.backends.llvm.jit import vector_bytes

SOURCE = """\
network tails
input x[N, {width}]
target t[N, {width}]
param W[{width}] = ones
param b[{width}] = zeros
y = tanh(x * W + b)
loss mse(y, t)
optimize sgd(lr=0.5)
"""
SENTINEL = 12345.0


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_masked_lanes_are_never_stored(dtype: str) -> None:
    lanes = vector_bytes() // np.dtype(dtype).itemsize
    rng = np.random.default_rng(3)
    for width in range(1, 2 * lanes + 2):
        source = SOURCE.format(width=width)
        ours, theirs = (bpc.compile(source, backend=backend, dtype=dtype)
                        for backend in ("llvm", "numpy"))
        data = {"x": rng.normal(size=(3, width)).astype(dtype),
                "t": rng.normal(size=(3, width)).astype(dtype)}
        start = {"W": rng.normal(size=width).astype(dtype),
                 "b": rng.normal(size=width).astype(dtype)}
        # each param the first `width` elements of a buffer a vector longer
        buffers = {name: np.full(width + lanes, SENTINEL, dtype) for name in start}
        params = {}
        for name, value in start.items():
            buffers[name][:width] = value
            params[name] = buffers[name][:width]
        want = {name: value.copy() for name, value in start.items()}
        state, their_state = ours.init_state(params), theirs.init_state(want)
        for _ in range(3):
            ours.step(params, state, **data)
            theirs.step(want, their_state, **data)
        tolerance = 1e-5 if dtype == "float32" else 1e-12
        for name, buffer in buffers.items():
            np.testing.assert_array_equal(buffer[width:], SENTINEL,
                                          err_msg=f"{name}, width {width}: stored past")
            np.testing.assert_allclose(buffer[:width], want[name], rtol=tolerance,
                                       atol=tolerance, err_msg=f"{name}, width {width}")
