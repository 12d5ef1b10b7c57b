"""Bad `.bp` programs and bad arrays: the right BPError subclass, at the right place.

Oracle: the expected line and column are computed from the test's own source text (the
position of the offending token), and the message must follow SPEC's format exactly:
`file:line:col: error: message`, the source line indented by four spaces, and a caret under
the column.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import bpcompile as bpc
from bpcompile import BPError, BPNameError, BPShapeError, BPSyntaxError, BPTypeError

HEADER = re.compile(r"^(?P<file>[^:\n]+):(?P<line>\d+):(?P<col>\d+): error: (?P<msg>.+)$")


def column(text: str, line: int, token: str, occurrence: int = 0) -> int:
    """The 1-based column of the `occurrence`-th `token` on 1-based `line` of `text`."""
    source_line = text.split("\n")[line - 1]
    start = -1
    for _ in range(occurrence + 1):
        start = source_line.index(token, start + 1)
    return start + 1


def expect(text: str, kind: type[BPError], line: int, col: int, *fragments: str,
           filename: str = "bad.bp") -> str:
    """Compile `text`; check the error class, its position, the quoted line and the caret."""
    with pytest.raises(BPError) as info:
        bpc.compile(text, filename=filename)
    error = info.value
    assert type(error) is kind, f"{type(error).__name__}: {error}"
    lines = str(error).split("\n")
    assert len(lines) == 3, str(error)
    header = HEADER.match(lines[0])
    assert header, lines[0]
    assert header["file"] == filename
    assert (int(header["line"]), int(header["col"])) == (line, col), str(error)
    source_line = text.split("\n")[line - 1].removesuffix("\r")
    assert lines[1] == "    " + source_line
    indent = "".join(c if c == "\t" else " " for c in source_line[: col - 1])
    assert lines[2] == "    " + indent + "^"
    message = header["msg"]
    for fragment in fragments:
        assert fragment in message, message
    return message


# ------------------------------------------------------------------------------ syntax

def test_spec_example_message_verbatim() -> None:
    """SPEC's own example, character for character."""
    text = (
        "# xor.bp: the classic 2-3-1 sigmoid network\n"
        "network xor\n\n"
        "input  x[N, 2]\n"
        "target t[N, 1]\n\n"
        "param W1[3, 3] = xavier\n"
        "param b1[3]    = zeros\n"
        "param W2[3, 1] = xavier\n"
        "param b2[1]    = zeros\n\n"
        "h = sigmoid(x @ W1 + b1)\n"
    )
    with pytest.raises(BPShapeError) as info:
        bpc.compile(text, filename="xor.bp")
    assert str(info.value) == (
        "xor.bp:12:13: error: shape mismatch in '@': x is [N, 2] but W1 is [3, 3]\n"
        "    h = sigmoid(x @ W1 + b1)\n"
        "                ^"
    )


def test_bad_character() -> None:
    text = "input x[N, 2]\ny = x $ 2\n"
    expect(text, BPSyntaxError, 2, column(text, 2, "$"), "'$'")


def test_bad_character_in_first_column() -> None:
    text = "param W[2]\n?y = W\n"
    expect(text, BPSyntaxError, 2, 1, "'?'")


def test_unclosed_paren_at_end_of_file() -> None:
    text = "input x[N, 2]\ny = sigmoid(x @ (x\n"
    # The innermost open bracket is the one never closed.
    expect(text, BPSyntaxError, 2, column(text, 2, "(", 1), "never closed")


def test_unclosed_bracket_at_end_of_file() -> None:
    text = "input x[N]\nparam W[2, 3\n"
    expect(text, BPSyntaxError, 2, column(text, 2, "["), "'['", "never closed")


def test_unclosed_paren_without_final_newline() -> None:
    text = "input x[N]\ny = exp(x"
    expect(text, BPSyntaxError, 2, column(text, 2, "("), "'('", "never closed")


