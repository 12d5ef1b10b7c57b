"""The `bpcompile` command (SPEC section 3), run as users run it: in a subprocess.

Oracles: the Python API in this process (the same code, the same params, the same numbers),
the exit statuses SPEC gives (0 pass, 1 gradcheck fails, 2 bad file), and the located
message format `file:line:col: error: ...`.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from conftest import example_paths, indices_in_range

import bpcompile as bpc
import bpcompile.cli.check as check_command
import bpcompile.cli.main as cli
from bpcompile.inspect.gradcheck import GradcheckResult

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_IDS = [p.name for p in example_paths()]
LOCATED = re.compile(r"^(?P<file>[^\s:]+):(?P<line>\d+):(?P<col>\d+): error: ", re.MULTILINE)


def bpcompile_cmd(*args: str | Path, cwd: Path,
                  command: tuple[str, ...] | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    base = command or (sys.executable, "-m", "bpcompile.cli")
    return subprocess.run([*base, *map(str, args)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


def load(path: Path, name: str = "generated") -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def data_for(net: bpc.CompiledNet, n: int = 5, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    shapes = {**net.inputs, **net.targets}
    return indices_in_range(net, {
        k: rng.uniform(0, 1, size=tuple(n if isinstance(d, str) else d for d in shape))
        for k, shape in shapes.items()}, seed)


def assert_no_traceback(result: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in result.stderr + result.stdout, result.stderr


# ---------------------------------------------------------------------------- compile


@pytest.mark.parametrize("example", example_paths(), ids=EXAMPLE_IDS)
def test_compile_writes_net_py_in_the_current_directory(tmp_path: Path, example: Path) -> None:
    result = bpcompile_cmd("compile", example, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    written = tmp_path / (example.stem + ".py")
    assert written.exists()
    assert str(written.name) in result.stdout
    assert [p.name for p in tmp_path.iterdir()] == [written.name]  # no temp files left
    net = bpc.compile_file(example)
    assert written.read_text() == net.code()
    module = load(written, f"cli_{example.stem}")
    p = net.init(seed=3)
    data = data_for(net)
    inputs = {k: v for k, v in data.items() if k in net.inputs}
    ours, theirs = module.forward(p, **inputs), net.forward(p, **inputs)
    assert set(ours) == set(theirs)
    for name in ours:
        np.testing.assert_allclose(ours[name], theirs[name], rtol=1e-12, atol=1e-15)


def test_compile_output_path_and_dtype(tmp_path: Path) -> None:
    example = REPO / "examples" / "xor.bp"
    out = tmp_path / "nested" / "my_xor.py"
    out.parent.mkdir()
    result = bpcompile_cmd("compile", example, "-o", out, "--dtype", "float32", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert out.read_text() == bpc.compile_file(example, dtype="float32").code()
    module = load(out, "cli_xor32")
    p = module.init(0)
    assert all(v.dtype == np.float32 for v in p.values())
    assert not (tmp_path / "xor.py").exists()


def test_compile_to_stdout(tmp_path: Path) -> None:
    example = REPO / "examples" / "regression.bp"
    result = bpcompile_cmd("compile", example, "-o", "-", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == bpc.compile_file(example).code()
    assert list(tmp_path.iterdir()) == []
    ast.parse(result.stdout)


def test_compile_overwrites(tmp_path: Path) -> None:
    out = tmp_path / "out.py"
    out.write_text("stale")
    result = bpcompile_cmd("compile", REPO / "examples" / "xor.bp", "-o", out, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert out.read_text().startswith('"""xor')


