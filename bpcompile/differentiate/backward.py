"""The builder the vector-Jacobian rules write the backward pass with: new nodes after the
forward ones, and the moves every rule needs (reshape, transpose, matmul, summing a
broadcast back, putting reduced axes back)."""

from __future__ import annotations

import sympy

from ..graph.ir import Graph, GraphBuilder, Node, Op, operand
from ..graph.shapes import Shape, broadcast_axes, matmul_shape, reduced_shape

Contributions = tuple[int | None, ...]  # one adjoint part per input (None: not wanted)


class Backward:
    """Builds the backward nodes after the forward ones, in one builder."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.builder = GraphBuilder.extending(graph)
        self.forward = len(graph.nodes)  # ids below are forward values

    def node(self, op: Op, inputs: tuple[int, ...], shape: Shape, lines=(), **attrs) -> int:
        return self.builder.add(Node(op, inputs, shape, lines=lines, **attrs))

    def elementwise(self, expr: sympy.Expr, inputs, shape: Shape, lines=()) -> int:
        return self.builder.elementwise(expr, inputs, shape, lines=lines)

    def shape(self, i: int) -> Shape:
        return self.builder.nodes[i].shape

    def reshape(self, i: int, shape: Shape, lines=()) -> int:
        """i as `shape`; a reshape of a reshape is one reshape of the first one's input."""
        node = self.builder.nodes[i]
        if node.op is Op.RESHAPE:
            i = node.inputs[0]
        return i if self.shape(i) == shape else self.node(Op.RESHAPE, (i,), shape, lines)

    def transpose(self, i: int, lines=()) -> int:
        """i's transpose, written as textbooks simplify it: (W.T).T is W, and (A @ B).T is
        B.T @ A.T (a transposed product, not a product transposed)."""
        node = self.builder.nodes[i]
        if node.op is Op.TRANSPOSE:
            return node.inputs[0]
        if node.op is Op.MATMUL and all(len(self.shape(j)) == 2 for j in node.inputs):
            a, b = node.inputs
            return self.matmul(self.transpose(b, lines), self.transpose(a, lines), lines)
        rows, cols = self.shape(i)
        return self.node(Op.TRANSPOSE, (i,), (cols, rows), lines)

    def matmul(self, a: int, b: int, lines=()) -> int:
        return self.node(Op.MATMUL, (a, b), matmul_shape(self.shape(a), self.shape(b)), lines)

    def swap_last(self, i: int, lines=()) -> int:
        """i with its last two axes swapped: the transpose of each matrix in a batch."""
        rank = len(self.shape(i))
        if rank == 2:
            return self.transpose(i, lines)
        perm = (*range(rank - 2), rank - 1, rank - 2)
        return self.permute(i, perm, lines)

    def permute(self, i: int, perm: tuple[int, ...], lines=()) -> int:
        """numpy.transpose(i, perm); a permutation of a permutation is one permutation."""
        node = self.builder.nodes[i]
        if node.op is Op.PERMUTE:
            perm = tuple(node.axes[a] for a in perm)
            i = node.inputs[0]
        if perm == tuple(range(len(perm))):
            return i
        shape = tuple(self.shape(i)[a] for a in perm)
        return self.node(Op.PERMUTE, (i,), shape, lines, axes=perm)

    def unbroadcast(self, i: int, shape: Shape, lines=()) -> int:
        """Sum `i` over the axes along which a value of `shape` was broadcast to it."""
        axes = broadcast_axes(shape, self.shape(i))
        if not axes:
            return i
        total = self.node(Op.SUM, (i,), reduced_shape(self.shape(i), axes, False), lines,
                          axes=axes)
        return self.reshape(total, shape, lines)

    def expand(self, g: int, node: Node, lines=()) -> int:
        """A reduction's adjoint `g` with the reduced axes back as 1s (to broadcast)."""
        source = self.shape(node.inputs[0])
        return self.reshape(g, reduced_shape(source, node.axes, True), lines)

    def accumulate(self, parts: list[int], shape: Shape, name: str | None,
                   derived: bool = False) -> int:
        if len(parts) == 1:
            total = parts[0]
        else:
            terms = sympy.Add(*(operand(k) for k in range(len(parts))))
            # the sum comes from every line that contributed a part: its statement says so
            lines = tuple(sorted(set().union(*(self.builder.nodes[k].lines for k in parts))))
            total = self.elementwise(terms, parts, shape, lines)
        if name is not None:
            self.name_adjoint(total, name, derived)
        return total

    def name_adjoint(self, i: int, name: str, derived: bool) -> None:
        """Call node `i` the adjoint of `name` (d_name), unless it is a forward value that
        the adjoint merely equals (d(a * b)/da is b when the adjoint is 1)."""
        if i >= self.forward:
            self.builder.note(i, name, (), adjoint=True, derived=derived)
