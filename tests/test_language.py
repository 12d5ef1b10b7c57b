"""Every statement and expression form of the `.bp` language (SPEC section 1).

Oracle: the same computation written directly in NumPy in the test, or a statistic whose
value follows from the initializer's formula (Glorot uniform, Kaiming normal).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

import bpcompile as bpc

SIGMOID = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731


def compile_src(text: str, backend: str, **kwargs) -> bpc.CompiledNet:
    return bpc.compile(text, backend=backend, filename="test.bp", **kwargs)


def positive(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.uniform(0.5, 1.5, size=shape)


# ------------------------------------------------------------------------------ network


def test_network_statement_names_the_net(backend: str) -> None:
    net = compile_src("network fancy_name\nparam w[2]\ny = w * 2\n", backend)
    assert net.name == "fancy_name"


def test_network_name_defaults_to_file_stem(tmp_path: Path, backend: str) -> None:
    path = tmp_path / "my_little_net.bp"
    path.write_text("param w[2]\ny = w * 2\n")
    assert bpc.compile_file(path, backend=backend).name == "my_little_net"


def test_network_statement_beats_file_stem(tmp_path: Path, backend: str) -> None:
    path = tmp_path / "stem.bp"
    path.write_text("network declared\nparam w[2]\ny = w * 2\n")
    assert bpc.compile_file(path, backend=backend).name == "declared"


# -------------------------------------------------------------------------------- const


def test_const_in_dims_and_expressions(backend: str, rng: np.random.Generator) -> None:
    net = compile_src(
        "const H = 4\n"
        "const SCALE = 2.5\n"
        "const TWICE = H * 2\n"
        "input x[N, H]\n"
        "param W[H, TWICE] = ones\n"
        "y = (x @ W) * SCALE + TWICE\n",
        backend,
    )
    assert net.params == {"W": (4, 8)}
    assert net.inputs == {"x": ("N", 4)}
    x = rng.standard_normal((3, 4))
    y = net.forward(net.init(0), x=x)["y"]
    np.testing.assert_allclose(y, (x @ np.ones((4, 8))) * 2.5 + 8, rtol=1e-12)


# ------------------------------------------------------------------------ input / target


def test_symbolic_dims_bind_at_call_time(backend: str, rng: np.random.Generator) -> None:
    net = compile_src(
        "input x[N, 2]\ntarget t[N, 1]\nparam W[2, 1] = ones\n"
        "y = x @ W\nloss sum((y - t) ** 2)\n",
        backend,
    )
    assert net.inputs == {"x": ("N", 2)}
    assert net.targets == {"t": ("N", 1)}
    p = net.init(0)
    for n in (1, 3, 7):
        x, t = rng.standard_normal((n, 2)), rng.standard_normal((n, 1))
        y = net.forward(p, x=x)["y"]
        assert y.shape == (n, 1)
        np.testing.assert_allclose(y, x @ np.ones((2, 1)), rtol=1e-12)
        expected = np.sum((x @ np.ones((2, 1)) - t) ** 2)
        assert net.loss(p, x=x, t=t) == pytest.approx(expected, rel=1e-12)


def test_one_symbol_binds_one_size(backend: str) -> None:
    net = compile_src(
        "input x[N, 2]\ntarget t[N, 1]\nparam W[2, 1]\nloss sum((x @ W - t) ** 2)\n", backend
    )
    with pytest.raises(bpc.BPShapeError):
        net.loss(net.init(0), x=np.zeros((4, 2)), t=np.zeros((5, 1)))


def test_two_symbols_bind_independently(backend: str, rng: np.random.Generator) -> None:
    net = compile_src("input a[N, M]\ny = sum(a, axis=1)\nz = sum(a, axis=0)\n"
                      "output y, z\n", backend)
    a = rng.standard_normal((3, 5))
    out = net.forward({}, a=a)
    np.testing.assert_allclose(out["y"], a.sum(axis=1), rtol=1e-12)
    np.testing.assert_allclose(out["z"], a.sum(axis=0), rtol=1e-12)


def test_symbol_as_a_value(backend: str, rng: np.random.Generator) -> None:
    """A size symbol stands for its bound size inside expressions, as `mean` uses it."""
    net = compile_src("input x[N]\ny = sum(x) / N\n", backend)
    x = rng.standard_normal(6)
    assert float(net.forward({}, x=x)["y"]) == pytest.approx(x.mean(), rel=1e-12)


def test_forward_does_not_need_targets(backend: str, rng: np.random.Generator) -> None:
    net = compile_src("input x[N, 2]\ntarget t[N, 2]\ny = x * 2\nloss sum((y - t) ** 2)\n",
                      backend)
    x = rng.standard_normal((3, 2))
    np.testing.assert_allclose(net.forward({}, x=x)["y"], 2 * x, rtol=1e-12)
    # a whole batch's dict may be passed: its targets are ignored
    np.testing.assert_array_equal(net.forward({}, x=x, t=x)["y"], net.forward({}, x=x)["y"])
    with pytest.raises(bpc.BPNameError, match=r"unknown array 'X' \(did you mean 'x'\?\)"):
        net.forward({}, x=x, X=x)
    with pytest.raises(bpc.BPNameError, match=r"missing array 'x' \(did you mean 'X'\?\)"):
        net.forward({}, X=x)


# --------------------------------------------------------------------------------- param


def test_param_shapes_including_scalar(backend: str) -> None:
    net = compile_src("param s[] = 0.5\nparam v[3]\nparam M[2, 3]\nparam T[2, 3, 4]\n",
                      backend)
    assert net.params == {"s": (), "v": (3,), "M": (2, 3), "T": (2, 3, 4)}
    p = net.init(0)
    assert {k: v.shape for k, v in p.items()} == net.params
    assert float(p["s"]) == 0.5


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_init_arrays_are_contiguous_and_of_the_dtype(backend: str, dtype: str) -> None:
    net = compile_src("param W[3, 4]\nparam b[4] = ones\n", backend, dtype=dtype)
    for array in net.init(3).values():
        assert array.dtype == np.dtype(dtype)
        assert array.flags.c_contiguous


def test_constant_initializers(backend: str) -> None:
    net = compile_src(
        "const C = 1.25\n"
        "param a[2, 3] = zeros\nparam b[2, 3] = ones\nparam c[4] = 0.5\n"
        "param d[4] = -2\nparam e[2, 2] = 3\nparam f[3] = C\n",
        backend,
    )
    p = net.init(0)
    np.testing.assert_array_equal(p["a"], np.zeros((2, 3)))
    np.testing.assert_array_equal(p["b"], np.ones((2, 3)))
    np.testing.assert_array_equal(p["c"], np.full(4, 0.5))
    np.testing.assert_array_equal(p["d"], np.full(4, -2.0))
    np.testing.assert_array_equal(p["e"], np.full((2, 2), 3.0))
    np.testing.assert_array_equal(p["f"], np.full(3, 1.25))


def test_normal_initializer_statistics(backend: str) -> None:
    net = compile_src("param W[200, 300] = normal(0.05)\n", backend)
    w = net.init(0)["W"]
    assert abs(w.mean()) < 5 * 0.05 / math.sqrt(w.size)
    assert w.std() == pytest.approx(0.05, rel=0.02)


def test_uniform_initializer_bounds_and_statistics(backend: str) -> None:
    net = compile_src("param W[200, 300] = uniform(-0.5, 1.5)\n", backend)
    w = net.init(0)["W"]
    assert w.min() >= -0.5 and w.max() <= 1.5
    assert w.min() < -0.49 and w.max() > 1.49  # it fills the whole interval
    assert w.mean() == pytest.approx(0.5, abs=0.01)
    assert w.var() == pytest.approx(2.0 ** 2 / 12, rel=0.02)


def test_xavier_is_glorot_uniform(backend: str) -> None:
    fan_in, fan_out = 300, 200
    net = compile_src(f"param W[{fan_in}, {fan_out}] = xavier\n", backend)
    w = net.init(0)["W"]
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    assert np.abs(w).max() <= bound
    assert np.abs(w).max() > 0.99 * bound
    assert abs(w.mean()) < 0.01 * bound
    assert w.var() == pytest.approx(bound ** 2 / 3, rel=0.02)


def test_he_is_kaiming_normal_fan_in(backend: str) -> None:
    fan_in, fan_out = 400, 250
    net = compile_src(f"param W[{fan_in}, {fan_out}] = he\n", backend)
    w = net.init(0)["W"]
    std = math.sqrt(2.0 / fan_in)
    assert w.std() == pytest.approx(std, rel=0.02)
    assert abs(w.mean()) < 5 * std / math.sqrt(w.size)
    # A normal, not a uniform: a few draws lie beyond 3 standard deviations.
    assert np.abs(w).max() > 3.5 * std


def test_default_initializers(backend: str) -> None:
    """xavier for 2-D and larger, zeros for 1-D: the same draws as writing them out."""
    implicit = compile_src("param A[3, 4]\nparam b[4]\nparam C[2, 3, 4]\n", backend)
    explicit = compile_src(
        "param A[3, 4] = xavier\nparam b[4] = zeros\nparam C[2, 3, 4] = xavier\n", backend
    )
    p, q = implicit.init(5), explicit.init(5)
    for name in ("A", "b", "C"):
        np.testing.assert_array_equal(p[name], q[name])
    np.testing.assert_array_equal(p["b"], np.zeros(4))
    bound = math.sqrt(6.0 / (3 + 4))
    assert 0 < np.abs(p["A"]).max() <= bound


def test_init_is_reproducible_and_seeded(backend: str) -> None:
    net = compile_src("param W[5, 5]\nparam V[5, 5] = he\n", backend)
    a, b, c = net.init(1), net.init(1), net.init(2)
    for name in ("W", "V"):
        np.testing.assert_array_equal(a[name], b[name])
        assert not np.array_equal(a[name], c[name])


# ----------------------------------------------------------------------------------- def


def test_def_and_defs_calling_defs(backend: str, rng: np.random.Generator) -> None:
    net = compile_src(
        "const K = 3\n"
        "def f(a, b) = a * b + K\n"
        "def g(a) = f(a, a) ** 2 - tanh(a)\n"
        "def h(a, b) = maximum(g(a), b) / 2\n"
        "input x[N, 2]\n"
        "input z[N, 2]\n"
        "y = h(x, z) + f(1, x)\n",
        backend,
    )
    x, z = rng.standard_normal((4, 2)), rng.standard_normal((4, 2)) * 10
    g = (x * x + 3) ** 2 - np.tanh(x)
    expected = np.maximum(g, z) / 2 + (x + 3)
    np.testing.assert_allclose(net.forward({}, x=x, z=z)["y"], expected, rtol=1e-12)


def test_def_gradient(backend: str, rng: np.random.Generator) -> None:
    net = compile_src(
        "def swish(a) = a * sigmoid(a)\ninput x[N, 3]\nparam W[3, 2]\n"
        "loss sum(swish(x @ W))\n",
        backend,
    )
    p = net.init(0)
    x = rng.standard_normal((5, 3))
    _, g = net.value_and_grad(p, x=x)
    u = x @ p["W"]
    s = SIGMOID(u)
    expected = x.T @ (s + u * s * (1 - s))
    np.testing.assert_allclose(g["W"], expected, rtol=1e-10)


# ------------------------------------------------------------------- assignment, output


def test_default_output_is_last_assigned(backend: str, rng: np.random.Generator) -> None:
    net = compile_src("input x[N]\na = x * 2\nb = a + 1\nc = exp(x)\n", backend)
    assert net.outputs == ("c",)
    x = rng.standard_normal(3)
    out = net.forward({}, x=x)
    assert list(out) == ["c"]
    np.testing.assert_allclose(out["c"], np.exp(x), rtol=1e-12)


def test_several_outputs(backend: str, rng: np.random.Generator) -> None:
    net = compile_src(
        "input x[N, 3]\nparam w[3] = ones\na = x * w\nb = sum(a, axis=1)\nc = a - 1\n"
        "output b, a\n",
        backend,
    )
    assert net.outputs == ("b", "a")
    x = rng.standard_normal((2, 3))
    out = net.forward(net.init(0), x=x)
    assert set(out) == {"a", "b"}
    np.testing.assert_allclose(out["a"], x, rtol=1e-12)
    np.testing.assert_allclose(out["b"], x.sum(axis=1), rtol=1e-12)


def test_output_may_name_an_input_or_param(backend: str, rng: np.random.Generator) -> None:
    net = compile_src("input x[N]\nparam w[2] = 0.5\ny = x * 2\noutput x, w\n", backend)
    x = rng.standard_normal(3)
    out = net.forward(net.init(0), x=x)
    np.testing.assert_array_equal(out["x"], x)
    np.testing.assert_array_equal(out["w"], np.full(2, 0.5))


# ---------------------------------------------------------------------------------- loss


def test_loss_and_gradient(backend: str, rng: np.random.Generator) -> None:
    net = compile_src(
        "input x[N, 3]\ntarget t[N, 2]\nparam W[3, 2]\nparam b[2] = 0.1\n"
        "y = tanh(x @ W + b)\nloss 0.5 * mean((y - t) ** 2) + 0.01 * sum(W ** 2)\n",
        backend,
    )
    p = net.init(0)
    x, t = rng.standard_normal((4, 3)), rng.standard_normal((4, 2))
    y = np.tanh(x @ p["W"] + p["b"])
    expected = 0.5 * np.mean((y - t) ** 2) + 0.01 * np.sum(p["W"] ** 2)
    assert net.loss(p, x=x, t=t) == pytest.approx(expected, rel=1e-12)
    value, g = net.value_and_grad(p, x=x, t=t)
    assert value == pytest.approx(expected, rel=1e-12)
    d_pre = (y - t) / y.size * (1 - y ** 2)
    np.testing.assert_allclose(g["W"], x.T @ d_pre + 0.02 * p["W"], rtol=1e-10)
    np.testing.assert_allclose(g["b"], d_pre.sum(axis=0), rtol=1e-10)


# ------------------------------------------------------------------------------ optimize


def _clip(grads: dict[str, np.ndarray], max_norm: float) -> dict[str, np.ndarray]:
    """torch.nn.utils.clip_grad_norm_."""
    norm = math.sqrt(sum(float(np.sum(g ** 2)) for g in grads.values()))
    coef = min(1.0, max_norm / (norm + 1e-6))
    return {k: g * coef for k, g in grads.items()}


QUADRATIC = "input x[N, 3]\nparam W[3, 2]\nparam b[2] = 0.5\nloss sum((x @ W + b) ** 2)\n"


def test_default_optimizer_is_sgd_lr_001(backend: str, rng: np.random.Generator) -> None:
    net = compile_src(QUADRATIC, backend)
    p = net.init(0)
    x = rng.standard_normal((4, 3))
    _, g = net.value_and_grad(p, x=x)
    expected = {k: p[k] - 0.01 * g[k] for k in p}
    s = net.init_state(p)
    assert s == {}
    net.step(p, s, x=x)
    for k in p:
        np.testing.assert_allclose(p[k], expected[k], rtol=1e-12)


def test_sgd_with_every_option(backend: str, rng: np.random.Generator) -> None:
    lr, momentum, decay, clip = 0.05, 0.9, 0.01, 0.5
    net = compile_src(
        QUADRATIC + f"optimize sgd(lr={lr}, momentum={momentum}, nesterov=true, "
        f"weight_decay={decay}, clip_norm={clip})\n",
        backend,
    )
    p = net.init(0)
    s = net.init_state(p)
    ours = {k: v.copy() for k, v in p.items()}
    buf: dict[str, np.ndarray] = {}
    for _ in range(3):
        x = rng.standard_normal((4, 3))
        _, g = net.value_and_grad(ours, x=x)
        g = _clip(g, clip)
        for k in ours:  # torch.optim.SGD, nesterov, L2 weight decay
            d = g[k] + decay * ours[k]
            buf[k] = d if k not in buf else momentum * buf[k] + d
            ours[k] = ours[k] - lr * (d + momentum * buf[k])
        net.step(p, s, x=x)
        for k in p:
            np.testing.assert_allclose(p[k], ours[k], rtol=1e-10, atol=1e-14)


def test_adam_with_every_option(backend: str, rng: np.random.Generator) -> None:
    lr, b1, b2, eps, decay, clip = 0.01, 0.8, 0.99, 1e-6, 0.1, 2.0
    net = compile_src(
        QUADRATIC + f"optimize adam(lr={lr}, beta1={b1}, beta2={b2}, eps={eps}, "
        f"weight_decay={decay}, clip_norm={clip})\n",
        backend,
    )
    p = net.init(0)
    s = net.init_state(p)
    ours = {k: v.copy() for k, v in p.items()}
    m = {k: np.zeros_like(v) for k, v in p.items()}
    v2 = {k: np.zeros_like(v) for k, v in p.items()}
    for t in range(1, 4):
        x = rng.standard_normal((4, 3))
        _, g = net.value_and_grad(ours, x=x)
        g = _clip(g, clip)
        for k in ours:  # torch.optim.AdamW
            ours[k] = ours[k] * (1 - lr * decay)
            m[k] = b1 * m[k] + (1 - b1) * g[k]
            v2[k] = b2 * v2[k] + (1 - b2) * g[k] ** 2
            denom = np.sqrt(v2[k]) / math.sqrt(1 - b2 ** t) + eps
            ours[k] = ours[k] - lr / (1 - b1 ** t) * m[k] / denom
        net.step(p, s, x=x)
        for k in p:
            np.testing.assert_allclose(p[k], ours[k], rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("line", [
    "optimize sgd(lr=0.1)",
    "optimize sgd(lr=0.1, momentum=0.5)",
    "optimize sgd(lr=0.1, momentum=0.5, nesterov=false)",
    "optimize sgd(lr=1e-3, weight_decay=0, clip_norm=1)",
    "optimize adam()",
    "optimize adam(lr=0.1)",
    "optimize adam(beta1=0, beta2=0.5, eps=0)",
    "optimize adam(\n    lr=0.001,\n    weight_decay=0.01,\n)",
])
def test_optimizer_forms_parse(backend: str, line: str) -> None:
    net = compile_src(QUADRATIC + line + "\n", backend)
    p = net.init(0)
    s = net.init_state(p)
    before = {k: v.copy() for k, v in p.items()}
    net.step(p, s, x=np.ones((2, 3)))
    assert any(not np.array_equal(p[k], before[k]) for k in p)


# ------------------------------------------------------------------------------- lexical


def test_comments_are_ignored(backend: str, rng: np.random.Generator) -> None:
    net = compile_src(
        "# a comment on its own line\n"
        "input x[N, 2]   # after a statement\n"
        "   # indented comment\n"
        "\n"
        "y = sigmoid(x   # inside brackets, before a newline\n"
        "            * 2)\n"
        "#\n",
        backend,
    )
    x = rng.standard_normal((3, 2))
    np.testing.assert_allclose(net.forward({}, x=x)["y"], SIGMOID(x * 2), rtol=1e-12)


def test_statements_continue_while_brackets_are_open(backend: str,
                                                     rng: np.random.Generator) -> None:
    net = compile_src(
        "input x[\n  N,\n  3\n]\n"
        "param W[3,\n        2] = ones\n"
        "y = (x @ W\n     + 1\n)\n"
        "z = sum(\n  y,\n  axis=1,\n)\n"
        "output y, z\n",
        backend,
    )
    assert net.inputs == {"x": ("N", 3)}
    assert net.params == {"W": (3, 2)}
    x = rng.standard_normal((4, 3))
    out = net.forward(net.init(0), x=x)
    np.testing.assert_allclose(out["y"], x @ np.ones((3, 2)) + 1, rtol=1e-12)
    np.testing.assert_allclose(out["z"], (x @ np.ones((3, 2)) + 1).sum(axis=1), rtol=1e-12)


def test_a_newline_outside_brackets_ends_the_statement(backend: str) -> None:
    with pytest.raises(bpc.BPSyntaxError):
        compile_src("input x[N]\ny = x +\n  1\n", backend)


def test_windows_line_endings(backend: str, rng: np.random.Generator) -> None:
    net = compile_src("input x[N]\r\n# comment\r\ny = x * 3\r\n", backend)
    x = rng.standard_normal(3)
    np.testing.assert_allclose(net.forward({}, x=x)["y"], 3 * x, rtol=1e-12)


def test_number_formats(backend: str, rng: np.random.Generator) -> None:
    net = compile_src(
        "input x[N]\na = x * 3\nb = x * 0.5\nc = x * 1e-3\nd = x * 2.5E+4\ne = x * 4e2\n"
        "f = x * 1.5e-2\ng = x + 007\noutput a, b, c, d, e, f, g\n",
        backend,
    )
    x = rng.standard_normal(5)
    out = net.forward({}, x=x)
    factors = {"a": 3, "b": 0.5, "c": 1e-3, "d": 2.5e4, "e": 400, "f": 0.015}
    for name, factor in factors.items():
        np.testing.assert_allclose(out[name], x * factor, rtol=1e-15, err_msg=name)
    np.testing.assert_allclose(out["g"], x + 7, rtol=1e-15)


def test_decimal_numbers_are_exact(backend: str) -> None:
    """0.1 * 3 is the decimal 0.3 rounded once, as the text says (and as NumPy rounds 0.3)."""
    net = compile_src("param w[1] = ones\ny = w * (0.1 * 3)\n", backend)
    assert float(net.forward(net.init(0))["y"][0]) == pytest.approx(0.3, rel=1e-15)


# --------------------------------------------------------------------------- precedence

PRECEDENCE = [
    # (bp expression over x, y, z, numpy equivalent)
    ("-x ** 2", lambda x, y, z: -(x ** 2)),
    ("-2 ** 2 + x * 0", lambda x, y, z: np.full_like(x, -4.0)),
    ("x ** 3 ** 2", lambda x, y, z: x ** 9),
    ("2 ** 3 ** 2 + x * 0", lambda x, y, z: np.full_like(x, 512.0)),
    ("x ** -y", lambda x, y, z: x ** (-y)),
    ("x - y - z", lambda x, y, z: (x - y) - z),
    ("x / y / z", lambda x, y, z: (x / y) / z),
    ("x / y * z", lambda x, y, z: (x / y) * z),
    ("x + y * z", lambda x, y, z: x + (y * z)),
    ("x * y ** 2", lambda x, y, z: x * (y ** 2)),
    ("x - -y", lambda x, y, z: x + y),
    ("2 * -x", lambda x, y, z: -2 * x),
    ("(x + y) * z", lambda x, y, z: (x + y) * z),
    ("x < y + z", lambda x, y, z: (x < y + z).astype(float)),
    ("x + y > z * 2", lambda x, y, z: ((x + y) > (z * 2)).astype(float)),
    ("x * 2 <= y - z", lambda x, y, z: ((x * 2) <= (y - z)).astype(float)),
    ("x >= y", lambda x, y, z: (x >= y).astype(float)),
    ("x == x", lambda x, y, z: np.ones_like(x)),
    ("x != y", lambda x, y, z: (x != y).astype(float)),
    ("-x * y + z / x", lambda x, y, z: (-x) * y + z / x),
    ("x - y ** 2 / z", lambda x, y, z: x - (y ** 2) / z),
]


@pytest.mark.parametrize("expr, numpy", PRECEDENCE, ids=[e for e, _ in PRECEDENCE])
def test_precedence_and_associativity(backend: str, rng: np.random.Generator, expr: str,
                                      numpy) -> None:
    net = compile_src(f"input x[N, 3]\ninput y[N, 3]\ninput z[N, 3]\nr = {expr}\n", backend)
    x, y, z = (positive(rng, 4, 3) for _ in range(3))
    np.testing.assert_allclose(net.forward({}, x=x, y=y, z=z)["r"], numpy(x, y, z),
                               rtol=1e-12)


def test_matmul_shares_precedence_with_times(backend: str, rng: np.random.Generator) -> None:
    """`*` and `@` are one level, left-associative: x * v @ W is (x * v) @ W."""
    net = compile_src(
        "input x[N, 2]\nparam v[2]\nparam W[2, 2]\na = x * v @ W\nb = x @ W * v\n"
        "c = x @ W + v\noutput a, b, c\n",
        backend,
    )
    p = {"v": rng.standard_normal(2), "W": rng.standard_normal((2, 2))}
    x = rng.standard_normal((3, 2))
    out = net.forward(p, x=x)
    np.testing.assert_allclose(out["a"], (x * p["v"]) @ p["W"], rtol=1e-12)
    np.testing.assert_allclose(out["b"], (x @ p["W"]) * p["v"], rtol=1e-12)
    np.testing.assert_allclose(out["c"], x @ p["W"] + p["v"], rtol=1e-12)


def test_transpose(backend: str, rng: np.random.Generator) -> None:
    net = compile_src(
        "input x[N, 3]\nparam W[2, 3]\na = x @ W.T\nb = x.T\nc = (x @ W.T).T.T\n"
        "d = -W.T ** 2\noutput a, b, c, d\n",
        backend,
    )
    p = {"W": rng.standard_normal((2, 3))}
    x = rng.standard_normal((4, 3))
    out = net.forward(p, x=x)
    np.testing.assert_allclose(out["a"], x @ p["W"].T, rtol=1e-12)
    np.testing.assert_array_equal(out["b"], x.T)
    np.testing.assert_allclose(out["c"], x @ p["W"].T, rtol=1e-12)
    np.testing.assert_allclose(out["d"], -(p["W"].T ** 2), rtol=1e-12)


def test_matmul_of_vectors(backend: str, rng: np.random.Generator) -> None:
    net = compile_src(
        "param u[3]\nparam M[3, 2]\nparam v[2]\na = u @ M\nb = M @ v\nc = u @ u\n"
        "output a, b, c\n",
        backend,
    )
    p = {"u": rng.standard_normal(3), "M": rng.standard_normal((3, 2)),
         "v": rng.standard_normal(2)}
    out = net.forward(p)
    np.testing.assert_allclose(out["a"], p["u"] @ p["M"], rtol=1e-12)
    np.testing.assert_allclose(out["b"], p["M"] @ p["v"], rtol=1e-12)
    np.testing.assert_allclose(out["c"], p["u"] @ p["u"], rtol=1e-12)


def test_broadcasting_follows_numpy(backend: str, rng: np.random.Generator) -> None:
    net = compile_src(
        "input x[N, 3]\nparam r[1, 3]\nparam c[4, 1]\nparam s[]\n"
        "a = x + r\nb = c * r\nc2 = x * s + 1\noutput a, b, c2\n",
        backend,
    )
    p = {"r": rng.standard_normal((1, 3)), "c": rng.standard_normal((4, 1)),
         "s": np.array(1.5)}
    x = rng.standard_normal((4, 3))
    out = net.forward(p, x=x)
    np.testing.assert_allclose(out["a"], x + p["r"], rtol=1e-12)
    np.testing.assert_allclose(out["b"], p["c"] * p["r"], rtol=1e-12)
    np.testing.assert_allclose(out["c2"], x * 1.5 + 1, rtol=1e-12)


def test_boolean_options(backend: str, rng: np.random.Generator) -> None:
    net = compile_src(
        "input x[N, 3]\na = sum(x, axis=0, keepdims=true)\nb = sum(x, axis=1, keepdims=false)\n"
        "c = max(x, axis=-1, keepdims=true)\noutput a, b, c\n",
        backend,
    )
    x = rng.standard_normal((2, 3))
    out = net.forward({}, x=x)
    np.testing.assert_allclose(out["a"], x.sum(axis=0, keepdims=True), rtol=1e-12)
    np.testing.assert_allclose(out["b"], x.sum(axis=1), rtol=1e-12)
    np.testing.assert_array_equal(out["c"], x.max(axis=-1, keepdims=True))


def test_names_that_start_with_a_keyword_are_names(backend: str) -> None:
    net = compile_src(
        "param trueish[2] = 1\nparam false_[2] = 2\nparam losses[2] = 3\nparam inputs[2] = 4\n"
        "y = trueish + false_ + losses + inputs\n",
        backend,
    )
    np.testing.assert_array_equal(net.forward(net.init(0))["y"], np.full(2, 10.0))


# ----------------------------------------------------------------------------- dense


@pytest.mark.parametrize("act, init", [
    ("relu", "he"), ("leaky_relu", "he"), ("elu", "he"), ("gelu", "he"),
    ("tanh", "xavier"), ("sigmoid", "xavier"), ("linear", "xavier"), (None, "xavier"),
    ("mine", "xavier"),
])
def test_dense_params_and_init(backend: str, act: str | None, init: str) -> None:
    act_arg = "" if act is None else f", act={act}"
    net = compile_src(
        f"def mine(a) = a * 2\ninput x[N, 5]\nh1 = dense(x, 7{act_arg})\n", backend
    )
    assert net.params == {"h1.W": (5, 7), "h1.b": (7,)}
    twin = compile_src(f"param W[5, 7] = {init}\nparam b[7] = zeros\n", backend)
    p, q = net.init(11), twin.init(11)
    np.testing.assert_array_equal(p["h1.W"], q["W"])
    np.testing.assert_array_equal(p["h1.b"], q["b"])


DENSE_ACTS = {
    "relu": lambda u: np.maximum(u, 0),
    "tanh": np.tanh,
    "sigmoid": SIGMOID,
    "linear": lambda u: u,
    "softplus": lambda u: np.log1p(np.exp(u)),
    "cube": lambda u: u ** 3 + 1,
}


@pytest.mark.parametrize("act", sorted(DENSE_ACTS))
def test_dense_forward(backend: str, rng: np.random.Generator, act: str) -> None:
    net = compile_src(
        f"def cube(a) = a ** 3 + 1\ninput x[N, 4]\nh = dense(x, 3, act={act})\n"
        f"out = dense(h, 2)\noutput h, out\n",
        backend,
    )
    assert list(net.params) == ["h.W", "h.b", "out.W", "out.b"]
    assert net.params["out.W"] == (3, 2)
    p = {name: rng.standard_normal(shape) for name, shape in net.params.items()}
    x = rng.standard_normal((5, 4))
    h = DENSE_ACTS[act](x @ p["h.W"] + p["h.b"])
    result = net.forward(p, x=x)
    np.testing.assert_allclose(result["h"], h, rtol=1e-12)
    np.testing.assert_allclose(result["out"], h @ p["out.W"] + p["out.b"], rtol=1e-12)


def test_dense_params_usable_in_expressions(backend: str, rng: np.random.Generator) -> None:
    net = compile_src(
        "input x[N, 3]\ntarget t[N, 2]\nh1 = dense(x, 2, act=tanh)\n"
        "penalty = sum(h1.W ** 2) + sum(h1.b)\n"
        "loss mean((h1 - t) ** 2) + 0.1 * penalty\noutput h1\n",
        backend,
    )
    p = {name: rng.standard_normal(shape) for name, shape in net.params.items()}
    x, t = rng.standard_normal((4, 3)), rng.standard_normal((4, 2))
    h = np.tanh(x @ p["h1.W"] + p["h1.b"])
    expected = np.mean((h - t) ** 2) + 0.1 * (np.sum(p["h1.W"] ** 2) + np.sum(p["h1.b"]))
    assert net.loss(p, x=x, t=t) == pytest.approx(expected, rel=1e-12)
    _, g = net.value_and_grad(p, x=x, t=t)
    d_pre = 2 * (h - t) / h.size * (1 - h ** 2)
    np.testing.assert_allclose(g["h1.W"], x.T @ d_pre + 0.2 * p["h1.W"], rtol=1e-10)
    np.testing.assert_allclose(g["h1.b"], d_pre.sum(axis=0) + 0.1, rtol=1e-10)


def test_dense_uses_a_const_for_units(backend: str) -> None:
    net = compile_src("const H = 6\ninput x[N, 2]\nh = dense(x, H)\n", backend)
    assert net.params == {"h.W": (2, 6), "h.b": (6,)}


# ------------------------------------------------------------------------ no inputs


def test_network_without_inputs(backend: str) -> None:
    net = compile_src(
        "param w[3] = uniform(-1, 1)\ny = w * 2\nloss sum((w - 1) ** 2)\n"
        "optimize sgd(lr=0.25)\n",
        backend,
    )
    assert net.inputs == {} and net.targets == {}
    p = net.init(0)
    w = p["w"].copy()
    np.testing.assert_allclose(net.forward(p)["y"], 2 * w, rtol=1e-12)
    assert net.loss(p) == pytest.approx(np.sum((w - 1) ** 2), rel=1e-12)
    value, g = net.value_and_grad(p)
    assert value == pytest.approx(np.sum((w - 1) ** 2), rel=1e-12)
    np.testing.assert_allclose(g["w"], 2 * (w - 1), rtol=1e-12)
    s = net.init_state(p)
    before = net.step(p, s)
    assert before == pytest.approx(np.sum((w - 1) ** 2), rel=1e-12)
    np.testing.assert_allclose(p["w"], w - 0.25 * 2 * (w - 1), rtol=1e-12)
    with pytest.raises(bpc.BPNameError):
        net.forward(p, x=np.ones(3))


def test_empty_program_compiles(backend: str) -> None:
    net = compile_src("# nothing but a comment\n\n", backend)
    assert net.params == {} and net.inputs == {} and net.outputs == ()
    assert net.forward({}) == {}


# ---------------------------------------------------------------------------- names

ROLES = ("net", "const", "def", "arg", "input", "dim", "target", "param", "bias", "hidden",
         "layer", "out")
PLAIN = dict(zip(ROLES, ("net", "C", "f", "a", "x", "N", "t", "W", "b", "h", "d", "y")))


def named_net(names: dict[str, str]) -> str:
    n = names
    return (
        f"network {n['net']}\nconst {n['const']} = 2\n"
        f"def {n['def']}({n['arg']}) = {n['arg']} * {n['const']}\n"
        f"input {n['input']}[{n['dim']}, 3]\ntarget {n['target']}[{n['dim']}, 2]\n"
        f"param {n['param']}[3, 2]\nparam {n['bias']}[2] = 0.5\n"
        f"{n['hidden']} = {n['def']}({n['input']} @ {n['param']} + {n['bias']})\n"
        f"{n['layer']} = dense({n['hidden']}, 2, act=tanh)\n"
        f"{n['out']} = {n['layer']} * {n['const']}\n"
        f"loss mean(({n['out']} - {n['target']}) ** 2) + sum({n['layer']}.W ** 2) / "
        f"{n['dim']}\n"
        "optimize adam(lr=0.1)\n"
    )


def run_named(names: dict[str, str], backend: str) -> list[np.ndarray]:
    """Everything a call gives, in declaration order (so that names do not matter)."""
    net = compile_src(named_net(names), backend)
    x = np.arange(12.0).reshape(4, 3) / 10
    t = np.linspace(-1, 1, 8).reshape(4, 2)
    data = {names["input"]: x}
    p = net.init(0)
    results = list(net.forward(p, **data).values())
    value, grads = net.value_and_grad(p, **data, **{names["target"]: t})
    results += [np.array(value), *grads.values()]
    s = net.init_state(p)
    for _ in range(2):
        net.step(p, s, **data, **{names["target"]: t})
    return results + list(p.values()) + list(s.values())


_PLAIN_RESULTS: dict[str, list[np.ndarray]] = {}  # backend -> run_named(PLAIN, backend)


def _name_case(role: str, name: str, bug: tuple[str, str | None] | None = None):
    return pytest.param(role, name, bug, id=f"{role}={name}")


@pytest.mark.parametrize("role, name, bug", [
    # Python keywords and the generated module's own names are ordinary .bp names.
    *(_name_case(role, name) for role in ("input", "target", "param", "hidden", "out",
                                          "def", "arg", "const", "net")
      for name in ("lambda", "None", "np")),
    _name_case("bias", "DTYPE"), _name_case("hidden", "grads"), _name_case("input", "rng"),
    _name_case("layer", "with"), _name_case("param", "forward"), _name_case("dim", "B"),
    # These were bugs (found by these tests): a dim named like a keyword, data named like
    # the API's own arguments, names the generated module uses, Adam's step count.
    _name_case("dim", "with"),
    _name_case("dim", "None"),
    _name_case("dim", "np"),
    _name_case("input", "p"),
    _name_case("target", "s"),
    _name_case("param", "grads"),
    _name_case("param", "step"),
    _name_case("param", "value_and_grad"),
    _name_case("input", "value_and_grad"),
])
def test_any_name_works(request: pytest.FixtureRequest, backend: str, role: str, name: str,
                        bug: tuple[str, str | None] | None) -> None:
    """SPEC: a name is any [A-Za-z_][A-Za-z0-9_]* but the .bp keywords. Renaming one thing
    changes no number (oracle: the same network with plain names)."""
    if bug is not None and bug[1] in (None, backend):
        request.applymarker(pytest.mark.xfail(reason=bug[0], strict=True))
    if backend not in _PLAIN_RESULTS:
        _PLAIN_RESULTS[backend] = run_named(PLAIN, backend)
    expected = _PLAIN_RESULTS[backend]
    got = run_named({**PLAIN, role: name}, backend)
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a, b, rtol=1e-12)
