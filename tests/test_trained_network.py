"""Using a trained network: params files, `predict`, `evaluate`, `export --to numpy`.

Oracles: the network's own `forward` and `loss` on the whole data in one call (predict and
evaluate run in batches and stream to files), NumPy's own accuracy and confusion counts
from those outputs, `np.load` of what was written, and the exported module run in a
process where importing bpcompile fails.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import bpcompile as bpc
from bpcompile.cli.main import main

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"

CLASSIFIER = """
network clf
input  x[N, 4]
target t[N, 3]
h = dense(x, 5, act=tanh)
logits = dense(h, 3)
output logits
loss cross_entropy(logits, t)
optimize sgd(lr=0.5)
"""

MODAL = """
network modal
input  x[N, 4]
target t[N, 3]
h = dense(x, 6)
n = batchnorm(h)
logits = dense(dropout(tanh(n), 0.3), 3)
output logits
loss cross_entropy(logits, t)
optimize sgd(lr=0.1, momentum=0.9)
"""


def blobs(rows: int = 90, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, rows)
    x = rng.standard_normal((rows, 4)) + 2.0 * np.eye(3, 4)[labels]
    return {"x": x, "t": np.eye(3)[labels]}


@pytest.fixture
def trained(tmp_path: Path) -> tuple[Path, Path, dict[str, np.ndarray]]:
    """A .bp file, a training checkpoint of it (`train --out`) and its data file."""
    net_file = tmp_path / "clf.bp"
    net_file.write_text(CLASSIFIER)
    data = blobs()
    data_file = tmp_path / "blobs.npz"
    np.savez(data_file, **data)
    params = tmp_path / "clf.params.npz"
    assert main(["train", str(net_file), "--data", str(data_file), "--epochs", "5",
                 "--quiet", "--out", str(params)]) == 0
    return net_file, params, data


# ------------------------------------------------------------------ params files


def test_load_params_reads_a_checkpoint_and_ignores_its_state(trained) -> None:
    net_file, params, data = trained
    net = bpc.compile_file(net_file)
    stored = dict(np.load(params))
    assert any(name.startswith("meta:") for name in stored)  # a real checkpoint
    p = net.load_params(params)
    assert set(p) == set(net.params)
    for name, array in p.items():
        np.testing.assert_array_equal(array, stored[name])
        assert array.dtype == net.dtype and array.flags.c_contiguous
    net.forward(p, x=data["x"])  # what failed before: the file's extra names


def test_save_params_round_trips_params_and_buffers(tmp_path: Path) -> None:
    net = bpc.compile(MODAL)
    p = net.init(seed=3)
    s = net.init_state(p, seed=1)
    data = blobs(32)
    net.step(p, s, **data)  # moves the running statistics off their init
    path = tmp_path / "model.npz"
    net.save_params(p, path)
    assert sorted(np.load(path).files) == sorted([*net.params, *net.buffers])
    assert [f.name for f in tmp_path.iterdir()] == ["model.npz"]  # no temporary left
    back = net.load_params(path)
    for name in p:
        np.testing.assert_array_equal(back[name], p[name])
    float32 = net.with_dtype(np.float32).load_params(path)
    assert all(a.dtype == np.float32 for a in float32.values())


def test_save_params_checks_what_it_is_given(tmp_path: Path) -> None:
    net = bpc.compile(CLASSIFIER)
    p = net.init()
    del p["h.b"]
    with pytest.raises(bpc.BPError, match="h.b"):
        net.save_params(p, tmp_path / "bad.npz")
    assert not (tmp_path / "bad.npz").exists()


@pytest.mark.parametrize("change, message", [
    (lambda a: a.pop("h.W"), r"no array .h.W..*the file holds"),
    (lambda a: a.update({"h.W": np.zeros((3, 5))}), r"'h.W' has shape \(3, 5\).*\(4, 5\)"),
    (lambda a: a.update({"h.W": np.full((4, 5), "x")}), r"'h.W' holds <U1 values"),
    (lambda a: a.update({"h.W": np.full((4, 5), np.nan)}), r"'h.W'\[0, 0\] is nan"),
    (lambda a: a.update({"h.w": a.pop("h.W")}), r"no array .h.W. \(the file has .h.w.\)"),
])
def test_a_bad_params_file_is_named(tmp_path: Path, change, message: str) -> None:
    net = bpc.compile(CLASSIFIER)
    arrays = dict(net.init())
    change(arrays)
    path = tmp_path / "p.npz"
    np.savez(path, **arrays)
    with pytest.raises(bpc.BPError, match=message):
        net.load_params(path)


def test_a_file_that_is_not_params_is_named(tmp_path: Path) -> None:
    path = tmp_path / "p.npz"
    path.write_bytes(b"not a zip")
    with pytest.raises(bpc.BPError, match="not an .npz archive"):
        bpc.compile(CLASSIFIER).load_params(path)


# ------------------------------------------------------------------ predict


def test_predict_writes_the_outputs_of_forward(trained, tmp_path: Path, capsys) -> None:
    """CSV to standard output, an .npz and a folder of .npy files, each computed 7 rows at a
    time from a folder of memory-mapped inputs, equal forward on all rows at once."""
    net_file, params, data = trained
    net = bpc.compile_file(net_file)
    expected = net.forward(net.load_params(params), x=data["x"])["logits"]
    folder = tmp_path / "inputs"
    folder.mkdir()
    np.save(folder / "x.npy", data["x"])  # inputs only: predict needs no targets
    common = ["predict", str(net_file), "--params", str(params), "--data", str(folder),
              "--batch-size", "7"]
    capsys.readouterr()
    assert main(common) == 0
    table = list(csv.reader(capsys.readouterr().out.splitlines()))
    assert table[0] == ["logits_0", "logits_1", "logits_2"]
    np.testing.assert_array_equal(np.array(table[1:], dtype=float), expected)
    assert main([*common, "-o", str(tmp_path / "out.npz")]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "out.npz")["logits"], expected)
    assert main([*common, "-o", str(tmp_path / "out")]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "logits.npy"), expected)
    assert not [f for f in tmp_path.iterdir() if f.name.startswith(".")]  # no temporaries


def test_predict_refuses_data_without_the_inputs(trained, tmp_path: Path, capsys) -> None:
    net_file, params, _ = trained
    np.savez(tmp_path / "wrong.npz", z=np.zeros((3, 4)))
    assert main(["predict", str(net_file), "--params", str(params), "--data",
                 str(tmp_path / "wrong.npz")]) == 2
    assert "no array named 'x'" in capsys.readouterr().err


def test_predict_runs_in_inference_mode(tmp_path: Path, capsys) -> None:
    """Dropout off and the running statistics used: the outputs of forward(training=False)
    whatever the batch size, not of any training-mode call."""
    net = bpc.compile(MODAL)
    p = net.init(seed=1)
    s = net.init_state(p)
    data = blobs(40)
    for _ in range(3):
        net.step(p, s, **data)
    (tmp_path / "modal.bp").write_text(MODAL)
    net.save_params(p, tmp_path / "p.npz")
    np.savez(tmp_path / "d.npz", **data)
    assert main(["predict", str(tmp_path / "modal.bp"), "--params", str(tmp_path / "p.npz"),
                 "--data", str(tmp_path / "d.npz"), "--batch-size", "3",
                 "-o", str(tmp_path / "out.npz")]) == 0
    np.testing.assert_allclose(np.load(tmp_path / "out.npz")["logits"],
                               net.forward(p, x=data["x"])["logits"], rtol=1e-12)


# ------------------------------------------------------------------ evaluate


def test_evaluate_prints_the_loss_and_accuracy(trained, capsys) -> None:
    net_file, params, data = trained
    net = bpc.compile_file(net_file)
    p = net.load_params(params)
    logits = net.forward(p, x=data["x"])["logits"]
    predicted, true = np.argmax(logits, axis=1), np.argmax(data["t"], axis=1)
    capsys.readouterr()
    assert main(["evaluate", str(net_file), "--params", str(params), "--data",
                 str(net_file.parent / "blobs.npz"), "--batch-size", "16",
                 "--confusion"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    loss = float(next(line for line in lines if "mean loss" in line).split()[-1])
    assert loss == pytest.approx(net.loss(p, **data), rel=1e-5)  # printed to 6 digits
    right = int(np.sum(predicted == true))
    assert f"({right} of {len(true)})" in out
    matrix = np.array([[int(v) for v in line.split()[1:]] for line in lines[-3:]])
    expected = np.zeros((3, 3), dtype=int)
    np.add.at(expected, (true, predicted), 1)
    np.testing.assert_array_equal(matrix, expected)


# ------------------------------------------------------------------ export --to numpy


def run_without_bpcompile(folder: Path, code: str) -> str:
    """Python in `folder` where `import bpcompile` fails: the module must not need it."""
    blocker = "import sys; sys.modules['bpcompile'] = None\n"
    result = subprocess.run([sys.executable, "-c", blocker + code], cwd=folder,
                            capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(folder)})
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize("source", [CLASSIFIER, MODAL], ids=["plain", "modes"])
def test_export_numpy_holds_the_trained_params(tmp_path: Path, source: str) -> None:
    """The exported module predicts what forward does with the trained params, bit for
    bit, holds them exactly, and still trains: its step equals the network's."""
    net = bpc.compile(source)
    p = net.init(seed=2)
    s = net.init_state(p)
    data = blobs(30)
    net.step(p, s, **data)
    (tmp_path / "n.bp").write_text(source)
    net.save_params(p, tmp_path / "p.npz")
    np.savez(tmp_path / "d.npz", **data)
    assert main(["export", str(tmp_path / "n.bp"), "--params", str(tmp_path / "p.npz"),
                 "--to", "numpy", "-o", str(tmp_path / "ship")]) == 0
    module = net.name
    run_without_bpcompile(tmp_path / "ship", f"""
import numpy as np
import {module} as m
d = np.load({str(tmp_path / 'd.npz')!r})
np.save('predicted.npy', m.predict(d['x']))
np.savez('trained.npz', **m.TRAINED)
p = {{k: v.copy() for k, v in m.TRAINED.items()}}
s = m.init_state(p)
np.save('loss.npy', m.step(p, s, x=d['x'], t=d['t']))
np.savez('stepped.npz', **p)
""")
    ship = tmp_path / "ship"
    np.testing.assert_array_equal(np.load(ship / "predicted.npy"),
                                  net.forward(p, x=data["x"])["logits"])
    trained_back = np.load(ship / "trained.npz")
    for name in p:
        np.testing.assert_array_equal(trained_back[name], p[name])
    loss = net.step(p, net.init_state(p), **data)
    assert float(np.load(ship / "loss.npy")) == pytest.approx(loss, rel=1e-12)
    stepped = np.load(ship / "stepped.npz")
    for name in p:
        np.testing.assert_allclose(stepped[name], p[name], rtol=1e-12, atol=1e-14)


