"""The statements of one function of the generated module: a line per value that needs one,
the rest written inline where it is read, as a person would (`h = sigmoid(x @ W1 + b1)`).

A value gets its own line when the `.bp` file named it, when it is read more than once,
when it is a result, or when it is too long to read inline; views (`W2.T`) of a value that
has a line are always written inline. Every line carries a comment with the `.bp` lines it
comes from, and names come from the one naming source (graph/naming.py).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from typing import Protocol

import sympy

from ...graph.expressions import ATOM, Code, ExpressionPrinter, number
from ...graph.functions import is_size, size_name
from ...graph.ir import Graph, Node, Op, operand
from ...graph.naming import Naming
from ...graph.shapes import Shape, broadcast, symbols_of
from ...graph.spelling import OP_SPELLING, Style
from .lines import fit

INLINE_LIMIT = 60  # characters; longer unnamed expressions get a line of their own
VIEWS = frozenset({Op.TRANSPOSE, Op.RESHAPE})  # free to repeat: NumPy makes a view


class Module(Protocol):
    """What a function's statements need of the module they are printed into."""

    graph: Graph
    naming: Naming
    helpers: set[str]  # helper functions the module must define
    size_var: dict[str, str]  # symbolic size -> the variable holding it
    symbol_names: dict[sympy.Symbol, Code]  # sizes and named constants (N, LR)

    def where(self, lines: tuple[int, ...]) -> str: ...


