"""The LLVM backend against the NumPy backend, its native fast path of `step`, BLAS, the
lifetime of its engines and the IR it shows.

Oracles: the NumPy backend running the same program (relative error of each array,
max|a - b| / max|b|: 1e-12 in float64, 1e-5 in float32); the checked Python path of `step`
(`CompiledNet.step`, which the fast path falls back to) for the fast path, bit for bit and
error for error; a bit-for-bit snapshot taken before every refused call; LLVM's own parser
for the IR; the chain rule (which gradients pass through which nodes) for `show`.
"""

from __future__ import annotations

import gc
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import llvmlite.binding as llvm
import numpy as np
import pytest
from conftest import EXAMPLES, PROBE, example_paths, indices_in_range

import bpcompile as bpc
from bpcompile import BPError, BPNumericError
from bpcompile.backends.llvm import gemm, threads
from bpcompile.backends.llvm.blas import BLAS_THRESHOLDS, find_blas
from bpcompile.cli.main import main as cli_main
from bpcompile.runtime.net import CompiledNet

RTOL = {"float64": 1e-12, "float32": 1e-5}
BATCHES = (1, 3, 17, 64)
STEPS = 5

# ------------------------------------------------------------------ the networks

ELEMENTWISE = """
network elementwise
input  x[N, 3]
target t[N, 3]
param W[3, 3]
param b[3] = uniform(-0.5, 0.5)
z = x @ W + b
a = exp(0.3 * z) + log(softplus(z) + 1) + sqrt(square(z) + 0.5) + abs(z)
c = sin(z) * cos(z) + tanh(z) + sigmoid(z) + relu(z) + softplus(z)
d = leaky_relu(z) + leaky_relu(z, alpha=0.2) + elu(z) + elu(z, alpha=0.5) + gelu(z)
y = a + c + d + linear(z)
output y
loss mse(y, t)
"""

BINARY = """
network binary
def f(u, v) = u * v / (1 + u ** 2)
input  x[N, 3]
target t[N, 3]
param W[3, 3]
param c[3] = uniform(0.5, 1.5)
z = x @ W
m = maximum(z, c) - minimum(z, -c) + where(z > 0, z, 0.5 * z) + f(z, c)
k = (z >= c) * z + (z != 0) + (z < -c) - (z <= 0.1) * (z == z)
y = m + k + c ** 1.5 * z + z / c + c ** (0.3 * z) + z ** 3 / 10 - 1 / (2 + z ** 2)
output y
loss mean((y - t) ** 2) + sum(abs(z) ** 2.5) / 100
optimize sgd(lr=0.002, momentum=0.5)
"""

REDUCTIONS = """
network reductions
input x[N, 4]
param W[4, 5]
param v[5] = uniform(-1, 1)
z = tanh(x @ W)
s0 = sum(z, axis=0)
s1 = mean(z, axis=1)
sk = sum(z, axis=-1, keepdims=true)
m0 = max(z, axis=0)
m1 = max(z * v, axis=1)
mk = max(z, axis=0, keepdims=true)
l0 = logsumexp(z, axis=0)
l1 = logsumexp(z, axis=-1)
output s0, s1, m1, l1
loss (sum(s0 * v) + mean(s1 ** 2) + mean(sk * z) + sum(m0) + mean(m1) + mean(mk * z)
      + sum(l0 * v) + mean(l1) + logsumexp(z) + max(z) + mean(z) + sum(z ** 2) / 10)
optimize adam(lr=0.01)
"""

SOFTMAX = """
network softmaxes
input  x[N, 4]
target t[N, 4]
param W[4, 4]
param b[4]
z = x @ W + b
p1 = softmax(z)
p0 = softmax(z, axis=0)
q1 = log_softmax(z, axis=-1)
q0 = log_softmax(z, axis=0)
output p0, q1
loss -mean(t * q1) + mean(p0 * t) + sum(q0 * p1) / 10 + mean(logsumexp(z, axis=0)) + mean(p1 * z)
"""

LOSSES = """
network losses
input  x[N, 3]
target t[N, 4]
target u[N, 4]
param W[3, 4]
param b[4]
z = x @ W + b
loss cross_entropy(z, t) + binary_cross_entropy(sigmoid(z), u) + bce_with_logits(z, u) + mse(z, u)
optimize adam(lr=0.01, clip_norm=0.5)
"""

MATMULS = """
network matmuls
input x[N, 3]
input v[3]
param A[3, 4]
param B[4, 3]
param w[4]
param u[3]
h = x @ A
r1 = A @ w
r2 = u @ A
r3 = u @ v
g = x.T @ h
k = h @ A.T
m = A.T @ B.T
n = (B @ A).T
output k, r1
loss (mean((k - x) ** 2) + sum(r1 ** 2) + sum(r2 ** 2) + r3 * r3 + mean(tanh(g) ** 2)
      + mean(m * n) + mean((h @ w) ** 2) + (v @ A @ w) ** 2)
optimize sgd(lr=0.002, momentum=0.9, nesterov=true, weight_decay=0.01)
"""