def test_open_bracket_swallows_the_newline() -> None:
    """The newline inside `[` does not end the statement, so `y` is the surprise."""
    text = "param W[2, 3\ny = W\n"
    expect(text, BPSyntaxError, 2, 1, "'y'", "']'")


def test_stray_closing_paren() -> None:
    text = "input x[N, 2]\ny = x)\n"
    expect(text, BPSyntaxError, 2, column(text, 2, ")"), "')'")


def test_missing_operand_at_end_of_line() -> None:
    text = "input x[N, 2]\ny = x +\noutput y\n"
    expect(text, BPSyntaxError, 2, len("y = x +") + 1, "end of line", "expression")


def test_missing_operand_before_token() -> None:
    text = "input x[N, 2]\ny = x * * 2\n"
    expect(text, BPSyntaxError, 2, column(text, 2, "*", 1), "'*'")


def test_missing_operand_in_call() -> None:
    text = "input x[N, 2]\ny = sum(x, )\nz = sum(, x)\n"
    expect(text, BPSyntaxError, 3, column(text, 3, ","), "','")


@pytest.mark.parametrize("keyword", ["network", "input", "target", "param", "const", "def",
                                     "output", "loss", "optimize"])
def test_keyword_used_as_a_name(keyword: str) -> None:
    text = f"param W[2]\nparam {keyword}[2]\n"
    expect(text, BPSyntaxError, 2, len("param ") + 1, f"'{keyword}'", "keyword")


@pytest.mark.parametrize("keyword", ["loss", "output", "network"])
def test_keyword_assigned(keyword: str) -> None:
    text = f"param W[2]\n  {keyword} = W * 2\n"
    expect(text, BPSyntaxError, 2, column(text, 2, keyword), f"'{keyword}'", "keyword")


def test_keyword_in_expression() -> None:
    text = "param W[2]\ny = W + param\n"
    expect(text, BPSyntaxError, 2, column(text, 2, "param"), "'param'")


@pytest.mark.parametrize("word", ["true", "false"])
def test_boolean_as_a_value(word: str) -> None:
    """`true`/`false` are only option values (SPEC): here a located error at the word."""
    text = f"input x[N]\nx2 = x * 2\ny = {word}\n"
    with pytest.raises((BPSyntaxError, BPTypeError)) as info:
        bpc.compile(text, filename="bad.bp")
    expect(text, type(info.value), 3, column(text, 3, word))


def test_boolean_as_a_name() -> None:
    text = "param true[2]\n"
    expect(text, BPSyntaxError, 1, column(text, 1, "true"), "'true'")


def test_zero_dimension() -> None:
    text = "param W[2, 0]\n"
    expect(text, BPSyntaxError, 1, column(text, 1, "0"), "positive integer")


def test_fractional_dimension() -> None:
    text = "param W[2.5]\n"
    expect(text, BPSyntaxError, 1, column(text, 1, "2.5"), "2.5")


def test_two_statements_on_one_line() -> None:
    text = "param W[2] param V[2]\n"
    expect(text, BPSyntaxError, 1, column(text, 1, "param", 1), "'param'")


def test_chained_comparison_is_a_syntax_error() -> None:
    text = "input x[N]\ny = 0 < x < 1\n"
    expect(text, BPSyntaxError, 2, column(text, 2, "<", 1), "'<'")


def test_caret_lines_up_under_tabs() -> None:
    text = "param W[2]\n\ty =\tW $ 2\n"
    expect(text, BPSyntaxError, 2, column(text, 2, "$"), "'$'")


def test_line_numbers_count_only_newlines() -> None:
    """A form feed is whitespace to the lexer, so it does not start a line in messages."""
    text = "param W[2]\f\ny = foo(W)\n"
    expect(text, BPNameError, 2, column(text, 2, "foo"), "'foo'")
    text = "param W[2]\fy = W\n"
    expect(text, BPSyntaxError, 1, column(text, 1, "y"), "'y'")


