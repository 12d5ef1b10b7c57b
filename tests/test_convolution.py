"""Convolution and pooling (SPEC, "Tensors of any rank", bullets "Convolution" and
"Pooling"): `conv2d`, `conv1d`, the layer sugar `conv`, `max_pool2d`, `avg_pool2d`,
`max_pool1d`, `avg_pool1d`, on both backends.

Few networks are compiled, each holding many ops:

- OPS: params of fixed sizes only; conv2d in eight configurations (strides 1-3, padding
  0-2 and padding larger than the kernel, dilation 1-2, groups 1/2/3 with O = C and O != C,
  depthwise, non-square kernels and images, a 1x1 kernel, a kernel as large as the image,
  options as integers and as lists), conv1d in three, max and avg pooling 2-D and 1-D
  (default stride, overlapping windows, gaps between windows, padding up to half the
  kernel), and a chain (grouped conv1d, then max pooling). Its loss is `sum(sin(o))` over
  the outputs, so every op's adjoint differs at every entry. (Few ops: the LLVM backend's
  gradient kernel for this net takes seconds to build, roughly 0.15-0.3 s per conv op);
- TIES: max pooling over windows with ties (constant images, a negative constant image with
  -inf padding, small-integer images), default and overlapping windows;
- SUGAR: `conv` layers (declared params, bias broadcast over H and W, a batch of any
  size); SCALE: two large layers, init only (He for relu, Glorot otherwise);
- LENET: conv, relu, max pool, conv, avg pool, flatten, dense, cross_entropy with
  class-index targets; a batch of size N; trained with `step`.

Oracles:
a. forward: NumPy written here (one shifted strided slice per kernel offset, zero or -inf
   padding, a loop over groups), and torch.nn.functional where torch is installed
   (`pytest.importorskip("torch")` inside those tests: the file runs without it);
b. gradients (float64): PyTorch's autograd to 1e-11, central differences
   (`bpc.gradcheck`), and for max pooling with ties a mask written here with a NumPy loop
   (first maximum of each window in row-major order, as PyTorch on CPU; overlapping
   windows accumulate);
c. both backends agree to 1e-12 on forward values, the loss and every gradient; float32
   networks follow the float64 results to float32's precision;
d. `step` gives the same params on both backends;
e. bad programs: a located BPShapeError / BPTypeError whose message names the problem.
"""

from __future__ import annotations

import math
import re
from functools import cache
from types import SimpleNamespace

import numpy as np
import pytest

import bpcompile as bpc
from bpcompile.errors import BPError, BPShapeError, BPTypeError

BACKENDS = ("numpy", "llvm")


# ------------------------------------------------------------ the reference, in NumPy

def _per_axis(value, spatial: int) -> tuple[int, ...]:
    return tuple(value) if isinstance(value, (list, tuple)) else (value,) * spatial


def _window_slices(offset, stride, sizes) -> tuple[slice, ...]:
    """The entries of the padded input that kernel offset `offset` meets, one per output."""
    return tuple(slice(o, o + s * (n - 1) + 1, s) for o, s, n in zip(offset, stride, sizes))


def _out_sizes(shape, kernel, stride, padding, dilation) -> tuple[int, ...]:
    return tuple((n + 2 * p - d * (k - 1) - 1) // s + 1
                 for n, k, s, p, d in zip(shape, kernel, stride, padding, dilation))


def np_conv(x, w, stride=1, padding=0, dilation=1, groups=1):
    spatial = x.ndim - 2
    stride, padding, dilation = (_per_axis(v, spatial) for v in (stride, padding, dilation))
    sizes = _out_sizes(x.shape[2:], w.shape[2:], stride, padding, dilation)
    xp = np.pad(x, [(0, 0), (0, 0)] + [(p, p) for p in padding])
    n, c = x.shape[:2]
    o = w.shape[0]
    cg, og = c // groups, o // groups
    out = np.zeros((n, o) + sizes)
    for k in np.ndindex(*w.shape[2:]):
        offset = tuple(ki * d for ki, d in zip(k, dilation))
        patch = xp[(slice(None), slice(None)) + _window_slices(offset, stride, sizes)]
        for g in range(groups):
            taps = w[(slice(g * og, (g + 1) * og), slice(None)) + k]          # [og, cg]
            out[:, g * og:(g + 1) * og] += np.einsum(
                "nc...,oc->no...", patch[:, g * cg:(g + 1) * cg], taps)
    return out


def np_pool(kind: str, x, kernel, stride=None, padding=0):
    spatial = x.ndim - 2
    kernel = _per_axis(kernel, spatial)
    stride = kernel if stride is None else _per_axis(stride, spatial)
    padding = _per_axis(padding, spatial)
    sizes = _out_sizes(x.shape[2:], kernel, stride, padding, (1,) * spatial)
    fill = -np.inf if kind == "max" else 0.0
    xp = np.pad(x, [(0, 0), (0, 0)] + [(p, p) for p in padding], constant_values=fill)
    windows = [xp[(slice(None), slice(None)) + _window_slices(k, stride, sizes)]
               for k in np.ndindex(*kernel)]
    if kind == "max":
        return np.max(np.stack(windows), axis=0)
    return np.sum(np.stack(windows), axis=0) / math.prod(kernel)


NP = SimpleNamespace(
    conv2d=np_conv, conv1d=np_conv, sin=np.sin, tanh=np.tanh, relu=lambda v: np.maximum(v, 0),
    max_pool2d=lambda x, k, **o: np_pool("max", x, k, **o),
    max_pool1d=lambda x, k, **o: np_pool("max", x, k, **o),
    avg_pool2d=lambda x, k, **o: np_pool("avg", x, k, **o),
    avg_pool1d=lambda x, k, **o: np_pool("avg", x, k, **o),
    sum=np.sum,
)


@cache
def _torch_namespace() -> SimpleNamespace:
    import torch
    import torch.nn.functional as F

    def pool(fn):
        def run(x, k, stride=None, padding=0):
            return fn(x, k, stride=stride, padding=padding)
        return run

    return SimpleNamespace(
        conv2d=F.conv2d, conv1d=F.conv1d, sin=torch.sin, tanh=torch.tanh, relu=torch.relu,
        max_pool2d=pool(F.max_pool2d), max_pool1d=pool(F.max_pool1d),
        avg_pool2d=pool(F.avg_pool2d), avg_pool1d=pool(F.avg_pool1d),  # count_include_pad
        sum=torch.sum,
    )


def _bp_value(v) -> str:
    return f"[{', '.join(map(str, v))}]" if isinstance(v, (list, tuple)) else str(v)


def _bp_call(fn: str, args: tuple, opts: dict) -> str:
    parts = list(map(str, args)) + [f"{k}={_bp_value(v)}" for k, v in opts.items()]
    return f"{fn}({', '.join(parts)})"


def conv_op(name: str, fn: str, x: str, w: str, **opts):
    """(output, .bp expression, the same in namespace m over params a): one source of
    truth for the options, written into the .bp text and given to the references."""
    return (name, _bp_call(fn, (x, w), opts),
            lambda m, a: getattr(m, fn)(getattr(a, x), getattr(a, w), **opts))


