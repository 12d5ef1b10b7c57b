"""The same program in bpcompile and in PyTorch (micrograd's test): forward values, loss,
gradients and optimizer steps must agree to 1e-10 in float64.

Optional: skipped as a whole when PyTorch is not installed. Oracle: PyTorch's autograd, its
`torch.nn.functional` definitions of the built-ins and losses, and `torch.optim`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from conftest import example_paths, indices_in_range

import bpcompile as bpc

torch = pytest.importorskip("torch")
F = torch.nn.functional

RTOL = 1e-10
ATOL = 1e-12
Tensors = dict[str, "torch.Tensor"]


def to_torch(arrays: dict[str, np.ndarray], grad: bool = False) -> Tensors:
    return {k: torch.tensor(np.asarray(v, dtype=np.float64), dtype=torch.float64,
                            requires_grad=grad) for k, v in arrays.items()}


def close(actual: object, expected: object, what: str) -> None:
    if isinstance(expected, torch.Tensor):
        expected = expected.detach().numpy()
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float64), expected, rtol=RTOL,
                               atol=ATOL, err_msg=what)


def compare(net: bpc.CompiledNet, program: Callable[[Tensors, Tensors], tuple],
            p: dict[str, np.ndarray], data: dict[str, np.ndarray], what: str) -> None:
    """`program(params, data)` gives (outputs dict, loss) in torch; compare everything."""
    tp, td = to_torch(p, grad=True), to_torch(data)
    outputs, loss = program(tp, td)
    loss.backward()
    inputs = {k: v for k, v in data.items() if k in net.inputs}
    got = net.forward(p, **inputs)
    assert set(got) == set(outputs), what
    for name in outputs:
        close(got[name], outputs[name], f"{what}: output {name}")
    value, grads = net.value_and_grad(p, **data)
    close(value, loss, f"{what}: loss")
    close(net.loss(p, **data), loss, f"{what}: loss()")
    for name in net.params:
        assert tp[name].grad is not None, name
        close(grads[name], tp[name].grad, f"{what}: gradient of {name}")


# ---------------------------------------------------------------- the examples in torch

def xor(p: Tensors, d: Tensors) -> tuple:
    h = torch.sigmoid(d["x"] @ p["W1"] + p["b1"])
    y = torch.sigmoid(h @ p["W2"] + p["b2"])
    return {"y": y}, 0.5 * torch.sum((y - d["t"]) ** 2)


def digits(p: Tensors, d: Tensors) -> tuple:
    h1 = F.relu(d["x"] @ p["h1.W"] + p["h1.b"])
    h2 = F.relu(h1 @ p["h2.W"] + p["h2.b"])
    logits = h2 @ p["logits.W"] + p["logits.b"]
    return {"logits": logits}, F.cross_entropy(logits, d["t"])


def mlp(p: Tensors, d: Tensors) -> tuple:
    h = F.relu(d["x"] @ p["W1"] + p["b1"])
    y = h @ p["W2"] + p["b2"]
    return {"y": y}, F.mse_loss(y, d["t"])


def regression(p: Tensors, d: Tensors) -> tuple:
    prediction = d["x"] @ p["w"] + p["b"]
    return {"prediction": prediction}, F.mse_loss(prediction, d["y"])


TWINS = {"xor": xor, "digits": digits, "mlp": mlp, "regression": regression}


def example_data(net: bpc.CompiledNet, n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    data = {}
    for name, shape in {**net.inputs, **net.targets}.items():
        concrete = tuple(n if isinstance(d, str) else d for d in shape)
        data[name] = rng.standard_normal(concrete)
    # cross_entropy's targets: one-hot rows
    for t in re.findall(r"cross_entropy\(\s*[^,]+,\s*(\w+)\s*\)", net.source):
        if t in net.signature.indices:
            continue
        rows = rng.integers(0, data[t].shape[-1], size=n)
        data[t] = np.eye(data[t].shape[-1])[rows]
    return indices_in_range(net, data, seed)


@pytest.mark.parametrize("path", example_paths(), ids=[p.name for p in example_paths()])
def test_example_matches_torch(path: Path, backend: str) -> None:
    net = bpc.compile_file(path, backend=backend)
    if net.name not in TWINS:
        pytest.skip(f"no PyTorch twin written for {path.name} yet")
    for seed in (0, 1):
        p = net.init(seed=seed)
        compare(net, TWINS[net.name], p, example_data(net, 9, seed), f"{path.name}/{seed}")


# ---------------------------------------------------------------- built-ins in torch

# name: (.bp lines after z = x @ W + b, torch program of (z, t) giving (output y, loss))
BUILTINS: dict[str, tuple[str, Callable]] = {
    "gelu": ("y = gelu(z)\nloss sum(y * t)",
             lambda z, t: (y := F.gelu(z, approximate="tanh"), torch.sum(y * t))),
    "elu": ("y = elu(z)\nloss sum(y * t)", lambda z, t: (y := F.elu(z), torch.sum(y * t))),
    "elu_alpha": ("y = elu(z, alpha=0.4)\nloss sum(y * t)",
                  lambda z, t: (y := F.elu(z, alpha=0.4), torch.sum(y * t))),
    "leaky_relu": ("y = leaky_relu(z)\nloss sum(y * t)",
                   lambda z, t: (y := F.leaky_relu(z), torch.sum(y * t))),
    "leaky_relu_alpha": ("y = leaky_relu(z, alpha=0.2)\nloss sum(y * t)",
                         lambda z, t: (y := F.leaky_relu(z, 0.2), torch.sum(y * t))),
    "softplus": ("y = softplus(z)\nloss sum(y * t)",
                 lambda z, t: (y := F.softplus(z), torch.sum(y * t))),
    "sigmoid_tanh": ("y = sigmoid(z) * tanh(z)\nloss sum(y * t)",
                     lambda z, t: (y := torch.sigmoid(z) * torch.tanh(z), torch.sum(y * t))),
    "logsumexp": ("y = logsumexp(z, axis=1)\nloss sum(y * sum(t, axis=1))",
                  lambda z, t: (y := torch.logsumexp(z, dim=1), torch.sum(y * t.sum(dim=1)))),
    "logsumexp_all": ("y = logsumexp(z)\nloss y * 2",
                      lambda z, t: (y := torch.logsumexp(z, dim=(0, 1)), y * 2)),
    "log_softmax": ("y = log_softmax(z)\nloss sum(y * t)",
                    lambda z, t: (y := F.log_softmax(z, dim=-1), torch.sum(y * t))),
    "log_softmax_axis0": ("y = log_softmax(z, axis=0)\nloss sum(y * t)",
                          lambda z, t: (y := F.log_softmax(z, dim=0), torch.sum(y * t))),
    "softmax": ("y = softmax(z)\nloss sum(y * t)",
                lambda z, t: (y := F.softmax(z, dim=-1), torch.sum(y * t))),
    "max": ("y = max(z, axis=1)\nloss sum(y * sum(t, axis=1))",
            lambda z, t: (y := torch.max(z, dim=1).values, torch.sum(y * t.sum(dim=1)))),
    "cross_entropy_probs": ("y = z\nloss cross_entropy(z, tp)",
                            lambda z, t: (z, F.cross_entropy(z, _probs(t)))),
    "bce_with_logits": ("y = z\nloss bce_with_logits(z, tu)",
                        lambda z, t: (z, F.binary_cross_entropy_with_logits(z, _unit(t)))),
    "binary_cross_entropy": ("y = sigmoid(z)\nloss binary_cross_entropy(y, tu)",
                             lambda z, t: (y := torch.sigmoid(z),
                                           F.binary_cross_entropy(y, _unit(t)))),
    "mse": ("y = z\nloss mse(z, t)", lambda z, t: (z, F.mse_loss(z, t))),
}


def _probs(t: torch.Tensor) -> torch.Tensor:
    e = torch.exp(t)
    return e / e.sum(dim=-1, keepdim=True)


def _unit(t: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(t)


def builtin_net(name: str, backend: str) -> bpc.CompiledNet:
    body, _ = BUILTINS[name]
    # tp (probability rows) and tu (in (0, 1)) are made from t inside the program, as the
    # torch side does, so every program takes the same data.
    source = ("input x[N, 4]\ntarget t[N, 3]\nparam W[4, 3] = normal(1)\n"
              "param b[3] = uniform(-1, 1)\nz = x @ W + b\n"
              "tp = softmax(t)\ntu = sigmoid(t)\n" + body + "\noutput y\n")
    return bpc.compile(source, backend=backend, filename=f"{name}.bp")


@pytest.mark.parametrize("scale", [1.0, 3.0])
@pytest.mark.parametrize("name", list(BUILTINS))
def test_builtin_matches_torch(name: str, scale: float, backend: str) -> None:
    net = builtin_net(name, backend)
    program = BUILTINS[name][1]
    rng = np.random.default_rng(5)
    p = {"W": scale * rng.standard_normal((4, 3)), "b": rng.uniform(-1, 1, 3)}
    data = {"x": rng.standard_normal((7, 4)), "t": rng.standard_normal((7, 3))}

    def torch_program(tp: Tensors, td: Tensors) -> tuple:
        y, loss = program(td["x"] @ tp["W"] + tp["b"], td["t"])
        return {"y": y}, loss

    compare(net, torch_program, p, data, name)


STABLE = ["softplus", "logsumexp", "logsumexp_all", "log_softmax", "cross_entropy_probs",
          "bce_with_logits"]


@pytest.mark.parametrize("name", STABLE)
def test_stable_builtins_match_torch_at_large_logits(name: str, backend: str) -> None:
    """|z| near 1000: finite in both, and still equal."""
    net = builtin_net(name, backend)
    program = BUILTINS[name][1]
    rng = np.random.default_rng(6)
    p = {"W": 400 * rng.standard_normal((4, 3)), "b": rng.uniform(-1, 1, 3)}
    data = {"x": rng.standard_normal((7, 4)), "t": rng.standard_normal((7, 3))}

    def torch_program(tp: Tensors, td: Tensors) -> tuple:
        y, loss = program(td["x"] @ tp["W"] + tp["b"], td["t"])
        return {"y": y}, loss

    z = data["x"] @ p["W"] + p["b"]
    assert np.max(np.abs(z)) > 500
    value, grads = net.value_and_grad(p, **data)
    assert np.isfinite(value) and all(np.isfinite(g).all() for g in grads.values())
    compare(net, torch_program, p, data, f"{name} at large logits")


# ---------------------------------------------------------------- optimizers

NETWORK = """
input  x[N, 3]
target t[N, 2]
param W[3, 2] = normal(0.7)
param b[2]    = uniform(-0.3, 0.3)
param a[]     = 1.5
y = tanh(x @ W + b) * a
loss mse(y, t)
"""


def small(p: Tensors, d: Tensors) -> torch.Tensor:
    return F.mse_loss(torch.tanh(d["x"] @ p["W"] + p["b"]) * p["a"], d["t"])


# optimize statement: (torch optimizer factory, clip_grad_norm_'s max_norm or None)
OPTIMIZERS: dict[str, tuple[Callable, float | None]] = {
    "sgd(lr=0.1)": (lambda ps: torch.optim.SGD(ps, lr=0.1), None),
    "sgd(lr=0.05, momentum=0.9)": (lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9), None),
    "sgd(lr=0.05, momentum=0.8, nesterov=true)":
        (lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.8, nesterov=True), None),
    "sgd(lr=0.1, weight_decay=0.05)":
        (lambda ps: torch.optim.SGD(ps, lr=0.1, weight_decay=0.05), None),
    "sgd(lr=0.05, momentum=0.9, nesterov=true, weight_decay=0.01, clip_norm=0.2)":
        (lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, nesterov=True,
                                    weight_decay=0.01), 0.2),
    "adam()": (lambda ps: torch.optim.Adam(ps), None),
    "adam(lr=0.02, beta1=0.5, beta2=0.9, eps=1e-3)":
        (lambda ps: torch.optim.Adam(ps, lr=0.02, betas=(0.5, 0.9), eps=1e-3), None),
    "adam(lr=0.01, weight_decay=0.1)":
        (lambda ps: torch.optim.AdamW(ps, lr=0.01, weight_decay=0.1), None),
    "adam(lr=0.01, clip_norm=0.05)": (lambda ps: torch.optim.Adam(ps, lr=0.01), 0.05),
    "adam(lr=0.03, beta1=0.8, beta2=0.99, eps=1e-6, weight_decay=0.05, clip_norm=0.3)":
        (lambda ps: torch.optim.AdamW(ps, lr=0.03, betas=(0.8, 0.99), eps=1e-6,
                                      weight_decay=0.05), 0.3),
}
STATE_KEYS = {"momentum": "momentum_buffer", "m": "exp_avg", "v": "exp_avg_sq"}


@pytest.mark.parametrize("statement", list(OPTIMIZERS))
def test_optimizer_matches_torch(statement: str, backend: str) -> None:
    factory, max_norm = OPTIMIZERS[statement]
    net = bpc.compile(NETWORK + f"optimize {statement}\n", backend=backend)
    p = net.init(seed=3)
    s = net.init_state(p)
    tp = to_torch(p, grad=True)
    optimizer = factory(list(tp.values()))
    rng = np.random.default_rng(8)
    for k in range(5):
        data = {"x": rng.standard_normal((7, 3)), "t": rng.standard_normal((7, 2))}
        optimizer.zero_grad()
        loss = small(tp, to_torch(data))
        loss.backward()
        if max_norm is not None:
            torch.nn.utils.clip_grad_norm_(list(tp.values()), max_norm)
        optimizer.step()
        close(net.step(p, s, **data), loss, f"{statement} step {k}: loss")
        for name in p:
            close(p[name], tp[name], f"{statement} step {k}: {name}")
            state = optimizer.state[tp[name]]
            for key, value in s.items():
                owner, _, kind = key.rpartition(".")
                if owner == name:
                    close(value, state[STATE_KEYS[kind]], f"{statement} step {k}: {key}")
        if "step" in s:
            assert float(s["step"]) == float(optimizer.state[tp["W"]]["step"]) == k + 1
