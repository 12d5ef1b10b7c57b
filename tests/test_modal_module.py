"""The standalone NumPy module of a network with dropout or batch norm (SPEC, "Training and
inference modes"): both modes in one file, its own masks drawn.

Oracles: the compiled network (numpy backend: the same arithmetic, so bit for bit; llvm:
to rounding), and runtime/randomness.py's masks for the module's generator.
"""

from __future__ import annotations

import numpy as np
import pytest

import bpcompile as bpc
from bpcompile.backends.numpy.executor import load_module
from bpcompile.graph.network import MaskInfo
from bpcompile.runtime import randomness

MODAL = """
input x[N, 6]
target t[N, 3]
h = dense(x, 5, act=relu)
b = batchnorm(h, momentum=0.3)
y = dense(dropout(tanh(b), 0.3) + dropout(b, 0.5), 3)
loss cross_entropy(y, t)
optimize adam(lr=0.01)
"""

BATCHNORM_ONLY = """
input x[N, 4]
target t[N, 2]
h = dense(x, 3)
b = batchnorm(h)
y = dense(b, 2)
loss mse(y, t)
optimize sgd(lr=0.1, momentum=0.9)
"""


def _data(rows: int, seed: int, inputs: int, classes: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"x": rng.standard_normal((rows, inputs)),
            "t": np.eye(classes)[rng.integers(0, classes, rows)]}


def _copies(arrays: dict) -> dict:
    return {name: np.array(value, copy=True) for name, value in arrays.items()}


@pytest.mark.parametrize("source, inputs, classes", [(MODAL, 6, 3), (BATCHNORM_ONLY, 4, 2)])
def test_the_module_computes_what_the_network_does_in_both_modes(source: str, inputs: int,
                                                                  classes: int) -> None:
    net = bpc.compile(source, backend="numpy")
    other = bpc.compile(source, backend="llvm")
    module = load_module(net.code(), "modal")
    assert module.INPUTS == {"x": ("N", inputs)}   # no masks among the arguments
    data = _data(7, 1, inputs, classes)
    p = module.init(3)
    assert set(p) == set(net.params) | set(net.buffers)
    dropout = bool(net.signature.masks)   # (the seed is dropout's)
    s = module.init_state(p, seed=11) if dropout else module.init_state(p)
    expected_s = net.init_state(p, seed=11)
    assert set(s) == set(expected_s)
    for training in (False, True):
        state = {"rng": np.array([11, 4], dtype=np.uint64)} if training else None
        ours = module.forward(p, data["x"], training=training, state=state)
        theirs = net.forward(p, x=data["x"], training=training, state=state)
        for name in theirs:
            np.testing.assert_array_equal(ours[name], theirs[name])
        assert module.loss(p, data["x"], data["t"], training=training, state=state) == \
            net.loss(p, training=training, state=state, **data)
        loss, grads = module.value_and_grad(p, data["x"], data["t"], training=training,
                                            state=state)
        expected_loss, expected = net.value_and_grad(p, training=training, state=state, **data)
        assert loss == expected_loss
        for name in expected:
            np.testing.assert_array_equal(grads[name], expected[name])
    # steps in both modes: params, running statistics, optimizer state and step count
    q, r = _copies(p), _copies(expected_s)
    q_llvm, r_llvm = _copies(p), _copies(expected_s)
    for training in (True, True, False, True):
        assert module.step(p, s, data["x"], data["t"], training=training) == \
            net.step(q, r, training=training, **data)
        other.step(q_llvm, r_llvm, training=training, **data)
        for name in q:
            np.testing.assert_array_equal(p[name], q[name], err_msg=name)
            np.testing.assert_allclose(q_llvm[name], q[name], rtol=1e-10, atol=1e-13)
        for name in r:
            np.testing.assert_array_equal(s[name], r[name], err_msg=name)


def test_apply_gradients_counts_the_step() -> None:
    net = bpc.compile(MODAL, backend="numpy")
    module = load_module(net.code(), "modal")
    p = module.init(0)
    s = module.init_state(p, seed=2)
    _, grads = module.value_and_grad(p, *_data(5, 0, 6, 3).values(), state=s)
    module.apply_gradients(p, s, grads)
    assert s["rng"].tolist() == [2, 1]


@pytest.mark.parametrize("seed, step, site, rate, shape", [
    (0, 0, 0, 0.5, (4, 6)), (2**64 - 1, 7, 3, 0.1, (3, 2, 5)), (12345, 2**40, 1, 0.9, (50,)),
    (7, 1, 0, 0.0, (2, 3)), (7, 1, 0, 1.0, (2, 3)),
])
def test_the_modules_generator_draws_the_runtimes_masks(seed: int, step: int, site: int,
                                                        rate: float, shape: tuple) -> None:
    module = load_module(bpc.compile(MODAL, backend="numpy").code(), "modal")
    state = {"rng": np.array([seed, step], dtype=np.uint64)}
    ours = module.dropout_mask(state, site, rate, shape)
    info = MaskInfo("h.mask", shape, rate, site, 1)
    theirs = randomness.draw_mask(info, shape, seed, step, np.dtype(np.float64))
    assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
    np.testing.assert_array_equal(ours, theirs)


def test_each_mode_alone_takes_the_masks_as_arguments() -> None:
    """`code(training=True|False)`: the one mode the network runs, masks as arguments."""
    net = bpc.compile(MODAL, backend="numpy")
    training = load_module(net.code(training=True), "training")
    inference = load_module(net.code(training=False), "inference")
    data = _data(4, 5, 6, 3)
    p = training.init(1)
    state = {"rng": np.array([3, 8], dtype=np.uint64)}
    masks = randomness.draw_masks(net.signature.masks, {"N": 4}, state["rng"],
                                  np.dtype(np.float64))
    assert list(training.INPUTS) == ["x", *masks] and list(inference.INPUTS) == ["x"]
    assert training.loss(p, data["x"], *masks.values(), data["t"]) == \
        net.loss(p, training=True, state=state, **data)
    assert inference.loss(p, data["x"], data["t"]) == net.loss(p, **data)


def test_init_state_takes_a_seed_with_batch_norm_alone() -> None:
    """A network with modes but no dropout still takes init_state(p, seed=), as the
    network does, and gives the network's state."""
    net = bpc.compile("input x[N, 3]\ntarget t[N, 2]\nz = dense(x, 4)\nh = batchnorm(z)\n"
                      "y = dense(h, 2)\nloss mse(y, t)\noptimize sgd(lr=0.1, momentum=0.9)\n")
    module = load_module(net.code(), "bn_only")
    p = module.init(seed=2)
    got, want = module.init_state(p, seed=5), net.init_state(p, seed=5)
    assert sorted(got) == sorted(want)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name])
