"""Direct convolutions, for layers whose windows are small (few input channels, as the
first layer over images): the forward pass and the weight gradient as loop nests on
vectors along each output row, with no columns at all.

im2col writes every input value KH*KW times before a product with a short inner dimension
reads them back once; for such layers the copies, and a product too thin for BLAS to pack
well, cost several times the arithmetic (measured on LeNet-5's first layer, 1 channel and
5x5 windows: about 2 ms a step against 0.5 ms direct). Direct code reads each input row
from cache once per tap.

The input is first copied into rows padded with zeros (`padded`): PW zeros on the left, and
on the right as many as let every vector load of a tap stay inside its row, so the inner
loops need no bounds checks across the width; rows of padding in the height are skipped.
Output rows go a vector of positions at a time, a chunk of up to CHUNK vectors held in
registers across all the taps; the last vector of a row stores only the positions the row
has.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from llvmlite import ir

from .loops import PTR, for_range, i64, local
from .windows import Geometry

if TYPE_CHECKING:
    from .kernels import Kernels

CHUNK = 4          # output vectors per row held in registers at once
MAX_TAPS = 64      # a layer is direct when one group's window has at most this many taps
MAX_KERNEL_W = 8   # ... and its width fits the weight gradient's accumulators


def suits(g: Geometry[int]) -> bool:
    """Whether this convolution goes direct (else im2col and a matrix product)."""
    return (g.stride_w == 1 and g.kernel_w <= MAX_KERNEL_W
            and g.channels // g.groups * g.kernel_h * g.kernel_w <= MAX_TAPS)


def padded_width(g: Geometry[int], lanes: int) -> int:
    """The padded row: room for the left padding, the row, and the last vector of the last
    tap."""
    vectors = -(-g.out_w // lanes)
    return max(g.pad_w + g.width, vectors * lanes + (g.kernel_w - 1) * g.dilation_w)


KERNELS: dict[str, list[str]] = {  # name -> its pointer arguments, before the batch size
    "padded": ["xpad", "x"],
    "direct_conv": ["out", "xpad", "w"],
    "direct_weight_grad": ["dw", "xpad", "g"],
}
# kernels that also take (first, last): the output channels they compute, so that threads
# divide the channels (each a sum over every image) rather than the images
BY_OUTPUT = {"direct_weight_grad"}


class DirectKernels:
    """Writes the direct kernels' bodies for one geometry with the vectors of `kernels`."""

    def __init__(self, kernels: Kernels, g: Geometry[int]):
        self.k = kernels
        self.g = g
        self.t = kernels.t
        self.lanes = kernels.lanes
        self.vectors = -(-g.out_w // self.lanes)
        self.row = padded_width(g, self.lanes)

    def body(self, name: str) -> Callable[[ir.IRBuilder, dict], None]:
        return lambda b, arg: getattr(self, f"_{name}")(b, arg)

    def _at(self, b: ir.IRBuilder, base: ir.Value, offset: ir.Value) -> ir.Value:
        return b.gep(base, [offset], source_etype=self.t)

    def _fma(self, b: ir.IRBuilder, x: ir.Value, y: ir.Value, z: ir.Value) -> ir.Value:
        return b.call(self.k.lib.intrinsic("llvm.fma", self.k.vt, self.k.vt, self.k.vt),
                      [x, y, z])

    def _input_row(self, b: ir.IRBuilder, n: ir.Value, c: ir.Value, oh: ir.Value,
                   kh: ir.Value, inside: Callable[[ir.Value], None]) -> None:
        """inside(offset of the padded input row) when tap row kh of output row oh reads a
        row of the input (not padding)."""
        g = self.g
        ih = b.add(b.sub(b.mul(oh, i64(g.stride_h)), i64(g.pad_h)), b.mul(kh, i64(g.dilation_h)))
        with b.if_then(b.icmp_unsigned("<", ih, i64(g.height))):
            plane = b.add(b.mul(n, i64(g.channels)), c)
            inside(b.mul(b.add(b.mul(plane, i64(g.height)), ih), i64(self.row)))

    def _padded(self, b: ir.IRBuilder, arg: dict) -> None:
        """xpad[n, c, h, PW + j] = x[n, c, h, j], zeros around."""
        g, k = self.g, self.k
        rows = b.mul(arg["batch"], i64(g.channels * g.height))
        k.lib.zero_bytes(b, arg["xpad"], b.mul(rows, i64(self.row * k.itemsize)))
        with for_range(b, rows, "row") as r:
            target = self._at(b, arg["xpad"], b.add(b.mul(r, i64(self.row)), i64(g.pad_w)))
            k.lib.copy_bytes(b, target, self._at(b, arg["x"], b.mul(r, i64(g.width))),
                             i64(g.width * k.itemsize))

    def _taps(self, b: ir.IRBuilder, o: ir.Value, n: ir.Value, oh: ir.Value,
              tap: Callable[[ir.Value, ir.Value, ir.Value], None]) -> None:
        """tap(weight offset, padded row offset, kw) for each tap of output channel o that
        reads the input, for output row oh of image n."""
        g = self.g
        per_group = g.channels // g.groups
        first = b.mul(b.sdiv(o, i64(g.outputs // g.groups)), i64(per_group))
        with for_range(b, i64(per_group), "c") as c, \
                for_range(b, i64(g.kernel_h), "kh") as kh:
            weights = b.mul(b.add(b.mul(b.add(b.mul(o, i64(per_group)), c),
                                        i64(g.kernel_h)), kh), i64(g.kernel_w))

            def row(at: ir.Value) -> None:
                for kw in range(g.kernel_w):
                    tap(b.add(weights, i64(kw)), at, i64(kw * g.dilation_w))

            self._input_row(b, n, b.add(first, c), oh, kh, row)

    def _chunks(self) -> list[tuple[int, int]]:
        """(first vector, vectors) of each chunk of an output row."""
        return [(v, min(CHUNK, self.vectors - v)) for v in range(0, self.vectors, CHUNK)]

    def _direct_conv(self, b: ir.IRBuilder, arg: dict) -> None:
        """out[n, o, oh, ow] = sum over (c, kh, kw) of w[o, c, kh, kw] * the input it reads."""
        g, k = self.g, self.k
        zero = k.lib.ops(k.vt).const(0.0)
        with for_range(b, arg["batch"], "n") as n, for_range(b, i64(g.outputs), "o") as o, \
                for_range(b, i64(g.out_h), "oh") as oh:
            out_row = b.mul(b.add(b.mul(b.add(b.mul(n, i64(g.outputs)), o), i64(g.out_h)), oh),
                            i64(g.out_w))
            for start, count in self._chunks():
                sums = [local(b, k.vt, f"sum{j}") for j in range(count)]
                for total in sums:
                    b.store(zero, total)

                def tap(weight: ir.Value, at: ir.Value, shift: ir.Value) -> None:
                    w = k.splat(b, k.load(b, arg["w"], weight, False))
                    for j, total in enumerate(sums):
                        column = b.add(at, b.add(shift, i64((start + j) * self.lanes)))
                        x = k.load(b, arg["xpad"], column, True)
                        b.store(self._fma(b, w, x, b.load(total, typ=k.vt)), total)

                self._taps(b, o, n, oh, tap)
                for j, total in enumerate(sums):
                    self._store_row(b, arg["out"], out_row, start + j, b.load(total, typ=k.vt))

    def _store_row(self, b: ir.IRBuilder, out: ir.Value, row: ir.Value, vector: int,
                   value: ir.Value) -> None:
        """Store output vector `vector` of a row: whole, or the positions the row has."""
        first = vector * self.lanes
        if first + self.lanes <= self.g.out_w:
            self.k.store(b, value, out, b.add(row, i64(first)))
            return
        for lane in range(self.g.out_w - first):
            b.store(b.extract_element(value, i64(lane)),
                    self._at(b, out, b.add(row, i64(first + lane))))

    def _direct_weight_grad(self, b: ir.IRBuilder, arg: dict) -> None:
        """dw[o, c, kh, kw] = sum over (n, oh, ow) of g[n, o, oh, ow] * the input that tap
        reads there, for o in [first, last): for each (o, c, kh), one vector accumulator per
        kw across the batch."""
        g, k = self.g, self.k
        per_group = g.channels // g.groups
        zero = k.lib.ops(k.vt).const(0.0)
        sums = [local(b, k.vt, f"sum{kw}") for kw in range(g.kernel_w)]
        load = k.lib.intrinsic("llvm.masked.load", PTR, ir.VectorType(ir.IntType(1), self.lanes),
                               k.vt, result=k.vt, overload=(k.vt, PTR))
        tail = g.out_w - (self.vectors - 1) * self.lanes
        mask = ir.Constant(ir.VectorType(ir.IntType(1), self.lanes),
                           [lane < tail for lane in range(self.lanes)])
        with for_range(b, arg["last"], "o", start=arg["first"]) as o, \
                for_range(b, i64(per_group), "c") as c, for_range(b, i64(g.kernel_h), "kh") as kh:
            for total in sums:
                b.store(zero, total)
            channel = b.add(b.mul(b.sdiv(o, i64(g.outputs // g.groups)), i64(per_group)), c)
            with for_range(b, arg["batch"], "n") as n, for_range(b, i64(g.out_h), "oh") as oh:
                g_row = b.mul(b.add(b.mul(b.add(b.mul(n, i64(g.outputs)), o), i64(g.out_h)),
                                    oh), i64(g.out_w))

                def row(at: ir.Value) -> None:
                    for vector in range(self.vectors):
                        whole = vector < self.vectors - 1 or tail == self.lanes

                        def read(base: ir.Value, offset: ir.Value) -> ir.Value:
                            # the row's last positions: zeros past its end, in both
                            # factors (0 times an inf there would be NaN)
                            if whole:
                                return k.load(b, base, offset, True)
                            return b.call(load, [self._at(b, base, offset), mask, zero])

                        grad = read(arg["g"], b.add(g_row, i64(vector * self.lanes)))
                        for kw, total in enumerate(sums):
                            column = b.add(at, i64(vector * self.lanes + kw * g.dilation_w))
                            x = read(arg["xpad"], column)
                            b.store(self._fma(b, grad, x, b.load(total, typ=k.vt)), total)

                self._input_row(b, n, channel, oh, kh, row)
            weights = b.mul(b.add(b.mul(b.add(b.mul(o, i64(per_group)), c), i64(g.kernel_h)),
                                  kh), i64(g.kernel_w))
            for kw, total in enumerate(sums):
                k.store(b, k.horizontal(b, "sum", b.load(total, typ=k.vt)), arg["dw"],
                        b.add(weights, i64(kw)))
