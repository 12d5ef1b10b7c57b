"""The benchmark workloads, each as one full training step in five implementations: the
bpcompile LLVM and NumPy backends, a careful hand-written NumPy step, PyTorch eager (and,
through `torch_compiled`, the same step under torch.compile), and JAX `jit`. Every
implementation runs the same network, loss, optimizer, dtype and data.

    xor     2-3-1 sigmoid, squared error, sgd(lr=0.1)                   batch 4,   float64
    digits  64-64-64-10 relu, softmax cross-entropy, adam(lr=0.001)     batch 128, float32
    mlp     100-50-10 relu, MSE, sgd(lr=0.05, momentum=0.9)             batch 64,  float32
    wide    784-1024-1024-10 relu, softmax cross-entropy, sgd(lr=0.01)  batch 256, float32
    digits_full  digits' network with sgd(lr=0.1), the whole set    batch 1,797, float64
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent

WIDE_BP = """\
# wide.bp: a wide MLP, 784-1024-1024-10 relu with softmax cross-entropy
network wide
input  x[N, 784]
target t[N, 10]
h1 = dense(x, 1024, act=relu)
h2 = dense(h1, 1024, act=relu)
logits = dense(h2, 10)
output logits
loss cross_entropy(logits, t)
optimize sgd(lr=0.01)
"""


# digits.bp trained a step an epoch: all 1,797 rows of the digits set, float64, plain SGD
DIGITS_FULL_BP = (ROOT / "examples" / "digits.bp").read_text().replace(
    "network digits", "network digits_full").replace("adam(lr=0.001)", "sgd(lr=0.1)")
DIGITS_ROWS = 1797


@dataclass(frozen=True)
class Workload:
    name: str
    source: str           # .bp text
    dtype: str
    batch: int
    data: Callable[[np.random.Generator], dict[str, np.ndarray]]
    hand: Callable[[dict, dict], Callable[[], float]]        # (params, data) -> step()
    torch: Callable[[dict, dict, str], Callable[[], float]]
    jax: Callable[[dict, dict, str], Callable[[], float]]


def _one_hot(rng: np.random.Generator, rows: int, classes: int) -> np.ndarray:
    return np.eye(classes)[rng.integers(0, classes, rows)]


# ------------------------------------------------------------------ hand NumPy


def _hand_xor(p: dict, d: dict) -> Callable[[], float]:
    x, t = d["x"], d["t"]

    def step() -> float:
        W1, b1, W2, b2 = p["W1"], p["b1"], p["W2"], p["b2"]
        h = 1 / (1 + np.exp(-(x @ W1 + b1)))
        y = 1 / (1 + np.exp(-(h @ W2 + b2)))
        diff = y - t
        loss = 0.5 * np.sum(diff * diff)
        dz2 = diff * y * (1 - y)
        dz1 = (dz2 @ W2.T) * h * (1 - h)
        W2 -= 0.1 * (h.T @ dz2)
        b2 -= 0.1 * dz2.sum(axis=0)
        W1 -= 0.1 * (x.T @ dz1)
        b1 -= 0.1 * dz1.sum(axis=0)
        return float(loss)

    return step


def _softmax_xent_grad(logits: np.ndarray, t: np.ndarray) -> tuple[float, np.ndarray]:
    shifted = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    total = e.sum(axis=1, keepdims=True)
    loss = float(np.mean(np.log(total[:, 0]) - np.sum(t * shifted, axis=1)))
    return loss, (e / total - t) / len(logits)


def _hand_relu_xent(layers: int, update: Callable) -> Callable[[dict, dict], Callable]:
    """A relu MLP with softmax cross-entropy; `update(param, grad, name)` applies the step."""

    def make(p: dict, d: dict) -> Callable[[], float]:
        names = [("h1", "h2", "logits")[k] for k in range(layers)]
        x, t = d["x"], d["t"]

        def step() -> float:
            acts = [x]
            for name in names[:-1]:
                acts.append(np.maximum(acts[-1] @ p[f"{name}.W"] + p[f"{name}.b"], 0))
            logits = acts[-1] @ p[f"{names[-1]}.W"] + p[f"{names[-1]}.b"]
            loss, delta = _softmax_xent_grad(logits, t)
            grads = {}
            for k in range(layers - 1, -1, -1):
                name = names[k]
                grads[f"{name}.W"] = acts[k].T @ delta
                grads[f"{name}.b"] = delta.sum(axis=0)
                if k:
                    delta = (delta @ p[f"{name}.W"].T) * (acts[k] > 0)
            for name, g in grads.items():
                update(p[name], g, name)
            return loss

        return step

    return make


class HandAdam:
    """torch.optim.Adam, by hand, keeping its moments per param."""

    def __init__(self, lr: float = 1e-3, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8):
        self.lr, self.b1, self.b2, self.eps = lr, b1, b2, eps
        self.m: dict[str, np.ndarray] = {}
        self.v: dict[str, np.ndarray] = {}
        self.t: dict[str, int] = {}

    def __call__(self, param: np.ndarray, grad: np.ndarray, name: str) -> None:
        m = self.m.setdefault(name, np.zeros_like(param))
        v = self.v.setdefault(name, np.zeros_like(param))
        t = self.t[name] = self.t.get(name, 0) + 1
        m *= self.b1
        m += (1 - self.b1) * grad
        v *= self.b2
        v += (1 - self.b2) * grad * grad
        step_size = self.lr / (1 - self.b1 ** t)
        denom = np.sqrt(v) / np.sqrt(1 - self.b2 ** t) + self.eps
        param -= step_size * m / denom


def _hand_mlp(p: dict, d: dict) -> Callable[[], float]:
    x, t = d["x"], d["t"]
    buffers = {k: np.zeros_like(v) for k, v in p.items()}

    def step() -> float:
        W1, b1, W2, b2 = p["W1"], p["b1"], p["W2"], p["b2"]
        z = x @ W1 + b1
        h = np.maximum(z, 0)
        y = h @ W2 + b2
        diff = y - t
        loss = float(np.mean(diff * diff))
        dy = diff * (2.0 / diff.size)
        grads = {"W2": h.T @ dy, "b2": dy.sum(axis=0)}
        dz = (dy @ W2.T) * (z > 0)
        grads["W1"] = x.T @ dz
        grads["b1"] = dz.sum(axis=0)
        for name, g in grads.items():
            buf = buffers[name]
            buf *= 0.9
            buf += g
            p[name] -= 0.05 * buf
        return loss

    return step


def _sgd(lr: float) -> Callable[[np.ndarray, np.ndarray, str], None]:
    def update(param: np.ndarray, grad: np.ndarray, name: str) -> None:
        param -= lr * grad
    return update


# -------------------------------------------------------------------- PyTorch


def _torch_step(kind: str, compiled: bool = False) -> Callable[[dict, dict, str], Callable]:
    """PyTorch eager, or with `compiled` the same step under torch.compile: the forward (and
    with it, through AOTAutograd, the backward) and the optimizer update are compiled."""

    def make(p: dict, d: dict, dtype: str) -> Callable[[], float]:
        import torch

        params = {k: torch.tensor(v, requires_grad=True) for k, v in p.items()}
        data = {k: torch.tensor(v) for k, v in d.items()}
        forward, optimizer = TORCH[kind](params, data, torch)
        update = optimizer.step
        if compiled:
            forward = torch.compile(forward)
            update = torch.compile(optimizer.step)

        def step() -> float:
            optimizer.zero_grad(set_to_none=True)
            loss = forward()
            loss.backward()
            update()
            return loss.item()

        return step
    return make


def torch_compiled(name: str) -> Callable[[dict, dict, str], Callable[[], float]]:
    """The torch.compile step of the workload called `name`: (params, data, dtype) -> step()."""
    return _torch_step(name, compiled=True)


def _torch_xor(p, d, torch):
    def forward():
        h = torch.sigmoid(d["x"] @ p["W1"] + p["b1"])
        y = torch.sigmoid(h @ p["W2"] + p["b2"])
        return 0.5 * torch.sum((y - d["t"]) ** 2)
    return forward, torch.optim.SGD(p.values(), lr=0.1)


def _torch_relu_xent(names):
    def build(p, d, torch):
        import torch.nn.functional as F

        def forward():
            h = d["x"]
            for name in names[:-1]:
                h = torch.relu(h @ p[f"{name}.W"] + p[f"{name}.b"])
            logits = h @ p[f"{names[-1]}.W"] + p[f"{names[-1]}.b"]
            return F.cross_entropy(logits, d["t"])
        return forward
    return build


def _torch_mlp(p, d, torch):
    def forward():
        h = torch.relu(d["x"] @ p["W1"] + p["b1"])
        return torch.mean((h @ p["W2"] + p["b2"] - d["t"]) ** 2)
    return forward, torch.optim.SGD(p.values(), lr=0.05, momentum=0.9)


def _with_optimizer(build, make_optimizer):
    def full(p, d, torch):
        return build(p, d, torch), make_optimizer(p, torch)
    return full


TORCH = {
    "xor": _torch_xor,
    "digits": _with_optimizer(_torch_relu_xent(("h1", "h2", "logits")),
                              lambda p, torch: torch.optim.Adam(p.values(), lr=1e-3)),
    "mlp": _torch_mlp,
    "wide": _with_optimizer(_torch_relu_xent(("h1", "h2", "logits")),
                            lambda p, torch: torch.optim.SGD(p.values(), lr=0.01)),
    "digits_full": _with_optimizer(_torch_relu_xent(("h1", "h2", "logits")),
                                   lambda p, torch: torch.optim.SGD(p.values(), lr=0.1)),
}


# ------------------------------------------------------------------------ JAX


def _jax_step(kind: str):
    def make(p: dict, d: dict, dtype: str) -> Callable[[], float]:
        import jax
        import jax.numpy as jnp

        if dtype == "float64":
            jax.config.update("jax_enable_x64", True)
        loss_fn, update = JAX[kind](jax, jnp)
        state = {"p": {k: jnp.asarray(v) for k, v in p.items()}}
        state["opt"] = update.init(state["p"])
        data = {k: jnp.asarray(v) for k, v in d.items()}

        @jax.jit
        def train(params, opt, data):
            loss, grads = jax.value_and_grad(loss_fn)(params, data)
            params, opt = update(params, grads, opt)
            return loss, params, opt

        def step() -> float:
            loss, state["p"], state["opt"] = train(state["p"], state["opt"], data)
            return float(loss)

        return step
    return make


class JaxSGD:
    def __init__(self, jax, lr: float, momentum: float = 0.0):
        self.jax, self.lr, self.momentum = jax, lr, momentum

    def init(self, params):
        return self.jax.tree_util.tree_map(lambda v: v * 0, params)

    def __call__(self, params, grads, buffers):
        tree = self.jax.tree_util.tree_map
        if self.momentum:
            buffers = tree(lambda b, g: self.momentum * b + g, buffers, grads)
            return tree(lambda p, b: p - self.lr * b, params, buffers), buffers
        return tree(lambda p, g: p - self.lr * g, params, grads), buffers


class JaxAdam:
    def __init__(self, jax, jnp, lr: float = 1e-3, b1: float = 0.9, b2: float = 0.999,
                 eps: float = 1e-8):
        self.jax, self.jnp = jax, jnp
        self.lr, self.b1, self.b2, self.eps = lr, b1, b2, eps

    def init(self, params):
        zeros = self.jax.tree_util.tree_map(lambda v: v * 0, params)
        return {"m": zeros, "v": zeros, "t": 0}

    def __call__(self, params, grads, opt):
        tree, jnp = self.jax.tree_util.tree_map, self.jnp
        t = opt["t"] + 1
        m = tree(lambda m, g: self.b1 * m + (1 - self.b1) * g, opt["m"], grads)
        v = tree(lambda v, g: self.b2 * v + (1 - self.b2) * g * g, opt["v"], grads)
        size = self.lr / (1 - self.b1 ** t)
        corr = jnp.sqrt(1 - self.b2 ** t)
        params = tree(lambda p, m, v: p - size * m / (jnp.sqrt(v) / corr + self.eps),
                      params, m, v)
        return params, {"m": m, "v": v, "t": t}


def _jax_xor(jax, jnp):
    def loss(p, d):
        h = jax.nn.sigmoid(d["x"] @ p["W1"] + p["b1"])
        y = jax.nn.sigmoid(h @ p["W2"] + p["b2"])
        return 0.5 * jnp.sum((y - d["t"]) ** 2)
    return loss, JaxSGD(jax, 0.1)


def _jax_relu_xent(names):
    def loss_fn(jax, jnp):
        def loss(p, d):
            h = d["x"]
            for name in names[:-1]:
                h = jax.nn.relu(h @ p[f"{name}.W"] + p[f"{name}.b"])
            logits = h @ p[f"{names[-1]}.W"] + p[f"{names[-1]}.b"]
            return -jnp.mean(jnp.sum(d["t"] * jax.nn.log_softmax(logits, axis=-1), axis=-1))
        return loss
    return loss_fn


def _jax_mlp(jax, jnp):
    def loss(p, d):
        h = jax.nn.relu(d["x"] @ p["W1"] + p["b1"])
        return jnp.mean((h @ p["W2"] + p["b2"] - d["t"]) ** 2)
    return loss, JaxSGD(jax, 0.05, 0.9)


JAX = {
    "xor": _jax_xor,
    "digits": lambda jax, jnp: (_jax_relu_xent(("h1", "h2", "logits"))(jax, jnp),
                                JaxAdam(jax, jnp)),
    "mlp": _jax_mlp,
    "wide": lambda jax, jnp: (_jax_relu_xent(("h1", "h2", "logits"))(jax, jnp),
                              JaxSGD(jax, 0.01)),
    "digits_full": lambda jax, jnp: (_jax_relu_xent(("h1", "h2", "logits"))(jax, jnp),
                                     JaxSGD(jax, 0.1)),
}


# ------------------------------------------------------------------ workloads

def _source(name: str) -> str:
    return (ROOT / "examples" / f"{name}.bp").read_text()


WORKLOADS = [
    Workload(
        "xor", _source("xor"), "float64", 4,
        lambda rng: {"x": np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=float),
                     "t": np.array([[0], [1], [1], [0]], dtype=float)},
        _hand_xor, _torch_step("xor"), _jax_step("xor"),
    ),
    Workload(
        "digits", _source("digits"), "float32", 128,
        lambda rng: {"x": rng.uniform(0, 1, (128, 64)), "t": _one_hot(rng, 128, 10)},
        _hand_relu_xent(3, HandAdam()), _torch_step("digits"), _jax_step("digits"),
    ),
    Workload(
        "mlp", _source("mlp"), "float32", 64,
        lambda rng: {"x": rng.standard_normal((64, 100)), "t": rng.standard_normal((64, 10))},
        _hand_mlp, _torch_step("mlp"), _jax_step("mlp"),
    ),
    Workload(
        "wide", WIDE_BP, "float32", 256,
        lambda rng: {"x": rng.uniform(0, 1, (256, 784)), "t": _one_hot(rng, 256, 10)},
        _hand_relu_xent(3, _sgd(0.01)), _torch_step("wide"), _jax_step("wide"),
    ),
    Workload(
        "digits_full", DIGITS_FULL_BP, "float64", DIGITS_ROWS,
        lambda rng: {"x": rng.uniform(0, 1, (DIGITS_ROWS, 64)),
                     "t": _one_hot(rng, DIGITS_ROWS, 10)},
        _hand_relu_xent(3, _sgd(0.1)), _torch_step("digits_full"), _jax_step("digits_full"),
    ),
]

import lenet_workload  # noqa: E402,F401  (adds the lenet workload to WORKLOADS, TORCH, JAX)
import scaling_workloads  # noqa: E402,F401  (adds the scale_* workloads, the same way)