def test_windows_line_endings_in_messages() -> None:
    text = "param W[2]\r\ny = foo(W)\r\n"
    expect(text, BPNameError, 2, column(text, 2, "foo"), "'foo'")


def test_windows_line_endings_name_the_right_character() -> None:
    text = "param W[2]\r\n\r\ny = W $ 2\r\n"
    expect(text, BPSyntaxError, 3, column(text, 3, "$"), "'$'")


def test_windows_line_endings_at_end_of_line() -> None:
    """The caret for a missing operand sits just after the text, not after the '\\r'."""
    text = "input x[N, 2]\r\ny = x +\r\noutput y\r\n"
    expect(text, BPSyntaxError, 2, len("y = x +") + 1, "end of line")


# ------------------------------------------------------------------------------- names

def test_unknown_name() -> None:
    text = "input x[N, 2]\ny = x + zz\n"
    expect(text, BPNameError, 2, column(text, 2, "zz"), "'zz'")


def test_unknown_function() -> None:
    text = "input x[N, 2]\ny = 1 + frobnicate(x)\n"
    expect(text, BPNameError, 2, column(text, 2, "frobnicate"), "'frobnicate'")


def test_unknown_dotted_name() -> None:
    text = "input x[N, 2]\nh = dense(x, 3)\ny = h.Q + 1\n"
    expect(text, BPNameError, 3, column(text, 3, "h.Q"), "h.Q")


def test_name_assigned_twice() -> None:
    text = "input x[N, 2]\ny = x\ny = x * 2\n"
    expect(text, BPNameError, 3, 1, "'y'", "already defined")


@pytest.mark.parametrize("first", ["param y[2]", "input y[N]", "target y[N]", "const y = 2",
                                   "def y(a) = a"])
def test_assigning_a_declared_name(first: str) -> None:
    text = f"input x[N]\n{first}\ny = x * 2\n"
    expect(text, BPNameError, 3, 1, "'y'", "already defined")


def test_param_defined_twice() -> None:
    text = "param W[2, 3]\nparam b[3]\n  param W[3]\n"
    expect(text, BPNameError, 3, column(text, 3, "param"), "'W'", "param")


def test_dense_param_clashes_with_param() -> None:
    text = "input x[N, 2]\nparam h.W[2, 3]\n"
    with pytest.raises(BPSyntaxError):  # a dot is only made by layer sugar
        bpc.compile(text, filename="bad.bp")


def test_builtin_cannot_be_redefined() -> None:
    text = "input x[N]\nsum = x * 2\n"
    expect(text, BPNameError, 2, 1, "'sum'", "built-in")


def test_def_used_as_a_value() -> None:
    text = "def f(a) = a * 2\ninput x[N]\ny = x + f\n"
    expect(text, BPTypeError, 3, column(text, 3, "f"), "'f'", "def")


def test_builtin_used_as_a_value() -> None:
    text = "input x[N]\ny = x + tanh\n"
    expect(text, BPTypeError, 2, column(text, 2, "tanh"), "'tanh'")


def test_output_of_undefined_name() -> None:
    text = "input x[N]\ny = x\noutput y, nope\n"
    expect(text, BPNameError, 3, column(text, 3, "nope"), "'nope'")


def test_output_listed_twice() -> None:
    text = "input x[N]\ny = x\noutput y, y\n"
    expect(text, BPNameError, 3, column(text, 3, "y", 1), "'y'")


def test_output_depending_on_a_target() -> None:
    text = "input x[N]\ntarget t[N]\ny = x + t\noutput y\nloss sum(y)\n"
    expect(text, BPNameError, 4, 1, "'y'", "'t'", "target")


def test_default_output_depending_on_a_target() -> None:
    text = "input x[N]\ntarget t[N]\nd = x - t\n"
    expect(text, BPNameError, 3, 1, "'d'", "'t'")


