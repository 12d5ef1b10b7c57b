"""Training: `bpcompile.train` / `training.fit`, data files, checkpoints, gradient health.

Oracles: `net.step` called by hand over the documented shuffle (a permutation drawn from
(seed, epoch)); the uninterrupted run, for a run stopped and resumed; NumPy's least squares
for the regression example; `value_and_grad` and np.linalg.norm for the gradient health;
the `.npz` the CSV was made from; the accuracy counted by hand.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest

import bpcompile as bpc
from bpcompile.inspect.health import EXPLODE_RATIO, gradient_health
from bpcompile.training import checkpoint, dataset, metrics
from bpcompile.training import loop as training

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
DATA = EXAMPLES / "data"

SMALL = """
input  x[N, 3]
target t[N, 2]
param W[3, 2] = xavier
param b[2]    = zeros
y = tanh(x @ W + b)
loss mean((y - t) ** 2)
optimize adam(lr=0.05, clip_norm=1)
"""


def small_data(rows: int = 23, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (rows, 3))
    return {"x": x, "t": np.tanh(x @ rng.uniform(-1, 1, (3, 2)))}


def by_hand(net: bpc.CompiledNet, data: dict, epochs: int, batch_size: int,
            seed: int) -> tuple[dict, dict, list[float]]:
    """The documented loop: init(seed), then each epoch's permutation from (seed, epoch)."""
    p = net.init(seed=seed)
    s = net.init_state(p)
    losses = []
    rows = len(data["x"])
    for epoch in range(epochs):
        order = np.random.default_rng([seed, epoch]).permutation(rows)
        for k in range(0, rows, batch_size):
            take = order[k:k + batch_size]
            losses.append(net.step(p, s, **{n: a[take] for n, a in data.items()}))
    return p, s, losses


def test_fit_is_the_documented_loop(backend: str) -> None:
    net = bpc.compile(SMALL, backend=backend)
    data = small_data()
    result = bpc.train(net, data, epochs=3, batch_size=5, seed=7)
    p, s, losses = by_hand(net, data, epochs=3, batch_size=5, seed=7)
    assert result.step_losses == losses
    for name in p:
        np.testing.assert_array_equal(result.params[name], p[name])
    for name in s:
        np.testing.assert_array_equal(result.state[name], s[name])
    # each epoch's loss is the row-weighted mean of its steps' losses (5 batches: 5,5,5,5,3)
    weights = np.array([5, 5, 5, 5, 3])
    for epoch, record in enumerate(result.history):
        step_losses = losses[5 * epoch:5 * epoch + 5]
        assert record.loss == pytest.approx(np.dot(step_losses, weights) / 23, rel=1e-12)


@pytest.mark.parametrize("stop_at", [(0, 2), (1, 0), (1, 4)])
def test_a_stopped_run_resumes_exactly(backend: str, tmp_path: Path,
                                       stop_at: tuple[int, int]) -> None:
    """Ctrl-C (a real SIGINT) between two steps, a checkpoint, a resume: the same params,
    state and losses as the run nobody stopped."""
    net = bpc.compile(SMALL, backend=backend)
    data = dataset.dataset(small_data(), net.signature, "data")
    whole = training.fit(net, data, epochs=3, batch_size=5, seed=3, progress_bar=False)

    def ctrl_c(epoch: int, step: int) -> None:
        if (epoch, step) == stop_at:
            os.kill(os.getpid(), signal.SIGINT)

    first = training.fit(net, data, epochs=3, batch_size=5, seed=3, progress_bar=False,
                         after_step=ctrl_c)
    assert first.interrupted
    taken = 5 * stop_at[0] + stop_at[1] + 1  # 5 steps an epoch; after the last, the next
    assert 5 * first.progress.epoch + first.progress.step == taken == len(first.step_losses)
    path = tmp_path / "run.npz"
    checkpoint.save(path, net, first.checkpoint(seed=3))
    saved = checkpoint.load(path, net)
    assert saved.seed == 3 and saved.progress == first.progress
    rest = training.fit(net, data, epochs=3, batch_size=5, seed=saved.seed, start=saved,
                        progress_bar=False)
    assert not rest.interrupted
    assert first.step_losses + rest.step_losses == whole.step_losses
    for name in whole.params:
        np.testing.assert_array_equal(rest.params[name], whole.params[name])
    for name in whole.state:
        np.testing.assert_array_equal(rest.state[name], whole.state[name])
    assert rest.history[-1].loss == whole.history[-1].loss


