"""Convolutions as im2col and the register-blocked matmul, pooling as direct loop nests
(for each output position, each window tap that lands inside the unpadded input). A conv1d
is the conv2d of a height-1 image, so one code path serves both."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from llvmlite import ir

from ...graph.ir import Node, Op
from .entry import EntryWriter
from .loops import I64, for_range, i64


@dataclass(frozen=True)
class Geometry:
    """Every size of a convolution or pooling, as conv2d's (a 1-D op has height 1)."""

    channels: int
    height: int
    width: int
    outputs: int     # output channels (pooling: the channels)
    out_h: int
    out_w: int
    kernel_h: int
    kernel_w: int
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    groups: int


def _as_2d(values: tuple[int, ...], fill: int) -> tuple[int, int]:
    return (fill, *values) if len(values) == 1 else tuple(values)  # type: ignore[return-value]


def geometry(w: EntryWriter, node: Node) -> Geometry:
    """The sizes of `node`, a CONV-family or POOL-family node."""
    if node.op in (Op.POOL, Op.POOL_GRAD):
        x_shape = w.graph.nodes[node.inputs[0]].shape
        _, kernel, stride, padding = node.attrs
        dilation, groups, outputs = (1,) * len(kernel), 1, x_shape[1]
        out = w.graph.nodes[node.inputs[1]].shape if node.op is Op.POOL_GRAD else node.shape
    else:
        stride, padding, dilation, groups = node.attrs
        x_shape, k_shape, out = {
            Op.CONV: lambda a, b: (a, b, node.shape),
            Op.CONV_INPUT_GRAD: lambda g, k: (node.shape, k, g),
            Op.CONV_WEIGHT_GRAD: lambda x, g: (x, node.shape, g),
        }[node.op](*(w.graph.nodes[j].shape for j in node.inputs))
        kernel, outputs = k_shape[2:], k_shape[0]
    height, width = _as_2d(x_shape[2:], 1)
    out_h, out_w = _as_2d(out[2:], 1)
    kernel_h, kernel_w = _as_2d(kernel, 1)
    return Geometry(x_shape[1], height, width, outputs, out_h, out_w, kernel_h, kernel_w,
                    _as_2d(stride, 1), _as_2d(padding, 0), _as_2d(dilation, 1), groups)


Tap = Callable[[ir.Value, ir.Value], None]  # (input offset, output offset)


def _source(b: ir.IRBuilder, g: Geometry, oh: ir.Value, ow: ir.Value, kh: ir.Value,
            kw: ir.Value) -> tuple[ir.Value, ir.Value, ir.Value]:
    """(row, column, inside) of the input that tap (kh, kw) of window (oh, ow) reads; one
    unsigned compare per axis tells padding apart, as a negative index is a huge unsigned
    one."""
    ih = b.add(b.sub(b.mul(oh, i64(g.stride[0])), i64(g.padding[0])),
               b.mul(kh, i64(g.dilation[0])))
    iw = b.add(b.sub(b.mul(ow, i64(g.stride[1])), i64(g.padding[1])),
               b.mul(kw, i64(g.dilation[1])))
    inside = b.and_(b.icmp_unsigned("<", ih, i64(g.height)),
                    b.icmp_unsigned("<", iw, i64(g.width)))
    return ih, iw, inside


def _windows(w: EntryWriter, g: Geometry, batch: ir.Value,
             at_output: Callable[[ir.Value], tuple[Callable, Callable]] | None,
             tap: Tap) -> None:
    """Pooling's nest: for n, channel o, oh, ow, kh, kw: `tap(x_at, out_at)` where the tap
    is inside the input. `at_output(out_at)` gives (before, after), run around each
    output's taps."""
    b = w.b
    with for_range(b, batch, "n") as n, for_range(b, i64(g.outputs), "o") as o, \
            for_range(b, i64(g.out_h), "oh") as oh, for_range(b, i64(g.out_w), "ow") as ow:
        out_at = b.add(b.mul(b.add(b.mul(b.add(b.mul(n, i64(g.outputs)), o), i64(g.out_h)),
                                   oh), i64(g.out_w)), ow)
        plane = b.mul(b.add(b.mul(n, i64(g.channels)), o), i64(g.height * g.width))
        after = None
        if at_output is not None:
            before, after = at_output(out_at)
            before()
        with for_range(b, i64(g.kernel_h), "kh") as kh, \
                for_range(b, i64(g.kernel_w), "kw") as kw:
            ih, iw, inside = _source(b, g, oh, ow, kh, kw)
            with b.if_then(inside):
                tap(b.add(plane, b.add(b.mul(ih, i64(g.width)), iw)), out_at)
        if after is not None:
            after()


