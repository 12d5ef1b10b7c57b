"""Held-out accuracy of the MLP (digits.bp) and the LeNet-style network (lenet.bp) on
scikit-learn's 8x8 digits, over seeds 0-4: each seed shuffles the 1,797 images, holds out
the last 20% (359), initializes both networks and orders their batches.

    pip install -e ".[examples]" && python examples/compare_digits.py [--epochs 40]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

import bpcompile as bpc

HERE = Path(__file__).resolve().parent


def train(name: str, images: np.ndarray, labels: np.ndarray, seed: int, epochs: int,
          one_hot: bool) -> float:
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(images))
    images, labels = images[order], labels[order]
    split = int(0.8 * len(images))
    targets = np.eye(10)[labels[:split]] if one_hot else labels[:split].astype(np.float64)
    net = bpc.compile_file(HERE / name, backend="llvm", dtype="float32")
    p = net.init(seed=seed)
    s = net.init_state(p)
    for _ in range(epochs):
        perm = rng.permutation(split)
        for k in range(0, split, 32):
            rows = perm[k:k + 32]
            net.step(p, s, x=images[rows], t=targets[rows])
    logits = net.forward(p, x=images[split:])["logits"]
    return float(np.mean(np.argmax(logits, axis=1) == labels[split:]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=40)
    args = parser.parse_args()
    from sklearn.datasets import load_digits

    digits = load_digits()
    images, labels = (digits.data / 16.0).astype(np.float32), digits.target
    for name, one_hot in (("digits.bp", True), ("lenet.bp", False)):
        start = time.perf_counter()
        scores = [train(name, images, labels, seed, args.epochs, one_hot) for seed in range(5)]
        each = ", ".join(f"{100 * a:.2f}%" for a in scores)
        print(f"{name}: mean {100 * np.mean(scores):.2f}% over seeds 0-4 ({each}), "
              f"{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
