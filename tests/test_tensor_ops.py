"""Tensors of any rank: lists as options, `@` at any rank, indexing and slicing, the shape
built-ins and the reductions over axis lists (SPEC, "Tensors of any rank").

Few networks are compiled, each holding many ops (one output per op), so the file stays fast:

- OPS: params of fixed sizes only; every op of the section once or more (batched `@` large
  enough to reach BLAS on llvm, batch dims broadcast on both sides, 1-D operands; indexing
  with negative steps; reshape, flatten, transpose, concat, stack; sum mean max min
  logsumexp prod var std over axis lists, argmax). Its loss is `sum(sin(o))` over the
  outputs, so every op's adjoint is a different number at every entry;
- TIES: max and min over axis lists with ties (the gradient goes to the first extremum in
  row-major order), prod with zero, one and two zeros in a slice;
- TRAIN: an input `x[N, 6, 4]` sliced along N (`:`, `::-1`, 0, -1), concat, stack, reshape
  with N, batched `@` with broadcast batch dims, trained with `step`.

Oracles:
a. forward: each output equals NumPy evaluating the same expression on the same arrays;
b. gradients (float64): central differences (`bpc.gradcheck`), explicit numbers for the
   tie and zero conventions, and PyTorch's autograd where torch is installed
   (`pytest.importorskip("torch")` inside those tests: the file runs without it). PyTorch
   has no negative slice steps: a slice is taken there with `index_select` on the indices
   NumPy's slice picks (flip included); `torch.amax` splits the gradient among ties, so the
   data given to it has none;
c. the two backends agree to 1e-12 on forward values, the loss and every gradient; float32
   networks agree with float64 to float32's precision;
d. `step` gives the same params on both backends, its first SGD step is `p - lr * g`;
e. bad programs: a located BPShapeError / BPTypeError whose message names the problem.

Slice bounds past the end of a fixed axis are clamped, as NumPy and PyTorch do
(`T[:, 0:9]` of an axis of 6 is all of it: `ix_clamped`); a slice that is then empty
(`A[5:9]` of an axis of 3) and an index out of range are the located errors.
"""

from __future__ import annotations

import re
from functools import cache
from types import SimpleNamespace

import numpy as np
import pytest

import bpcompile as bpc
from bpcompile import BPError, BPShapeError, BPTypeError

BACKENDS = ("numpy", "llvm")
S = np.s_


# --------------------------------------------------------------------- the same math, twice

def _np_reduce(fn):
    def reduce(x, axis=None, keepdims=False):
        return fn(x, axis=None if axis is None else tuple(axis) if isinstance(axis, list)
                  else axis, keepdims=keepdims)
    return reduce


NP = SimpleNamespace(
    matmul=np.matmul, sin=np.sin, tanh=np.tanh,
    ix=lambda x, key: x[key],
    reshape=lambda x, shape: np.reshape(x, shape),
    flatten=lambda x, start: np.reshape(x, x.shape[:start] + (-1,)),
    transpose=np.transpose,
    concat=lambda xs, axis: np.concatenate(xs, axis=axis),
    stack=lambda xs, axis: np.stack(xs, axis=axis),
    sum=_np_reduce(np.sum), mean=_np_reduce(np.mean), max=_np_reduce(np.max),
    min=_np_reduce(np.min), prod=_np_reduce(np.prod), var=_np_reduce(np.var),
    std=_np_reduce(np.std),
    logsumexp=lambda x, axis=None: _np_logsumexp(x, axis),
    argmax=lambda x, axis: np.argmax(x, axis=axis),
)


def _np_logsumexp(x, axis):
    axis = tuple(axis) if isinstance(axis, list) else axis
    top = np.max(x, axis=axis, keepdims=True)
    return np.squeeze(top + np.log(np.sum(np.exp(x - top), axis=axis, keepdims=True)),
                      axis=axis)


@cache
def _torch_namespace() -> SimpleNamespace:
    import torch

    def dims(x, axis):
        if axis is None:
            return tuple(range(x.dim()))
        return tuple(axis) if isinstance(axis, list) else (axis,)

    def ix(x, key):
        """x[key] with NumPy's meaning, negative steps included: each slice is an
        index_select of the indices NumPy's slice picks."""
        key = key if isinstance(key, tuple) else (key,)
        if Ellipsis in key:
            at = key.index(Ellipsis)
            fill = x.dim() - (len(key) - 1)
            key = key[:at] + (slice(None),) * fill + key[at + 1:]
        axis = 0
        for k in key:
            if isinstance(k, slice):
                picked = np.arange(x.shape[axis])[k]
                if k.step == -1 and picked.size == x.shape[axis]:
                    x = torch.flip(x, dims=(axis,))
                else:
                    x = x.index_select(axis, torch.tensor(picked.tolist(), dtype=torch.long))
                axis += 1
            else:
                x = x.select(axis, int(k))
        return x

    def prod(x, axis=None, keepdims=False):
        for d in sorted((d % x.dim() for d in dims(x, axis)), reverse=True):
            x = torch.prod(x, dim=d, keepdim=keepdims)
        return x

    return SimpleNamespace(
        matmul=torch.matmul, sin=torch.sin, tanh=torch.tanh, ix=ix,
        reshape=torch.reshape,
        flatten=lambda x, start: torch.flatten(x, start_dim=start),
        transpose=lambda x, perm: torch.permute(x, perm),
        concat=lambda xs, axis: torch.cat(xs, dim=axis),
        stack=lambda xs, axis: torch.stack(xs, dim=axis),
        sum=lambda x, axis=None, keepdims=False: torch.sum(x, dim=dims(x, axis),
                                                           keepdim=keepdims),
        mean=lambda x, axis=None, keepdims=False: torch.mean(x, dim=dims(x, axis),
                                                             keepdim=keepdims),
        max=lambda x, axis=None, keepdims=False: torch.amax(x, dim=dims(x, axis),
                                                            keepdim=keepdims),
        min=lambda x, axis=None, keepdims=False: torch.amin(x, dim=dims(x, axis),
                                                            keepdim=keepdims),
        prod=prod,
        var=lambda x, axis=None, keepdims=False: torch.var(x, dim=dims(x, axis),
                                                           unbiased=False, keepdim=keepdims),
        std=lambda x, axis=None, keepdims=False: torch.std(x, dim=dims(x, axis),
                                                           unbiased=False, keepdim=keepdims),
        logsumexp=lambda x, axis=None: torch.logsumexp(x, dim=dims(x, axis)),
        argmax=lambda x, axis: torch.argmax(x, dim=axis),
    )


