"""The native thread pool (backends/llvm/threads.py) and the kernels that split their work
over it (split.py). Oracles: the parts a task sees (each exactly once, on distinct threads),
and a network's results with one thread, which every split must reproduce bit for bit."""

from __future__ import annotations

import ctypes
import multiprocessing
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest

import bpcompile as bpc
from bpcompile.backends.llvm import threads

TASK = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64)
PARALLEL = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p)


@pytest.fixture
def pool() -> Iterator[PARALLEL]:
    """bpc_parallel, callable from Python; the pool's threads as they were, afterwards."""
    parallel = PARALLEL(threads.load())
    before = threads.threads_wanted()
    yield parallel
    threads.restart(before)


def _parts_seen(parallel: PARALLEL) -> list[tuple[int, int, int]]:
    """(part, parts, thread) for each part one call of bpc_parallel ran."""
    seen: list[tuple[int, int, int]] = []

    @TASK
    def task(context: int, part: int, parts: int) -> None:
        seen.append((part, parts, threading.get_ident()))

    parallel(ctypes.cast(task, ctypes.c_void_p), None)
    return sorted(seen)


@pytest.mark.parametrize("count", [1, 2, 3])
def test_every_part_runs_once_on_its_own_thread(pool: PARALLEL, count: int) -> None:
    threads.restart(count)
    for attempt in range(3):
        if attempt == 2:
            time.sleep(0.05)  # the workers have stopped spinning and sleep
        seen = _parts_seen(pool)
        assert [(part, parts) for part, parts, _ in seen] == [(k, count) for k in range(count)]
        assert len({thread for _, _, thread in seen}) == count
        assert seen[0][2] == threading.get_ident()  # part 0 on the calling thread


def test_a_call_from_inside_a_task_runs_alone(pool: PARALLEL) -> None:
    """The pool is taken: a nested call (or another thread's step) gets one part."""
    threads.restart(2)
    inner: list[list[tuple[int, int, int]]] = []

    @TASK
    def task(context: int, part: int, parts: int) -> None:
        if part == 0:
            inner.append(_parts_seen(pool))

    pool(ctypes.cast(task, ctypes.c_void_p), None)
    assert [[(part, parts) for part, parts, _ in seen] for seen in inner] == [[(0, 1)]]
    assert len(_parts_seen(pool)) == 2  # and the pool is free again after


def _parts_in_child(connection) -> None:
    parallel = PARALLEL(threads.load())
    connection.send([(part, parts) for part, parts, _ in _parts_seen(parallel)])


def test_a_forked_child_has_workers_of_its_own(pool: PARALLEL) -> None:
    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("no fork on this platform")
    threads.restart(2)
    receive, send = multiprocessing.get_context("fork").Pipe(duplex=False)
    child = multiprocessing.get_context("fork").Process(target=_parts_in_child, args=(send,))
    child.start()
    assert receive.poll(60), "the child's pool never finished a task"
    assert receive.recv() == [(0, 2), (1, 2)]
    child.join(60)
    assert child.exitcode == 0


