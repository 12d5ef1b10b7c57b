"""Train xor.bp on the XOR truth table and print what it learned.

    python examples/train_xor.py [--backend numpy|llvm]
"""

import argparse
from pathlib import Path

import numpy as np

import bpcompile as bpc

parser = argparse.ArgumentParser()
parser.add_argument("--backend", default="numpy", choices=["numpy", "llvm"])
parser.add_argument("--steps", type=int, default=20000)
args = parser.parse_args()

net = bpc.compile_file(Path(__file__).with_name("xor.bp"), backend=args.backend)
x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=float)
t = np.array([[0], [1], [1], [0]], dtype=float)

p = net.init(seed=1)
s = net.init_state(p)
for i in range(args.steps):
    loss = net.step(p, s, x=x, t=t)
    if i % (args.steps // 5) == 0:
        print(f"step {i:6d}  loss {loss:.6f}")

y = net.forward(p, x=x)["y"]
for row, out in zip(x, y[:, 0]):
    print(f"xor({int(row[0])}, {int(row[1])}) = {out:.3f}")
print("learned XOR:", bool(np.all((y > 0.5) == (t > 0.5))))