# --------------------------------------------------------------------------- the OPS net

OPS_PARAMS = {
    "A": (2, 3, 4), "B": (4, 5), "D": (2, 1, 3, 4), "E": (5, 4, 2),
    "G": (4, 64, 64), "H": (64, 64), "v": (4,), "u": (3,),
    "T": (5, 6, 7), "F": (2, 3, 2), "P": (3, 2, 4),
}

# (output, .bp expression, the same in namespace m over params a). `argmax` is an output
# only (no gradient): it stays out of the loss.
OPS = [
    # @ at any rank
    ("mm_batched", "A @ B", lambda m, a: m.matmul(a.A, a.B)),
    ("mm_bcast", "D @ E", lambda m, a: m.matmul(a.D, a.E)),            # [2, 5, 3, 2]
    ("mm_blas", "G @ H", lambda m, a: m.matmul(a.G, a.H)),             # [4, 64, 64]
    ("mm_blas_left", "H @ G", lambda m, a: m.matmul(a.H, a.G)),        # [4, 64, 64]
    ("mm_mat_vec", "A @ v", lambda m, a: m.matmul(a.A, a.v)),          # [2, 3]
    ("mm_vec_mat", "u @ A", lambda m, a: m.matmul(a.u, a.A)),          # [2, 4]
    ("mm_vec_vec", "v @ v", lambda m, a: m.matmul(a.v, a.v)),          # []
    ("mm_vec_2d", "v @ B", lambda m, a: m.matmul(a.v, a.B)),           # [5]
    # indexing and slicing
    ("ix_int", "T[1]", lambda m, a: m.ix(a.T, S[1])),
    ("ix_neg", "T[-1]", lambda m, a: m.ix(a.T, S[-1])),
    ("ix_range", "T[:, 0:4]", lambda m, a: m.ix(a.T, S[:, 0:4])),
    ("ix_ellipsis", "T[..., -1]", lambda m, a: m.ix(a.T, S[..., -1])),
    ("ix_step", "T[:, ::2]", lambda m, a: m.ix(a.T, S[:, ::2])),
    ("ix_reverse", "T[::-1]", lambda m, a: m.ix(a.T, S[::-1])),
    ("ix_down", "T[3:0:-1]", lambda m, a: m.ix(a.T, S[3:0:-1])),
    ("ix_mixed", "T[1, 2:5, ::-3]", lambda m, a: m.ix(a.T, S[1, 2:5, ::-3])),
    ("ix_tail", "T[-2:, 1, :-1]", lambda m, a: m.ix(a.T, S[-2:, 1, :-1])),
    ("ix_mid_ellipsis", "T[0, ..., 1:6:2]", lambda m, a: m.ix(a.T, S[0, ..., 1:6:2])),
    ("ix_scalar", "T[0, -1, 3]", lambda m, a: m.ix(a.T, S[0, -1, 3])),
    ("ix_clamped", "T[:, 0:9, -20:5]", lambda m, a: m.ix(a.T, S[:, 0:9, -20:5])),
    ("ix_chain", "T[::-1][:, 2]", lambda m, a: m.ix(m.ix(a.T, S[::-1]), S[:, 2])),
    ("ix_const", "T[K:, :K]", lambda m, a: m.ix(a.T, S[2:, :2])),
    # shape built-ins
    ("reshape_neg", "reshape(T, [5, -1])", lambda m, a: m.reshape(a.T, (5, -1))),
    ("reshape_3d", "reshape(T, [7, 3, 10])", lambda m, a: m.reshape(a.T, (7, 3, 10))),
    ("reshape_lead", "reshape(A, [-1, 2, K])", lambda m, a: m.reshape(a.A, (-1, 2, 2))),
    ("flatten1", "flatten(T, start=1)", lambda m, a: m.flatten(a.T, 1)),
    ("flatten0", "flatten(T, start=0)", lambda m, a: m.flatten(a.T, 0)),
    ("flatten2", "flatten(D, start=2)", lambda m, a: m.flatten(a.D, 2)),
    ("transpose_cycle", "transpose(T, [2, 0, 1])", lambda m, a: m.transpose(a.T, (2, 0, 1))),
    ("transpose_swap", "transpose(D, [0, 2, 3, 1])",
     lambda m, a: m.transpose(a.D, (0, 2, 3, 1))),
    ("concat_last", "concat(A, F, axis=-1)", lambda m, a: m.concat([a.A, a.F], -1)),
    ("concat_three", "concat(A, A[1:], A * 2, axis=0)",
     lambda m, a: m.concat([a.A, m.ix(a.A, S[1:]), a.A * 2], 0)),
    ("stack0", "stack(A, sin(A), axis=0)", lambda m, a: m.stack([a.A, m.sin(a.A)], 0)),
    ("stack_last", "stack(T[0], T[1], T[4], axis=-1)",
     lambda m, a: m.stack([m.ix(a.T, S[0]), m.ix(a.T, S[1]), m.ix(a.T, S[4])], -1)),
    ("stack_mid", "stack(A, F[..., 0:1] * A, axis=1)",
     lambda m, a: m.stack([a.A, m.ix(a.F, S[..., 0:1]) * a.A], 1)),
    # reductions over axis lists
    ("sum_list", "sum(T, axis=[0, 2])", lambda m, a: m.sum(a.T, [0, 2])),
    ("sum_none", "sum(T, axis=None)", lambda m, a: m.sum(a.T)),
    ("sum_keep", "sum(T, axis=[-1, 0], keepdims=true)",
     lambda m, a: m.sum(a.T, [-1, 0], keepdims=True)),
    ("mean_list", "mean(T, axis=[1, 2])", lambda m, a: m.mean(a.T, [1, 2])),
    ("max_list", "max(T, axis=[0, 2])", lambda m, a: m.max(a.T, [0, 2])),
    ("max_none", "max(T, axis=None)", lambda m, a: m.max(a.T)),
    ("min_list", "min(T, axis=[2, 1])", lambda m, a: m.min(a.T, [2, 1])),
    ("min_int", "min(T, axis=-2)", lambda m, a: m.min(a.T, -2)),
    ("min_none", "min(T)", lambda m, a: m.min(a.T)),
    ("lse_list", "logsumexp(T, axis=[0, 2])", lambda m, a: m.logsumexp(a.T, [0, 2])),
    ("lse_int", "logsumexp(T, axis=1)", lambda m, a: m.logsumexp(a.T, 1)),
    ("prod_list", "prod(P, axis=[0, 2])", lambda m, a: m.prod(a.P, [0, 2])),
    ("prod_int", "prod(P, axis=-1)", lambda m, a: m.prod(a.P, -1)),
    ("prod_none", "prod(P)", lambda m, a: m.prod(a.P)),
    ("var_list", "var(T, axis=[0, 2])", lambda m, a: m.var(a.T, [0, 2])),
    ("var_none", "var(T)", lambda m, a: m.var(a.T)),
    ("var_keep", "var(T, axis=1, keepdims=true)", lambda m, a: m.var(a.T, 1, keepdims=True)),
    ("std_list", "std(T, axis=[1, 2])", lambda m, a: m.std(a.T, [1, 2])),
    ("std_none", "std(T, axis=None)", lambda m, a: m.std(a.T)),
    ("std_int", "std(T, axis=0)", lambda m, a: m.std(a.T, 0)),
]
ARGMAX = [
    ("am_last", "argmax(T, axis=-1)", lambda m, a: m.argmax(a.T, -1)),
    ("am_first", "argmax(T, axis=0)", lambda m, a: m.argmax(a.T, 0)),
    ("am_of_mm", "argmax(A @ B, axis=-1)", lambda m, a: m.argmax(m.matmul(a.A, a.B), -1)),
]


