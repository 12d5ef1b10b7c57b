"""The calls test_concurrency.py compares: made by the worker processes, on the llvm
backend, and by the test itself, on the numpy backend (the oracle)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def results(compile_net: Callable[[str], object]) -> dict[str, np.ndarray]:
    """forward, loss, value_and_grad and three steps, in float64 and float32, of the network
    `compile_net(dtype)` gives, on fixed data."""
    out: dict[str, np.ndarray] = {}
    for dtype in ("float64", "float32"):
        net = compile_net(dtype)
        rng = np.random.default_rng(0)
        x, t = rng.standard_normal((9, 4)), rng.uniform(0, 1, (9, 3))
        p = net.init(seed=0)
        s = net.init_state(p)
        out[f"{dtype} y"] = net.forward(p, x=x)["y"]
        out[f"{dtype} value"] = np.array(net.loss(p, x=x, t=t))
        loss, grads = net.value_and_grad(p, x=x, t=t)
        out[f"{dtype} loss"] = np.array(loss)
        out.update({f"{dtype} d_{k}": v for k, v in grads.items()})
        for k in range(3):
            out[f"{dtype} step {k}"] = np.array(net.step(p, s, x=x, t=t))
        out.update({f"{dtype} {k}": v for k, v in p.items()})
    return out
