"""How params start: drawing the values, and the same draw as source code for the
generated NumPy module (a test checks that the two agree bit for bit).

Values are drawn in float64 from `np.random.default_rng(seed)`, one param after another in
declaration order, then rounded to the network's dtype: a float32 and a float64 network with
the same seed start from the same point.
"""

from __future__ import annotations

import math

import numpy as np

from ..graph.network import Init


def fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """(fan_in, fan_out) for a weight laid out [in, out, *receptive field]."""
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    receptive = math.prod(shape[2:])
    return shape[0] * receptive, shape[1] * receptive


def _xavier_bound(shape: tuple[int, ...]) -> float:
    fan_in, fan_out = fans(shape)
    return math.sqrt(6.0 / (fan_in + fan_out))


def _he_std(shape: tuple[int, ...]) -> float:
    return math.sqrt(2.0 / fans(shape)[0])


def draw(init: Init, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """The float64 starting value of one param (advancing `rng` for random kinds)."""
    kind = init.kind
    if kind == "zeros":
        return np.zeros(shape)
    if kind == "ones":
        return np.ones(shape)
    if kind == "constant":
        return np.full(shape, init.args[0])
    if kind == "normal":
        return rng.normal(0.0, init.args[0], size=shape)
    if kind == "uniform":
        return rng.uniform(init.args[0], init.args[1], size=shape)
    if kind == "xavier":
        bound = _xavier_bound(shape)
        return rng.uniform(-bound, bound, size=shape)
    if kind == "he":
        return rng.normal(0.0, _he_std(shape), size=shape)
    raise AssertionError(kind)


def source(init: Init, shape: tuple[int, ...]) -> str:
    """`draw`, cast to DTYPE, as a NumPy expression reading a generator named `rng`."""
    kind = init.kind
    size = repr(tuple(shape))
    if kind == "zeros":
        return f"np.zeros({size}, dtype=DTYPE)"
    if kind == "ones":
        return f"np.ones({size}, dtype=DTYPE)"
    if kind == "constant":
        return f"np.full({size}, {init.args[0]!r}, dtype=DTYPE)"
    if kind == "normal":
        return f"rng.normal(0.0, {init.args[0]!r}, size={size}).astype(DTYPE)"
    if kind == "uniform":
        return f"rng.uniform({init.args[0]!r}, {init.args[1]!r}, size={size}).astype(DTYPE)"
    if kind in ("xavier", "he"):  # a helper the module defines: it draws as `draw` does
        return f"{kind}(rng, {size})"
    raise AssertionError(kind)
