"""The softmax family along the last axis (backends/llvm/rows.py) against NumPy, over row
lengths that take each of its paths on any vector width: rows of one vector, of two, of
three or four (the four-vector code, the last vector masked off), and longer rows walked a
vector at a time; and row counts that leave the last group of interleaved rows part empty.
Also the gradients of each, which read the same kernels, against the NumPy backend."""

from __future__ import annotations

import numpy as np
import pytest

import bpcompile as bpc

LENGTHS = (1, 3, 8, 10, 16, 17, 24, 30, 33, 64, 65, 100)
ROWS = (1, 3, 5, 7)
TOLERANCE = {"float32": 2e-6, "float64": 1e-14}

NETWORK = """\
network rows
input x[N, {c}]
target t[N, {c}]
s = softmax(x)
l = log_softmax(x)
e = logsumexp(x, axis=-1)
output s, l, e
loss cross_entropy(x, t)
optimize sgd(lr=0.1)
"""


def reference(x: np.ndarray, t: np.ndarray) -> dict[str, np.ndarray]:
    """The four in float64 NumPy."""
    x, t = x.astype(np.float64), t.astype(np.float64)
    top = x.max(axis=-1, keepdims=True)
    lse = top + np.log(np.exp(x - top).sum(axis=-1, keepdims=True))
    return {"s": np.exp(x - lse), "l": x - lse, "e": lse[:, 0],
            "loss": np.mean(-np.sum(t * (x - lse), axis=-1))}


def logits(rng: np.random.Generator, rows: int, length: int, dtype: str) -> np.ndarray:
    """Logits over a wide range: some lanes' exps underflow to 0 next to a row's max."""
    x = rng.normal(scale=3.0, size=(rows, length))
    x[:, ::7] -= 800.0 if dtype == "float64" else 100.0
    return x.astype(dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("length", LENGTHS)
def test_each_row_length_takes_a_path_that_agrees_with_numpy(dtype: str, length: int) -> None:
    net = bpc.compile(NETWORK.format(c=length), backend="llvm", dtype=dtype)
    rng = np.random.default_rng(length)
    for rows in ROWS:
        x = logits(rng, rows, length, dtype)
        t = rng.dirichlet(np.ones(length), size=rows).astype(dtype)
        want = reference(x, t)
        got = net.forward({}, x=x)
        scale = TOLERANCE[dtype]
        for name in ("s", "l", "e"):
            np.testing.assert_allclose(got[name], want[name], rtol=scale * 8,
                                       atol=scale * max(1.0, np.abs(want[name]).max()),
                                       err_msg=f"{name}, {rows} rows of {length}")
        loss = net.loss({}, x=x, t=t)
        assert abs(loss - want["loss"]) <= scale * 8 * max(1.0, abs(want["loss"])), \
            (rows, length, loss, want["loss"])


@pytest.mark.parametrize("length", (10, 30, 65))
def test_a_row_of_minus_infinity_and_the_gradients(length: int) -> None:
    """The gradient of a loss through each kernel equals the NumPy backend's; and a row
    that is all -inf but one entry gives that entry all the probability."""
    source = f"""\
network rows
input x[N, {length}]
target t[N, {length}]
param W[{length}, {length}]
z = x @ W
s = softmax(z)
output s
loss cross_entropy(z, t) + mean(s * t) - mean(log_softmax(z) * t) + mean(logsumexp(z, axis=-1))
optimize sgd(lr=0.1)
"""
    rng = np.random.default_rng(1)
    ours = bpc.compile(source, backend="llvm", dtype="float64")
    theirs = bpc.compile(source, backend="numpy", dtype="float64")
    params = ours.init(seed=3)
    x = rng.normal(size=(5, length))
    t = rng.dirichlet(np.ones(length), size=5)
    loss, grads = ours.value_and_grad(params, x=x, t=t)
    want_loss, want_grads = theirs.value_and_grad(params, x=x, t=t)
    assert abs(loss - want_loss) <= 1e-12 * max(1.0, abs(want_loss))
    np.testing.assert_allclose(grads["W"], want_grads["W"], rtol=1e-10, atol=1e-13)

    lone = np.full((3, length), -np.inf)
    lone[np.arange(3), [0, length // 2, length - 1]] = 0.0
    direct = bpc.compile(f"network lone\ninput z[N, {length}]\ns = softmax(z)\noutput s\n",
                         backend="llvm", dtype="float64")
    np.testing.assert_array_equal(direct.forward({}, z=lone)["s"],
                                  np.where(lone == 0.0, 1.0, 0.0))
