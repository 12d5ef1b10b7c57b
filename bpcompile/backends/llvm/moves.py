"""The ops that move elements, as strided copies: a permute, a slice, a slice's gradient
(a scatter into zeros) and a join each copy a box of elements from one strided view to
another, so one loop nest per rank serves them all. And the batched matmul: the 2-D
product per matrix of the batch, at offsets that step by 0 along broadcast batch dims."""

from __future__ import annotations

from llvmlite import ir

from ...graph.ir import Node
from ...graph.shapes import Shape
from .entry import EntryWriter
from .loops import I64, PTR, for_range, i64


def strided_copy(w: EntryWriter, rank: int) -> ir.Function:
    """out[out_at + sum(i_a * o_a)] = x[x_at + sum(i_a * s_a)] for every index i < n."""
    args = [("out", PTR), ("x", PTR)]
    args += [(f"{kind}{a}", I64) for kind in "nos" for a in range(rank)]
    args += [("out_at", I64), ("x_at", I64)]

    def body(b: ir.IRBuilder, arg: dict) -> None:
        def level(a: int, out_at: ir.Value, x_at: ir.Value) -> None:
            if a == rank:
                value = b.load(b.gep(arg["x"], [x_at], source_etype=w.t), typ=w.t)
                b.store(value, b.gep(arg["out"], [out_at], source_etype=w.t))
                return
            with for_range(b, arg[f"n{a}"], f"i{a}") as i:
                level(a + 1, b.add(out_at, b.mul(i, arg[f"o{a}"])),
                      b.add(x_at, b.mul(i, arg[f"s{a}"])))

        level(0, arg["out_at"], arg["x_at"])

    return w.kernels.define(("strided", rank), "copy", args, ir.VoidType(), body)


def _strides(w: EntryWriter, shape: Shape) -> list[ir.Value]:
    """Each axis's step, in elements, in a dense C-order tensor of `shape`."""
    dims = w.dims_of(shape)
    strides: list[ir.Value] = [i64(1)] * len(dims)
    for a in range(len(dims) - 2, -1, -1):
        strides[a] = w.b.mul(strides[a + 1], dims[a + 1])
    return strides


def _copy(w: EntryWriter, out: ir.Value, x: ir.Value, shape: Shape, out_strides, x_strides,
          out_at: ir.Value = i64(0), x_at: ir.Value = i64(0)) -> None:
    w.call(strided_copy(w, len(shape)),
           [out, x, *w.dims_of(shape), *out_strides, *x_strides, out_at, x_at])


def _slice_view(w: EntryWriter, node: Node, source: Shape) -> tuple[list, ir.Value]:
    """The strides (per kept axis) and the offset of a slice of a dense `source`."""
    strides, dims = _strides(w, source), w.dims_of(source)
    offset: ir.Value = i64(0)
    kept = []
    for a, (start, step) in enumerate(node.attrs):
        first = i64(start) if start >= 0 else w.b.add(dims[a], i64(start))
        offset = w.b.add(offset, w.b.mul(first, strides[a]))
        if a not in node.axes:
            kept.append(w.b.mul(strides[a], i64(step)))
    return kept, offset


def permute(w: EntryWriter, i: int, node: Node) -> None:
    source = w.graph.nodes[node.inputs[0]].shape
    strides = _strides(w, source)
    _copy(w, w.storage[i], w.storage[node.inputs[0]], node.shape, _strides(w, node.shape),
          [strides[a] for a in node.axes])


def slice_(w: EntryWriter, i: int, node: Node) -> None:
    source = w.graph.nodes[node.inputs[0]].shape
    strides, offset = _slice_view(w, node, source)
    _copy(w, w.storage[i], w.storage[node.inputs[0]], node.shape, _strides(w, node.shape),
          strides, x_at=offset)


def unslice(w: EntryWriter, i: int, node: Node) -> None:
    """Zeros, then the adjoint written at the sliced positions."""
    g = w.graph.nodes[node.inputs[0]].shape
    out = w.storage[i]
    w.zero(out, node.shape)
    strides, offset = _slice_view(w, node, node.shape)
    _copy(w, out, w.storage[node.inputs[0]], g, strides, _strides(w, g), out_at=offset)


def concat(w: EntryWriter, i: int, node: Node) -> None:
    (axis,) = node.axes
    out_strides = _strides(w, node.shape)
    offset = 0
    for j in node.inputs:
        shape = w.graph.nodes[j].shape
        _copy(w, w.storage[i], w.storage[j], shape, out_strides, _strides(w, shape),
              out_at=w.b.mul(i64(offset), out_strides[axis]))
        offset += shape[axis]


def onehot(w: EntryWriter, i: int, node: Node) -> None:
    """out[r, k] = 1 where k is row r's class index (checked at the call), else 0."""
    (classes,) = node.attrs
    t = w.graph.nodes[node.inputs[0]].shape
    b, one, zero = w.b, ir.Constant(w.t, 1.0), ir.Constant(w.t, 0.0)
    with for_range(b, w.count(t), "row") as row:
        index = b.fptosi(b.load(b.gep(w.storage[node.inputs[0]], [row], source_etype=w.t),
                                typ=w.t), I64)
        with for_range(b, i64(classes), "class") as k:
            at = b.add(b.mul(row, i64(classes)), k)
            value = b.select(b.icmp_signed("==", k, index), one, zero)
            b.store(value, b.gep(w.storage[i], [at], source_etype=w.t))