BROADCAST = """
network broadcast
const K = 3
input x[N, 1]
input r[N, K]
param a[1, K]
param b[K] = uniform(-1, 1)
param s[] = 0.5
y = x * a + b
z = x + s
w = (y - mean(y, axis=0)) / (1 + s * s) + r * x + r * b + b * r
q = r + x
loss mean(w ** 2) + mean(z) * s + sum(a * b) + mean(q * y) + mean(y / (1 + a ** 2))
optimize adam(lr=0.02, weight_decay=0.1)
"""

DENSE = """
network dense
input  x[N, 5]
target t[N, 2]
h1 = dense(x, 8, act=relu)
h2 = dense(h1, 6, act=tanh)
h3 = dense(h2, 6, act=gelu)
h4 = dense(h3, 4, act=elu)
y = dense(h4, 2)
loss mse(y, t)
optimize sgd(lr=0.05, momentum=0.9, weight_decay=0.01, clip_norm=1.0)
"""

CUBE = """
network cube
input  x[N, 3, 4]
param W[3, 4] = normal(0.5)
param v[4] = uniform(-1, 1)
z = tanh(x * W + v)
a0 = sum(z, axis=0)
a1 = mean(z, axis=1)
a2 = max(z, axis=2)
k1 = sum(z, axis=1, keepdims=true)
m1 = max(z * v, axis=1)
p1 = softmax(z, axis=1)
q1 = log_softmax(z, axis=1)
q0 = log_softmax(z, axis=0)
p2 = softmax(z, axis=-1)
l1 = logsumexp(z, axis=1)
output a1, p1
loss (sum(a0 * W) + mean(a1 ** 2) + mean(a2) + mean(k1 * z) + mean(m1) + mean(p1 * z)
      + mean(q1 * p2) + mean(q0) / 10 + mean(l1 * v))
optimize adam(lr=0.01)
"""

NETWORKS = {
    "elementwise": ELEMENTWISE, "binary": BINARY, "reductions": REDUCTIONS,
    "softmax": SOFTMAX, "losses": LOSSES, "matmuls": MATMULS, "broadcast": BROADCAST,
    "dense": DENSE, "cube": CUBE,
    **{path.name: path.read_text() for path in example_paths()},
}

_NETS: dict[tuple[str, str, str], CompiledNet] = {}


def compiled(source: str, backend: str, dtype: str) -> CompiledNet:
    """One compile per program, backend and dtype for the whole file."""
    key = (source, backend, dtype)
    if key not in _NETS:
        _NETS[key] = bpc.compile(source, backend=backend, dtype=dtype)
    return _NETS[key]


# ------------------------------------------------------------------- helpers


def probability_targets(net: CompiledNet) -> set[str]:
    """Targets given to cross_entropy(logits, t): rows of probabilities."""
    return set(re.findall(r"cross_entropy\(\s*[^,()]+,\s*(\w+)\s*\)", net.source))


def make_data(net: CompiledNet, batch: int, seed: int = 0,
              with_targets: bool = True) -> dict[str, np.ndarray]:
    """Inputs ~ N(0, 1); targets uniform in [0, 1], rows of probabilities for cross_entropy."""
    rng = np.random.default_rng(seed)
    probabilities = probability_targets(net)
    declared = {**net.inputs, **(net.targets if with_targets else {})}
    data = {}
    for name, shape in declared.items():
        concrete = tuple(batch if isinstance(d, str) else d for d in shape)
        if name in probabilities:
            weights = rng.uniform(0.05, 1.0, concrete)
            data[name] = weights / weights.sum(axis=-1, keepdims=True)
        elif name in net.targets:
            data[name] = rng.uniform(0.0, 1.0, concrete)
        else:
            data[name] = rng.standard_normal(concrete)
    return indices_in_range(net, data, seed)


