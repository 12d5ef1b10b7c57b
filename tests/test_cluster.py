"""Data-parallel training on a Dask cluster (the `dask` extra): a LocalCluster of two worker
processes on loopback.

Oracles: single-process training (`bpcompile.train`) on the same global batches, to 1e-10
in float64; the same run without a fault, for a run whose worker is killed; value_and_grad
on the whole batch, for the tree reduction of shares; the loss on rows, for the mean/sum
probe; np.load, for lazily read files.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import bpcompile as bpc

distributed = pytest.importorskip("distributed")
da = pytest.importorskip("dask.array")

from bpcompile.training import cluster  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"

NET = """
input  x[N, 6]
target t[N, 3]
param W1[6, 8] = xavier
param b1[8]    = zeros
param W2[8, 3] = xavier
h = tanh(x @ W1 + b1)
loss cross_entropy(h @ W2, t)
"""


def data(rows: int = 150, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, 6))
    return {"x": x, "t": np.eye(3)[rng.integers(0, 3, rows)]}


def chunked(arrays: dict[str, np.ndarray], chunks: tuple[int, ...]) -> dict[str, object]:
    """Dask arrays with unequal row chunks."""
    return {name: da.from_array(a, chunks=(chunks,) + a.shape[1:]) for name, a in arrays.items()}


@pytest.fixture(scope="module")
def client():
    with distributed.Client(n_workers=2, threads_per_worker=1, processes=True,
                            dashboard_address=None) as client:
        yield client


def assert_same_run(a: bpc.TrainResult, b: bpc.TrainResult, rtol: float = 1e-10) -> None:
    for name in a.params:
        np.testing.assert_allclose(a.params[name], b.params[name], rtol=rtol, atol=1e-13,
                                   err_msg=name)
    for name in a.state:
        np.testing.assert_allclose(a.state[name], b.state[name], rtol=rtol, atol=1e-13,
                                   err_msg=name)
    np.testing.assert_allclose(a.step_losses, b.step_losses, rtol=rtol)


@pytest.mark.parametrize("optimizer", ["sgd(lr=0.1, momentum=0.9)",
                                       "adam(lr=0.01, clip_norm=0.5)"])
def test_same_params_as_one_process(client, optimizer: str) -> None:
    net = bpc.compile(NET + f"optimize {optimizer}\n")
    arrays = data()
    alone = bpc.train(net, arrays, epochs=3, batch_size=32, seed=4)
    spread = cluster.train_on_cluster(client, net, chunked(arrays, (40, 77, 33)), epochs=3,
                                      batch_size=32, seed=4)
    assert_same_run(spread, alone)


def test_a_sum_loss_on_the_llvm_backend(client) -> None:
    """A loss that sums over rows (xor's) is combined unweighted; the workers compile the
    llvm backend themselves."""
    net = bpc.compile_file(EXAMPLES / "xor.bp", backend="llvm")
    rng = np.random.default_rng(1)
    arrays = {"x": rng.uniform(0, 1, (60, 2)), "t": rng.integers(0, 2, (60, 1)) * 1.0}
    alone = bpc.train(net, arrays, epochs=4, batch_size=16, seed=2)
    spread = cluster.train_on_cluster(client, net, chunked(arrays, (25, 35)), epochs=4,
                                      batch_size=16, seed=2)
    assert_same_run(spread, alone)


def test_dropout_draws_the_masks_of_one_process(client) -> None:
    """Each share draws its rows' part of the whole batch's masks, keyed by where the rows
    sit in the (shuffled) batch, so the params equal one process's."""
    net = bpc.compile(NET.replace("h @ W2", "dropout(h, 0.4) @ W2")
                      + "optimize sgd(lr=0.1, momentum=0.9)\n")
    arrays = data()
    alone = bpc.train(net, arrays, epochs=2, batch_size=32, seed=6)
    spread = cluster.train_on_cluster(client, net, chunked(arrays, (40, 77, 33)), epochs=2,
                                      batch_size=32, seed=6)
    assert_same_run(spread, alone)
    assert alone.state["rng"][1] == 2 * 5  # 150 rows in batches of 32: 5 steps an epoch


@pytest.mark.parametrize("backend", ["numpy", "llvm"])
def test_batchnorm_normalizes_with_the_whole_batch(client, backend: str) -> None:
    """Batch norm's statistics are the global batch's (its rows gathered from three chunks,
    in the shuffled batch's order), dropout's masks are one process's, and the running
    statistics follow: the params, buffers and state equal one process's."""
    net = bpc.compile("input x[N, 6]\ntarget t[N, 3]\n"
                      "param W1[6, 8] = xavier\nparam W2[8, 3] = xavier\n"
                      "h = batchnorm(x @ W1)\n"
                      "loss cross_entropy(dropout(tanh(h), 0.3) @ W2, t)\n"
                      "optimize sgd(lr=0.1, momentum=0.9)\n", backend=backend)
    arrays = data()
    alone = bpc.train(net, arrays, epochs=2, batch_size=32, seed=5)
    spread = cluster.train_on_cluster(client, net, chunked(arrays, (40, 77, 33)), epochs=2,
                                      batch_size=32, seed=5)
    assert_same_run(spread, alone)
    assert set(net.buffers) <= set(spread.params)
    assert not np.allclose(spread.params["h.running_mean"], 0)  # the statistics moved


def test_shares_add_up_to_the_whole_batch(client) -> None:
    """The tree reduction of per-chunk shares against value_and_grad on all the rows."""
    net = bpc.compile(NET)
    arrays = data(rows=50)
    p = net.init(seed=3)
    stored = cluster.ClusterData(client, chunked(arrays, (7, 20, 3, 20)), frozenset(arrays), 2)
    rows = np.random.default_rng(0).choice(50, 31, replace=False)
    params = client.scatter([p], broadcast=True)[0]
    loss, grads = cluster.global_gradient(client, cluster.NetSpec.of(net), "mean", params,
                                          stored, rows)
    whole_loss, whole = net.value_and_grad(p, **{n: a[np.sort(rows)] for n, a in arrays.items()})
    assert loss == pytest.approx(whole_loss, rel=1e-12)
    for name in whole:
        np.testing.assert_allclose(grads[name], whole[name], rtol=1e-11, atol=1e-14)


@pytest.mark.parametrize("loss, expected", [
    ("mse(y, t)", "mean"),
    ("sum((y - t) ** 2)", "sum"),
    ("cross_entropy(y, t)", "mean"),
])
def test_row_reduction(loss: str, expected: str) -> None:
    net = bpc.compile(f"input x[N, 6]\ntarget t[N, 3]\nparam W[6, 3]\ny = x @ W\nloss {loss}\n")
    rows = data(rows=12)
    assert cluster.row_reduction(net, net.init(seed=0), rows, {}) == expected


def test_a_loss_that_is_neither_is_refused() -> None:
    net = bpc.compile("input x[N, 6]\ntarget t[N, 3]\nparam W[6, 3]\n"
                      "loss mean(x @ W - t) ** 2\n")
    with pytest.raises(bpc.BPTypeError, match="a mean or a sum over the rows"):
        cluster.row_reduction(net, net.init(seed=0), data(rows=12), {})


def test_a_killed_worker_changes_nothing() -> None:
    """A worker process killed in the middle of an epoch: its share is recomputed by the
    others, and the run ends with the params of the run without the fault."""
    net = bpc.compile(NET + "optimize adam(lr=0.01, clip_norm=1)\n")
    arrays = data(rows=120)
    alone = bpc.train(net, arrays, epochs=2, batch_size=16, seed=9)
    with distributed.Client(n_workers=2, threads_per_worker=1, processes=True,
                            dashboard_address=None) as client:
        victims = client.run(os.getpid)
        killed = []

        def kill_one(epoch: int, step: int) -> None:
            if (epoch, step) == (0, 3):
                pid = next(iter(victims.values()))
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)

        spread = cluster.train_on_cluster(client, net, chunked(arrays, (60, 60)), epochs=2,
                                          batch_size=16, seed=9, after_step=kill_one)
        survivors = client.run(os.getpid)
    assert killed and killed[0] not in survivors.values()
    assert_same_run(spread, alone)


