"""`bpcompile show`: the activation derivatives SymPy found and the textbook delta chain.

Oracles: sympy.diff of each activation (the printed derivative, read back with SymPy, must
equal it); the layer order of the network (each delta sends the next layer's delta back
through that layer's weights, transposed, from the output layer to the param's); and
LaTeX's own rules (balanced braces, matched environments), with the derivative parts as
SymPy's printer writes them.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import sympy

import bpcompile as bpc
from bpcompile.graph.functions import Relu, Sigmoid
from bpcompile.inspect.notebook import latex
from bpcompile.inspect.show import describe

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
Z = sympy.Symbol("z", real=True)
FUNCTIONS = {"σ": Sigmoid, "relu": Relu, "tanh": sympy.tanh}
READ_BACK = {"sigmoid": Sigmoid, "relu": Relu, "tanh": sympy.tanh, "z": Z}

TANH = """
input x[N, 3]
target t[N, 2]
h = dense(x, 4, act=tanh)
y = dense(h, 2, act=sigmoid)
loss mse(y, t)
"""


def section(text: str, title: str) -> list[str]:
    """The indented lines under `title` in one param's `show` output."""
    lines = text.splitlines()
    start = next(k for k, line in enumerate(lines) if line.startswith(f"  {title}"))
    body = []
    for line in lines[start + 1:]:
        if not line.startswith("    "):
            break
        body.append(line.strip())
    return body


def chain(text: str) -> list[str]:
    return section(text, "delta chain")


def transposed_weights(lines: list[str]) -> list[str]:
    """The weights each delta line sends a delta back through, in printed order."""
    return [w for line in lines if line.startswith("δ")
            for w in re.findall(r"@ ([\w.]+)ᵀ", line)]


@pytest.mark.parametrize("backend", ["numpy", "llvm"])
def test_xor_delta_chain(backend: str) -> None:
    net = bpc.compile_file(EXAMPLES / "xor.bp", backend=backend)
    w1 = chain(describe(net, "W1"))
    assert "δ2 = (y - t) ⊙ σ'(z2)" in w1
    assert "δ1 = (δ2 @ W2ᵀ) ⊙ σ'(z1)" in w1
    assert w1[-1] == "∂L/∂W1 = xᵀ @ δ1"
    assert w1.index("z1 = x @ W1 + b1") < w1.index("z2 = h @ W2 + b2")
    w2 = chain(describe(net, "W2"))
    assert transposed_weights(w2) == [] and w2[-1] == "∂L/∂W2 = hᵀ @ δ2"
    assert chain(describe(net, "b1"))[-1] == "∂L/∂b1 = sum(δ1, axis=0)"


@pytest.mark.parametrize("example, param, weights, last", [
    ("mlp.bp", "W1", ["W2"], "∂L/∂W1 = xᵀ @ δ1"),
    ("mlp.bp", "W2", [], "∂L/∂W2 = hᵀ @ δ2"),
    ("digits.bp", "h1.W", ["logits.W", "h2.W"], "∂L/∂h1.W = xᵀ @ δ1"),
    ("digits.bp", "h2.b", ["logits.W"], "∂L/∂h2.b = sum(δ2, axis=0)"),
])
def test_deltas_go_back_through_each_layer_in_order(example: str, param: str,
                                                    weights: list[str], last: str) -> None:
    lines = chain(describe(bpc.compile_file(EXAMPLES / example), param))
    assert transposed_weights(lines) == weights
    assert lines[-1] == last
    deltas = [int(line[1]) for line in lines if line.startswith("δ")]
    assert deltas == sorted(deltas, reverse=True)  # from the loss back to the param


def test_mlp_output_delta_is_the_loss_derivative() -> None:
    lines = chain(describe(bpc.compile_file(EXAMPLES / "mlp.bp"), "W1"))
    assert "δ2 = (y - t) / (N * 5)" in lines  # mse over 10 outputs: 2 (y - t) / (10 N)
    assert "δ1 = (δ2 @ W2ᵀ) ⊙ relu'(z1)" in lines


@pytest.mark.parametrize("source, kinds", [
    ((EXAMPLES / "xor.bp").read_text(), {"σ"}),
    ((EXAMPLES / "mlp.bp").read_text(), {"relu"}),
    (TANH, {"tanh", "σ"}),
])
def test_activation_derivatives_are_sympys(source: str, kinds: set[str]) -> None:
    net = bpc.compile(source)
    text = describe(net)
    found = set()
    for line in section(text, "activation derivatives"):
        match = re.fullmatch(r"(\S+)'\(z\) = (.+)", line)
        if not match:
            continue
        name, printed = match.groups()
        found.add(name)
        read = sympy.sympify(printed, locals=READ_BACK)
        want = sympy.diff(FUNCTIONS[name](Z), Z)
        for value in (-1.3, -0.2, 0.4, 2.0):
            assert float(read.subs(Z, value)) == pytest.approx(float(want.subs(Z, value)))
    assert found == kinds


def test_activation_derivative_read_off_the_output() -> None:
    lines = section(describe(bpc.compile_file(EXAMPLES / "xor.bp"), "W1"),
                    "activation derivatives")
    assert "σ'(z1) = h * (1 - h)" in lines and "σ'(z2) = y * (1 - y)" in lines


def test_not_layered_falls_back() -> None:
    net = bpc.compile("input x[N, 2]\nparam w[2, 2]\nloss sum((x @ w) @ w)\n")
    text = describe(net)
    assert "not a plain stack of layers" in chain(text)[0]
    assert "chain rule, from the loss back to w:" in text


def balanced(text: str) -> bool:
    depth = 0
    for c in re.sub(r"\\[{}]", "", text):
        depth += {"{": 1, "}": -1}.get(c, 0)
        if depth < 0:
            return False
    return depth == 0


def environments_match(text: str) -> bool:
    stack = []
    for kind, name in re.findall(r"\\(begin|end)\{([^}]*)\}", text):
        if kind == "begin":
            stack.append(name)
        elif not stack or stack.pop() != name:
            return False
    return not stack


@pytest.mark.parametrize("example", ["xor.bp", "mlp.bp", "digits.bp", "regression.bp"])
def test_latex_is_well_formed(example: str) -> None:
    text = describe(bpc.compile_file(EXAMPLES / example), latex=True)
    code = re.sub(r"\\begin\{verbatim\}.*?\\end\{verbatim\}", "", text, flags=re.S)
    assert balanced(code) and environments_match(text)
    assert "\\begin{align*}" in text


def test_latex_delta_chain_and_derivatives() -> None:
    text = describe(bpc.compile(TANH), "h.W", latex=True)
    assert r"\odot" in text and r"^\top" in text and r"\tanh'" in text
    assert rf"\tanh'\left(z\right) &= {sympy.latex(sympy.diff(sympy.tanh(Z), Z))}" in text
    assert rf"\sigma'\left(z\right) &= {latex(sympy.diff(Sigmoid(Z), Z))}" in text
    assert r"\frac{\partial L}{\partial \texttt{h.W}} &= {x}^\top \delta_{1}" in text