def relative_error(a: object, b: object) -> float:
    """max|a - b| / max|b| over one array (0 when both are all zeros)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    assert np.isfinite(a).all() and np.isfinite(b).all()
    scale = np.max(np.abs(b), initial=0.0)
    difference = np.max(np.abs(a - b), initial=0.0)
    return difference / scale if scale else difference


def assert_close(got: dict | float, want: dict | float, rtol: float, what: str,
                 skip: set[str] = frozenset()) -> None:
    if isinstance(want, dict):
        assert set(got) == set(want), what
        for name in set(want) - skip:
            error = relative_error(got[name], want[name])
            assert error <= rtol, f"{what} {name}: relative error {error:.3g} > {rtol}"
    else:
        error = relative_error(got, want)
        assert error <= rtol, f"{what}: relative error {error:.3g} > {rtol} ({got} vs {want})"


def copy(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: v.copy() for k, v in arrays.items()}


def snapshot(*groups: dict) -> list[dict[str, tuple]]:
    return [{k: (v.dtype, v.shape, v.tobytes()) for k, v in g.items()} for g in groups]


# ----------------------------------------------------- (a) the backends agree


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", list(NETWORKS))
def test_llvm_agrees_with_numpy(name: str, dtype: str) -> None:
    """forward, loss, value_and_grad and five steps, for batch sizes 1, 3, 17 and 64."""
    source, rtol = NETWORKS[name], RTOL[dtype]
    if dtype == "float32" and "batchnorm(" in source:
        # eight batch norms over 3 rows (vanishing_bn) divide by spreads of 3 values each,
        # which magnify float32's rounding; five momentum steps compound it: 2.3e-4 measured
        rtol = 1e-3
    fast, slow = compiled(source, "llvm", dtype), compiled(source, "numpy", dtype)
    for batch in BATCHES:
        where = f"{name} {dtype} batch {batch}"
        p = slow.init(seed=batch)
        data = make_data(slow, batch, seed=batch)
        inputs = {k: v for k, v in data.items() if k in slow.inputs}
        assert_close(fast.forward(p, **inputs), slow.forward(p, **inputs), rtol,
                     f"{where} forward")
        assert_close(fast.loss(p, **data), slow.loss(p, **data), rtol, f"{where} loss")
        if batch == 1 and slow.buffers:   # batch norm trains on 2 rows or more
            for net in (fast, slow):
                with pytest.raises(bpc.BPShapeError, match="more than one value"):
                    net.value_and_grad(p, **data)
            continue
        loss_fast, grads_fast = fast.value_and_grad(p, **data)
        loss_slow, grads_slow = slow.value_and_grad(p, **data)
        assert_close(loss_fast, loss_slow, rtol, f"{where} value_and_grad loss")
        # A param whose gradient is 0 in exact math (a bias before batch norm, which takes
        # the mean out) gets rounding noise, which Adam scales to full steps that differ
        # between backends; the running mean then follows that bias. Such params and the
        # buffers are left out (test_modes and the differential fuzzer check buffers).
        largest = max(float(np.max(np.abs(g))) for g in grads_slow.values())
        tiny = 100 * float(np.finfo(dtype).eps) * largest
        noise = {n for n, g in grads_slow.items() if np.max(np.abs(g)) < tiny}
        assert all(np.max(np.abs(grads_fast[n])) < 100 * tiny for n in noise), where
        assert_close(grads_fast, grads_slow, rtol, f"{where} gradient of", noise)
        p_fast, p_slow = copy(p), copy(p)
        s_fast, s_slow = fast.init_state(p_fast), slow.init_state(p_slow)
        for k in range(STEPS):
            assert_close(fast.step(p_fast, s_fast, **data), slow.step(p_slow, s_slow, **data),
                         rtol, f"{where} step {k} loss")
        skip = noise | set(slow.buffers) | {s for s in slow.state
                                            if any(s.startswith(f"{n}.") for n in noise)}
        assert_close(p_fast, p_slow, rtol, f"{where} after {STEPS} steps, param", skip)
        assert_close(s_fast, s_slow, rtol, f"{where} after {STEPS} steps, state", skip)


# ------------------------------------------------------------ (b) the fast path


def probe_data(dtype: np.dtype, n: int = 5, seed: int = 0) -> dict[str, np.ndarray]:
    """Data of the net's own dtype (other dtypes are converted by the checked path)."""
    rng = np.random.default_rng(seed)
    return {"x": rng.standard_normal((n, 3)).astype(dtype),
            "m": rng.standard_normal((n, 2)).astype(dtype),
            "t": rng.standard_normal((n, 2)).astype(dtype)}


def checked_calls(net: CompiledNet) -> list[int]:
    """A list that grows by one each time a step reaches the checked path's native call
    (the executor's `step`), which the fast path never calls."""
    calls: list[int] = []
    inner = net._executor.step

    def counted(*args: object) -> float:
        calls.append(1)
        return inner(*args)

    net._executor.step = counted
    return calls


@pytest.fixture(params=["float64", "float32"])
def probe(request: pytest.FixtureRequest) -> CompiledNet:
    """A fresh llvm net whose fast path is installed and armed: the first step
    installs it, the second (through it, falling back) gives it its workspace; a third is
    taken natively."""
    net = bpc.compile(PROBE, backend="llvm", dtype=request.param)
    p = net.init()
    s = net.init_state(p)
    net.step(p, s, **probe_data(net.dtype))
    net.step(p, s, **probe_data(net.dtype))
    calls = checked_calls(net)
    net.step(p, s, **probe_data(net.dtype))
    assert not calls, "a good step did not take the fast path"
    del net._executor.step  # the spy: the class's method again
    return net


def checked(net: CompiledNet) -> Callable[..., float]:
    """The fully checked Python step, which the fast path falls back to."""
    return lambda p, s, /, **data: CompiledNet.step(net, p, s, **data)


def test_fast_path_is_installed_after_the_first_step() -> None:
    net = bpc.compile(PROBE, backend="llvm")
    p = net.init()
    assert type(net.step).__name__ == "method"
    net.step(p, net.init_state(p), **probe_data(net.dtype))
    assert type(net.step).__name__ == "builtin_function_or_method"


def test_fast_and_checked_paths_are_bit_identical(probe: CompiledNet) -> None:
    p_fast, p_slow = probe.init(seed=3), probe.init(seed=3)
    s_fast, s_slow = probe.init_state(p_fast), probe.init_state(p_slow)
    calls = checked_calls(probe)
    for k in range(10):
        data = probe_data(probe.dtype, seed=k)
        loss = probe.step(p_fast, s_fast, **data)
        assert len(calls) == k, "the fast path fell back on a good call"
        assert loss == checked(probe)(p_slow, s_slow, **data)
    assert snapshot(p_fast, s_fast) == snapshot(p_slow, s_slow)


