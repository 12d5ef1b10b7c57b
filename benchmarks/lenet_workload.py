"""The `lenet` workload: one LeNet-5 training step, in every implementation workloads.py has.

    lenet   conv 6@5x5 pad 2, relu, max pool 2, conv 16@5x5, relu, max pool 2, flatten (400),
            dense 120 relu, dense 84 relu, dense 10, softmax cross-entropy with class-index
            targets, sgd(lr=0.01)                           batch [64, 1, 28, 28], float32

Importing this module adds the workload to workloads.WORKLOADS, and its PyTorch and JAX steps
to workloads.TORCH and workloads.JAX (so torch.compile finds it too); workloads.py imports it
at its end. Params are laid out as bpcompile declares them: conv weights [O, C, k, k], dense
weights [in, out]. The targets come as floats (the benchmark casts all data to the workload's
dtype, and bpcompile takes class indices in any real dtype); the hand, PyTorch and JAX steps
turn them into integers once, when the step is built.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from workloads import (
    JAX,
    TORCH,
    WORKLOADS,
    JaxSGD,
    Workload,
    _jax_step,
    _torch_step,
    _with_optimizer,
)

LR = 0.01
BATCH = 64

LENET_BP = """\
# lenet: LeNet-5 on 28x28 images, softmax cross-entropy with class-index targets
network lenet
input  x[N, 1, 28, 28]
target t[N]                                  # class indices, 0 to 9
c1 = conv(x, 6, 5, padding=2, act=relu)      # [N, 6, 28, 28]
p1 = max_pool2d(c1, 2)                       # [N, 6, 14, 14]
c2 = conv(p1, 16, 5, act=relu)               # [N, 16, 10, 10]
p2 = max_pool2d(c2, 2)                       # [N, 16, 5, 5]
h1 = dense(flatten(p2), 120, act=relu)       # [N, 400] -> [N, 120]
h2 = dense(h1, 84, act=relu)
logits = dense(h2, 10)
output logits
loss cross_entropy(logits, t)
optimize sgd(lr=0.01)
"""


def _data(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {"x": rng.uniform(0, 1, (BATCH, 1, 28, 28)),
            "t": rng.integers(0, 10, BATCH).astype(float)}


# ------------------------------------------------------------------ hand NumPy
#
# Activations are kept channels-first over the batch, [C, N, H, W], which makes im2col and
# col2im contiguous block copies and each convolution one matmul with no transposes: the
# columns are [k*k*C, N*HO*WO] (row (i, j, c) holds channel c shifted by (i, j)), taken
# in one copy from sliding_window_view with the window as large as the output, and
# W[O, C, k, k] @ columns gives the output already as [O, N, HO, WO]. Pooling comes before
# relu (they commute, and relu then touches a quarter of the elements); the pooling gradient
# goes to the first maximum of each window in row-major order, as in PyTorch, JAX and
# bpcompile. Buffers are allocated once, when the step is built.

_CORNERS = ((0, 0), (0, 1), (1, 0), (1, 1))


def _conv_forward(a: np.ndarray, W: np.ndarray, b: np.ndarray, cols: np.ndarray):
    """Valid convolution of `a[C, N, H, W]` with `W[O, C, k, k]`, through `cols`, a buffer
    [k, k, C, N, HO, WO]: (z[O, N, HO, WO], the columns as [k*k*C, N*HO*WO], W as
    [O, k*k*C])."""
    O, C, k, _ = W.shape
    _, _, _, n, ho, wo = cols.shape
    windows = sliding_window_view(a, (ho, wo), axis=(2, 3))      # [C, N, k, k, HO, WO]
    np.copyto(cols, windows.transpose(2, 3, 0, 1, 4, 5))
    matrix = cols.reshape(k * k * C, n * ho * wo)
    Wm = W.transpose(0, 2, 3, 1).reshape(O, k * k * C)            # column (i, j, c)
    z = Wm @ matrix
    z += b[:, None]
    return z.reshape(O, n, ho, wo), matrix, Wm


def _conv_backward(dz: np.ndarray, matrix: np.ndarray, Wm: np.ndarray, W_shape: tuple,
                   da: np.ndarray | None):
    """From `dz[O, N, HO, WO]`: the gradients of W[O, C, k, k] and of b, and, when `da` (a
    buffer [C, N, H, W]) is given, of the input, written into it (col2im)."""
    O, C, k, _ = W_shape
    _, n, ho, wo = dz.shape
    dzm = dz.reshape(O, n * ho * wo)
    dW = (dzm @ matrix.T).reshape(O, k, k, C).transpose(0, 3, 1, 2)
    db = dzm.sum(axis=1)
    if da is not None:
        dcols = (Wm.T @ dzm).reshape(k, k, C, n, ho, wo)
        da.fill(0)
        for i in range(k):
            for j in range(k):
                da[:, :, i:i + ho, j:j + wo] += dcols[i, j]
    return dW, db


def _pool_forward(z: np.ndarray):
    """2x2 max pooling of `z[C, N, H, W]`: the maxima and the four corner views."""
    corners = [z[:, :, i::2, j::2] for i, j in _CORNERS]
    m = np.maximum(np.maximum(corners[0], corners[1]), np.maximum(corners[2], corners[3]))
    return m, corners


def _pool_backward(g: np.ndarray, m: np.ndarray, corners: list, dz: np.ndarray) -> None:
    """`g`, the gradient at the maxima `m`, sent into `dz` at each window's first maximum."""
    free = np.ones(m.shape, dtype=bool)
    for (i, j), corner in zip(_CORNERS, corners):
        hit = corner == m
        hit &= free
        free &= ~hit
        np.multiply(g, hit, out=dz[:, :, i::2, j::2])


