"""The disk cache is trusted code (pickles, machine code), so it is kept the way ssh keeps
keys: created 0700, and never read or written where someone else could write.

Oracles: the file modes `os.stat` reports; `cache.load` and the bytes on disk for what is
used; the CacheWarnings recorded with every repeat shown ("always"), so that a second warning
would be seen; for the end-to-end test, the loss of a process whose cache was private.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest

from bpcompile.runtime import cache

HEADER = {"workspace": [[3, "N"]]}
PAYLOAD = bytes(range(256))
POSIX = hasattr(os, "geteuid")
posix_only = pytest.mark.skipif(not POSIX, reason="no POSIX owners and modes")


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture(autouse=True)
def fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with no directory warned about in this process."""
    monkeypatch.setattr(cache, "_warned", set())


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A cache directory holding two good entries, "a" and "b"."""
    path = tmp_path / "cache"
    monkeypatch.setenv("BPCOMPILE_CACHE_DIR", str(path))
    for name in ("a", "b"):
        cache.store(name, HEADER, PAYLOAD)
    assert cache.load("a") == cache.load("b") == (HEADER, PAYLOAD)
    return path


def cache_warnings(action: Callable[[], None]) -> list[str]:
    """The CacheWarning messages `action` issues, every repeat included."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        action()
    return [str(w.message) for w in caught if issubclass(w.category, cache.CacheWarning)]


def loads(name: str, want: tuple[dict, bytes] | None) -> Callable[[], None]:
    """An action: load `name` and check it gives `want`."""
    def action() -> None:
        assert cache.load(name) == want
    return action


def snapshot(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())}


def refused(path: Path) -> list[str]:
    """Load and store in `path` (twice each), checking nothing is loaded or written; the
    warnings issued."""
    before = snapshot(path)

    def use() -> None:
        for _ in range(2):
            assert cache.load("a") is None
            assert cache.load("missing") is None
            cache.store("a", {"other": 1}, b"replacement")
            cache.store("new", HEADER, PAYLOAD)

    messages = cache_warnings(use)
    assert snapshot(path) == before, "something was written into a distrusted cache"
    return messages


# ------------------------------------------------------------------ creating


@posix_only
@pytest.mark.parametrize("umask", [0o000, 0o022, 0o277])
@pytest.mark.parametrize("where", ["BPCOMPILE_CACHE_DIR", "XDG_CACHE_HOME", "HOME"])
def test_created_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, umask: int,
                         where: str) -> None:
    """Every directory the cache creates is 0700 whatever the umask (0277 would leave it
    unwritable); the directory that already existed keeps its mode."""
    had = tmp_path / "had"
    had.mkdir()
    had.chmod(0o755)
    if where == "BPCOMPILE_CACHE_DIR":
        monkeypatch.setenv(where, str(had / "x" / "cache"))
        made = [had / "x", had / "x" / "cache"]
    else:
        monkeypatch.delenv("BPCOMPILE_CACHE_DIR")
        monkeypatch.setenv("HOME", str(had))
        if where == "XDG_CACHE_HOME":
            monkeypatch.setenv(where, str(had / "xdg"))
            made = [had / "xdg", had / "xdg" / "bpcompile"]
        else:
            monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
            made = [had / ".cache", had / ".cache" / "bpcompile"]
    previous = os.umask(umask)
    try:
        cache.store("entry", HEADER, PAYLOAD)
    finally:
        os.umask(previous)
    assert cache.directory() == made[-1]
    assert [oct(mode(p)) for p in made] == [oct(0o700)] * len(made)
    assert mode(made[-1] / "entry") & 0o077 == 0, "an entry others can read or write"
    assert mode(had) == 0o755, "a directory the user already had was chmodded"
    assert not cache_warnings(loads("entry", (HEADER, PAYLOAD)))


