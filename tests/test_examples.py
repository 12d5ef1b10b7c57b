"""Every network in examples/, on every backend: gradients against central differences,
training lowers the loss, float32 agrees with float64, and the training scripts run.

Oracles: central finite differences in float64 (gradcheck); the loss before training; the
float64 net for the float32 one; the scripts' own exit status, and for the regression script
the least-squares solution it prints beside what it learned.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import EXAMPLES, example_paths

import bpcompile as bpc

BATCH = 7  # odd, so no accidental symmetry between halves of a batch
F32_RTOL = 1e-4  # float32 against float64, relative to each array's own scale
EXAMPLE_IDS = [path.name for path in example_paths()]


def cross_entropy_targets(net: bpc.CompiledNet) -> set[str]:
    """Targets given to cross_entropy(logits, t): they must be one-hot rows."""
    return set(re.findall(r"cross_entropy\(\s*[^,]+,\s*(\w+)\s*\)", net.source))


def random_data(net: bpc.CompiledNet, n: int = BATCH, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    one_hot = cross_entropy_targets(net)
    data = {}
    for name, shape in {**net.inputs, **net.targets}.items():
        concrete = tuple(n if isinstance(d, str) else d for d in shape)
        if name in net.signature.indices:  # class indices, a gather's rows: in range
            data[name] = rng.integers(0, net.signature.indices[name], concrete)
        elif name in one_hot:
            rows = rng.integers(0, concrete[-1], size=concrete[:-1])
            data[name] = np.eye(concrete[-1])[rows]
        elif name in net.targets:  # in [0, 1], as the bce losses of the examples need
            data[name] = rng.uniform(0.0, 1.0, concrete)
        else:
            data[name] = rng.standard_normal(concrete)
    return data


def compile_example(path: Path, backend: str, dtype: str = "float64") -> bpc.CompiledNet:
    return bpc.compile_file(path, backend=backend, dtype=dtype)


def test_examples_exist() -> None:
    assert len(example_paths()) >= 4
    scripts = sorted(EXAMPLES.glob("train_*.py"))
    assert scripts


@pytest.mark.parametrize("path", example_paths(), ids=EXAMPLE_IDS)
def test_example_gradients(path: Path, backend: str) -> None:
    net = compile_example(path, backend)
    for seed in (0, 1):
        p = net.init(seed=seed)
        data = random_data(net, seed=seed)
        result = bpc.gradcheck(net, p, seed=seed, **data)
        assert result.ok, f"{path.name} seed {seed}:\n{result}"
        assert set(result.per_param) == set(net.params)


@pytest.mark.parametrize("path", example_paths(), ids=EXAMPLE_IDS)
def test_example_one_hot_targets_are_one_hot(path: Path) -> None:
    """A cross_entropy target is one-hot rows, or class indices in range (lenet.bp)."""
    net = compile_example(path, "numpy")
    data = random_data(net)
    for name in cross_entropy_targets(net):
        assert name in net.targets
        if name in net.signature.indices:
            assert data[name].shape == net.forward(net.init(), **{
                k: v for k, v in data.items() if k in net.inputs})["logits"].shape[:-1]
            assert np.all((data[name] >= 0) & (data[name] < net.signature.indices[name]))
        else:
            assert np.all(data[name].sum(axis=-1) == 1)


@pytest.mark.parametrize("path", example_paths(), ids=EXAMPLE_IDS)
def test_example_training_lowers_the_loss(path: Path, backend: str) -> None:
    net = compile_example(path, backend)
    p = net.init(seed=0)
    s = net.init_state(p)
    data = random_data(net, n=16, seed=2)
    # step's loss is training mode's (dropout's masks of the state's step count); the loss
    # that must fall is inference mode's (the running statistics batch norm learns)
    assert net.loss(p, training=True, state=s, **data) == net.step(
        {n: v.copy() for n, v in p.items()}, {n: v.copy() for n, v in s.items()}, **data)
    first = net.loss(p, **data)
    losses = [net.step(p, s, **data) for _ in range(30)]
    last = net.loss(p, **data)
    assert np.isfinite(last)
    assert last < first, f"{path.name}: loss {first} -> {last}"
    assert min(losses[1:]) < losses[0]


def _close(a: np.ndarray, b: np.ndarray, what: str, scale: float = 0.0) -> None:
    """Within F32_RTOL of b's largest entry, or of `scale` (the largest of the call's
    arrays) when more: a gradient that is 0 in exact math (a bias before batch norm) is
    rounding noise of the others' size."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    scale = max(float(np.max(np.abs(b))), scale, 1e-30)
    np.testing.assert_allclose(a, b, rtol=F32_RTOL, atol=F32_RTOL * scale, err_msg=what)


