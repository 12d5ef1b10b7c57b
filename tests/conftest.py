"""Shared fixtures: every test that runs a network runs it on every backend."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest

# Compiled networks go to a cache of the test session's own, not the user's.
os.environ.setdefault("BPCOMPILE_CACHE_DIR", tempfile.mkdtemp(prefix="bpcompile-test-cache-"))

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

# Two inputs and a target sharing the symbol N, a scalar param, Adam so that step has state
# to protect: the network the runtime and fast-path tests probe.
PROBE = """
network probe
input  x[N, 3]
input  m[N, 2]
target t[N, 2]
param W[3, 2] = normal(0.5)
param b[2]    = uniform(-0.2, 0.2)
param a[]     = 0.75
y = tanh(x @ W + b) * m * a
output y
loss mse(y, t)
optimize adam(lr=0.01)
"""
BACKENDS = ["numpy", "llvm"]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def example_paths() -> list[Path]:
    return sorted(EXAMPLES.glob("*.bp"))


def logical_lines(lines: list[str]) -> list[str]:
    """Generated code's lines with each wrapped statement joined back into one line, and a
    `# file.bp:N` comment that stands on the line above a long statement moved back to its
    end: the form of the generated code before it was wrapped to fit 100 columns."""
    result: list[str] = []
    comment, pending, depth = "", "", 0
    for line in lines:
        text = line.strip()
        if not pending and text.startswith("# ") and ".bp:" in text:
            comment = text
            continue
        if pending:
            glue = "" if pending.endswith(("(", "[", "{")) or text.startswith((")", "]", "}")) \
                else " "
            pending += glue + text
        else:
            pending = line.rstrip()
        depth += sum(text.count(c) for c in "([{") - sum(text.count(c) for c in ")]}")
        if depth > 0:
            continue
        statement = pending.replace(",)", ")").replace(",]", "]").replace(",}", "}")
        head, _, rest = statement.partition(" = ")
        if rest.startswith("(") and rest.endswith(")") and "\n" not in rest and \
                _balanced(rest[1:-1]):
            statement = f"{head} = {rest[1:-1]}"
        result.append(f"{statement}  {comment}" if comment else statement)
        comment, pending = "", ""
    return result


def _balanced(text: str) -> bool:
    depth = 0
    for c in text:
        depth += (c in "([{") - (c in ")]}")
        if depth < 0:
            return False
    return depth == 0


def indices_in_range(net, data: dict, seed: int = 0) -> dict:
    """`data` with each array of indices the network reads (class indices, a gather's rows:
    `net.signature.indices`) redrawn as whole numbers in range, so random data stays valid
    for networks such as examples/lenet.bp and examples/sequence.bp."""
    rng = np.random.default_rng(seed)
    result = dict(data)
    for name, limit in net.signature.indices.items():
        if name in result:
            shape = np.shape(result[name])
            result[name] = rng.integers(0, limit, size=shape).astype(np.float64)
    return result


def calls_dot_products(net) -> bool:
    """May the network's products take dot products (backends/llvm/dot.py)? As the route
    table says (products.routes, which test_products.py checks against the machine code
    that decides), through the kernels each matmul node is noted as calling."""
    from bpcompile.backends.llvm.codegen import generate
    from bpcompile.backends.llvm.jit import vector_bytes

    executor = net._executor
    program = generate(executor.compiled(), executor.signature, executor.dtype.name,
                       vector_bytes())
    return any(".matmul_nt." in kernel for called in program.functions.values()
               for kernels in called.values() for kernel in kernels)