def test_sigint_outside_training_is_left_alone() -> None:
    """The handler is installed for the run only, and put back."""
    net = bpc.compile(SMALL)
    before = signal.getsignal(signal.SIGINT)
    bpc.train(net, small_data(), epochs=1)
    assert signal.getsignal(signal.SIGINT) is before


def test_regression_csv_reaches_least_squares(backend: str) -> None:
    """Oracle: NumPy's least squares on the same rows."""
    net = bpc.compile_file(EXAMPLES / "regression.bp", backend=backend)
    result = bpc.train(net, DATA / "regression.csv", epochs=40, batch_size=16)
    table = np.loadtxt(DATA / "regression.csv", delimiter=",", skiprows=1)
    design = np.column_stack([table[:, :3], np.ones(len(table))])
    solution = np.linalg.lstsq(design, table[:, 3], rcond=None)[0]
    np.testing.assert_allclose(result.params["w"][:, 0], solution[:3], atol=0.02)
    assert result.params["b"][0] == pytest.approx(solution[3], abs=0.02)
    losses = [r.loss for r in result.history]
    assert losses[-1] < 0.1 * losses[0]


def test_csv_and_npz_give_the_same_rows(tmp_path: Path) -> None:
    net = bpc.compile_file(EXAMPLES / "regression.bp")
    table = np.loadtxt(DATA / "regression.csv", delimiter=",", skiprows=1)
    np.savez(tmp_path / "r.npz", x=table[:, :3], y=table[:, 3:])
    from_csv = dataset.load(DATA / "regression.csv", net.signature)
    from_npz = dataset.load(tmp_path / "r.npz", net.signature)
    assert from_csv.rows == from_npz.rows == 500
    for name in ("x", "y"):
        np.testing.assert_array_equal(from_csv.arrays[name], from_npz.arrays[name])


def test_validation_split_is_disjoint_and_complete() -> None:
    net = bpc.compile(SMALL)
    data = small_data(rows=40)
    data["x"][:, 0] = np.arange(40)  # row ids
    parts = training.split(dataset.dataset(data, net.signature, "data"), 0.25, seed=5)
    train_ids = parts.train.arrays["x"][:, 0]
    held_ids = parts.validation.arrays["x"][:, 0]
    assert len(held_ids) == 10 and len(train_ids) == 30
    assert sorted(np.concatenate([train_ids, held_ids])) == list(range(40))
    # rows keep their targets
    for part in (parts.train, parts.validation):
        ids = part.arrays["x"][:, 0].astype(int)
        np.testing.assert_array_equal(part.arrays["t"], data["t"][ids])


def test_validation_loss_and_accuracy_by_hand(backend: str) -> None:
    net = bpc.compile_file(EXAMPLES / "vanishing_relu.bp", backend=backend)
    result = bpc.train(net, DATA / "spirals.npz", epochs=2, batch_size=32, validation=0.2)
    loaded = dataset.load(DATA / "spirals.npz", net.signature)
    held = training.split(loaded, 0.2, seed=0).validation
    z = net.forward(result.params, x=held.arrays["x"])["z"]
    right = np.mean((z > 0) == (held.arrays["t"] == 1))  # logits: the class is z > 0
    assert result.history[-1].val_accuracy == pytest.approx(right, abs=1e-12)
    losses = [net.loss(result.params, x=held.arrays["x"][k:k + 32], t=held.arrays["t"][k:k + 32])
              * len(held.arrays["x"][k:k + 32]) for k in range(0, held.rows, 32)]
    assert result.history[-1].val_loss == pytest.approx(sum(losses) / held.rows, rel=1e-12)


def test_one_hot_accuracy_by_hand() -> None:
    net = bpc.compile("input x[N, 4]\ntarget t[N, 3]\nparam W[4, 3]\ny = x @ W\n"
                      "loss cross_entropy(y, t)\n")
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 3, 50)
    data = dataset.dataset({"x": rng.standard_normal((50, 4)), "t": labels}, net.signature,
                           "data")
    np.testing.assert_array_equal(data.arrays["t"], np.eye(3)[labels])
    p = net.init(seed=1)
    predicted = np.argmax(data.arrays["x"] @ p["W"], axis=1)
    assert training.accuracy(net, p, data) == pytest.approx(np.mean(predicted == labels))


