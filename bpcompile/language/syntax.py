"""The abstract syntax tree of a `.bp` program: frozen dataclasses that remember where they came
from, so every later stage can point at the source when it reports an error."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

from ..errors import Pos, Source

# ---------------------------------------------------------------------------- expressions


@dataclass(frozen=True)
class Number:
    text: str  # as written, so that 0.1 stays exactly one tenth
    pos: Pos


@dataclass(frozen=True)
class Boolean:
    value: bool
    pos: Pos


@dataclass(frozen=True)
class Name:
    id: str
    pos: Pos


@dataclass(frozen=True)
class Attr:
    """`base.attr`: a layer's parameter (`h1.W`) or a transpose (`x.T`)."""

    base: Expr
    attr: str
    pos: Pos
    text: str = field(default="", compare=False)  # source text, for messages


@dataclass(frozen=True)
class Keyword:
    name: str
    value: Expr
    pos: Pos


@dataclass(frozen=True)
class Call:
    func: str
    args: tuple[Expr, ...]
    keywords: tuple[Keyword, ...]
    pos: Pos
    text: str = field(default="", compare=False)  # source text, for messages


@dataclass(frozen=True)
class BinOp:
    op: str  # one of + - * / @ ** < <= > >= == !=
    left: Expr
    right: Expr
    pos: Pos
    text: str = field(default="", compare=False)  # source text, for messages


@dataclass(frozen=True)
class Neg:
    operand: Expr
    pos: Pos
    text: str = field(default="", compare=False)  # source text, for messages


@dataclass(frozen=True)
class List:
    """`[a, b, ...]`: a value for shape-like options (`axis=[2, 3]`, `reshape(x, [N, -1])`)."""

    items: tuple[Expr, ...]
    pos: Pos
    text: str = field(default="", compare=False)  # source text, for messages


@dataclass(frozen=True)
class Slice:
    """`start:stop:step` inside `x[...]`; each part may be left out (None)."""

    start: Expr | None
    stop: Expr | None
    step: Expr | None
    pos: Pos


@dataclass(frozen=True)
class Ellipsis_:
    """`...` inside `x[...]`: as many `:` as the other subscripts leave."""

    pos: Pos


Subscript = Union["Expr", Slice, Ellipsis_]


@dataclass(frozen=True)
class Index:
    """`x[i, a:b, ...]`."""

    base: Expr
    subscripts: tuple[Subscript, ...]
    pos: Pos
    text: str = field(default="", compare=False)  # source text, for messages


Expr = Union[Number, Boolean, Name, Attr, Call, BinOp, Neg, List, Index]


# ----------------------------------------------------------------------------- statements


@dataclass(frozen=True)
class Dim:
    value: str | int  # a symbol or const name, or an integer literal
    pos: Pos


@dataclass(frozen=True)
class NetworkStmt:
    name: str
    pos: Pos


@dataclass(frozen=True)
class ConstStmt:
    name: str
    value: Expr
    pos: Pos


@dataclass(frozen=True)
class DataStmt:
    """`input` or `target`: an array given at call time."""

    kind: str  # "input" or "target"
    name: str
    dims: tuple[Dim, ...]
    pos: Pos


@dataclass(frozen=True)
class ParamStmt:
    name: str
    dims: tuple[Dim, ...]
    init: Expr | None
    pos: Pos


@dataclass(frozen=True)
class DefStmt:
    name: str
    params: tuple[str, ...]
    body: Expr
    pos: Pos


@dataclass(frozen=True)
class AssignStmt:
    name: str
    value: Expr
    pos: Pos


@dataclass(frozen=True)
class OutputStmt:
    names: tuple[Name, ...]
    pos: Pos


@dataclass(frozen=True)
class LossStmt:
    value: Expr
    pos: Pos


@dataclass(frozen=True)
class OptimizeStmt:
    call: Call
    pos: Pos


Statement = Union[
    NetworkStmt, ConstStmt, DataStmt, ParamStmt, DefStmt,
    AssignStmt, OutputStmt, LossStmt, OptimizeStmt,
]


@dataclass(frozen=True)
class Program:
    statements: tuple[Statement, ...]
    source: Source


def expr_text(expr: Expr) -> str:
    """A short description of `expr` for messages: its name or its source text."""
    if isinstance(expr, Name):
        return expr.id
    if isinstance(expr, Number):
        return expr.text
    if isinstance(expr, Boolean):
        return "true" if expr.value else "false"
    text = " ".join(expr.text.split())
    return text if 0 < len(text) <= 40 else "the operand"
