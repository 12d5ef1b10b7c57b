"""Write the data files the examples train on, into examples/data/:

    xor.npz          the XOR truth table (x[4, 2], t[4, 1])
    spirals.npz      two interleaved spirals, 1,000 points (x[N, 2], t[N, 1] in {0, 1})
    regression.csv   y = 2 x_0 - 3 x_1 + 0.5 x_2 + 1 + noise, 500 rows (columns x_0..x_2, y)
    sequences.npz    2,000 sequences of 24 token ids (vocabulary 10, ids[N, 24]) labelled by
                     which of three 3-token motifs is planted somewhere in them (t[N])
    digits.npz       scikit-learn's 8x8 handwritten digits, 1,797 images scaled to [0, 1],
                     with integer labels (needs scikit-learn: pip install "bpcompile[examples]")

    python examples/make_data.py

Each file is made from a fixed seed, so the results in the README can be reproduced.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent / "data"


def xor() -> None:
    x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float64)
    t = np.array([[0], [1], [1], [0]], dtype=np.float64)
    np.savez(HERE / "xor.npz", x=x, t=t)


def spirals(n: int = 1000, seed: int = 0) -> None:
    """Two spirals winding 1.5 turns around each other: a classic that needs depth."""
    rng = np.random.default_rng(seed)
    turn = np.sqrt(rng.uniform(0, 1, n // 2)) * 3 * np.pi
    arm = np.stack([turn * np.cos(turn), turn * np.sin(turn)], axis=1) / (3 * np.pi)
    x = np.concatenate([arm, -arm]) + 0.02 * rng.standard_normal((n, 2))
    t = np.concatenate([np.zeros(n // 2), np.ones(n // 2)])[:, None]
    np.savez(HERE / "spirals.npz", x=x, t=t)


def regression(n: int = 500, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (n, 3))
    y = x @ np.array([2.0, -3.0, 0.5]) + 1.0 + 0.1 * rng.standard_normal(n)
    rows = ["x_0,x_1,x_2,y"] + [",".join(f"{v:.6f}" for v in (*row, target))
                                 for row, target in zip(x, y)]
    (HERE / "regression.csv").write_text("\n".join(rows) + "\n")


MOTIFS = ((1, 2, 3), (3, 2, 1), (4, 4, 5))


def sequences(n: int = 2000, length: int = 24, seed: int = 0) -> None:
    """Random tokens with one motif planted at a random place: which one is the label. Only
    a detector of 3 neighbouring tokens (a width-3 convolution, max over time) can tell."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, 10, size=(n, length))
    labels = rng.integers(0, len(MOTIFS), size=n)
    for row, label in enumerate(labels):
        start = rng.integers(0, length - 3)
        ids[row, start:start + 3] = MOTIFS[label]
    np.savez(HERE / "sequences.npz", ids=ids.astype(np.uint8), t=labels.astype(np.uint8))


def digits() -> bool:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        print("digits.npz skipped: it needs scikit-learn (pip install scikit-learn)",
              file=sys.stderr)
        return False
    data = load_digits()
    np.savez(HERE / "digits.npz", x=data.data / 16.0, t=data.target)
    return True


if __name__ == "__main__":
    HERE.mkdir(exist_ok=True)
    xor()
    spirals()
    regression()
    sequences()
    made = ["xor.npz", "spirals.npz", "regression.csv", "sequences.npz"] + (
        ["digits.npz"] if digits() else [])
    print(f"wrote {', '.join(made)} in {HERE}")
