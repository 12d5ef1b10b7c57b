"""The disk cache of compiled networks (cache.py, and how the llvm backend uses it).

Oracles: the results of the process that filled the cache (bit for bit: loaded machine code
is the same machine code); the NumPy backend; the front end and code generator themselves,
replaced by functions that raise, to show they did not run; SHA-256, through `cache.load`,
for which files are whole.
"""

from __future__ import annotations

import ast
import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import bpcompile as bpc
import bpcompile.backends.llvm.executor as llvm_runtime
import bpcompile.driver
from bpcompile.backends.llvm import prebuilt as library
from bpcompile.backends.llvm import threads
from bpcompile.backends.llvm.jit import vector_bytes
from bpcompile.runtime import cache

SOURCE = """
network cached
input  x[N, 3]
target t[N, 2]
param W[3, 2] = normal(0.5)
param b[2]    = uniform(-0.2, 0.2)
y = tanh(x @ W + b)
output y
loss mse(y, t) + logsumexp(y)
optimize adam(lr=0.01)
"""


def data(n: int = 6) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"x": rng.standard_normal((n, 3)), "t": rng.standard_normal((n, 2))}


def run_all(net: bpc.CompiledNet) -> dict[str, np.ndarray]:
    """Every entry point, and three steps (the fast path's too), as named arrays."""
    d = data()
    p = net.init(seed=0)
    results = {f"forward {k}": v for k, v in net.forward(p, x=d["x"]).items()}
    results["loss"] = np.array(net.loss(p, **d))
    loss, grads = net.value_and_grad(p, **d)
    results["value"] = np.array(loss)
    results.update({f"grad {k}": v for k, v in grads.items()})
    s = net.init_state(p)
    for k in range(3):
        results[f"step {k}"] = np.array(net.step(p, s, **d))
    results.update({f"param {k}": v for k, v in p.items()})
    results.update({f"state {k}": v for k, v in s.items()})
    return results