def pool_op(name: str, fn: str, x: str, kernel, **opts):
    return (name, _bp_call(fn, (x, _bp_value(kernel)), opts),
            lambda m, a: getattr(m, fn)(getattr(a, x), kernel, **opts))


# ---------------------------------------------------------------------------- OPS net

OPS_PARAMS = {
    "Xa": (2, 3, 7, 6), "Xg": (2, 6, 5, 7), "Xh": (2, 4, 9, 8),
    "Xl": (2, 3, 9), "Xm": (2, 6, 10),
    "W1": (4, 3, 3, 2), "W2": (6, 3, 3, 3), "W3": (4, 3, 2, 3), "W4": (6, 2, 3, 3),
    "W5": (6, 2, 3, 2), "W6": (5, 3, 1, 1), "W7": (3, 3, 7, 6), "W8": (3, 1, 3, 3),
    "V1": (4, 3, 3), "V2": (2, 3, 4), "V3": (3, 2, 3),
}

OPS = [
    # conv2d: x[N, C, H, W], W[O, C/groups, KH, KW]
    conv_op("c2_plain", "conv2d", "Xa", "W1"),                    # non-square kernel, image
    conv_op("c2_s2p1", "conv2d", "Xa", "W2", stride=2, padding=1),
    conv_op("c2_lists", "conv2d", "Xa", "W3", stride=[3, 1], padding=[2, 0], dilation=[1, 2]),
    conv_op("c2_g3", "conv2d", "Xg", "W4", padding=1, groups=3),
    conv_op("c2_g2_dil", "conv2d", "Xh", "W5", stride=2, padding=[2, 1], dilation=2, groups=2),
    conv_op("c2_1x1", "conv2d", "Xa", "W6", stride=2, padding=[2, 1]),  # padding > kernel:
    conv_op("c2_whole", "conv2d", "Xa", "W7", stride=3, padding=2),     # windows of zeros
    conv_op("c2_depthwise", "conv2d", "Xa", "W8", stride=[1, 2], padding=2, dilation=2,
            groups=3),
    # conv1d: x[N, C, L], W[O, C/groups, K]
    conv_op("c1_plain", "conv1d", "Xl", "V1"),
    conv_op("c1_s2p2d2", "conv1d", "Xl", "V2", stride=[2], padding=2, dilation=2),
    conv_op("c1_g3", "conv1d", "Xm", "V3", stride=3, padding=1, groups=3),
    # pooling
    pool_op("mp2_default", "max_pool2d", "Xa", 2),
    pool_op("mp2_overlap", "max_pool2d", "Xa", [3, 2], stride=[2, 1], padding=[1, 1]),
    pool_op("mp2_gap", "max_pool2d", "Xh", [2, 3], stride=3, padding=[1, 0]),
    pool_op("ap2_overlap", "avg_pool2d", "Xa", [3, 2], stride=[2, 1], padding=[1, 1]),
    pool_op("ap2_same", "avg_pool2d", "Xh", 3, stride=1, padding=1),
    pool_op("mp1_overlap", "max_pool1d", "Xl", 3, stride=2, padding=1),
    pool_op("ap1_wide", "avg_pool1d", "Xm", 4, stride=1, padding=2),
    # a chain: grouped conv1d, then overlapping max pooling
    ("chain1", "max_pool1d(conv1d(Xm, V3, stride=3, padding=1, groups=3), 2, stride=1)",
     lambda m, a: m.max_pool1d(m.conv1d(a.Xm, a.V3, stride=3, padding=1, groups=3), 2,
                               stride=1)),
]

# The output shapes, worked out by hand from SPEC's formula (a check on the oracle too).
OPS_SHAPES = {
    "c2_plain": (2, 4, 5, 5), "c2_s2p1": (2, 6, 4, 3), "c2_lists": (2, 4, 4, 2),
    "c2_g3": (2, 6, 5, 7), "c2_g2_dil": (2, 6, 5, 4), "c2_1x1": (2, 5, 6, 4),
    "c2_whole": (2, 3, 2, 2), "c2_depthwise": (2, 3, 7, 3),
    "c1_plain": (2, 4, 7), "c1_s2p2d2": (2, 2, 4), "c1_g3": (2, 3, 4),
    "mp2_default": (2, 3, 3, 3), "mp2_overlap": (2, 3, 4, 7), "mp2_gap": (2, 4, 4, 2),
    "ap2_overlap": (2, 3, 4, 7), "ap2_same": (2, 4, 9, 8),
    "mp1_overlap": (2, 3, 5), "ap1_wide": (2, 6, 11),
    "chain1": (2, 3, 3),
}


def _ops_source() -> str:
    lines = ["network convolution_ops"]
    lines += [f"param {n}[{', '.join(map(str, s))}]" for n, s in OPS_PARAMS.items()]
    lines += [f"{name} = {expr}" for name, expr, _ in OPS]
    lines.append("output " + ", ".join(name for name, _, _ in OPS))
    lines.append("loss " + " + ".join(f"sum(sin({name}))" for name, _, _ in OPS))
    return "\n".join(lines) + "\n"


OPS_SOURCE = _ops_source()


def ops_params(dtype=np.float64) -> dict[str, np.ndarray]:
    """Continuous random values: no ties in any pooling window."""
    rng = np.random.default_rng(20240612)
    p = {}
    for name, shape in OPS_PARAMS.items():
        x = rng.standard_normal(shape)
        p[name] = (x if name.startswith("X") else 0.5 * x).astype(dtype)
    return p


@cache
def ops_net(backend: str, dtype: str = "float64") -> bpc.CompiledNet:
    return bpc.compile(OPS_SOURCE, backend=backend, dtype=dtype)


def ops_loss(m, a):
    return sum(m.sum(m.sin(f(m, a))) for _, _, f in OPS)


@cache
def ops_forward(backend: str, dtype: str = "float64") -> dict[str, np.ndarray]:
    return ops_net(backend, dtype).forward(ops_params(np.dtype(dtype)))


@cache
def ops_grads(backend: str, dtype: str = "float64") -> tuple[float, dict[str, np.ndarray]]:
    return ops_net(backend, dtype).value_and_grad(ops_params(np.dtype(dtype)))


def close(got, expected, rtol: float, what: str, atol_scale: float | None = None) -> None:
    """assert_allclose with an absolute floor of rtol times the array's largest entry."""
    got = np.asarray(got, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert got.shape == expected.shape, f"{what}: shape {got.shape}, expected {expected.shape}"
    scale = float(np.max(np.abs(expected))) if expected.size else 0.0
    atol = (atol_scale if atol_scale is not None else rtol) * max(scale, 1e-300)
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=atol, err_msg=what)


def test_ops_net_declares_what_it_was_given() -> None:
    net = ops_net("numpy")
    assert net.params == OPS_PARAMS
    assert net.outputs == tuple(name for name, _, _ in OPS)
    assert set(OPS_SHAPES) == set(net.outputs)


