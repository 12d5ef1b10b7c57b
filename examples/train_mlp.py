"""Train mlp.bp (100-50-10 relu, MSE) to imitate a fixed random teacher network.

    python examples/train_mlp.py [--backend numpy|llvm]
"""

import argparse
from pathlib import Path

import numpy as np

import bpcompile as bpc

parser = argparse.ArgumentParser()
parser.add_argument("--backend", default="numpy", choices=["numpy", "llvm"])
parser.add_argument("--epochs", type=int, default=30)
args = parser.parse_args()

rng = np.random.default_rng(0)
teacher = rng.standard_normal((100, 10)) / 10
x = rng.standard_normal((2048, 100))
t = np.tanh(x @ teacher)

net = bpc.compile_file(Path(__file__).with_name("mlp.bp"), backend=args.backend,
                       dtype="float32")
p = net.init(seed=0)
s = net.init_state(p)
batch = 64
for epoch in range(args.epochs):
    order = rng.permutation(len(x))
    losses = [net.step(p, s, x=x[rows], t=t[rows])
              for rows in (order[k:k + batch] for k in range(0, len(x), batch))]
    if epoch % 5 == 0 or epoch == args.epochs - 1:
        print(f"epoch {epoch:3d}  mean loss {np.mean(losses):.5f}")