# ------------------------------------------------------------------ found by review


def test_predict_refuses_an_output_of_the_whole_batch_split_in_batches(tmp_path: Path,
                                                                        capsys) -> None:
    """An output without a row per sample (a mean over the rows) is a value of all the
    rows: refused when they come in several batches, computed when they come in one."""
    (tmp_path / "m.bp").write_text("input x[N, 2]\ny = x * 2\nm = mean(y)\noutput y, m\n")
    net = bpc.compile((tmp_path / "m.bp").read_text())
    x = np.arange(20.0).reshape(10, 2)
    np.savez(tmp_path / "d.npz", x=x)
    net.save_params({}, tmp_path / "p.npz")
    common = ["predict", str(tmp_path / "m.bp"), "--params", str(tmp_path / "p.npz"),
              "--data", str(tmp_path / "d.npz"), "-o", str(tmp_path / "o.npz")]
    assert main([*common, "--batch-size", "3"]) == 2
    assert "output m[] has no row per sample" in capsys.readouterr().err
    assert not (tmp_path / "o.npz").exists()
    assert main([*common, "--batch-size", "10"]) == 0
    assert float(np.load(tmp_path / "o.npz")["m"]) == pytest.approx(np.mean(2 * x))


def test_predict_keeps_the_old_files_when_it_fails(tmp_path: Path, capsys) -> None:
    """Writing a folder of .npy files is all or nothing; a bad index is named by its row
    in the file, not in its batch."""
    source = "input ids[N, 2]\nparam E[5, 3]\nz = take(E, ids, axis=0)\noutput z\n"
    (tmp_path / "e.bp").write_text(source)
    net = bpc.compile(source)
    net.save_params(net.init(), tmp_path / "p.npz")
    good = np.zeros((10, 2))
    bad = good.copy()
    bad[8, 1] = 7
    np.savez(tmp_path / "good.npz", ids=good)
    np.savez(tmp_path / "bad.npz", ids=bad)
    common = ["predict", str(tmp_path / "e.bp"), "--params", str(tmp_path / "p.npz"),
              "--batch-size", "4", "-o", str(tmp_path / "out")]
    assert main([*common, "--data", str(tmp_path / "good.npz")]) == 0
    before = (tmp_path / "out" / "z.npy").read_bytes()
    assert main([*common, "--data", str(tmp_path / "bad.npz")]) == 2
    assert "ids[8, 1] is 7.0" in capsys.readouterr().err
    assert (tmp_path / "out" / "z.npy").read_bytes() == before
    assert sorted(f.name for f in (tmp_path / "out").iterdir()) == ["z.npy"]


