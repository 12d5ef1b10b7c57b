"""Our packed GEMM against NumPy's BLAS on the products of one training step of the wide
network (784-1024-1024-10, batch 256, float32), or with `--products digits_full` the large
ones of the full-batch digits step (64-64-64-10, 1,797 rows, float64), each implementation
in a process of its own.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/gemm.py [--threads 1]
        [--products digits_full]

"ours" is the llvm backend with BPCOMPILE_NO_BLAS=1: each product is a one-line network
(`y = x @ W`, `x.T @ W` or `x @ W.T`) whose forward is the packed GEMM on the thread pool,
transposed operands read in place; "numpy" is `np.matmul` on the same arrays (a transposed
operand a view, which OpenBLAS reads through a flag). With `--threads 1` both run on one
thread (BPCOMPILE_THREADS=1, OPENBLAS_NUM_THREADS=1). The two workers take turns, one
block of calls each per round (the order alternating), and the table gives the median time
of a call over the rounds, its GFLOP/s and numpy's time over ours (above 1: ours is faster).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

# Each set's dtype and products: (what, m, n, k, A transposed, B transposed)
PRODUCTS = {
    "wide": ("float32", [
        ("x @ W1", 256, 1024, 784, False, False),
        ("h1 @ W2", 256, 1024, 1024, False, False),
        ("h2 @ W3", 256, 10, 1024, False, False),
        ("h2.T @ d3 (d_W3)", 1024, 10, 256, True, False),
        ("d3 @ W3.T (d_h2)", 256, 1024, 10, False, True),
        ("h1.T @ d2 (d_W2)", 1024, 1024, 256, True, False),
        ("d2 @ W2.T (d_h1)", 256, 1024, 1024, False, True),
        ("x.T @ d1 (d_W1)", 784, 1024, 256, True, False),
    ]),
    # the products large enough for BLAS (at least 2**21 multiply-adds)
    "digits_full": ("float64", [
        ("x @ W1, h1 @ W2", 1797, 64, 64, False, False),
        ("h1.T @ d2 (d_W2)", 64, 64, 1797, True, False),
        ("d2 @ W2.T (d_h1)", 1797, 64, 64, False, True),
    ]),
}
BLOCK_SECONDS = 0.05


def network(m: int, n: int, k: int, a_t: bool, b_t: bool) -> str:
    x = f"x[{k}, N]" if a_t else f"x[N, {k}]"
    w = f"W[{n}, {k}]" if b_t else f"W[{k}, {n}]"
    product = ("x.T" if a_t else "x") + " @ " + ("W.T" if b_t else "W")
    return f"network product\ninput {x}\nparam {w}\ny = {product}\noutput y\n"


def callables(implementation: str, products: str) -> list:
    import numpy as np

    rng = np.random.default_rng(0)
    calls = []
    dtype, shapes = PRODUCTS[products]
    for _, m, n, k, a_t, b_t in shapes:
        x = rng.normal(size=(k, m) if a_t else (m, k)).astype(dtype)
        w = rng.normal(size=(n, k) if b_t else (k, n)).astype(dtype)
        if implementation == "ours":
            import bpcompile as bpc

            net = bpc.compile(network(m, n, k, a_t, b_t), backend="llvm", dtype=dtype)
            p = {"W": w}
            calls.append(lambda net=net, p=p, x=x: net.forward(p, x=x))
        else:
            left, right = (x.T if a_t else x), (w.T if b_t else w)
            out = np.empty((m, n), dtype=dtype)
            calls.append(lambda a=left, b=right, c=out: np.matmul(a, b, out=c))
    return calls


def worker(implementation: str, products: str) -> None:
    """Answer `index` lines on stdin with the seconds of one call, timed over a block."""
    calls = callables(implementation, products)
    for call in calls:  # compile, JIT and warm up before any timing
        for _ in range(3):
            call()
    print(json.dumps("ready"), flush=True)
    for line in sys.stdin:
        call = calls[int(line)]
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < BLOCK_SECONDS:
            call()
            count += 1
        print(json.dumps((time.perf_counter() - start) / count), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--threads", type=int, choices=(1, 2), default=2)
    parser.add_argument("--products", choices=sorted(PRODUCTS), default="wide")
    parser.add_argument("--worker", choices=("ours", "numpy"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.products)
        return
    dtype, shapes = PRODUCTS[args.products]
    env = dict(os.environ)
    if args.threads == 1:
        env.update(BPCOMPILE_THREADS="1", OPENBLAS_NUM_THREADS="1")
    workers = {}
    for name in ("ours", "numpy"):
        extra = {"BPCOMPILE_NO_BLAS": "1"} if name == "ours" else {}
        workers[name] = subprocess.Popen(
            [sys.executable, str(Path(__file__)), "--worker", name, "--products",
             args.products], text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env={**env, **extra})
        assert json.loads(workers[name].stdout.readline()) == "ready"
    times: dict[tuple[str, int], list[float]] = {}
    for round_ in range(args.rounds):
        order = list(workers) if round_ % 2 == 0 else list(workers)[::-1]
        for index in range(len(shapes)):
            for name in order:
                process = workers[name]
                process.stdin.write(f"{index}\n")
                process.stdin.flush()
                times.setdefault((name, index), []).append(json.loads(process.stdout.readline()))
                time.sleep(0.15)  # let the other side's spinning threads go to sleep
    for process in workers.values():
        process.stdin.close()
        process.wait()
    print(f"{dtype}, {args.threads} thread(s), median of {args.rounds} rounds\n")
    print("| product | m x n x k | ours (ms) | ours GFLOP/s | NumPy BLAS (ms) | "
          "BLAS GFLOP/s | BLAS / ours |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for index, (what, m, n, k, _, _) in enumerate(shapes):
        ours = statistics.median(times["ours", index])
        blas = statistics.median(times["numpy", index])
        flops = 2 * m * n * k
        print(f"| {what} | {m} x {n} x {k} | {ours * 1e3:.3f} | {flops / ours / 1e9:.0f} | "
              f"{blas * 1e3:.3f} | {flops / blas / 1e9:.0f} | {blas / ours:.2f}x |")


if __name__ == "__main__":
    main()