class FunctionWriter:
    """Prints one entry point's body: statements for the nodes behind `roots`."""

    def __init__(self, module: Module):
        self.module = module
        self.graph: Graph = module.graph
        self.naming: Naming = module.naming
        self.bound: dict[int, str] = {}  # node id -> variable already holding it
        self.lines: list[str] = []
        self.sizes: set[str] = set()  # symbolic sizes the body reads
        self.line_of: dict[int, int] = {}  # node id -> index in `lines` of its statement
        self.style = Style(numpy=True, shape=self.shape, helpers=module.helpers)

    # -------------------------------------------------------------------- nodes

    def emit(self, roots: list[int], keep: set[int] = frozenset()) -> None:
        """Statements computing `roots`; nodes in `keep` get a line of their own."""
        live = self.live(roots)
        readers = Counter(roots)
        for i in live:
            readers.update(j for j in self.graph.nodes[i].inputs)
        inline: dict[int, Code] = {}
        for i in live:
            node = self.graph.nodes[i]
            code = self.code(i, [inline.get(j) or Code(self.bound[j], ATOM)
                                 for j in node.inputs])
            if self._own_line(i, node, code, readers[i], keep, inline):
                self.assign(i, node, code)
            else:
                inline[i] = code

    def _own_line(self, i: int, node: Node, code: Code, readers: int, keep: set[int],
                  inline: dict[int, Code]) -> bool:
        if i in keep:
            return True
        if node.op in VIEWS and node.inputs[0] not in inline:
            return False  # a view of a variable: `W2.T` reads better than a name for it
        named = node.name is not None and not node.derived
        return named or readers != 1 or len(code.text) > INLINE_LIMIT

    def live(self, roots: list[int]) -> list[int]:
        """The nodes `roots` need that no variable holds yet, in order."""
        seen: set[int] = set()
        stack = [r for r in roots if r not in self.bound]
        while stack:
            i = stack.pop()
            if i in seen or i in self.bound:
                continue
            seen.add(i)
            stack.extend(self.graph.nodes[i].inputs)
        return sorted(seen)

    def assign(self, i: int, node: Node, code: Code) -> None:
        name = self.naming[i].code
        self.line_of[i] = len(self.lines)
        self.statement(f"{name} = {code.text}", node.lines)
        self.bound[i] = name

    def statement(self, text: str, lines: tuple[int, ...] = ()) -> None:
        """A line of the body (indented by the function), with its `.bp` lines."""
        self.lines += [line[4:] for line in fit(text, self.module.where(lines), "    ")]

    def code(self, i: int, args: list[Code]) -> Code:
        node = self.graph.nodes[i]
        if node.op is Op.ELEMENTWISE:
            return self.elementwise(i, node, args)
        shapes = [self.graph.nodes[j].shape for j in node.inputs]
        return OP_SPELLING[node.op](self.style, node, args, shapes)

    def elementwise(self, i: int, node: Node, args: list[Code]) -> Code:
        names = {operand(k): code for k, code in enumerate(args)}
        names.update(self.module.symbol_names)
        self.sizes |= {size_name(s) for s in node.expr.free_symbols if is_size(s)}
        if not node.inputs:
            value = number(node.expr) if not node.expr.free_symbols else \
                self.printer(names).print(node.expr)
            if not node.shape:
                return value
            return Code(f"np.full({self.shape(node.shape)}, {value.text}, dtype=DTYPE)", ATOM)
        replacements, reduced = _common_subexpressions(node.expr, _temporaries())
        base = re.sub(r"_part(_\d+)?$", "", self.naming[i].code)
        for symbol, value in replacements:
            part = self.naming.fresh(f"{base}_part")
            self.statement(f"{part} = {self.printer(names).print(value).text}", node.lines)
            names[symbol] = Code(part, ATOM)
        code = self.printer(names).print(reduced)
        # what the printed code reads: cse may cancel terms the node's expression kept
        read = _operands_read(reduced, replacements)
        if not read and not node.shape:
            return code
        if not read:
            return Code(f"np.full({self.shape(node.shape)}, {code.text}, dtype=DTYPE)", ATOM)
        reached = broadcast(*(self.graph.nodes[node.inputs[int(s.name[1:])]].shape
                              for s in read))
        if reached != node.shape:  # the operands alone do not fill the result's shape
            code = Code(f"np.broadcast_to({code.text}, {self.shape(node.shape)})", ATOM)
        return code

    def printer(self, names: dict[sympy.Symbol, Code]) -> ExpressionPrinter:
        return ExpressionPrinter(names, helpers=self.module.helpers)

    def shape(self, shape: Shape) -> str:
        """A shape as a tuple literal; its symbolic sizes become variables of the body."""
        self.sizes |= set(symbols_of(shape))
        dims = [self.module.size_var.get(d, str(d)) for d in shape]
        return f"({dims[0]},)" if len(dims) == 1 else f"({', '.join(dims)})"


def _temporaries() -> Iterator[sympy.Symbol]:
    k = 0
    while True:
        yield sympy.Symbol(f"common:{k}", real=True)
        k += 1


def _common_subexpressions(expr: sympy.Expr, names: Iterator[sympy.Symbol]
                           ) -> tuple[list[tuple[sympy.Symbol, sympy.Expr]], sympy.Expr]:
    """`sympy.cse` of one expression, keeping only the replacements its result still reads
    (terms that cancel leave some unread)."""
    replacements, (reduced,) = sympy.cse([expr], symbols=names)
    needed = set(reduced.free_symbols)
    kept = []
    for symbol, value in reversed(replacements):
        if symbol in needed:
            kept.append((symbol, value))
            needed |= value.free_symbols
    return kept[::-1], reduced


def _operands_read(expr: sympy.Expr, replacements: list[tuple[sympy.Symbol, sympy.Expr]]
                   ) -> set[sympy.Symbol]:
    """The operand symbols (a0, a1, ...) `expr` reads, directly or through `replacements`."""
    values = dict(replacements)
    read: set[sympy.Symbol] = set()
    stack = list(expr.free_symbols)
    while stack:
        symbol = stack.pop()
        if symbol in values:
            stack.extend(values[symbol].free_symbols)
        elif symbol.name[:1] == "a" and symbol.name[1:].isdigit():
            read.add(symbol)
    return read
