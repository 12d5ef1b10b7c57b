"""Expressions to graph nodes: names, numbers, operators and calls, with NumPy's
broadcasting checked at each step. Every elementwise operation becomes its own ELEMENTWISE
node; the fusion pass merges them later, where it can weigh what merging costs the backward
pass. Calls dispatch through the table in calls.py."""

from __future__ import annotations

import math
import sys

import sympy

from ..errors import (
    BPError,
    BPNameError,
    BPShapeError,
    BPTypeError,
    Pos,
    Source,
    did_you_mean,
)
from ..graph.functions import dim_symbol
from ..graph.ir import GraphBuilder, Node, Op, operand
from ..graph.shapes import MAX_RANK, Shape, ShapeMismatch, broadcast, format_shape
from . import syntax as S
from .builtins import BINARY, COMPARISONS, indicator, number
from .calls import CALLS, call, matmul
from .structure import index
from .values import Scalar, Tensor, Value

MAX_ELEMENTS = 2**48  # 2 PiB of float64: past any machine


class Expressions:
    """The expression half of the lowerer: reads the names `Lowerer` declares."""

    builder: GraphBuilder
    consts: dict[str, sympy.Expr]
    dims: set[str]
    data: dict[str, int]
    params: dict[str, int]
    tensors: dict[str, int]
    defs: dict[str, tuple[tuple[sympy.Symbol, ...], sympy.Expr]]
    line: int

    source: Source

    def error(self, kind: type[BPError], message: str, pos: Pos) -> BPError:
        return kind(message, self.source, pos)

    def expression(self, expr: S.Expr) -> Value:
        if isinstance(expr, S.Number):
            value = number(expr.text)
            if abs(value) > FLOAT_MAX:
                raise self.error(BPTypeError, f"{expr.text} is too large for float64", expr.pos)
            return Scalar(value)
        if isinstance(expr, S.Boolean):
            raise self.error(
                BPTypeError, "true and false are only option values, like nesterov=true",
                expr.pos,
            )
        if isinstance(expr, S.Name):
            return self.name(expr)
        if isinstance(expr, S.Attr):
            return self.attribute(expr)
        if isinstance(expr, S.Neg):
            return self.elementwise("-", lambda a: -a, [expr.operand], expr.pos)
        if isinstance(expr, S.BinOp):
            return self.binop(expr)
        if isinstance(expr, S.Index):
            return index(self, expr)
        if isinstance(expr, S.List):
            raise self.error(BPTypeError, "a list is a value only for options such as "
                             "axis=[1, 2] or a shape, not a tensor", expr.pos)
        assert isinstance(expr, S.Call)
        return call(self, expr)

    def name(self, expr: S.Name) -> Value:
        name = expr.id
        for table in (self.tensors, self.params, self.data):
            if name in table:
                node = table[name]
                return Tensor(node, self.builder.nodes[node].shape)
        if name in self.consts:
            return Scalar(self.consts[name])
        if name in self.dims:
            return Scalar(dim_symbol(name))
        if name in self.defs:
            raise self.error(BPTypeError, f"'{name}' is a def; call it: {name}(...)", expr.pos)
        if name in CALLS:
            raise self.error(BPTypeError, f"'{name}' is a function; call it: {name}(...)",
                             expr.pos)
        raise self.error(BPNameError, f"unknown name '{name}'{self._hint(name)}", expr.pos)

    def _hint(self, name: str) -> str:
        """Why a name is unknown where that can be said: declared further down the file
        (statements run in order), or a near miss of a known name."""
        program = getattr(self, "program", None)
        for stmt in getattr(program, "statements", ()):
            if getattr(stmt, "name", None) == name and stmt.pos.line > self.line:
                return f" here: it is declared on line {stmt.pos.line}, after this use"
        return did_you_mean(name, [*self.tensors, *self.params, *self.data, *self.consts,
                                   *self.dims, *self.defs, *CALLS])

    def attribute(self, expr: S.Attr) -> Value:
        if isinstance(expr.base, S.Name):
            qualified = f"{expr.base.id}.{expr.attr}"
            if qualified in self.params:
                node = self.params[qualified]
                return Tensor(node, self.builder.nodes[node].shape)
        if expr.attr != "T":
            raise self.error(BPNameError, f"unknown name '{expr.text}'", expr.pos)
        value = self.expression(expr.base)
        if len(value.shape) != 2 or not isinstance(value, Tensor):
            raise self.error(
                BPShapeError,
                f"'.T' transposes a 2-D tensor, but {S.expr_text(expr.base)} is "
                f"{format_shape(value.shape)}",
                expr.pos,
            )
        rows, cols = value.shape
        return self.node(Op.TRANSPOSE, (value.node,), (cols, rows))

    def binop(self, expr: S.BinOp) -> Value:
        if expr.op == "@":
            return matmul(self, expr)
        if expr.op == "**":
            return self.power(expr)
        if expr.op in COMPARISONS:
            compare = COMPARISONS[expr.op]
            return self.elementwise(
                expr.op, lambda a, b: indicator(compare(a, b)), [expr.left, expr.right], expr.pos
            )
        return self.elementwise(expr.op, BINARY[expr.op], [expr.left, expr.right], expr.pos)

    def power(self, expr: S.BinOp) -> Value:
        """`**`. SymPy raises a rational to a rational exactly, so 3 ** 1e9 would build a
        number of billions of digits before any check could see it: refuse it first."""
        operands = [expr.left, expr.right]
        values = [self.expression(e) for e in operands]
        base, exponent = (v.expr if isinstance(v, Scalar) else None for v in values)
        if base is not None and base.is_Rational and exponent is not None \
                and exponent.is_Rational:
            bits = abs(exponent) * max(abs(base.p), base.q).bit_length()
            if bits > EXACT_POWER_BITS:
                raise self.error(
                    BPTypeError, "'**' of these constants is too large to compute exactly",
                    expr.pos,
                )
        return self.combine("**", BINARY["**"], values, operands, expr.pos)

    def elementwise(self, what: str, make, operands: list[S.Expr], pos: Pos) -> Value:
        """Evaluate `operands` and combine them with `make` (SymPy in, SymPy out)."""
        values = [self.expression(e) for e in operands]
        return self.combine(what, make, values, operands, pos)

    def combine(self, what: str, make, values: list[Value], operands: list[S.Expr],
                pos: Pos) -> Value:
        try:
            shape = broadcast(*(v.shape for v in values))
        except ShapeMismatch:
            raise self.shape_mismatch(what, values, operands, pos) from None
        inputs: list[int] = []
        args: list[sympy.Expr] = []
        for value in values:
            if isinstance(value, Scalar):
                args.append(value.expr)
            else:
                args.append(operand(len(inputs)))
                inputs.append(value.node)
        expr = make(*args)
        self.check_constants(expr, f"'{what}'", pos)
        if not inputs:
            return Scalar(sympy.sympify(expr), shape)
        node = self.builder.elementwise(expr, inputs, shape, lines=(self.line,))
        return Tensor(node, shape)

    def check_constants(self, expr: sympy.Expr, what: str, pos: Pos) -> None:
        """SymPy folds constants exactly: 1/0 becomes zoo, 0/0 nan, sqrt(-1) I. No backend can
        print those, so they are errors here, where the source position is known."""
        for value, meaning in NOT_REAL.items():
            if expr.has(value):
                raise self.error(
                    BPTypeError, f"{what} gives {meaning} here, not a finite real number", pos
                )
        if any(abs(n) > FLOAT_MAX for n in expr.atoms(sympy.Number)):
            raise self.error(BPTypeError, f"{what} gives a number too large for float64", pos)
        # a function of constants that SymPy keeps unevaluated, as asin(2) or acosh(0)
        for term in expr.atoms(sympy.Function):
            if not term.free_symbols:
                value = sympy.N(term)
                if not (value.is_real and value.is_finite):
                    raise self.error(
                        BPTypeError, f"{what} gives {term} = {value} here, not a finite real "
                        "number", pos)

    def shape_mismatch(self, what: str, values: list[Value], operands: list[S.Expr],
                       pos: Pos) -> BPShapeError:
        described = [f"{S.expr_text(e)} is {format_shape(v.shape)}"
                     for e, v in zip(operands, values)]
        return self.error(
            BPShapeError, f"shape mismatch in '{what}': {' but '.join(described)}", pos
        )

    def node(self, op: Op, inputs: tuple[int, ...], shape: Shape, **attrs) -> Tensor:
        if len(shape) > MAX_RANK:
            raise self.error(BPShapeError, f"this makes a tensor of rank {len(shape)}, "
                             f"{format_shape(shape)}; tensors have at most {MAX_RANK} dims",
                             Pos(self.line, 1))
        fixed = math.prod(d for d in shape if isinstance(d, int))
        if fixed > MAX_ELEMENTS:  # conv(x, 16, 3, padding=1e300): no machine holds it
            raise self.error(BPShapeError, f"this makes a tensor of about 10^"
                             f"{len(str(fixed)) - 1} elements (times the sizes bound at call "
                             f"time), more than any machine holds", Pos(self.line, 1))
        return Tensor(self.builder.add(Node(op, inputs, shape, lines=(self.line,), **attrs)),
                      shape)

    def materialize(self, value: Value) -> int:
        """A graph node holding `value` (a scalar becomes a constant node)."""
        if isinstance(value, Tensor):
            return value.node
        return self.builder.elementwise(value.expr, (), value.shape, lines=(self.line,))


# Constants SymPy may fold an expression to that are not finite real numbers.
NOT_REAL: dict[sympy.Expr, str] = {
    sympy.zoo: "an infinite value (as 1/0 or log(0))",
    sympy.oo: "an infinite value",
    -sympy.oo: "an infinite value",
    sympy.nan: "an undefined value (as 0/0)",
    sympy.I: "a complex value (as sqrt(-1))",
}
FLOAT_MAX = sympy.Rational(sys.float_info.max)
# A power of constants whose exact value needs more bits than this is refused (float64 holds
# magnitudes up to 2**1024, so nothing representable is lost).
EXACT_POWER_BITS = 1 << 16