def _ops_source() -> str:
    lines = ["network tensor_ops", "const K = 2"]
    lines += [f"param {n}[{', '.join(map(str, s))}]" for n, s in OPS_PARAMS.items()]
    lines += [f"{name} = {expr}" for name, expr, _ in OPS + ARGMAX]
    lines.append("output " + ", ".join(name for name, _, _ in OPS + ARGMAX))
    lines.append("loss " + " + ".join(f"sum(sin({name}))" for name, _, _ in OPS))
    return "\n".join(lines) + "\n"


OPS_SOURCE = _ops_source()


def ops_params(dtype=np.float64) -> dict[str, np.ndarray]:
    """Random values (no ties: max/min/argmax have one answer); P near +-1 so that its
    products are of order 1; G and H scaled so that sin sees arguments of order 1."""
    rng = np.random.default_rng(20240611)
    p = {}
    for name, shape in OPS_PARAMS.items():
        x = rng.standard_normal(shape)
        if name == "P":
            x = rng.choice([-1.0, 1.0], size=shape) * rng.uniform(0.6, 1.4, size=shape)
        if name in ("G", "H"):
            x *= 0.3
        p[name] = x.astype(dtype)
    return p


@cache
def ops_net(backend: str, dtype: str = "float64") -> bpc.CompiledNet:
    return bpc.compile(OPS_SOURCE, backend=backend, dtype=dtype)


def ops_loss(m, a) -> object:
    return sum(m.sum(m.sin(f(m, a))) for _, _, f in OPS)


@cache
def ops_forward(backend: str, dtype: str = "float64") -> dict[str, np.ndarray]:
    net = ops_net(backend, dtype)
    p = ops_params(np.dtype(dtype))
    return net.forward(p)


@cache
def ops_grads(backend: str, dtype: str = "float64") -> tuple[float, dict[str, np.ndarray]]:
    net = ops_net(backend, dtype)
    return net.value_and_grad(ops_params(np.dtype(dtype)))


