"""Numerically delicate losses at logits of +-1000: finite, and right.

Oracle: mpmath at 50 significant digits, whose exponent range has no overflow, evaluating each
loss exactly as the math defines it (log of a softmax formed from exp, log(1 + exp(z)), ...);
gradients by `mpmath.diff` of that same high-precision function, entry by entry. The float64
results must agree to about 1e-12 and the float32 ones to about 1e-5, and no step of the
computation may overflow, divide by zero or produce a NaN (NumPy errors are raised).
"""

from __future__ import annotations

from collections.abc import Callable

import mpmath
import numpy as np
import pytest

import bpcompile as bpc

mpmath.mp.dps = 50
Mp = mpmath.mpf
MpLoss = Callable[[list[list[Mp]], list[list[Mp]]], Mp]  # (z rows, c rows) -> loss

# Logits with +-1000 in every row, ties at the top, rows with nothing but +-1000, and ordinary
# values beside them.
Z = np.array([
    [1000.0, -1000.0, 0.5, 2.0],
    [-1000.0, -1000.0, 3.0, -2.5],
    [1000.0, 1000.0, -1000.0, 0.0],
    [-1000.0, -1000.0, -1000.0, -1000.0],
    [1000.0, 999.0, 1000.0, 1000.0],
])
ROWS, COLS = Z.shape


def _probabilities() -> np.ndarray:
    raw = np.random.default_rng(0).uniform(0.05, 1.0, size=Z.shape)
    return raw / raw.sum(axis=1, keepdims=True)


ONE_HOT = np.eye(COLS)[[1, 0, 2, 3, 1]]     # class 2 of row 3 is at -1000: a huge loss
PROBABILITIES = _probabilities()
WEIGHTS = np.random.default_rng(1).normal(size=Z.shape)
BINARY = np.random.default_rng(2).uniform(0.0, 1.0, size=Z.shape).round(1)


# ---------------------------------------------------------------- mpmath definitions


def m_exp_sum(row: list[Mp]) -> Mp:
    return mpmath.fsum(mpmath.exp(v) for v in row)


def m_log_softmax(z: list[list[Mp]], axis: int) -> list[list[Mp]]:
    if axis == 0:
        columns = [list(col) for col in zip(*z)]
        return [list(r) for r in zip(*m_log_softmax(columns, 1))]
    return [[mpmath.log(mpmath.exp(v) / m_exp_sum(row)) for v in row] for row in z]


def m_sigmoid(v: Mp) -> Mp:
    return 1 / (1 + mpmath.exp(-v))


def m_one_minus_sigmoid(v: Mp) -> Mp:
    """1 - sigmoid(v), written so 50 digits suffice: 1 - (1 - e**-1000) would need 435."""
    return 1 / (1 + mpmath.exp(v))


def m_softplus(v: Mp) -> Mp:
    return mpmath.log(1 + mpmath.exp(v))


def m_weighted(f: Callable[[Mp], Mp]) -> MpLoss:
    """sum(f(z) * c)."""
    return lambda z, c: mpmath.fsum(f(v) * w for zr, cr in zip(z, c) for v, w in zip(zr, cr))


def m_bce(z, t) -> Mp:
    """mean(-(t log p + (1 - t) log(1 - p))) for p = sigmoid(z)."""
    terms = [-(w * mpmath.log(m_sigmoid(v)) + (1 - w) * mpmath.log(m_one_minus_sigmoid(v)))
             for zr, tr in zip(z, t) for v, w in zip(zr, tr)]
    return mpmath.fsum(terms) / len(terms)


def m_cross_entropy(z, t) -> Mp:
    log_p = m_log_softmax(z, 1)
    return mpmath.fsum(-w * lp for lr, tr in zip(log_p, t) for lp, w in zip(lr, tr)) / len(z)


def m_sum_log_softmax(axis: int) -> MpLoss:
    return lambda z, c: mpmath.fsum(
        v * w for lr, cr in zip(m_log_softmax(z, axis), c) for v, w in zip(lr, cr))


def m_logsumexp_rows(z, c) -> Mp:
    """sum over rows of logsumexp(row) * c[row, 0]."""
    return mpmath.fsum(mpmath.log(m_exp_sum(row)) * cr[0] for row, cr in zip(z, c))


def m_logsumexp_all(z, c) -> Mp:
    return mpmath.log(mpmath.fsum(m_exp_sum(row) for row in z))


def m_logsumexp_columns(z, c) -> Mp:
    columns = [list(col) for col in zip(*z)]
    return mpmath.fsum(mpmath.log(m_exp_sum(col)) * w for col, w in zip(columns, c[0]))