def test_fast_path_on_two_copies_of_a_network() -> None:
    """Two nets compiled from one source: one trained through its fast path, the other
    only through the checked path, end bit for bit the same."""
    source = (EXAMPLES / "digits.bp").read_text()
    one, two = bpc.compile(source, backend="llvm"), bpc.compile(source, backend="llvm")
    p1, p2 = one.init(seed=5), two.init(seed=5)
    s1, s2 = one.init_state(p1), two.init_state(p2)
    for k in range(8):
        data = make_data(one, 9, seed=k)
        assert one.step(p1, s1, **data) == checked(two)(p2, s2, **data)
    assert type(one.step).__name__ == "builtin_function_or_method"
    assert snapshot(p1, s1) == snapshot(p2, s2)


DROPOUT = (EXAMPLES / "digits_bn.bp").read_text()  # batch norm, and dropout before logits


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_dropout_fast_path_draws_the_masks_python_draws(dtype: str) -> None:
    """With dropout the fast step draws the masks natively: bit for bit the masks NumPy
    draws on the checked path (the same kernel, so every loss, param, statistic and step
    count is equal), the batch size changing on the way."""
    fast, slow = bpc.compile(DROPOUT, backend="llvm", dtype=dtype), \
        bpc.compile(DROPOUT, backend="llvm", dtype=dtype)
    p_fast, p_slow = fast.init(seed=2), slow.init(seed=2)
    s_fast, s_slow = fast.init_state(p_fast, seed=11), slow.init_state(p_slow, seed=11)
    calls = []
    for k in range(12):
        # keys interned, as a call site's keywords are (the fast path matches by identity),
        # arrays of the net's dtype (others are converted on the checked path)
        data = {sys.intern(name): array.astype(fast.dtype) for name, array in
                make_data(fast, (16, 16, 16, 7)[k % 4] if k >= 4 else 16, seed=k).items()}
        if k == 3:
            calls = checked_calls(fast)
        assert fast.step(p_fast, s_fast, **data) == checked(slow)(p_slow, s_slow, **data)
    assert type(fast.step).__name__ == "builtin_function_or_method"
    # steps 3 to 11: the fast path took all but the first at each new batch size
    assert 0 < len(calls) < 9
    assert snapshot(p_fast, s_fast) == snapshot(p_slow, s_slow)
    assert list(s_fast["rng"]) == [11, 12]


@pytest.mark.parametrize("bad, message", [
    (lambda s: {k: v for k, v in s.items() if k != "rng"}, "no 'rng' entry"),
    (lambda s: {**s, "rng": s["rng"].astype(np.int64)}, "uint64 array of 2"),
    (lambda s: {**s, "rng": np.zeros(3, dtype=np.uint64)}, "uint64 array of 2"),
])
def test_dropout_fast_path_leaves_a_bad_rng_to_the_checked_path(bad, message: str) -> None:
    net = bpc.compile(DROPOUT, backend="llvm")
    p = net.init()
    s = net.init_state(p)
    data = {sys.intern(name): array for name, array in make_data(net, 8).items()}
    for _ in range(3):
        net.step(p, s, **data)
    assert type(net.step).__name__ == "builtin_function_or_method"
    calls = checked_calls(net)
    net.step(p, s, **data)
    assert not calls, "a good step did not take the fast path"
    del net._executor.step
    before = snapshot(p, s)
    with pytest.raises(bpc.BPError, match=message):
        net.step(p, bad(s), **data)
    assert snapshot(p, s) == before


def _read_only(a: np.ndarray) -> np.ndarray:
    a = a.copy()
    a.flags.writeable = False
    return a


def _other(a: np.ndarray) -> type:
    """The float dtype `a` is not."""
    return np.float32 if a.dtype == np.float64 else np.float64


def _strided(a: np.ndarray) -> np.ndarray:
    wide = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), dtype=a.dtype)
    wide[..., ::2] = a
    return wide[..., ::2]