@pytest.mark.parametrize("path", example_paths(), ids=EXAMPLE_IDS)
def test_example_float32_agrees_with_float64(path: Path, backend: str) -> None:
    n32 = compile_example(path, backend, "float32")
    n64 = compile_example(path, backend, "float64")
    p32, p64 = n32.init(seed=3), n64.init(seed=3)
    data = random_data(n64, seed=3)
    inputs = {k: v for k, v in data.items() if k in n64.inputs}
    out32, out64 = n32.forward(p32, **inputs), n64.forward(p64, **inputs)
    assert set(out32) == set(out64) == set(n64.outputs)
    for name in out64:
        assert out32[name].dtype == np.float32
        _close(out32[name], out64[name], f"{path.name} output {name}")
    l32, g32 = n32.value_and_grad(p32, **data)
    l64, g64 = n64.value_and_grad(p64, **data)
    assert l32 == pytest.approx(l64, rel=F32_RTOL)
    assert n32.loss(p32, training=True, **data) == pytest.approx(l64, rel=F32_RTOL)
    assert n32.loss(p32, **data) == pytest.approx(n64.loss(p64, **data), rel=F32_RTOL)
    for name in g64:
        assert g32[name].dtype == np.float32
        _close(g32[name], g64[name], f"{path.name} gradient {name}",
               max(float(np.max(np.abs(g))) for g in g64.values()))
    s32, s64 = n32.init_state(p32), n64.init_state(p64)
    for _ in range(3):
        a, b = n32.step(p32, s32, **data), n64.step(p64, s64, **data)
        assert a == pytest.approx(b, rel=F32_RTOL)
    # A param whose gradient is 0 in exact math (a bias before batch norm: the norm takes
    # the mean out) has rounding noise for a gradient, which Adam scales up to full steps
    # that differ between dtypes; what it holds is irrelevant to the network, but the
    # running mean after it follows it (test_modes checks buffers against PyTorch).
    scale = max(float(np.max(np.abs(g))) for g in g64.values())
    for name in p64:
        assert p32[name].dtype == np.float32
        if name in n64.buffers or np.max(np.abs(g64[name])) < 1e-9 * scale:
            continue
        _close(p32[name], p64[name], f"{path.name} param {name} after 3 steps")


# ---------------------------------------------------------------- scripts

SCRIPT_FLAGS = {  # small runs where the script lets us choose
    "train_xor.py": ["--steps", "500"],
    "train_digits.py": ["--epochs", "1"],
    "train_mlp.py": ["--epochs", "2"],
}
SCRIPTS = sorted(EXAMPLES.glob("train_*.py"))


def run_script(script: Path, *flags: str) -> str:
    done = subprocess.run([sys.executable, str(script), *flags], capture_output=True,
                          text=True, timeout=180, cwd=script.parent.parent)
    assert done.returncode == 0, f"{script.name} exited {done.returncode}:\n{done.stderr}"
    assert "Traceback" not in done.stderr
    return done.stdout


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.name for s in SCRIPTS])
def test_training_script_runs(script: Path, backend: str) -> None:
    help_text = run_script(script, "--help")
    flags = list(SCRIPT_FLAGS.get(script.name, []))
    if "--backend" in help_text:
        flags += ["--backend", backend]
    elif backend != "numpy":
        pytest.skip(f"{script.name} has no --backend flag")
    out = run_script(script, *flags)
    assert out.strip(), f"{script.name} printed nothing"
    assert "nan" not in out.lower().split()


def test_regression_script_matches_least_squares() -> None:
    out = run_script(EXAMPLES / "train_regression.py")
    numbers = {}
    for label in ("learned", "least squares"):
        match = re.search(rf"^{label} w \[([^\]]*)\] b \[([^\]]*)\]", out, re.MULTILINE)
        assert match, out
        numbers[label] = np.array([float(v) for v in " ".join(match.groups()).split()])
    np.testing.assert_allclose(numbers["learned"], numbers["least squares"], atol=2e-3)


def test_xor_script_learns_xor() -> None:
    out = run_script(EXAMPLES / "train_xor.py")
    assert "learned XOR: True" in out