def test_lazy_npy_reads_the_file(tmp_path: Path) -> None:
    array = np.random.default_rng(0).standard_normal((23, 4))
    np.save(tmp_path / "x.npy", array)
    lazy = cluster.lazy_npy(tmp_path / "x.npy", rows_per_chunk=10)
    assert lazy.chunks[0] == (10, 10, 3)
    np.testing.assert_array_equal(lazy.compute(scheduler="synchronous"), array)


def test_the_command_on_a_local_cluster(tmp_path: Path) -> None:
    """`bpcompile train --dask local:2` on a folder of .npy files the workers read, against
    the same command without Dask."""
    folder = tmp_path / "data"
    folder.mkdir()
    for name, array in data(rows=90).items():
        np.save(folder / f"{name}.npy", array)
    (tmp_path / "net.bp").write_text(NET + "optimize sgd(lr=0.1, momentum=0.5)\n")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    runs = {}
    for label, extra in (("alone", []), ("dask", ["--dask", "local:2"])):
        out = tmp_path / f"{label}.npz"
        done = subprocess.run(
            [sys.executable, "-m", "bpcompile.cli", "train", str(tmp_path / "net.bp"),
             "--data", str(folder), "--epochs", "2", "--batch-size", "20", "--quiet",
             "--out", str(out), *extra], env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stderr
        assert ("Dask cluster at" in done.stdout) == (label == "dask")
        runs[label] = np.load(out)
    for name in ("W1", "b1", "W2"):
        np.testing.assert_allclose(runs["dask"][name], runs["alone"][name], rtol=1e-10,
                                   atol=1e-13)


def test_missing_dask_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cluster, "da", None)
    with pytest.raises(bpc.BPError, match=r'pip install "bpcompile\[dask\]"'):
        cluster.require()


def test_small_chunks_still_find_the_loss_kind(client) -> None:
    """Found by review: the mean/sum probe read the first chunk only, and refused 8 rows in
    chunks of 2. Oracle: one process on the same data."""
    net = bpc.compile_file(EXAMPLES / "xor.bp")
    rng = np.random.default_rng(3)
    arrays = {"x": rng.uniform(0, 1, (8, 2)), "t": rng.integers(0, 2, (8, 1)) * 1.0}
    alone = bpc.train(net, arrays, epochs=3, batch_size=4, seed=1)
    spread = cluster.train_on_cluster(client, net, chunked(arrays, (2, 2, 2, 2)), epochs=3,
                                      batch_size=4, seed=1)
    assert_same_run(spread, alone)
