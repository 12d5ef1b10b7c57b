"""bpcompile.gradcheck: passes correct gradients, and catches wrong ones.

Oracles: a gradient known to be right (the compiler's own, cross-checked elsewhere) must
pass with a small error; a gradient deliberately perturbed by a known amount in a known entry
must fail, and the report must point at that entry, with the analytic value off by exactly the
perturbation.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest

import bpcompile as bpc
from bpcompile import BPError, BPNameError, BPTypeError

# bpcompile.gradcheck is the function; the module it lives in, for monkeypatching:
gradcheck_module = importlib.import_module("bpcompile.inspect.gradcheck")

NETWORKS = {
    "xor": """
input  x[N, 2]
target t[N, 1]
param W1[2, 3]
param b1[3]
param W2[3, 1]
param b2[1]
h = sigmoid(x @ W1 + b1)
y = sigmoid(h @ W2 + b2)
loss 0.5 * sum((y - t) ** 2)
""",
    "many_builtins": """
input  x[N, 4]
target t[N, 3]
param W[4, 3] = normal(0.8)
param b[3] = uniform(-0.5, 0.5)
param s[] = 1.3
def swish(z) = z * sigmoid(z)
z = x @ W + b
h = gelu(z) + elu(z, alpha=0.7) + leaky_relu(z, alpha=0.1) + softplus(z) * s + swish(z)
k = h - logsumexp(h, axis=1, keepdims=true) + where(z > 0, z, 0.5 * z)
loss cross_entropy(k, t) + 0.1 * mean(max(h, axis=0)) + 0.01 * sum(softmax(z) * z)
""",
    "reductions_and_transpose": """
input  x[N, 3]
param A[3, 3] = normal(1)
param c[3] = normal(1)
g = tanh(x @ A.T) * c
loss mean(sum(g ** 2, axis=-1)) + sum(mean(exp(-abs(g)), axis=0)) + sqrt(sum(c * c) + 1)
""",
}


def make_data(net: bpc.CompiledNet, n: int = 5, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays = {}
    for name, shape in {**net.inputs, **net.targets}.items():
        concrete = tuple(n if isinstance(d, str) else d for d in shape)
        arrays[name] = rng.standard_normal(concrete)
    if "t" in arrays and "cross_entropy" in net.source:
        t = rng.uniform(0.1, 1, arrays["t"].shape)
        arrays["t"] = t / t.sum(axis=1, keepdims=True)  # probability rows
    return arrays


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", list(NETWORKS))
def test_correct_gradients_pass(name: str, dtype: str, backend: str) -> None:
    net = bpc.compile(NETWORKS[name], backend=backend, dtype=dtype, filename=f"{name}.bp")
    p = net.init(seed=2)
    data = make_data(net)
    before = {k: v.copy() for k, v in p.items()}
    result = bpc.gradcheck(net, p, **data)
    assert isinstance(result, bpc.GradcheckResult)
    assert result.ok, str(result)
    assert result.max_rel_error < 1e-6
    assert set(result.per_param) == set(net.params)
    # every entry of these small params, plus one random direction
    assert result.checked == sum(int(np.prod(s)) for s in net.params.values()) + 1
    assert "passed" in str(result)
    for k in p:  # gradcheck shifts copies, never the caller's params
        np.testing.assert_array_equal(p[k], before[k])
        assert p[k].dtype == np.dtype(dtype)


def perturb(net: bpc.CompiledNet, monkeypatch: pytest.MonkeyPatch, param: str,
            index: tuple[int, ...], amount: float) -> None:
    """Make `net`'s value_and_grad wrong by `amount` in one gradient entry."""
    executor = net._executor
    original = executor.value_and_grad

    def wrong(p, data, sizes):
        loss, grads = original(p, data, sizes)
        grads = {k: np.array(v, copy=True) for k, v in grads.items()}
        grads[param][index] += amount
        return loss, grads

    monkeypatch.setattr(executor, "value_and_grad", wrong)


