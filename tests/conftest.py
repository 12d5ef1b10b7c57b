"""Shared fixtures: every test that runs a network runs it on every backend."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
BACKENDS = ["numpy"]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def example_paths() -> list[Path]:
    return sorted(EXAMPLES.glob("*.bp"))