def close(got, expected, rtol: float, what: str, atol_scale: float | None = None) -> None:
    """assert_allclose with an absolute floor of rtol times the array's largest entry."""
    got = np.asarray(got, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert got.shape == expected.shape, f"{what}: shape {got.shape}, expected {expected.shape}"
    scale = float(np.max(np.abs(expected))) if expected.size else 0.0
    atol = (atol_scale if atol_scale is not None else rtol) * max(scale, 1e-300)
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=atol, err_msg=what)


# ------------------------------------------------------------------------- OPS: oracles

def test_ops_net_declares_what_it_was_given() -> None:
    net = ops_net("numpy")
    assert net.params == OPS_PARAMS
    assert net.outputs == tuple(name for name, _, _ in OPS + ARGMAX)


@pytest.mark.parametrize("backend", BACKENDS)
def test_ops_forward_equals_numpy(backend: str) -> None:
    """a. Every output, shape and value, is NumPy's meaning of its expression."""
    a = SimpleNamespace(**ops_params())
    out = ops_forward(backend)
    assert set(out) == {name for name, _, _ in OPS + ARGMAX}
    failures = []
    for name, expr, f in OPS:
        expected = f(NP, a)
        got = np.asarray(out[name])
        if got.shape != np.shape(expected):
            failures.append(f"{name} = {expr}: shape {got.shape}, NumPy {np.shape(expected)}")
        elif not np.allclose(got, expected, rtol=1e-12, atol=1e-12 * max(
                1.0, float(np.max(np.abs(expected))))):
            worst = float(np.max(np.abs(got - expected)))
            failures.append(f"{name} = {expr}: off by up to {worst:.3g}")
    for name, expr, f in ARGMAX:
        expected = f(NP, a)
        if not np.array_equal(out[name], expected):
            failures.append(f"{name} = {expr}: {out[name]!r}, NumPy {expected!r}")
    assert not failures, "\n".join(failures)


def test_ops_loss_equals_numpy() -> None:
    a = SimpleNamespace(**ops_params())
    expected = float(ops_loss(NP, a))
    for backend in BACKENDS:
        assert ops_grads(backend)[0] == pytest.approx(expected, rel=1e-12), backend
        assert ops_net(backend).loss(ops_params()) == pytest.approx(expected, rel=1e-12)


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
def test_ops_central_differences(backend: str) -> None:
    """b. Central differences on sampled entries of every param."""
    result = bpc.gradcheck(ops_net(backend), ops_params(), max_entries=12, seed=3)
    assert result.ok, result


@pytest.mark.parametrize("backend", BACKENDS)
def test_ops_gradients_match_torch(backend: str) -> None:
    """b. PyTorch's autograd through the same expressions (torch.matmul, indexing,
    index_select for negative steps, torch.cat/stack/permute/reshape/flatten, amax/amin on
    tie-free data, torch.prod, torch.var(unbiased=False), torch.logsumexp over dims)."""
    torch = pytest.importorskip("torch")
    t = {n: torch.tensor(v, dtype=torch.float64, requires_grad=True)
         for n, v in ops_params().items()}
    loss = ops_loss(_torch_namespace(), SimpleNamespace(**t))
    loss.backward()
    got_loss, grads = ops_grads(backend)
    assert got_loss == pytest.approx(loss.item(), rel=1e-12)
    for name, tensor in t.items():
        close(grads[name], tensor.grad.numpy(), 1e-11, f"d loss / d {name}")