@pytest.mark.parametrize("statement", [
    "network again", "loss sum(x)", "optimize sgd(lr=0.5)", "output x",
])
def test_statement_allowed_once(statement: str) -> None:
    keyword = statement.split()[0]
    first = {"network": "network first", "loss": "loss sum(x * 2)",
             "optimize": "optimize adam()", "output": "output x"}[keyword]
    text = f"input x[N]\n{first}\n{statement}\n"
    expect(text, BPNameError, 3, 1, f"'{keyword}'", "line 2")


def test_symbolic_dim_in_param() -> None:
    text = "param W[N, 2]\n"
    expect(text, BPShapeError, 1, column(text, 1, "N"), "N")


def test_dim_naming_a_param() -> None:
    text = "param W[2]\ninput x[W]\n"
    expect(text, BPNameError, 2, column(text, 2, "W"), "'W'")


def test_def_body_uses_a_tensor() -> None:
    text = "input x[N]\ndef f(a) = a + x\n"
    expect(text, BPNameError, 2, column(text, 2, "x"), "'x'")


def test_def_calls_itself() -> None:
    text = "def f(a) = f(a) + 1\n"
    expect(text, BPNameError, 1, column(text, 1, "f(a) +"), "itself")


# ------------------------------------------------------------------------------ shapes

def test_matmul_mismatch_names_both_shapes() -> None:
    text = "input x[N, 2]\nparam W1[3, 3]\nh = sigmoid(x @ W1)\n"
    expect(text, BPShapeError, 3, column(text, 3, "x"),
           "'@'", "x is [N, 2]", "W1 is [3, 3]")


def test_matmul_of_expressions_names_them() -> None:
    text = "input x[N, 2]\nparam W[3, 3]\nh = (x * 2) @ W.T\n"
    message = expect(text, BPShapeError, 3, column(text, 3, "("), "'@'", "[N, 2]", "[3, 3]")
    assert "x * 2" in message


def test_matmul_batch_dims_that_do_not_broadcast() -> None:
    # `@` is batched at any rank (SPEC); batch dims follow NumPy's broadcasting
    text = "param A[2, 2, 2]\nparam B[3, 2, 2]\ny = A @ B\n"
    expect(text, BPShapeError, 3, column(text, 3, "A"), "'@'", "batch", "[2, 2, 2]",
           "[3, 2, 2]")


def test_broadcast_mismatch() -> None:
    text = "input x[N, 2]\nparam b[3]\nh = 1 + x * b\n"
    expect(text, BPShapeError, 3, column(text, 3, "x"), "'*'", "x is [N, 2]", "b is [3]")


def test_symbol_against_a_number() -> None:
    text = "input x[N, 3]\nparam b[3, 3]\nh = x - b\n"
    expect(text, BPShapeError, 3, column(text, 3, "x"), "[N, 3]", "[3, 3]")


def test_two_symbols_do_not_broadcast() -> None:
    text = "input x[N]\ninput z[M]\nh = x + z\n"
    expect(text, BPShapeError, 3, column(text, 3, "x"), "[N]", "[M]")


def test_broadcast_mismatch_in_a_call() -> None:
    text = "input x[N, 2]\nparam b[3]\nh = maximum(x, b)\n"
    expect(text, BPShapeError, 3, column(text, 3, "maximum"), "maximum", "[N, 2]", "[3]")


@pytest.mark.parametrize("axis", ["2", "-3", "7"])
def test_axis_out_of_range(axis: str) -> None:
    text = f"input x[N, 3]\nh = sum(x, axis={axis})\n"
    expect(text, BPShapeError, 2, column(text, 2, axis), f"axis {axis}", "rank 2")


def test_softmax_axis_out_of_range() -> None:
    text = "input x[N, 3]\nh = softmax(x, axis=2)\n"
    expect(text, BPShapeError, 2, column(text, 2, "2"), "axis 2")


def test_loss_not_scalar() -> None:
    text = "input x[N, 3]\nparam W[3, 1]\nloss x @ W\n"
    expect(text, BPShapeError, 3, column(text, 3, "x"), "scalar", "[N, 1]")


