"""Fit regression.bp to noisy linear data and compare with the least-squares solution.

    python examples/train_regression.py [--backend numpy|llvm]
"""

import argparse
from pathlib import Path

import numpy as np

import bpcompile as bpc

parser = argparse.ArgumentParser()
parser.add_argument("--backend", default="numpy", choices=["numpy", "llvm"])
args = parser.parse_args()

rng = np.random.default_rng(0)
true_w, true_b = np.array([[2.0], [-1.0], [0.5]]), 0.3
x = rng.standard_normal((200, 3))
y = x @ true_w + true_b + 0.05 * rng.standard_normal((200, 1))

net = bpc.compile_file(Path(__file__).with_name("regression.bp"), backend=args.backend)
p = net.init()
s = net.init_state(p)
for epoch in range(200):
    loss = net.step(p, s, x=x, y=y)
print(f"final loss {loss:.5f}")
print("learned w", p["w"].ravel().round(3), "b", p["b"].round(3))

design = np.hstack([x, np.ones((200, 1))])
exact = np.linalg.lstsq(design, y, rcond=None)[0].ravel()
print("least squares w", exact[:3].round(3), "b", exact[3:].round(3))
