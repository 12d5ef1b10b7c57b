"""Shared fixtures: every test that runs a network runs it on every backend."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest

# Compiled networks go to a cache of the test session's own, not the user's.
os.environ.setdefault("BPCOMPILE_CACHE_DIR", tempfile.mkdtemp(prefix="bpcompile-test-cache-"))

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

# Two inputs and a target sharing the symbol N, a scalar param, Adam so that step has state
# to protect: the network the runtime and fast-path tests probe.
PROBE = """
network probe
input  x[N, 3]
input  m[N, 2]
target t[N, 2]
param W[3, 2] = normal(0.5)
param b[2]    = uniform(-0.2, 0.2)
param a[]     = 0.75
y = tanh(x @ W + b) * m * a
output y
loss mse(y, t)
optimize adam(lr=0.01)
"""
BACKENDS = ["numpy", "llvm"]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def example_paths() -> list[Path]:
    return sorted(EXAMPLES.glob("*.bp"))
