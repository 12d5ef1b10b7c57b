"""What a built-in call, a layer, a def or a declaration sees of the lowering in progress:
the names declared so far, the graph being built, and the way to evaluate a subexpression
or report an error at a position. `Lowerer` (lower.py) is the one implementation; the
handlers name this protocol instead, so they do not import the lowerer that calls them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import sympy

from ..errors import BPError, Pos
from ..graph.ir import GraphBuilder, Op
from ..graph.network import Init
from ..graph.shapes import Shape
from . import syntax as S
from .values import Tensor, Value


class Lowering(Protocol):
    builder: GraphBuilder
    consts: dict[str, sympy.Expr]
    defs: dict[str, tuple[tuple[sympy.Symbol, ...], sympy.Expr]]
    line: int  # the statement being lowered
    training: bool  # the mode this lowering builds the graph for
    modal: bool  # set by whatever reads `training`
    buffer_updates: dict[str, int]  # buffer -> its value after a training step
    # batch norm's reduced sizes in training mode, and its line: more than one value each
    batch_counts: list[tuple[tuple, int]]

    def error(self, kind: type[BPError], message: str, pos: Pos) -> BPError: ...

    def kind_of(self, name: str) -> str | None: ...

    def expression(self, expr: S.Expr) -> Value: ...

    def combine(self, what: str, make: Callable[..., sympy.Expr], values: list[Value],
                operands: list[S.Expr], pos: Pos) -> Value: ...

    def node(self, op: Op, inputs: tuple[int, ...], shape: Shape, **attrs: object) -> Tensor:
        ...

    def materialize(self, value: Value) -> int: ...

    def add_param(self, name: str, shape: tuple[int, ...], init: Init, pos: Pos) -> int: ...

    def add_buffer(self, name: str, shape: tuple[int, ...], init: Init, pos: Pos) -> int: ...

    def add_mask(self, shape: Shape, rate: float, pos: Pos) -> int: ...

    def lookup(self, name: str) -> int: ...
