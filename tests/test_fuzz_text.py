"""Property tests: whatever text bpcompile is given, it compiles it or raises a BPError.

Oracle: the contract itself. Any exception that is not a BPError is a crash (a traceback for
the user), and a BPError that points at a place must point inside the text: a line that
exists and a column on it (one past its end for "unexpected end of line"), and the message
must quote that very line.
"""

from __future__ import annotations

import os
import re
import string
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from bp_strategies import networks
from conftest import example_paths, indices_in_range
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bpcompile as bpc

SETTINGS = settings(max_examples=200, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

EXAMPLES = {path.name: path.read_text() for path in example_paths()}

PRINTABLE = string.printable  # letters, digits, punctuation and whitespace (\t \n \r \x0b \x0c)
TOKENS = [
    # keywords and statement shapes
    "network", "const", "input", "target", "param", "def", "output", "loss", "optimize",
    # names, built-ins, initializers, optimizers and their options
    "x", "t", "y", "h", "W", "b", "N", "M", "K", "f", "h1", "h1.W", ".T", ".W",
    "sum", "mean", "max", "exp", "log", "sqrt", "sigmoid", "relu", "tanh", "softmax",
    "log_softmax", "logsumexp", "maximum", "where", "dense", "mse", "cross_entropy",
    "bce_with_logits", "binary_cross_entropy", "leaky_relu", "linear", "gelu",
    "zeros", "ones", "xavier", "he", "normal", "uniform", "sgd", "adam",
    "lr", "momentum", "nesterov", "weight_decay", "clip_norm", "beta1", "eps",
    "axis", "keepdims", "act", "alpha", "true", "false",
    # tensors of any rank: built-ins, their options, and slices
    "conv2d", "conv1d", "conv", "max_pool2d", "avg_pool2d", "max_pool1d", "avg_pool1d",
    "concat", "stack", "reshape", "flatten", "transpose", "take", "embedding", "var", "std",
    "prod", "min", "argmax", "stride", "padding", "dilation", "groups", "start", "None",
    ":", "::-1", "...", "1:3", "-1:", "::2",
    # numbers
    "0", "1", "2", "3", "0.5", "1e-3", "2.5E+4", "-1", "1e400", ".5", "10",
    # punctuation and operators
    "(", ")", "[", "]", ",", "=", "+", "-", "*", "/", "@", "**", "<", "<=", ">", ">=", "==",
    "!=", ".", "#", "\n", "\n", "\n", " ",
]

HEADER = re.compile(r"^(?P<file>.+?):(?P<line>\d+):(?P<col>\d+): error: ", re.DOTALL)


def lines_of(text: str) -> list[str]:
    """Lines as the lexer counts them: '\\n' ends a line, a '\\r' before it is not shown."""
    return [line.removesuffix("\r") for line in text.split("\n")]


# `** 1e300` on a sum once made SymPy expand a multinomial until memory ran out; the test
# test_large_integer_exponent_compiles below guards it.
BIG_EXPONENT = re.compile(r"\*\*\s*[-(\s]*(\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+)")


def has_big_exponent(text: str) -> bool:
    return any(float(m.group(1)) > 64 for m in BIG_EXPONENT.finditer(text))


def check_compiles_or_bperror(text: str) -> None:
    try:
        bpc.compile(text, filename="fuzz.bp")
    except bpc.BPError as error:
        check_position(text, error)
    # Any other exception propagates and fails the property.


def check_position(text: str, error: bpc.BPError) -> None:
    if error.pos is None:
        return
    lines = lines_of(text)
    line, col = error.pos.line, error.pos.col
    assert 1 <= line <= len(lines), (line, len(lines), str(error))
    assert 1 <= col <= len(lines[line - 1]) + 1, (line, col, lines[line - 1], str(error))
    rendered = str(error)
    header = HEADER.match(rendered)
    assert header and (int(header["line"]), int(header["col"])) == (line, col), rendered
    quoted = rendered[header.end():].split("\n")[1]
    assert quoted == "    " + lines[line - 1], (quoted, lines[line - 1])
    if error.message.startswith("unexpected character "):  # names the one at the caret
        assert error.message == f"unexpected character {lines[line - 1][col - 1]!r}", rendered


# ----------------------------------------------------------------------- random text


@SETTINGS
@given(st.text(alphabet=PRINTABLE, max_size=200))
def test_printable_text(text: str) -> None:
    check_compiles_or_bperror(text)


@SETTINGS
@given(st.text(max_size=60))
def test_any_unicode_text(text: str) -> None:
    check_compiles_or_bperror(text)


@SETTINGS
@given(st.lists(st.sampled_from(TOKENS), max_size=40).map(" ".join))
def test_token_soup(text: str) -> None:
    check_compiles_or_bperror(text)


STATEMENT_TOKENS = st.lists(st.sampled_from(TOKENS[9:-4]), min_size=1, max_size=8)
STATEMENT = st.one_of(
    st.tuples(st.sampled_from(["param", "input", "target"]), st.sampled_from(["x", "W", "b"]),
              st.lists(st.sampled_from(["N", "2", "3", "K", "M", "1"]), max_size=3))
    .map(lambda s: f"{s[0]} {s[1]}[{', '.join(s[2])}]"),
    st.tuples(st.sampled_from(["y", "h", "z", "t", "W"]), STATEMENT_TOKENS)
    .map(lambda s: f"{s[0]} = {' '.join(s[1])}"),
    STATEMENT_TOKENS.map(lambda s: "loss " + " ".join(s)),
    STATEMENT_TOKENS.map(lambda s: "optimize " + " ".join(s)),
    STATEMENT_TOKENS.map(lambda s: "output " + " ".join(s)),
    st.tuples(st.sampled_from(["K", "C"]), st.sampled_from(["2", "3", "0.5", "-1", "x"]))
    .map(lambda s: f"const {s[0]} = {s[1]}"),
)


@SETTINGS
@given(st.lists(STATEMENT, max_size=8).map("\n".join))
def test_statement_shaped_text(text: str) -> None:
    """Closer to real programs than token soup, so more of them reach the lowerer."""
    check_compiles_or_bperror(text)


# ------------------------------------------------------------------- example mutations

TOKEN_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\*\*|[^\s]")
NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
DIMS_RE = re.compile(r"\[([^\]]*)\]")


def tokens_with_spans(text: str) -> list[re.Match]:
    return list(TOKEN_RE.finditer(text))


@st.composite
def delete_token(draw, text: str) -> str:
    spans = tokens_with_spans(text)
    match = spans[draw(st.integers(0, len(spans) - 1))]
    return text[:match.start()] + text[match.end():]


@st.composite
def duplicate_line(draw, text: str) -> str:
    lines = text.split("\n")
    i = draw(st.integers(0, len(lines) - 1))
    return "\n".join(lines[:i + 1] + [lines[i]] + lines[i + 1:])


@st.composite
def swap_names(draw, text: str) -> str:
    """Swap two names of the program (words in comments are not names; the keywords are
    kept, so a name may become a keyword and a keyword a name)."""
    code = re.sub(r"#[^\n]*", "", text)
    names = sorted(set(NAME_RE.findall(code)))
    a, b = draw(st.lists(st.sampled_from(names), min_size=2, max_size=2, unique=True))
    return NAME_RE.sub(lambda m: {a: b, b: a}.get(m.group(), m.group()), text)


@st.composite
def change_dim(draw, text: str) -> str:
    brackets = list(DIMS_RE.finditer(text))
    match = brackets[draw(st.integers(0, len(brackets) - 1))]
    dims = [d.strip() for d in match.group(1).split(",") if d.strip()]
    new = draw(st.sampled_from(["1", "2", "3", "7", "N", "M", "FEATURES", "0", "2.5"]))
    action = draw(st.sampled_from(["replace", "add", "drop"]))
    if action == "replace" and dims:
        dims[draw(st.integers(0, len(dims) - 1))] = new
    elif action == "add":
        dims.insert(draw(st.integers(0, len(dims))), new)
    elif dims:
        dims.pop(draw(st.integers(0, len(dims) - 1)))
    return text[:match.start()] + "[" + ", ".join(dims) + "]" + text[match.end():]


@st.composite
def change_number(draw, text: str) -> str:
    numbers = list(re.finditer(r"(?<![A-Za-z_\d.])\d+(?:\.\d*)?(?:[eE][+-]?\d+)?", text))
    match = numbers[draw(st.integers(0, len(numbers) - 1))]
    new = draw(st.sampled_from(["0", "1", "-1", "0.0", "1e-300", "1e300", "1e400", "3"]))
    return text[:match.start()] + new + text[match.end():]


MUTATIONS = {
    "delete_token": delete_token,
    "duplicate_line": duplicate_line,
    "swap_names": swap_names,
    "change_dim": change_dim,
    "change_number": change_number,
}


@st.composite
def mutated_example(draw, rounds: int) -> str:
    text = EXAMPLES[draw(st.sampled_from(sorted(EXAMPLES)))]
    for _ in range(draw(st.integers(1, rounds))):
        mutation = MUTATIONS[draw(st.sampled_from(sorted(MUTATIONS)))]
        text = draw(mutation(text))
    return text


@pytest.mark.parametrize("name", sorted(MUTATIONS))
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_one_mutation_of_an_example(name: str, data: st.DataObject) -> None:
    text = EXAMPLES[data.draw(st.sampled_from(sorted(EXAMPLES)))]
    check_compiles_or_bperror(data.draw(MUTATIONS[name](text)))


@SETTINGS
@given(mutated_example(rounds=4))
def test_several_mutations_of_an_example(text: str) -> None:
    check_compiles_or_bperror(text)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_examples_compile(name: str) -> None:
    """The mutations start from working programs."""
    bpc.compile(EXAMPLES[name], filename=name)


REPO = Path(__file__).resolve().parent.parent


def test_large_integer_exponent_compiles() -> None:
    """Compiling must end in a net or a BPError, in bounded memory and time."""
    text = EXAMPLES["xor.bp"].replace("** 2", "** 1e300")
    assert has_big_exponent(text)
    script = textwrap.dedent("""
        import resource, sys
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
        import bpcompile
        try:
            bpcompile.compile(sys.stdin.read(), filename="xor.bp")
        except bpcompile.BPError:
            pass
        print("finished")
    """)
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", PYTHONPATH=str(REPO))
    try:
        result = subprocess.run([sys.executable, "-c", script], input=text, text=True,
                                capture_output=True, timeout=60, env=env)
    except subprocess.TimeoutExpired:
        pytest.fail("compiling took more than 60 s")
    assert result.returncode == 0 and "finished" in result.stdout, result.stderr[-2000:]


# ------------------------------------------------------------ mutated random networks


def run_or_bperror(net: bpc.CompiledNet, seed: int) -> None:
    """Call every entry point with data of the shapes the net declares (each symbolic dim
    2): each call gives a result or raises a BPError. Compiling a mutated program may
    succeed with shapes nobody meant, and the backends' code for it must hold up too."""
    rng = np.random.default_rng(seed)
    arrays = indices_in_range(net, {
        name: rng.uniform(-1, 1, tuple(d if isinstance(d, int) else 2 for d in shape))
        for name, shape in {**net.inputs, **net.targets}.items()}, seed)
    inputs = {name: arrays[name] for name in net.inputs}
    try:
        p = net.init(seed=seed)
        net.forward(p, **inputs)
        if net.has_loss:
            net.value_and_grad(p, **arrays)
            net.step(p, net.init_state(p), **arrays)
    except bpc.BPError:
        pass


@settings(max_examples=60, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_mutations_of_random_networks(data: st.DataObject) -> None:
    """Random valid networks (the differential tests' generator), mutated: each compiles on
    both backends and runs, or raises a located BPError."""
    text = data.draw(networks()).source
    for _ in range(data.draw(st.integers(1, 3))):
        text = data.draw(MUTATIONS[data.draw(st.sampled_from(sorted(MUTATIONS)))](text))
    for backend in ("numpy", "llvm"):
        try:
            net = bpc.compile(text, filename="fuzz.bp", backend=backend)
        except bpc.BPError as error:
            check_position(text, error)
            return
        run_or_bperror(net, seed=data.draw(st.integers(0, 2**16)))
