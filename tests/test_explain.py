"""`bpcompile explain` and `bpcompile.explain` (SPEC section 3).

Oracles: the compiled network's own `value_and_grad` on both backends (the unrolled closed
forms, evaluated by sympy.lambdify at random params and data, must agree to 1e-10), and for
XOR a derivation written here by hand in SymPy, as a student writes it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import sympy

import bpcompile as bpc
from bpcompile.graph.functions import STANDARD_FORMS, Sigmoid
from bpcompile.inspect.explain import MAX_WEIGHTS

REPO = Path(__file__).resolve().parent.parent
XOR = REPO / "examples" / "xor.bp"

SMALL = {
    "tanh": """
input x[N, 3]
target t[N, 2]
h = dense(x, 3, act=tanh)
y = dense(h, 2)
loss mse(y, t)
""",
    "relu": """
input x[N, 2]
target t[N, 1]
param W1[2, 4]
param b1[4] = 0.1
param W2[4, 1]
h = relu(x @ W1 + b1)
y = h @ W2
loss 0.5 * sum((y - t) ** 2)
""",
    "softmax": """
input x[N, 2]
target t[N, 3]
logits = dense(x, 3)
loss cross_entropy(logits, t)
""",
    "sigmoid-bce": """
input x[N, 2]
target t[N, 1]
h = dense(x, 2, act=tanh)
y = dense(h, 1, act=sigmoid)
loss binary_cross_entropy(y, t)
""",
    "softmax-ce": """
input x[N, 2]
target t[N, 3]
h = dense(x, 2, act=relu)
z = dense(h, 3)
loss cross_entropy(z, t)
""",
    "def": """