def test_numpy_reference_shapes_and_a_hand_computed_entry() -> None:
    """The oracle itself: SPEC's output sizes, and two entries summed by hand."""
    a = SimpleNamespace(**ops_params())
    for name, _, f in OPS:
        assert f(NP, a).shape == OPS_SHAPES[name], name
    # c2_s2p1[0, 1, 0, 0]: padding 1, so kernel row/col 0 meet zeros; input rows/cols 0..1
    x, w = a.Xa, a.W2
    expected = sum(x[0, c, i, j] * w[1, c, i + 1, j + 1]
                   for c in range(3) for i in range(2) for j in range(2))
    assert np_conv(x, w, stride=2, padding=1)[0, 1, 0, 0] == pytest.approx(expected, 1e-13)
    # c2_g3[1, 4, 2, 3]: output channel 4 is in group 2, which reads input channels 4, 5
    x, w = a.Xg, a.W4
    expected = sum(x[1, 4 + c, 1 + i, 2 + j] * w[4, c, i, j]
                   for c in range(2) for i in range(3) for j in range(3))
    assert np_conv(x, w, padding=1, groups=3)[1, 4, 2, 3] == pytest.approx(expected, 1e-13)
    # avg pooling counts the padding: a corner window of 3x3 over padding 1 holds 4 entries
    x = a.Xh
    assert np_pool("avg", x, 3, stride=1, padding=1)[0, 0, 0, 0] == pytest.approx(
        x[0, 0, 0:2, 0:2].sum() / 9, 1e-13)


@pytest.mark.parametrize("backend", BACKENDS)
def test_ops_forward_equals_numpy(backend: str) -> None:
    """a. Every output, shape and value, is the NumPy reference's."""
    a = SimpleNamespace(**ops_params())
    out = ops_forward(backend)
    assert set(out) == {name for name, _, _ in OPS}
    failures = []
    for name, expr, f in OPS:
        expected = f(NP, a)
        got = np.asarray(out[name])
        if got.shape != expected.shape:
            failures.append(f"{name} = {expr}: shape {got.shape}, NumPy {expected.shape}")
        elif not np.allclose(got, expected, rtol=1e-12,
                             atol=1e-12 * max(1.0, float(np.max(np.abs(expected))))):
            worst = float(np.max(np.abs(got - expected)))
            failures.append(f"{name} = {expr}: off by up to {worst:.3g}")
    assert not failures, "\n".join(failures)