def test_ops_forward_matches_torch() -> None:
    """a. The same expressions in PyTorch (a second reading of each op's meaning)."""
    torch = pytest.importorskip("torch")
    p = ops_params()
    t = SimpleNamespace(**{n: torch.tensor(v, dtype=torch.float64) for n, v in p.items()})
    out = ops_forward("llvm")
    for name, expr, f in OPS + ARGMAX:
        expected = f(_torch_namespace(), t).numpy()
        close(out[name], expected, 1e-12, f"{name} = {expr}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_ops_float32(backend: str) -> None:
    """c. float32: the same network gives float32 arrays within float32's precision of the
    float64 results."""
    out32 = ops_forward(backend, "float32")
    out64 = ops_forward("numpy")
    for name, expr, _ in OPS:
        assert out32[name].dtype == np.float32, name
        close(out32[name], out64[name], 2e-4, f"float32 {name} = {expr}", atol_scale=2e-4)
    for name, _, _ in ARGMAX:  # the data has no near ties at float32's precision
        np.testing.assert_array_equal(out32[name], out64[name], err_msg=name)
    l32, g32 = ops_grads(backend, "float32")
    l64, g64 = ops_grads("numpy")
    assert l32 == pytest.approx(l64, rel=1e-4)
    for name in g64:
        assert g32[name].dtype == np.float32
        close(g32[name], g64[name], 1e-3, f"float32 d loss / d {name}", atol_scale=1e-4)


def test_ops_float32_backends_agree() -> None:
    (l0, g0), (l1, g1) = ops_grads("numpy", "float32"), ops_grads("llvm", "float32")
    assert l1 == pytest.approx(l0, rel=1e-5)
    for name in g0:
        close(g1[name], g0[name], 1e-4, f"float32 d loss / d {name}", atol_scale=1e-5)


# ---------------------------------------------------------------- TIES: the conventions

TIES_SOURCE = """
network ties
input  w1[4]
input  w2[2]
input  w3[4]
input  w4[3, 2]
param  M[3, 4, 2]
param  Q[3, 2, 2]
param  P[4, 3]
param  R[3, 2, 2]
a = max(M, axis=[0, 2])
b = min(M, axis=[2, 0])
c = max(M)
d = max(Q, axis=[-1, -3])
e = prod(P, axis=1)
f = prod(R, axis=[1, 2])
g = prod(P, axis=None)
h = prod(R, axis=1)
k = argmax(Q, axis=-1)
loss sum(a * w1) + sum(b * w3) + 5 * c + sum(d * w2) + sum(e * w3) + sum(f * w4[:, 0]) + 7 * g + sum(h * w4) + sum(k * Q[..., 0])
"""


def ties_data() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    M = np.zeros((3, 4, 2))
    M[0, 0, 1] = M[1, :, 0] = M[2, :, 1] = 1.0   # max ties in every slice
    M[2, 3, 0] = M[0, 3, 1] = -1.0                 # min ties in slice 3
    Q = np.array([[[2.0, 2.0], [0.0, 3.0]],
                  [[2.0, 1.0], [3.0, 3.0]],
                  [[1.0, 2.0], [3.0, 0.0]]])
    P = np.array([[1.5, 2.0, -3.0],     # no zero
                  [0.0, 2.0, 3.0],      # one zero
                  [0.0, -2.0, 0.0],     # two zeros
                  [0.0, 0.0, 0.0]])     # all zeros
    R = np.array([[[1.0, 2.0], [3.0, 0.5]],
                  [[1.0, 0.0], [-3.0, 2.0]],
                  [[0.0, 2.0], [0.0, 4.0]]])
    rng = np.random.default_rng(7)
    data = {"w1": rng.uniform(1, 2, 4), "w2": rng.uniform(1, 2, 2),
            "w3": rng.uniform(1, 2, 4), "w4": rng.uniform(1, 2, (3, 2))}
    return {"M": M, "Q": Q, "P": P, "R": R}, data


def first_extremum_grad(x: np.ndarray, axes: tuple[int, ...], adjoint: np.ndarray,
                        pick=np.argmax) -> np.ndarray:
    """The gradient of max (or min) of x over `axes` when all of it goes to the first
    extremum in row-major order over those axes (np.argmax: first occurrence)."""
    axes = tuple(sorted(a % x.ndim for a in axes))
    kept = tuple(a for a in range(x.ndim) if a not in axes)
    moved = np.transpose(x, kept + axes)
    flat = moved.reshape(moved.shape[:len(kept)] + (-1,))
    one_hot = np.zeros_like(flat)
    idx = pick(flat, axis=-1)
    np.put_along_axis(one_hot, idx[..., None], 1.0, axis=-1)
    one_hot *= np.asarray(adjoint)[..., None]
    return np.transpose(one_hot.reshape(moved.shape), np.argsort(kept + axes))


def prod_grad(x: np.ndarray, axes: tuple[int, ...], adjoint: np.ndarray) -> np.ndarray:
    """d prod / d x_i = the product of the rest of x_i's slice, written out entry by entry
    (no division: right with any number of zeros)."""
    axes = tuple(sorted(a % x.ndim for a in axes))
    kept = tuple(a for a in range(x.ndim) if a not in axes)
    moved = np.transpose(x, kept + axes)
    flat = moved.reshape(moved.shape[:len(kept)] + (-1,))
    out = np.empty_like(flat)
    for index in np.ndindex(flat.shape[:-1]):
        row = flat[index]
        out[index] = [np.prod(np.delete(row, i)) for i in range(row.size)]
    out *= np.asarray(adjoint)[..., None]
    return np.transpose(out.reshape(moved.shape), np.argsort(kept + axes))


def ties_expected() -> dict[str, np.ndarray]:
    p, d = ties_data()
    return {
        "M": first_extremum_grad(p["M"], (0, 2), d["w1"])
        + first_extremum_grad(p["M"], (0, 2), d["w3"], pick=np.argmin)
        + first_extremum_grad(p["M"], (0, 1, 2), np.float64(5.0)),
        # argmax: no gradient through it; its first-occurrence value weighs Q[..., 0]
        "Q": first_extremum_grad(p["Q"], (0, 2), d["w2"])
        + np.stack([np.argmax(p["Q"], axis=-1), np.zeros((3, 2))], axis=-1),
        "P": prod_grad(p["P"], (1,), d["w3"]) + prod_grad(p["P"], (0, 1), np.float64(7.0)),
        "R": prod_grad(p["R"], (1, 2), d["w4"][:, 0]) + prod_grad(p["R"], (1,), d["w4"]),
    }


@cache
def ties_grads(backend: str, dtype: str = "float64") -> tuple[float, dict[str, np.ndarray]]:
    net = bpc.compile(TIES_SOURCE, backend=backend, dtype=dtype)
    p, data = ties_data()
    return net.value_and_grad({n: v.astype(dtype) for n, v in p.items()}, **data)


def test_tie_conventions_written_out() -> None:
    """The oracle's own numbers, on the cases that matter: M's slice 0 has its first
    maximum at M[0, 0, 1]; P's row with one zero gets the product of the rest there."""
    g = ties_expected()
    _, d = ties_data()
    assert g["M"][0, 0, 1] == pytest.approx(d["w1"][0] + 5.0)
    assert g["M"][1, 1:, 0] == pytest.approx(d["w1"][1:])
    assert g["M"][0, 3, 1] == pytest.approx(d["w3"][3])     # first of the two minima
    assert g["M"][2, 3, 0] == 0.0
    np.testing.assert_array_equal(g["P"][1] / d["w3"][1], [6.0, 0.0, 0.0])
    np.testing.assert_array_equal(g["P"][2], [0.0, 0.0, 0.0])
    np.testing.assert_array_equal(np.argmax(ties_data()[0]["Q"], axis=-1), [[0, 1], [0, 0],
                                                                              [1, 0]])


@pytest.mark.parametrize("backend", BACKENDS)
def test_ties_and_zeros(backend: str) -> None:
    """max/min over axis lists: the gradient to the first extremum in row-major order;
    prod with zero, one and two zeros in a slice: the product of the others (exact);
    argmax: the first maximum (Q[0, 0] ties), no gradient through it."""
    p, data = ties_data()
    loss, grads = ties_grads(backend)
    expected_loss = (np.sum(p["M"].max(axis=(0, 2)) * data["w1"])
                     + np.sum(p["M"].min(axis=(0, 2)) * data["w3"]) + 5 * p["M"].max()
                     + np.sum(p["Q"].max(axis=(0, 2)) * data["w2"])
                     + np.sum(p["P"].prod(axis=1) * data["w3"])
                     + np.sum(p["R"].prod(axis=(1, 2)) * data["w4"][:, 0])
                     + 7 * p["P"].prod() + np.sum(p["R"].prod(axis=1) * data["w4"])
                     + np.sum(np.argmax(p["Q"], axis=-1) * p["Q"][..., 0]))
    assert loss == pytest.approx(expected_loss, rel=1e-14)
    for name, expected in ties_expected().items():
        np.testing.assert_allclose(grads[name], expected, rtol=1e-14, atol=0,
                                   err_msg=f"{backend}: d loss / d {name}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_ties_and_zeros_float32(backend: str) -> None:
    """The same conventions in float32 (every entry of the data is exact in float32)."""
    _, grads = ties_grads(backend, "float32")
    for name, expected in ties_expected().items():
        assert grads[name].dtype == np.float32
        close(grads[name], expected, 1e-6, f"{backend} float32: d loss / d {name}")


def test_ties_backends_agree() -> None:
    (l0, g0), (l1, g1) = ties_grads("numpy"), ties_grads("llvm")
    assert l1 == pytest.approx(l0, rel=1e-12)
    for name in g0:
        close(g1[name], g0[name], 1e-12, f"d loss / d {name}")


def test_prod_zeros_match_torch() -> None:
    """torch.prod's gradient with zeros in a slice (one, two, all) is the oracle too."""
    torch = pytest.importorskip("torch")
    p, data = ties_data()
    P = torch.tensor(p["P"], requires_grad=True)
    R = torch.tensor(p["R"], requires_grad=True)
    w3, w4 = torch.tensor(data["w3"]), torch.tensor(data["w4"])
    total = (torch.sum(torch.prod(P, dim=1) * w3) + 7 * torch.prod(P)
             + torch.sum(torch.prod(torch.prod(R, dim=2), dim=1) * w4[:, 0])
             + torch.sum(torch.prod(R, dim=1) * w4))
    total.backward()
    for backend in BACKENDS:
        _, grads = ties_grads(backend)
        np.testing.assert_allclose(grads["P"], P.grad.numpy(), rtol=1e-14, atol=0)
        np.testing.assert_allclose(grads["R"], R.grad.numpy(), rtol=1e-14, atol=0)


# ------------------------------------------------------------------ TRAIN: N, steps

TRAIN_SOURCE = """
network tensor_train
input  x[N, 6, 4]
target t[N, 2]
param W1[4, 3] = normal(0.5)
param W2[2, 6, 2] = normal(0.3)
param W3[4, 2] = xavier
param b3[2] = zeros
h = tanh(x @ W1)
a = concat(h[:, 0:3], h[:, 5:2:-1], axis=-1)
s = stack(a[:, 0], a[:, -1], axis=1)
d = reshape(s, [N, 2, 1, 6]) @ W2
e = flatten(d, start=1)
y = e @ W3 + b3 + mean(reshape(h, [N, -1]), axis=-1, keepdims=true)
pred = argmax(y, axis=-1)
first = x[0]
last = h[-1]
rev = x[::-1, ..., ::-1]
output y, pred, first, last, rev
loss mse(y, t) + 0.1 * mean(h[::-1][:, 0] * x[:, 0, 0:3]) + 0.1 * sum(h[0] * h[-1])
optimize sgd(lr=0.1, momentum=0.9)
"""


def train_math(m, w, x, t):
    """TRAIN_SOURCE in namespace m: (outputs, loss)."""
    h = m.tanh(m.matmul(x, w.W1))
    a = m.concat([m.ix(h, S[:, 0:3]), m.ix(h, S[:, 5:2:-1])], -1)
    s = m.stack([m.ix(a, S[:, 0]), m.ix(a, S[:, -1])], 1)
    n = x.shape[0]
    d = m.matmul(m.reshape(s, (n, 2, 1, 6)), w.W2)
    e = m.flatten(d, 1)
    y = m.matmul(e, w.W3) + w.b3 + m.mean(m.reshape(h, (n, -1)), [-1], keepdims=True)
    outputs = {"y": y, "pred": m.argmax(y, -1), "first": m.ix(x, S[0]),
               "last": m.ix(h, S[-1]), "rev": m.ix(x, S[::-1, ..., ::-1])}
    loss = (m.mean((y - t) ** 2) + 0.1 * m.mean(m.ix(m.ix(h, S[::-1]), S[:, 0])
                                                 * m.ix(x, S[:, 0, 0:3]))
            + 0.1 * m.sum(m.ix(h, S[0]) * m.ix(h, S[-1])))
    return outputs, loss


def train_data(n: int, seed: int = 5) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"x": rng.standard_normal((n, 6, 4)), "t": rng.standard_normal((n, 2))}


@cache
def train_net(backend: str) -> bpc.CompiledNet:
    return bpc.compile(TRAIN_SOURCE, backend=backend)


def train_params() -> dict[str, np.ndarray]:
    p = train_net("numpy").init(seed=11)
    p["b3"] = np.random.default_rng(2).standard_normal(2)  # not zeros: a real oracle
    return p


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("n", [5, 2, 1])
def test_train_forward_equals_numpy(backend: str, n: int) -> None:
    """Slices along N (`:`, `::-1`, 0, -1) and reshape with N take N from the call."""
    net = train_net(backend)
    p, data = train_params(), train_data(n)
    out = net.forward(p, x=data["x"])
    expected, expected_loss = train_math(NP, SimpleNamespace(**p), data["x"], data["t"])
    assert set(out) == set(expected)
    for name, value in expected.items():
        if name == "pred":
            np.testing.assert_array_equal(out[name], value)
        else:
            close(out[name], value, 1e-12, f"N={n}: {name}")
    assert net.loss(p, **data) == pytest.approx(float(expected_loss), rel=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_train_central_differences(backend: str) -> None:
    result = bpc.gradcheck(train_net(backend), train_params(), max_entries=16,
                           **train_data(4))
    assert result.ok, result


def test_train_backends_agree() -> None:
    p, data = train_params(), train_data(7)
    (l0, g0), (l1, g1) = (train_net(b).value_and_grad(p, **data) for b in BACKENDS)
    assert l1 == pytest.approx(l0, rel=1e-12)
    for name in g0:
        close(g1[name], g0[name], 1e-12, f"d loss / d {name}")


def test_train_gradients_match_torch() -> None:
    torch = pytest.importorskip("torch")
    p, data = train_params(), train_data(4)
    w = {n: torch.tensor(v, requires_grad=True) for n, v in p.items()}
    _, loss = train_math(_torch_namespace(), SimpleNamespace(**w),
                         torch.tensor(data["x"]), torch.tensor(data["t"]))
    loss.backward()
    for backend in BACKENDS:
        got_loss, grads = train_net(backend).value_and_grad(p, **data)
        assert got_loss == pytest.approx(loss.item(), rel=1e-12)
        for name in p:
            close(grads[name], w[name].grad.numpy(), 1e-11, f"{backend}: d loss / d {name}")


def test_training_steps_agree_across_backends() -> None:
    """d. The first SGD step is p - lr * g (momentum starts at g); twenty steps on both
    backends give the same params to 1e-12 and lower the loss."""
    data = train_data(8, seed=9)
    runs = {}
    for backend in BACKENDS:
        net = train_net(backend)
        p = train_params()
        start = {n: v.copy() for n, v in p.items()}
        loss0, g = net.value_and_grad(p, **data)
        s = net.init_state(p)
        losses = [net.step(p, s, **data)]
        assert losses[0] == pytest.approx(loss0, rel=1e-14)
        for name in p:
            close(p[name], start[name] - 0.1 * g[name], 1e-14, f"{backend}: first step {name}")
        losses += [net.step(p, s, **data) for _ in range(19)]
        assert net.loss(p, **data) < 0.7 * losses[0], (backend, losses)
        runs[backend] = (losses, p)
    (loss_a, p_a), (loss_b, p_b) = runs["numpy"], runs["llvm"]
    np.testing.assert_allclose(loss_b, loss_a, rtol=1e-12)
    for name in p_a:
        close(p_b[name], p_a[name], 1e-12, f"after 20 steps: {name}")


def test_training_float32_agrees() -> None:
    """float32 training: both backends follow the float64 run to float32's precision."""
    data = train_data(8, seed=9)
    finals = {}
    for dtype in ("float64", "float32"):
        for backend in BACKENDS:
            net = train_net(backend) if dtype == "float64" else bpc.compile(
                TRAIN_SOURCE, backend=backend, dtype=dtype)
            p = {n: v.astype(dtype) for n, v in train_params().items()}
            s = net.init_state(p)
            for _ in range(10):
                net.step(p, s, **data)
            assert all(v.dtype == np.dtype(dtype) for v in p.values())
            finals[backend, dtype] = p
    reference = finals["numpy", "float64"]
    for backend in BACKENDS:
        for name in reference:
            close(finals[backend, "float32"][name], reference[name], 1e-4,
                  f"{backend} float32 after 10 steps: {name}", atol_scale=1e-4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_index_along_empty_n_is_a_call_time_error(backend: str) -> None:
    """x[0] along N with N = 0: a BPError at call time, nothing computed."""
    net = train_net(backend)
    with pytest.raises(BPError, match="x"):
        net.forward(train_params(), x=np.zeros((0, 6, 4)))


@pytest.mark.parametrize("backend", BACKENDS)
def test_index_along_n_is_checked_at_each_call(backend: str) -> None:
    """x[5] and x[-3] along N (SPEC: a BPError at call time when the size is a symbol):
    with N = 6 the values are NumPy's; with N = 4 or 2 every entry point refuses, naming N,
    its value and the line; the params are unchanged."""
    net = bpc.compile("input x[N, 3]\nparam w[3]\ny = x[5] * w + x[-3]\n"
                      "loss sum(y * y)\n", backend=backend, filename="net.bp")
    p = {"w": np.array([0.5, -1.0, 2.0])}
    x = np.arange(18.0).reshape(6, 3)
    expected = float(np.sum((x[5] * p["w"] + x[-3]) ** 2))
    assert net.loss(p, x=x) == pytest.approx(expected, rel=1e-12)
    s = net.init_state(p)
    before = p["w"].copy()
    for rows in (4, 2):
        for call in (lambda: net.forward(p, x=x[:rows]), lambda: net.loss(p, x=x[:rows]),
                     lambda: net.value_and_grad(p, x=x[:rows]),
                     lambda: net.step(p, s, x=x[:rows])):
            with pytest.raises(BPShapeError, match=rf"net.bp:3 needs N >= 6, but N = {rows}"):
                call()
    np.testing.assert_array_equal(p["w"], before)


# ------------------------------------------------------------------------------ errors

HEADER = re.compile(r"^(?P<file>[^:\n]+):(?P<line>\d+):(?P<col>\d+): error: (?P<msg>.+)$")
PRELUDE = "input x[N, 4, 6]\nparam A[3, 4, 6]\nparam B[6, 5]\nparam C[2, 6, 5]\n"
BAD_LINE = PRELUDE.count("\n") + 1

# (statement, error class, the token the caret is under, fragments the message holds)
ERRORS = [
    ("y = reshape(A, [5, -1])", BPShapeError, "reshape", ("reshape", "72", "5")),
    ("y = reshape(A, [4, 4, 4])", BPShapeError, "reshape", ("reshape", "[4, 4, 4]")),
    ("y = reshape(A, [-1, -1])", BPShapeError, "reshape", ("reshape", "-1")),
    ("y = transpose(A, [0, 0, 1])", BPShapeError, "transpose", ("permutation", "[0, 0, 1]")),
    ("y = transpose(A, [0, 1, 3])", BPShapeError, "transpose", ("permutation", "[0, 1, 3]")),
    ("y = concat(A, B, axis=0)", BPShapeError, "concat", ("concat", "[3, 4, 6]", "[6, 5]")),
    ("y = concat(A, A[:, 0:2], axis=0)", BPShapeError, "concat",
     ("concat", "[3, 4, 6]", "[3, 2, 6]")),
    ("y = stack(A, A[0:2], axis=0)", BPShapeError, "stack", ("stack", "[2, 4, 6]")),
    ("y = A[3]", BPShapeError, "3", ("index 3", "out of range", "size 3")),
    ("y = A[:, -5]", BPShapeError, "-5", ("index -5", "out of range", "size 4")),
    ("y = A[5:9]", BPShapeError, "5:9", ("slice", "empty")),
    ("y = A[2:2]", BPShapeError, "2:2", ("slice", "empty")),
    ("y = A[:, 1:3:-1]", BPShapeError, "1:3:-1", ("slice", "empty")),
    ("y = x[1:]", BPShapeError, "1:", ("N", "':'")),
    ("y = x[::2]", BPShapeError, "::2", ("N", "'::-1'")),
    ("y = A[0, 0, 0, 0]", BPShapeError, "A", ("4 axes", "3")),
    ("y = A[..., 0, ...]", BPTypeError, "...]", ("'...'", "once")),
    ("y = A @ A", BPShapeError, "A", ("'@'", "[3, 4, 6]")),
    ("y = A @ C", BPShapeError, "A", ("batch dims", "broadcast", "[2, 6, 5]")),
    ("y = [1, 2]", BPTypeError, "[", ("list", "not a tensor")),
    ("y = A + [1, 2]", BPTypeError, "[", ("list", "not a tensor")),
    ("y = sum(A, axis=[0, 3])", BPShapeError, "3", ("axis 3", "out of range")),
    ("y = sum(A, axis=[0, 0])", BPShapeError, "[", ("repeat",)),
]


@pytest.mark.parametrize("statement, kind, token, fragments", ERRORS,
                         ids=[e[0] for e in ERRORS])
def test_located_errors(statement: str, kind: type, token: str, fragments: tuple) -> None:
    """e. The class, the line, the column (under `token`: the first of it after `y =`),
    the quoted line and caret (SPEC's format), and a message naming the problem."""
    text = PRELUDE + statement + "\n"
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


def test_reshape_minus_one_over_n_is_done_or_explained() -> None:
    """NumPy makes [N, 4, 2] into [-1, 2] (4N rows). bpcompile may refuse a size that is a
    product with N (flatten(x, start=0) does, saying so), but then the message must say
    that, not that 2 does not divide 8N, and must not show an internal name."""
    text = "input x[N, 4, 2]\ny = reshape(x, [-1, 2])\noutput y\n"
    try:
        net = bpc.compile(text, backend="numpy")
    except BPShapeError as error:
        message = str(error)
        assert "dim:" not in message, message
        assert "do not divide" not in message, message
    else:
        x = np.arange(24.0).reshape(3, 4, 2)
        np.testing.assert_array_equal(net.forward({}, x=x)["y"], x.reshape(-1, 2))
