"""The scaling workloads: the wide network's shape, 784-W-W-10 relu with softmax
cross-entropy and sgd(lr=0.01) in float32, at batch sizes 1 to 4,096 (W = 256) and widths
16 to 2,048 (batch 256), so that the table shows where each implementation wins as the work
grows. Each is named `scale_bB_wW` and steps like `wide` in every implementation (the hand,
PyTorch and JAX steps take their shapes from the params).

Importing this module adds them to workloads.WORKLOADS, TORCH and JAX; run.py leaves them
out unless asked: `python benchmarks/run.py --workloads scaling` (or some of their names).
"""

from __future__ import annotations

from workloads import (
    JAX,
    TORCH,
    WIDE_BP,
    WORKLOADS,
    Workload,
    _hand_relu_xent,
    _jax_step,
    _one_hot,
    _sgd,
    _torch_step,
)

BATCHES = (1, 16, 256, 4096)   # at width 256
WIDTHS = (16, 128, 1024, 2048)  # at batch 256
PREFIX = "scale_"


def _workload(batch: int, width: int) -> Workload:
    name = f"{PREFIX}b{batch}_w{width}"
    source = WIDE_BP.replace("network wide", f"network {name}").replace("1024", str(width))
    TORCH[name], JAX[name] = TORCH["wide"], JAX["wide"]
    return Workload(
        name, source, "float32", batch,
        lambda rng: {"x": rng.uniform(0, 1, (batch, 784)), "t": _one_hot(rng, batch, 10)},
        _hand_relu_xent(3, _sgd(0.01)), _torch_step(name), _jax_step(name),
    )


SCALING = [_workload(batch, 256) for batch in BATCHES] + \
          [_workload(256, width) for width in WIDTHS if width != 256]
WORKLOADS.extend(SCALING)