# (what to break, how): each gives new p, s, data from good ones
BAD_CALLS: dict[str, Callable[[dict, dict, dict], tuple[dict, dict, dict]]] = {
    "param rank": lambda p, s, d: ({**p, "W": p["W"].reshape(-1)}, s, d),
    "param size": lambda p, s, d: ({**p, "b": np.zeros(3)}, s, d),
    "scalar param rank": lambda p, s, d: ({**p, "a": p["a"].reshape(1)}, s, d),
    "param dtype": lambda p, s, d: ({**p, "W": p["W"].astype(_other(p["W"]))}, s, d),
    "param int dtype": lambda p, s, d: ({**p, "b": np.zeros(2, dtype=np.int64)}, s, d),
    "param layout": lambda p, s, d: ({**p, "W": np.asfortranarray(p["W"])}, s, d),
    "param strided": lambda p, s, d: ({**p, "b": _strided(p["b"])}, s, d),
    "param read-only": lambda p, s, d: ({**p, "W": _read_only(p["W"])}, s, d),
    "param not an array": lambda p, s, d: ({**p, "b": p["b"].tolist()}, s, d),
    "param missing": lambda p, s, d: ({k: v for k, v in p.items() if k != "b"}, s, d),
    "param unknown": lambda p, s, d: ({**p, "c": np.zeros(2)}, s, d),
    "params not a dict": lambda p, s, d: (list(p.values()), s, d),
    "param twice": lambda p, s, d: ({**p, "b": s["b.m"]}, s, d),
    "state dtype": lambda p, s, d: (p, {**s, "W.m": s["W.m"].astype(_other(p["W"]))}, d),
    "state size": lambda p, s, d: (p, {**s, "W.v": np.zeros((2, 3))}, d),
    "state read-only": lambda p, s, d: (p, {**s, "step": _read_only(s["step"])}, d),
    "state missing": lambda p, s, d: (p, {k: v for k, v in s.items() if k != "W.m"}, d),
    "state unknown": lambda p, s, d: (p, {**s, "extra": np.zeros(1)}, d),
    "state is a param": lambda p, s, d: (p, {**s, "W.m": p["W"]}, d),
    "data rank": lambda p, s, d: (p, s, {**d, "x": d["x"][None]}),
    "data size": lambda p, s, d: (p, s, {**d, "x": d["x"][:, :2].copy()}),
    "data symbol two ways": lambda p, s, d: (p, s, {**d, "m": d["m"][:-1].copy()}),
    "data missing": lambda p, s, d: (p, s, {k: v for k, v in d.items() if k != "t"}),
    "data unknown": lambda p, s, d: (p, s, {**d, "z": d["x"]}),
    "data complex": lambda p, s, d: (p, s, {**d, "x": d["x"].astype(complex)}),
    "data strings": lambda p, s, d: (p, s, {**d, "t": d["t"].astype(str)}),
    "data empty batch": lambda p, s, d: (p, s, {k: v[:0] for k, v in d.items()}),
}


@pytest.mark.parametrize("case", list(BAD_CALLS))
def test_fast_path_refuses_what_the_checked_path_refuses(probe: CompiledNet,
                                                         case: str) -> None:
    """The same BPError, word for word, as the checked path; nothing changes."""
    p = probe.init(seed=1)
    s = probe.init_state(p)
    s["W.m"][...] = 0.25  # state worth protecting
    bad_p, bad_s, bad_data = BAD_CALLS[case](p, s, probe_data(probe.dtype))
    errors = []
    for step in (probe.step, checked(probe)):
        before = snapshot(p, s)
        with pytest.raises(BPError) as info:
            step(bad_p, bad_s, **bad_data)
        assert snapshot(p, s) == before, f"{case}: a refused step changed something"
        errors.append((type(info.value), str(info.value)))
    assert errors[0] == errors[1]
    assert type(probe.step).__name__ == "builtin_function_or_method"


def test_fast_path_refuses_overlapping_params_and_state(probe: CompiledNet) -> None:
    """Arrays that share memory without being the same array (views of one buffer) are
    refused, as the checked path refuses them: one update would overwrite the other."""
    p = probe.init(seed=1)
    s = probe.init_state(p)
    buffer, whole = np.zeros(3, dtype=probe.dtype), np.zeros(2, dtype=probe.dtype)
    cases = {
        "param and state, one shape": ({**p, "b": buffer[:2]}, {**s, "b.m": buffer[1:]}),
        "a scalar param inside a state": ({**p, "a": whole[1:].reshape(())},
                                          {**s, "b.v": whole}),
        "two params of different shapes": ({**p, "a": p["W"][1:2, 1].reshape(())}, s),
    }
    for case, (bad_p, bad_s) in cases.items():
        keep = snapshot(bad_p, bad_s)
        errors = []
        for step in (probe.step, checked(probe)):
            with pytest.raises(BPError) as info:
                step(bad_p, bad_s, **probe_data(probe.dtype))
            errors.append((type(info.value), str(info.value)))
            assert snapshot(bad_p, bad_s) == keep, case
        assert errors[0] == errors[1], case


def test_fast_path_converts_int_data_and_accepts_any_layout(probe: CompiledNet) -> None:
    ints = {k: np.rint(3 * v).astype(np.int32) for k, v in probe_data(probe.dtype, seed=4).items()}
    variants = {
        "ints": ints,
        "fortran": {k: np.asfortranarray(v.astype(float)) for k, v in ints.items()},
        "lists": {k: v.tolist() for k, v in ints.items()},
        "float32": {k: v.astype(np.float32) for k, v in ints.items()},
        "bools": {k: (v > 0) for k, v in ints.items()},
    }
    for name, data in variants.items():
        as_float = {k: np.asarray(v, dtype=probe.dtype) for k, v in data.items()}
        p1, p2 = probe.init(seed=2), probe.init(seed=2)
        s1, s2 = probe.init_state(p1), probe.init_state(p2)
        assert probe.step(p1, s1, **data) == checked(probe)(p2, s2, **as_float), name
        assert snapshot(p1, s1) == snapshot(p2, s2), name


def test_fast_path_with_new_batch_sizes_and_back(probe: CompiledNet) -> None:
    """The fast path binds sizes per call: a new batch size works, and going back to an
    earlier one (whose workspace was replaced) works too; the same bits as the checked path
    of a second network that never took the fast path."""
    other = bpc.compile(PROBE, backend="llvm", dtype=probe.dtype)
    p1, p2 = probe.init(seed=6), other.init(seed=6)
    s1, s2 = probe.init_state(p1), other.init_state(p2)
    for k, n in enumerate([5, 9, 5, 1, 64, 9, 9, 1, 5, 13, 2, 3, 4, 6, 7, 8, 10, 11, 5]):
        data = probe_data(probe.dtype, n, seed=k)
        assert probe.step(p1, s1, **data) == checked(other)(p2, s2, **data), n
    assert snapshot(p1, s1) == snapshot(p2, s2)


