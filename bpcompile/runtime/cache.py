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

Entries are code that gets executed (pickles, machine code), so the cache is kept the way
ssh keeps keys: directories it creates are mode 0700, and it is used only if you alone can
write to it. A cache directory owned by another user, or writable by group or others (a
sticky one such as /tmp too), is neither read nor written, and so is an entry file owned by
another user or writable by group or others (such an entry is compiled afresh and replaced).
Each such directory is reported once per process with a CacheWarning. Where the OS has no
POSIX owners (no os.geteuid: Windows) these checks are skipped.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import tempfile
import warnings
from functools import lru_cache
from pathlib import Path

MAGIC = b"BPCOMPILE-CACHE-1\n"
PRIVATE = 0o700  # directories the cache creates
OTHERS_WRITE = stat.S_IWGRP | stat.S_IWOTH


class CacheWarning(UserWarning):
    """The cache directory, or an entry in it, could have been written by someone else, so
    it is not trusted: the network is compiled afresh."""


_warned: set[str] = set()  # directories already reported by this process


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
    sources = []
    for folder, subfolders, names in os.walk(package):
        # bytecode folders hold many files and no sources: not walking them halves the time
        subfolders[:] = [name for name in subfolders if name != "__pycache__"]
        sources += [Path(folder, name) for name in names if name.endswith((".py", ".lark"))]
    digest = hashlib.sha256()
    for path in sorted(sources):
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


# ------------------------------------------------------------------ trust


def _euid() -> int | None:
    """This process's user, or None where the OS has no POSIX owners (Windows: its modes
    say nothing about who may write, so neither check means anything there)."""
    geteuid = getattr(os, "geteuid", None)  # looked up per call: tests replace it
    return None if geteuid is None else geteuid()


def _distrust(info: os.stat_result) -> str | None:
    """Why a file or directory with this status may have been written by someone other than
    this process's user; None if only that user (or root) could have."""
    me = _euid()
    if me is None:
        return None
    if info.st_uid != me:
        return f"belongs to uid {info.st_uid}, not you (uid {me})"
    mode = stat.S_IMODE(info.st_mode)
    if mode & OTHERS_WRITE:  # a sticky bit (/tmp) still lets others add files
        return f"is writable by other users (mode {mode:04o})"
    return None


def _warn_once(folder: Path, message: str) -> None:
    """Warn about `folder` the first time only: every entry a compile touches would repeat
    the same complaint."""
    label = str(folder)
    if label not in _warned:
        _warned.add(label)
        warnings.warn(message, CacheWarning, stacklevel=4)


def _advice(folder: Path, info: os.stat_result) -> str:
    """How to get a cache of one's own again."""
    ways = ["set BPCOMPILE_CACHE_DIR to a directory of your own", "BPCOMPILE_CACHE_DIR=off"]
    # chmod only helps a directory that is yours, and a sticky one is shared on purpose
    if info.st_uid == _euid() and not info.st_mode & stat.S_ISVTX:
        ways.insert(0, f"chmod 700 {folder}")
    return "To fix: " + ", or ".join(ways) + "."


def _trusted(folder: Path) -> bool:
    """Whether `folder` is an existing directory only this user can write to; warns (once)
    about one that exists but is not."""
    try:
        info = os.stat(folder)
    except OSError:  # missing, or below a file: nothing to load, nowhere to store
        return False
    if not stat.S_ISDIR(info.st_mode):
        return False
    why = _distrust(info)
    if why is not None:
        _warn_once(folder, f"bpcompile cache directory {folder} {why}: compiling afresh, "
                           f"nothing is loaded from or stored there. {_advice(folder, info)}")
        return False
    return True


def _create(folder: Path) -> None:
    """Make `folder` and whichever of its parents are missing, each mode 0700; directories
    that already exist (~/.cache, say) are left as they are."""
    missing: list[Path] = []
    current = folder
    while not current.exists() and current.parent != current:
        missing.append(current)
        current = current.parent
    for path in reversed(missing):
        try:
            os.mkdir(path, PRIVATE)
        except FileExistsError:  # another process made it meanwhile: _trusted judges it
            continue
        # the umask can only narrow 0700 (0500 would leave it unwritable): set it exactly
        os.chmod(path, PRIVATE)


# ------------------------------------------------------------- the entries


def _encode(header: dict, payload: bytes) -> bytes:
    head = json.dumps(header, sort_keys=True).encode()
    checksum = hashlib.sha256(head + b"\0" + payload).hexdigest().encode()
    return MAGIC + checksum + b"\n" + str(len(head)).encode() + b"\n" + head + payload


def _decode(blob: bytes) -> tuple[dict, bytes] | None:
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


def _write(path: Path, blob: bytes) -> None:
    """Write `blob` to `path` atomically. mkstemp makes the file 0600 (a umask can only
    narrow that), and the rename replaces any file there (a distrusted one too)."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(blob)
        os.replace(temporary, path)
    except OSError:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise


def _read(folder: Path, name: str) -> bytes | None:
    """The bytes of entry `name`, or None if it is missing or could have been written by
    someone else. The open file is checked, not the name, so a swap after the check
    cannot slip another file in."""
    path = folder / name
    try:
        with open(path, "rb") as entry:
            why = _distrust(os.fstat(entry.fileno()))
            blob = entry.read() if why is None else None
    except OSError:
        return None
    if why is None:
        return blob
    _warn_once(folder, f"bpcompile cache entry {path} {why}: it is not loaded; compiling "
                       f"afresh and replacing it with an entry of your own. To fix: rm -r "
                       f"{folder} (the cache refills itself), or set BPCOMPILE_CACHE_DIR to a "
                       f"directory of your own, or BPCOMPILE_CACHE_DIR=off.")
    return None


def store(name: str, header: dict, payload: bytes) -> None:
    """Write an entry atomically; a cache that cannot be written, or that someone else
    could write to, is simply not used."""
    folder = directory()
    if folder is None:
        return
    try:
        _create(folder)
        if _trusted(folder):
            _write(folder / name, _encode(header, payload))
    except OSError:
        pass


def load(name: str) -> tuple[dict, bytes] | None:
    """The header and payload of a valid entry, or None (missing, damaged, foreign, or in
    a directory someone else could write to)."""
    folder = directory()
    if folder is None or not _trusted(folder):
        return None
    blob = _read(folder, name)
    return None if blob is None else _decode(blob)