def test_transpose_of_1d() -> None:
    text = "param b[3]\nh = 2 * b.T\n"
    expect(text, BPShapeError, 2, column(text, 2, "b"), "'.T'", "[3]")


def test_transpose_of_3d() -> None:
    text = "param A[2, 3, 4]\nh = A.T\n"
    expect(text, BPShapeError, 2, column(text, 2, "A"), "'.T'", "[2, 3, 4]")


def test_dense_on_symbolic_features() -> None:
    text = "input x[N, M]\nh = dense(x, 3)\n"
    expect(text, BPShapeError, 2, column(text, 2, "dense"), "dense", "[N, M]")


def test_cross_entropy_shape_mismatch() -> None:
    text = "input x[N, 3]\ntarget t[N, 4]\nloss cross_entropy(x, t)\n"
    expect(text, BPShapeError, 3, column(text, 3, "cross_entropy"), "[N, 3]", "[N, 4]")


def test_const_dim_not_an_integer() -> None:
    text = "const K = 2.5\nparam W[K]\n"
    expect(text, BPShapeError, 2, column(text, 2, "K"), "K")


# ------------------------------------------------------------------------------- types

@pytest.mark.parametrize("init, token", [
    ("foo", "foo"), ("glorot", "glorot"), ("normal", "normal"), ("x", "x"),
    ("normal(1, 7)", "7"), ("uniform(1)", "uniform"), ("zeros(3)", "zeros"),
])
def test_bad_initializer(init: str, token: str) -> None:
    text = f"input x[N]\nparam W[2, 2] = {init}\n"
    expect(text, BPTypeError, 2, len("param W[2, 2] = ") + init.index(token) + 1)


def test_negative_std() -> None:
    text = "param W[2] = normal(-1)\n"
    expect(text, BPTypeError, 1, column(text, 1, "normal"), "std")


def test_uniform_low_above_high() -> None:
    text = "param W[2] = uniform(1, 0)\n"
    expect(text, BPTypeError, 1, column(text, 1, "uniform"), "low")


def test_unknown_optimizer() -> None:
    text = "param W[2]\nloss sum(W)\noptimize rmsprop(lr=0.1)\n"
    expect(text, BPTypeError, 3, column(text, 3, "rmsprop"), "'rmsprop'")


@pytest.mark.parametrize("opt, option", [("sgd(lr=0.1, ", "beta1"), ("adam(", "momentum"),
                                         ("adam(", "nesterov"), ("sgd(lr=0.1, ", "lrr")])
def test_unknown_optimizer_option(opt: str, option: str) -> None:
    text = f"param W[2]\nloss sum(W)\noptimize {opt}{option}=1)\n"
    expect(text, BPTypeError, 3, column(text, 3, option), f"'{option}'")


@pytest.mark.parametrize("options, option", [
    ("sgd(lr=-0.1)", "lr=-0.1"),
    ("sgd(lr=0)", "lr=0"),
    ("adam(lr=-1)", "lr=-1"),
    ("sgd(lr=0.1, momentum=-0.5)", "momentum=-0.5"),
    ("adam(beta1=1)", "beta1=1"),
    ("adam(beta2=1.5)", "beta2=1.5"),
    ("adam(weight_decay=-1)", "weight_decay=-1"),
    ("sgd(lr=0.1, clip_norm=0)", "clip_norm=0"),
])
def test_bad_optimizer_values(options: str, option: str) -> None:
    """The caret is under the value."""
    text = f"param W[2]\nloss sum(W)\noptimize {options}\n"
    name = option.split("=")[0]
    col = column(text, 3, option) + len(name) + 1
    expect(text, BPTypeError, 3, col, name)


def test_sgd_needs_lr() -> None:
    text = "param W[2]\nloss sum(W)\noptimize sgd(momentum=0.9)\n"
    expect(text, BPTypeError, 3, column(text, 3, "sgd"), "'lr'")


