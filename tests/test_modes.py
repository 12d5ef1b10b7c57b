"""Training and inference modes (SPEC "Training and inference modes"): batch norm against
torch.nn.functional.batch_norm (optional), dropout's masks and their generator, buffers,
`training=`, and the errors. Oracles: PyTorch, the formula in NumPy, central differences,
the other backend, and the same run split in two."""

from __future__ import annotations

import numpy as np
import pytest

import bpcompile as bpc
from bpcompile import BPError
from bpcompile.graph.network import MaskInfo
from bpcompile.runtime import randomness

BACKENDS = ["numpy", "llvm"]

BN1D = """
input x[N, 5]
target t[N, 3]
h = dense(x, 4)
b = batchnorm(h, momentum=0.2, eps=0.001)
y = dense(tanh(b), 3)
loss cross_entropy(y, t)
optimize sgd(lr=0.1, momentum=0.9)
"""

BN2D = """
input x[N, 2, 5, 5]
target t[N, 3]
c = conv(x, 3, 3)
b = batchnorm(c)
y = dense(flatten(relu(b)), 3)
loss mse(y, t)
optimize adam(lr=0.01)
"""


def _data(shape: tuple[int, ...], classes: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"x": rng.standard_normal(shape) * 2 + 1,
            "t": np.eye(classes)[rng.integers(0, classes, shape[0])]}


def _torch_step(torch, p: dict, data: dict, conv: bool, sgd: bool, state: dict) -> tuple:
    """One step of the same network in PyTorch, in place on p (tensors); the loss and the
    gradients before the update."""
    F = torch.nn.functional
    x, t = torch.tensor(data["x"]), torch.tensor(data["t"])
    params = {n: v for n, v in p.items() if "running" not in n}
    for v in params.values():
        v.grad = None
    if conv:
        h = F.conv2d(x, p["c.W"]) + p["c.b"].reshape(1, -1, 1, 1)
        b = F.batch_norm(h, p["b.running_mean"], p["b.running_var"], p["b.gamma"],
                         p["b.beta"], training=True, momentum=0.1, eps=1e-5)
        y = torch.relu(b).flatten(1) @ p["y.W"] + p["y.b"]
        loss = ((y - t) ** 2).mean()
    else:
        h = x @ p["h.W"] + p["h.b"]
        b = F.batch_norm(h, p["b.running_mean"], p["b.running_var"], p["b.gamma"],
                         p["b.beta"], training=True, momentum=0.2, eps=1e-3)
        y = torch.tanh(b) @ p["y.W"] + p["y.b"]
        loss = -(t * torch.log_softmax(y, -1)).sum(-1).mean()
    loss.backward()
    grads = {n: v.grad.clone() for n, v in params.items()}
    if "optimizer" not in state:
        kind = torch.optim.SGD(params.values(), lr=0.1, momentum=0.9) if sgd \
            else torch.optim.Adam(params.values(), lr=0.01)
        state["optimizer"] = kind
    state["optimizer"].step()
    return float(loss.detach()), grads


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("source,shape,conv", [(BN1D, (7, 5), False),
                                               (BN2D, (4, 2, 5, 5), True)])
