"""`net.apply_gradients(p, s, grads)`: the optimizer's update with gradients the caller gives.

Oracles: `step` itself (step is value_and_grad then this update, so the two paths must agree
bit for bit); the SGD and Adam rules written out in NumPy; the arrays before a refused call.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import example_paths, indices_in_range

import bpcompile as bpc

OPTIMIZERS = [
    "sgd(lr=0.1)",
    "sgd(lr=0.05, momentum=0.9, nesterov=true, weight_decay=0.01)",
    "adam(lr=0.01, clip_norm=0.5)",
    "adam(beta1=0, weight_decay=0.1)",
]
# gradients that are the param itself, another param, shared, or computed
NETWORKS = {
    "layers": "input x[N, 3]\ntarget t[N, 2]\nparam W[3, 2]\nparam b[2]\n"
              "loss mse(tanh(x @ W + b), t)\n",
    "products": "param u[3]\nparam v[3]\nloss sum(u * v) + 0.5 * sum(square(u))\n",
    "itself": "param w[2, 2] = ones\nloss 0.5 * sum(w * w)\n",
}


def data_for(net: bpc.CompiledNet, rows: int = 4) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(5)
    return indices_in_range(net, {
        name: rng.uniform(0, 1, tuple(rows if isinstance(d, str) else d for d in shape))
        for name, shape in {**net.inputs, **net.targets}.items()})


def copies(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {name: array.copy() for name, array in arrays.items()}


def check_step_is_value_and_grad_then_apply(net: bpc.CompiledNet, data: dict) -> None:
    p_step = net.init(seed=3)
    s_step = net.init_state(p_step)
    p_apply, s_apply = copies(p_step), copies(s_step)
    buffers = {name: p_step[name].copy() for name in net.buffers}
    for _ in range(3):
        loss = net.step(p_step, s_step, **data)
        # dropout's masks: those of the step count in the state, which both paths advance
        value, grads = net.value_and_grad(p_apply, state=s_apply, **data)
        assert value == loss
        net.apply_gradients(p_apply, s_apply, grads)
        for name in net.params:
            np.testing.assert_array_equal(p_apply[name], p_step[name], err_msg=name)
        for name, before in buffers.items():   # batch norm's statistics need the batch
            np.testing.assert_array_equal(p_apply[name], before, err_msg=name)
        for name in s_step:
            np.testing.assert_array_equal(s_apply[name], s_step[name], err_msg=name)


@pytest.mark.parametrize("network", list(NETWORKS))
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_step_is_value_and_grad_then_apply(backend: str, network: str, optimizer: str) -> None:
    net = bpc.compile(NETWORKS[network] + f"optimize {optimizer}\n", backend=backend)
    check_step_is_value_and_grad_then_apply(net, data_for(net))


@pytest.mark.parametrize("path", example_paths(), ids=[p.name for p in example_paths()])
def test_every_example(backend: str, path) -> None:
    net = bpc.compile_file(path, backend=backend)
    check_step_is_value_and_grad_then_apply(net, data_for(net, rows=6))


def test_sgd_with_momentum_by_hand(backend: str) -> None:
    net = bpc.compile("param w[3]\nloss sum(w)\noptimize sgd(lr=0.5, momentum=0.9)\n",
                      backend=backend)
    p = {"w": np.array([1.0, 2.0, 3.0])}
    s = net.init_state(p)
    g1, g2 = np.array([1.0, -2.0, 0.5]), np.array([0.0, 4.0, -1.0])
    net.apply_gradients(p, s, {"w": g1})
    net.apply_gradients(p, s, {"w": g2})
    buffer = 0.9 * g1 + g2  # torch.optim.SGD: the first buffer is the gradient itself
    np.testing.assert_allclose(s["w.momentum"], buffer, rtol=1e-15)
    np.testing.assert_allclose(p["w"], [1.0, 2.0, 3.0] - 0.5 * g1 - 0.5 * buffer, rtol=1e-15)


def test_adam_by_hand(backend: str) -> None:
    net = bpc.compile("param w[2]\nloss sum(w)\noptimize adam(lr=0.1)\n", backend=backend)
    p = {"w": np.array([0.5, -0.5])}
    s = net.init_state(p)
    g = np.array([2.0, -0.25])
    net.apply_gradients(p, s, {"w": g})
    m, v = 0.1 * g, 0.001 * g**2
    expected = np.array([0.5, -0.5]) - 0.1 / 0.1 * m / (np.sqrt(v) / math.sqrt(0.001) + 1e-8)
    np.testing.assert_allclose(p["w"], expected, rtol=1e-14)
    assert float(s["step"]) == 1.0


def test_gradients_that_are_the_params_themselves(backend: str) -> None:
    """A caller may hand in a param's own array as a gradient; the update must read it as
    it was, not as the update rewrites it."""
    net = bpc.compile("param u[3]\nparam v[3]\nloss sum(u * v)\noptimize adam(beta1=0)\n",
                      backend=backend)
    p = {"u": np.array([1.0, 2.0, 3.0]), "v": np.array([-1.0, 0.5, 2.0])}
    s = net.init_state(p)
    expected_p, expected_s = copies(p), copies(s)
    net.apply_gradients(expected_p, expected_s, {"u": p["v"].copy(), "v": p["u"].copy()})
    net.apply_gradients(p, s, {"u": p["v"], "v": p["u"]})
    for name in p:
        np.testing.assert_array_equal(p[name], expected_p[name])
    for name in s:
        np.testing.assert_array_equal(s[name], expected_s[name])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_gradients_change_nothing(backend: str, bad: float) -> None:
    net = bpc.compile(NETWORKS["layers"] + "optimize adam()\n", backend=backend)
    p = net.init(seed=0)
    s = net.init_state(p)
    net.step(p, s, **data_for(net))
    before_p, before_s = copies(p), copies(s)
    grads = {name: np.ones_like(value) for name, value in p.items()}
    grads["b"][1] = bad
    with pytest.raises(bpc.BPNumericError, match="the gradient of b is not finite; "
                                                 "apply_gradients changed nothing"):
        net.apply_gradients(p, s, grads)
    for name in p:
        np.testing.assert_array_equal(p[name], before_p[name])
    for name in s:
        np.testing.assert_array_equal(s[name], before_s[name])


def test_a_non_finite_gradient_is_named_past_batch_norms_buffers(backend: str) -> None:
    """Status 2 + k counts trained params only: y.W comes after h.running_mean and
    h.running_var in the params, and must still be the one named (the llvm backend once
    counted the buffers and named h.running_mean)."""
    net = bpc.compile("network bn\ninput x[N, 3]\ntarget t[N, 2]\nh = batchnorm(x)\n"
                      "y = dense(h, 2)\noutput y\nloss mse(y, t)\noptimize sgd(lr=0.1)\n",
                      backend=backend)
    p = net.init(seed=0)
    s = net.init_state(p)
    grads = {name: np.ones(info.shape) for name, info in net.signature.trained.items()}
    grads["y.W"][0, 0] = np.nan
    with pytest.raises(bpc.BPNumericError, match="the gradient of y.W is not finite"):
        net.apply_gradients(p, s, grads)


@pytest.mark.parametrize("grads, error, message", [
    ({"W": np.zeros((3, 2))}, bpc.BPNameError, "missing gradient 'b'"),
    ({"W": np.zeros((3, 2)), "b": np.zeros(2), "c": np.zeros(1)}, bpc.BPNameError,
     "unknown gradient 'c'"),
    ({"W": np.zeros((2, 3)), "b": np.zeros(2)}, bpc.BPShapeError,
     r"gradient W has shape \(2, 3\), not \(3, 2\)"),
    ({"W": np.zeros((3, 2)), "b": np.array(["a", "b"])}, bpc.BPTypeError,
     "gradient b must hold real numbers"),
])
def test_bad_gradients_are_named(backend: str, grads: dict, error: type, message: str) -> None:
    net = bpc.compile(NETWORKS["layers"] + "optimize sgd(lr=0.1)\n", backend=backend)
    p = net.init()
    before = copies(p)
    with pytest.raises(error, match=message):
        net.apply_gradients(p, net.init_state(p), grads)
    for name in p:
        np.testing.assert_array_equal(p[name], before[name])


def test_gradients_of_any_real_dtype_and_layout(backend: str) -> None:
    """Gradients are converted like data (only params and state must be exact)."""
    net = bpc.compile(NETWORKS["layers"] + "optimize sgd(lr=0.1)\n", backend=backend,
                      dtype="float32")
    p = net.init()
    expected = copies(p)
    g = {"W": np.asfortranarray(np.ones((3, 2))), "b": np.array([1, 2], dtype=np.int8)}
    net.apply_gradients(p, net.init_state(p), g)
    net.apply_gradients(expected, net.init_state(expected),
                        {"W": np.ones((3, 2), np.float32), "b": np.array([1, 2], np.float32)})
    for name in p:
        np.testing.assert_array_equal(p[name], expected[name])