def test_nesterov_without_momentum() -> None:
    text = "param W[2]\nloss sum(W)\noptimize sgd(lr=0.1, nesterov=true)\n"
    expect(text, BPTypeError, 3, column(text, 3, "sgd"), "nesterov", "momentum")


def test_nesterov_must_be_a_boolean() -> None:
    text = "param W[2]\nloss sum(W)\noptimize sgd(lr=0.1, momentum=0.9, nesterov=1)\n"
    expect(text, BPTypeError, 3, column(text, 3, "1)"), "nesterov")


def test_optimizer_option_given_twice() -> None:
    text = "param W[2]\nloss sum(W)\noptimize sgd(lr=0.1, lr=0.2)\n"
    expect(text, BPTypeError, 3, column(text, 3, "lr", 1), "'lr'", "twice")


def test_optimizer_positional_option() -> None:
    text = "param W[2]\nloss sum(W)\noptimize sgd(0.1)\n"
    expect(text, BPTypeError, 3, column(text, 3, "0.1"), "lr=")


def test_too_many_arguments() -> None:
    text = "input x[N]\ny = exp(x, x)\n"
    expect(text, BPTypeError, 2, column(text, 2, ", x") + 2, "exp()")


def test_missing_argument() -> None:
    text = "input x[N]\ny = where(x > 0, x)\n"
    expect(text, BPTypeError, 2, column(text, 2, "where"), "where()", "'b'")


def test_def_wrong_argument_count() -> None:
    text = "def f(a, b) = a * b\ninput x[N]\ny = f(x)\n"
    expect(text, BPTypeError, 3, column(text, 3, "f"), "f()", "2")


def test_def_called_with_keyword() -> None:
    text = "def f(a, b) = a * b\ninput x[N]\ny = f(x, b=x)\n"
    expect(text, BPTypeError, 3, column(text, 3, "b="), "keyword")


def test_unknown_keyword() -> None:
    text = "input x[N, 2]\ny = sum(x, axes=1)\n"
    expect(text, BPTypeError, 2, column(text, 2, "axes"), "'axes'")


def test_keyword_given_twice() -> None:
    text = "input x[N]\ny = leaky_relu(x, 0.1, alpha=0.2)\n"
    expect(text, BPTypeError, 2, column(text, 2, "alpha"), "'alpha'")


def test_option_must_be_a_number() -> None:
    text = "input x[N]\ny = leaky_relu(x, alpha=x)\n"
    expect(text, BPTypeError, 2, column(text, 2, "x", 1), "alpha")


def test_axis_must_be_an_integer() -> None:
    text = "input x[N, 2]\ny = sum(x, axis=0.5)\n"
    expect(text, BPTypeError, 2, column(text, 2, "0.5"), "axis")


def test_dense_outside_an_assignment() -> None:
    text = "input x[N, 2]\ny = 2 * dense(x, 3)\n"
    expect(text, BPTypeError, 2, column(text, 2, "dense"), "dense")


def test_dense_bad_activation() -> None:
    text = "input x[N, 2]\ny = dense(x, 3, act=maximum)\n"
    expect(text, BPTypeError, 2, column(text, 2, "maximum"), "act=")


def test_dense_bad_units() -> None:
    text = "input x[N, 2]\ny = dense(x, 2.5)\n"
    expect(text, BPTypeError, 2, column(text, 2, "2.5"), "units")


def test_matmul_in_def() -> None:
    text = "def f(a, b) = a @ b\n"
    expect(text, BPTypeError, 1, column(text, 1, "a", 1), "'@'")


def test_const_must_be_a_number() -> None:
    text = "input x[N]\nconst K = x * 2\n"
    expect(text, BPTypeError, 2, column(text, 2, "x"), "K")


@pytest.mark.parametrize("expr, token", [
    ("x / 0", "x"), ("x + 1 / 0", "1"), ("x + log(0)", "log"), ("x + sqrt(-1)", "sqrt"),
    ("x * (0 / 0)", "0"), ("x + (-1) ** 0.5", "("),
])
def test_constants_that_are_not_finite_reals(expr: str, token: str) -> None:
    """SymPy folds these to zoo, nan or I; they must be errors, not crashes."""
    text = f"input x[N]\ny = {expr}\n"
    expect(text, BPTypeError, 2, column(text, 2, token), "finite real")


