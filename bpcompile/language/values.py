"""The two kinds of value an expression lowers to: a tensor in the graph, or a scalar known
without data (a number, a const, or a size bound at call time)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import sympy

from ..graph.shapes import Shape


@dataclass(frozen=True)
class Tensor:
    """A value that lives in the graph."""

    node: int
    shape: Shape


@dataclass(frozen=True)
class Scalar:
    """A value known without data; `shape` is () unless a constant was broadcast."""

    expr: sympy.Expr
    shape: Shape = ()


Value = Union[Tensor, Scalar]