def test_fast_path_non_finite_step_changes_nothing(probe: CompiledNet) -> None:
    p = probe.init(seed=1)
    s = probe.init_state(p)
    probe.step(p, s, **probe_data(probe.dtype))
    huge = float(np.finfo(probe.dtype).max) / 4  # finite, but its square overflows the loss
    for bad in (np.nan, np.inf, huge):
        data = probe_data(probe.dtype)
        data["t"][2, 1] = bad
        before = snapshot(p, s)
        with pytest.raises(BPNumericError, match="step changed nothing"):
            probe.step(p, s, **data)
        assert snapshot(p, s) == before
    p_bad = {**p, "W": np.full((3, 2), np.nan, dtype=probe.dtype)}  # a NaN loss
    before = snapshot(p_bad, s)
    with pytest.raises(BPNumericError, match="step changed nothing"):
        probe.step(p_bad, s, **probe_data(probe.dtype))
    assert snapshot(p_bad, s) == before
    # and the next good step is the same as the checked path's
    p_again, s_again = copy(p), copy(s)
    data = probe_data(probe.dtype, seed=9)
    assert probe.step(p, s, **data) == checked(probe)(p_again, s_again, **data)
    assert snapshot(p, s) == snapshot(p_again, s_again)
    assert type(probe.step).__name__ == "builtin_function_or_method"


def test_data_as_keywords_in_any_order(probe: CompiledNet) -> None:
    data = probe_data(probe.dtype, seed=8)
    results = []
    for order in (["x", "m", "t"], ["t", "x", "m"], ["m", "t", "x"]):
        p = probe.init(seed=4)
        s = probe.init_state(p)
        loss = probe.step(p, s, **{k: data[k] for k in order})
        results.append((loss, snapshot(p, s)))
    # names that are not the interned strings the fast path compares by identity
    p = probe.init(seed=4)
    s = probe.init_state(p)
    spelled = {"".join(["x"]): data["x"], "".join("t"): data["t"], "m"[:]: data["m"]}
    results.append((probe.step(p, s, **spelled), snapshot(p, s)))
    assert all(r == results[0] for r in results)


def test_ndarray_subclass_and_dict_subclass_take_the_checked_path(probe: CompiledNet) -> None:
    class Params(dict):
        pass

    p1, p2 = probe.init(seed=2), probe.init(seed=2)
    s1, s2 = probe.init_state(p1), probe.init_state(p2)
    data = probe_data(probe.dtype, seed=3)
    sub = {**data, "x": data["x"].view(type("Sub", (np.ndarray,), {}))}
    assert probe.step(Params(p1), s1, **sub) == checked(probe)(p2, s2, **data)
    assert snapshot(p1, s1) == snapshot(p2, s2)
    w = p1["W"].copy().view(type("Param", (np.ndarray,), {}))  # updated in place all the same
    probe.step({**p1, "W": w}, s1, **data)
    checked(probe)({**p2, "W": p2["W"]}, s2, **data)
    assert w.tobytes() == p2["W"].tobytes()


NO_INPUTS = """
network fit
param w[3] = uniform(-1, 1)
param c[] = 2
loss sum((w - 1) ** 2) + (c - 3) ** 2 + sum(softmax(w) * w)
optimize adam(lr=0.1)
"""

TWO_SYMBOLS = """
network two
input a[N, 3]
input b[M, 3]
target t[N]
param W[3] = uniform(-1, 1)
y = a @ W
loss mean((y - t) ** 2) + mean(b @ W) ** 2 + logsumexp(b @ W)
optimize sgd(lr=0.05)
"""


def test_fast_path_without_inputs() -> None:
    fast, slow = bpc.compile(NO_INPUTS, backend="llvm"), bpc.compile(NO_INPUTS)
    p_fast, p_slow = fast.init(), slow.init()
    s_fast, s_slow = fast.init_state(p_fast), slow.init_state(p_slow)
    for k in range(20):
        assert_close(fast.step(p_fast, s_fast), slow.step(p_slow, s_slow), 1e-12, f"step {k}")
    assert type(fast.step).__name__ == "builtin_function_or_method"
    assert_close(p_fast, p_slow, 1e-11, "param")
    with pytest.raises(BPError) as fast_error:
        fast.step(p_fast, s_fast, x=np.zeros(3))
    with pytest.raises(BPError) as slow_error:
        checked(fast)(p_fast, s_fast, x=np.zeros(3))
    assert str(fast_error.value) == str(slow_error.value)
    assert_close(fast.forward(p_fast) if fast.outputs else {}, slow.forward(p_slow)
                 if slow.outputs else {}, 1e-11, "forward")