@pytest.mark.parametrize("expr", ["3 ** 1e9", "0.5 ** -1e9", "10 ** 2.5E+4 ** 2"])
def test_huge_constant_power_is_refused_not_computed(expr: str) -> None:
    """SymPy would compute these exactly (billions of digits); they fail fast instead."""
    text = f"input x[N]\ny = x + {expr}\n"
    expect(text, BPTypeError, 2, column(text, 2, expr.split()[0]), "'**'")


def test_number_too_large() -> None:
    text = "input x[N]\ny = x * 1e400\n"
    expect(text, BPTypeError, 2, column(text, 2, "1e400"), "1e400")


def test_infinite_option() -> None:
    text = "param W[2]\nloss sum(W)\noptimize sgd(lr=exp(1000))\n"
    expect(text, BPTypeError, 3, column(text, 3, "exp"), "finite")


# ------------------------------------------------------------------- compile_file names

def test_compile_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.bp"
    text = "input x[N, 2]\n\nh = x @ x\n"
    path.write_text(text)
    with pytest.raises(BPShapeError) as info:
        bpc.compile_file(path)
    assert str(info.value).startswith(f"broken.bp:3:{column(text, 3, 'x')}: error: ")


def test_compile_file_missing(tmp_path: Path) -> None:
    with pytest.raises(BPError, match="nothere.bp"):
        bpc.compile_file(tmp_path / "nothere.bp")


def test_compile_file_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin.bp"
    path.write_bytes(b"# caf\xe9\nparam W[2]\n")
    with pytest.raises(BPError, match="latin.bp"):
        bpc.compile_file(path)


def test_bad_compile_arguments() -> None:
    with pytest.raises(BPTypeError):
        bpc.compile("param W[2]\n", backend="cuda")
    with pytest.raises(BPTypeError):
        bpc.compile("param W[2]\n", dtype="int32")
    with pytest.raises(BPTypeError):
        bpc.compile(b"param W[2]\n")  # type: ignore[arg-type]


# ------------------------------------------------------------------------- call time

NET = (
    "input x[N, 2]\ntarget t[N, 1]\nparam W[2, 1]\nparam b[1]\n"
    "y = x @ W + b\nloss mean((y - t) ** 2)\n"
)


@pytest.fixture
def net(backend: str) -> bpc.CompiledNet:
    return bpc.compile(NET, backend=backend, filename="net.bp")


CALLS = {
    "forward": lambda net, p, **d: net.forward(p, **{k: v for k, v in d.items() if k != "t"}),
    "loss": lambda net, p, **d: net.loss(p, **d),
    "value_and_grad": lambda net, p, **d: net.value_and_grad(p, **d),
    "step": lambda net, p, **d: net.step(p, net.init_state(p), **d),
}


def _call_error(net: bpc.CompiledNet, call: str, kind: type[BPError], **data) -> str:
    p = net.init(0)
    before = {k: v.copy() for k, v in p.items()}
    with pytest.raises(BPError) as info:
        CALLS[call](net, p, **data)
    assert type(info.value) is kind, f"{type(info.value).__name__}: {info.value}"
    for name in p:  # nothing was changed
        np.testing.assert_array_equal(p[name], before[name])
    return str(info.value)


@pytest.mark.parametrize("call", sorted(CALLS))
def test_missing_array(net: bpc.CompiledNet, call: str) -> None:
    message = _call_error(net, call, BPNameError, t=np.zeros((3, 1)))
    assert "'x'" in message


@pytest.mark.parametrize("call", sorted(CALLS))
def test_unknown_array(net: bpc.CompiledNet, call: str) -> None:
    message = _call_error(net, call, BPNameError, x=np.zeros((3, 2)), t=np.zeros((3, 1)),
                          z=np.zeros(3))
    assert "'z'" in message