@pytest.mark.parametrize("text", ["0", "-2", "two"])
def test_a_bad_thread_count_is_named(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    monkeypatch.setenv(threads.ENV_THREADS, text)
    with pytest.raises(ValueError, match=f"{threads.ENV_THREADS}={text!r}"):
        threads.threads_wanted()


CONVOLUTIONS = """
input  x[N, 1, 12, 12]
target t[N]
c1 = conv(x, 4, 3, padding=1, act=relu)          # direct: few taps
p1 = max_pool2d(c1, 2)                            # windows tile: spread
c2 = conv(p1, 6, 3, act=tanh)                     # im2col and a product
p2 = max_pool2d(c2, 2, stride=1)                  # windows overlap: scatter
p3 = avg_pool2d(c2, 2, stride=2, padding=1)
h = dense(concat(flatten(p2), flatten(p3), axis=1), 16, act=relu)
logits = dense(h, 10)
loss cross_entropy(logits, t)
optimize sgd(lr=0.05)
"""

WIDE_MLP = """
input  x[N, 96]
target t[N]
h = dense(x, 256, act=relu)
logits = dense(h, 8)
loss cross_entropy(logits, t)
optimize adam(lr=0.001)
"""


def _stepped(source: str, dtype: str, count: int, seed: int, **data: np.ndarray) -> dict:
    """The losses, params and state after three steps on `count` threads."""
    threads.restart(count)
    net = bpc.compile(source, backend="llvm", dtype=dtype)
    params = net.init(seed=seed)
    state = net.init_state(params)
    losses = [net.step(params, state, **data) for _ in range(3)]
    return {"losses": np.array(losses), **params, **state}


def _trained(source: str, dtype: str, count: int, batch: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    x_shape = (batch, 1, 12, 12) if "conv" in source else (batch, 96)
    x = rng.standard_normal(x_shape).astype(dtype)
    return _stepped(source, dtype, count, seed, x=x, t=rng.integers(0, 8, batch))


def _assert_one_and_two_threads_agree_bit_for_bit(source: str, dtype: str, seed: int,
                                                   **data: np.ndarray) -> None:
    alone, shared = (_stepped(source, dtype, count, seed, **data) for count in (1, 2))
    assert alone.keys() == shared.keys()
    for name in alone:
        assert alone[name].tobytes() == shared[name].tobytes(), name


WITHOUT_PRODUCTS = """
input  x[N, 2, 16, 16]
target y[N, 3, 8, 8]
c = conv(x, 3, 3, padding=1, act=tanh)            # direct, and its weight gradient
p = max_pool2d(c, 2)
q = avg_pool2d(c, 3, stride=2, padding=1)
loss mean((p + q - y) ** 2)
optimize sgd(lr=0.1)
"""


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_kernels_on_two_threads_equal_one_bit_for_bit(pool: PARALLEL, dtype: str) -> None:
    """Our own kernels divide into parts whose results are the whole's exactly: images
    of the convolution and poolings, channels of the weight gradient, rows of the
    elementwise loops and reductions (a batch of 256 divides every one of them)."""
    rng = np.random.default_rng(5)
    _assert_one_and_two_threads_agree_bit_for_bit(
        WITHOUT_PRODUCTS, dtype, 1, x=rng.standard_normal((256, 2, 16, 16)).astype(dtype),
        y=rng.standard_normal((256, 3, 8, 8)).astype(dtype))


@pytest.mark.parametrize("source", [CONVOLUTIONS, WIDE_MLP], ids=["convolutions", "mlp"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_steps_on_two_threads_equal_one(pool: PARALLEL, source: str, dtype: str) -> None:
    """Batches large enough that every split kernel divides and the products go to BLAS,
    by rows or columns: the params after three steps are the one-thread params, to
    rounding (BLAS may round a part of a product apart from the whole in the last bit)."""
    alone = _trained(source, dtype, 1, 512, seed=3)
    shared = _trained(source, dtype, 2, 512, seed=3)
    assert alone.keys() == shared.keys()
    tolerance = 1e-5 if dtype == "float32" else 1e-12
    for name in alone:
        np.testing.assert_allclose(shared[name], alone[name], rtol=tolerance,
                                   atol=tolerance * np.abs(alone[name]).max(), err_msg=name)


LARGE_IMAGES = """
param  x[3, 8, 24, 24]
input  w[64, 8, 5, 5]
input  v[16, 4, 3, 3]
y = conv2d(x, w)                 # 200 taps x 400 positions x 64 outputs per image: BLAS
z = conv2d(x, v, groups=2, padding=1, stride=2)   # 36 taps x 144 x 8 per group
loss sum(tanh(y) ** 2) + sum(z * z)
"""


@pytest.mark.parametrize("count", [1, 2])
def test_input_gradients_both_ways_equal_the_numpy_backend(pool: PARALLEL, count: int) -> None:
    """A convolution whose product per image is large enough for BLAS (its input gradient
    over the whole batch) and a grouped one image by image, on one and two threads,
    against the numpy backend in float64."""
    threads.restart(count)
    rng = np.random.default_rng(2)
    params = {"x": rng.standard_normal((3, 8, 24, 24))}
    data = {"w": rng.standard_normal((64, 8, 5, 5)) * 0.1,
            "v": rng.standard_normal((16, 4, 3, 3))}
    got = {backend: bpc.compile(LARGE_IMAGES, backend=backend, dtype="float64")
           .value_and_grad(params, **data) for backend in ("numpy", "llvm")}
    assert got["llvm"][0] == pytest.approx(got["numpy"][0], rel=1e-12)
    want = got["numpy"][1]["x"]
    np.testing.assert_allclose(got["llvm"][1]["x"], want, rtol=1e-11,
                               atol=1e-11 * np.abs(want).max())


SMALL_PRODUCTS = """
input  x[N, 32]
target t[N]
h = dense(x, 64, act=tanh)       # products below BLAS's size: the loop nest, rows divided
logits = dense(h, 10)
loss cross_entropy(logits, t)
optimize sgd(lr=0.1, momentum=0.9)
"""


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_loop_nest_products_on_two_threads_equal_one_bit_for_bit(pool: PARALLEL,
                                                                 dtype: str) -> None:
    """The register-blocked matmul divides C's rows (A read as a transposed view too, in
    the weight gradients): each row is computed as the whole product computes it."""
    rng = np.random.default_rng(6)
    _assert_one_and_two_threads_agree_bit_for_bit(
        SMALL_PRODUCTS, dtype, 2, x=rng.standard_normal((256, 32)).astype(dtype),
        t=rng.integers(0, 10, 256))