def test_fast_path_with_two_symbolic_dims() -> None:
    fast, slow = bpc.compile(TWO_SYMBOLS, backend="llvm"), bpc.compile(TWO_SYMBOLS)
    p_fast, p_slow = fast.init(seed=1), slow.init(seed=1)
    s_fast, s_slow = fast.init_state(p_fast), slow.init_state(p_slow)
    rng = np.random.default_rng(0)
    for n, m in [(4, 7), (7, 4), (4, 4), (1, 9), (4, 7), (9, 1)]:
        data = {"a": rng.standard_normal((n, 3)), "b": rng.standard_normal((m, 3)),
                "t": rng.standard_normal(n)}
        assert_close(fast.step(p_fast, s_fast, **data), slow.step(p_slow, s_slow, **data),
                     1e-12, f"N={n} M={m}")
        assert_close(p_fast, p_slow, 1e-11, f"N={n} M={m}")
    assert type(fast.step).__name__ == "builtin_function_or_method"
    bad = {"a": np.zeros((4, 3)), "b": np.zeros((5, 3)), "t": np.zeros(5)}
    with pytest.raises(BPError) as fast_error:
        fast.step(p_fast, s_fast, **bad)
    with pytest.raises(BPError) as slow_error:
        checked(fast)(p_fast, s_fast, **bad)
    assert str(fast_error.value) == str(slow_error.value)


# ------------------------------------------------------------------- (c) BLAS

BIG = """
network big
input  x[N, 256]
target t[N, 96]
param W1[256, 128]
param b1[128]
param V[128, 128]
param W2[128, 96]
h = tanh(x @ W1 + b1)
g = h @ V.T
y = g @ W2
c = x.T @ h
output y
loss mse(y, t) + mean(c ** 2) / 100
optimize sgd(lr=0.01, momentum=0.9)
"""
BIG_BATCH = 192


def big_data(dtype: str = "float64") -> dict[str, np.ndarray]:
    rng = np.random.default_rng(11)
    return {"x": rng.standard_normal((BIG_BATCH, 256)).astype(dtype),
            "t": rng.standard_normal((BIG_BATCH, 96)).astype(dtype)}


def big_results(net: CompiledNet, dtype: str = "float64") -> dict[str, np.ndarray]:
    """forward, value_and_grad and three steps, as arrays named for what they are."""
    data = big_data(dtype)
    p = net.init(seed=0)
    results = {f"forward {k}": v for k, v in
               net.forward(p, x=data["x"]).items()}
    loss, grads = net.value_and_grad(p, **data)
    results["loss"] = np.array(loss)
    results.update({f"grad {k}": v for k, v in grads.items()})
    s = net.init_state(p)
    for k in range(3):
        results[f"step {k}"] = np.array(net.step(p, s, **data))
    results.update({f"param {k}": v for k, v in p.items()})
    return results


def test_big_products_cross_the_blas_threshold() -> None:
    """The premise of the BLAS tests: every product of BIG (forward and backward) is large
    enough for BLAS in float32, and in float64 those that read B transposed are."""
    n = BIG_BATCH
    products = {"x @ W1": (n * 256 * 128, False), "h @ V.T": (n * 128 * 128, True),
                "g @ W2": (n * 128 * 96, False), "x.T @ h": (256 * n * 128, False),
                "d_W1 = x.T @ d": (256 * n * 128, False), "d_h = d @ V": (n * 128 * 128, False),
                "d_V": (128 * n * 128, False), "d_g = d_y @ W2.T": (n * 96 * 128, True),
                "d_W2 = g.T @ d_y": (128 * n * 96, False)}
    assert all(work >= BLAS_THRESHOLDS[4, transposed]
               for work, transposed in products.values()), products
    assert all(work >= BLAS_THRESHOLDS[8, True]
               for work, transposed in products.values() if transposed), products


@pytest.mark.skipif(find_blas() is None, reason="no CBLAS gemm in this NumPy")
def test_blas_products_agree_with_numpy() -> None:
    net = bpc.compile(BIG, backend="llvm")
    blas = find_blas()
    assert blas is not None and blas.dgemm in net.code()
    want = big_results(bpc.compile(BIG))
    assert_close(big_results(net), want, 1e-10, "BLAS")
    net32 = bpc.compile(BIG, backend="llvm", dtype="float32")
    assert_close(big_results(net32, "float32"), big_results(bpc.compile(BIG, dtype="float32"),
                                                             "float32"), 1e-5, "BLAS float32")


def test_own_products_without_blas_agree_with_numpy(tmp_path: Path) -> None:
    """The same network in a process with BPCOMPILE_NO_BLAS=1: every product is our own,
    the large ones the packed GEMM (no CBLAS call in the IR), and the results agree with
    NumPy as well."""
    script = tmp_path / "no_blas.py"
    script.write_text(
        "import json, sys\n"
        "import numpy as np\n"
        "import bpcompile as bpc\n"
        "from bpcompile.backends.llvm.blas import find_blas\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from test_llvm_backend import BIG, big_results\n"
        "assert find_blas() is None\n"
        "net = bpc.compile(BIG, backend='llvm')\n"
        "np.savez(sys.argv[1], **big_results(net))\n"
        "code = net.code()\n"
        "print(json.dumps({'blas': 'cblas' in code, 'packed': 'packed_product' in code}))\n"
    )
    out = tmp_path / "results.npz"
    env = {**os.environ, "BPCOMPILE_NO_BLAS": "1"}
    run = subprocess.run([sys.executable, str(script), str(out)], env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout.splitlines()[-1]) == {"blas": False, "packed": True}
    with np.load(out) as saved:
        got = {k: saved[k] for k in saved.files}
    assert_close(got, big_results(bpc.compile(BIG)), 1e-10, "own products")


