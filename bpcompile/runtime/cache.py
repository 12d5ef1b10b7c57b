"""The disk cache of compiled networks: a second compile of the same network skips SymPy,
code generation and LLVM.

An entry is keyed by everything that decides the machine code: the `.bp` source, the dtype,
bpcompile's and llvmlite's versions, the host CPU's name and features, and the external
functions the code calls. Each file holds a format tag, a JSON header, the payload and the
SHA-256 of both; a file that is truncated, corrupted or of another format fails that check
and is rebuilt, never loaded. Files are written to a temporary name and renamed into place,
so a reader (another process compiling the same network) sees a whole file or none.

The directory is $BPCOMPILE_CACHE_DIR, else $XDG_CACHE_HOME/bpcompile, else
~/.cache/bpcompile; BPCOMPILE_CACHE_DIR=off disables the cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from functools import lru_cache
from pathlib import Path

MAGIC = b"BPCOMPILE-CACHE-1\n"


def directory() -> Path | None:
    configured = os.environ.get("BPCOMPILE_CACHE_DIR")
    if configured == "off":
        return None
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "bpcompile"


@lru_cache(maxsize=1)
def compiler_fingerprint() -> str:
    """A hash of bpcompile's own source files: any change to the compiler changes every key,
    so an edited or upgraded compiler never loads code an older one made."""
    package = Path(__file__).resolve().parents[1]  # the whole bpcompile package
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*")):
        if path.suffix in (".py", ".lark"):
            digest.update(str(path.relative_to(package)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def key(*parts: str) -> str:
    """The cache name for `parts`, always including the compiler's fingerprint."""
    digest = hashlib.sha256(compiler_fingerprint().encode())
    for part in parts:
        digest.update(part.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:40]


def _path(name: str) -> Path | None:
    folder = directory()
    return None if folder is None else folder / name


def store(name: str, header: dict, payload: bytes) -> None:
    """Write an entry atomically; a cache that cannot be written is simply not used."""
    path = _path(name)
    if path is None:
        return
    head = json.dumps(header, sort_keys=True).encode()
    checksum = hashlib.sha256(head + b"\0" + payload).hexdigest().encode()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        with os.fdopen(handle, "wb") as out:
            out.write(MAGIC + checksum + b"\n" + str(len(head)).encode() + b"\n" + head +
                      payload)
        os.replace(temporary, path)
    except OSError:
        try:
            os.unlink(temporary)  # type: ignore[possibly-undefined]
        except (OSError, NameError):
            pass


def load(name: str) -> tuple[dict, bytes] | None:
    """The header and payload of a valid entry, or None (missing, damaged or foreign)."""
    path = _path(name)
    if path is None:
        return None
    try:
        blob = path.read_bytes()
    except OSError:
        return None
    if not blob.startswith(MAGIC):
        return None
    try:
        rest = blob[len(MAGIC):]
        checksum, rest = rest.split(b"\n", 1)
        size, rest = rest.split(b"\n", 1)
        head, payload = rest[: int(size)], rest[int(size):]
        if hashlib.sha256(head + b"\0" + payload).hexdigest().encode() != checksum:
            return None
        return json.loads(head), payload
    except (ValueError, json.JSONDecodeError):
        return None
