"""Dropout's masks from a counter-based generator, so that a mask is a function of the seed,
the step count, the dropout's place in the file and the element's position, and nothing else:
both backends (and the NumPy module) draw the same masks, a resumed run draws the masks the
uninterrupted one drew, and rows split over machines draw the masks one process would.

The generator is SplitMix64 (Steele, Lea and Flood, "Fast splittable pseudorandom number
generators", OOPSLA 2014; java.util.SplittableRandom). Its n-th output from seed s is
`mix(s + (n + 1) * GAMMA)` modulo 2**64, so any output is computed directly from its index:

    key  = output(output(seed, step), site)          one stream per dropout per step
    bits = output(key, i)                            element i of that dropout's mask

where i counts rows through the whole batch, so a share of the batch computed elsewhere
draws its rows' part of the masks.

An element is dropped when the top 53 bits of its output, as a fraction of 2**53 (a uniform
double in [0, 1)), fall below p; the others are 1 / (1 - p).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from ..errors import BPNameError, BPTypeError
from ..graph.network import MaskInfo

GAMMA = 0x9E3779B97F4A7C15  # SplitMix64's increment: 2**64 divided by the golden ratio
MASK64 = (1 << 64) - 1
RNG = "rng"  # the state entry holding [seed, step count]: uint64


def mix(z: int) -> int:
    """SplitMix64's output function (Stafford's Mix13) on one 64-bit integer."""
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def output(seed: int, index: int) -> int:
    """Output number `index` (from 0) of SplitMix64 started at `seed`."""
    return mix((seed + (index + 1) * GAMMA) & MASK64)


def stream_key(seed: int, step: int, site: int) -> int:
    """The seed of one dropout's stream at one step: output `site` of the generator seeded
    by output `step` of the generator seeded by the user's seed."""
    return output(output(seed & MASK64, step), site)


def outputs(key: int, index: np.ndarray) -> np.ndarray:
    """Outputs number `index` (uint64, from 0) of SplitMix64 started at `key`."""
    # uint64 arrays wrap silently, as the generator wants (scalars would warn)
    z = (index + np.uint64(1)) * np.uint64(GAMMA) + np.uint64(key)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def threshold(rate: float) -> int:
    """The least 53-bit integer b with b / 2**53 >= rate: elements below it are dropped."""
    return math.ceil(rate * 2.0**53)  # exact: rate * 2**53 only moves the exponent


def draw_mask(info: MaskInfo, shape: tuple[int, ...], seed: int, step: int,
              dtype: np.dtype, rows: np.ndarray | None = None) -> np.ndarray:
    """The mask of one dropout at one step: 0 where dropped, 1 / (1 - p) elsewhere. `rows`:
    where each row (along the leading axis) sits in the whole batch, for a share of it
    computed apart (default: this is the whole batch)."""
    row_size = math.prod(shape[1:]) if shape else 1
    within = np.arange(row_size, dtype=np.uint64)
    if rows is None:
        index = np.arange(math.prod(shape), dtype=np.uint64)
    else:
        index = (np.asarray(rows, dtype=np.uint64)[:, None] * np.uint64(row_size)
                 + within).ravel()
    bits = outputs(stream_key(seed, step, info.site), index)
    kept = (bits >> np.uint64(11)) >= np.uint64(threshold(info.rate))
    scale = 0.0 if info.rate >= 1 else 1.0 / (1.0 - info.rate)
    return np.where(kept, scale, 0.0).astype(dtype).reshape(shape)


def fresh_rng(seed: int) -> np.ndarray:
    """The state entry for a new run: its seed and a step count of 0."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0 \
            or seed > MASK64:
        raise BPTypeError("init_state: seed must be a whole number from 0 to 2**64 - 1, "
                          f"not {seed!r}")
    return np.array([int(seed), 0], dtype=np.uint64)


def check_rng(state: Mapping, call: str) -> np.ndarray:
    """The `rng` entry of a state dict: [seed, step count], uint64, updated in place."""
    if not isinstance(state, Mapping) or RNG not in state:
        raise BPNameError(f"{call}: the state has no '{RNG}' entry (dropout's seed and step "
                          f"count); make the state with net.init_state(p, seed=...)")
    rng = state[RNG]
    if not isinstance(rng, np.ndarray) or rng.dtype != np.uint64 or rng.shape != (2,) \
            or not rng.flags.writeable:
        what = f"{rng.dtype} {rng.shape}" if isinstance(rng, np.ndarray) else \
            type(rng).__name__
        raise BPTypeError(f"{call}: state '{RNG}' must be a writable uint64 array of 2 "
                          f"numbers, [seed, step count], as init_state makes it, not {what}")
    return rng


def draw_masks(masks: Mapping[str, MaskInfo], sizes: Mapping[str, int], rng: np.ndarray | None,
               dtype: np.dtype, rows: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Every dropout's mask for one call at these sizes; `rng` None is seed 0, step 0;
    `rows` as draw_mask's, for masks whose leading axis is the batch's."""
    seed, step = (0, 0) if rng is None else (int(rng[0]), int(rng[1]))
    drawn = {}
    for name, info in masks.items():
        shape = tuple(d if isinstance(d, int) else sizes[d] for d in info.shape)
        batched = rows is not None and bool(shape) and len(rows) == shape[0] \
            and isinstance(info.shape[0], str)
        drawn[name] = draw_mask(info, shape, seed, step, dtype, rows if batched else None)
    return drawn