def test_compile_into_a_missing_directory(tmp_path: Path) -> None:
    result = bpcompile_cmd("compile", REPO / "examples" / "xor.bp", "-o",
                           tmp_path / "no" / "such" / "dir.py", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip()
    assert_no_traceback(result)


def test_console_script(tmp_path: Path) -> None:
    script = shutil.which("bpcompile", path=str(Path(sys.executable).parent))
    if script is None:
        pytest.skip("the bpcompile console script is not installed next to this Python")
    result = bpcompile_cmd("compile", REPO / "examples" / "xor.bp", "-o", "-", cwd=tmp_path,
                           command=(script,))
    assert result.returncode == 0, result.stderr
    assert result.stdout == bpc.compile_file(REPO / "examples" / "xor.bp").code()


# ------------------------------------------------------------------------------- show


def gradient_lines(code: str) -> dict[str, str]:
    """param name -> the generated line (text, comment included) that value_and_grad returns
    as its gradient."""
    tree = ast.parse(code)
    function = next(n for n in tree.body
                    if isinstance(n, ast.FunctionDef) and n.name == "value_and_grad")
    returned = next(n for n in ast.walk(function) if isinstance(n, ast.Return))
    grads = returned.value.elts[1]
    assert isinstance(grads, ast.Dict)
    variable = {ast.literal_eval(k): v.id for k, v in zip(grads.keys, grads.values)}
    lines = code.split("\n")
    result = {}
    for statement in function.body:
        if isinstance(statement, ast.Assign) and isinstance(statement.targets[0], ast.Name):
            for param, var in variable.items():
                if statement.targets[0].id == var:
                    result[param] = lines[statement.lineno - 1].strip()
    return result


def sections(text: str) -> dict[str, str]:
    """`show` output split at each 'param NAME [dims]' header."""
    parts = re.split(r"^(?=param \S+ \[)", text, flags=re.MULTILINE)
    return {part.split()[1]: part for part in parts if part.startswith("param ")}


@pytest.mark.parametrize("example", example_paths(), ids=EXAMPLE_IDS)
def test_show_prints_every_param(tmp_path: Path, example: Path) -> None:
    result = bpcompile_cmd("show", example, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    net = bpc.compile_file(example)
    found = sections(result.stdout)
    assert list(found) == list(net.params)
    lines = gradient_lines(net.code(training=True))   # the mode value_and_grad runs
    for name, shape in net.params.items():
        header = found[name].split("\n")[0]
        assert header.startswith(f"param {name} [{', '.join(map(str, shape))}]")
        assert lines[name] in found[name], (name, lines[name])


def test_show_param_filter(tmp_path: Path) -> None:
    example = REPO / "examples" / "digits.bp"
    result = bpcompile_cmd("show", example, "--param", "h2.W", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert list(sections(result.stdout)) == ["h2.W"]
    net = bpc.compile_file(example)
    assert gradient_lines(net.code())["h2.W"] in result.stdout


def test_show_unknown_param(tmp_path: Path) -> None:
    result = bpcompile_cmd("show", REPO / "examples" / "xor.bp", "--param", "W9", cwd=tmp_path)
    assert result.returncode == 2
    assert "W9" in result.stderr
    assert "W1" in result.stderr  # says which params there are
    assert result.stdout == ""
    assert_no_traceback(result)


# ------------------------------------------------------------------------------ check


@pytest.mark.parametrize("example", example_paths(), ids=EXAMPLE_IDS)
def test_check_passes_on_examples(tmp_path: Path, example: Path) -> None:
    result = bpcompile_cmd("check", example, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "passed" in result.stdout


def test_check_options(tmp_path: Path) -> None:
    result = bpcompile_cmd("check", REPO / "examples" / "mlp.bp", "--batch", "3", "--seed", "7",
                           cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "batch 3" in result.stdout and "seed 7" in result.stdout


def test_check_fails_at_a_kink(tmp_path: Path) -> None:
    """relu at exactly 0: the analytic gradient is one one-sided slope, central differences
    give the mean of both (0.5), so gradcheck must fail and `check` must exit 1."""
    path = tmp_path / "kink.bp"
    path.write_text("param w[3] = zeros\nloss sum(relu(w))\n")
    result = bpcompile_cmd("check", path, cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "FAILED" in result.stdout
    assert_no_traceback(result)


@pytest.mark.parametrize("ok, status", [(True, 0), (False, 1)])
def test_check_exit_status_follows_gradcheck(monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture, ok: bool,
                                             status: int) -> None:
    calls = []

    def fake(net, p, **kwargs):
        calls.append(net)
        return GradcheckResult(ok=ok, max_rel_error=0.0 if ok else 1.0, checked=1, worst=None)

    monkeypatch.setattr(check_command, "gradcheck", fake)
    assert cli.main(["check", str(REPO / "examples" / "xor.bp")]) == status
    assert len(calls) == 1
    assert ("passed" if ok else "FAILED") in capsys.readouterr().out


def test_check_without_loss(tmp_path: Path) -> None:
    path = tmp_path / "noloss.bp"
    path.write_text("param w[3]\ny = w * 2\n")
    result = bpcompile_cmd("check", path, cwd=tmp_path)
    assert result.returncode == 2
    assert "loss" in result.stderr
    assert_no_traceback(result)


# ------------------------------------------------------------------------------ errors

BAD_FILES = {
    # name: (text, expected line, the token the column points at)
    "shape.bp": ("input x[N, 2]\nparam W[3, 3]\nh = sigmoid(x @ W)\n", 3, "x @"),
    "syntax.bp": ("input x[N, 2]\nparam W[2, 2]\ny = x @@ W\n", 3, "@ W"),
    "name.bp": ("input x[N, 2]\ny = x + nope\n", 2, "nope"),
    "type.bp": ("param W[2]\nloss sum(W)\noptimize sgd(lr=0.1, bogus=1)\n", 3, "bogus"),
}


@pytest.mark.parametrize("command", ["compile", "show", "check"])
@pytest.mark.parametrize("bad", sorted(BAD_FILES))
def test_bad_file_exits_2_with_a_located_message(tmp_path: Path, command: str,
                                                 bad: str) -> None:
    text, line, token = BAD_FILES[bad]
    path = tmp_path / bad
    path.write_text(text)
    result = bpcompile_cmd(command, path, cwd=tmp_path)
    assert result.returncode == 2
    assert_no_traceback(result)
    match = LOCATED.search(result.stderr)
    assert match, result.stderr
    col = text.split("\n")[line - 1].index(token) + 1
    assert (match["file"], int(match["line"]), int(match["col"])) == (bad, line, col)
    lines = result.stderr[match.start():].split("\n")
    assert lines[1] == "    " + text.split("\n")[line - 1]
    assert lines[2] == "    " + " " * (col - 1) + "^"
    assert not (tmp_path / (path.stem + ".py")).exists()


@pytest.mark.parametrize("command", ["compile", "show", "check"])
def test_missing_file_exits_2(tmp_path: Path, command: str) -> None:
    result = bpcompile_cmd(command, tmp_path / "absent.bp", cwd=tmp_path)
    assert result.returncode == 2
    assert "absent.bp" in result.stderr
    assert_no_traceback(result)


@pytest.mark.parametrize("content", [b"# caf\xe9\nparam W[2]\n", None],
                         ids=["not-utf8", "directory"])
def test_unreadable_file_exits_2(tmp_path: Path, content: bytes | None) -> None:
    path = tmp_path / "odd.bp"
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    result = bpcompile_cmd("compile", path, cwd=tmp_path)
    assert result.returncode == 2
    assert "odd.bp" in result.stderr
    assert_no_traceback(result)


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    for args in [(), ("frobnicate",), ("compile",), ("compile", "x.bp", "--dtype", "int8")]:
        result = bpcompile_cmd(*args, cwd=tmp_path)
        assert result.returncode == 2, args
        assert "usage" in result.stderr.lower()
        assert_no_traceback(result)


def test_version(tmp_path: Path) -> None:
    result = bpcompile_cmd("--version", cwd=tmp_path)
    assert result.returncode == 0
    assert bpc.__version__ in result.stdout
