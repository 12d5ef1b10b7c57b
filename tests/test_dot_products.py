"""C = A @ B.T as dot products along k (backends/llvm/dot.py), the loop nest's product with
a weight read transposed (`d @ W.T`) where k spans enough vectors, against NumPy: row and
column counts that leave the last block part empty, k with and without a masked last
vector, both dtypes; and the backward pass of a layer, where the product appears, against
the NumPy backend."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import calls_dot_products

import bpcompile as bpc
from bpcompile.backends.llvm import dot

# k: whole vectors only, and with a masked last vector, for 16- and 8-lane vectors and
# narrower; m and n: one block and a part, several blocks and a part
SHAPES = [(1, 256, 784), (3, 130, 5), (7, 200, 9), (9, 257, 3), (130, 128, 33)]
TOLERANCE = {"float32": 1e-5, "float64": 1e-13}



@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("m, k, n", SHAPES)
def test_products_with_a_transposed_weight_agree_with_numpy(dtype: str, m: int, k: int,
                                                             n: int) -> None:
    assert k >= dot.MIN_VECTORS * 8  # long enough for dot products on 16- or 8-lane vectors
    source = f"network t\ninput d[N, {k}]\nparam W[{n}, {k}]\ny = d @ W.T\noutput y\n"
    net = bpc.compile(source, backend="llvm", dtype=dtype)
    assert calls_dot_products(net)
    rng = np.random.default_rng(m * k + n)
    params = {"W": rng.normal(size=(n, k)).astype(dtype)}
    d = rng.normal(size=(m, k)).astype(dtype)
    want = d.astype(np.float64) @ params["W"].astype(np.float64).T
    got = net.forward(params, d=d)["y"]
    np.testing.assert_allclose(got, want, rtol=0, atol=TOLERANCE[dtype] * np.sqrt(k))


def test_the_backward_pass_through_a_wide_layer_agrees_with_numpy() -> None:
    """d_h = d_y @ W2.T in the backward pass of a 2-layer network with k = 160 > MIN."""
    source = """\
network wide
input x[N, 48]
target t[N, 160]
h = dense(x, 96, act=tanh)
y = dense(h, 160)
loss mse(y, t)
optimize sgd(lr=0.1)
"""
    rng = np.random.default_rng(5)
    ours = bpc.compile(source, backend="llvm")
    assert calls_dot_products(ours)
    theirs = bpc.compile(source, backend="numpy")
    params = ours.init(seed=1)
    for rows in (1, 6):
        data = {"x": rng.normal(size=(rows, 48)), "t": rng.normal(size=(rows, 160))}
        loss, grads = ours.value_and_grad(params, **data)
        want_loss, want_grads = theirs.value_and_grad(params, **data)
        assert abs(loss - want_loss) <= 1e-12 * max(1.0, abs(want_loss))
        for name, grad in want_grads.items():
            np.testing.assert_allclose(grads[name], grad, rtol=1e-10, atol=1e-13,
                                       err_msg=name)
