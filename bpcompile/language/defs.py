"""`def NAME(a, b) = EXPR`: a user's elementwise function, evaluated once into a SymPy
expression over its arguments. Calls substitute their operands, and SymPy differentiates the
result like any built-in."""

from __future__ import annotations

import sympy

from ..errors import BPNameError, BPTypeError
from . import syntax as S
from .arguments import bind
from .builtins import BINARY, COMPARISONS, ELEMENTWISE, indicator, number
from .context import Lowering


def evaluate_def(lw: Lowering, stmt: S.DefStmt, args: dict[str, sympy.Symbol]) -> sympy.Expr:
    """The body of `stmt` as SymPy, over the symbols in `args`."""

    def visit(expr: S.Expr) -> sympy.Expr:
        if isinstance(expr, S.Number):
            return number(expr.text)
        if isinstance(expr, S.Name):
            if expr.id in args:
                return args[expr.id]
            if expr.id in lw.consts:
                return lw.consts[expr.id]
            kind = lw.kind_of(expr.id)
            if kind is not None:
                raise lw.error(
                    BPNameError,
                    f"a def body may use only its arguments, numbers and consts; "
                    f"'{expr.id}' is {kind}",
                    expr.pos,
                )
            raise lw.error(BPNameError, f"unknown name '{expr.id}' in def {stmt.name}",
                           expr.pos)
        if isinstance(expr, S.Neg):
            return -visit(expr.operand)
        if isinstance(expr, S.BinOp):
            if expr.op == "@":
                raise lw.error(BPTypeError, "a def is elementwise: '@' is not allowed in it",
                               expr.pos)
            left, right = visit(expr.left), visit(expr.right)
            if expr.op in COMPARISONS:
                return indicator(COMPARISONS[expr.op](left, right))
            return BINARY[expr.op](left, right)
        if isinstance(expr, S.Call):
            return call(expr)
        if isinstance(expr, S.Boolean):
            raise lw.error(BPTypeError, "true and false are only option values", expr.pos)
        raise lw.error(
            BPTypeError, f"a def body is elementwise; '{S.expr_text(expr)}' is not allowed",
            expr.pos,
        )

    def call(expr: S.Call) -> sympy.Expr:
        if expr.func in lw.defs:
            symbols, body = lw.defs[expr.func]
            if expr.keywords or len(expr.args) != len(symbols):
                raise lw.error(BPTypeError,
                               f"{expr.func}() takes {len(symbols)} arguments", expr.pos)
            return body.xreplace(dict(zip(symbols, (visit(a) for a in expr.args))))
        builtin = ELEMENTWISE.get(expr.func)
        if builtin is None:
            if expr.func == stmt.name:
                raise lw.error(BPNameError, f"def {stmt.name} cannot call itself", expr.pos)
            raise lw.error(
                BPNameError,
                f"a def body may call only elementwise functions and earlier defs, "
                f"not '{expr.func}'",
                expr.pos,
            )
        tensor_names = builtin.args
        bound = bind(lw, expr, tensor_names + tuple(builtin.options), dict(builtin.options))
        operands = [visit(bound[n]) for n in tensor_names]
        options = []
        for name in builtin.options:
            value = bound[name]
            option = visit(value) if hasattr(value, "pos") else sympy.sympify(value)
            if option.free_symbols:
                raise lw.error(BPTypeError, f"{expr.func}'s {name} must be a number",
                               value.pos)
            options.append(option)
        return builtin.make(*operands, *options)

    return visit(stmt.body)
