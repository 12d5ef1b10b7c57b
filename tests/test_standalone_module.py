"""The module `bpcompile compile` writes runs with NumPy alone (SPEC section 3).

The module is imported in a fresh interpreter that cannot import bpcompile (nor SymPy, lark
or anything else outside the standard library and NumPy): it runs isolated (`-I -S`, so no
site-packages and no .pth files), with only NumPy's directory on sys.path, behind an import
hook that refuses every other module. Arrays travel in and out through .npz files.

Oracle: the bpcompile API in this process, given the same params and data.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import example_paths

import bpcompile as bpc
import bpcompile.cli.main as cli

INITS = """\
# every initializer, a scalar param, Adam with every option
input x[N, 3]
target t[N, 4]
param a[3, 4] = normal(0.3)
param b[4] = uniform(-2, 3)
param c[2, 2] = he
param d[2] = ones
param e[2] = -1.5
param f[] = 2
param g[3, 4] = xavier
param h[3, 4, 2]
param k[4]
y = tanh(x @ a + b) * f
loss mean((y - t) ** 2) + sum(c ** 2) + sum(d * e) + sum(g ** 2) * 0.1 + sum(h * 0.01) + sum(k)
optimize adam(lr=0.01, beta1=0.8, beta2=0.99, eps=1e-6, weight_decay=0.1, clip_norm=1)
"""

NO_INPUTS = """\
param w[3] = uniform(-1, 1)
param v[2, 3]
r = w @ v.T
loss sum((w - 1) ** 2) + sum(r ** 2)
optimize sgd(lr=0.1, momentum=0.9, nesterov=true, weight_decay=0.01)
"""

NETS = {p.stem: p.read_text() for p in example_paths()} | {"inits": INITS, "noinputs": NO_INPUTS}

CHILD = textwrap.dedent('''
    import importlib.abc
    import importlib.util
    import json
    import sys

    numpy_home, module_path, work = sys.argv[1:4]
    allowed = {"numpy", "generated"}


    class Refuse(importlib.abc.MetaPathFinder):
        """Only the standard library, NumPy and the generated module may be imported."""

        def find_spec(self, name, path=None, target=None):
            top = name.partition(".")[0]
            if top in allowed or top in sys.stdlib_module_names:
                return None
            raise ModuleNotFoundError(f"refused in this test: {name}", name=name)


    sys.meta_path.insert(0, Refuse())
    sys.path.append(numpy_home)
    for name in ("bpcompile", "sympy", "lark"):
        try:
            __import__(name)
        except ImportError:
            pass
        else:
            raise SystemExit(f"{name} could be imported")

    import numpy as np

    spec = importlib.util.spec_from_file_location("generated", module_path)
    net = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(net)

    meta = json.load(open(f"{work}/meta.json"))
    given = np.load(f"{work}/given.npz")
    p0 = {k[2:]: given[k] for k in given.files if k.startswith("p/")}
    data = {k[2:]: given[k] for k in given.files if k.startswith("d/")}
    inputs = {k: v for k, v in data.items() if k in meta["inputs"]}
    out = {}
    for seed in meta["seeds"]:
        for k, v in net.init(seed).items():
            out[f"init{seed}/{k}"] = v
    for k, v in net.forward(dict(p0), **inputs).items():
        out[f"forward/{k}"] = np.asarray(v)
    if meta["has_loss"]:
        out["loss"] = np.array(net.loss(dict(p0), **data))
        value, grads = net.value_and_grad(dict(p0), **data)
        out["vg_loss"] = np.array(value)
        for k, v in grads.items():
            out[f"grad/{k}"] = v
        p = {k: v.copy() for k, v in p0.items()}
        s = net.init_state(p)
        out["steps"] = np.array([net.step(p, s, **data) for _ in range(3)])
        for k, v in p.items():
            out[f"stepped/{k}"] = v
        for k, v in s.items():
            out[f"state/{k}"] = np.asarray(v)
    np.savez(f"{work}/result.npz", **out)
    json.dump(sorted({m.partition(".")[0] for m in sys.modules}),
              open(f"{work}/modules.json", "w"))
''')


def numpy_home() -> str:
    """The directory holding the `numpy` package: the only one the child may search."""
    return str(Path(np.__file__).resolve().parent.parent)


def write_module(tmp_path: Path, name: str, dtype: str) -> Path:
    source = tmp_path / f"{name}.bp"
    source.write_text(NETS[name])
    out = tmp_path / f"{name}_{dtype}.py"
    assert cli.main(["compile", str(source), "--dtype", dtype, "-o", str(out)]) == 0
    return out


def run_child(tmp_path: Path, module: Path, net: bpc.CompiledNet,
              p: dict[str, np.ndarray], data: dict[str, np.ndarray],
              seeds: list[int]) -> dict[str, np.ndarray]:
    work = tmp_path / f"work_{module.stem}"
    work.mkdir()
    meta = {"inputs": list(net.inputs), "has_loss": net.has_loss, "seeds": seeds}
    (work / "meta.json").write_text(json.dumps(meta))
    np.savez(work / "given.npz", **{f"p/{k}": v for k, v in p.items()},
             **{f"d/{k}": v for k, v in data.items()})
    (work / "child.py").write_text(CHILD)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    result = subprocess.run(
        [sys.executable, "-I", "-S", str(work / "child.py"), numpy_home(), str(module),
         str(work)],
        capture_output=True, text=True, timeout=120, env=env, cwd=work,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    modules = set(json.loads((work / "modules.json").read_text()))
    assert not modules & {"bpcompile", "sympy", "lark"}, modules
    # Cython extensions (inside NumPy) register `cython_runtime` and `_cython_X_Y_Z` modules
    # themselves, without an import.
    others = {m for m in modules - set(sys.stdlib_module_names)
              if m != "cython_runtime" and not m.startswith("_cython_")}
    assert others <= {"numpy", "generated", "__main__"}, others
    with np.load(work / "result.npz") as result_file:
        return {k: result_file[k] for k in result_file.files}


def sample_data(net: bpc.CompiledNet, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    data = {}
    for name, shape in {**net.inputs, **net.targets}.items():
        concrete = tuple(6 if isinstance(d, str) else d for d in shape)
        data[name] = rng.uniform(0, 1, size=concrete).astype(net.dtype)
    for name, limit in net.signature.indices.items():  # class indices, a gather's rows
        data[name] = rng.integers(0, limit, size=data[name].shape).astype(net.dtype)
    for name in net.targets:  # a one-hot target suits every loss in the examples
        if name in net.signature.indices:
            continue
        rows = data[name].reshape(-1, data[name].shape[-1])
        data[name] = np.eye(rows.shape[-1], dtype=net.dtype)[rows.argmax(axis=-1)].reshape(
            data[name].shape)
    return data


def close(actual: np.ndarray, expected: np.ndarray, dtype: str, what: str) -> None:
    rtol = 1e-12 if dtype == "float64" else 2e-6
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * 1e-3, err_msg=what)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", sorted(NETS))
def test_module_matches_api(tmp_path: Path, name: str, dtype: str) -> None:
    net = bpc.compile(NETS[name], dtype=dtype, filename=f"{name}.bp")
    module = write_module(tmp_path, name, dtype)
    p = net.init(seed=2)
    data = sample_data(net, seed=3)
    seeds = [0, 7]
    got = run_child(tmp_path, module, net, p, data, seeds)

    # init: bit for bit, and of the net's dtype
    for seed in seeds:
        for k, v in net.init(seed).items():
            theirs = got[f"init{seed}/{k}"]
            assert theirs.dtype == v.dtype == np.dtype(dtype), k
            assert theirs.shape == v.shape, k
            np.testing.assert_array_equal(theirs, v, err_msg=f"init({seed})[{k}]")

    inputs = {k: v for k, v in data.items() if k in net.inputs}
    forward = net.forward(p, **inputs)
    assert {k[len("forward/"):] for k in got if k.startswith("forward/")} == set(forward)
    for k, v in forward.items():
        close(got[f"forward/{k}"], v, dtype, f"forward {k}")
    if not net.has_loss:
        return
    close(got["loss"], net.loss(p, **data), dtype, "loss")
    value, grads = net.value_and_grad(p, **data)
    close(got["vg_loss"], value, dtype, "value_and_grad loss")
    for k, g in grads.items():
        close(got[f"grad/{k}"], g, dtype, f"grad {k}")
    stepped = {k: v.copy() for k, v in p.items()}
    s = net.init_state(stepped)
    losses = [net.step(stepped, s, **data) for _ in range(3)]
    close(got["steps"], np.array(losses), dtype, "step losses")
    for k, v in stepped.items():
        close(got[f"stepped/{k}"], v, dtype, f"param {k} after 3 steps")
    assert {k[len("state/"):] for k in got if k.startswith("state/")} == set(s)
    for k, v in s.items():
        close(got[f"state/{k}"], v, dtype, f"state {k} after 3 steps")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", sorted(NETS))
def test_only_import_is_numpy(tmp_path: Path, name: str, dtype: str) -> None:
    tree = ast.parse(write_module(tmp_path, name, dtype).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add("." * node.level + (node.module or ""))
    assert imported == {"numpy"}
    dynamic = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} & {
        "__import__", "importlib", "exec", "eval", "compile"}
    assert not dynamic
    functions = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert {"init", "forward", "loss", "value_and_grad", "init_state", "step"} <= functions


def test_child_really_cannot_import_bpcompile(tmp_path: Path) -> None:
    """The harness itself: the same isolation, asked for bpcompile, refuses it."""
    script = CHILD.split("import numpy as np")[0]
    path = tmp_path / "probe.py"
    path.write_text(script + "\nimport bpcompile\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    result = subprocess.run([sys.executable, "-I", "-S", str(path), numpy_home(), "", ""],
                            capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path)
    assert result.returncode != 0
    assert "ModuleNotFoundError" in result.stderr and "bpcompile" in result.stderr