def test_ops_loss_equals_numpy() -> None:
    expected = float(ops_loss(NP, SimpleNamespace(**ops_params())))
    for backend in BACKENDS:
        assert ops_grads(backend)[0] == pytest.approx(expected, rel=1e-12), backend
        assert ops_net(backend).loss(ops_params()) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_ops_forward_matches_torch(backend: str) -> None:
    """a. torch.nn.functional's conv1d/conv2d/max_pool/avg_pool on the same arrays
    (and the NumPy reference agrees with it)."""
    torch = pytest.importorskip("torch")
    p = ops_params()
    t = SimpleNamespace(**{n: torch.tensor(v, dtype=torch.float64) for n, v in p.items()})
    a = SimpleNamespace(**p)
    out = ops_forward(backend)
    for name, expr, f in OPS:
        expected = f(_torch_namespace(), t).numpy()
        close(f(NP, a), expected, 1e-12, f"NumPy reference: {name} = {expr}")
        close(out[name], expected, 1e-11, f"{backend}: {name} = {expr}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_ops_gradients_match_torch(backend: str) -> None:
    """b. PyTorch's autograd through every op, to 1e-11."""
    torch = pytest.importorskip("torch")
    t = {n: torch.tensor(v, dtype=torch.float64, requires_grad=True)
         for n, v in ops_params().items()}
    loss = ops_loss(_torch_namespace(), SimpleNamespace(**t))
    loss.backward()
    got_loss, grads = ops_grads(backend)
    assert got_loss == pytest.approx(loss.item(), rel=1e-12)
    assert set(grads) == set(t)
    for name, tensor in t.items():
        close(grads[name], tensor.grad.numpy(), 1e-11, f"{backend}: d loss / d {name}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_ops_gradients_match_torch_op_by_op(backend: str) -> None:
    """b. One op at a time (only that op's output in the loss): a wrong gradient is
    pinned to its configuration. The network's gradient for op k's operands, minus the
    others' contributions, is torch's gradient of sum(sin(op k))."""
    torch = pytest.importorskip("torch")
    _, grads = ops_grads(backend)
    p = ops_params()
    per_op = {}
    for name, expr, f in OPS:
        t = {n: torch.tensor(v, dtype=torch.float64, requires_grad=True) for n, v in p.items()}
        torch.sum(torch.sin(f(_torch_namespace(), SimpleNamespace(**t)))).backward()
        per_op[name] = {n: (v.grad.numpy() if v.grad is not None else np.zeros(v.shape))
                        for n, v in t.items()}
    failures = []
    expressions = {name: expr for name, expr, _ in OPS}
    for param, shape in OPS_PARAMS.items():
        users = [name for name in per_op if np.any(per_op[name][param])]
        for name in users:
            others = sum((per_op[o][param] for o in users if o != name),
                         np.zeros(shape))
            own = grads[param] - others
            expected = per_op[name][param]
            scale = float(np.max(np.abs(grads[param])))
            worst = float(np.max(np.abs(own - expected)))
            if worst > 1e-11 * scale:
                failures.append(f"{name} ({expressions[name]}): "
                                f"d/d {param} off by {worst:.3g} (scale {scale:.3g})")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("backend", BACKENDS)
def test_ops_central_differences(backend: str) -> None:
    """b. Central differences on sampled entries of every param, without torch."""
    result = bpc.gradcheck(ops_net(backend), ops_params(), max_entries=10, seed=4)
    assert result.ok, result


def test_ops_backends_agree() -> None:
    """c. numpy and llvm: forward values, loss and every gradient to 1e-12."""
    out0, out1 = ops_forward("numpy"), ops_forward("llvm")
    for name in out0:
        close(out1[name], out0[name], 1e-12, f"output {name}")
    (l0, g0), (l1, g1) = ops_grads("numpy"), ops_grads("llvm")
    assert l1 == pytest.approx(l0, rel=1e-12)
    assert set(g0) == set(g1) == set(OPS_PARAMS)
    for name in g0:
        assert g0[name].shape == OPS_PARAMS[name]
        close(g1[name], g0[name], 1e-12, f"d loss / d {name}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_ops_float32(backend: str) -> None:
    """c. float32: float32 arrays within float32's precision of the float64 results."""
    out32, out64 = ops_forward(backend, "float32"), ops_forward("numpy")
    for name, expr, _ in OPS:
        assert out32[name].dtype == np.float32, name
        close(out32[name], out64[name], 2e-5, f"float32 {name} = {expr}", atol_scale=2e-5)
    (l32, g32), (l64, g64) = ops_grads(backend, "float32"), ops_grads("numpy")
    assert l32 == pytest.approx(l64, rel=1e-5)
    for name in g64:
        assert g32[name].dtype == np.float32, name
        close(g32[name], g64[name], 1e-4, f"float32 d loss / d {name}", atol_scale=1e-5)


def test_ops_float32_backends_agree() -> None:
    (l0, g0), (l1, g1) = ops_grads("numpy", "float32"), ops_grads("llvm", "float32")
    assert l1 == pytest.approx(l0, rel=1e-5)
    for name in g0:
        close(g1[name], g0[name], 1e-4, f"float32 d loss / d {name}", atol_scale=1e-5)


# ------------------------------------------------------------ WIDE: llvm's two conv paths
#
# The llvm backend convolves layers with small windows directly (vectors along each output
# row, a row in chunks of up to 4 vectors, the last one partial) and the others as im2col
# and a product. The OPS images are narrower than one vector; these rows are several chunks
# wide (37 positions: 10 float64 vectors on AVX2, 5 float32 ones), with padding and dilation
# along the row and strides down the image, so both paths meet their edges.

WIDE_PARAMS = {"Xw": (3, 2, 5, 37), "Vw": (2, 4, 41), "Ka": (4, 2, 3, 5), "Kb": (4, 1, 2, 3),
               "Kc": (3, 4, 5), "Kd": (4, 2, 5, 7)}
WIDE = [
    conv_op("wide_pad_dil", "conv2d", "Xw", "Ka", stride=[2, 1], padding=[1, 3],
            dilation=[1, 2]),
    conv_op("wide_groups", "conv2d", "Xw", "Kb", padding=[0, 1], groups=2),
    conv_op("wide_1d", "conv1d", "Vw", "Kc", padding=2),
    conv_op("wide_im2col", "conv2d", "Xw", "Kd", padding=[2, 3]),  # 70 taps: not direct
]


@cache
def wide_net(backend: str, dtype: str = "float64") -> bpc.CompiledNet:
    lines = ["network wide"]
    lines += [f"param {name}{list(shape)}" for name, shape in WIDE_PARAMS.items()]
    lines += [f"{name} = {expr}" for name, expr, _ in WIDE]
    lines.append("output " + ", ".join(name for name, _, _ in WIDE))
    lines.append("loss " + " + ".join(f"sum({name} * {name})" for name, _, _ in WIDE))
    return bpc.compile("\n".join(lines) + "\n", backend=backend, dtype=dtype)


def wide_params() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(11)
    return {name: rng.uniform(-1, 1, shape) for name, shape in WIDE_PARAMS.items()}


def test_wide_rows_take_both_llvm_paths() -> None:
    """The geometry each WIDE op has goes the way its comment says."""
    from bpcompile.backends.llvm import direct
    from bpcompile.backends.llvm.windows import Geometry

    taken = {}
    for name, shape in (("wide_pad_dil", (2, 5, 37, 4, 3, 35, 3, 5, 2, 1, 1, 3, 1, 2, 1)),
                        ("wide_im2col", (2, 5, 37, 4, 5, 37, 5, 7, 1, 1, 2, 3, 1, 1, 1))):
        taken[name] = direct.suits(Geometry(*shape))
    assert taken == {"wide_pad_dil": True, "wide_im2col": False}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_wide_rows(dtype: str) -> None:
    """Forward values against NumPy written here, and every gradient against the numpy
    backend (1e-12 in float64, float32's precision in float32)."""
    params = wide_params()
    m = SimpleNamespace(conv2d=np_conv, conv1d=np_conv)
    a = SimpleNamespace(**params)
    cast = {k: v.astype(dtype) for k, v in params.items()}
    out = wide_net("llvm", dtype).forward(cast)
    tol = 1e-12 if dtype == "float64" else 2e-5
    for name, expr, ref in WIDE:
        close(out[name], ref(m, a), tol, f"{name} = {expr}", atol_scale=tol)
    l0, g0 = wide_net("numpy").value_and_grad(params)
    l1, g1 = wide_net("llvm", dtype).value_and_grad(cast)
    assert l1 == pytest.approx(l0, rel=tol * 10)
    for name in WIDE_PARAMS:
        close(g1[name], g0[name], 1e-12 if dtype == "float64" else 1e-4, f"d loss / d {name}",
              atol_scale=tol)


@pytest.mark.parametrize("backend", BACKENDS)
def test_weight_gradient_ignores_values_no_window_reads(backend: str) -> None:
    """An inf in an input column that no window reads (dilation 3 skips it) leaves the
    kernel's gradient finite. llvm's direct weight gradient once read a whole vector of
    input past the row's last position and multiplied it by the gradient's zeros there:
    0 * inf = NaN (found by review). Oracle: the sums written out by hand."""
    net = bpc.compile("network skip\ninput X[1, 1, 1, 5]\nparam W[1, 1, 1, 2]\n"
                      "y = conv2d(X, W, dilation=[1, 3])\noutput y\nloss sum(y)\n",
                      backend=backend)
    x = np.array([1.0, 2.0, np.inf, 4.0, 5.0]).reshape(1, 1, 1, 5)
    loss, grads = net.value_and_grad({"W": np.ones((1, 1, 1, 2))}, X=x)
    assert loss == 12.0  # (1 + 4) + (2 + 5)
    np.testing.assert_array_equal(grads["W"].ravel(), [1 + 2, 4 + 5])


@pytest.mark.parametrize("backend", BACKENDS)
def test_max_pool_gradient_never_goes_to_padding(backend: str) -> None:
    """Windows whose real values are all -inf, with padding first in row-major order: each
    window's gradient goes to its first real element, so none is lost (the numpy backend
    once gave it to the padding). Oracle: PyTorch's rule, written out: 78 = the sum of the
    weights reaches X, and the first row's shares as PyTorch gives them."""
    net = bpc.compile("network pad\nparam X[1, 1, 3, 4]\ninput w[1, 1, 3, 4]\n"
                      "a = max_pool2d(X, 3, stride=1, padding=1)\noutput a\n"
                      "loss sum(a * w)\n", backend=backend)
    weights = np.arange(1.0, 13.0).reshape(1, 1, 3, 4)
    _, grads = net.value_and_grad({"X": np.full((1, 1, 3, 4), -np.inf)}, w=weights)
    assert grads["X"].sum() == weights.sum()
    np.testing.assert_array_equal(grads["X"][0, 0, 0], [1 + 2 + 5 + 6, 3 + 7, 4 + 8, 0])


# ------------------------------------------------------------ TIES: max pooling's rule

TIES_SOURCE = """
network pool_ties
input  wa[2, 3, 2, 3]
input  wb[2, 3, 4, 6]
input  wc[2, 3, 5, 3]
input  wd[2, 2, 4]
input  we[2, 2, 8]
param  E[2, 3, 4, 6]
param  F[2, 2, 8]
a = max_pool2d(E, 2)
b = max_pool2d(E, 3, stride=1, padding=1)
c = max_pool2d(E, [2, 3], stride=[1, 2], padding=[1, 1])
d = max_pool1d(F, 2)
e = max_pool1d(F, 3, stride=1, padding=1)
output a, b, c, d, e
loss sum(a * wa) + sum(b * wb) + sum(c * wc) + sum(d * wd) + sum(e * we)
"""

TIES_POOLS = {  # output: (input, kernel, stride, padding, weights)
    "a": ("E", (2, 2), (2, 2), (0, 0), "wa"),
    "b": ("E", (3, 3), (1, 1), (1, 1), "wb"),
    "c": ("E", (2, 3), (1, 2), (1, 1), "wc"),
    "d": ("F", (2,), (2,), (0,), "wd"),
    "e": ("F", (3,), (1,), (1,), "we"),
}


def ties_data() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """E: channel 0 of sample 0 constant 1, channel 1 constant -5 (the -inf padding must not
    win), the rest small integers (ties in most windows); F: a constant row and integer
    rows. Weights: distinct, positive, so each window's adjoint is its own number."""
    rng = np.random.default_rng(11)
    E = rng.integers(0, 3, size=(2, 3, 4, 6)).astype(np.float64)
    E[0, 0] = 1.0
    E[0, 1] = -5.0
    F = rng.integers(-1, 2, size=(2, 2, 8)).astype(np.float64)
    F[1, 0] = 2.0
    data = {w: rng.uniform(1, 2, size=shape) for w, shape in
            (("wa", (2, 3, 2, 3)), ("wb", (2, 3, 4, 6)), ("wc", (2, 3, 5, 3)),
             ("wd", (2, 2, 4)), ("we", (2, 2, 8)))}
    return {"E": E, "F": F}, data


def first_max_pool(x, kernel, stride, padding, adjoint):
    """(pooled values, gradient) with a plain loop: each window's maximum over the entries
    inside the image (padding is -inf: never the maximum, as padding <= kernel / 2), the
    adjoint added at the first maximum in row-major order of the window."""
    spatial = len(kernel)
    sizes = _out_sizes(x.shape[2:], kernel, stride, padding, (1,) * spatial)
    out = np.empty(x.shape[:2] + sizes)
    grad = np.zeros_like(x)
    for n, c in np.ndindex(*x.shape[:2]):
        for o in np.ndindex(*sizes):
            best, where = -np.inf, None
            for k in np.ndindex(*kernel):                       # row-major order
                i = tuple(oi * s - p + ki for oi, s, p, ki in zip(o, stride, padding, k))
                inside = all(0 <= ii < size for ii, size in zip(i, x.shape[2:]))
                if inside and x[(n, c) + i] > best:             # strict: the first stays
                    best, where = x[(n, c) + i], i
            out[(n, c) + o] = best
            grad[(n, c) + where] += adjoint[(n, c) + o]
    return out, grad


def ties_expected() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], float]:
    p, data = ties_data()
    outputs, grads, loss = {}, {n: np.zeros_like(v) for n, v in p.items()}, 0.0
    for out, (x, kernel, stride, padding, w) in TIES_POOLS.items():
        value, grad = first_max_pool(p[x], kernel, stride, padding, data[w])
        outputs[out] = value
        grads[x] += grad
        loss += float(np.sum(value * data[w]))
    return outputs, grads, loss


@cache
def ties_run(backend: str, dtype: str = "float64"):
    net = bpc.compile(TIES_SOURCE, backend=backend, dtype=dtype)
    p, data = ties_data()
    p = {n: v.astype(dtype) for n, v in p.items()}
    return net.forward(p, **data), net.value_and_grad(p, **data)


def test_tie_oracle_written_out() -> None:
    """The oracle's own numbers where they matter: a constant window gives everything to
    its top-left entry; overlapping windows add up; -inf padding loses to -5."""
    p, data = ties_data()
    outputs = ties_expected()[0]
    # a: 2x2 windows side by side over a constant channel: the top-left of each window
    g = np.zeros((4, 6))
    g[0::2, 0::2] = data["wa"][0, 0]
    np.testing.assert_array_equal(first_max_pool(p["E"], (2, 2), (2, 2), (0, 0),
                                                 data["wa"])[1][0, 0], g)
    # b: 3x3 windows at stride 1 with padding 1 over a constant channel: the window at
    # (i, j) starts at (i - 1, j - 1), clipped to the image: its first entry is
    # (max(i - 1, 0), max(j - 1, 0)); (0, 0) collects from four windows
    gb = first_max_pool(p["E"], (3, 3), (1, 1), (1, 1), data["wb"])[1][0, 1]
    w = data["wb"][0, 1]
    assert gb[0, 0] == pytest.approx(w[0, 0] + w[0, 1] + w[1, 0] + w[1, 1], rel=1e-15)
    assert gb[2, 3] == pytest.approx(w[3, 4], rel=1e-15)
    assert gb[3, 5] == 0.0 and gb.sum() == pytest.approx(w.sum(), rel=1e-14)
    np.testing.assert_array_equal(outputs["b"][0, 1], -5.0)
    # every window's adjoint lands once
    for out, (x, _, _, _, wname) in TIES_POOLS.items():
        assert first_max_pool(p[x], *TIES_POOLS[out][1:4], data[wname])[1].sum() == \
            pytest.approx(data[wname].sum(), rel=1e-13), out


@pytest.mark.parametrize("backend", BACKENDS)
def test_max_pool_ties(backend: str) -> None:
    """Forward values and the gradient to the first maximum of each window in row-major
    order (constant images, a negative constant image with padding, integer images;
    overlapping windows accumulate), exactly."""
    out, (loss, grads) = ties_run(backend)
    expected_out, expected_grads, expected_loss = ties_expected()
    for name, value in expected_out.items():
        np.testing.assert_array_equal(out[name], value, err_msg=f"{backend}: {name}")
    assert loss == pytest.approx(expected_loss, rel=1e-14)
    for name, value in expected_grads.items():
        np.testing.assert_allclose(grads[name], value, rtol=1e-14, atol=0,
                                   err_msg=f"{backend}: d loss / d {name}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_max_pool_ties_float32(backend: str) -> None:
    """The same rule in float32 (every value of the data is exact in float32)."""
    _, (_, grads) = ties_run(backend, "float32")
    for name, value in ties_expected()[1].items():
        assert grads[name].dtype == np.float32
        close(grads[name], value, 1e-6, f"{backend} float32: d loss / d {name}")


def test_max_pool_ties_match_torch() -> None:
    """PyTorch on CPU follows the same rule (its gradient is the oracle too)."""
    torch = pytest.importorskip("torch")
    T = _torch_namespace()
    p, data = ties_data()
    t = {n: torch.tensor(v, requires_grad=True) for n, v in p.items()}
    total = 0
    for x, kernel, stride, padding, w in TIES_POOLS.values():
        fn = T.max_pool2d if len(kernel) == 2 else T.max_pool1d
        total = total + torch.sum(fn(t[x], list(kernel), stride=list(stride),
                                     padding=list(padding)) * torch.tensor(data[w]))
    total.backward()
    for backend in BACKENDS:
        _, (_, grads) = ties_run(backend)
        for name in p:
            np.testing.assert_allclose(grads[name], t[name].grad.numpy(), rtol=1e-14,
                                       atol=0, err_msg=f"{backend}: d loss / d {name}")


# -------------------------------------------------------------- SUGAR: the conv layer

SUGAR_SOURCE = """
network conv_layers
input x[N, 3, 9, 8]
c1 = conv(x, 5, 5, padding=2, act=relu)
c2 = conv(x, 4, 3, stride=2, act=tanh)
c3 = conv(x, 4, 1, stride=[1, 2], padding=[1, 0])
c4 = conv(c3, 3, 2)
output c1, c2, c3, c4
loss mean(sin(c1)) + mean(c2 * c2) + sum(sin(c3)) + sum(sin(c4))
"""
SUGAR_PARAMS = {
    "c1.W": (5, 3, 5, 5), "c1.b": (5,), "c2.W": (4, 3, 3, 3), "c2.b": (4,),
    "c3.W": (4, 3, 1, 1), "c3.b": (4,), "c4.W": (3, 4, 2, 2), "c4.b": (3,),
}

# Large layers for the init scale only (init runs no kernel: cheap on both backends).
SCALE_SOURCE = """
network conv_scale
input x[N, 16, 9, 8]
big = conv(x, 64, 5, padding=2, act=relu)
lin = conv(x, 48, 3, stride=2, act=tanh)
output big, lin
"""


@cache
def sugar_net(backend: str) -> bpc.CompiledNet:
    return bpc.compile(SUGAR_SOURCE, backend=backend)


def sugar_params() -> dict[str, np.ndarray]:
    """init's draw, with biases made non-zero (a real test of their broadcast)."""
    p = sugar_net("numpy").init(seed=3)
    rng = np.random.default_rng(8)
    for name, shape in SUGAR_PARAMS.items():
        if name.endswith(".b"):
            p[name] = rng.standard_normal(shape)
    return p


def sugar_reference(p, x) -> dict[str, np.ndarray]:
    def layer(v, name, act, **opts):
        return act(np_conv(v, p[f"{name}.W"], **opts) + p[f"{name}.b"][:, None, None])
    c3 = layer(x, "c3", lambda v: v, stride=[1, 2], padding=[1, 0])
    return {"c1": layer(x, "c1", NP.relu, padding=2), "c2": layer(x, "c2", np.tanh, stride=2),
            "c3": c3, "c4": layer(c3, "c4", lambda v: v)}


def sugar_x(n: int) -> np.ndarray:
    return np.random.default_rng(n).standard_normal((n, 3, 9, 8))


@pytest.mark.parametrize("backend", BACKENDS)
def test_conv_layer_declares_params(backend: str) -> None:
    """c.W[channels, C, kernel, kernel] and c.b[channels]; init draws those, biases zero."""
    net = sugar_net(backend)
    assert net.params == SUGAR_PARAMS
    p = net.init(seed=1)
    assert {n: v.shape for n, v in p.items()} == SUGAR_PARAMS
    for name in SUGAR_PARAMS:
        if name.endswith(".b"):
            np.testing.assert_array_equal(p[name], 0.0, err_msg=name)
        else:
            assert np.all(np.isfinite(p[name])) and np.std(p[name]) > 0, name


@pytest.mark.parametrize("backend", BACKENDS)
def test_conv_layer_init_scale(backend: str) -> None:
    """He for relu: std sqrt(2 / fan_in), fan_in = C * k * k = 400; Glorot otherwise: std
    sqrt(2 / (fan_in + fan_out)) (normal or uniform alike), fan_out = channels * k * k."""
    net = bpc.compile(SCALE_SOURCE, backend=backend)
    assert net.params == {"big.W": (64, 16, 5, 5), "big.b": (64,),
                          "lin.W": (48, 16, 3, 3), "lin.b": (48,)}
    p = net.init(seed=5)
    w1 = p["big.W"]                                                   # 25,600 draws
    assert abs(np.mean(w1)) < 0.05 * math.sqrt(2 / 400)
    assert np.std(w1) == pytest.approx(math.sqrt(2 / 400), rel=0.10)
    w2 = p["lin.W"]                                                   # 6,912 draws
    assert abs(np.mean(w2)) < 0.05 * math.sqrt(2 / (16 * 9 + 48 * 9))
    assert np.std(w2) == pytest.approx(math.sqrt(2 / (16 * 9 + 48 * 9)), rel=0.10)
    np.testing.assert_array_equal(p["big.b"], 0.0)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("n", [3, 1])
def test_conv_layer_forward(backend: str, n: int) -> None:
    """act(conv2d(x, c.W, stride, padding) + c.b), the bias broadcast over H and W; the
    batch size from the call."""
    p, x = sugar_params(), sugar_x(n)
    out = sugar_net(backend).forward(p, x=x)
    for name, value in sugar_reference(p, x).items():
        close(out[name], value, 1e-12, f"{backend} N={n}: {name}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_conv_layer_bias_broadcast(backend: str) -> None:
    """With W = 0 each output channel is act(b) at every (n, h, w)."""
    p = {n: np.zeros(s) for n, s in SUGAR_PARAMS.items()}
    for name in ("c1.b", "c2.b", "c3.b", "c4.b"):
        p[name] = np.linspace(-1.5, 2.0, SUGAR_PARAMS[name][0])
    out = sugar_net(backend).forward(p, x=sugar_x(2))
    acts = {"c1": NP.relu, "c2": np.tanh, "c3": lambda v: v, "c4": lambda v: v}
    for name, act in acts.items():
        expected = np.broadcast_to(act(p[f"{name}.b"])[None, :, None, None], out[name].shape)
        close(out[name], expected, 1e-15, f"{backend}: {name}")
    assert out["c1"].shape == (2, 5, 9, 8) and out["c4"].shape == (2, 3, 10, 3)


def test_conv_layer_gradients() -> None:
    """Both backends agree to 1e-12; central differences; torch's autograd (if there)."""
    p, x = sugar_params(), sugar_x(2)
    (l0, g0), (l1, g1) = (sugar_net(b).value_and_grad(p, x=x) for b in BACKENDS)
    assert l1 == pytest.approx(l0, rel=1e-12)
    assert set(g0) == set(g1) == set(SUGAR_PARAMS)
    for name in g0:
        close(g1[name], g0[name], 1e-12, f"d loss / d {name}")
    result = bpc.gradcheck(sugar_net("llvm"), p, max_entries=8, seed=2, x=x)
    assert result.ok, result
    try:
        import torch
    except ImportError:
        return
    t = {n: torch.tensor(v, requires_grad=True) for n, v in p.items()}
    F = torch.nn.functional
    tx = torch.tensor(x)
    c1 = torch.relu(F.conv2d(tx, t["c1.W"], t["c1.b"], padding=2))
    c2 = torch.tanh(F.conv2d(tx, t["c2.W"], t["c2.b"], stride=2))
    c3 = F.conv2d(tx, t["c3.W"], t["c3.b"], stride=[1, 2], padding=[1, 0])
    c4 = F.conv2d(c3, t["c4.W"], t["c4.b"])
    loss = (torch.mean(torch.sin(c1)) + torch.mean(c2 * c2) + torch.sum(torch.sin(c3))
            + torch.sum(torch.sin(c4)))
    loss.backward()
    assert l0 == pytest.approx(loss.item(), rel=1e-12)
    for name in p:
        close(g0[name], t[name].grad.numpy(), 1e-11, f"torch: d loss / d {name}")


# ------------------------------------------------------------------ LENET: training

LENET_SOURCE = """
network lenet
input  x[N, 1, 12, 12]
target t[N]
c1 = conv(x, 4, 3, padding=1, act=relu)
p1 = max_pool2d(c1, 2)
c2 = conv(p1, 6, 3, act=relu)
p2 = avg_pool2d(c2, 2)
f = flatten(p2, start=1)
h = dense(f, 10, act=relu)
o = dense(h, 3)
pred = argmax(o, axis=-1)
output o, pred
loss cross_entropy(o, t)
optimize sgd(lr=0.1, momentum=0.9)
"""


@cache
def lenet_net(backend: str, dtype: str = "float64") -> bpc.CompiledNet:
    return bpc.compile(LENET_SOURCE, backend=backend, dtype=dtype)


def lenet_data(n: int = 12, seed: int = 4) -> dict[str, np.ndarray]:
    """Class k: a bright 4x4 blob in the k-th of three places, on noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) % 3
    x = 0.3 * rng.standard_normal((n, 1, 12, 12))
    for i, k in enumerate(t):
        x[i, 0, 1 + 3 * k:5 + 3 * k, 2 + 3 * k:6 + 3 * k] += 2.0
    return {"x": x, "t": t.astype(np.float64)}


def lenet_reference(p, x) -> np.ndarray:
    c1 = NP.relu(np_conv(x, p["c1.W"], padding=1) + p["c1.b"][:, None, None])
    p1 = np_pool("max", c1, 2)
    c2 = NP.relu(np_conv(p1, p["c2.W"]) + p["c2.b"][:, None, None])
    f = np_pool("avg", c2, 2).reshape(len(x), -1)
    h = NP.relu(f @ p["h.W"] + p["h.b"])
    return h @ p["o.W"] + p["o.b"]


def lenet_params() -> dict[str, np.ndarray]:
    p = lenet_net("numpy").init(seed=7)
    rng = np.random.default_rng(1)
    for name in ("c1.b", "c2.b", "h.b", "o.b"):
        p[name] = 0.1 * rng.standard_normal(p[name].shape)
    return p


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("n", [5, 1])
def test_lenet_forward_and_loss(backend: str, n: int) -> None:
    net = lenet_net(backend)
    assert net.params == {"c1.W": (4, 1, 3, 3), "c1.b": (4,), "c2.W": (6, 4, 3, 3),
                          "c2.b": (6,), "h.W": (24, 10), "h.b": (10,), "o.W": (10, 3),
                          "o.b": (3,)}
    p, data = lenet_params(), lenet_data(n)
    logits = lenet_reference(p, data["x"])
    out = net.forward(p, x=data["x"])
    close(out["o"], logits, 1e-12, f"{backend} N={n}: logits")
    np.testing.assert_array_equal(out["pred"], np.argmax(logits, axis=-1))
    shifted = logits - logits.max(axis=-1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    expected = -np.mean(logp[np.arange(n), data["t"].astype(int)])
    assert net.loss(p, **data) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_lenet_central_differences(backend: str) -> None:
    result = bpc.gradcheck(lenet_net(backend), lenet_params(), max_entries=10, seed=1,
                           **lenet_data(4))
    assert result.ok, result


def test_lenet_training_agrees_across_backends() -> None:
    """d. The first SGD step is p - lr * g; fifteen steps give the same params on both
    backends to 1e-12 and lower the loss; float32 follows to float32's precision."""
    data = lenet_data()
    runs = {}
    for backend in BACKENDS:
        for dtype in ("float64", "float32"):
            net = lenet_net(backend, dtype)
            p = {n: v.astype(dtype) for n, v in lenet_params().items()}
            start = {n: v.copy() for n, v in p.items()}
            loss0, g = net.value_and_grad(p, **data)
            s = net.init_state(p)
            losses = [net.step(p, s, **data)]
            if dtype == "float64":
                assert losses[0] == pytest.approx(loss0, rel=1e-14)
                for name, value in p.items():
                    close(value, start[name] - 0.1 * g[name], 1e-14,
                          f"{backend}: first step {name}")
            losses += [net.step(p, s, **data) for _ in range(14)]
            assert all(v.dtype == np.dtype(dtype) for v in p.values())
            assert net.loss(p, **data) < 0.5 * losses[0], (backend, dtype, losses)
            runs[backend, dtype] = (losses, p)
    (loss_a, p_a), (loss_b, p_b) = runs["numpy", "float64"], runs["llvm", "float64"]
    np.testing.assert_allclose(loss_b, loss_a, rtol=1e-12)
    for name in p_a:
        close(p_b[name], p_a[name], 1e-12, f"after 15 steps: {name}")
    for backend in BACKENDS:
        for name in p_a:
            close(runs[backend, "float32"][1][name], p_a[name], 1e-3,
                  f"{backend} float32 after 15 steps: {name}", atol_scale=1e-3)


def test_lenet_gradients_match_torch() -> None:
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    p, data = lenet_params(), lenet_data(6)
    t = {n: torch.tensor(v, requires_grad=True) for n, v in p.items()}
    x = torch.tensor(data["x"])
    c1 = torch.relu(F.conv2d(x, t["c1.W"], t["c1.b"], padding=1))
    c2 = torch.relu(F.conv2d(F.max_pool2d(c1, 2), t["c2.W"], t["c2.b"]))
    f = torch.flatten(F.avg_pool2d(c2, 2), start_dim=1)
    o = torch.relu(f @ t["h.W"] + t["h.b"]) @ t["o.W"] + t["o.b"]
    loss = F.cross_entropy(o, torch.tensor(data["t"]).long())
    loss.backward()
    for backend in BACKENDS:
        got, grads = lenet_net(backend).value_and_grad(p, **data)
        assert got == pytest.approx(loss.item(), rel=1e-12)
        for name in p:
            close(grads[name], t[name].grad.numpy(), 1e-11, f"{backend}: d loss / d {name}")


# ------------------------------------------------------------------------------ errors

HEADER = re.compile(r"^(?P<file>[^:\n]+):(?P<line>\d+):(?P<col>\d+): error: (?P<msg>.+)$")
PRELUDE = """input x[N, 3, 8, 7]
input q[N, 4, 8, 7]
input s[N, 3, 9]
input z[N, M, 8, 7]
input h[N, 3, H, 7]
param W[4, 3, 3, 3]
param V[4, 2, 3, 3]
param G[3, 2, 3, 3]
param K[4, 3, 9, 3]
param U[4, 3, 3]
"""
BAD_LINE = PRELUDE.count("\n") + 1

# (statement, error class, the token the caret is under, fragments the message holds)
ERRORS = [
    # wrong input rank
    ("y = conv2d(s, W)", BPShapeError, "conv2d", ("[N, C, H, W]", "[N, 3, 9]")),
    ("y = conv1d(x, U)", BPShapeError, "conv1d", ("[N, C, L]", "[N, 3, 8, 7]")),
    ("y = max_pool1d(x, 2)", BPShapeError, "max_pool1d", ("[N, C, L]", "[N, 3, 8, 7]")),
    ("y = avg_pool2d(s, 2)", BPShapeError, "avg_pool2d", ("[N, C, H, W]", "[N, 3, 9]")),
    ("y = conv(s, 4, 3)", BPShapeError, "conv", ("[N, C, H, W]", "[N, 3, 9]")),
    ("y = conv2d(x, U)", BPShapeError, "conv2d", ("[O, C/groups, KH, KW]", "[4, 3, 3]")),
    # channels and groups
    ("y = conv2d(x, V)", BPShapeError, "conv2d", ("C/groups", "[N, 3, 8, 7]", "[4, 2, 3, 3]")),
    ("y = conv2d(x, W, groups=2)", BPShapeError, "conv2d", ("groups=2", "divisible")),
    ("y = conv2d(q, G, groups=2)", BPShapeError, "conv2d", ("groups=2", "[3, 2, 3, 3]")),
    ("y = conv2d(x, W, groups=0)", BPTypeError, "0", ("groups", "positive")),
    # kernels that do not fit the padded input
    ("y = conv2d(x, K)", BPShapeError, "conv2d", ("does not fit", "[4, 3, 9, 3]")),
    ("y = conv2d(x, K, padding=[0, 3])", BPShapeError, "conv2d",
     ("does not fit", "padding [0, 3]")),
    ("y = conv2d(x, W, dilation=4)", BPShapeError, "conv2d",
     ("does not fit", "dilation [4, 4]")),
    ("y = conv(x, 4, 9)", BPShapeError, "conv", ("does not fit",)),
    ("y = max_pool2d(x, 9)", BPShapeError, "max_pool2d", ("does not fit", "[9, 9]")),
    # stride, padding, dilation values
    ("y = conv2d(x, W, stride=0)", BPTypeError, "0", ("stride", "positive")),
    ("y = conv2d(x, W, stride=[2, 0])", BPTypeError, "[2, 0]", ("stride", "positive")),
    ("y = avg_pool1d(s, 3, stride=0)", BPTypeError, "0", ("stride", "positive")),
    ("y = conv(x, 4, 3, stride=0)", BPTypeError, "0", ("stride", "positive")),
    ("y = conv2d(x, W, padding=-1)", BPTypeError, "-1", ("padding", "whole number")),
    ("y = conv2d(x, W, padding=[1, -2])", BPTypeError, "[1, -2]", ("padding",)),
    ("y = conv2d(x, W, dilation=0)", BPTypeError, "0", ("dilation", "positive")),
    ("y = conv2d(x, W, stride=[2, 1, 1])", BPShapeError, "[2, 1, 1]", ("stride", "2", "3")),
    # a symbolic channel count
    ("y = conv2d(z, W)", BPShapeError, "conv2d", ("fixed", "[N, M, 8, 7]")),
    ("y = avg_pool2d(z, 2)", BPShapeError, "avg_pool2d", ("fixed", "[N, M, 8, 7]")),
    ("y = conv(z, 4, 3)", BPShapeError, "conv", ("fixed", "[N, M, 8, 7]")),
    ("y = conv2d(h, W)", BPShapeError, "conv2d", ("fixed", "[N, 3, H, 7]")),
    ("y = max_pool2d(h, 2)", BPShapeError, "max_pool2d", ("fixed", "[N, 3, H, 7]")),
    # pooling padding more than half the kernel
    ("y = max_pool2d(x, 2, padding=2)", BPShapeError, "max_pool2d", ("half", "[2, 2]")),
    ("y = avg_pool2d(x, [4, 2], padding=[2, 2])", BPShapeError, "avg_pool2d",
     ("half", "[2, 2]", "[4, 2]")),
    ("y = max_pool1d(s, 3, padding=2)", BPShapeError, "max_pool1d", ("half", "[2]", "[3]")),
]


@pytest.mark.parametrize("statement, kind, token, fragments", ERRORS,
                         ids=[e[0] for e in ERRORS])
def test_located_errors(statement: str, kind: type, token: str, fragments: tuple) -> None:
    """e. The class, the line, the column (under `token`: the first of it after `y =`),
    the quoted line and caret, and a message naming the problem."""
    text = PRELUDE + statement + "\noutput y\n"
    with pytest.raises(BPError) as info:
        bpc.compile(text, filename="bad.bp")
    error = info.value
    assert type(error) is kind, f"{type(error).__name__}: {error}"
    lines = str(error).split("\n")
    assert len(lines) == 3, str(error)
    header = HEADER.match(lines[0])
    assert header and header["file"] == "bad.bp", lines[0]
    col = statement.index(token, len("y = ")) + 1
    assert (int(header["line"]), int(header["col"])) == (BAD_LINE, col), str(error)
    assert lines[1] == "    " + statement
    assert lines[2] == "    " + " " * (col - 1) + "^"
    for fragment in fragments:
        assert fragment in header["msg"], f"{fragment!r} not in: {header['msg']}"


@pytest.mark.parametrize("statement", [
    "y = conv2d(x, K, padding=1)",            # 8 + 2 >= 9: the padded input fits
    "y = max_pool2d(x, 2, padding=1)",        # padding = half the kernel
    "y = max_pool1d(s, 9)",                   # the kernel is the whole sequence
    "y = conv2d(q, G[0:2], groups=2)",        # O = 2: divisible
])
def test_edges_that_compile(statement: str) -> None:
    """The limits are where SPEC (and PyTorch) put them, not one short."""
    net = bpc.compile(PRELUDE + statement + "\noutput y\n")
    assert net.outputs == ("y",)


@pytest.mark.parametrize("statement, named, wrong", [
    ("y = conv2d(q, V)", ("q is [N, 4, 8, 7]", "V is [4, 2, 3, 3]"), "x is [N, 4, 8, 7]"),
    ("y = conv2d(q * 2, K)", ("q * 2 is [N, 4, 8, 7]", "K is [4, 3, 9, 3]"),
     "W is [4, 3, 9, 3]"),
    ("y = conv1d(s, U[0:2], padding=4, dilation=9)", ("s is [N, 3, 9]", "U[0:2] is"),
     "x is [N, 3, 9]"),
])
def test_errors_name_the_arguments_as_written(statement: str, named: tuple,
                                              wrong: str) -> None:
    """The shape messages name the tensors as the program wrote them, as the rank message
    does ('but s is [N, 3, 9]'), not by conv2d's parameter names: the prelude has its own
    `x[N, 3, 8, 7]` and `W[4, 3, 3, 3]`, which a message saying 'x is [N, 4, 8, 7]' or
    'W is [4, 3, 9, 3]' contradicts."""
    with pytest.raises(BPShapeError) as info:
        bpc.compile(PRELUDE + statement + "\noutput y\n", filename="bad.bp")
    message = str(info.value).split("\n")[0]
    assert wrong not in message, message
    for fragment in named:
        assert fragment in message, f"{fragment!r} not in: {message}"