def test_the_relu_spirals_learn_and_the_sigmoid_ones_do_not(backend: str) -> None:
    """The README's claim about examples/vanishing*.bp, on the bundled spirals."""
    accuracy = {}
    for name in ("vanishing", "vanishing_relu"):
        net = bpc.compile_file(EXAMPLES / f"{name}.bp", backend=backend)
        result = bpc.train(net, DATA / "spirals.npz", epochs=15, validation=0.2)
        accuracy[name] = result.history[-1].val_accuracy
    assert accuracy["vanishing_relu"] > 0.95
    assert accuracy["vanishing"] < 0.6


# ----------------------------------------------------------------------- gradient health


def test_health_norms_are_the_gradients_norms(backend: str) -> None:
    net = bpc.compile_file(EXAMPLES / "vanishing.bp", backend=backend)
    p = net.init(seed=0)
    data = dict(np.load(DATA / "spirals.npz"))
    report = gradient_health(net, p, **data)
    _, grads = net.value_and_grad(p, **data)
    largest = max(np.linalg.norm(g) for g in grads.values())
    for health in report.params:
        assert health.grad_norm == pytest.approx(np.linalg.norm(grads[health.name]), rel=1e-12)
        assert health.relative == pytest.approx(health.grad_norm / largest, rel=1e-12)


def test_deep_sigmoid_gradients_vanish_and_relu_ones_do_not() -> None:
    data = dict(np.load(DATA / "spirals.npz"))
    sigmoid = bpc.compile_file(EXAMPLES / "vanishing.bp")
    relu = bpc.compile_file(EXAMPLES / "vanishing_relu.bp")
    bad = gradient_health(sigmoid, sigmoid.init(seed=0), **data)
    good = gradient_health(relu, relu.init(seed=0), **data)
    assert good.ok and good.warnings() == []
    layers = bad.layers()
    assert layers["h1"][1] == "vanishing" and layers["z"][1] == "ok"
    # the norms shrink layer by layer on the way back
    norms = [layers[f"h{k}"][0] for k in range(1, 9)]
    assert norms == sorted(norms)
    warnings = "\n".join(bad.warnings())
    assert "layer h1 (vanishing.bp:9)" in warnings and "relu" in warnings


def test_exploding_gradients_are_named() -> None:
    """Oracle: the norms from value_and_grad, against the stated rule."""
    net = bpc.compile("input x[N, 2]\ntarget t[N, 1]\nparam W1[2, 8] = normal(30)\n"
                      "param W2[8, 1] = normal(30)\ny = (x @ W1) @ W2\nloss mse(y, t)\n")
    rng = np.random.default_rng(0)
    p = net.init(seed=0)
    data = {"x": rng.standard_normal((16, 2)), "t": np.zeros((16, 1))}
    report = gradient_health(net, p, **data)
    _, grads = net.value_and_grad(p, **data)
    expected = {n for n, g in grads.items()
                if np.linalg.norm(g) > EXPLODE_RATIO * max(1.0, np.linalg.norm(p[n]))}
    assert expected and {h.name for h in report.params if h.exploding} == expected
    assert "explode" in report.warnings()[0] and "clip_norm" in str(report)


# ------------------------------------------------------------------ checkpoints and data


def test_checkpoint_holds_params_under_their_names(tmp_path: Path) -> None:
    net = bpc.compile(SMALL)
    result = bpc.train(net, small_data(), epochs=2)
    path = tmp_path / "p.npz"
    checkpoint.save(path, net, result.checkpoint(seed=0))
    stored = np.load(path)
    np.testing.assert_array_equal(stored["W"], result.params["W"])
    np.testing.assert_array_equal(stored["state:W.m"], result.state["W.m"])
    assert int(stored["meta:epoch"]) == 2


