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
BACKENDS = ["numpy", "llvm"]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def example_paths() -> list[Path]:
    return sorted(EXAMPLES.glob("*.bp"))
