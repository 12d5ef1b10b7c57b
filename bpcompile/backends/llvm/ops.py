"""The IR each op's node becomes inside an entry function: a call of the kernel computing it
(an elementwise loop nest, a reduction, the softmax family), the matmul (BLAS for large
products, the register-blocked loop nest for the rest), or nothing for a view."""

from __future__ import annotations

from collections.abc import Callable

from llvmlite import ir

from ...graph.ir import Node, Op, operand
from ...graph.shapes import Shape
from . import convolution, moves, products, split
from .axis import axis_view
from .entry import EntryWriter
from .jit import host
from .loops import PTR, i64, product


def elementwise(w: EntryWriter, i: int, node: Node) -> None:
    if i in w.virtual:
        return
    shapes = [w.graph.nodes[j].shape for j in node.inputs]
    dims, padded = collapse(node.shape, shapes)
    patterns = tuple(tuple(p[a] == 1 and dims[a] != 1 for a in range(len(dims)))
                     for p in padded)
    out = w.storage[i]
    pointers = [w.storage[j] for j in node.inputs]
    alias = next((k for k, p in enumerate(pointers) if p is out), None)
    sizes, size_values = w.size_values(node.expr)
    kernel = w.kernels.elementwise(node.expr, patterns, len(dims), sizes, alias,
                                      w.label(i))
    args = ([] if alias is not None else [out]) + pointers
    lengths = w.dims_of(dims)
    if not lengths:  # a scalar
        w.call(kernel, args + size_values)
        return
    # the rows (first axis) divide over the threads; each operand moves by its own row
    own = ([] if alias is not None else [tuple(False for _ in dims)]) + list(patterns)
    strides = [_row_bytes(w, lengths, flags) for flags in own]
    split.call(w, kernel, args + lengths + size_values, split.Split(len(args), tuple(strides)),
               product(w.b, lengths))


def _row_bytes(w: EntryWriter, sizes: list[ir.Value], broadcast: tuple[bool, ...]
               ) -> ir.Value | int:
    """Bytes between the rows (first-axis entries) of an operand broadcast along the axes
    `broadcast` marks: 0 if along the first."""
    if broadcast[0]:
        return 0
    kept = [size for size, flag in zip(sizes[1:], broadcast[1:]) if not flag]
    return w.b.mul(product(w.b, kept), i64(w.itemsize))

def reduction(w: EntryWriter, i: int, node: Node) -> None:
    source = node.inputs[0]
    shape = w.graph.nodes[source].shape
    if source in w.virtual:  # compute the elementwise input inside the reduction
        inner = w.graph.nodes[source]
        expr, operands = inner.expr, list(inner.inputs)
    else:
        expr, operands = operand(0), [source]
    rank = len(shape)
    patterns = tuple(
        tuple(a < rank - len(s) or (s[a - rank + len(s)] == 1 and shape[a] != 1)
              for a in range(rank))
        for s in (w.graph.nodes[j].shape for j in operands)
    )
    sizes, size_values = w.size_values(expr)
    op = REDUCTIONS[node.op]
    kernel = w.kernels.reduction(op, expr, patterns, rank, node.axes, sizes, w.label(i))
    pointers = [w.storage[j] for j in operands]
    lengths = w.dims_of(shape)
    args = [w.storage[i], *pointers, *lengths, *size_values]
    if not lengths or 0 in node.axes:  # a scalar, or a sum along the rows: one pass
        w.call(kernel, args)
        return
    summed = tuple(a in node.axes for a in range(rank))  # the result lacks these axes
    strides = [_row_bytes(w, lengths, flags) for flags in (summed, *patterns)]
    split.call(w, kernel, args, split.Split(1 + len(pointers), tuple(strides)),
               product(w.b, lengths))

REDUCTIONS = {Op.SUM: "sum", Op.MAX: "max", Op.PROD: "prod"}


def matmul_op(w: EntryWriter, i: int, node: Node) -> None:
    """One call of the prebuilt `product` (products.py), which picks how to compute it:
    a transposed operand is a flag, read in place."""
    if not w.plain_matmul(node):
        moves.batched_matmul(w, i, node)
        return
    a, b = node.inputs
    a_node, b_node = w.graph.nodes[a], w.graph.nodes[b]
    if a in w.views:  # A = X.T with X [k, m]: A[i, p] = X[p, i]
        a_source = a_node.inputs[0]
        k, m = w.graph.nodes[a_source].shape
    else:
        a_source = a
        m, k = (1, *a_node.shape) if len(a_node.shape) == 1 else a_node.shape
    n = 1 if len(b_node.shape) == 1 else b_node.shape[1]
    b_source = b_node.inputs[0] if b in w.b_views else b
    # a transposed B's loop-nest copy goes to the buffer planned for the transpose node
    scratch = w.storage[b] if b in w.b_views else ir.Constant(PTR, None)
    a_transposed, b_transposed = a in w.views, b in w.b_views
    w.functions.setdefault(i, []).extend(_route_kernels(w, m, n, k, a_transposed,
                                                        b_transposed))
    w.b.call(products.product_function(w.matmul),
             [w.storage[i], w.storage[a_source], w.storage[b_source], scratch,
              *w.dims_of((m, n, k)), i64(products.form_of(a_transposed, b_transposed))])