def test_export_of_a_modal_network_without_inputs(tmp_path: Path) -> None:
    source = "target t[N, 2]\nparam W[2] = ones\ny = dropout(W * 2, 0.5)\n" \
             "loss sum((y - t) ** 2)\n"
    (tmp_path / "noin.bp").write_text(source)
    net = bpc.compile(source)
    net.save_params(net.init(), tmp_path / "p.npz")
    assert main(["export", str(tmp_path / "noin.bp"), "--params", str(tmp_path / "p.npz"),
                 "-o", str(tmp_path / "ship")]) == 0
    run_without_bpcompile(tmp_path / "ship", """
import numpy as np
import noin as m
np.save('y.npy', m.predict())
""")
    np.testing.assert_array_equal(np.load(tmp_path / "ship" / "y.npy"),
                                  net.forward(net.init())["y"])


def test_a_file_that_is_not_an_archive_is_named(tmp_path: Path) -> None:
    (tmp_path / "notes.csv").write_text("a,b\n1,2\n")
    with pytest.raises(bpc.BPError, match="not an .npz archive"):
        bpc.compile(CLASSIFIER).load_params(tmp_path / "notes.csv")
    net = bpc.compile(CLASSIFIER)
    p = net.init()
    p["h.b"][0] = 1e300
    np.savez(tmp_path / "big.npz", **p)
    with pytest.raises(bpc.BPError, match=r"'h.b'\[0\] is 1e\+300, too large for float32"):
        net.with_dtype(np.float32).load_params(tmp_path / "big.npz")


def test_an_exported_module_is_importable_whatever_the_file_is_called() -> None:
    from bpcompile.export.numpy_module import module_name

    for network, expected in [("xor", "xor"), ("my-net", "my_net"), ("2layer", "net_2layer"),
                              ("class", "net_class")]:
        name = module_name(network)
        assert name == expected and name.isidentifier()


def test_exported_predict_warns_nothing(tmp_path: Path) -> None:
    """Overflow in the shipped module's predict shows as inf in its outputs, not as a
    RuntimeWarning (here run with warnings as errors)."""
    source = "input x[N, 2]\nparam w[2] = ones\ny = exp(x * w)\n"
    (tmp_path / "ovf.bp").write_text(source)
    net = bpc.compile(source)
    net.save_params(net.init(), tmp_path / "p.npz")
    assert main(["export", str(tmp_path / "ovf.bp"), "--params", str(tmp_path / "p.npz"),
                 "-o", str(tmp_path / "ship")]) == 0
    out = run_without_bpcompile(tmp_path / "ship", """
import warnings
import numpy as np
import ovf
warnings.simplefilter("error")
print(np.isinf(ovf.predict(np.array([[1000.0, 1.0]]))[0, 0]))
""")
    assert out.strip() == "True"