def _gather_loops(w: EntryWriter, node: Node, table: Shape, index: Shape, body) -> None:
    """For each (outer o, index j, inner n): body(table offset, gathered offset), where
    the table is [outer, size, inner] along the node's axis and the gathered values are
    [outer, count(index), inner]."""
    (axis,), (size,) = node.axes, node.attrs
    b = w.b
    outer = w.count(table[:axis])
    inner = w.count(table[axis + 1:])
    taken = w.count(index)
    ids = w.storage[node.inputs[1]]
    with for_range(b, outer, "outer") as o, for_range(b, taken, "id") as j:
        row = b.fptosi(b.load(b.gep(ids, [j], source_etype=w.t), typ=w.t), I64)
        table_row = b.mul(b.add(b.mul(o, i64(size)), row), inner)
        gathered_row = b.mul(b.add(b.mul(o, taken), j), inner)
        with for_range(b, inner, "inner") as n:
            body(b.add(table_row, n), b.add(gathered_row, n))


def take(w: EntryWriter, i: int, node: Node) -> None:
    table, index = (w.graph.nodes[j].shape for j in node.inputs)

    def body(at_table: ir.Value, at_out: ir.Value) -> None:
        value = w.b.load(w.b.gep(w.storage[node.inputs[0]], [at_table], source_etype=w.t),
                         typ=w.t)
        w.b.store(value, w.b.gep(w.storage[i], [at_out], source_etype=w.t))

    _gather_loops(w, node, table, index, body)


def take_grad(w: EntryWriter, i: int, node: Node) -> None:
    """Zeros, then each gathered row's adjoint added into its table row."""
    index = w.graph.nodes[node.inputs[1]].shape
    w.zero(w.storage[i], node.shape)

    def body(at_table: ir.Value, at_g: ir.Value) -> None:
        target = w.b.gep(w.storage[i], [at_table], source_etype=w.t)
        g = w.b.load(w.b.gep(w.storage[node.inputs[0]], [at_g], source_etype=w.t), typ=w.t)
        w.b.store(w.b.fadd(w.b.load(target, typ=w.t), g), target)

    _gather_loops(w, node, node.shape, index, body)


def batched_matmul(w: EntryWriter, i: int, node: Node) -> None:
    """One 2-D product per matrix of the output's batch (BLAS for large ones). A 1-D
    operand is a row or a column; an operand's batch dims align to the right of the
    output's, and step by 0 where it has 1 (broadcast)."""
    a, b = node.inputs
    a_shape, b_shape = w.graph.nodes[a].shape, w.graph.nodes[b].shape
    a_mat = (1, *a_shape) if len(a_shape) == 1 else a_shape
    b_mat = (*b_shape, 1) if len(b_shape) == 1 else b_shape
    rank = max(len(a_mat), len(b_mat)) - 2
    batch = node.shape[:rank]
    m, k = w.dims_of(a_mat[-2:])
    n = w.dims_of(b_mat[-1:])[0]
    sizes = {name: w.b.mul(*dims) for name, dims in
             (("a", (m, k)), ("b", (k, n)), ("out", (m, n)))}

    def steps(shape: Shape, matrix: ir.Value) -> list[ir.Value]:
        """Per output batch axis, how far this operand's matrix moves."""
        own = shape[:-2]
        padded = (1,) * (rank - len(own)) + tuple(own)
        dims = w.dims_of(padded)
        result, stride = [], matrix
        for a_ in range(rank - 1, -1, -1):
            result.append(i64(0) if padded[a_] == 1 else stride)
            stride = w.b.mul(stride, dims[a_])
        return result[::-1]

    a_steps, b_steps = steps(a_mat, sizes["a"]), steps(b_mat, sizes["b"])
    out_steps = steps((*batch, 0, 0), sizes["out"])

    def level(axis: int, at: dict[str, ir.Value]) -> None:
        if axis == rank:
            pointers = {name: w.b.gep(w.storage[j], [at[name]], source_etype=w.t)
                        for name, j in (("a", a), ("b", b), ("out", i))}
            if w.matmul.blas is None:
                w.matmul.call(w.b, pointers["out"], pointers["a"], pointers["b"], m, n, k,
                              k, i64(1))
                return
            with w.b.if_else(w.matmul.large(w.b, m, n, k, w.label(i))) as (large, small):
                with large:
                    w.matmul.call_blas(w.b, pointers["out"], pointers["a"], False,
                                       pointers["b"], False, m, n, k)
                with small:
                    w.matmul.call(w.b, pointers["out"], pointers["a"], pointers["b"], m, n,
                                  k, k, i64(1))
            return
        with for_range(w.b, w.dims_of(batch)[axis], f"batch{axis}") as index:
            level(axis + 1, {name: w.b.add(at[name], w.b.mul(index, step[axis]))
                             for name, step in (("a", a_steps), ("b", b_steps),
                                                ("out", out_steps))})

    w.functions.setdefault(i, []).append(w.matmul.function())
    level(0, {"a": i64(0), "b": i64(0), "out": i64(0)})