# (loss statement(s), mpmath loss, data c)
CASES: dict[str, tuple[str, MpLoss, np.ndarray]] = {
    "log_softmax": ("loss sum(log_softmax(z) * c)", m_sum_log_softmax(1), WEIGHTS),
    "log_softmax axis=0": ("loss sum(log_softmax(z, axis=0) * c)", m_sum_log_softmax(0),
                           WEIGHTS),
    "log(softmax)": ("loss sum(log(softmax(z)) * c)", m_sum_log_softmax(1), WEIGHTS),
    "log(softmax) axis=0": ("loss sum(log(softmax(z, axis=0)) * c)", m_sum_log_softmax(0),
                            WEIGHTS),
    "log(softmax) named": ("q = softmax(z, axis=-1)\nloss sum(c * log(q))",
                           m_sum_log_softmax(1), WEIGHTS),
    "cross_entropy one-hot": ("loss cross_entropy(z, c)", m_cross_entropy, ONE_HOT),
    "cross_entropy probabilities": ("loss cross_entropy(z, c)", m_cross_entropy,
                                    PROBABILITIES),
    "-sum(t * log(softmax))": ("loss -sum(c * log(softmax(z))) / 5", m_cross_entropy,
                               PROBABILITIES),
    "bce_with_logits": ("loss bce_with_logits(z, c)", m_bce, BINARY),
    "binary_cross_entropy(sigmoid)": ("loss binary_cross_entropy(sigmoid(z), c)",
                                      m_bce, BINARY),
    "binary_cross_entropy named": ("p = sigmoid(z)\nloss binary_cross_entropy(p, c)",
                                   m_bce, BINARY),
    "bce by hand": ("p = sigmoid(z)\nloss -mean(c * log(p) + (1 - c) * log(1 - p))",
                    m_bce, BINARY),
    "softplus": ("loss sum(softplus(z) * c)", m_weighted(m_softplus), WEIGHTS),
    "log(1 + exp)": ("loss sum(log(1 + exp(z)) * c)", m_weighted(m_softplus), WEIGHTS),
    "log(sigmoid)": ("loss sum(log(sigmoid(z)) * c)",
                     m_weighted(lambda v: mpmath.log(m_sigmoid(v))), WEIGHTS),
    "log(1 - sigmoid)": ("loss sum(log(1 - sigmoid(z)) * c)",
                         m_weighted(lambda v: mpmath.log(m_one_minus_sigmoid(v))), WEIGHTS),
    "log(1 - sigmoid) named": ("s = sigmoid(z)\nu = 1 - s\nloss sum(log(u) * c)",
                               m_weighted(lambda v: mpmath.log(m_one_minus_sigmoid(v))), WEIGHTS),
    "logsumexp axis=1": ("loss sum(logsumexp(z, axis=1, keepdims=true) * c[:, :1])",
                         m_logsumexp_rows, WEIGHTS),
    "logsumexp all": ("loss logsumexp(z)", m_logsumexp_all, WEIGHTS),
    "logsumexp axis=0": ("loss sum(logsumexp(z, axis=-2) * c[:1])", m_logsumexp_columns,
                         WEIGHTS),
    "log(sum(exp)) axis=1": ("loss sum(log(sum(exp(z), axis=1, keepdims=true)) * c[:, :1])",
                             m_logsumexp_rows, WEIGHTS),
    "log(sum(exp)) all": ("loss log(sum(exp(z)))", m_logsumexp_all, WEIGHTS),
    "log(sum(exp)) axis=0": ("loss sum(log(sum(exp(z), axis=0)) * c[:1])",
                             m_logsumexp_columns, WEIGHTS),
}


def _source(loss: str) -> tuple[str, dict[str, str]]:
    """A network over param z[5, 4]; slices of c written in the test become inputs."""
    declarations = ["param z[5, 4]", "input c[5, 4]"]
    slices = {}
    if "c[:, :1]" in loss:
        declarations.append("input c_col[5, 1]")
        loss, slices["c_col"] = loss.replace("c[:, :1]", "c_col"), "column"
    if "c[:1]" in loss:
        declarations.append("input c_row[4]")
        loss, slices["c_row"] = loss.replace("c[:1]", "c_row"), "row"
    return "\n".join(declarations) + "\n" + loss + "\n", slices


def _data(c: np.ndarray, slices: dict[str, str]) -> dict[str, np.ndarray]:
    data = {"c": c}
    for name, kind in slices.items():
        data[name] = c[:, :1] if kind == "column" else c[0]
    return data


def mp_value_and_grad(mp_loss: MpLoss, z: np.ndarray,
                      c: np.ndarray) -> tuple[Mp, np.ndarray]:
    """The loss at z and its gradient, in 50-digit arithmetic."""
    zs = [[Mp(float(v)) for v in row] for row in z]
    cs = [[Mp(float(v)) for v in row] for row in c]
    value = mp_loss(zs, cs)
    grad = np.zeros(z.shape)
    for i, j in np.ndindex(z.shape):
        def along(v: Mp, i: int = i, j: int = j) -> Mp:
            shifted = [row[:] for row in zs]
            shifted[i][j] = v
            return mp_loss(shifted, cs)
        grad[i, j] = float(mpmath.diff(along, zs[i][j]))
    return value, grad