def test_batchnorm_trains_exactly_as_pytorch(backend: str, source: str, shape: tuple,
                                             conv: bool) -> None:
    """Losses, gradients, params and running statistics over several steps (the buffers
    moved with momentum, the variance unbiased), then inference with the running ones."""
    torch = pytest.importorskip("torch")
    net = bpc.compile(source, backend=backend)
    assert set(net.buffers) == {"b.running_mean", "b.running_var"}
    assert not set(net.buffers) & set(net.params)
    p = net.init(seed=3)
    assert (p["b.running_var"] == 1).all() and (p["b.running_mean"] == 0).all()
    s = net.init_state(p)
    theirs = {n: torch.tensor(v.copy(), requires_grad="running" not in n) for n, v in p.items()}
    torch_state: dict = {}
    for k in range(4):
        data = _data(shape, 3, k)
        loss, grads = net.value_and_grad(p, **data)
        assert set(grads) == set(net.params)
        want_loss, want_grads = _torch_step(torch, theirs, data, conv, not conv, torch_state)
        assert loss == pytest.approx(want_loss, rel=1e-12)
        for name, g in grads.items():
            # a bias before batch norm has gradient 0: rounding, at the scale of the rest
            np.testing.assert_allclose(g, want_grads[name].numpy(), rtol=1e-9, atol=1e-10)
        assert net.step(p, s, **data) == pytest.approx(want_loss, rel=1e-12)
        for name, value in p.items():
            np.testing.assert_allclose(value, theirs[name].detach().numpy(), rtol=1e-9,
                                       atol=1e-9, err_msg=name)
    # inference mode: the running statistics, as torch's eval()
    data = _data(shape, 3, 9)
    got = net.forward(p, x=data["x"])
    x = torch.tensor(data["x"])
    F = torch.nn.functional
    with torch.no_grad():
        h = F.conv2d(x, theirs["c.W"]) + theirs["c.b"].reshape(1, -1, 1, 1) if conv \
            else x @ theirs["h.W"] + theirs["h.b"]
        b = F.batch_norm(h, theirs["b.running_mean"], theirs["b.running_var"],
                         theirs["b.gamma"], theirs["b.beta"], training=False,
                         eps=1e-5 if conv else 1e-3)
        y = torch.relu(b).flatten(1) if conv else torch.tanh(b)
        y = y @ theirs["y.W"] + theirs["y.b"]
    # (the bias before batch norm differs by rounding, 1e-10: it has gradient 0 in training
    # mode but shifts the output in inference mode)
    np.testing.assert_allclose(next(iter(got.values())), y.numpy(), rtol=1e-8, atol=1e-9)