@pytest.mark.parametrize("param,index,label", [
    ("W2", (1, 0), "W2[1, 0]"),
    ("W1", (0, 2), "W1[0, 2]"),
    ("b1", (1,), "b1[1]"),
    ("b2", (0,), "b2[0]"),
])
def test_a_wrong_gradient_is_caught_and_located(param: str, index: tuple[int, ...],
                                                label: str, backend: str,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    net = bpc.compile(NETWORKS["xor"], backend=backend)
    p = net.init(seed=1)
    data = make_data(net)
    true_grad = net.value_and_grad(p, **data)[1][param][index]
    perturb(net, monkeypatch, param, index, 1e-3)
    result = bpc.gradcheck(net, p, **data)
    assert result.ok is False
    assert result.worst is not None and result.worst.where == label, str(result)
    assert result.worst.analytic == pytest.approx(true_grad + 1e-3, rel=1e-12)
    assert result.worst.numeric == pytest.approx(true_grad, rel=1e-5, abs=1e-9)
    assert result.max_rel_error > result.tolerance
    assert max(result.per_param, key=result.per_param.get) == param
    for other, error in result.per_param.items():
        if other != param:
            assert error < 1e-6, other
    assert "FAILED" in str(result) and label in str(result)


def test_tolerance_and_relative_error(backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """An entry 2% too large has relative error 0.02 / 1.02 (the larger of the two values is
    the denominator): it fails at 1e-2 and passes at 5e-2; 1e-9 of the gradient's scale is
    rounding and passes at the default tolerance."""
    net = bpc.compile(NETWORKS["xor"], backend=backend)
    p = net.init(seed=1)
    data = make_data(net)
    grads = net.value_and_grad(p, **data)[1]
    index = np.unravel_index(np.argmax(np.abs(grads["W1"])), grads["W1"].shape)
    with monkeypatch.context() as patch:
        perturb(net, patch, "W1", index, 0.02 * float(grads["W1"][index]))
        loose = bpc.gradcheck(net, p, tolerance=5e-2, **data)
        tight = bpc.gradcheck(net, p, tolerance=1e-2, **data)
    assert loose.ok and not tight.ok
    assert loose.max_rel_error == pytest.approx(0.02 / 1.02, rel=1e-4)
    assert tight.worst.where == f"W1[{index[0]}, {index[1]}]"
    scale = max(float(np.max(np.abs(g))) for g in grads.values())
    perturb(net, monkeypatch, "W1", index, 1e-9 * scale)
    assert bpc.gradcheck(net, p, **data).ok


def test_a_wrong_entry_outside_the_sample_is_caught_by_the_random_direction(
        backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 100x50 param is sampled 32 entries at a time; the random direction still sees
    every entry."""
    net = bpc.compile("input x[N, 100]\ntarget t[N, 10]\nparam W1[100, 50] = he\n"
                      "param W2[50, 10]\nh = relu(x @ W1)\nloss mse(h @ W2, t)\n",
                      backend=backend)
    p = net.init(seed=0)
    data = make_data(net)
    _, grads = net.value_and_grad(p, **data)
    perturb(net, monkeypatch, "W1", (17, 3), 0.1 * float(np.max(np.abs(grads["W1"]))) + 0.05)
    for seed in range(3):
        result = bpc.gradcheck(net, p, seed=seed, **data)
        assert not result.ok, (seed, str(result))
        assert result.checked == 32 + 32 + 1


def test_float32_net_is_checked_through_a_float64_twin(
        backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    net = bpc.compile(NETWORKS["xor"], backend=backend, dtype="float32")
    p = net.init(seed=4)
    data = make_data(net)
    result = bpc.gradcheck(net, p, **data)
    # a float32 gradient could not reach this accuracy: the twin is float64
    assert result.ok and result.max_rel_error < 1e-6, str(result)

    made = []
    original = gradcheck_module._float64_twin

    def spy(net32: bpc.CompiledNet) -> bpc.CompiledNet:
        twin = original(net32)
        assert twin.dtype == np.float64 and twin.backend == net32.backend
        perturb(twin, monkeypatch, "W1", (1, 2), 1e-3)
        made.append(twin)
        return twin

    monkeypatch.setattr(gradcheck_module, "_float64_twin", spy)
    result = bpc.gradcheck(net, p, **data)
    assert len(made) == 1
    assert not result.ok and result.worst.where == "W1[1, 2]"


def test_scalar_param(backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    net = bpc.compile("input x[N]\nparam a[] = 0.3\nparam b[] = -0.2\n"
                      "loss mean(tanh(a * x + b) ** 2)\n", backend=backend)
    p = net.init()
    data = {"x": np.linspace(-2, 2, 7)}
    result = bpc.gradcheck(net, p, **data)
    assert result.ok and result.checked == 3
    perturb(net, monkeypatch, "b", (), 1e-3)
    result = bpc.gradcheck(net, p, **data)
    assert not result.ok and result.worst.where == "b"


def test_seed_makes_the_check_reproducible(backend: str) -> None:
    net = bpc.compile("input x[N, 100]\ntarget t[N, 1]\nparam W[100, 1]\n"
                      "loss mse(tanh(x @ W), t)\n", backend=backend)
    p = net.init(seed=0)
    data = make_data(net)
    a = bpc.gradcheck(net, p, seed=3, **data)
    b = bpc.gradcheck(net, p, seed=3, **data)
    assert a == b and a.ok
    assert a.checked == 32 + 1


def test_refusals(backend: str) -> None:
    no_loss = bpc.compile("input x[N, 2]\nparam W[2, 2]\ny = x @ W\n", backend=backend)
    with pytest.raises(BPNameError):
        bpc.gradcheck(no_loss, no_loss.init(), x=np.ones((2, 2)))
    with pytest.raises(BPTypeError):
        bpc.gradcheck("not a network", {})
    net = bpc.compile(NETWORKS["xor"], backend=backend)
    p = net.init()
    data = make_data(net)
    bad_params = {
        "missing": {k: v for k, v in p.items() if k != "W1"},
        "complex": {**p, "W1": p["W1"] + 1j},
        "string": {**p, "W1": p["W1"].astype(str)},
        "ragged": {**p, "W1": [[1.0, 2.0, 3.0], [1.0]]},
        "shape": {**p, "W1": np.ones((3, 2))},
        "not_a_dict": list(p.values()),
    }
    for name, q in bad_params.items():
        with pytest.raises(BPError):
            bpc.gradcheck(net, q, **data)
    with pytest.raises(BPError):
        bpc.gradcheck(net, p, x=data["x"])
