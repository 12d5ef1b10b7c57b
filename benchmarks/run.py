"""Time one full training step of each workload in every implementation, side by side.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/run.py [--workloads xor,wide]

Each implementation runs in blocks of enough steps to take about 20 ms; blocks are taken
round-robin across implementations (so drift in the machine's speed hits all of them
alike), and the table reports the median time per step over the blocks, and each peer's
time as a ratio to the LLVM backend's in the same run. PyTorch and JAX are used when
installed. Compile times are measured in fresh processes (see compile_times.py).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from workloads import WORKLOADS, Workload  # noqa: E402

import bpcompile as bpc  # noqa: E402

IMPLEMENTATIONS = ("llvm", "numpy", "hand numpy", "pytorch", "jax")


def blas_description() -> str:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "unknown (install threadpoolctl to report it)"
    parts = []
    for pool in threadpool_info():
        if pool.get("user_api") == "blas":
            parts.append(f"{pool.get('internal_api')} {pool.get('version')} "
                         f"kernel {pool.get('architecture')}, {pool.get('num_threads')} threads")
    return "; ".join(parts) or "none found"


def available(name: str) -> bool:
    module = {"pytorch": "torch", "jax": "jax"}.get(name)
    if module is None:
        return True
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def build(workload: Workload, impl: str, params: dict, data: dict) -> Callable[[], float]:
    """A zero-argument function running one training step of `workload` in `impl`."""
    p = {k: v.copy() for k, v in params.items()}
    d = dict(data)
    if impl in ("llvm", "numpy"):
        net = bpc.compile(workload.source, backend=impl, dtype=workload.dtype)
        s = net.init_state(p)
        x, t = d["x"], d["t"]
        net.step(p, s, x=x, t=t)  # compiles, and installs the native fast path
        return lambda: net.step(p, s, x=x, t=t)
    if impl == "hand numpy":
        return workload.hand(p, d)
    if impl == "pytorch":
        return workload.torch(p, d, workload.dtype)
    return workload.jax(p, d, workload.dtype)


def calibrate(step: Callable[[], float], target: float = 0.02) -> int:
    count = 1
    while True:
        start = time.perf_counter()
        for _ in range(count):
            step()
        if time.perf_counter() - start >= target or count >= 1 << 20:
            return count
        count *= 2


def measure(workload: Workload, impls: list[str], rounds: int) -> dict[str, float]:
    rng = np.random.default_rng(0)
    dtype = np.dtype(workload.dtype)
    data = {k: v.astype(dtype) for k, v in workload.data(rng).items()}
    params = bpc.compile(workload.source, dtype=workload.dtype).init(seed=0)
    steps = {impl: build(workload, impl, params, data) for impl in impls}
    for step in steps.values():  # warm up: compile, allocate, let JITs settle
        for _ in range(3):
            step()
    counts = {impl: calibrate(step) for impl, step in steps.items()}
    samples: dict[str, list[float]] = {impl: [] for impl in impls}
    for _ in range(rounds):
        for impl, step in steps.items():
            n = counts[impl]
            start = time.perf_counter()
            for _ in range(n):
                step()
            samples[impl].append((time.perf_counter() - start) / n)
    return {impl: statistics.median(values) * 1e6 for impl, values in samples.items()}


def table(results: dict[str, dict[str, float]], impls: list[str]) -> str:
    header = "| workload | " + " | ".join(f"{i} (us)" for i in impls) + " | " + \
        " | ".join(f"{i} / llvm" for i in impls if i != "llvm") + " |"
    lines = [header, "|" + " --- |" * (1 + 2 * len(impls) - 1)]
    for name, times in results.items():
        cells = [f"{times[i]:,.1f}" if times[i] < 100 else f"{times[i]:,.0f}" for i in impls]
        ratios = [f"{times[i] / times['llvm']:.1f}x" for i in impls if i != "llvm"]
        lines.append(f"| {name} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", default=",".join(w.name for w in WORKLOADS))
    parser.add_argument("--implementations", default=",".join(IMPLEMENTATIONS))
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    wanted = args.workloads.split(",")
    impls = [i for i in args.implementations.split(",") if available(i)]
    if "llvm" not in impls:
        impls.insert(0, "llvm")
    results = {}
    for workload in WORKLOADS:
        if workload.name in wanted:
            results[workload.name] = measure(workload, impls, args.rounds)
            print(f"{workload.name}: " + ", ".join(f"{i} {t:,.1f} us"
                                                    for i, t in results[workload.name].items()),
                  file=sys.stderr)
    print(f"machine: {platform.machine()}, {platform.processor() or 'cpu'}, "
          f"Python {platform.python_version()}, NumPy {np.__version__}")
    print(f"BLAS: {blas_description()}")
    print(f"median microseconds per training step over {args.rounds} blocks\n")
    print(table(results, impls))


if __name__ == "__main__":
    main()
