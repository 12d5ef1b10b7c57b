"""AST to Graph: resolve names, bind dims, infer and check shapes, expand layer sugar.

Every elementwise operation becomes its own ELEMENTWISE node here; the fusion pass merges
them later, where it can weigh what merging costs the backward pass. Built-in calls are
dispatched through tables, in `calls.py`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import sympy

from . import syntax as S
from ..errors import BPError, BPNameError, BPShapeError, BPTypeError, Pos
from ..graph.ir import Graph, GraphBuilder, Node, Op, operand
from .calls import CALLS, call, dense, matmul
from .defs import evaluate_def
from ..runtime.initializers import parse_init
from ..graph.network import Init, Network, OptimizerConfig, ParamInfo
from ..differentiate.optimizers import default_optimizer, optimizer_config
from ..graph.shapes import Shape, ShapeMismatch, broadcast, dim_symbol, format_shape
from ..differentiate.symbolic import BINARY, COMPARISONS, indicator, number
from .values import Scalar, Tensor, Value


class Lowerer:
    """Walks the statements of one program in order, building the forward graph."""

    def __init__(self, program: S.Program):
        self.program = program
        self.source = program.source
        self.builder = GraphBuilder()
        self.consts: dict[str, sympy.Expr] = {}
        self.dims: set[str] = set()
        self.data: dict[str, int] = {}
        self.targets: set[str] = set()
        self.params: dict[str, int] = {}
        self.param_info: dict[str, ParamInfo] = {}
        self.tensors: dict[str, int] = {}
        self.defs: dict[str, tuple[tuple[sympy.Symbol, ...], sympy.Expr]] = {}
        self.outputs: tuple[str, ...] | None = None
        self.loss: int | None = None
        self.optimizer: OptimizerConfig | None = None
        self.network_name: str | None = None
        self.line = 0  # the statement being lowered, recorded on each node
        self.output_pos = Pos(1, 1)

    # ------------------------------------------------------------------ errors

    def error(self, kind: type[BPError], message: str, pos: Pos) -> BPError:
        return kind(message, self.source, pos)

    # ---------------------------------------------------------------- statements

    def run(self) -> Network:
        seen: dict[type, Pos] = {}
        for stmt in self.program.statements:
            self.line = stmt.pos.line
            if isinstance(stmt, (S.NetworkStmt, S.LossStmt, S.OptimizeStmt, S.OutputStmt)):
                if type(stmt) in seen:
                    first = seen[type(stmt)]
                    keyword = _KEYWORD[type(stmt)]
                    raise self.error(
                        BPNameError,
                        f"'{keyword}' may appear only once (first at line {first.line})",
                        stmt.pos,
                    )
                seen[type(stmt)] = stmt.pos
            self.statement(stmt)
        return self.finish()

    def statement(self, stmt: S.Statement) -> None:
        handler = {
            S.NetworkStmt: self.network_stmt, S.ConstStmt: self.const_stmt,
            S.DataStmt: self.data_stmt, S.ParamStmt: self.param_stmt,
            S.DefStmt: self.def_stmt, S.AssignStmt: self.assign_stmt,
            S.OutputStmt: self.output_stmt, S.LossStmt: self.loss_stmt,
            S.OptimizeStmt: self.optimize_stmt,
        }[type(stmt)]
        handler(stmt)

    def network_stmt(self, stmt: S.NetworkStmt) -> None:
        self.network_name = stmt.name

    def const_stmt(self, stmt: S.ConstStmt) -> None:
        self.declare(stmt.name, stmt.pos)
        value = self.expression(stmt.value)
        if not isinstance(value, Scalar) or value.expr.free_symbols:
            raise self.error(BPTypeError, f"const {stmt.name} must be a number", stmt.value.pos)
        self.consts[stmt.name] = value.expr

    def data_stmt(self, stmt: S.DataStmt) -> None:
        self.declare(stmt.name, stmt.pos)
        shape = self.shape(stmt.dims, symbolic=True)
        node = self.builder.add(Node(Op.INPUT, (), shape, name=stmt.name, lines=(self.line,)))
        self.data[stmt.name] = node
        if stmt.kind == "target":
            self.targets.add(stmt.name)

    def param_stmt(self, stmt: S.ParamStmt) -> None:
        shape = self.shape(stmt.dims, symbolic=False)
        init = self.initializer(stmt.init, shape)
        self.add_param(stmt.name, shape, init, stmt.pos)

    def add_param(self, name: str, shape: tuple[int, ...], init: Init, pos: Pos) -> int:
        self.declare(name, pos)
        node = self.builder.add(Node(Op.PARAM, (), shape, name=name, lines=(self.line,)))
        self.params[name] = node
        self.param_info[name] = ParamInfo(name, shape, init, self.line)
        return node

    def def_stmt(self, stmt: S.DefStmt) -> None:
        self.declare(stmt.name, stmt.pos)
        if len(set(stmt.params)) != len(stmt.params):
            raise self.error(BPNameError, f"def {stmt.name} names an argument twice", stmt.pos)
        symbols = tuple(sympy.Symbol(f"arg:{p}", real=True) for p in stmt.params)
        body = evaluate_def(self, stmt, dict(zip(stmt.params, symbols)))
        self.check_constants(body, f"def {stmt.name}", stmt.body.pos)
        self.defs[stmt.name] = (symbols, body)

    def assign_stmt(self, stmt: S.AssignStmt) -> None:
        self.declare(stmt.name, stmt.pos)
        if isinstance(stmt.value, S.Call) and stmt.value.func == "dense":
            value = dense(self, stmt.value, stmt.name)
        else:
            value = self.expression(stmt.value)
        node = self.materialize(value)
        self.builder.note(node, stmt.name, (self.line,))
        self.tensors[stmt.name] = node
        self.output_pos = stmt.pos  # where a default output (the last name) was assigned

    def output_stmt(self, stmt: S.OutputStmt) -> None:
        names = []
        for name in stmt.names:
            if name.id in names:
                raise self.error(BPNameError, f"'{name.id}' is listed twice", name.pos)
            value = self.name(name)
            if not isinstance(value, Tensor):
                raise self.error(BPTypeError, f"output '{name.id}' must be a tensor", name.pos)
            names.append(name.id)
        self.outputs = tuple(names)
        self.output_pos = stmt.pos

    def loss_stmt(self, stmt: S.LossStmt) -> None:
        value = self.expression(stmt.value)
        if value.shape != ():
            raise self.error(
                BPShapeError,
                f"the loss must be a scalar, but {S.expr_text(stmt.value)} is "
                f"{format_shape(value.shape)}; reduce it with sum or mean",
                stmt.value.pos,
            )
        self.loss = self.materialize(value)

    def optimize_stmt(self, stmt: S.OptimizeStmt) -> None:
        self.optimizer = optimizer_config(self, stmt)

    # ------------------------------------------------------------ declarations

    def declare(self, name: str, pos: Pos) -> None:
        """Check that `name` is new; each name in a network is defined once."""
        kind = self.kind_of(name)
        if kind is not None:
            raise self.error(BPNameError, f"'{name}' is already defined as {kind}", pos)
        if name in CALLS:
            raise self.error(BPNameError, f"'{name}' is a built-in function", pos)

    def kind_of(self, name: str) -> str | None:
        if name in self.consts:
            return "a const"
        if name in self.targets:
            return "a target"
        if name in self.data:
            return "an input"
        if name in self.params:
            return "a param"
        if name in self.tensors:
            return "a tensor"
        if name in self.defs:
            return "a def"
        if name in self.dims:
            return "a dimension"
        return None

    def shape(self, dims: tuple[S.Dim, ...], symbolic: bool) -> Shape:
        result: list[int | str] = []
        for dim in dims:
            value = dim.value
            if isinstance(value, str) and value in self.consts:
                const = self.consts[value]
                if not (const.is_Integer and const > 0):
                    raise self.error(
                        BPShapeError, f"const {value} = {const} is not a positive integer",
                        dim.pos,
                    )
                value = int(const)
            if isinstance(value, str):
                if not symbolic:
                    raise self.error(
                        BPShapeError,
                        f"a param's dims must be integers or consts, but {value} is symbolic",
                        dim.pos,
                    )
                other = self.kind_of(value)
                if other is not None and other != "a dimension":
                    raise self.error(BPNameError, f"'{value}' is {other}, not a size", dim.pos)
                self.dims.add(value)
            result.append(value)
        return tuple(result)

    def initializer(self, expr: S.Expr | None, shape: Shape) -> Init:
        return parse_init(self, expr, shape)

    # ------------------------------------------------------------- expressions

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
        raise self.error(BPNameError, f"unknown name '{name}'", expr.pos)

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

    def shape_mismatch(self, what: str, values: list[Value], operands: list[S.Expr],
                       pos: Pos) -> BPShapeError:
        described = [f"{S.expr_text(e)} is {format_shape(v.shape)}"
                     for e, v in zip(operands, values)]
        return self.error(
            BPShapeError, f"shape mismatch in '{what}': {' but '.join(described)}", pos
        )

    def node(self, op: Op, inputs: tuple[int, ...], shape: Shape, **attrs) -> Tensor:
        return Tensor(self.builder.add(Node(op, inputs, shape, lines=(self.line,), **attrs)),
                      shape)

    def materialize(self, value: Value) -> int:
        """A graph node holding `value` (a scalar becomes a constant node)."""
        if isinstance(value, Tensor):
            return value.node
        return self.builder.elementwise(value.expr, (), value.shape, lines=(self.line,))

    # ------------------------------------------------------------------ result

    def finish(self) -> Network:
        if self.outputs is None:
            assigned = list(self.tensors)
            self.outputs = (assigned[-1],) if assigned else ()
        outputs = {name: self.lookup(name) for name in self.outputs}
        inputs = {n: i for n, i in self.data.items()}
        self.check_targets(outputs)
        graph = Graph(
            nodes=tuple(self.builder.nodes), inputs=inputs, params=dict(self.params),
            outputs=outputs, loss=self.loss,
        )
        optimizer = self.optimizer or default_optimizer()
        shapes = {name: self.builder.nodes[i].shape for name, i in self.data.items()}
        return Network(
            name=self.network_name or Path(self.source.filename).stem or "network",
            source=self.source,
            graph=graph,
            params=dict(self.param_info),
            inputs={n: s for n, s in shapes.items() if n not in self.targets},
            targets={n: s for n, s in shapes.items() if n in self.targets},
            outputs=self.outputs,
            optimizer=optimizer,
        )

    def lookup(self, name: str) -> int:
        for table in (self.tensors, self.params, self.data):
            if name in table:
                return table[name]
        raise AssertionError(name)

    def check_targets(self, outputs: dict[str, int]) -> None:
        """Forward is not given targets, so no output may depend on one."""
        graph = Graph(nodes=tuple(self.builder.nodes))
        target_nodes = {self.data[t]: t for t in self.targets}
        for name, node in outputs.items():
            needed = set(graph.live([node])) & set(target_nodes)
            if needed:
                target = target_nodes[min(needed)]
                raise self.error(
                    BPNameError,
                    f"output '{name}' depends on target '{target}', which only the loss "
                    f"may use; declare it with 'input' instead",
                    self.output_pos,
                )


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

_KEYWORD = {
    S.NetworkStmt: "network", S.LossStmt: "loss", S.OptimizeStmt: "optimize",
    S.OutputStmt: "output",
}


def lower(program: S.Program) -> Network:
    """The forward graph and declarations of `program`; BPError subclasses if it is bad."""
    return Lowerer(program).run()
