"""The public entry points: compile a `.bp` program for a backend and dtype."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .driver import EXECUTORS, open_network
from .errors import BPError, BPTypeError
from .runtime.net import CompiledNet

DTYPES = {"float32": np.dtype(np.float32), "float64": np.dtype(np.float64)}


def _dtype(dtype: object) -> np.dtype:
    try:
        resolved = np.dtype(dtype)
    except TypeError:
        resolved = None
    if resolved is None or resolved.name not in DTYPES:
        raise BPTypeError(f"dtype must be float32 or float64, not {dtype!r}")
    return resolved


def compile(source: str, backend: str = "numpy", dtype: object = "float64",
            filename: str = "<string>") -> CompiledNet:
    """Compile `.bp` source text. Raises a BPError subclass, located in the text, if bad."""
    if backend not in EXECUTORS:
        raise BPTypeError(f"backend must be one of {', '.join(EXECUTORS)}, not {backend!r}")
    resolved = _dtype(dtype)
    if not isinstance(source, str):
        raise BPTypeError(f"source must be text, not {type(source).__name__}")
    return open_network(source, filename, backend, resolved)


def compile_file(path: str | Path, backend: str = "numpy",
                 dtype: object = "float64") -> CompiledNet:
    """Compile the `.bp` file at `path`; messages name it."""
    path = Path(path)
    try:
        # newline="": the text as it is, so positions agree with compile() on the same text
        with open(path, encoding="utf-8", newline="") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as error:
        raise BPError(f"cannot read {path}: {error}") from None
    return compile(text, backend=backend, dtype=dtype, filename=path.name)
