"""The errors bpcompile raises, and how a source position is shown.

Every failure a user can cause is a `BPError`. Errors about a `.bp` file carry the file
name, line and column and print the offending line with a caret under the place, as a C
compiler does; errors about arrays at call time name the array and both shapes.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Source:
    """The text of one `.bp` file and the name to call it by in messages."""

    filename: str
    text: str

    def lines(self) -> list[str]:
        """The lines as the lexer counts them: split at newlines only, dropping a carriage
        return before one. (str.splitlines also splits at form feeds, U+0085 and more, which
        the lexer keeps inside a line, so a message would quote the wrong line.)"""
        return [line.removesuffix("\r") for line in self.text.split("\n")]

    def line(self, number: int) -> str:
        """The 1-based line `number`, without its newline ('' past the end)."""
        lines = self.lines()
        return lines[number - 1] if 1 <= number <= len(lines) else ""


@dataclass(frozen=True)
class Pos:
    """A 1-based line and column in a `.bp` file."""

    line: int
    col: int


class BPError(Exception):
    """Base class of every error bpcompile raises on purpose.

    With a `source` and `pos`, the message reads
    `file:line:col: error: message`, then the source line and a caret.
    """

    def __init__(self, message: str, source: Source | None = None, pos: Pos | None = None):
        self.message = message
        self.source = source
        self.pos = pos
        super().__init__(self._render())

    def _render(self) -> str:
        if self.source is None or self.pos is None:
            return self.message
        line = self.source.line(self.pos.line)
        # Keep tabs in the caret's indent so the caret lines up under tabbed source too.
        indent = "".join(c if c == "\t" else " " for c in line[: self.pos.col - 1])
        return (
            f"{self.source.filename}:{self.pos.line}:{self.pos.col}: error: {self.message}\n"
            f"    {line}\n"
            f"    {indent}^"
        )

    def located(self, source: Source, pos: Pos) -> BPError:
        """The same error, pinned to `pos` in `source` unless it already has a place."""
        if self.pos is not None:
            return self
        return type(self)(self.message, source, pos)


class BPSyntaxError(BPError):
    """The text is not a `.bp` program: a bad token, a missing bracket, a stray keyword."""


class BPNameError(BPError):
    """A name is unknown, defined twice, or used as the wrong kind of thing."""


class BPShapeError(BPError):
    """Shapes do not fit: an operator's operands, an axis, or an array given at call time."""


class BPTypeError(BPError):
    """A value of the wrong kind: a bad argument, option, dtype or array type."""


class BPNumericError(BPError):
    """A training step met a loss or gradient that is not finite; nothing was changed."""


def closest(name: str, known: Iterable[str], cutoff: float = 0.6) -> str | None:
    """The known name `name` most likely misspells (or differs from only in case), if any:
    what a "did you mean" offers."""
    known = list(known)
    same_but_case = [k for k in known if k.lower() == name.lower() and k != name]
    found = same_but_case or difflib.get_close_matches(name, known, n=1, cutoff=cutoff)
    return found[0] if found else None


def did_you_mean(name: str, known: Iterable[str], cutoff: float = 0.6) -> str:
    """` (did you mean 'x'?)` for a near miss of a known name, else nothing."""
    found = closest(name, known, cutoff)
    return f" (did you mean '{found}'?)" if found else ""

