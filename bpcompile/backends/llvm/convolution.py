"""Convolutions and pooling as direct loop nests: for each output position, each kernel tap
that lands inside the (unpadded) input. A conv1d is the conv2d of a height-1 image, so one
nest serves both. The three convolution ops share the nest and differ in the statement at
its heart: the forward sums x * W into an output, the input gradient adds g * W into dx, the
weight gradient adds g * x into dW."""

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


Tap = Callable[[ir.Value, ir.Value, ir.Value], None]  # (x offset, kernel offset, out offset)


def _nest(w: EntryWriter, g: Geometry, batch: ir.Value, pooling: bool,
          at_output: Callable[[ir.Value], tuple[Callable, Callable]] | None, tap: Tap) -> None:
    """for n, o, oh, ow, c, kh, kw: `tap(x_at, k_at, out_at)` where the tap is inside the
    input (pooling: c is only 0, and output channel o reads input channel o).
    `at_output(out_at)` gives (before, after), run around each output's taps."""
    b = w.b
    channels_per_group = 1 if pooling else g.channels // g.groups
    outputs_per_group = g.outputs // g.groups
    with for_range(b, batch, "n") as n, for_range(b, i64(g.outputs), "o") as o, \
            for_range(b, i64(g.out_h), "oh") as oh, for_range(b, i64(g.out_w), "ow") as ow:
        out_at = b.add(b.mul(b.add(b.mul(b.add(b.mul(n, i64(g.outputs)), o), i64(g.out_h)),
                                   oh), i64(g.out_w)), ow)
        after = None
        if at_output is not None:
            before, after = at_output(out_at)
            before()
        group = b.sdiv(o, i64(outputs_per_group))
        with for_range(b, i64(channels_per_group), "c") as c, \
                for_range(b, i64(g.kernel_h), "kh") as kh, \
                for_range(b, i64(g.kernel_w), "kw") as kw:
            ih = b.add(b.sub(b.mul(oh, i64(g.stride[0])), i64(g.padding[0])),
                       b.mul(kh, i64(g.dilation[0])))
            iw = b.add(b.sub(b.mul(ow, i64(g.stride[1])), i64(g.padding[1])),
                       b.mul(kw, i64(g.dilation[1])))
            # one unsigned compare per axis: a negative index is a huge unsigned one
            inside = b.and_(b.icmp_unsigned("<", ih, i64(g.height)),
                            b.icmp_unsigned("<", iw, i64(g.width)))
            with b.if_then(inside):
                # pooling reads its own channel; a convolution its group's channels
                channel = o if pooling else b.add(b.mul(group, i64(channels_per_group)), c)
                x_at = b.add(b.mul(b.add(b.mul(b.add(b.mul(n, i64(g.channels)), channel),
                                                 i64(g.height)), ih), i64(g.width)), iw)
                k_at = b.add(b.mul(b.add(b.mul(b.add(b.mul(o, i64(channels_per_group)), c),
                                                 i64(g.kernel_h)), kh), i64(g.kernel_w)), kw)
                tap(x_at, k_at, out_at)
        if after is not None:
            after()


def _load(w: EntryWriter, pointer: ir.Value, at: ir.Value) -> ir.Value:
    return w.b.load(w.b.gep(pointer, [at], source_etype=w.t), typ=w.t)


def _add_into(w: EntryWriter, pointer: ir.Value, at: ir.Value, value: ir.Value) -> None:
    slot = w.b.gep(pointer, [at], source_etype=w.t)
    w.b.store(w.b.fadd(w.b.load(slot, typ=w.t), value), slot)


def _batch(w: EntryWriter, node: Node) -> ir.Value:
    return w.dims_of(node.shape[:1])[0]


def conv(w: EntryWriter, i: int, node: Node) -> None:
    g = geometry(w, node)
    x, k = (w.storage[j] for j in node.inputs)
    total = w.b.alloca(w.t, name="conv.sum")

    def at_output(out_at: ir.Value) -> tuple[Callable, Callable]:
        return (lambda: w.b.store(ir.Constant(w.t, 0.0), total),
                lambda: w.b.store(w.b.load(total, typ=w.t),
                                  w.b.gep(w.storage[i], [out_at], source_etype=w.t)))

    def tap(x_at: ir.Value, k_at: ir.Value, out_at: ir.Value) -> None:
        product = w.b.fmul(_load(w, x, x_at), _load(w, k, k_at))
        w.b.store(w.b.fadd(w.b.load(total, typ=w.t), product), total)

    _nest(w, g, _batch(w, node), False, at_output, tap)


def conv_input_grad(w: EntryWriter, i: int, node: Node) -> None:
    g = geometry(w, node)
    adjoint, k = (w.storage[j] for j in node.inputs)
    w.zero(w.storage[i], node.shape)
    _nest(w, g, _batch(w, node), False, None,
          lambda x_at, k_at, out_at: _add_into(
              w, w.storage[i], x_at, w.b.fmul(_load(w, adjoint, out_at), _load(w, k, k_at))))


def conv_weight_grad(w: EntryWriter, i: int, node: Node) -> None:
    g = geometry(w, node)
    x, adjoint = (w.storage[j] for j in node.inputs)
    w.zero(w.storage[i], node.shape)
    batch = w.dims_of(w.graph.nodes[node.inputs[0]].shape[:1])[0]
    _nest(w, g, batch, False, None,
          lambda x_at, k_at, out_at: _add_into(
              w, w.storage[i], k_at, w.b.fmul(_load(w, adjoint, out_at), _load(w, x, x_at))))


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

    def tap(x_at: ir.Value, k_at: ir.Value, out_at: ir.Value) -> None:
        value, top = _load(w, x, x_at), b.load(best, typ=w.t)
        first = b.icmp_signed("<", b.load(where, typ=I64), i64(0))
        better = b.or_(first, b.or_(b.fcmp_ordered(">", value, top),
                                    b.and_(b.fcmp_unordered("!=", value, value),
                                           b.fcmp_ordered("==", top, top))))
        b.store(b.select(better, value, top), best)
        b.store(b.select(better, x_at, b.load(where, typ=I64)), where)

    _nest(w, g, batch, True, at_output, tap)


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

    _nest(w, g, _batch(w, node), True, at_output, lambda x_at, k_at, out_at: w.b.store(
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
    _nest(w, g, batch, True, None, lambda x_at, k_at, out_at: _add_into(
        w, dx, x_at, w.b.fmul(_load(w, adjoint, out_at), share)))
