"""`bpcompile train` (SPEC section 3), in this process through `cli.main` and, for Ctrl-C, as
a real subprocess.

Oracles: `bpcompile.train`, the API the command wraps (the same params, bit for bit); the
uninterrupted command, for one stopped and resumed; the PNG and CSV formats; the exit
statuses (0 done, 2 bad input or a refused step, 130 stopped by Ctrl-C).
"""

from __future__ import annotations

import csv
import os
import re
import select
import signal
import subprocess
import sys
import time
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


def test_train_saves_what_the_api_computes(tmp_path: Path, backend: str,
                                           capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "p.npz"
    status = train(EXAMPLES / "regression.bp", "--data", DATA / "regression.csv",
                   "--epochs", "3", "--batch-size", "50", "--backend", backend,
                   "--out", out, "--seed", "4")
    printed = capsys.readouterr().out
    assert status == 0
    net = bpc.compile_file(EXAMPLES / "regression.bp", backend=backend)
    result = bpc.train(net, DATA / "regression.csv", epochs=3, batch_size=50, seed=4)
    saved = np.load(out)
    for name in net.params:
        np.testing.assert_array_equal(saved[name], result.params[name])
    for record in result.history:
        assert f"epoch {record.epoch}/3  loss {record.loss:.6g}" in printed
    assert f"saved params to {out}" in printed


def test_resume_continues_the_same_run(tmp_path: Path) -> None:
    args = (EXAMPLES / "xor.bp", "--data", DATA / "xor.npz", "--batch-size", "2")
    assert train(*args, "--epochs", "5", "--out", tmp_path / "whole.npz") == 0
    assert train(*args, "--epochs", "2", "--out", tmp_path / "part.npz") == 0
    assert train(*args, "--epochs", "5", "--resume", tmp_path / "part.npz",
                 "--out", tmp_path / "rest.npz") == 0
    whole, rest = np.load(tmp_path / "whole.npz"), np.load(tmp_path / "rest.npz")
    assert sorted(whole.files) == sorted(rest.files)
    for name in whole.files:
        np.testing.assert_array_equal(whole[name], rest[name])


def test_validation_accuracy_and_history_csv(tmp_path: Path,
                                             capsys: pytest.CaptureFixture) -> None:
    history = tmp_path / "h.csv"
    status = train(EXAMPLES / "vanishing_relu.bp", "--data", DATA / "spirals.npz",
                   "--epochs", "3", "--validation", "0.2", "--history", history,
                   "--diagnose", "--out", tmp_path / "p.npz")
    assert status == 0
    net = bpc.compile_file(EXAMPLES / "vanishing_relu.bp")
    result = bpc.train(net, DATA / "spirals.npz", epochs=3, validation=0.2, diagnose=True)
    rows = list(csv.DictReader(history.open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    for row, record in zip(rows, result.history):
        assert float(row["loss"]) == record.loss
        assert float(row["val_accuracy"]) == record.val_accuracy
        assert float(row["grad_norm_h1.W"]) == record.health.params[0].grad_norm
    printed = capsys.readouterr().out
    assert f"val_acc {100 * result.history[-1].val_accuracy:.2f}%" in printed
    assert "|grad| by layer: h1" in printed


def test_diagnose_names_the_vanishing_layers(tmp_path: Path,
                                             capsys: pytest.CaptureFixture) -> None:
    assert train(EXAMPLES / "vanishing.bp", "--data", DATA / "spirals.npz", "--epochs", "1",
                 "--diagnose", "--out", tmp_path / "p.npz") == 0
    printed = capsys.readouterr().out
    assert "warning: layer h1 (vanishing.bp:9): gradients vanish" in printed
    assert "try relu with he init" in printed
    assert "warning: layer z " not in printed


def test_plot_writes_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    plot = tmp_path / "loss.png"
    assert train(EXAMPLES / "xor.bp", "--data", DATA / "xor.npz", "--epochs", "4",
                 "--plot", plot, "--out", tmp_path / "p.npz") == 0
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_plot_without_matplotlib_says_how_to_install(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    status = train(EXAMPLES / "xor.bp", "--data", DATA / "xor.npz", "--plot",
                   tmp_path / "l.png", "--out", tmp_path / "p.npz")
    assert status == 2
    assert 'pip install "bpcompile[plot]"' in capsys.readouterr().err
    assert not (tmp_path / "p.npz").exists()  # refused before training, not after


@pytest.mark.parametrize("data, message", [
    ("missing.npz", "No such file"),
    ("data.txt", "data must be an .npz archive, a .csv table or a folder of NAME.npy files"),
])
def test_bad_data_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture, data: str,
                          message: str) -> None:
    (tmp_path / "data.txt").write_text("1,2\n")
    assert train(EXAMPLES / "xor.bp", "--data", tmp_path / data) == 2
    assert message in capsys.readouterr().err


def test_a_diverging_run_exits_2_with_the_last_good_params(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture) -> None:
    net_file = tmp_path / "up.bp"
    net_file.write_text("input x[N, 1]\ntarget t[N, 1]\nparam w[1, 1] = ones\n"
                        "loss -sum(exp(x @ w) * t)\noptimize sgd(lr=1)\n")
    np.savez(tmp_path / "d.npz", x=np.full((8, 1), 10.0), t=np.ones((8, 1)))
    status = train(net_file, "--data", tmp_path / "d.npz", "--out", tmp_path / "p.npz")
    assert status == 2
    err = capsys.readouterr().err
    assert "training stopped in epoch 2, step 1" in err and "saved the last good params" in err
    assert np.all(np.isfinite(np.load(tmp_path / "p.npz")["w"]))


def test_ctrl_c_saves_and_exits_130(tmp_path: Path) -> None:
    """A real SIGINT to a real process: no traceback, a checkpoint that resumes."""
    out = tmp_path / "p.npz"
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    command = [sys.executable, "-m", "bpcompile.cli", "train", str(EXAMPLES / "vanishing.bp"),
               "--data", str(DATA / "spirals.npz"), "--epochs", "100000", "--batch-size",
               "1", "--quiet", "--out", str(out)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # until the first epoch is done
            ready, _, _ = select.select([process.stdout], [], [], 1.0)
            line = process.stdout.readline() if ready else ""
            if re.match(r"epoch +1/", line) or process.poll() is not None:
                break
        process.send_signal(signal.SIGINT)
        rest, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130, err
    assert "Traceback" not in err and "interrupted in epoch 2," in rest
    net = bpc.compile_file(EXAMPLES / "vanishing.bp")
    from bpcompile.training import checkpoint

    saved = checkpoint.load(out, net)
    assert saved.progress.epoch == 1 and 0 <= saved.progress.step < 1000


@pytest.mark.parametrize("option", ["--batch-size", "--epochs", "--every"])
def test_counts_below_one_exit_2(option: str, capsys: pytest.CaptureFixture) -> None:
    assert train(EXAMPLES / "xor.bp", "--data", DATA / "xor.npz", option, "0") == 2
    assert f"{option} must be at least 1, not 0" in capsys.readouterr().err


def test_history_of_a_resumed_run_keeps_the_earlier_epochs(tmp_path: Path) -> None:
    """Oracle: the history of the run nobody stopped."""
    args = (EXAMPLES / "xor.bp", "--data", DATA / "xor.npz")
    assert train(*args, "--epochs", "4", "--history", tmp_path / "whole.csv",
                 "--out", tmp_path / "whole.npz") == 0
    assert train(*args, "--epochs", "2", "--history", tmp_path / "h.csv",
                 "--out", tmp_path / "part.npz") == 0
    assert train(*args, "--epochs", "4", "--resume", tmp_path / "part.npz", "--history",
                 tmp_path / "h.csv", "--out", tmp_path / "rest.npz") == 0
    assert (tmp_path / "h.csv").read_text() == (tmp_path / "whole.csv").read_text()
