"""One implementation of one workload, timed in blocks whenever benchmarks/run.py asks.

    python benchmarks/timing_worker.py IMPL WORKLOAD

run.py starts one of these per implementation and talks to it in JSON lines: the worker
builds its training step, warms it up (compiles, JITs, allocates), picks how many steps make
one block of about 20 ms, and says it is ready, with the thread pools its process loaded.
Then, for each line `block` it reads, it times one block and answers with the seconds per
step (and doubles the block for next time if it took under 20 ms); `quit`, or the end of its
input, ends it. Between requests it sits blocked on the read, using no CPU, so the worker
being timed has the machine to itself.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from workloads import WORKLOADS, Workload, torch_compiled  # noqa: E402

import bpcompile as bpc  # noqa: E402

BLOCK_SECONDS = 0.02     # long enough that switching workers and timer overhead don't show
WARMUP_STEPS = 3         # compiles and JITs happen in the first call; the rest settle caches
MAX_BLOCK_STEPS = 1 << 20


def build(workload: Workload, impl: str, params: dict, data: dict) -> Callable[[], float]:
    """A zero-argument function running one training step of `workload` in `impl`."""
    p = {k: v.copy() for k, v in params.items()}
    d = dict(data)
    if impl in ("llvm", "llvm own gemm", "numpy"):
        backend = "numpy" if impl == "numpy" else "llvm"  # own gemm: BPCOMPILE_NO_BLAS=1
        net = bpc.compile(workload.source, backend=backend, dtype=workload.dtype)
        s = net.init_state(p)
        x, t = d["x"], d["t"]
        return lambda: net.step(p, s, x=x, t=t)
    if impl == "hand numpy":
        return workload.hand(p, d)
    if impl == "pytorch":
        return workload.torch(p, d, workload.dtype)
    if impl == "torch.compile":
        return torch_compiled(workload.name)(p, d, workload.dtype)
    if impl == "jax":
        return workload.jax(p, d, workload.dtype)
    raise ValueError(f"unknown implementation {impl!r}")


def time_block(step: Callable[[], float], count: int) -> float:
    """Wall seconds for `count` back-to-back steps."""
    start = time.perf_counter()
    for _ in range(count):
        step()
    return time.perf_counter() - start


def calibrate(step: Callable[[], float]) -> int:
    """The smallest power of two of steps that takes at least BLOCK_SECONDS."""
    count = 1
    while time_block(step, count) < BLOCK_SECONDS and count < MAX_BLOCK_STEPS:
        count *= 2
    return count


def thread_pools() -> list[dict[str, Any]]:
    """The BLAS and OpenMP libraries this process loaded, as threadpoolctl sees them."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    keys = ("user_api", "internal_api", "version", "architecture", "num_threads")
    return [{key: pool.get(key) for key in keys} for pool in threadpool_info()]


def notes(impl: str) -> list[str]:
    """What threadpoolctl cannot see: libraries linked statically, versions of the peers."""
    lines = []
    if impl in ("pytorch", "torch.compile"):
        import torch

        # libtorch links MKL statically, so threadpoolctl finds only its OpenMP runtime.
        blas = "MKL" if torch.backends.mkl.is_available() else "no MKL"
        lines.append(f"torch {torch.__version__}, {blas} linked into libtorch, "
                     f"{torch.get_num_threads()} intra-op threads")
    if impl == "jax":
        import jax

        # XLA's CPU backend has its own matmul kernels and thread pool; it calls no BLAS.
        lines.append(f"jax {jax.__version__}, XLA on {jax.devices()[0].platform}")
    return lines


def prepare(impl: str, name: str) -> tuple[Callable[[], float], int]:
    """Builds the step, runs it through its warmup, and calibrates one block."""
    workload = next(w for w in WORKLOADS if w.name == name)
    rng = np.random.default_rng(0)
    data = {k: v.astype(workload.dtype) for k, v in workload.data(rng).items()}
    params = bpc.compile(workload.source, dtype=workload.dtype).init(seed=0)
    step = build(workload, impl, params, data)
    for _ in range(WARMUP_STEPS):
        loss = step()
    if not np.isfinite(loss):
        raise RuntimeError(f"the warmup steps gave a loss of {loss}")
    count = calibrate(step)
    time_block(step, count)  # one full block untimed, so the first timed one is not special
    return step, count


def ready_message(impl: str) -> dict[str, Any]:
    return {
        "ok": True,
        "pools": thread_pools(),
        "notes": notes(impl),
    }


def send(channel: TextIO, message: dict[str, Any]) -> None:
    channel.write(json.dumps(message) + "\n")
    channel.flush()


def serve(impl: str, name: str, channel: TextIO) -> None:
    try:
        step, count = prepare(impl, name)
    except Exception as error:  # noqa: BLE001 - any failure here means "skip this one"
        send(channel, {"ok": False, "error": f"{type(error).__name__}: {error}"})
        return
    send(channel, ready_message(impl))
    for line in sys.stdin:
        if line.strip() != "block":
            return
        seconds = time_block(step, count)
        send(channel, {"seconds": seconds / count})
        # Calibrated on a busy machine, blocks come out short once it quietens: lengthen
        # them. A slow block never shortens them, since slowness is what a busy machine does.
        if seconds < BLOCK_SECONDS and count < MAX_BLOCK_STEPS:
            count *= 2


def private_channel() -> TextIO:
    """A copy of stdout kept for the protocol; fd 1 itself then points at stderr, so that
    whatever the libraries print cannot be taken for an answer."""
    channel = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    return channel


def main() -> None:
    impl, name = sys.argv[1], sys.argv[2]
    serve(impl, name, private_channel())


if __name__ == "__main__":
    main()
