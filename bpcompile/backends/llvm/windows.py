"""The window kernels: im2col and col2im for the convolutions here, max and average pooling
and their gradients in pooling.py, on the helpers of `WindowKernels`.

Each is a kernel of the network's module, one per op and geometry, with the geometry as
constants: LLVM then unrolls the taps of a small window and drops the padding checks that
cannot fail, which a kernel taking the geometry at run time could not (measured: a 2x2 max
pool ran 4 times slower that way).

im2col and col2im walk rows of OW output positions. For each tap column `kw` they find once
the span of positions whose tap lands inside the input; inside it a stride-1 row is a vector
copy (or add), outside it the padding's zeros. Vectors are whole, with a scalar tail: masked
stores are microcoded on some CPUs (AMD's), several times slower than a plain store.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import astuple, dataclass
from typing import TYPE_CHECKING, Generic, TypeVar

from llvmlite import ir

from .loops import for_range, i64, local

if TYPE_CHECKING:
    from .kernels import Kernels

V = TypeVar("V", int, ir.Value)
UNROLLED_ROW = 8  # im2col and col2im write out the taps of a window row up to this many


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

    def axes(self) -> tuple[tuple[V, V, V, V, V, V], ...]:
        """(padding, output size, stride, kernel size, dilation, input size) per axis."""
        return ((self.pad_h, self.out_h, self.stride_h, self.kernel_h, self.dilation_h,
                 self.height),
                (self.pad_w, self.out_w, self.stride_w, self.kernel_w, self.dilation_w,
                 self.width))

    def tiles(self) -> bool:
        """Whether the windows tile the input exactly: each element in one window."""
        return all(pad == 0 and stride == kernel and dilation == 1 and out * stride == size
                   for pad, out, stride, kernel, dilation, size in self.axes())

    def always_inside(self) -> bool:
        """Whether every tap of every window reads the input (no padding is ever read)."""
        return all(pad == 0 and (out - 1) * stride + (kernel - 1) * dilation < size
                   for pad, out, stride, kernel, dilation, size in self.axes())


Args = dict[str, ir.Value]  # a kernel's arguments by name
KERNELS: dict[str, list[str]] = {  # name -> its pointer arguments, before the batch size
    "im2col": ["cols", "x"],
    "col2im": ["dx", "cols"],
}
# kernels that also take (first, last): which units they do, so that threads divide them.
# im2col: input channels (each a block of the columns' rows, over every image); col2im:
# images (each a block of every row of the columns, and one image of dx).
RANGES = {"im2col": "channels", "col2im": "images"}


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

    def body(self, name: str) -> Callable[[ir.IRBuilder, Args], None]:
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
        self.lib.zero_bytes(b, target, b.mul(count, i64(self.itemsize)))

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

    def _rows(self, b: ir.IRBuilder, arg: Args, g: Geometry,
              row: Callable[[ir.Value, ir.Value, ir.Value, ir.Value, ir.Value, ir.Value], None],
              reads: bool) -> None:
        """row(columns row, input row, offset, lo, hi, inside) for every (tap, image, output
        row): the columns row holds OW positions, the input row's element
        ow * stride + offset is what position ow reads, and `inside` says whether that input
        row is inside the input at all (else the whole row reads padding). `reads` when
        the rows only read the input (im2col), not add into it (col2im). The channels or
        the images are those from arg["first"] to arg["last"], as RANGES says."""
        positions = b.mul(b.mul(arg["batch"], g.out_h), g.out_w, name="positions")
        channels, images = (i64(0), g.channels), (i64(0), arg["batch"])
        if "first" in arg:
            if reads:
                channels = arg["first"], arg["last"]
            else:
                images = arg["first"], arg["last"]
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

        with for_range(b, channels[1], "c", start=channels[0]) as c, \
                for_range(b, g.kernel_h, "kh") as kh:
            if reads:  # the taps of an input row one after another, each span constant
                with for_range(b, images[1], "n", start=images[0]) as n, \
                        for_range(b, g.out_h, "oh") as oh:
                    rows(c, kh, n, oh, lambda column: self._each(
                        b, g.kernel_w, "kw", column, g.kernel_w.constant <= UNROLLED_ROW))
            else:  # writes: taps one after another would add into one row, each waiting
                # for the last one's stores
                with for_range(b, g.kernel_w, "kw") as kw, \
                        for_range(b, images[1], "n", start=images[0]) as n, \
                        for_range(b, g.out_h, "oh") as oh:
                    rows(c, kh, n, oh, lambda column: column(kw))

    def _each(self, b: ir.IRBuilder, count: ir.Value, name: str,
              body: Callable[[ir.Value], None], unrolled: bool) -> None:
        """body(k) for k in range(count), written out when `unrolled` (straight-line code
        that LLVM schedules across taps, where it keeps a loop of 2 as a loop)."""
        if unrolled:
            for k in range(count.constant):
                body(i64(k))
            return
        with for_range(b, count, name) as k:
            body(k)

    # ------------------------------------------------------------ im2col

    def _im2col(self, b: ir.IRBuilder, arg: Args, g: Geometry) -> None:
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

    def _col2im(self, b: ir.IRBuilder, arg: Args, g: Geometry) -> None:
        """dx = the sum, over the taps that read each input element, of their columns, for
        images first to last."""
        k = self.kernels
        image = b.mul(g.channels, b.mul(g.height, g.width))
        self._zero(b, self._at(b, arg["dx"], b.mul(arg["first"], image)),
                   b.mul(b.sub(arg["last"], arg["first"]), image))

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
