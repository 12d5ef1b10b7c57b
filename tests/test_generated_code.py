"""The generated NumPy module reads like code a careful person wrote: lines of at most 99
columns, one quoting style, the optimizer's options as named constants, and the header
saying what the names in it mean.

Oracles: Python's own tokenizer and parser (the module's tokens and statements), the
`.bp` file (the options it wrote), and executing the module (it still computes the loss
the network computes).
"""

from __future__ import annotations

import ast
import io
import tokenize
from pathlib import Path

import numpy as np
import pytest
from conftest import example_paths

import bpcompile as bpc

WIDTH = 99

# Long expressions, long names, many options: what wrapping and naming must handle.
LONG = """
def swish(z) = z * sigmoid(z)
input features_of_every_sample[N, 4]
target expected_class_probabilities[N, 3]
param a_rather_long_weight_name[4, 3] = normal(0.8)
param bias_of_the_first_layer[3] = uniform(-0.5, 0.5)
z = features_of_every_sample @ a_rather_long_weight_name + bias_of_the_first_layer
h = gelu(z) + elu(z, alpha=0.7) + leaky_relu(z, alpha=0.1) + softplus(z) * 1.3 + swish(z)
k = h - logsumexp(h, axis=1, keepdims=true) + where(z > 0, z, 0.5 * z)
loss cross_entropy(k, expected_class_probabilities) + 0.1 * mean(max(h, axis=0))
optimize adam(lr=0.003, beta1=0.8, beta2=0.99, eps=1e-7, weight_decay=0.01, clip_norm=5)
"""
SOURCES = {**{p.name: p.read_text() for p in example_paths()}, "long.bp": LONG}


@pytest.fixture(params=list(SOURCES))
def module(request: pytest.FixtureRequest) -> tuple[str, str]:
    name = request.param
    return SOURCES[name], bpc.compile(SOURCES[name], filename=name).code()


def test_lines_fit_in_100_columns(module: tuple[str, str]) -> None:
    _, code = module
    long = [line for line in code.splitlines() if len(line) > WIDTH]
    assert not long, "\n".join(long)


def test_one_quoting_style(module: tuple[str, str]) -> None:
    """Every string literal in double quotes, as the docstrings are."""
    _, code = module
    tokens = tokenize.generate_tokens(io.StringIO(code).readline)
    single = [t.string for t in tokens if t.type == tokenize.STRING
              and t.string.lstrip("rbfRBF")[0] == "'"]
    assert not single, single


def test_the_optimizers_options_are_named_constants(module: tuple[str, str]) -> None:
    """`LR = 0.1` at the top, and the update reads LR, not the number."""
    source, code = module
    tree = ast.parse(code)
    constants = {node.targets[0].id: ast.literal_eval(node.value) for node in tree.body
                 if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
                 and node.targets[0].id.isupper() and isinstance(node.value, ast.Constant)}
    update = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "update")
    read = {n.id for n in ast.walk(update) if isinstance(n, ast.Name)}
    assert "LR" in constants and "LR" in read
    written = source.split("optimize", 1)[1] if "\noptimize" in source else "lr=0.01"
    if "lr=" in written:
        lr = float(written.split("lr=")[1].split(",")[0].split(")")[0])
        assert constants["LR"] == lr


def test_the_header_says_what_names_mean(module: tuple[str, str]) -> None:
    _, code = module
    docstring = ast.get_docstring(ast.parse(code))
    for affix in ("d_NAME", "NAME_pre", "NAME_part"):
        assert affix in docstring


def test_wrapped_code_computes_what_the_network_does(tmp_path: Path) -> None:
    """Wrapping changes lines, not values: the standalone module's loss and gradients equal
    the network's own (run through the runtime)."""
    net = bpc.compile(LONG, filename="long.bp")
    namespace: dict = {}
    exec(compile(net.code(), "long.py", "exec"), namespace)  # noqa: S102
    rng = np.random.default_rng(0)
    p = net.init(seed=1)
    x = rng.normal(size=(5, 4))
    t = rng.dirichlet(np.ones(3), size=5)
    loss, grads = namespace["value_and_grad"](p, x, t)
    want_loss, want = net.value_and_grad(p, features_of_every_sample=x,
                                         expected_class_probabilities=t)
    assert loss == want_loss
    for name in want:
        np.testing.assert_array_equal(grads[name], want[name])