def _batchnorm_formula(x: np.ndarray, gamma, beta, eps: float) -> np.ndarray:
    axes = (0, *range(2, x.ndim))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    mean, var = x.mean(axis=axes, keepdims=True), x.var(axis=axes, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * gamma.reshape(shape) + beta.reshape(shape)


@pytest.mark.parametrize("backend", BACKENDS)
def test_batchnorm_modes_against_the_formula(backend: str) -> None:
    net = bpc.compile(BN2D, backend=backend)
    p = net.init(seed=1)
    rng = np.random.default_rng(5)
    p.update({"b.gamma": rng.uniform(0.5, 2, 3), "b.beta": rng.standard_normal(3),
              "b.running_mean": rng.standard_normal(3), "b.running_var": rng.uniform(1, 2, 3)})
    x = rng.standard_normal((6, 2, 5, 5))
    c = net.forward(p, x=x)  # inference: the running statistics
    trained = net.forward(p, x=x, training=True)
    conv = bpc.compile("input x[N, 2, 5, 5]\nparam W[3, 2, 3, 3]\nparam bias[3]\n"
                       "c = conv2d(x, W) + reshape(bias, [3, 1, 1])\noutput c")
    h = conv.forward({"W": p["c.W"], "bias": p["c.b"]}, x=x)["c"]
    shape = (1, -1, 1, 1)
    running = (h - p["b.running_mean"].reshape(shape)) / np.sqrt(
        p["b.running_var"].reshape(shape) + 1e-5) * p["b.gamma"].reshape(shape) \
        + p["b.beta"].reshape(shape)
    flat = lambda v: np.maximum(v, 0).reshape(6, -1) @ p["y.W"] + p["y.b"]  # noqa: E731
    np.testing.assert_allclose(c["y"], flat(running), rtol=1e-11, atol=1e-12)
    batch = _batchnorm_formula(h, p["b.gamma"], p["b.beta"], 1e-5)
    np.testing.assert_allclose(trained["y"], flat(batch), rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_batchnorm_gradient_matches_central_differences(backend: str) -> None:
    net = bpc.compile(BN1D, backend=backend)
    p = net.init(seed=2)
    report = bpc.gradcheck(net, p, **_data((6, 5), 3, 4))
    assert report.ok, report


def test_step_updates_buffers_only_in_training_mode() -> None:
    net = bpc.compile(BN1D)
    p = net.init(seed=0)
    s = net.init_state(p)
    data = _data((5, 5), 3, 1)
    before = {n: p[n].copy() for n in net.buffers}
    net.step(p, s, training=False, **data)
    for name in net.buffers:
        np.testing.assert_array_equal(p[name], before[name])
    net.step(p, s, **data)
    assert not np.array_equal(p["b.running_mean"], before["b.running_mean"])
    # apply_gradients has no batch: it moves params, never the buffers
    _, grads = net.value_and_grad(p, **data)
    before = {n: p[n].copy() for n in net.buffers}
    net.apply_gradients(p, s, grads)
    for name in net.buffers:
        np.testing.assert_array_equal(p[name], before[name])


# ----------------------------------------------------------------------- dropout

DROPOUT = """
input x[N, 40]
target t[N, 2]
h = dense(x, 30, act=relu)
d = dropout(h, 0.4)
y = dense(dropout(d * 2, 0.25), 2)
loss mse(y, t)
optimize sgd(lr=0.05)
"""

PLAIN = """
input x[N, 40]
target t[N, 2]
h = dense(x, 30, act=relu)
d = h
y = dense(d * 2, 2)
loss mse(y, t)
optimize sgd(lr=0.05)
"""


def test_splitmix64_is_the_published_generator() -> None:
    """The first outputs of SplitMix64 from seed 1234567, as its reference implementation
    (and java.util.SplittableRandom) gives them."""
    assert randomness.output(1234567, 0) == 6457827717110365317
    assert randomness.output(1234567, 1) == 3203168211198807973
    key = randomness.stream_key(7, 11, 2)
    index = np.array([5, 6, 7, 2**40], dtype=np.uint64)
    assert [int(v) for v in randomness.outputs(key, index)] == \
        [randomness.output(key, int(i)) for i in index]


def test_masks_pass_a_simple_statistical_test() -> None:
    """Drop rate, the kept values' scale, mean and variance of the mask, and no correlation
    between neighbours, between steps, or between two dropouts."""
    info = MaskInfo("h.mask", (400, 500), 0.3, 0, 1)
    a = randomness.draw_mask(info, (400, 500), 0, 0, np.dtype(np.float64))
    b = randomness.draw_mask(info, (400, 500), 0, 1, np.dtype(np.float64))
    other = randomness.draw_mask(MaskInfo("k", (400, 500), 0.3, 1, 1),
                                 (400, 500), 0, 0, np.dtype(np.float64))
    # a share of the batch draws its rows' part of the whole batch's mask
    rows = np.array([399, 3, 17])
    np.testing.assert_array_equal(
        randomness.draw_mask(info, (3, 500), 0, 0, np.dtype(np.float64), rows), a[rows])
    kept = a != 0
    n = a.size
    assert abs(1 - kept.mean() - 0.3) < 4 * np.sqrt(0.3 * 0.7 / n)
    assert set(np.unique(a)) == {0.0, 1 / 0.7}
    assert abs(a.mean() - 1) < 4 * np.sqrt(a.var() / n)  # the mask keeps the mean
    assert a.var() == pytest.approx(0.3 / 0.7, rel=0.02)  # p / (1 - p)
    flat = kept.ravel().astype(float)
    for left, right in ((flat[:-1], flat[1:]), (flat, (b != 0).ravel()),
                        (flat, (other != 0).ravel())):
        assert abs(np.corrcoef(left, right)[0, 1]) < 4 / np.sqrt(n)


@pytest.mark.parametrize("backend", BACKENDS)
def test_dropout_is_the_identity_in_inference_mode(backend: str) -> None:
    net, plain = bpc.compile(DROPOUT, backend=backend), bpc.compile(PLAIN, backend=backend)
    p = net.init(seed=0)
    data = _data((9, 40), 2, 0)
    np.testing.assert_array_equal(net.forward(p, x=data["x"])["y"],
                                  plain.forward(p, x=data["x"])["y"])
    assert net.loss(p, **data) == plain.loss(p, **data)
    assert net.loss(p, training=True, **data) != plain.loss(p, **data)


def test_dropout_scales_what_it_keeps() -> None:
    net = bpc.compile("input x[N, 50]\ny = dropout(x, 0.2)\noutput y")
    x = np.random.default_rng(0).uniform(1, 2, (30, 50))
    y = net.forward({}, x=x, training=True)["y"]
    kept = y != 0
    np.testing.assert_array_equal(y[kept], x[kept] * (1 / 0.8))
    assert 0.1 < 1 - kept.mean() < 0.3


def test_both_backends_draw_the_same_masks_and_train_alike() -> None:
    data = _data((16, 40), 2, 3)
    runs = {}
    for backend in BACKENDS:
        net = bpc.compile(DROPOUT, backend=backend)
        p = net.init(seed=1)
        s = net.init_state(p, seed=42)
        out = net.forward(p, x=data["x"], training=True, state=s)["y"]
        losses = [net.step(p, s, **data) for _ in range(5)]
        runs[backend] = out, losses, p, s
    (out_a, losses_a, p_a, s_a), (out_b, losses_b, p_b, s_b) = runs.values()
    zeros_a = out_a == 0
    np.testing.assert_allclose(out_a, out_b, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(losses_a, losses_b, rtol=1e-12)
    for name in p_a:
        np.testing.assert_allclose(p_a[name], p_b[name], rtol=1e-10, atol=1e-13)
    np.testing.assert_array_equal(s_a["rng"], [42, 5])
    assert not zeros_a.all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_masks_follow_the_seed_and_the_step(backend: str) -> None:
    net = bpc.compile(DROPOUT, backend=backend)
    p = net.init(seed=0)
    data = _data((8, 40), 2, 1)

    def loss(seed: int, step: int) -> float:
        s = net.init_state(p, seed=seed)
        s["rng"][1] = step
        return net.loss(p, training=True, state=s, **data)

    assert loss(1, 0) == loss(1, 0)
    assert len({loss(1, 0), loss(2, 0), loss(1, 1)}) == 3
    assert net.loss(p, training=True, **data) == loss(0, 0)  # no state: seed 0, step 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_resumed_run_draws_the_masks_of_the_uninterrupted_one(backend: str) -> None:
    net = bpc.compile(DROPOUT, backend=backend)
    data = [_data((8, 40), 2, k) for k in range(6)]
    p = net.init(seed=0)
    s = net.init_state(p, seed=9)
    whole = [net.step(p, s, **d) for d in data]
    q = net.init(seed=0)
    r = net.init_state(q, seed=9)
    first = [net.step(q, r, **d) for d in data[:3]]
    saved = {n: v.copy() for n, v in q.items()}, {n: v.copy() for n, v in r.items()}
    q, r = saved
    rest = [net.step(q, r, **d) for d in data[3:]]
    assert first + rest == whole
    for name in p:
        np.testing.assert_array_equal(p[name], q[name])


@pytest.mark.parametrize("backend", BACKENDS)
def test_value_and_grad_then_apply_gradients_is_step(backend: str) -> None:
    net = bpc.compile(DROPOUT, backend=backend)
    data = _data((8, 40), 2, 2)
    p, q = net.init(seed=0), net.init(seed=0)
    s, r = net.init_state(p, seed=5), net.init_state(q, seed=5)
    for _ in range(3):
        expected = net.step(p, s, **data)
        loss, grads = net.value_and_grad(q, state=r, **data)
        net.apply_gradients(q, r, grads)
        assert loss == pytest.approx(expected, rel=1e-13)
    for name in p:
        np.testing.assert_allclose(p[name], q[name], rtol=1e-13, atol=1e-15)
    np.testing.assert_array_equal(s["rng"], r["rng"])


@pytest.mark.parametrize("backend", BACKENDS)
def test_dropout_gradient_matches_central_differences(backend: str) -> None:
    """With training=True and no state, every call draws seed 0, step 0's masks: a fixed
    function that central differences can probe."""
    net = bpc.compile(DROPOUT, backend=backend)
    p = net.init(seed=4)
    data = _data((5, 40), 2, 6)
    loss, grads = net.value_and_grad(p, **data)
    h = 1e-6
    for name in ("h.W", "y.b"):
        flat = p[name].ravel()
        for index in (0, flat.size // 2, flat.size - 1):
            up, down = {n: v.copy() for n, v in p.items()}, {n: v.copy() for n, v in p.items()}
            up[name].ravel()[index] += h
            down[name].ravel()[index] -= h
            numeric = (net.loss(up, training=True, **data)
                       - net.loss(down, training=True, **data)) / (2 * h)
            assert grads[name].ravel()[index] == pytest.approx(numeric, rel=1e-5, abs=1e-8)


# ------------------------------------------------------------------------- errors

@pytest.mark.parametrize("source,message", [
    ("input x[N, 3]\ny = dropout(x, 1.5)\noutput y", "dropout()'s p must be from 0 to 1"),
    ("input x[N, 3]\ny = dropout(x, -0.1)\noutput y", "dropout()'s p must be from 0 to 1"),
    ("input x[N]\nb = batchnorm(x)\noutput b", "batchnorm() needs x[N, C]"),
    ("input x[N, C]\nb = batchnorm(x)\noutput b", "fixed number of channels"),
    ("input x[N, 3]\ny = batchnorm(x) + 1\noutput y", "whole right side"),
    ("param x[1, 3]\nb = batchnorm(x)\nloss sum(b)", "more than one value per channel"),
    ("input x[N, 3]\nb = batchnorm(x, momentum=2)\noutput b", "momentum must be from 0 to 1"),
    ("input training[N, 3]\ny = training * 2\noutput y", "cannot name an input"),
    ("target state[N, 3]\nparam w[3]\nloss sum(state * w)", "cannot name a target"),
])
def test_bad_modes_are_located_errors(source: str, message: str) -> None:
    with pytest.raises(BPError) as error:
        bpc.compile(source)
    assert message in str(error.value)
    assert "<string>:" in str(error.value)


def test_bad_mode_calls_are_errors_that_change_nothing() -> None:
    net = bpc.compile(BN1D + "\nz = dropout(y, 0.5)")
    p = net.init(seed=0)
    s = net.init_state(p)
    data = _data((4, 5), 3, 0)
    with pytest.raises(BPError, match="training must be True or False"):
        net.forward(p, x=data["x"], training="yes")
    one = {"x": data["x"][:1], "t": data["t"][:1]}
    snapshot = {n: v.copy() for n, v in p.items()}
    with pytest.raises(BPError, match="more than one value per channel"):
        net.step(p, s, **one)
    net.forward(p, x=one["x"])  # inference mode needs no batch statistics
    without = {n: v for n, v in s.items() if n != "rng"}
    with pytest.raises(BPError, match="no 'rng' entry"):
        net.step(p, without, **data)
    with pytest.raises(BPError, match="uint64"):
        net.step(p, {**s, "rng": np.zeros(2)}, **data)
    with pytest.raises(BPError, match="seed must be a whole number"):
        net.init_state(p, seed=-1)
    for name, value in p.items():
        np.testing.assert_array_equal(value, snapshot[name])
    np.testing.assert_array_equal(s["rng"], [0, 0])
