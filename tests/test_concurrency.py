"""Networks used from several threads at once, and compiled by several processes at once
into one cache folder.

Oracles: the same calls made one after another (bit for bit: each call's arithmetic does not
depend on what else runs); the NumPy backend; `cache.load`, which checks every entry's
SHA-256, for the folder the processes leave behind; a third process that loads everything
from that folder with the front end replaced by a function that raises.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import concurrency_workload
import numpy as np
import pytest

import bpcompile as bpc
from bpcompile.runtime import cache

SOURCE = """
network shared
input  x[N, 4]
target t[N, 3]
param W1[4, 8] = normal(0.5)
param b1[8]    = uniform(-0.2, 0.2)
param W2[8, 3] = normal(0.5)
param s[]      = 1.5
h = tanh(x @ W1 + b1)
y = softmax(s * h @ W2)
output y
loss mse(y, t) + mean(logsumexp(h, axis=0))
optimize adam(lr=0.01)
"""
THREADS = 4
ROUNDS = 12
BATCHES = (1, 2, 3, 5, 7, 8, 11, 13, 16, 17, 32, 64)  # more sizes than workspaces kept


def data(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"x": rng.standard_normal((n, 4)), "t": rng.uniform(0, 1, (n, 3))}


def workload(net: bpc.CompiledNet, worker: int) -> list[bytes]:
    """What one thread does: forward, value_and_grad and step on its own params, batch
    sizes changing every round; everything it sees, as bytes."""
    p = net.init(seed=worker)
    s = net.init_state(p)
    seen: list[bytes] = []
    for k in range(ROUNDS):
        n = BATCHES[(k * 5 + worker * 3) % len(BATCHES)]
        d = data(n, seed=100 * worker + k)
        seen += [v.tobytes() for v in net.forward(p, x=d["x"]).values()]
        loss, grads = net.value_and_grad(p, **d)
        seen += [np.float64(loss).tobytes(), *(g.tobytes() for g in grads.values())]
        seen.append(np.float64(net.step(p, s, **d)).tobytes())
        seen += [a.tobytes() for a in (*p.values(), *s.values())]
    return seen


def in_threads(net: bpc.CompiledNet, job: Callable[[bpc.CompiledNet, int], list[bytes]]
               ) -> list[list[bytes]]:
    """`job(net, k)` for k = 0..THREADS-1, all started at once."""
    results: list[list[bytes] | None] = [None] * THREADS
    errors: list[BaseException] = []
    start = threading.Barrier(THREADS)

    def run(k: int) -> None:
        try:
            start.wait()
            results[k] = job(net, k)
        except BaseException as error:  # reported below, in the test's thread
            errors.append(error)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(THREADS)]
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # switch threads as often as possible
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    finally:
        sys.setswitchinterval(old)
    assert not errors, errors
    assert all(r is not None for r in results)
    return results  # type: ignore[return-value]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_threads_share_one_network(backend: str, dtype: str) -> None:
    """Four threads at once on one network, fresh (they race to compile each entry point
    and install the fast path) and then warm, see what serial calls see."""
    serial_net = bpc.compile(SOURCE, backend=backend, dtype=dtype)
    serial = [workload(serial_net, k) for k in range(THREADS)]
    fresh = bpc.compile(SOURCE, backend=backend, dtype=dtype)
    assert in_threads(fresh, workload) == serial
    assert in_threads(fresh, workload) == serial
    if backend == "llvm":
        assert type(fresh.step).__name__ == "builtin_function_or_method"


def test_threads_agree_with_numpy() -> None:
    """The serial oracle itself against the other backend."""
    got = workload(bpc.compile(SOURCE, backend="llvm"), 1)
    want = workload(bpc.compile(SOURCE), 1)
    assert len(got) == len(want)
    for a, b in zip(got, want):
        x, y = np.frombuffer(a), np.frombuffer(b)
        assert np.max(np.abs(x - y)) <= 1e-12 * max(np.max(np.abs(y)), 1e-300)


# ------------------------------------------------------------ processes


WORKER = r'''
import sys
import time
from pathlib import Path

import numpy as np

mode, out, go = sys.argv[1], sys.argv[2], Path(sys.argv[3])
if mode == "no-front-end":
    import bpcompile.api, bpcompile.driver
    import bpcompile.backends.llvm.codegen as codegen
    import bpcompile.backends.llvm.jit as jit
    import bpcompile.backends.llvm.prebuilt as library
    import bpcompile.backends.llvm.executor as runtime

    def refuse(*args, **kwargs):
        raise AssertionError("compiled again instead of loading the cache")

    bpcompile.driver.build = bpcompile.api.build = runtime.build = refuse
    codegen.generate = runtime.generate = library.library_ir = jit.optimize = refuse
import bpcompile as bpc

SOURCE = Path(sys.argv[4]).read_text()
while not go.exists():  # start compiling together with the other process
    time.sleep(0.001)
import concurrency_workload

results = concurrency_workload.results(
    lambda dtype: bpc.compile(SOURCE, backend="llvm", dtype=dtype))
np.savez(out, **results)
'''


def numpy_results() -> dict[str, np.ndarray]:
    """What WORKER computes, on the NumPy backend."""
    return concurrency_workload.results(lambda dtype: bpc.compile(SOURCE, dtype=dtype))


def start_workers(tmp_path: Path, folder: Path, modes: list[str]) -> list[dict]:
    """Run WORKER once per mode, all released at the same moment; their results."""
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    source = tmp_path / "shared.bp"
    source.write_text(SOURCE)
    go = tmp_path / f"go-{time.monotonic_ns()}"
    tests = str(Path(__file__).resolve().parent)  # the worker imports concurrency_workload
    env = {**os.environ, "BPCOMPILE_CACHE_DIR": str(folder),
           "PYTHONPATH": os.pathsep.join([tests, os.environ.get("PYTHONPATH", "")])}
    outs = [tmp_path / f"out-{k}-{go.name}.npz" for k in range(len(modes))]
    processes = [subprocess.Popen([sys.executable, str(script), mode, str(out), str(go),
                                   str(source)], env=env, stderr=subprocess.PIPE, text=True)
                 for mode, out in zip(modes, outs)]
    time.sleep(0.5)  # let both import bpcompile and wait at the line
    go.write_text("go")
    for process in processes:
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr
    results = []
    for out in outs:
        with np.load(out) as saved:
            results.append({k: saved[k] for k in saved.files})
    return results


def test_two_processes_compile_into_one_empty_cache(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "cache"
    one, two = start_workers(tmp_path, folder, ["plain", "plain"])
    want = numpy_results()
    for got in (one, two):
        assert set(got) == set(want)
        for name in want:
            rtol = 1e-12 if name.startswith("float64") else 1e-5
            scale = np.max(np.abs(want[name]))
            assert np.max(np.abs(got[name] - want[name])) <= rtol * scale, name
        for name in want:
            assert got[name].tobytes() == one[name].tobytes(), name
    # the folder: whole entries only, no temporary files left behind
    monkeypatch.setenv("BPCOMPILE_CACHE_DIR", str(folder))
    names = sorted(p.name for p in folder.iterdir())
    assert not [n for n in names if n.startswith(".")], names
    ours = [n for n in names if n != "grammar.lark-cache"]
    # per dtype: the runtime library and four entry points; one signature; the thread
    # pool
    assert len(ours) == 2 * 5 + 1 + 1, names
    assert all(cache.load(n) is not None for n in ours)
    # and a third process uses them all, compiling nothing
    (third,) = start_workers(tmp_path, folder, ["no-front-end"])
    for name in want:
        assert third[name].tobytes() == one[name].tobytes(), name


def test_the_native_step_lets_other_threads_run() -> None:
    """The fast step releases the GIL while its kernel runs: a thread that sleeps a
    millisecond at a time keeps waking during a few long steps in another thread. With the
    GIL held, each sleep would last until a whole step (tens of milliseconds) is done, so
    it could wake about once a step."""
    net = bpc.compile("network big\ninput x[N, 512]\ntarget t[N, 512]\n"
                      "h = dense(x, 512, act=relu)\ny = dense(h, 512)\noutput y\n"
                      "loss mse(y, t)\noptimize sgd(lr=0.001)\n", backend="llvm")
    p = net.init(seed=0)
    s = net.init_state(p)
    d = {"x": np.ones((2048, 512)), "t": np.zeros((2048, 512))}
    net.step(p, s, **d)  # compiles, then installs the fast path
    assert type(net.step).__name__ == "builtin_function_or_method"
    started = time.perf_counter()
    net.step(p, s, **d)
    one_step = time.perf_counter() - started
    steps, wakes, done = 6, 0, threading.Event()

    def stepper() -> None:
        for _ in range(steps):
            net.step(p, s, **d)
        done.set()

    thread = threading.Thread(target=stepper)
    thread.start()
    while not done.is_set():
        time.sleep(0.001)
        wakes += 1
    thread.join()
    # held, it wakes about once a step; released, every millisecond or few (once in 20 ms
    # leaves room for a busy machine)
    assert wakes > max(3 * steps, steps * one_step / 0.02), (wakes, one_step)