def swish(u) = u * sigmoid(u)
input x[N, 2]
target t[N, 1]
h = dense(x, 3, act=swish)
y = dense(h, 1, act=sigmoid)
loss binary_cross_entropy(y, t)
""",
}


def compiled(name: str, backend: str) -> bpc.CompiledNet:
    if name == "xor":
        return bpc.compile_file(XOR, backend=backend)
    return bpc.compile(SMALL[name], backend=backend)


def random_case(net: bpc.CompiledNet, batch: int, seed: int) -> tuple[dict, dict]:
    rng = np.random.default_rng(seed)
    p = {n: rng.normal(0.0, 0.8, size=s) for n, s in net.params.items()}
    data = {}
    for name, shape in {**net.inputs, **net.targets}.items():
        concrete = tuple(batch if isinstance(d, str) else d for d in shape)
        if name in net.targets:
            values = rng.uniform(0.05, 0.95, size=concrete)
            data[name] = values / values.sum(axis=-1, keepdims=True) if concrete[-1] > 1 \
                else values
        else:
            data[name] = rng.normal(size=concrete)
    return p, data


def closed_forms(e: bpc.Explanation, p: dict, data: dict) -> tuple[float, dict]:
    """Evaluate the unrolled closed forms numerically."""
    symbols = [s for a in (*e.params.values(), *e.data.values()) for s in a.flat]
    values = [v for n in e.params for v in p[n].flat] + [v for n in e.data
                                                           for v in data[n].flat]

    def standard(expr: sympy.Expr) -> sympy.Expr:
        expr = e.unrolled(expr)
        for function, form in STANDARD_FORMS.items():  # in functions lambdify knows
            expr = expr.replace(function, form)
        return expr

    # one lambdify for the loss and every entry of every gradient: its code generation,
    # not the arithmetic, is the slow part
    exprs = [standard(e.loss)] + [standard(x) for g in e.grads.values() for x in g.flat]
    numbers = iter(sympy.lambdify(symbols, exprs, "math", dummify=True)(*values))
    loss = float(next(numbers))
    grads = {n: np.array([float(next(numbers)) for _ in range(g.size)]).reshape(g.shape)
             for n, g in e.grads.items()}
    return loss, grads


# Every network against the numpy backend; xor against llvm too (the backends agree with
# each other everywhere else, and unrolling is the slow part). CI unrolls one network over a
# batch of two; BPCOMPILE_LONG_TESTS=1 unrolls relu, softmax and softmax-ce over two too
# (about 90 s more).
LONG = bool(os.environ.get("BPCOMPILE_LONG_TESTS"))


@pytest.mark.parametrize("name, batch, backend", [
    ("xor", 1, "numpy"), ("xor", 1, "llvm"), ("xor", 2, "numpy"), ("tanh", 1, "numpy"),
    ("relu", 2 if LONG else 1, "numpy"), ("softmax", 2 if LONG else 1, "numpy"),
    ("def", 1, "numpy"), ("sigmoid-bce", 1, "numpy"),
    ("softmax-ce", 2 if LONG else 1, "numpy")])
def test_closed_forms_match_value_and_grad(name: str, batch: int, backend: str) -> None:
    net = compiled(name, backend)
    explanation = bpc.explain(net, batch=batch)
    for seed in (0, 1):
        p, data = random_case(net, batch, seed)
        loss, grads = closed_forms(explanation, p, data)
        want_loss, want = net.value_and_grad(p, **data)
        assert loss == pytest.approx(want_loss, rel=1e-10, abs=1e-10)
        assert set(grads) == set(want)
        for param, g in grads.items():
            np.testing.assert_allclose(g, want[param], rtol=1e-10, atol=1e-10, err_msg=param)


def test_xor_closed_form_for_W2_is_the_hand_derivation() -> None:
    """dL/dW2_j1 = (y - t) y (1 - y) h_j, with h_j = σ(Σ_i x_i W1_ij + b1_j), y = σ(...)."""
    e = bpc.explain(bpc.compile_file(XOR))
    x = sympy.symbols("x_1 x_2", real=True)
    t = sympy.Symbol("t", real=True)
    W1 = sympy.Matrix(2, 3, lambda i, j: sympy.Symbol(f"W1_{i + 1}{j + 1}", real=True))
    b1 = [sympy.Symbol(f"b1_{j + 1}", real=True) for j in range(3)]
    W2 = [sympy.Symbol(f"W2_{j + 1}1", real=True) for j in range(3)]
    b2 = sympy.Symbol("b2", real=True)
    h = [Sigmoid(x[0] * W1[0, j] + x[1] * W1[1, j] + b1[j]) for j in range(3)]
    y = Sigmoid(sum(h[j] * W2[j] for j in range(3)) + b2)
    loss = sympy.Rational(1, 2) * (y - t) ** 2
    # the same symbols, so the closed forms are checked symbol for symbol
    assert [s for s in e.params["W2"].flat] == W2
    named_h = [sympy.Symbol(f"h_{j + 1}", real=True) for j in range(3)]
    named_y = sympy.Symbol("y", real=True)
    for j in range(3):
        by_hand = sympy.diff(loss, W2[j])
        assert sympy.simplify(e.unrolled(e.grads["W2"][j, 0]) - by_hand) == 0
        student = (named_y - t) * named_y * (1 - named_y) * named_h[j]
        assert sympy.expand(e.grads["W2"][j, 0] - student) == 0


def test_names_make_the_closed_forms_readable() -> None:
    e = bpc.explain(bpc.compile_file(XOR))
    text = e.text()
    assert "∂L/∂W1_11 = (y - t) * y * (1 - y) * W2_11 * h_1 * (1 - h_1) * x_1" in text
    assert "h_1 = sigmoid(W1_11 * x_1 + W1_21 * x_2 + b1_1)" in text
    assert "L = (y - t) ** 2 / 2" in text


def test_param_filter_and_batch_naming() -> None:
    e = bpc.explain(bpc.compile_file(XOR), batch=2, param="b2")
    assert list(e.grads) == ["b2"]
    names = [s.name for s in e.data["x"].flat]
    assert names == ["x_11", "x_12", "x_21", "x_22"]


def test_too_big_is_refused() -> None:
    net = bpc.compile_file(REPO / "examples" / "mlp.bp")
    with pytest.raises(bpc.BPError, match=rf"5560 scalar weights.*{MAX_WEIGHTS}"):
        bpc.explain(net)
    with pytest.raises(bpc.BPError, match="batch 100"):
        bpc.explain(bpc.compile_file(XOR), batch=100)


def test_no_loss_is_refused() -> None:
    with pytest.raises(bpc.BPError, match="no loss"):
        bpc.explain(bpc.compile("param w[3]\ny = w * 2\n"))


def run_cli(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bpcompile.cli", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(REPO), "PATH": ""})


def test_cli_explain(tmp_path: Path) -> None:
    result = run_cli("explain", XOR, "--param", "W2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = [line.strip() for line in result.stdout.splitlines()]
    assert "∂L/∂W2_21 = (y - t) * y * (1 - y) * h_2" in lines
    assert not any(line.startswith("∂L/∂W1") for line in lines)


def test_cli_explain_latex(tmp_path: Path) -> None:
    result = run_cli("explain", XOR, "--latex", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert text.count("{") == text.count("}")
    assert re.findall(r"\\(begin|end)\{align\*\}", text) == ["begin", "end"]
    assert r"\frac{\partial L}{\partial {W_{2}}_{1,1}}" in text
    assert r"\sigma\left(" in text


@pytest.mark.parametrize("args, message", [
    (("explain", REPO / "examples" / "mlp.bp"), "5560"),
    (("explain", XOR, "--batch", "0"), "batch 0"),
    (("explain", XOR, "--param", "W9"), "W9"),
])
def test_cli_explain_refusals_exit_2(tmp_path: Path, args: tuple, message: str) -> None:
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_cli_explain_without_loss_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "noloss.bp"
    path.write_text("param w[3]\ny = w * 2\n")
    result = run_cli("explain", path, cwd=tmp_path)
    assert result.returncode == 2
    assert "no loss" in result.stderr and "Traceback" not in result.stderr


# ------------------------------------------- the output layer's textbook (y - t) forms

def symbols(*names: str) -> list[sympy.Symbol]:
    return [sympy.Symbol(n, real=True) for n in names]


def test_sigmoid_with_binary_cross_entropy_is_y_minus_t() -> None:
    """Oracle: the textbook result, d/dW2 of BCE(sigmoid(h @ W2 + b2)) = (y - t) h, checked
    symbol for symbol (SymPy: the difference expands to 0)."""
    e = bpc.explain(bpc.compile(SMALL["sigmoid-bce"]))
    y, t, h1, h2 = symbols("y", "t", "h_1", "h_2")
    assert sympy.expand(e.grads["y.W"][0, 0] - (y - t) * h1) == 0
    assert sympy.expand(e.grads["y.W"][1, 0] - (y - t) * h2) == 0
    assert sympy.expand(e.grads["y.b"][0] - (y - t)) == 0
    assert "∂L/∂y.W_11 = (y - t) * h_1" in e.text()


def test_softmax_with_cross_entropy_is_p_minus_t() -> None:
    """Oracle: (softmax(z)_k - t_k) * h_j, for targets whose rows sum to 1."""
    e = bpc.explain(bpc.compile(SMALL["softmax-ce"]))
    h = symbols("h_1", "h_2")
    t = symbols("t_1", "t_2", "t_3")
    p = symbols("softmax(z)_1", "softmax(z)_2", "softmax(z)_3")
    for j in range(2):
        for k in range(3):
            assert sympy.expand(e.grads["z.W"][j, k] - (p[k] - t[k]) * h[j]) == 0
    assert "sums to 1" in e.text()


def test_identity_with_mse_keeps_the_output_named() -> None:
    """A linear output layer: ∂L/∂W2 = 2 (y - t) h / outputs, with y the name just defined,
    not its sum of products written out again."""
    e = bpc.explain(bpc.compile(SMALL["tanh"]))
    y1, t1, h1 = symbols("y_1", "t_1", "h_1")
    assert sympy.expand(e.grads["y.W"][0, 0] - (y1 - t1) * h1) == 0  # mean over 2 outputs
    assert "y.W_11 * h_1" not in e.text().split("gradients")[1]


def test_latex_keeps_the_chain_rule_order() -> None:
    """The LaTeX reads as the text does, from the loss back: (y - t), then y (1 - y), then
    W2, then h (1 - h), then x; not SymPy's alphabetical order."""
    e = bpc.explain(bpc.compile_file(XOR), param="W1")
    row = next(r for r in e.latex().splitlines() if r"{W_{1}}_{1,1}}" in r.split("&=")[0])
    right = row.split("&=")[1]
    order = [right.index(part) for part in (r"\left(y - t\right)", r"{W_{2}}_{1,1}",
                                            r"{h}_{1}", r"{x}_{1}")]
    assert order == sorted(order), right


def test_an_explanation_reads_in_a_plain_repl() -> None:
    e = bpc.explain(bpc.compile_file(XOR))
    assert repr(e) == e.text() and repr(e).startswith("explain xor")