def assert_identical(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert set(got) == set(want)
    for name in want:
        assert np.asarray(got[name]).tobytes() == np.asarray(want[name]).tobytes(), name


def assert_matches_numpy(got: dict[str, np.ndarray], source: str = SOURCE,
                         dtype: str = "float64") -> None:
    with no_cache():  # the numpy backend's own entries are not the ones under test
        want = run_all(bpc.compile(source, dtype=dtype))
    rtol = 1e-12 if dtype == "float64" else 1e-5
    assert set(got) == set(want)
    for name in want:
        if np.ndim(want[name]):  # arrays; losses are Python floats
            assert got[name].dtype == np.dtype(dtype), name
        scale = np.max(np.abs(want[name]))
        assert np.max(np.abs(got[name] - want[name])) <= rtol * scale, name


@contextlib.contextmanager
def no_cache() -> Iterator[None]:
    old = os.environ.get("BPCOMPILE_CACHE_DIR")
    os.environ["BPCOMPILE_CACHE_DIR"] = "off"
    try:
        yield
    finally:
        if old is None:
            del os.environ["BPCOMPILE_CACHE_DIR"]
        else:
            os.environ["BPCOMPILE_CACHE_DIR"] = old


GRAMMAR = "grammar.lark-cache"  # lark's own cache of its grammar analysis (parser.py)


def entries(folder: Path) -> list[Path]:
    """The entries cache.py writes (not temporary files being written, not lark's file)."""
    return sorted(p for p in folder.iterdir()
                  if not p.name.startswith(".") and p.name != GRAMMAR)


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private, empty cache folder. The runtime library and the thread pool are loaded
    (once per process) before it is chosen, so the folder holds only the entries of the
    networks compiled."""
    for dtype in ("float64", "float32"):
        library.load(dtype, vector_bytes())
    threads.load()
    folder = tmp_path / "cache"
    monkeypatch.setenv("BPCOMPILE_CACHE_DIR", str(folder))
    return folder


class Spy:
    """Counts what the llvm backend compiles: networks built by the front end, entry points
    compiled from IR, and entry points loaded as object code."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        self.built = 0
        self.compiled = 0
        self.loaded: list[bytes] = []
        build, compile_ir = bpcompile.driver.build, llvm_runtime.compile_ir

        def counted_build(*args: object, **kwargs: object) -> object:
            self.built += 1
            return build(*args, **kwargs)

        def counted_compile(ir_text: str, object_code: bytes | None = None,
                            **kwargs: object) -> object:
            if object_code is None:
                self.compiled += 1
            else:
                self.loaded.append(object_code)
            return compile_ir(ir_text, object_code=object_code, **kwargs)

        monkeypatch.setattr(bpcompile.driver, "build", counted_build)
        monkeypatch.setattr(llvm_runtime, "compile_ir", counted_compile)


# ------------------------------------------------------------- the file format


def _entry(folder: Path) -> tuple[str, bytes]:
    cache.store("entry.o", {"workspace": [[3, "N"]]}, bytes(range(256)) * 2)
    return "entry.o", (folder / "entry.o").read_bytes()


def test_store_then_load(cache_dir: Path) -> None:
    name, _ = _entry(cache_dir)
    assert cache.load(name) == ({"workspace": [[3, "N"]]}, bytes(range(256)) * 2)
    assert cache.load("missing.o") is None


@pytest.mark.parametrize("flip", [0x01, 0x80, 0xFF])
def test_every_single_byte_change_is_detected(cache_dir: Path, flip: int) -> None:
    name, blob = _entry(cache_dir)
    path = cache_dir / name
    for k in range(len(blob)):
        damaged = bytearray(blob)
        damaged[k] ^= flip
        path.write_bytes(bytes(damaged))
        assert cache.load(name) is None, f"byte {k} changed and the entry still loads"


def test_every_truncation_is_detected(cache_dir: Path) -> None:
    name, blob = _entry(cache_dir)
    path = cache_dir / name
    for size in range(len(blob)):
        path.write_bytes(blob[:size])
        assert cache.load(name) is None, f"truncated to {size} bytes and still loads"
    path.write_bytes(blob + b"\0")
    assert cache.load(name) is None, "a byte appended and it still loads"


# ------------------------------------------------------- a second compile


WORKER = r'''
import sys
import numpy as np
sys.path.insert(0, sys.argv[3])
import bpcompile as bpc
from test_cache import SOURCE, run_all

mode, out = sys.argv[1], sys.argv[2]
counts = {"built": 0, "generated": 0, "library": 0, "pool": 0}
if mode == "no-front-end":
    import bpcompile.api, bpcompile.driver
    import bpcompile.backends.llvm.codegen as codegen
    import bpcompile.backends.llvm.jit as jit
    import bpcompile.backends.llvm.prebuilt as library
    import bpcompile.backends.llvm.executor as runtime
    import bpcompile.backends.llvm.threads as pool

    def refuse(*args, **kwargs):
        raise AssertionError("the front end or code generator ran")

    bpcompile.driver.build = refuse
    codegen.generate = runtime.generate = refuse
    library.library_ir = pool.pool_ir = refuse
    jit.optimize = refuse  # nothing is compiled from IR
if mode == "count":
    import bpcompile.driver
    import bpcompile.backends.llvm.prebuilt as library
    import bpcompile.backends.llvm.executor as runtime
    import bpcompile.backends.llvm.threads as pool

    def counting(name, function):
        def counted(*args, **kwargs):
            counts[name] += 1
            return function(*args, **kwargs)
        return counted

    bpcompile.driver.build = counting("built", bpcompile.driver.build)
    runtime.generate = counting("generated", runtime.generate)
    library.library_ir = counting("library", library.library_ir)
    pool.pool_ir = counting("pool", pool.pool_ir)
net = bpc.compile(SOURCE, backend="llvm", filename="cached.bp")
np.savez(out, **run_all(net))
print(counts)
'''


def run_worker(tmp_path: Path, folder: Path, mode: str, name: str) -> tuple[dict, dict]:
    """Run WORKER in a fresh process with `folder` as its cache: (results, counts)."""
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    out = tmp_path / f"{name}.npz"
    env = {**os.environ, "BPCOMPILE_CACHE_DIR": str(folder)}
    run = subprocess.run([sys.executable, str(script), mode, str(out),
                          str(Path(__file__).parent)], env=env, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    with np.load(out) as saved:
        results = {k: saved[k] for k in saved.files}
    return results, ast.literal_eval(run.stdout.strip().splitlines()[-1])


def test_second_compile_skips_the_front_end(tmp_path: Path) -> None:
    """A fresh process with the first one's cache runs every entry point with the front
    end, the code generator, LLVM's optimizer and the runtime library's IR all replaced by
    functions that raise; its results are the first process's, bit for bit."""
    folder = tmp_path / "cache"
    first, counts = run_worker(tmp_path, folder, "count", "first")
    assert counts == {"built": 1, "generated": 4, "library": 1, "pool": 1}
    assert_matches_numpy(first)
    second, _ = run_worker(tmp_path, folder, "no-front-end", "second")
    assert_identical(second, first)


DAMAGE = {
    "truncated to half": lambda blob: blob[: len(blob) // 2],
    "emptied": lambda blob: b"",
    "one byte flipped in the payload": lambda blob: _flip(blob, len(blob) - len(blob) // 3),
    "one byte flipped in the header": lambda blob: _flip(blob, 30),
    "last byte flipped": lambda blob: _flip(blob, len(blob) - 1),
}


def _flip(blob: bytes, index: int) -> bytes:
    damaged = bytearray(blob)
    damaged[index] ^= 0x20
    return bytes(damaged)


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_entries_are_rebuilt_not_loaded(cache_dir: Path, damage: str,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    want = run_all(bpc.compile(SOURCE, backend="llvm", filename="cached.bp"))
    assert_matches_numpy(want)
    files = entries(cache_dir)
    assert len(files) == 5  # the signature and four entry points
    damaged = {}
    for path in files:
        damaged[path.name] = DAMAGE[damage](path.read_bytes())
        path.write_bytes(damaged[path.name])
    spy = Spy(monkeypatch)
    got = run_all(bpc.compile(SOURCE, backend="llvm", filename="cached.bp"))
    assert_identical(got, want)
    assert spy.built == 1 and spy.compiled == 4 and not spy.loaded
    for path in entries(cache_dir):
        assert path.read_bytes() != damaged[path.name]
        assert cache.load(path.name) is not None, f"{path.name} was not rewritten whole"
    # and the rewritten entries are used again
    spy = Spy(monkeypatch)
    assert_identical(run_all(bpc.compile(SOURCE, backend="llvm", filename="cached.bp")), want)
    assert spy.built == 0 and spy.compiled == 0 and len(spy.loaded) == 4


def test_damaged_entries_of_another_process_are_rebuilt(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The runtime library's entry too (a process loads it once, so this takes fresh
    processes): every file damaged, and everything is rebuilt, correct and valid again."""
    folder = tmp_path / "cache"
    first, _ = run_worker(tmp_path, folder, "count", "first")
    files = entries(folder)
    # the signature, four entry points, the runtime library and the thread pool
    assert len(files) == 7
    for k, path in enumerate(files):
        blob = path.read_bytes()
        path.write_bytes(_flip(blob, len(blob) // 2) if k % 2 else blob[:-7])
    again, counts = run_worker(tmp_path, folder, "count", "again")
    assert counts == {"built": 1, "generated": 4, "library": 1, "pool": 1}
    assert_identical(again, first)
    monkeypatch.setenv("BPCOMPILE_CACHE_DIR", str(folder))
    for path in entries(folder):
        assert cache.load(path.name) is not None, f"{path.name} was not rewritten whole"
    third, _ = run_worker(tmp_path, folder, "no-front-end", "third")
    assert_identical(third, first)


GRAMMAR_WORKER = r'''
import logging
import sys
from pathlib import Path

import bpcompile.language.parser as parser

logging.getLogger("lark").setLevel(logging.CRITICAL + 1)  # it logs each load it refuses
path = Path(sys.argv[1]) / "grammar.lark-cache"
parser._lark()
blob = path.read_bytes()
loaded = []
for k in range(64, len(blob), len(blob) // 40):
    damaged = bytearray(blob)
    damaged[k] ^= 0x20
    path.write_bytes(bytes(damaged))
    parser._lark.cache_clear()
    parser._lark()
    if path.read_bytes() == bytes(damaged):  # a file that fails to load is written anew
        loaded.append(k)
print(loaded)
'''


def test_a_damaged_grammar_cache_is_never_loaded(tmp_path: Path) -> None:
    folder = tmp_path / "cache"
    script = tmp_path / "grammar_worker.py"
    script.write_text(GRAMMAR_WORKER)
    run = subprocess.run([sys.executable, str(script), str(folder)], capture_output=True,
                         text=True, timeout=120,
                         env={**os.environ, "BPCOMPILE_CACHE_DIR": str(folder)})
    assert run.returncode == 0, run.stderr
    loaded = ast.literal_eval(run.stdout.strip().splitlines()[-1])
    assert loaded == [], f"damaged at bytes {loaded} and loaded all the same"


# -------------------------------------------------------- keys keep apart


def test_other_source_or_dtype_does_not_hit_an_entry(cache_dir: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Programs with the very same arrays (one layout, one signature shape) but another
    learning rate, another loss, or another dtype each get their own entries: each gives
    its own NumPy backend's results."""
    run_all(bpc.compile(SOURCE, backend="llvm", filename="cached.bp"))
    count = len(entries(cache_dir))
    variants = [
        (SOURCE.replace("lr=0.01", "lr=0.05"), "float64"),
        (SOURCE.replace("+ logsumexp(y)", "+ logsumexp(2 * y)"), "float64"),
        (SOURCE, "float32"),
    ]
    for source, dtype in variants:
        spy = Spy(monkeypatch)
        got = run_all(bpc.compile(source, backend="llvm", dtype=dtype, filename="cached.bp"))
        assert_matches_numpy(got, source, dtype)
        assert spy.compiled == 4 and not spy.loaded
        assert len(entries(cache_dir)) > count
        count = len(entries(cache_dir))


def test_cache_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """BPCOMPILE_CACHE_DIR=off: nothing is written (not to the default places either) and a
    second compile compiles again."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / "xdg"))
    monkeypatch.setenv("BPCOMPILE_CACHE_DIR", "off")
    monkeypatch.chdir(tmp_path)
    assert cache.directory() is None
    for _ in range(2):
        spy = Spy(monkeypatch)
        got = run_all(bpc.compile(SOURCE, backend="llvm"))
        assert spy.built == 1 and spy.compiled == 4 and not spy.loaded
        assert_matches_numpy(got)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["home"]


UNWRITABLE = {
    "below a file": lambda tmp: (tmp / "file").write_text("x") and tmp / "file" / "cache",
    "is a file": lambda tmp: (tmp / "file").write_text("x") and tmp / "file",
}


@pytest.mark.parametrize("case", [*UNWRITABLE, "read-only folder"])
def test_unwritable_cache_still_compiles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         case: str) -> None:
    if case == "read-only folder":
        if os.geteuid() == 0:
            pytest.skip("root writes into read-only folders")
        folder = tmp_path / "cache"
        folder.mkdir()
        folder.chmod(0o500)
    else:
        folder = UNWRITABLE[case](tmp_path)
    monkeypatch.setenv("BPCOMPILE_CACHE_DIR", str(folder))
    try:
        for _ in range(2):
            assert_matches_numpy(run_all(bpc.compile(SOURCE, backend="llvm")))
        net = bpc.compile(SOURCE, backend="llvm", dtype="float32")
        assert_matches_numpy(run_all(net), dtype="float32")
    finally:
        if case == "read-only folder":
            folder.chmod(0o700)