@posix_only
def test_an_existing_directory_is_left_as_it_is(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A cache directory the user made, readable by others but writable by the user alone,
    is used and keeps its mode."""
    folder = tmp_path / "mine"
    folder.mkdir()
    folder.chmod(0o755)
    monkeypatch.setenv("BPCOMPILE_CACHE_DIR", str(folder))
    cache.store("entry", HEADER, PAYLOAD)
    assert not cache_warnings(loads("entry", (HEADER, PAYLOAD)))
    assert mode(folder) == 0o755


def test_missing_cache_is_not_created_by_load(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BPCOMPILE_CACHE_DIR", str(tmp_path / "cache"))
    assert not cache_warnings(loads("a", None))
    assert not (tmp_path / "cache").exists()


# ------------------------------------------------------- directories refused


@posix_only
@pytest.mark.parametrize("opened", [0o720, 0o770, 0o702, 0o777])
def test_directory_writable_by_others(folder: Path, opened: int) -> None:
    folder.chmod(opened)
    messages = refused(folder)
    assert len(messages) == 1, messages
    assert str(folder) in messages[0]
    assert f"is writable by other users (mode {opened:04o})" in messages[0]
    assert "compiling afresh, nothing is loaded from or stored there" in messages[0]
    assert f"chmod 700 {folder}" in messages[0]
    assert "BPCOMPILE_CACHE_DIR=off" in messages[0]
    folder.chmod(0o700)  # the mode alone decided: made private, the entries load again
    assert cache.load("a") == (HEADER, PAYLOAD)


@posix_only
def test_sticky_world_writable_directory(folder: Path) -> None:
    """A /tmp-like directory: the sticky bit keeps others from replacing your files, not
    from adding theirs. Its advice is not to chmod it (it is shared on purpose)."""
    folder.chmod(0o1777)
    messages = refused(folder)
    assert len(messages) == 1, messages
    assert f"{folder} is writable by other users (mode 1777)" in messages[0]
    assert "chmod" not in messages[0]
    assert "set BPCOMPILE_CACHE_DIR to a directory of your own" in messages[0]


@posix_only
def test_directory_of_another_user(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another user's cache (simulated: this process claims another uid), mode 0700."""
    owner = os.stat(folder).st_uid
    monkeypatch.setattr(os, "geteuid", lambda: owner + 4242)
    messages = refused(folder)
    assert len(messages) == 1, messages
    assert (f"{folder} belongs to uid {owner}, not you (uid {owner + 4242})"
            in messages[0])
    assert "chmod" not in messages[0]  # chmod cannot make it yours


def test_no_posix_owners_skips_the_checks(folder: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Windows has no os.geteuid and its modes say nothing about other users: the cache is
    used as it is."""
    folder.chmod(0o777)
    monkeypatch.delattr(os, "geteuid", raising=False)
    assert not cache_warnings(loads("a", (HEADER, PAYLOAD)))


# ----------------------------------------------------------- entries refused


@posix_only
@pytest.mark.parametrize("opened", [0o620, 0o602])
def test_entry_writable_by_others(folder: Path, opened: int) -> None:
    """That entry is not loaded (the others are), and a store replaces it with a private
    one, which loads."""
    (folder / "a").chmod(opened)

    def use() -> None:
        for _ in range(2):
            assert cache.load("a") is None
        assert cache.load("b") == (HEADER, PAYLOAD)

    messages = cache_warnings(use)
    assert len(messages) == 1, messages
    assert f"{folder / 'a'} is writable by other users (mode {opened:04o})" in messages[0]
    cache.store("a", HEADER, PAYLOAD)
    assert mode(folder / "a") == 0o600
    assert cache.load("a") == (HEADER, PAYLOAD)


@posix_only
@pytest.mark.skipif(POSIX and os.geteuid() != 0, reason="chown needs root")
def test_entry_of_another_user(folder: Path) -> None:
    os.chown(folder / "a", 4242, -1)
    messages = cache_warnings(loads("a", None))
    assert len(messages) == 1, messages
    assert f"{folder / 'a'} belongs to uid 4242, not you (uid 0)" in messages[0]
    assert cache.load("b") == (HEADER, PAYLOAD)


# ------------------------------------------------------------------ end to end


SOURCE = """
network trusted
input  x[N, 3]
target t[N, 2]
param W[3, 2] = normal(0.5)
y = tanh(x @ W)
output y
loss mse(y, t)
optimize sgd(lr=0.1)
"""

LOSS = f"""
import numpy as np
import bpcompile as bpc
net = bpc.compile({SOURCE!r}, backend="llvm")
rng = np.random.default_rng(0)
loss = float(net.loss(net.init(seed=0), x=rng.standard_normal((5, 3)),
                      t=rng.standard_normal((5, 2))))
print(repr(loss))
"""


def loss_here() -> float:
    """LOSS run in this process."""
    namespace: dict[str, object] = {}
    exec(LOSS, namespace)
    return namespace["loss"]  # type: ignore[return-value]


@posix_only
def test_a_shared_cache_is_compiled_past(tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A network compiled into a cache that is then opened to everyone: a fresh process
    compiles it afresh, gets the same loss, says why on stderr, and writes nothing."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("BPCOMPILE_CACHE_DIR", str(folder))
    first = loss_here()
    assert any(p.suffix == ".o" for p in folder.iterdir()), "nothing was cached"
    folder.chmod(0o777)
    before = snapshot(folder)
    run = subprocess.run([sys.executable, "-c", LOSS], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "BPCOMPILE_CACHE_DIR": str(folder)})
    assert run.returncode == 0, run.stderr
    assert float(run.stdout.strip().splitlines()[-1]) == first
    assert "CacheWarning" in run.stderr
    assert (f"bpcompile cache directory {folder} is writable by other users (mode 0777): "
            f"compiling afresh, nothing is loaded from or stored there") in run.stderr
    assert run.stderr.count("CacheWarning") == 1, run.stderr
    assert snapshot(folder) == before
