"""The window kernels: im2col and col2im for the convolutions, max and average pooling and
their gradients.

Each is a kernel of the network's module, one per op and geometry, with the geometry as
constants: LLVM then unrolls the taps of a small window and drops the padding checks that
cannot fail, which a kernel taking the geometry at run time could not (measured: a 2x2 max
pool ran 4 times slower that way).

im2col and col2im walk rows of OW output positions. For each tap column `kw` they find once
the span of positions whose tap lands inside the input; inside it a stride-1 row is a vector
copy (or add), outside it the padding's zeros. Vectors are whole, with a scalar tail: masked
stores are microcoded on some CPUs (AMD's), several times slower than a plain store.
Pooling's padded taps read a cell holding -inf (max) or 0 (average) instead of branching: a
pointer select is a conditional move, while a float select in a loop becomes a branch that
the data mispredicts.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import astuple, dataclass
from typing import TYPE_CHECKING, Generic, TypeVar

from llvmlite import ir

from .loops import I64, PTR, for_range, i64, local

if TYPE_CHECKING:
    from .kernels import Kernels

V = TypeVar("V", int, ir.Value)
UNROLLED_TAPS = 16  # a pooling window of at most this many taps is written out tap by tap
UNROLLED_ROW = 8    # im2col and col2im write out the taps of a window row up to this many


@dataclass(frozen=True)
class Geometry(Generic[V]):
    """Every size of a convolution or pooling, as conv2d's (a 1-D op has height 1): ints,
    or the same as i64 constants inside a kernel (`constants`)."""

    channels: V
    height: V
    width: V
    outputs: V       # output channels (pooling: the channels)
    out_h: V
    out_w: V
    kernel_h: V
    kernel_w: V
    stride_h: V
    stride_w: V
    pad_h: V
    pad_w: V
    dilation_h: V
    dilation_w: V
    groups: V

    def constants(self) -> Geometry[ir.Value]:
        return Geometry(*(i64(value) for value in astuple(self)))

    def tiles(self) -> bool:
        """Whether the windows tile the input exactly: each element in one window."""
        return all(pad == 0 and stride == kernel and dilation == 1 and out * stride == size
                   for pad, out, stride, kernel, dilation, size in (
                       (self.pad_h, self.out_h, self.stride_h, self.kernel_h,
                        self.dilation_h, self.height),
                       (self.pad_w, self.out_w, self.stride_w, self.kernel_w,
                        self.dilation_w, self.width)))

    def always_inside(self) -> bool:
        """Whether every tap of every window reads the input (no padding is ever read)."""
        return all(pad == 0 and (out - 1) * stride + (kernel - 1) * dilation < size
                   for pad, out, stride, kernel, dilation, size in (
                       (self.pad_h, self.out_h, self.stride_h, self.kernel_h,
                        self.dilation_h, self.height),
                       (self.pad_w, self.out_w, self.stride_w, self.kernel_w,
                        self.dilation_w, self.width)))


KERNELS: dict[str, list[str]] = {  # name -> its pointer arguments, before the batch size
    "im2col": ["cols", "x"],
    "col2im": ["dx", "cols"],
    "max_pool": ["out", "x"],
    "max_pool_grad": ["dx", "x", "g"],
    "max_pool_where": ["out", "where", "x"],
    "max_pool_scatter": ["dx", "where", "g"],
    "max_pool_spread": ["dx", "where", "g"],
    "avg_pool": ["out", "x"],
    "avg_pool_grad": ["dx", "g"],
}


class WindowKernels:
    """Writes the window kernels' bodies for one geometry (`body(name)`) with the vector
    loops of `kernels`."""

    def __init__(self, kernels: Kernels, geometry: Geometry[int]):
        self.kernels = kernels
        self.lib = kernels.lib
        self.t = kernels.t
        self.itemsize = kernels.itemsize
        self.geometry = geometry
        self.inside = geometry.always_inside()
        self.unroll = geometry.kernel_h * geometry.kernel_w <= UNROLLED_TAPS

    def body(self, name: str) -> Callable[[ir.IRBuilder, dict], None]:
        return lambda b, arg: getattr(self, f"_{name}")(b, arg, self.geometry.constants())

    # ------------------------------------------------------------ helpers

    def _at(self, b: ir.IRBuilder, base: ir.Value, offset: ir.Value) -> ir.Value:
        return b.gep(base, [offset], source_etype=self.t)

    def _load(self, b: ir.IRBuilder, pointer: ir.Value) -> ir.Value:
        return b.load(pointer, typ=self.t)

    def _cell(self, b: ir.IRBuilder, value: float, name: str) -> ir.Value:
        """A local cell holding `value`: what a padded tap reads, or where it writes."""
        cell = local(b, self.t, name)
        b.store(ir.Constant(self.t, value), cell)
        return cell

    def _zero(self, b: ir.IRBuilder, target: ir.Value, count: ir.Value) -> None:
        memset = self.lib.intrinsic("llvm.memset", PTR, ir.IntType(8), I64, ir.IntType(1),
                                    result=ir.VoidType(), overload=(PTR, I64))
        b.call(memset, [target, ir.Constant(ir.IntType(8), 0),
                        b.mul(count, i64(self.itemsize)), ir.Constant(ir.IntType(1), 0)])

    def _inside(self, b: ir.IRBuilder, index: ir.Value, size: ir.Value) -> ir.Value:
        """0 <= index < size (one unsigned compare); known true where no padding is read."""
        if self.inside:
            return ir.Constant(ir.IntType(1), 1)
        return b.icmp_unsigned("<", index, size)

    def _span(self, b: ir.IRBuilder, g: Geometry, kw: ir.Value
              ) -> tuple[ir.Value, ir.Value, ir.Value]:
        """(offset, lo, hi) for tap column kw: position ow reads input column
        ow * stride + offset, which is inside the input exactly for lo <= ow < hi."""
        offset = b.sub(b.mul(kw, g.dilation_w), g.pad_w, name="offset")
        before = b.sdiv(b.add(b.sub(i64(0), offset), b.sub(g.stride_w, i64(1))), g.stride_w)
        lo = b.select(b.icmp_signed("<", offset, i64(0)), before, i64(0))
        lo = b.select(b.icmp_signed("<", lo, g.out_w), lo, g.out_w, name="lo")
        last = b.sub(b.sub(g.width, i64(1)), offset)
        hi = b.select(b.icmp_signed("<", last, i64(0)), i64(0),
                      b.add(b.sdiv(last, g.stride_w), i64(1)))
        hi = b.select(b.icmp_signed("<", hi, g.out_w), hi, g.out_w)
        hi = b.select(b.icmp_signed("<", hi, lo), lo, hi, name="hi")
        return offset, lo, hi

    def _rows(self, b: ir.IRBuilder, arg: dict, g: Geometry,
              row: Callable[[ir.Value, ir.Value, ir.Value, ir.Value, ir.Value, ir.Value], None],
              reads: bool) -> None:
        """row(columns row, input row, offset, lo, hi, inside) for every (tap, image, output
        row): the columns row holds OW positions, the input row's element
        ow * stride + offset is what position ow reads, and `inside` says whether that input
        row is inside the input at all (else the whole row reads padding). `reads` when
        the rows only read the input (im2col), not add into it (col2im)."""
        positions = b.mul(b.mul(arg["batch"], g.out_h), g.out_w, name="positions")
        taps = b.mul(g.kernel_h, g.kernel_w)

        def rows(c: ir.Value, kh: ir.Value, n: ir.Value, oh: ir.Value,
                 columns: Callable[[Callable[[ir.Value], None]], None]) -> None:
            ih = b.add(b.sub(b.mul(oh, g.stride_h), g.pad_h), b.mul(kh, g.dilation_h))
            plane = b.add(b.mul(n, g.channels), c)
            source = b.mul(b.add(b.mul(plane, g.height), ih), g.width)
            inside = self._inside(b, ih, g.height)
            position = b.mul(b.add(b.mul(n, g.out_h), oh), g.out_w)

            def column(kw: ir.Value) -> None:
                r = b.add(b.mul(c, taps), b.add(b.mul(kh, g.kernel_w), kw), name="r")
                offset, lo, hi = self._span(b, g, kw)
                row(b.add(b.mul(r, positions), position), source, offset, lo, hi, inside)

            columns(column)

        with for_range(b, g.channels, "c") as c, for_range(b, g.kernel_h, "kh") as kh:
            if reads:  # the taps of an input row one after another, each span constant
                with for_range(b, arg["batch"], "n") as n, for_range(b, g.out_h, "oh") as oh:
                    rows(c, kh, n, oh, lambda column: self._each(
                        b, g.kernel_w, "kw", column, g.kernel_w.constant <= UNROLLED_ROW))
            else:  # writes: taps one after another would add into one row, each waiting
                # for the last one's stores
                with for_range(b, g.kernel_w, "kw") as kw, \
                        for_range(b, arg["batch"], "n") as n, for_range(b, g.out_h, "oh") as oh:
                    rows(c, kh, n, oh, lambda column: column(kw))

    # ------------------------------------------------------------ im2col

    def _im2col(self, b: ir.IRBuilder, arg: dict, g: Geometry) -> None:
        """cols[r, n, oh, ow] = x[n, c, ih, iw], the input tap r = (c, kh, kw) of window
        (oh, ow) reads; 0 where it reads padding. Rows r of all channels, so group k's rows
        are the k-th block."""
        k = self.kernels
        zeros = {True: k.lib.ops(k.vt).const(0.0), False: ir.Constant(self.t, 0.0)}

        def fill(target: ir.Value, start: ir.Value, end: ir.Value) -> None:
            k.vector_loop(b, b.sub(end, start), lambda j, vector: k.store(
                b, zeros[vector], target, b.add(start, j)), "zero")

        def row(at: ir.Value, source: ir.Value, offset: ir.Value, lo: ir.Value, hi: ir.Value,
                inside: ir.Value) -> None:
            target = self._at(b, arg["cols"], at)
            with b.if_else(inside) as (then, padding):
                with then:
                    read = self._at(b, arg["x"], b.add(source, offset))
                    fill(target, i64(0), lo)
                    with b.if_else(b.icmp_signed("==", g.stride_w, i64(1))) as (dense, strided):
                        with dense:
                            k.vector_loop(b, b.sub(hi, lo), lambda j, vector: k.store(
                                b, k.load(b, read, b.add(lo, j), vector), target,
                                b.add(lo, j)), "copy")
                        with strided:
                            with for_range(b, hi, "ow", start=lo) as ow:
                                value = self._load(b, self._at(b, read, b.mul(ow, g.stride_w)))
                                b.store(value, self._at(b, target, ow))
                    fill(target, hi, g.out_w)
                with padding:
                    fill(target, i64(0), g.out_w)

        self._rows(b, arg, g, row, reads=True)

    def _col2im(self, b: ir.IRBuilder, arg: dict, g: Geometry) -> None:
        """dx = the sum, over the taps that read each input element, of their columns."""
        k = self.kernels
        self._zero(b, arg["dx"], b.mul(b.mul(arg["batch"], g.channels),
                                       b.mul(g.height, g.width)))

        def row(at: ir.Value, source: ir.Value, offset: ir.Value, lo: ir.Value, hi: ir.Value,
                inside: ir.Value) -> None:
            column = self._at(b, arg["cols"], at)
            target = self._at(b, arg["dx"], b.add(source, offset))
            with b.if_then(inside):
                with b.if_else(b.icmp_signed("==", g.stride_w, i64(1))) as (dense, strided):
                    with dense:
                        def add(j: ir.Value, vector: bool) -> None:
                            at = b.add(lo, j)
                            k.store(b, b.fadd(k.load(b, target, at, vector),
                                              k.load(b, column, at, vector)), target, at)
                        k.vector_loop(b, b.sub(hi, lo), add, "add")
                    with strided:
                        with for_range(b, hi, "ow", start=lo) as ow:
                            slot = self._at(b, target, b.mul(ow, g.stride_w))
                            b.store(b.fadd(self._load(b, slot),
                                           self._load(b, self._at(b, column, ow))), slot)

        self._rows(b, arg, g, row, reads=False)

    # ------------------------------------------------------------ pooling

    def _windows(self, b: ir.IRBuilder, arg: dict, g: Geometry,
                 window: Callable[[ir.Value, Callable], None]) -> None:
        """window(out_at, taps) for each output of each (image, channel) plane, where
        taps(tap) calls tap(x offset, inside) for each tap of the window in row-major
        order; the offset is 0 where the tap reads padding."""
        planes = b.mul(arg["batch"], g.channels)
        with for_range(b, planes, "plane") as plane, for_range(b, g.out_h, "oh") as oh, \
                for_range(b, g.out_w, "ow") as ow:
            out_at = b.add(b.mul(b.add(b.mul(plane, g.out_h), oh), g.out_w), ow)
            first = b.mul(plane, b.mul(g.height, g.width))

            def taps(tap: Callable[[ir.Value, ir.Value], None]) -> None:
                def row(kh: ir.Value) -> None:
                    ih = b.add(b.sub(b.mul(oh, g.stride_h), g.pad_h), b.mul(kh, g.dilation_h))
                    row_inside = self._inside(b, ih, g.height)

                    def column(kw: ir.Value) -> None:
                        iw = b.add(b.sub(b.mul(ow, g.stride_w), g.pad_w),
                                   b.mul(kw, g.dilation_w))
                        inside = b.and_(row_inside, self._inside(b, iw, g.width))
                        at = b.add(first, b.add(b.mul(ih, g.width), iw))
                        tap(b.select(inside, at, i64(0)), inside)

                    self._each(b, g.kernel_w, "kw", column)

                self._each(b, g.kernel_h, "kh", row)

            window(out_at, taps)

    def _each(self, b: ir.IRBuilder, count: ir.Value, name: str,
              body: Callable[[ir.Value], None], unrolled: bool | None = None) -> None:
        """body(k) for k in range(count): unrolled when the window is small (straight-line
        code that LLVM schedules across taps, where it keeps a loop of 2 as a loop)."""
        if self.unroll if unrolled is None else unrolled:
            for k in range(count.constant):
                body(i64(k))
            return
        with for_range(b, count, name) as k:
            body(k)

    def _read(self, b: ir.IRBuilder, base: ir.Value, at: ir.Value, inside: ir.Value,
              padding: ir.Value) -> ir.Value:
        return self._load(b, b.select(inside, self._at(b, base, at), padding))

    def _maximum(self, b: ir.IRBuilder, arg: dict, taps: Callable, floor: ir.Value
                 ) -> ir.Value:
        """The window's maximum (NaN if any tap is NaN), padding reading -inf."""
        best = local(b, self.t, "best")
        b.store(ir.Constant(self.t, -math.inf), best)
        maximum = self.lib.intrinsic("llvm.maximum", self.t, self.t)
        taps(lambda at, inside: b.store(b.call(maximum, [
            b.load(best, typ=self.t), self._read(b, arg["x"], at, inside, floor)]), best))
        return b.load(best, typ=self.t)

    def _max_pool(self, b: ir.IRBuilder, arg: dict, g: Geometry) -> None:
        floor = self._cell(b, -math.inf, "floor")
        self._windows(b, arg, g, lambda out_at, taps: b.store(
            self._maximum(b, arg, taps, floor), self._at(b, arg["out"], out_at)))

    def _max_pool_grad(self, b: ir.IRBuilder, arg: dict, g: Geometry) -> None:
        """Each window's gradient goes to its first maximum in row-major order (its first
        NaN, if it has one), as PyTorch and NumPy's argmax choose."""
        floor = self._cell(b, -math.inf, "floor")
        self._zero(b, arg["dx"], b.mul(b.mul(arg["batch"], g.channels),
                                       b.mul(g.height, g.width)))
        where = local(b, I64, "where")
        found = local(b, ir.IntType(1), "found")

        def window(out_at: ir.Value, taps: Callable) -> None:
            best = self._maximum(b, arg, taps, floor)
            b.store(i64(0), where)
            b.store(ir.Constant(ir.IntType(1), 0), found)

            def tap(at: ir.Value, inside: ir.Value) -> None:
                value = self._read(b, arg["x"], at, inside, floor)
                top = b.or_(b.fcmp_ordered("==", value, best),
                            b.fcmp_unordered("!=", value, value))
                seen = b.load(found, typ=ir.IntType(1))
                first = b.and_(b.and_(inside, top), b.not_(seen))
                b.store(b.select(first, at, b.load(where, typ=I64)), where)
                b.store(b.or_(seen, first), found)

            taps(tap)
            with b.if_then(b.load(found, typ=ir.IntType(1))):
                slot = self._at(b, arg["dx"], b.load(where, typ=I64))
                b.store(b.fadd(self._load(b, slot),
                               self._load(b, self._at(b, arg["g"], out_at))), slot)

        self._windows(b, arg, g, window)

    def _max_pool_where(self, b: ir.IRBuilder, arg: dict, g: Geometry) -> None:
        """max_pool that also writes, for each window, the x offset of its first maximum
        (its first NaN, if it has one), which max_pool_scatter then reads: the forward
        pass of a training step finds each maximum once."""
        floor = self._cell(b, -math.inf, "floor")
        best, where = local(b, self.t, "best"), local(b, I64, "where")
        maximum = self.lib.intrinsic("llvm.maximum", self.t, self.t)

        def window(out_at: ir.Value, taps: Callable) -> None:
            b.store(ir.Constant(self.t, -math.inf), best)
            b.store(i64(-1), where)

            def tap(at: ir.Value, inside: ir.Value) -> None:
                value, top = self._read(b, arg["x"], at, inside, floor), b.load(best, typ=self.t)
                nan_first = b.and_(b.fcmp_unordered("!=", value, value),
                                   b.fcmp_ordered("==", top, top))
                none_yet = b.icmp_signed("<", b.load(where, typ=I64), i64(0))
                better = b.or_(b.or_(b.fcmp_ordered(">", value, top), nan_first), none_yet)
                b.store(b.select(b.and_(inside, better), at, b.load(where, typ=I64)), where)
                b.store(b.call(maximum, [top, value]), best)

            taps(tap)
            b.store(b.load(best, typ=self.t), self._at(b, arg["out"], out_at))
            b.store(b.load(where, typ=I64), b.gep(arg["where"], [out_at], source_etype=I64))

        self._windows(b, arg, g, window)

    def _max_pool_scatter(self, b: ir.IRBuilder, arg: dict, g: Geometry) -> None:
        """dx[where[o]] += g[o] for every output o (max_pool_where found `where`)."""
        self._zero(b, arg["dx"], b.mul(b.mul(arg["batch"], g.channels),
                                       b.mul(g.height, g.width)))
        outputs = b.mul(b.mul(arg["batch"], g.channels), b.mul(g.out_h, g.out_w))
        with for_range(b, outputs, "o") as o:
            at = b.load(b.gep(arg["where"], [o], source_etype=I64), typ=I64)
            slot = self._at(b, arg["dx"], at)
            b.store(b.fadd(self._load(b, slot), self._load(b, self._at(b, arg["g"], o))),
                    slot)

    def _max_pool_spread(self, b: ir.IRBuilder, arg: dict, g: Geometry) -> None:
        """max_pool_scatter where the windows tile the input: each window's taps are set to
        0 and then its first maximum to g, so dx needs no zeroing first and nothing is read
        back. (Choosing g or 0 per tap instead becomes a branch, whatever the IR says:
        mispredicted at one tap in every window.)"""
        zero = ir.Constant(self.t, 0.0)

        def window(out_at: ir.Value, taps: Callable) -> None:
            taps(lambda at, inside: b.store(zero, self._at(b, arg["dx"], at)))
            where = b.load(b.gep(arg["where"], [out_at], source_etype=I64), typ=I64)
            b.store(self._load(b, self._at(b, arg["g"], out_at)), self._at(b, arg["dx"], where))

        self._windows(b, arg, g, window)

    def _avg_pool(self, b: ir.IRBuilder, arg: dict, g: Geometry) -> None:
        """The mean over the window, padding counted as zeros (as PyTorch's default)."""
        nothing = self._cell(b, 0.0, "nothing")
        total = local(b, self.t, "total")
        count = b.sitofp(b.mul(g.kernel_h, g.kernel_w), self.t)

        def window(out_at: ir.Value, taps: Callable) -> None:
            b.store(ir.Constant(self.t, 0.0), total)
            taps(lambda at, inside: b.store(b.fadd(
                b.load(total, typ=self.t), self._read(b, arg["x"], at, inside, nothing)),
                total))
            b.store(b.fdiv(b.load(total, typ=self.t), count), self._at(b, arg["out"], out_at))

        self._windows(b, arg, g, window)

    def _avg_pool_grad(self, b: ir.IRBuilder, arg: dict, g: Geometry) -> None:
        trash = self._cell(b, 0.0, "trash")  # where a padded tap's share goes
        self._zero(b, arg["dx"], b.mul(b.mul(arg["batch"], g.channels),
                                       b.mul(g.height, g.width)))
        count = b.sitofp(b.mul(g.kernel_h, g.kernel_w), self.t)

        def window(out_at: ir.Value, taps: Callable) -> None:
            share = b.fdiv(self._load(b, self._at(b, arg["g"], out_at)), count)

            def tap(at: ir.Value, inside: ir.Value) -> None:
                slot = b.select(inside, self._at(b, arg["dx"], at), trash)
                b.store(b.fadd(self._load(b, slot), share), slot)

            taps(tap)

        self._windows(b, arg, g, window)
