"""Optimizer steps against PyTorch's documented algorithms, written out here in NumPy.

Oracle: the update rules of `torch.optim.SGD` (momentum buffer that starts as the first
gradient, nesterov, L2 weight decay added to the gradient), `torch.optim.Adam` (bias
corrections), `torch.optim.AdamW` (decoupled decay, which `adam(weight_decay=...)` means) and
`torch.nn.utils.clip_grad_norm_` (coef = max_norm / (total_norm + 1e-6), clamped to 1, applied
before the optimizer). The reference is fed the gradients that `value_and_grad` gives at the
reference's own params, so one wrong update shows in every later step.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import bpcompile as bpc

STEPS = 5
RTOL = 1e-12
ATOL = 1e-14

# A network with a matrix, a vector and a scalar param, whose loss depends on all three.
NETWORK = """
network small
input  x[N, 3]
target t[N, 2]
param W[3, 2] = normal(0.7)
param b[2]    = uniform(-0.3, 0.3)
param a[]     = 1.5
y = tanh(x @ W + b) * a
output y
loss mse(y, t)
"""


def make_net(optimizer: str | None, backend: str = "numpy",
             dtype: str = "float64") -> bpc.CompiledNet:
    text = NETWORK + (f"optimize {optimizer}\n" if optimizer else "")
    return bpc.compile(text, backend=backend, dtype=dtype, filename="small.bp")


def make_data(rng: np.random.Generator, n: int = 7) -> dict[str, np.ndarray]:
    return {"x": rng.standard_normal((n, 3)), "t": rng.standard_normal((n, 2))}


def copy(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: np.array(v, copy=True) for k, v in arrays.items()}


# ---------------------------------------------------------------- reference optimizers


def clip_grad_norm(grads: dict[str, np.ndarray], max_norm: float) -> dict[str, np.ndarray]:
    """torch.nn.utils.clip_grad_norm_ with the 2-norm over all gradients together."""
    total = math.sqrt(sum(float(np.sum(g * g)) for g in grads.values()))
    coef = min(max_norm / (total + 1e-6), 1.0)
    return {k: g * coef for k, g in grads.items()}


class RefSGD:
    """torch.optim.SGD(lr, momentum, dampening=0, weight_decay, nesterov)."""

    def __init__(self, lr: float, momentum: float = 0.0, nesterov: bool = False,
                 weight_decay: float = 0.0, clip_norm: float = 0.0):
        self.lr, self.momentum, self.nesterov = lr, momentum, nesterov
        self.weight_decay, self.clip_norm = weight_decay, clip_norm
        self.buf: dict[str, np.ndarray] = {}

    def state(self) -> dict[str, np.ndarray]:
        return {f"{k}.momentum": v for k, v in self.buf.items()}

    def step(self, p: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        if self.clip_norm:
            grads = clip_grad_norm(grads, self.clip_norm)
        for name, g in grads.items():
            d_p = g
            if self.weight_decay:
                d_p = d_p + self.weight_decay * p[name]
            if self.momentum:
                if name not in self.buf:
                    self.buf[name] = d_p.copy()  # torch: the first buffer is a clone
                else:
                    self.buf[name] = self.momentum * self.buf[name] + d_p
                d_p = d_p + self.momentum * self.buf[name] if self.nesterov else self.buf[name]
            p[name] = p[name] - self.lr * d_p


class RefAdam:
    """torch.optim.Adam, or torch.optim.AdamW when weight_decay > 0 (bpcompile's meaning)."""

    def __init__(self, lr: float = 0.001, beta1: float = 0.9, beta2: float = 0.999,
                 eps: float = 1e-8, weight_decay: float = 0.0, clip_norm: float = 0.0):
        self.lr, self.beta1, self.beta2, self.eps = lr, beta1, beta2, eps
        self.weight_decay, self.clip_norm = weight_decay, clip_norm
        self.t = 0
        self.m: dict[str, np.ndarray] = {}
        self.v: dict[str, np.ndarray] = {}

    def state(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {"step": np.array(float(self.t))}
        for k in self.m:
            out[f"{k}.m"], out[f"{k}.v"] = self.m[k], self.v[k]
        return out

    def step(self, p: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        if self.clip_norm:
            grads = clip_grad_norm(grads, self.clip_norm)
        self.t += 1
        bias1 = 1 - self.beta1 ** self.t
        bias2 = 1 - self.beta2 ** self.t
        step_size = self.lr / bias1
        for name, g in grads.items():
            param = p[name]
            if self.weight_decay:
                param = param * (1 - self.lr * self.weight_decay)  # AdamW: decoupled
            m = self.m.get(name, np.zeros_like(g))
            v = self.v.get(name, np.zeros_like(g))
            self.m[name] = self.beta1 * m + (1 - self.beta1) * g
            self.v[name] = self.beta2 * v + (1 - self.beta2) * g * g
            denom = np.sqrt(self.v[name]) / math.sqrt(bias2) + self.eps
            p[name] = param - step_size * self.m[name] / denom


# (optimize statement, reference factory)
CASES: dict[str, tuple[str, object]] = {
    "sgd": ("sgd(lr=0.1)", lambda: RefSGD(0.1)),
    "sgd_momentum": ("sgd(lr=0.05, momentum=0.9)", lambda: RefSGD(0.05, momentum=0.9)),
    "sgd_nesterov": ("sgd(lr=0.05, momentum=0.8, nesterov=true)",
                     lambda: RefSGD(0.05, momentum=0.8, nesterov=True)),
    "sgd_weight_decay": ("sgd(lr=0.1, weight_decay=0.03)",
                         lambda: RefSGD(0.1, weight_decay=0.03)),
    "sgd_momentum_weight_decay": ("sgd(lr=0.05, momentum=0.7, weight_decay=0.1)",
                                  lambda: RefSGD(0.05, momentum=0.7, weight_decay=0.1)),
    "sgd_everything": (
        "sgd(lr=0.05, momentum=0.9, nesterov=true, weight_decay=0.01, clip_norm=0.2)",
        lambda: RefSGD(0.05, momentum=0.9, nesterov=True, weight_decay=0.01, clip_norm=0.2),
    ),
    "sgd_clip": ("sgd(lr=0.1, clip_norm=0.1)", lambda: RefSGD(0.1, clip_norm=0.1)),
    "sgd_clip_inactive": ("sgd(lr=0.1, clip_norm=1000)", lambda: RefSGD(0.1, clip_norm=1000.0)),
    "adam_defaults": ("adam()", lambda: RefAdam()),
    "adam_lr": ("adam(lr=0.05)", lambda: RefAdam(0.05)),
    "adam_custom": ("adam(lr=0.02, beta1=0.5, beta2=0.9, eps=1e-3)",
                    lambda: RefAdam(0.02, beta1=0.5, beta2=0.9, eps=1e-3)),
    "adamw": ("adam(lr=0.01, weight_decay=0.1)", lambda: RefAdam(0.01, weight_decay=0.1)),
    "adam_clip": ("adam(lr=0.01, clip_norm=0.05)", lambda: RefAdam(0.01, clip_norm=0.05)),
    "adamw_clip_custom": (
        "adam(lr=0.03, beta1=0.8, beta2=0.99, eps=1e-6, weight_decay=0.05, clip_norm=0.3)",
        lambda: RefAdam(0.03, beta1=0.8, beta2=0.99, eps=1e-6, weight_decay=0.05,
                        clip_norm=0.3),
    ),
}


def assert_close(actual: dict, expected: dict, what: str, rtol: float = RTOL,
                 atol: float = ATOL) -> None:
    assert set(actual) == set(expected), what
    for name in expected:
        np.testing.assert_allclose(np.asarray(actual[name]), expected[name], rtol=rtol,
                                   atol=atol, err_msg=f"{what}: {name}")


@pytest.mark.parametrize("case", list(CASES))
def test_steps_match_reference(case: str, backend: str, rng: np.random.Generator) -> None:
    statement, factory = CASES[case]
    net = make_net(statement, backend)
    ref = factory()
    p = net.init(seed=3)
    s = net.init_state(p)
    p_ref = copy(p)
    for _ in range(STEPS):
        data = make_data(rng)
        expected_loss, grads = net.value_and_grad(p_ref, **data)
        loss = net.step(p, s, **data)
        assert loss == pytest.approx(expected_loss, rel=RTOL, abs=ATOL)
        ref.step(p_ref, grads)
        assert_close(p, p_ref, f"{case} params")
        assert_close(s, ref.state(), f"{case} state")
        for name, value in p.items():
            assert value.dtype == np.float64 and value.flags.c_contiguous, name


def test_clip_is_active_in_the_clip_cases(rng: np.random.Generator) -> None:
    """The clip cases above would prove little if clipping never changed the gradients."""
    net = make_net(None)
    p = net.init(seed=3)
    _, grads = net.value_and_grad(p, **make_data(rng))
    total = math.sqrt(sum(float(np.sum(g * g)) for g in grads.values()))
    assert 0.3 < total < 1000


def test_clip_uses_the_global_norm(rng: np.random.Generator) -> None:
    """One coefficient for all params (not one per param): the update is lr * coef * g."""
    net = make_net("sgd(lr=1, clip_norm=0.01)")
    p = net.init(seed=5)
    data = make_data(rng)
    _, grads = net.value_and_grad(p, **data)
    before = copy(p)
    net.step(p, net.init_state(p), **data)
    total = math.sqrt(sum(float(np.sum(g * g)) for g in grads.values()))
    coef = 0.01 / (total + 1e-6)
    assert coef < 1
    for name in p:
        np.testing.assert_allclose(before[name] - p[name], coef * grads[name],
                                   rtol=1e-12, atol=1e-16)
    # and the clipped update has the clipped norm
    moved = math.sqrt(sum(float(np.sum((before[n] - p[n]) ** 2)) for n in p))
    assert moved == pytest.approx(0.01 * total / (total + 1e-6), rel=1e-10)


def test_momentum_buffer_starts_as_first_gradient(rng: np.random.Generator) -> None:
    net = make_net("sgd(lr=0.1, momentum=0.9)")
    p = net.init(seed=1)
    data = make_data(rng)
    _, grads = net.value_and_grad(p, **data)
    s = net.init_state(p)
    net.step(p, s, **data)
    for name, g in grads.items():
        np.testing.assert_array_equal(s[f"{name}.momentum"], g)


def test_step_returns_loss_before_update(backend: str, rng: np.random.Generator) -> None:
    for statement in ("sgd(lr=0.5)", "adam(lr=0.1)"):
        net = make_net(statement, backend)
        p = net.init(seed=2)
        s = net.init_state(p)
        data = make_data(rng)
        for _ in range(3):
            before = net.loss(copy(p), **data)
            returned = net.step(p, s, **data)
            after = net.loss(p, **data)
            assert isinstance(returned, float)
            assert returned == before
            assert after != before


def test_default_optimizer_is_sgd_lr_001(backend: str, rng: np.random.Generator) -> None:
    net = make_net(None, backend)
    p = net.init(seed=4)
    s = net.init_state(p)
    assert s == {}
    ref = RefSGD(0.01)
    p_ref = copy(p)
    for _ in range(STEPS):
        data = make_data(rng)
        _, grads = net.value_and_grad(p_ref, **data)
        net.step(p, s, **data)
        ref.step(p_ref, grads)
    assert_close(p, p_ref, "default sgd")
    assert s == {}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_init_state_keys_and_zeros(dtype: str) -> None:
    shapes = {"W": (3, 2), "b": (2,), "a": ()}
    expected = {
        "sgd(lr=0.1)": {},
        "sgd(lr=0.1, weight_decay=0.1, clip_norm=1)": {},
        "sgd(lr=0.1, momentum=0.9)": {f"{n}.momentum": s for n, s in shapes.items()},
        "sgd(lr=0.1, momentum=0.9, nesterov=true)":
            {f"{n}.momentum": s for n, s in shapes.items()},
        "adam()": {"step": (), **{f"{n}.{k}": s for n, s in shapes.items() for k in "mv"}},
        "adam(weight_decay=0.1)":
            {"step": (), **{f"{n}.{k}": s for n, s in shapes.items() for k in "mv"}},
    }
    for statement, keys in expected.items():
        net = make_net(statement, dtype=dtype)
        p = net.init(seed=0)
        s = net.init_state(p)
        assert {k: v.shape for k, v in s.items()} == keys, statement
        assert net.state == keys, statement
        for name, value in s.items():
            assert isinstance(value, np.ndarray)
            assert value.dtype == np.dtype(dtype), (statement, name)
            assert value.flags.c_contiguous and value.flags.writeable
            assert not np.any(value), (statement, name)
            for param in p.values():
                assert not np.shares_memory(value, param)


def test_init_state_names_layer_sugar_params() -> None:
    net = bpc.compile("input x[N, 4]\ntarget t[N, 2]\nh1 = dense(x, 3, act=relu)\n"
                      "y = dense(h1, 2)\nloss mse(y, t)\noptimize adam()\n")
    s = net.init_state(net.init())
    assert set(s) == {"step", "h1.W.m", "h1.W.v", "h1.b.m", "h1.b.v",
                      "y.W.m", "y.W.v", "y.b.m", "y.b.v"}
    assert s["h1.W.m"].shape == (4, 3) and s["y.b.v"].shape == (2,)


def test_adam_step_counts(rng: np.random.Generator) -> None:
    net = make_net("adam()")
    p = net.init(seed=0)
    s = net.init_state(p)
    for k in range(1, 4):
        net.step(p, s, **make_data(rng))
        assert s["step"].shape == () and float(s["step"]) == k


def test_float32_steps_follow_reference(rng: np.random.Generator) -> None:
    """A float32 net updates as the float64 reference does, to float32 accuracy."""
    for statement, factory in (CASES["sgd_everything"], CASES["adamw_clip_custom"]):
        net = make_net(statement, dtype="float32")
        net64 = make_net(statement)
        ref = factory()
        p = net.init(seed=3)
        s = net.init_state(p)
        p_ref = {k: v.astype(np.float64) for k, v in p.items()}
        for _ in range(STEPS):
            data = make_data(rng)
            _, grads = net64.value_and_grad(p_ref, **data)
            net.step(p, s, **data)
            ref.step(p_ref, grads)
        for name in p:
            assert p[name].dtype == np.float32
        assert_close(p, p_ref, statement, rtol=2e-5, atol=2e-6)