def _load(w: EntryWriter, pointer: ir.Value, at: ir.Value) -> ir.Value:
    return w.b.load(w.b.gep(pointer, [at], source_etype=w.t), typ=w.t)


def _add_into(w: EntryWriter, pointer: ir.Value, at: ir.Value, value: ir.Value) -> None:
    slot = w.b.gep(pointer, [at], source_etype=w.t)
    w.b.store(w.b.fadd(w.b.load(slot, typ=w.t), value), slot)


def _batch(w: EntryWriter, node: Node) -> ir.Value:
    return w.dims_of(node.shape[:1])[0]


# ------------------------------------------------------------------ convolutions
#
# As im2col and the register-blocked matmul: for each image and group, the values each
# window reads are laid out as the columns of a matrix (one row per tap of each input
# channel: r = (c * KH + kh) * KW + kw; one column per output position: q = oh * OW + ow),
# and the convolution is W_group [O/groups, R] @ cols [R, Q]. The weight gradient is
# g [O/groups, Q] @ cols^T, the input gradient W_group^T @ g scattered back (col2im).


def _taps(w: EntryWriter, g: Geometry, image: ir.Value, channel0: ir.Value,
          visit: Callable[[ir.Value, ir.Value, ir.Value, ir.Value], None]) -> None:
    """visit(r, q, x offset, inside) for every tap r of every window q of one image's group
    of channels (from channel0); `inside` is false where the tap reads padding, and the
    offset is then a safe 0, so no branch is needed."""
    b = w.b
    per_group = g.channels // g.groups
    with for_range(b, i64(per_group), "c") as c, for_range(b, i64(g.kernel_h), "kh") as kh, \
            for_range(b, i64(g.kernel_w), "kw") as kw:
        r = b.add(b.mul(b.add(b.mul(c, i64(g.kernel_h)), kh), i64(g.kernel_w)), kw)
        plane = b.mul(b.add(b.mul(image, i64(g.channels)), b.add(channel0, c)),
                      i64(g.height * g.width))
        with for_range(b, i64(g.out_h), "oh") as oh, for_range(b, i64(g.out_w), "ow") as ow:
            ih, iw, inside = _source(b, g, oh, ow, kh, kw)
            at = b.select(inside, b.add(plane, b.add(b.mul(ih, i64(g.width)), iw)), i64(0))
            q = b.add(b.mul(oh, i64(g.out_w)), ow)
            visit(r, q, at, inside)


def _im2col(w: EntryWriter, g: Geometry, x: ir.Value, image: ir.Value, channel0: ir.Value,
            cols: ir.Value, transposed: bool) -> None:
    """cols[r, q] (or cols[q, r]) = the input each tap reads, 0 in the padding."""
    rows, positions = _sizes(g)
    zero = ir.Constant(w.t, 0.0)

    def visit(r: ir.Value, q: ir.Value, at: ir.Value, inside: ir.Value) -> None:
        value = w.b.select(inside, _load(w, x, at), zero)
        place = w.b.add(w.b.mul(q, i64(rows)), r) if transposed else \
            w.b.add(w.b.mul(r, i64(positions)), q)
        w.b.store(value, w.b.gep(cols, [place], source_etype=w.t))

    _taps(w, g, image, channel0, visit)


