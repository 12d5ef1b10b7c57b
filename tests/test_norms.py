"""normalize() and the layernorm layer (SPEC "Training and inference modes"), on both
backends. Oracles: the formula in NumPy, torch.nn.LayerNorm (optional), central
differences, and the other backend."""

from __future__ import annotations

import numpy as np
import pytest

import bpcompile as bpc
from bpcompile import BPError

BACKENDS = ["numpy", "llvm"]

NORMALIZE = """
param x[4, 3, 5]
a = normalize(x)
b = normalize(x, axis=[1, 2], eps=0.01)
c = normalize(x, axis=None, eps=0)
output a, b, c
loss sum(a * a * a) + sum(sin(b)) + sum(c * c * c)
"""


def _normalize(x: np.ndarray, axis: object, eps: float) -> np.ndarray:
    mean = x.mean(axis=axis, keepdims=True)
    return (x - mean) / np.sqrt(x.var(axis=axis, keepdims=True) + eps)


@pytest.mark.parametrize("backend", BACKENDS)
def test_normalize_is_the_formula(backend: str) -> None:
    x = np.random.default_rng(0).standard_normal((4, 3, 5)) * 3 + 1
    out = bpc.compile(NORMALIZE, backend=backend).forward({"x": x})
    np.testing.assert_allclose(out["a"], _normalize(x, -1, 1e-5), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(out["b"], _normalize(x, (1, 2), 0.01), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(out["c"], _normalize(x, None, 0.0), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_normalize_gradient_matches_central_differences(backend: str) -> None:
    net = bpc.compile(NORMALIZE, backend=backend)
    x = np.random.default_rng(1).standard_normal((4, 3, 5))
    report = bpc.gradcheck(net, {"x": x}, max_entries=60)
    assert report.ok, report


LAYERNORM = """
param x[6, 2, 7]
h = layernorm(x)
k = layernorm(h * h, eps=0.001)
output k
loss sum(tanh(k) * k)
"""


def _params(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {"x": rng.standard_normal((6, 2, 7)) * 2, "h.gamma": rng.uniform(0.5, 1.5, 7),
            "h.beta": rng.standard_normal(7), "k.gamma": rng.uniform(0.5, 1.5, 7),
            "k.beta": rng.standard_normal(7)}


def test_layernorm_declares_gamma_ones_and_beta_zeros() -> None:
    net = bpc.compile(LAYERNORM)
    assert net.params == {"x": (6, 2, 7), "h.gamma": (7,), "h.beta": (7,), "k.gamma": (7,),
                          "k.beta": (7,)}
    p = net.init(seed=0)
    assert (p["h.gamma"] == 1).all() and (p["h.beta"] == 0).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_layernorm_equals_pytorch(backend: str) -> None:
    torch = pytest.importorskip("torch")
    p = _params(2)
    net = bpc.compile(LAYERNORM, backend=backend)
    loss, grads = net.value_and_grad(p)
    t = {name: torch.tensor(value, requires_grad=True) for name, value in p.items()}
    h = torch.nn.functional.layer_norm(t["x"], (7,), t["h.gamma"], t["h.beta"], eps=1e-5)
    k = torch.nn.functional.layer_norm(h * h, (7,), t["k.gamma"], t["k.beta"], eps=1e-3)
    want = (torch.tanh(k) * k).sum()
    want.backward()
    assert loss == pytest.approx(want.item(), rel=1e-12)
    np.testing.assert_allclose(net.forward(p)["k"], k.detach().numpy(), rtol=1e-12,
                               atol=1e-12)
    for name in p:
        np.testing.assert_allclose(grads[name], t[name].grad.numpy(), rtol=1e-10,
                                   atol=1e-12, err_msg=name)


@pytest.mark.parametrize("backend", BACKENDS)
def test_layernorm_gradient_matches_central_differences(backend: str) -> None:
    report = bpc.gradcheck(bpc.compile(LAYERNORM, backend=backend), _params(3),
                           max_entries=60)
    assert report.ok, report


def test_layernorm_backends_agree_in_float32() -> None:
    p = {k: v.astype(np.float32) for k, v in _params(4).items()}
    results = [bpc.compile(LAYERNORM, backend=b, dtype="float32").value_and_grad(p)
               for b in BACKENDS]
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-4)
    for name in p:
        np.testing.assert_allclose(results[0][1][name], results[1][1][name], rtol=1e-3,
                                   atol=1e-4, err_msg=name)


@pytest.mark.parametrize("source, message", [
    ("input x[N, 3]\ny = normalize(x, eps=-1)\noutput y\n",
     "normalize()'s eps must be 0 or more"),
    ("input x[N, 3]\ny = normalize(x, axis=2)\noutput y\n", "axis"),
    ("input x[3, N]\nh = layernorm(x)\noutput h\n",
     "layernorm() needs a fixed size along the last axis, but x is [3, N]"),
    ("input x[N, 3]\ny = layernorm(x) + 1\noutput y\n", "layernorm(...) must be the whole"),
])
def test_bad_norms_are_located(source: str, message: str) -> None:
    with pytest.raises(BPError, match=message.replace("(", r"\(").replace(")", r"\)")
                       .replace("[", r"\[").replace("]", r"\]")) as caught:
        bpc.compile(source)
    assert ":2:" in str(caught.value)
