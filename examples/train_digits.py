"""Train digits.bp (64-64-64-10 relu, softmax cross-entropy) on 8x8 handwritten digits.

Uses scikit-learn's bundled digits data when scikit-learn is installed
(`pip install scikit-learn`); otherwise synthetic digits: 10 random prototypes plus noise.

    python examples/train_digits.py [--backend numpy|llvm] [--epochs 40]
"""

import argparse
from pathlib import Path

import numpy as np

import bpcompile as bpc

parser = argparse.ArgumentParser()
parser.add_argument("--backend", default="numpy", choices=["numpy", "llvm"])
parser.add_argument("--epochs", type=int, default=40)
args = parser.parse_args()

rng = np.random.default_rng(0)
try:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images, labels = digits.data / 16.0, digits.target
    source = "scikit-learn digits"
except ImportError:
    prototypes = rng.uniform(0, 1, size=(10, 64))
    labels = rng.integers(0, 10, size=1797)
    images = np.clip(prototypes[labels] + 0.3 * rng.standard_normal((1797, 64)), 0, 1)
    source = "synthetic digits (install scikit-learn for the real ones)"

order = rng.permutation(len(images))
images, labels = images[order], labels[order]
split = int(0.8 * len(images))
x_train, x_test = images[:split], images[split:]
t_train = np.eye(10)[labels[:split]]

net = bpc.compile_file(Path(__file__).with_name("digits.bp"), backend=args.backend,
                       dtype="float32")
p = net.init(seed=0)
s = net.init_state(p)
batch = 32
for epoch in range(args.epochs):
    perm = rng.permutation(split)
    for k in range(0, split, batch):
        rows = perm[k:k + batch]
        net.step(p, s, x=x_train[rows], t=t_train[rows])
logits = net.forward(p, x=x_test)["logits"]
accuracy = np.mean(np.argmax(logits, axis=1) == labels[split:])
print(f"{source}: held-out accuracy {accuracy:.3f} after {args.epochs} epochs")