def test_a_failed_save_leaves_the_old_file(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    net = bpc.compile(SMALL)
    result = bpc.train(net, small_data(), epochs=1)
    path = tmp_path / "p.npz"
    checkpoint.save(path, net, result.checkpoint(seed=0))
    before = path.read_bytes()

    def half_written(file, array, **options) -> None:
        file.write(b"\x93NUMPY half an array")
        raise KeyboardInterrupt

    monkeypatch.setattr(np.lib.format, "write_array", half_written)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save(path, net, result.checkpoint(seed=0))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["p.npz"]


def test_checkpoint_of_another_network_is_refused(tmp_path: Path) -> None:
    net = bpc.compile(SMALL)
    other = bpc.compile_file(EXAMPLES / "xor.bp")
    path = tmp_path / "p.npz"
    checkpoint.save(path, net, bpc.train(net, small_data(), epochs=1).checkpoint(seed=0))
    with pytest.raises(bpc.BPNameError, match="no array 'W1'"):
        checkpoint.load(path, other)
    path.write_bytes(b"not a zip")
    with pytest.raises(bpc.BPError, match="not an .npz archive"):
        checkpoint.load(path, net)


@pytest.mark.parametrize("text, message", [
    ("x_0,x_1,x_2,y\n1,2,3\n", r"r.csv:2: 3 values, but the header names 4 columns"),
    ("x_0,x_1,x_2,y\n1,2,three,4\n", r"r.csv:2: column 'x_2' holds 'three', not a number"),
    ("x_0,x_2,y\n1,2,3\n", r"r.csv:1: columns x_0 to x_2 need x_1 too"),
    ("x_0,x_1,x_2\n1,2,3\n", r"no array named 'y'"),
    ("", r"the file is empty"),
    ("x_0,x_1,x_2,x_1,y\n1,2,3,4,5\n", r"column 'x_1' appears twice"),
])
def test_bad_csv_is_located(tmp_path: Path, text: str, message: str) -> None:
    net = bpc.compile_file(EXAMPLES / "regression.bp")
    (tmp_path / "r.csv").write_text(text)
    with pytest.raises(bpc.BPError, match=message):
        dataset.load(tmp_path / "r.csv", net.signature)


@pytest.mark.parametrize("arrays, message", [
    ({"x": np.zeros((4, 2))}, r"no array named 't'"),
    ({"x": np.zeros((4, 3)), "t": np.zeros((4, 1))}, r"axis 1 is 3, not 2"),
    ({"x": np.zeros((4, 2)), "t": np.zeros((5, 1))}, r"t has 5 along N .* but x has 4"),
    ({"x": np.zeros((4, 2)), "t": np.array(["a"] * 4)}, r"must hold real numbers"),
])
def test_bad_arrays_are_named(tmp_path: Path, arrays: dict, message: str) -> None:
    net = bpc.compile_file(EXAMPLES / "xor.bp")
    np.savez(tmp_path / "d.npz", **arrays)
    with pytest.raises(bpc.BPError, match=message):
        dataset.load(tmp_path / "d.npz", net.signature)


def test_labels_out_of_range_are_named() -> None:
    net = bpc.compile_file(EXAMPLES / "digits.bp")
    with pytest.raises(bpc.BPShapeError, match=r"t\[2\] is 10, not in 0..9"):
        dataset.dataset({"x": np.zeros((3, 64)), "t": np.array([1, 2, 10])}, net.signature,
                        "d.npz")


def test_a_refused_step_stops_training_with_the_last_good_params(backend: str) -> None:
    net = bpc.compile("input x[N, 1]\ntarget t[N, 1]\nparam w[1, 1] = ones\n"
                      "loss -sum(exp(x @ w) * t)\noptimize sgd(lr=1)\n", backend=backend)
    x = np.full((8, 1), 10.0)
    result = bpc.train(net, {"x": x, "t": np.ones((8, 1))}, epochs=5, batch_size=8)
    assert isinstance(result.error, bpc.BPNumericError)
    assert "epoch" in str(result.error)
    p = net.init(seed=0)
    s = net.init_state(p)
    taken = len(result.step_losses)
    for _ in range(taken):
        net.step(p, s, x=x, t=np.ones((8, 1)))
    np.testing.assert_array_equal(result.params["w"], p["w"])
    assert np.all(np.isfinite(result.params["w"]))


def test_digits_reach_97_percent_held_out() -> None:
    """The README's digits result: scikit-learn's handwritten digits (an optional extra),
    20% held out, 60 epochs of adam on the llvm backend in float32."""
    datasets = pytest.importorskip("sklearn.datasets")
    digits = datasets.load_digits()
    net = bpc.compile_file(EXAMPLES / "digits.bp", backend="llvm", dtype="float32")
    result = bpc.train(net, {"x": digits.data / 16.0, "t": digits.target}, epochs=60,
                       validation=0.2)
    assert result.history[-1].val_accuracy >= 0.97


# ------------------------------------------------------------------ found by review


def test_params_named_like_savez_arguments(tmp_path: Path) -> None:
    """np.savez takes names as keywords: a param called `file` or `allow_pickle` must still
    be saved and loaded (oracle: the arrays themselves)."""
    net = bpc.compile("param file[2] = ones\nparam allow_pickle[3] = normal(1)\n"
                      "loss sum(file) + sum(square(allow_pickle))\noptimize sgd(lr=0.1)\n")
    result = bpc.train(net, {}, epochs=2)
    path = tmp_path / "p.npz"
    checkpoint.save(path, net, result.checkpoint(seed=0))
    loaded = checkpoint.load(path, net)
    for name in net.params:
        np.testing.assert_array_equal(loaded.params[name], result.params[name])


def test_checkpoints_get_the_ordinary_file_mode(tmp_path: Path) -> None:
    net = bpc.compile(SMALL)
    old = os.umask(0o022)
    try:
        checkpoint.save(tmp_path / "p.npz", net, bpc.train(net, small_data(), epochs=1)
                        .checkpoint(seed=0))
    finally:
        os.umask(old)
    assert (tmp_path / "p.npz").stat().st_mode & 0o777 == 0o644


def test_an_npy_under_an_npz_name_is_refused(tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", np.zeros(3))
    (tmp_path / "a.npy").rename(tmp_path / "fake.npz")
    net = bpc.compile_file(EXAMPLES / "xor.bp")
    for read in (lambda: dataset.load(tmp_path / "fake.npz", net.signature),
                 lambda: checkpoint.load(tmp_path / "fake.npz", net)):
        with pytest.raises(bpc.BPError, match="an .npy array, not an .npz archive"):
            read()


def test_resuming_mid_epoch_needs_the_same_batches(tmp_path: Path) -> None:
    net = bpc.compile(SMALL)
    data = dataset.dataset(small_data(), net.signature, "data")

    def stop(epoch: int, step: int) -> None:
        if step == 1:
            os.kill(os.getpid(), signal.SIGINT)

    first = training.fit(net, data, epochs=2, batch_size=5, progress_bar=False,
                         after_step=stop)
    checkpoint.save(tmp_path / "p.npz", net, first.checkpoint(seed=0))
    saved = checkpoint.load(tmp_path / "p.npz", net)
    assert (saved.batch_size, saved.rows) == (5, 23)
    with pytest.raises(bpc.BPTypeError, match="batches of 5; this run has 23 rows in "
                                              "batches of 8"):
        training.fit(net, data, epochs=2, batch_size=8, start=saved, progress_bar=False)


def test_a_plain_params_file_has_no_seed(tmp_path: Path) -> None:
    net = bpc.compile(SMALL)
    np.savez(tmp_path / "plain.npz", **net.init(seed=3))
    loaded = checkpoint.load(tmp_path / "plain.npz", net)
    assert loaded.seed is None and loaded.progress == checkpoint.Progress()


def test_csv_with_a_byte_order_mark_and_a_text_column(tmp_path: Path) -> None:
    """Oracle: the same table without them."""
    net = bpc.compile_file(EXAMPLES / "regression.bp")
    plain = (DATA / "regression.csv").read_text().splitlines()
    rows = ["id," + plain[0]] + [f"row{k}," + line for k, line in enumerate(plain[1:])]
    (tmp_path / "r.csv").write_bytes(b"\xef\xbb\xbf" + "\n".join(rows).encode())
    loaded = dataset.load(tmp_path / "r.csv", net.signature)
    expected = dataset.load(DATA / "regression.csv", net.signature)
    for name in ("x", "y"):
        np.testing.assert_array_equal(loaded.arrays[name], expected.arrays[name])


def test_a_folder_of_npy_files_trains_like_the_npz(tmp_path: Path) -> None:
    """Memory-mapped rows, integer labels made one-hot, and a validation split: the same
    run as from the .npz (oracle)."""
    net = bpc.compile_file(EXAMPLES / "vanishing_relu.bp")
    stored = np.load(DATA / "spirals.npz")
    for name in stored.files:
        np.save(tmp_path / f"{name}.npy", stored[name])
    from_folder = bpc.train(net, tmp_path, epochs=2, validation=0.25)
    from_npz = bpc.train(net, DATA / "spirals.npz", epochs=2, validation=0.25)
    assert from_folder.step_losses == from_npz.step_losses
    assert from_folder.history[-1].val_accuracy == from_npz.history[-1].val_accuracy


def test_outputs_in_parts_are_the_outputs() -> None:
    """Accuracy reads the outputs a part at a time (for memory-mapped data); oracle: one
    forward call over every row."""
    net = bpc.compile_file(EXAMPLES / "vanishing_relu.bp")
    data = dataset.load(DATA / "spirals.npz", net.signature)
    p = net.init(seed=0)
    whole = net.forward(p, x=data.arrays["x"])["z"]
    np.testing.assert_array_equal(metrics.forward_in_batches(net, p, data, rows=300)["z"],
                                  whole)
