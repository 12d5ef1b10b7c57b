"""AST to Graph: resolve names, bind dims, infer and check shapes, expand layer sugar.

Every elementwise operation becomes its own ELEMENTWISE node here; the fusion pass merges
them later, where it can weigh what merging costs the backward pass. Built-in calls are
dispatched through tables, in `calls.py`.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import sympy

from ..errors import BPNameError, BPShapeError, BPTypeError, Pos
from ..graph.ir import Graph, GraphBuilder, Node, Op
from ..graph.network import Init, MaskInfo, Network, OptimizerConfig, ParamInfo
from ..graph.shapes import MAX_RANK, Shape, format_shape
from . import syntax as S
from .calls import CALLS
from .declarations import default_optimizer, optimizer_config, parse_init
from .defs import evaluate_def
from .expressions import Expressions
from .layers import LAYERS
from .values import Scalar, Tensor

MAX_PARAM_ELEMENTS = 2**48  # 2 PiB of float64
# keywords of forward, loss, value_and_grad and step besides the data arrays
RESERVED_DATA = {"training": "the mode", "state": "the state whose seed keys dropout's masks",
                 "mask_rows": "where rows sit in a batch split over machines"}
_ARTICLE = {"input": "an input", "target": "a target"}


class Lowerer(Expressions):
    """Walks the statements of one program in order, building the forward graph."""

    def __init__(self, program: S.Program, training: bool = True):
        self.program = program
        self.training = training
        self.modal = False
        self.buffer_updates: dict[str, int] = {}
        self.batch_counts: list[tuple[tuple, int]] = []
        self.masks: dict[str, MaskInfo] = {}
        self.mask_nodes: dict[str, int] = {}
        self.assigning: str | None = None  # the name the statement being lowered assigns
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

    # ---------------------------------------------------------------- statements

    def run(self) -> Network:
        seen: dict[type, Pos] = {}
        for stmt in self.program.statements:
            self.line = stmt.pos.line
            self.assigning = None
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
        if stmt.name in RESERVED_DATA:
            raise self.error(BPNameError, f"'{stmt.name}' cannot name {_ARTICLE[stmt.kind]}: calls "
                             f"take {stmt.name}= for {RESERVED_DATA[stmt.name]}", stmt.pos)
        shape = self.shape(stmt.dims, symbolic=True)
        node = self.builder.add(Node(Op.INPUT, (), shape, name=stmt.name, lines=(self.line,)))
        self.data[stmt.name] = node
        if stmt.kind == "target":
            self.targets.add(stmt.name)

    def param_stmt(self, stmt: S.ParamStmt) -> None:
        shape = self.shape(stmt.dims, symbolic=False)
        init = self.initializer(stmt.init, shape)
        self.add_param(stmt.name, shape, init, stmt.pos)

    def add_buffer(self, name: str, shape: tuple[int, ...], init: Init, pos: Pos) -> int:
        """A tensor kept in `p` beside the params, without a gradient."""
        node = self.add_param(name, shape, init, pos)
        self.param_info[name] = replace(self.param_info[name], buffer=True)
        return node

    def add_mask(self, shape: Shape, rate: float, pos: Pos) -> int:
        """A dropout mask of `shape`: an input the runtime draws, named after the statement
        (`h.mask`, then `h.mask2`, ...), a dotted name as layers give their params, so no
        declaration can take it."""
        stem = f"{self.assigning or 'loss'}.mask"
        taken = sum(1 for name in self.masks if name.startswith(stem))
        name = stem + (str(taken + 1) if taken else "")
        node = self.builder.add(Node(Op.INPUT, (), shape, name=name, lines=(self.line,)))
        self.masks[name] = MaskInfo(name, shape, rate, len(self.masks), pos.line)
        self.mask_nodes[name] = node
        return node

    def add_param(self, name: str, shape: tuple[int, ...], init: Init, pos: Pos) -> int:
        if math.prod(shape) > MAX_PARAM_ELEMENTS:  # e.g. dense(x, 1e300): no machine holds it
            raise self.error(BPShapeError, f"param {name} would have about 10^"
                             f"{len(str(math.prod(shape))) - 1} elements, more than any "
                             f"machine holds", pos)
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
        self.assigning = stmt.name
        if isinstance(stmt.value, S.Call) and stmt.value.func in LAYERS:
            value = LAYERS[stmt.value.func](self, stmt.value, stmt.name)
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
        if len(dims) > MAX_RANK:
            raise self.error(BPShapeError, f"a tensor has at most {MAX_RANK} dims, not "
                             f"{len(dims)}", dims[MAX_RANK].pos)
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

    # ------------------------------------------------------------------ result

    def finish(self) -> Network:
        if self.outputs is None:
            assigned = list(self.tensors)
            self.outputs = (assigned[-1],) if assigned else ()
        outputs = {name: self.lookup(name) for name in self.outputs}
        self.check_targets(outputs)
        # the masks are inputs of the graph, after the ones the file declares
        inputs = {**{n: i for n, i in self.data.items() if n not in self.targets},
                  **self.mask_nodes, **{n: i for n, i in self.data.items() if n in self.targets}}
        buffers = tuple(n for n, info in self.param_info.items() if info.buffer)
        graph = Graph(
            nodes=tuple(self.builder.nodes), inputs=inputs, params=dict(self.params),
            outputs=outputs, loss=self.loss, buffers=buffers,
            buffer_updates=dict(self.buffer_updates) if self.loss is not None else {},
        )
        optimizer = self.optimizer or default_optimizer()
        shapes = {name: self.builder.nodes[i].shape for name, i in inputs.items()}
        return Network(
            name=self.network_name or Path(self.source.filename).stem or "network",
            source=self.source,
            graph=graph,
            params=dict(self.param_info),
            inputs={n: s for n, s in shapes.items() if n not in self.targets},
            targets={n: s for n, s in shapes.items() if n in self.targets},
            outputs=self.outputs,
            optimizer=optimizer,
            masks=dict(self.masks),
            modal=self.modal,
            batch_counts=tuple(self.batch_counts),
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


_KEYWORD = {
    S.NetworkStmt: "network", S.LossStmt: "loss", S.OptimizeStmt: "optimize",
    S.OutputStmt: "output",
}


def lower(program: S.Program, training: bool = True) -> Network:
    """The forward graph and declarations of `program` for one mode (training, or
    inference); BPError subclasses if it is bad."""
    return Lowerer(program, training).run()