@pytest.fixture(scope="module")
def oracle() -> dict[str, tuple[Mp, np.ndarray]]:
    """Each case's mpmath value and gradient, computed once for both dtypes."""
    return {name: mp_value_and_grad(mp_loss, Z, c) for name, (_, mp_loss, c) in CASES.items()}


@pytest.mark.parametrize("dtype, rtol", [("float64", 1e-12), ("float32", 2e-5)])
@pytest.mark.parametrize("case", list(CASES))
def test_finite_and_exact_at_1000(backend: str, case: str, dtype: str, rtol: float,
                                  oracle: dict[str, tuple[Mp, np.ndarray]]) -> None:
    loss, _, c = CASES[case]
    source, slices = _source(loss)
    net = bpc.compile(source, backend=backend, dtype=dtype)
    p = {"z": Z.astype(dtype)}
    data = _data(c, slices)
    with np.errstate(over="raise", divide="raise", invalid="raise"):
        value, grads = net.value_and_grad(p, **data)
        plain = net.loss(p, **data)
    expected_value, expected_grad = oracle[case]
    assert np.isfinite(value) and np.isfinite(plain), f"{case}: loss {value}"
    assert np.all(np.isfinite(grads["z"])), f"{case}: gradient {grads['z']}"
    scale = max(1.0, abs(float(expected_value)))
    assert value == pytest.approx(float(expected_value), rel=rtol, abs=rtol * scale)
    assert plain == pytest.approx(float(expected_value), rel=rtol, abs=rtol * scale)
    grad_scale = max(1.0, float(np.max(np.abs(expected_grad))))
    np.testing.assert_allclose(grads["z"], expected_grad, rtol=rtol, atol=rtol * grad_scale,
                               err_msg=case)


@pytest.mark.parametrize("case", ["cross_entropy one-hot", "bce_with_logits",
                                  "binary_cross_entropy(sigmoid)", "log(softmax)"])
def test_huge_logits_through_a_layer(backend: str, case: str) -> None:
    """Logits of +-1000 made by a matmul: the gradient reaches the weights finite and right."""
    loss, mp_loss, c = CASES[case]
    source = "input x[5, 2]\nparam W[2, 4]\ninput c[5, 4]\nz = x @ W\n" + loss + "\n"
    net = bpc.compile(source, backend=backend)
    x = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.0], [2.0, -1.0]])
    w = np.array([[1000.0, -1000.0, 0.5, 2.0], [-1000.0, 1000.0, 3.0, -2.5]])
    with np.errstate(over="raise", divide="raise", invalid="raise"):
        value, grads = net.value_and_grad({"W": w}, x=x, c=c)
    expected_value, d_z = mp_value_and_grad(mp_loss, x @ w, c)
    expected_grad = x.T @ d_z  # the chain rule through z = x @ W, on the oracle's d z
    assert value == pytest.approx(float(expected_value), rel=1e-12)
    np.testing.assert_allclose(grads["W"], expected_grad, rtol=1e-10,
                               atol=1e-12 * max(1.0, float(np.max(np.abs(expected_grad)))))


@pytest.mark.parametrize("z", [1000.0, -1000.0, 745.0, -745.0, 40.0, -40.0, 1e-3, 0.0])
def test_scalar_logit_extremes(backend: str, z: float) -> None:
    """One logit at a time, each formula on its own, against mpmath."""
    source = """
param z[]
input t[]
loss softplus(z) + 2 * log(sigmoid(z)) + 3 * log(1 - sigmoid(z)) + 4 * bce_with_logits(z, t)
"""
    net = bpc.compile(source, backend=backend)
    t = 0.3

    def m_loss(v: Mp) -> Mp:
        log_s, log_1ms = mpmath.log(m_sigmoid(v)), mpmath.log(m_one_minus_sigmoid(v))
        bce = -(t * log_s + (1 - t) * log_1ms)
        return m_softplus(v) + 2 * log_s + 3 * log_1ms + 4 * bce

    with np.errstate(over="raise", divide="raise", invalid="raise"):
        value, grads = net.value_and_grad({"z": np.array(z)}, t=np.array(t))
    expected = m_loss(Mp(z))
    assert value == pytest.approx(float(expected), rel=1e-12, abs=1e-12)
    assert float(grads["z"]) == pytest.approx(float(mpmath.diff(m_loss, Mp(z))),
                                              rel=1e-12, abs=1e-12)