# ------------------------------------------------------ (d) engines' lifetime


def test_engines_live_as_long_as_the_network() -> None:
    source = (EXAMPLES / "digits.bp").read_text()
    data = make_data(compiled(source, "numpy", "float64"), 6, seed=2)
    inputs = {"x": data["x"]}

    def fresh() -> CompiledNet:
        net = bpc.compile(source, backend="llvm", filename="digits.bp")
        p = net.init(seed=1)
        s = net.init_state(p)
        net.forward(p, **inputs)
        net.loss(p, **data)
        net.value_and_grad(p, **data)
        net.step(p, s, **data)  # the fast path is now installed
        return net

    def untouched() -> CompiledNet:
        return bpc.compile(source + "\n# another\n", backend="llvm")

    want = compiled(source, "numpy", "float64")
    for make in (fresh, untouched):
        net = make()
        gc.collect()
        p = net.init(seed=1)
        s = net.init_state(p)
        p_want = want.init(seed=1)
        s_want = want.init_state(p_want)
        for _ in range(3):
            assert_close(net.forward(p, **inputs), want.forward(p_want, **inputs), 1e-12,
                         "forward")
            assert_close(net.loss(p, **data), want.loss(p_want, **data), 1e-12, "loss")
            assert_close(net.value_and_grad(p, **data)[1],
                         want.value_and_grad(p_want, **data)[1], 1e-12, "grad")
            assert_close(net.step(p, s, **data), want.step(p_want, s_want, **data), 1e-12,
                         "step")
            gc.collect()
        # the step builtin alone keeps everything it calls alive
        step = net.step
        del net
        gc.collect()
        assert_close(step(p, s, **data), want.step(p_want, s_want, **data), 1e-12,
                     "step without its network")
        assert_close(p, p_want, 1e-11, "param")


# ---------------------------------------------------------------- (e) the IR


def _parse(text: str) -> llvm.ModuleRef:
    module = llvm.parse_assembly(text)
    module.verify()
    return module


def _defined(module: llvm.ModuleRef) -> set[str]:
    return {f.name for f in module.functions if not f.is_declaration}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("path", example_paths(), ids=lambda p: p.name)
def test_code_parses_and_names_every_entry_point(path: Path, dtype: str) -> None:
    net = compiled(path.read_text(), "llvm", dtype)
    defined = _defined(_parse(net.code()))
    assert {"bpc_forward", "bpc_loss", "bpc_value_and_grad", "bpc_step"} <= defined


def test_code_of_a_network_without_loss() -> None:
    net = bpc.compile("input x[N, 2]\nparam W[2, 2]\ny = softmax(x @ W)\n", backend="llvm")
    defined = _defined(_parse(net.code()))
    assert "bpc_forward" in defined
    assert not {"bpc_loss", "bpc_value_and_grad", "bpc_step"} & defined


def test_cli_compile_writes_ir_that_parses(tmp_path: Path, capsys) -> None:
    out = tmp_path / "net.ll"
    assert cli_main(["compile", str(EXAMPLES / "mlp.bp"), "--backend", "llvm",
                     "-o", str(out)]) == 0
    capsys.readouterr()
    module = _parse(out.read_text())
    assert {"bpc_forward", "bpc_loss", "bpc_value_and_grad", "bpc_step"} <= _defined(module)
    # and it is a whole program: nothing it calls is left undefined but BLAS, the C
    # library's functions the thread pool waits with and the packed GEMM's allocator
    undefined = {f.name for f in module.functions if f.is_declaration
                 and not f.name.startswith("llvm.")}
    blas = find_blas()
    allowed = {blas.sgemm, blas.dgemm, blas.set_threads} if blas else set()
    assert undefined <= allowed | set(threads.LIBC) | set(gemm.LIBC)


def test_cli_show_prints_the_ir_of_one_gradient(capsys) -> None:
    """xor: W1's gradient passes through d_h_pre (the sigmoid of the hidden layer), W2's
    does not; each prints only its own chain, as kernels defined in the network's IR."""
    path = str(EXAMPLES / "xor.bp")
    module = _parse(compiled((EXAMPLES / "xor.bp").read_text(), "llvm", "float64").code())
    shown = {}
    for param in ("W1", "W2"):
        assert cli_main(["show", path, "--backend", "llvm", "--param", param]) == 0
        shown[param] = capsys.readouterr().out
    for param, text in shown.items():
        assert f"param {param} " in text and f"d_{param} " in text
        assert "LLVM IR" in text
        other = "W2" if param == "W1" else "W1"
        assert f"param {other} " not in text
        defines = re.findall(r'define [^@]*@"?([\w.]+)"?\(', text)
        assert defines, text
        assert set(defines) <= _defined(module)
    assert "bpc.d_h_pre" in re.findall(r'define [^@]*@"?([\w.]+)"?\(', shown["W1"])
    assert "d_h_pre" not in shown["W2"]
