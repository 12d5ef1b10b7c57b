"""Files written atomically: a reader, or a crash, never meets half of one.

The bytes go to a temporary file beside the target, are flushed to disk, and the file is
renamed over the target, which keeps its old content until that moment. The new file gets
the mode a file created the ordinary way would get (mkstemp's own is 0600).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def write(path: str | Path, fill: Callable[[BinaryIO], None]) -> None:
    """Create or replace `path` with what `fill` writes into the file it is given."""
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(handle, "wb") as file:
            fill(file)
            file.flush()
            os.fsync(file.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temp, 0o666 & ~umask)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def write_bytes(path: str | Path, data: bytes) -> None:
    write(path, lambda file: file.write(data))


def write_text(path: str | Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))
