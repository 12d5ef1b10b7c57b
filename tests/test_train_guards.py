"""Training a user can steer, and bad data and bad runs explained: `train` never silently
overwrites a run or drops optimizer state, stops early on the validation loss, names NaN in
the data before any step, and says when a run diverges; no raw NumPy warning reaches the
user.

Oracles: the files on disk (unchanged when refused), `bpcompile.train` without early
stopping for the epoch early stopping kept (the same params, bit for bit), the history's
own validation losses for which epoch was best, and warnings turned into errors.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

import bpcompile as bpc
import bpcompile.cli.main as cli

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
DATA = EXAMPLES / "data"


def train(*args: str | Path) -> int:
    return cli.main(["train", *map(str, args), "--quiet"])


def xor_run(out: Path, *extra: str | Path) -> int:
    return train(EXAMPLES / "xor.bp", "--data", DATA / "xor.npz", "--out", out, *extra)


def test_nan_in_the_data_is_named_before_training(tmp_path: Path, capsys) -> None:
    x = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, np.inf]])
    np.savez(tmp_path / "d.npz", x=x, t=np.array([[0.0], [1.0], [1.0], [0.0]]))
    out = tmp_path / "p.npz"
    assert train(EXAMPLES / "xor.bp", "--data", tmp_path / "d.npz", "--out", out) == 2
    error = capsys.readouterr().err
    assert "x[3, 1] is inf (row 3, column 1)" in error
    assert not out.exists()


def test_nan_in_a_csv_cell_is_named(tmp_path: Path, capsys) -> None:
    table = (DATA / "regression.csv").read_text().splitlines()
    cells = table[5].split(",")
    cells[0] = "nan"
    table[5] = ",".join(cells)
    (tmp_path / "d.csv").write_text("\n".join(table) + "\n")
    assert train(EXAMPLES / "regression.bp", "--data", tmp_path / "d.csv",
                 "--out", tmp_path / "p.npz") == 2
    assert "[4" in capsys.readouterr().err  # the fifth data row: row 4 of the array


def test_another_networks_run_is_not_overwritten(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run.npz"
    assert xor_run(out, "--epochs", "3") == 0
    before = out.read_bytes()
    status = train(EXAMPLES / "vanishing_relu.bp", "--data", DATA / "spirals.npz",
                   "--epochs", "1", "--out", out)
    assert status == 2
    assert "holds a run of network xor, not vanishing_relu" in capsys.readouterr().err
    assert out.read_bytes() == before
    assert train(EXAMPLES / "vanishing_relu.bp", "--data", DATA / "spirals.npz",
                 "--epochs", "1", "--out", out, "--overwrite") == 0
    assert "h1.W" in np.load(out).files


def test_a_run_further_along_is_not_overwritten(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run.npz"
    assert xor_run(out, "--epochs", "6") == 0
    assert xor_run(out, "--epochs", "6") == 0  # the same command again: allowed
    before = out.read_bytes()
    assert xor_run(out, "--epochs", "2") == 2
    assert "6 epochs along, further than this one's --epochs 2" in capsys.readouterr().err
    assert out.read_bytes() == before
    assert xor_run(out, "--epochs", "9", "--resume", out) == 0  # continuing it: allowed
    assert int(np.load(out)["meta:epoch"]) == 9


def test_resuming_with_another_optimizer_is_refused(tmp_path: Path, capsys) -> None:
    source = (EXAMPLES / "xor.bp").read_text()
    momentum = tmp_path / "xor.bp"
    momentum.write_text(source.replace("optimize sgd(lr=0.1)",
                                       "optimize sgd(lr=0.1, momentum=0.9)"))
    adam = tmp_path / "adam.bp"
    adam.write_text(source.replace("optimize sgd(lr=0.1)", "optimize adam(lr=0.01)"))
    out = tmp_path / "run.npz"
    assert train(momentum, "--data", DATA / "xor.npz", "--epochs", "2", "--out", out) == 0
    assert train(adam, "--data", DATA / "xor.npz", "--epochs", "4", "--resume", out,
                 "--out", tmp_path / "next.npz") == 2
    error = capsys.readouterr().err
    assert "trained with sgd(" in error and "momentum=0.9" in error and "adam(" in error
    # a smaller learning rate keeps the state's meaning: allowed, and said
    slower = tmp_path / "slower.bp"
    slower.write_text(momentum.read_text().replace("lr=0.1,", "lr=0.01,"))
    assert train(slower, "--data", DATA / "xor.npz", "--epochs", "4", "--resume", out,
                 "--out", tmp_path / "next.npz") == 0
    assert "note: the saved run used sgd(" in capsys.readouterr().out


def test_early_stopping_keeps_the_best_epoch(tmp_path: Path, capsys) -> None:
    """The kept params are those of the epoch with the lowest validation loss (bit for bit
    a run of that many epochs without early stopping), and the run stops `patience` epochs
    after it."""
    net = bpc.compile_file(EXAMPLES / "vanishing_relu.bp")
    result = bpc.train(net, DATA / "spirals.npz", epochs=40, validation=0.3, seed=2,
                       patience=3)
    losses = [record.val_loss for record in result.history]
    best = int(np.argmin(losses)) + 1
    assert result.best.epoch == best
    assert result.stopped_early == (len(losses) < 40)
    if result.stopped_early:
        assert len(losses) == best + 3
    plain = bpc.train(net, DATA / "spirals.npz", epochs=best, validation=0.3, seed=2)
    for name, array in plain.params.items():
        np.testing.assert_array_equal(result.best.checkpoint.params[name], array)
    out = tmp_path / "best.npz"
    assert train(EXAMPLES / "vanishing_relu.bp", "--data", DATA / "spirals.npz",
                 "--epochs", "40", "--validation", "0.3", "--seed", "2",
                 "--early-stopping", "3", "--out", out) == 0
    assert f"came in epoch {best}" in capsys.readouterr().out
    saved = np.load(out)
    assert int(saved["meta:epoch"]) == best
    for name, array in plain.params.items():
        np.testing.assert_array_equal(saved[name], array)


def test_early_stopping_needs_validation(tmp_path: Path, capsys) -> None:
    assert xor_run(tmp_path / "p.npz", "--early-stopping", "2") == 2
    assert "give --validation" in capsys.readouterr().err


def test_a_diverging_run_suggests_a_smaller_learning_rate(tmp_path: Path, capsys) -> None:
    source = (EXAMPLES / "vanishing_relu.bp").read_text()
    net_file = tmp_path / "fast.bp"
    net_file.write_text(source.split("optimize")[0] + "optimize sgd(lr=30)\n")
    assert train(net_file, "--data", DATA / "spirals.npz", "--epochs", "3",
                 "--out", tmp_path / "p.npz") == 2
    error = capsys.readouterr().err
    assert "a smaller learning rate (now lr=30" in error
    assert "RuntimeWarning" not in error


@pytest.mark.parametrize("backend", ["numpy", "llvm"])
def test_no_raw_numpy_warning_reaches_the_user(backend: str) -> None:
    """Overflow and 0/0 show as inf and nan in what forward returns, and as a refused step
    with its reason; never as a RuntimeWarning."""
    net = bpc.compile("input x[N, 2]\ntarget t[N, 2]\nparam w[2] = ones\n"
                      "y = exp(x * w) / (x * w)\nloss sum((y - t) ** 2)\n"
                      "optimize sgd(lr=0.1)\n", backend=backend)
    p = net.init()
    x = np.array([[1000.0, 0.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = net.forward(p, x=x)["y"]
        assert not np.isfinite(y).any()  # overflow, then a division by 0
        with pytest.raises(bpc.BPNumericError):
            net.step(p, net.init_state(p), x=x, t=np.zeros((1, 2)))


def test_adding_a_schedule_on_resuming_counts_the_updates_taken(tmp_path: Path) -> None:
    """A schedule needs the step count; a run saved without one resumes at the count of
    the updates it took (150 rows in batches of 32: 5 a epoch), momentum kept."""
    from bpcompile.training import checkpoint

    source = (EXAMPLES / "vanishing_relu.bp").read_text().split("optimize")[0]
    first = tmp_path / "first.bp"
    first.write_text(source + "optimize sgd(lr=0.05, momentum=0.9)\n")
    out = tmp_path / "run.npz"
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.standard_normal((150, 2)),
             t=rng.integers(0, 2, (150, 1)).astype(float))
    assert train(first, "--data", tmp_path / "d.npz", "--epochs", "3", "--out", out) == 0
    scheduled = bpc.compile(source + "optimize sgd(lr=0.05, momentum=0.9, "
                                     "schedule=cosine(100))\n")
    saved = checkpoint.load(out, scheduled)
    assert float(saved.state["step"]) == 3 * 5
    stored = np.load(out)
    np.testing.assert_array_equal(saved.state["h1.W.momentum"], stored["state:h1.W.momentum"])


def test_out_must_be_a_file(tmp_path: Path, capsys) -> None:
    assert xor_run(tmp_path, "--overwrite") == 2
    assert "is a folder" in capsys.readouterr().err