def _route_kernels(w: EntryWriter, m: int | str, n: int | str, k: int | str,
                   a_transposed: bool, b_transposed: bool) -> list[ir.Function | str]:
    """For `bpcompile show`: `product`, then the kernels of each route it may take."""
    known = [size if isinstance(size, int) else None for size in (m, n, k)]
    matmul = w.matmul
    kernels: list[ir.Function | str] = [products.product_function(matmul)]
    for route in products.routes(*known, a_transposed, b_transposed, matmul.itemsize,
                                 matmul.lanes, matmul.blas is not None):
        if route is products.Route.LARGE:
            names = {"blas": "BLAS gemm", "packed": matmul.gemm.product()}
            kernels += [names[kernel] for kernel in products.large_kernel(
                known[1], matmul.itemsize, matmul.blas is not None, host()[0])]
        elif route is products.Route.DOT:
            kernels.append(matmul.dot_function())
        else:
            kernels += [w.kernels.transpose()] * b_transposed + [matmul.function()]
    return kernels


def transpose(w: EntryWriter, i: int, node: Node) -> None:
    if i in w.views or i in w.b_views:
        return
    rows, cols = w.dims_of(w.graph.nodes[node.inputs[0]].shape)
    w.call(w.kernels.transpose(),
                [w.storage[i], w.storage[node.inputs[0]], rows, cols])

def along_axis(w: EntryWriter, i: int, node: Node) -> None:
    source = node.inputs[0]
    view = axis_view(w.b, w.dims_of(w.graph.nodes[source].shape), node.axes)
    kernel = w.kernels.along_axis(ALONG_AXIS[node.op])
    w.call(kernel, [w.storage[i], w.storage[source], view.outer, view.axis,
                         view.inner])

def softmax_xent(w: EntryWriter, i: int, node: Node) -> None:
    logits, targets = node.inputs
    dims = w.dims_of(w.graph.nodes[logits].shape)
    rows = product(w.b, dims[:-1])
    w.call(w.kernels.softmax_cross_entropy(),
                [w.storage[i], w.storage[logits], w.storage[targets], rows,
                 dims[-1]])


ALONG_AXIS = {
    Op.SOFTMAX: "softmax", Op.LOG_SOFTMAX: "log_softmax", Op.LOGSUMEXP: "logsumexp",
    Op.ARGMAX_ONEHOT: "argmax_onehot", Op.ARGMAX: "argmax",
}


def view(w: EntryWriter, i: int, node: Node) -> None:
    """A reshape: no code, its storage is its input's (entry.py)."""


EMIT: dict[Op, Callable[[EntryWriter, int, Node], None]] = {
    Op.ELEMENTWISE: elementwise,
    Op.RESHAPE: view,
    Op.SUM: reduction,
    Op.PROD: reduction,
    Op.MAX: reduction,
    Op.ARGMAX: along_axis,
    Op.PERMUTE: moves.permute,
    Op.SLICE: moves.slice_,
    Op.UNSLICE: moves.unslice,
    Op.CONCAT: moves.concat,
    Op.ONEHOT: moves.onehot,
    Op.CONV: convolution.conv,
    Op.CONV_INPUT_GRAD: convolution.conv_input_grad,
    Op.CONV_WEIGHT_GRAD: convolution.conv_weight_grad,
    Op.POOL: convolution.pool,
    Op.POOL_GRAD: convolution.pool_grad,
    Op.TAKE: moves.take,
    Op.TAKE_GRAD: moves.take_grad,
    Op.MATMUL: matmul_op,
    Op.TRANSPOSE: transpose,
    Op.SOFTMAX: along_axis,
    Op.LOG_SOFTMAX: along_axis,
    Op.LOGSUMEXP: along_axis,
    Op.ARGMAX_ONEHOT: along_axis,
    Op.SOFTMAX_XENT: softmax_xent,
}


def collapse(shape: Shape, inputs: list[Shape]) -> tuple[Shape, list[Shape]]:
    """Merge neighbouring axes along which every operand is either whole or broadcast alike,
    so [N, 3] + [N, 3] is one loop and [N, 3] + [3] stays two."""
    rank = len(shape)
    padded = [(1,) * (rank - len(s)) + tuple(s) for s in inputs]
    kinds = [tuple(p[a] == 1 and shape[a] != 1 for p in padded) for a in range(rank)]
    groups: list[list[int]] = []
    for axis in range(rank):
        if groups and kinds[axis] == kinds[groups[-1][-1]]:
            groups[-1].append(axis)
        else:
            groups.append([axis])

    def merged(dims: tuple) -> tuple:
        result = []
        for group in groups:
            values = [dims[a] for a in group]
            if all(isinstance(v, int) for v in values):
                size = 1
                for v in values:
                    size *= v
                result.append(size)
            elif len(values) == 1:
                result.append(values[0])
            else:
                ints = [v for v in values if isinstance(v, int) and v != 1]
                symbols = [v for v in values if isinstance(v, str)]
                if ints or len(symbols) > 1:
                    return None  # a product of sizes we cannot name: keep the axes
                result.append(symbols[0])
        return tuple(result)

    out = merged(shape)
    if out is None:
        return shape, [tuple(p) for p in padded]
    return out, [merged(p) for p in padded]