@pytest.mark.parametrize("call", sorted(CALLS))
def test_wrong_rank(net: bpc.CompiledNet, call: str) -> None:
    message = _call_error(net, call, BPShapeError, x=np.zeros(6), t=np.zeros((3, 1)))
    assert "x" in message and "(6,)" in message and "[N, 2]" in message


@pytest.mark.parametrize("call", sorted(CALLS))
def test_wrong_size(net: bpc.CompiledNet, call: str) -> None:
    message = _call_error(net, call, BPShapeError, x=np.zeros((3, 4)), t=np.zeros((3, 1)))
    assert "x" in message and "(3, 4)" in message and "[N, 2]" in message


@pytest.mark.parametrize("call", ["loss", "value_and_grad", "step"])
def test_symbol_bound_two_ways(net: bpc.CompiledNet, call: str) -> None:
    message = _call_error(net, call, BPShapeError, x=np.zeros((4, 2)), t=np.zeros((5, 1)))
    assert "N" in message and "4" in message and "5" in message
    assert "x" in message and "t" in message


@pytest.mark.parametrize("bad", [
    np.array([["a", "b"]]),
    np.array([[1, 2]], dtype=object),
    np.zeros((3, 2), dtype=complex),
    [[1, 2], [3]],
    "not an array",
], ids=["str", "object", "complex", "ragged", "text"])
@pytest.mark.parametrize("call", sorted(CALLS))
def test_not_real_numbers(net: bpc.CompiledNet, call: str, bad: object) -> None:
    message = _call_error(net, call, BPTypeError, x=bad, t=np.zeros((1, 1)))
    assert "x" in message


def test_real_dtypes_and_layouts_are_accepted(net: bpc.CompiledNet) -> None:
    p = net.init(0)
    base = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    expected = net.forward(p, x=base)["y"]
    for x in (base.astype(bool), base.astype(np.int8), base.astype(np.uint16),
              base.astype(np.float32), np.asfortranarray(base), base.tolist(),
              np.repeat(base, 2, axis=0)[::2]):
        np.testing.assert_allclose(net.forward(p, x=x)["y"], expected, rtol=1e-7)


def test_bad_params(net: bpc.CompiledNet) -> None:
    p = net.init(0)
    x = np.zeros((3, 2))
    with pytest.raises(BPNameError, match="'b'"):
        net.forward({"W": p["W"]}, x=x)
    with pytest.raises(BPNameError, match="'Q'"):
        net.forward({**p, "Q": p["W"]}, x=x)
    with pytest.raises(BPShapeError, match="W"):
        net.forward({**p, "W": np.zeros((2, 2))}, x=x)
    with pytest.raises(BPTypeError, match="W"):
        net.forward({**p, "W": np.zeros((2, 1), dtype=complex)}, x=x)


def test_step_needs_exact_params(net: bpc.CompiledNet) -> None:
    x, t = np.zeros((3, 2)), np.zeros((3, 1))
    p = net.init(0)
    s = net.init_state(p)
    with pytest.raises(BPTypeError, match="W"):
        net.step({**p, "W": p["W"].astype(np.float32)}, s, x=x, t=t)
    with pytest.raises(BPTypeError, match="W"):
        net.step({**p, "W": np.zeros((2, 2))[:, :1]}, s, x=x, t=t)  # not contiguous
    with pytest.raises(BPTypeError, match="W"):
        net.step({**p, "W": p["W"].tolist()}, s, x=x, t=t)


def test_no_loss_statement(backend: str) -> None:
    net = bpc.compile("input x[N]\ny = x * 2\n", backend=backend)
    with pytest.raises(BPNameError):
        net.loss({}, x=np.ones(2))
    with pytest.raises(BPNameError):
        net.value_and_grad({}, x=np.ones(2))
    with pytest.raises(BPNameError):
        net.step({}, {}, x=np.ones(2))
