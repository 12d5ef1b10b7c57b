"""Random bytes through the command line: every file either compiles or gets a located error
and exit status 2, never a traceback.

In-process, `cli.main` runs the same code the `bpcompile` script runs, so hypothesis can try
hundreds of files quickly; a few files also go through a real subprocess, where an escaped
exception would print a traceback. Oracle: the API on the same bytes (a BPError there must
be exit 2 here, with the same message).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bpcompile as bpc
import bpcompile.cli.main as cli

LOCATED = re.compile(r"^(?P<file>[^:\n]+):(?P<line>\d+):(?P<col>\d+): error: ", re.M)
EXAMPLE = (Path(__file__).resolve().parent.parent / "examples" / "xor.bp").read_bytes()

# bytes that look like programs more often than uniform bytes do
PROGRAM_BYTES = st.one_of(
    st.binary(max_size=200),
    st.text(alphabet=st.sampled_from(list("xtWb0123456789[](),.=+-*/@<>#\n \t\rNTe")),
            max_size=200).map(str.encode),
    st.builds(lambda cut, junk: EXAMPLE[:cut] + junk + EXAMPLE[cut:],
              st.integers(0, len(EXAMPLE)), st.binary(max_size=8)),
)


def run_cli(args: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    status = cli.main(args)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def api_error(data: bytes) -> str | None:
    """What the API says about these bytes: None if they compile, else the message."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return "cannot read"
    try:
        bpc.compile(text, filename="fuzz.bp")
    except bpc.BPError as error:
        return str(error)
    return None


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=PROGRAM_BYTES)
def test_random_bytes_exit_2_with_a_located_message(data: bytes, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "fuzz.bp"
    path.write_bytes(data)
    expected = api_error(data)
    status, out, err = run_cli(["compile", str(path), "-o", str(tmp_path / "fuzz.py")],
                               capsys)
    if expected is None:
        assert status == 0
        return
    assert status == 2, err
    assert "Traceback" not in err
    if expected == "cannot read":
        assert "cannot read" in err
        return
    assert err.strip() == expected.strip()
    located = LOCATED.search(err)
    if located:  # the caret sits under column `col`: 4 spaces, col - 1 characters, ^
        caret = err.rstrip("\n").split("\n")[2]  # not splitlines: a quoted line may hold \x0b
        assert caret.endswith("^")
        assert len(caret) == 4 + int(located["col"])


@pytest.mark.parametrize("data", [
    b"\x00\xff\xfe",                      # not UTF-8
    b"input x[N, 2]\nh = x @ W\n",        # unknown name
    b"loss sum((x\n",                     # unclosed bracket
    EXAMPLE.replace(b"** 2", b"** 1e300"),  # a power SymPy must not expand
])
def test_the_script_never_prints_a_traceback(data: bytes, tmp_path: Path) -> None:
    path = tmp_path / "bad.bp"
    path.write_bytes(data)
    for command in (["compile", str(path), "-o", str(tmp_path / "out.py")],
                    ["check", str(path)], ["show", str(path)]):
        result = subprocess.run([sys.executable, "-m", "bpcompile.cli", *command],
                                capture_output=True, text=True, timeout=120)
        assert "Traceback" not in result.stderr
        assert result.returncode in (0, 1, 2)
        if result.returncode == 2:
            assert result.stderr.strip()