def _hand_lenet(p: dict, d: dict) -> Callable[[], float]:
    x = d["x"]
    t = d["t"].astype(np.intp)
    dtype = x.dtype
    n = len(x)
    rows = np.arange(n)
    padded = np.zeros((1, n, 32, 32), dtype)     # the input, [C, N, H, W], zero-padded by 2
    cols1 = np.empty((5, 5, 1, n, 28, 28), dtype)
    cols2 = np.empty((5, 5, 6, n, 10, 10), dtype)
    dz1 = np.empty((6, n, 28, 28), dtype)
    dz2 = np.empty((16, n, 10, 10), dtype)
    da1 = np.empty((6, n, 14, 14), dtype)

    def step() -> float:
        padded[0, :, 2:30, 2:30] = x[:, 0]
        z1, cols1_m, W1m = _conv_forward(padded, p["c1.W"], p["c1.b"], cols1)
        m1, corners1 = _pool_forward(z1)
        a1 = np.maximum(m1, 0)                                     # [6, N, 14, 14]
        z2, cols2_m, W2m = _conv_forward(a1, p["c2.W"], p["c2.b"], cols2)
        m2, corners2 = _pool_forward(z2)
        a2 = np.maximum(m2, 0)                                     # [16, N, 5, 5]
        flat = a2.transpose(1, 0, 2, 3).reshape(n, 400)            # as flatten of NCHW
        h1 = np.maximum(flat @ p["h1.W"] + p["h1.b"], 0)
        h2 = np.maximum(h1 @ p["h2.W"] + p["h2.b"], 0)
        logits = h2 @ p["logits.W"] + p["logits.b"]

        shifted = logits - logits.max(axis=1, keepdims=True)
        e = np.exp(shifted)
        total = e.sum(axis=1)
        loss = float(np.mean(np.log(total) - shifted[rows, t]))
        delta = e / total[:, None]
        delta[rows, t] -= 1
        delta /= n

        grads = {"logits.W": h2.T @ delta, "logits.b": delta.sum(axis=0)}
        delta = (delta @ p["logits.W"].T) * (h2 > 0)
        grads["h2.W"], grads["h2.b"] = h1.T @ delta, delta.sum(axis=0)
        delta = (delta @ p["h2.W"].T) * (h1 > 0)
        grads["h1.W"], grads["h1.b"] = flat.T @ delta, delta.sum(axis=0)
        g2 = (delta @ p["h1.W"].T).reshape(n, 16, 5, 5).transpose(1, 0, 2, 3) * (m2 > 0)
        _pool_backward(g2, m2, corners2, dz2)
        grads["c2.W"], grads["c2.b"] = _conv_backward(dz2, cols2_m, W2m, p["c2.W"].shape, da1)
        _pool_backward(da1 * (m1 > 0), m1, corners1, dz1)
        grads["c1.W"], grads["c1.b"] = _conv_backward(dz1, cols1_m, W1m, p["c1.W"].shape,
                                                      None)
        for name, g in grads.items():
            p[name] -= LR * g
        return loss

    return step


# -------------------------------------------------------------------- PyTorch


def _torch_lenet(p, d, torch):
    import torch.nn.functional as F

    x, t = d["x"], d["t"].long()

    def forward():
        h = F.max_pool2d(F.relu(F.conv2d(x, p["c1.W"], p["c1.b"], padding=2)), 2)
        h = F.max_pool2d(F.relu(F.conv2d(h, p["c2.W"], p["c2.b"])), 2)
        h = torch.flatten(h, 1)
        h = F.relu(F.linear(h, p["h1.W"].t(), p["h1.b"]))
        h = F.relu(F.linear(h, p["h2.W"].t(), p["h2.b"]))
        logits = F.linear(h, p["logits.W"].t(), p["logits.b"])
        return F.cross_entropy(logits, t)
    return forward


# ------------------------------------------------------------------------ JAX


def _jax_lenet(jax, jnp):
    lax = jax.lax

    def conv(h, W, b, padding):
        z = lax.conv_general_dilated(h, W, (1, 1), [(padding, padding)] * 2,
                                     dimension_numbers=("NCHW", "OIHW", "NCHW"))
        return jax.nn.relu(z + b[None, :, None, None])

    def pool(h):
        return lax.reduce_window(h, -jnp.inf, lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")

    def loss(p, d):
        h = pool(conv(d["x"], p["c1.W"], p["c1.b"], 2))
        h = pool(conv(h, p["c2.W"], p["c2.b"], 0))
        h = h.reshape(h.shape[0], -1)
        h = jax.nn.relu(h @ p["h1.W"] + p["h1.b"])
        h = jax.nn.relu(h @ p["h2.W"] + p["h2.b"])
        logits = h @ p["logits.W"] + p["logits.b"]
        picked = jnp.take_along_axis(jax.nn.log_softmax(logits, axis=-1),
                                     d["t"][:, None], axis=-1)
        return -jnp.mean(picked)
    return loss, JaxSGD(jax, LR)


def _jax_lenet_step(p: dict, d: dict, dtype: str) -> Callable[[], float]:
    """workloads' JAX step, given the class indices as integers (cast once, here)."""
    return _jax_step("lenet")(p, {**d, "t": d["t"].astype(np.int32)}, dtype)


# ------------------------------------------------------------------ registration

LENET = Workload("lenet", LENET_BP, "float32", BATCH, _data, _hand_lenet, _torch_step("lenet"),
                 _jax_lenet_step)

TORCH["lenet"] = _with_optimizer(_torch_lenet,
                                 lambda p, torch: torch.optim.SGD(p.values(), lr=LR))
JAX["lenet"] = _jax_lenet
if all(w.name != "lenet" for w in WORKLOADS):
    WORKLOADS.append(LENET)
