"""Data parallelism on Dask: one process against a local cluster of worker processes.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/cluster.py [--workers 2]

For each workload, the median time of one synchronous training step (a step is an epoch for
full-batch digits) on the llvm backend: in this process (`net.step`), and on the cluster
(params out to the workers, value_and_grad on each worker's rows, tree reduction, one
update here). Parallel efficiency is t(one process) / (workers * t(cluster)). The Dask
overhead per step is the cluster step of a network whose compute is negligible (xor on 8
rows). Then a sweep of global batch sizes on the wide network shows where data parallelism
starts to pay. Dask's workers run BLAS with one thread each (its default); this process
keeps NumPy's default, every core.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import blas_description  # noqa: E402
from workloads import WIDE_BP  # noqa: E402

import bpcompile as bpc  # noqa: E402
from bpcompile.training import cluster  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def median_seconds(step: Callable[[], object], repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def digits_data(rng: np.random.Generator) -> dict[str, np.ndarray]:
    try:
        from sklearn.datasets import load_digits

        digits = load_digits()
        return {"x": digits.data / 16.0, "t": np.eye(10)[digits.target]}
    except ImportError:  # the same shapes: 1,797 rows
        return {"x": rng.uniform(0, 1, (1797, 64)), "t": np.eye(10)[rng.integers(0, 10, 1797)]}


def wide_data(rng: np.random.Generator, rows: int) -> dict[str, np.ndarray]:
    return {"x": rng.uniform(0, 1, (rows, 784)).astype(np.float32),
            "t": np.eye(10, dtype=np.float32)[rng.integers(0, 10, rows)]}


def compare(client, name: str, source: str, dtype: str, data: dict[str, np.ndarray],
            repeats: int) -> tuple[float, float]:
    """Median seconds per step: one process, and the cluster; the same rows each step."""
    net = bpc.compile(source, backend="llvm", dtype=dtype)
    p = net.init(seed=0)
    s = net.init_state(p)
    alone = median_seconds(lambda: net.step(p, s, **data), repeats)
    workers = len(client.scheduler_info()["workers"])
    stored = cluster.ClusterData(client, data, frozenset(data), workers)
    weighting = cluster.row_reduction(net, p, stored.head(64), {})
    step = cluster.cluster_stepper(client, net, stored, weighting)
    rows = np.arange(stored.rows)
    spread = median_seconds(lambda: step(p, s, rows), repeats)
    return alone, spread


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    from distributed import Client

    rng = np.random.default_rng(0)
    print(f"BLAS in this process: {blas_description()}")
    with Client(n_workers=args.workers, threads_per_worker=1, processes=True,
                dashboard_address=None) as client:
        print(f"a local cluster of {args.workers} worker processes, one thread each\n")
        xor = (ROOT / "examples" / "xor.bp").read_text()
        tiny = {"x": rng.uniform(0, 1, (8, 2)), "t": rng.uniform(0, 1, (8, 1))}
        _, overhead = compare(client, "xor", xor, "float64", tiny, args.repeats)
        print(f"Dask overhead per step (xor, 8 rows): {overhead * 1e3:.1f} ms\n")
        rows = [("digits, full batch (1,797 rows), float64",
                 (ROOT / "examples" / "digits.bp").read_text(), "float64", digits_data(rng)),
                ("wide, global batch 4,096, float32", WIDE_BP, "float32",
                 wide_data(rng, 4096))]
        print("| workload | one process | cluster | speed-up | parallel efficiency |")
        print("| --- | --- | --- | --- | --- |")
        for label, source, dtype, data in rows:
            alone, spread = compare(client, label, source, dtype, data, args.repeats)
            print(f"| {label} | {alone * 1e3:.1f} ms | {spread * 1e3:.1f} ms | "
                  f"{alone / spread:.2f}x | {alone / (args.workers * spread):.0%} |")
        print("\nwide, by global batch size (float32):\n")
        print("| batch | one process | cluster | speed-up |")
        print("| --- | --- | --- | --- |")
        for batch in (256, 1024, 4096, 16384):
            alone, spread = compare(client, "wide", WIDE_BP, "float32",
                                    wide_data(rng, batch), max(5, args.repeats // 3))
            print(f"| {batch} | {alone * 1e3:.1f} ms | {spread * 1e3:.1f} ms | "
                  f"{alone / spread:.2f}x |")


if __name__ == "__main__":
    main()