def _sizes(g: Geometry) -> tuple[int, int]:
    """(R, Q): taps per group of channels, and output positions."""
    return g.channels // g.groups * g.kernel_h * g.kernel_w, g.out_h * g.out_w


def _at(w: EntryWriter, pointer: ir.Value, offset: ir.Value) -> ir.Value:
    return w.b.gep(pointer, [offset], source_etype=w.t)


def _each_image_and_group(w: EntryWriter, g: Geometry, batch: ir.Value,
                          body: Callable[[ir.Value, ir.Value], None]) -> None:
    with for_range(w.b, batch, "n") as n, for_range(w.b, i64(g.groups), "group") as group:
        body(n, group)


def conv(w: EntryWriter, i: int, node: Node) -> None:
    g = geometry(w, node)
    x, k = (w.storage[j] for j in node.inputs)
    rows, positions = _sizes(g)
    outputs = g.outputs // g.groups
    cols = w.allocate((rows, positions), f"{w.label(i)}.cols")

    def body(n: ir.Value, group: ir.Value) -> None:
        b = w.b
        _im2col(w, g, x, n, b.mul(group, i64(g.channels // g.groups)), cols, False)
        first = b.add(b.mul(n, i64(g.outputs)), b.mul(group, i64(outputs)))
        w.matmul.call(b, _at(w, w.storage[i], b.mul(first, i64(positions))),
                      _at(w, k, b.mul(group, i64(outputs * rows))), cols,
                      i64(outputs), i64(positions), i64(rows), i64(rows), i64(1))

    w.functions.setdefault(i, []).append(w.matmul.function())
    _each_image_and_group(w, g, _batch(w, node), body)


def conv_weight_grad(w: EntryWriter, i: int, node: Node) -> None:
    """dW_group += g [O/groups, Q] @ cols^T [Q, R], image by image."""
    g = geometry(w, node)
    x, adjoint = (w.storage[j] for j in node.inputs)
    rows, positions = _sizes(g)
    outputs = g.outputs // g.groups
    cols = w.allocate((positions, rows), f"{w.label(i)}.cols")
    part = w.allocate((outputs, rows), f"{w.label(i)}.part")
    w.zero(w.storage[i], node.shape)

    def body(n: ir.Value, group: ir.Value) -> None:
        b = w.b
        _im2col(w, g, x, n, b.mul(group, i64(g.channels // g.groups)), cols, True)
        first = b.add(b.mul(n, i64(g.outputs)), b.mul(group, i64(outputs)))
        w.matmul.call(b, part, _at(w, adjoint, b.mul(first, i64(positions))), cols,
                      i64(outputs), i64(rows), i64(positions), i64(positions), i64(1))
        start = b.mul(group, i64(outputs * rows))
        with for_range(b, i64(outputs * rows), "e") as e:
            _add_into(w, w.storage[i], b.add(start, e), _load(w, part, e))

    w.functions.setdefault(i, []).append(w.matmul.function())
    _each_image_and_group(w, g, w.dims_of(w.graph.nodes[node.inputs[0]].shape[:1])[0], body)


def conv_input_grad(w: EntryWriter, i: int, node: Node) -> None:
    """cols = W_group^T [R, O/groups] @ g [O/groups, Q], then each column's taps added back
    where they read (col2im)."""
    g = geometry(w, node)
    adjoint, k = (w.storage[j] for j in node.inputs)
    rows, positions = _sizes(g)
    outputs = g.outputs // g.groups
    cols = w.allocate((rows, positions), f"{w.label(i)}.cols")
    dx = w.storage[i]
    w.zero(dx, node.shape)
    zero = ir.Constant(w.t, 0.0)

    def body(n: ir.Value, group: ir.Value) -> None:
        b = w.b
        first = b.add(b.mul(n, i64(g.outputs)), b.mul(group, i64(outputs)))
        # A[r, o] = W_group[o, r]: one step down A's rows is one element, across its
        # columns a row of W
        w.matmul.call(b, cols, _at(w, k, b.mul(group, i64(outputs * rows))),
                      _at(w, adjoint, b.mul(first, i64(positions))),
                      i64(rows), i64(positions), i64(outputs), i64(1), i64(rows))

        def visit(r: ir.Value, q: ir.Value, at: ir.Value, inside: ir.Value) -> None:
            value = _load(w, cols, b.add(b.mul(r, i64(positions)), q))
            _add_into(w, dx, at, b.select(inside, value, zero))  # padding adds 0 to dx[0]

        _taps(w, g, n, b.mul(group, i64(g.channels // g.groups)), visit)

    w.functions.setdefault(i, []).append(w.matmul.function())
    _each_image_and_group(w, g, _batch(w, node), body)


def _first_maximum(w: EntryWriter, g: Geometry, x: ir.Value, batch: ir.Value,
                   found: Callable[[ir.Value, ir.Value, ir.Value], None]) -> None:
    """For each window: `found(out_at, best value, x offset of the first maximum)`, in
    row-major order of the window, a NaN counting as the maximum (as NumPy's argmax)."""
    b = w.b
    best = b.alloca(w.t, name="pool.best")
    where = b.alloca(I64, name="pool.where")

    def at_output(out_at: ir.Value) -> tuple[Callable, Callable]:
        def before() -> None:
            b.store(ir.Constant(w.t, float("-inf")), best)
            b.store(i64(-1), where)

        def after() -> None:
            found(out_at, b.load(best, typ=w.t), b.load(where, typ=I64))
        return before, after

    def tap(x_at: ir.Value, out_at: ir.Value) -> None:
        value, top = _load(w, x, x_at), b.load(best, typ=w.t)
        first = b.icmp_signed("<", b.load(where, typ=I64), i64(0))
        better = b.or_(first, b.or_(b.fcmp_ordered(">", value, top),
                                    b.and_(b.fcmp_unordered("!=", value, value),
                                           b.fcmp_ordered("==", top, top))))
        b.store(b.select(better, value, top), best)
        b.store(b.select(better, x_at, b.load(where, typ=I64)), where)

    _windows(w, g, batch, at_output, tap)


def pool(w: EntryWriter, i: int, node: Node) -> None:
    g = geometry(w, node)
    x = w.storage[node.inputs[0]]
    out = w.storage[i]
    if node.attrs[0] == "max":
        _first_maximum(w, g, x, _batch(w, node), lambda out_at, top, where: w.b.store(
            top, w.b.gep(out, [out_at], source_etype=w.t)))
        return
    total = w.b.alloca(w.t, name="pool.sum")
    count = ir.Constant(w.t, float(g.kernel_h * g.kernel_w))  # padding counted, as PyTorch

    def at_output(out_at: ir.Value) -> tuple[Callable, Callable]:
        return (lambda: w.b.store(ir.Constant(w.t, 0.0), total),
                lambda: w.b.store(w.b.fdiv(w.b.load(total, typ=w.t), count),
                                  w.b.gep(out, [out_at], source_etype=w.t)))

    _windows(w, g, _batch(w, node), at_output, lambda x_at, out_at: w.b.store(
        w.b.fadd(w.b.load(total, typ=w.t), _load(w, x, x_at)), total))


def pool_grad(w: EntryWriter, i: int, node: Node) -> None:
    g = geometry(w, node)
    x, adjoint = (w.storage[j] for j in node.inputs)
    dx = w.storage[i]
    w.zero(dx, node.shape)
    batch = _batch(w, node)
    if node.attrs[0] == "max":
        def found(out_at: ir.Value, top: ir.Value, where: ir.Value) -> None:
            with w.b.if_then(w.b.icmp_signed(">=", where, i64(0))):
                _add_into(w, dx, where, _load(w, adjoint, out_at))
        _first_maximum(w, g, x, batch, found)
        return
    share = ir.Constant(w.t, 1.0 / (g.kernel_h * g.kernel_w))
    _windows(w, g, batch, None, lambda x_at, out_at: _add_into(
        w, dx, x_at, w.b.fmul(_load(w, adjoint, out_at), share)))
