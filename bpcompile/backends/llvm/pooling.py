"""The pooling kernels: max and average pooling and their gradients, for one geometry (the
window kernels' helpers are windows.py's).

Padded taps read a cell holding -inf (max) or 0 (average) instead of branching: a pointer
select is a conditional move, while a float select in a loop becomes a branch that the data
mispredicts. A window of at most UNROLLED_TAPS taps is written out tap by tap.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

from llvmlite import ir

from .loops import I64, for_range, i64, local
from .windows import Args, Geometry, WindowKernels

if TYPE_CHECKING:
    from .kernels import Kernels

UNROLLED_TAPS = 16
Tap = Callable[[ir.Value, ir.Value], None]  # tap(x offset, inside)
Taps = Callable[[Tap], None]                # calls tap for each tap of one window
KERNELS: dict[str, list[str]] = {  # name -> its pointer arguments, before the batch size
    "max_pool": ["out", "x"],
    "max_pool_grad": ["dx", "x", "g"],
    "max_pool_where": ["out", "where", "x"],
    "max_pool_scatter": ["dx", "where", "g"],
    "max_pool_spread": ["dx", "where", "g"],
    "avg_pool": ["out", "x"],
    "avg_pool_grad": ["dx", "g"],
}


class PoolingKernels(WindowKernels):
    """Writes the pooling kernels' bodies for one geometry (`body(name)`)."""

    def __init__(self, kernels: Kernels, geometry: Geometry[int]):
        super().__init__(kernels, geometry)
        self.unroll = geometry.kernel_h * geometry.kernel_w <= UNROLLED_TAPS

    def _windows(self, b: ir.IRBuilder, arg: Args, g: Geometry,
                 window: Callable[[ir.Value, Taps], None]) -> None:
        """window(out_at, taps) for each output of each (image, channel) plane, where
        taps(tap) calls tap(x offset, inside) for each tap of the window in row-major
        order; the offset is 0 where the tap reads padding."""
        planes = b.mul(arg["batch"], g.channels)
        with for_range(b, planes, "plane") as plane, for_range(b, g.out_h, "oh") as oh, \
                for_range(b, g.out_w, "ow") as ow:
            out_at = b.add(b.mul(b.add(b.mul(plane, g.out_h), oh), g.out_w), ow)
            first = b.mul(plane, b.mul(g.height, g.width))

            def taps(tap: Tap) -> None:
                def row(kh: ir.Value) -> None:
                    ih = b.add(b.sub(b.mul(oh, g.stride_h), g.pad_h), b.mul(kh, g.dilation_h))
                    row_inside = self._inside(b, ih, g.height)

                    def column(kw: ir.Value) -> None:
                        iw = b.add(b.sub(b.mul(ow, g.stride_w), g.pad_w),
                                   b.mul(kw, g.dilation_w))
                        inside = b.and_(row_inside, self._inside(b, iw, g.width))
                        at = b.add(first, b.add(b.mul(ih, g.width), iw))
                        tap(b.select(inside, at, i64(0)), inside)

                    self._each(b, g.kernel_w, "kw", column, self.unroll)

                self._each(b, g.kernel_h, "kh", row, self.unroll)

            window(out_at, taps)

    def _read(self, b: ir.IRBuilder, base: ir.Value, at: ir.Value, inside: ir.Value,
              padding: ir.Value) -> ir.Value:
        return self._load(b, b.select(inside, self._at(b, base, at), padding))

    def _maximum(self, b: ir.IRBuilder, arg: Args, taps: Taps, floor: ir.Value
                 ) -> ir.Value:
        """The window's maximum (NaN if any tap is NaN), padding reading -inf."""
        best = local(b, self.t, "best")
        b.store(ir.Constant(self.t, -math.inf), best)
        maximum = self.lib.intrinsic("llvm.maximum", self.t, self.t)
        taps(lambda at, inside: b.store(b.call(maximum, [
            b.load(best, typ=self.t), self._read(b, arg["x"], at, inside, floor)]), best))
        return b.load(best, typ=self.t)

    def _max_pool(self, b: ir.IRBuilder, arg: Args, g: Geometry) -> None:
        floor = self._cell(b, -math.inf, "floor")
        self._windows(b, arg, g, lambda out_at, taps: b.store(
            self._maximum(b, arg, taps, floor), self._at(b, arg["out"], out_at)))

    def _max_pool_grad(self, b: ir.IRBuilder, arg: Args, g: Geometry) -> None:
        """Each window's gradient goes to its first maximum in row-major order (its first
        NaN, if it has one), as PyTorch and NumPy's argmax choose."""
        floor = self._cell(b, -math.inf, "floor")
        self._zero(b, arg["dx"], b.mul(b.mul(arg["batch"], g.channels),
                                       b.mul(g.height, g.width)))
        where = local(b, I64, "where")
        found = local(b, ir.IntType(1), "found")

        def window(out_at: ir.Value, taps: Taps) -> None:
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

    def _plane_start(self, b: ir.IRBuilder, g: Geometry, out_at: ir.Value) -> ir.Value:
        """Where output `out_at`'s (image, channel) plane starts in x."""
        return b.mul(b.udiv(out_at, b.mul(g.out_h, g.out_w)), b.mul(g.height, g.width))

    def _max_pool_where(self, b: ir.IRBuilder, arg: Args, g: Geometry) -> None:
        """max_pool that also writes, for each window, the offset of its first maximum (its
        first NaN, if it has one) in its plane of x, which max_pool_scatter then reads: the
        forward pass of a training step finds each maximum once. Offsets within the plane,
        not the batch, so a kernel given a slice of the batch (split.py) writes the same."""
        floor = self._cell(b, -math.inf, "floor")
        best, where = local(b, self.t, "best"), local(b, I64, "where")
        maximum = self.lib.intrinsic("llvm.maximum", self.t, self.t)

        def window(out_at: ir.Value, taps: Taps) -> None:
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
            b.store(b.sub(b.load(where, typ=I64), self._plane_start(b, g, out_at)),
                    b.gep(arg["where"], [out_at], source_etype=I64))

        self._windows(b, arg, g, window)

    def _max_pool_scatter(self, b: ir.IRBuilder, arg: Args, g: Geometry) -> None:
        """dx[where[o]] += g[o] for every output o (max_pool_where found `where`)."""
        self._zero(b, arg["dx"], b.mul(b.mul(arg["batch"], g.channels),
                                       b.mul(g.height, g.width)))
        outputs = b.mul(b.mul(arg["batch"], g.channels), b.mul(g.out_h, g.out_w))
        with for_range(b, outputs, "o") as o:
            at = b.load(b.gep(arg["where"], [o], source_etype=I64), typ=I64)
            slot = self._at(b, arg["dx"], b.add(self._plane_start(b, g, o), at))
            b.store(b.fadd(self._load(b, slot), self._load(b, self._at(b, arg["g"], o))),
                    slot)

    def _max_pool_spread(self, b: ir.IRBuilder, arg: Args, g: Geometry) -> None:
        """max_pool_scatter where the windows tile the input: each window's taps are set to
        0 and then its first maximum to g, so dx needs no zeroing first and nothing is read
        back. (Choosing g or 0 per tap instead becomes a branch, whatever the IR says:
        mispredicted at one tap in every window.)"""
        zero = ir.Constant(self.t, 0.0)

        def window(out_at: ir.Value, taps: Taps) -> None:
            taps(lambda at, inside: b.store(zero, self._at(b, arg["dx"], at)))
            where = b.add(self._plane_start(b, g, out_at),
                          b.load(b.gep(arg["where"], [out_at], source_etype=I64), typ=I64))
            b.store(self._load(b, self._at(b, arg["g"], out_at)), self._at(b, arg["dx"], where))

        self._windows(b, arg, g, window)

    def _avg_pool(self, b: ir.IRBuilder, arg: Args, g: Geometry) -> None:
        """The mean over the window, padding counted as zeros (as PyTorch's default)."""
        nothing = self._cell(b, 0.0, "nothing")
        total = local(b, self.t, "total")
        count = b.sitofp(b.mul(g.kernel_h, g.kernel_w), self.t)

        def window(out_at: ir.Value, taps: Taps) -> None:
            b.store(ir.Constant(self.t, 0.0), total)
            taps(lambda at, inside: b.store(b.fadd(
                b.load(total, typ=self.t), self._read(b, arg["x"], at, inside, nothing)),
                total))
            b.store(b.fdiv(b.load(total, typ=self.t), count), self._at(b, arg["out"], out_at))

        self._windows(b, arg, g, window)

    def _avg_pool_grad(self, b: ir.IRBuilder, arg: Args, g: Geometry) -> None:
        trash = self._cell(b, 0.0, "trash")  # where a padded tap's share goes
        self._zero(b, arg["dx"], b.mul(b.mul(arg["batch"], g.channels),
                                       b.mul(g.height, g.width)))
        count = b.sitofp(b.mul(g.kernel_h, g.kernel_w), self.t)

        def window(out_at: ir.Value, taps: Taps) -> None:
            share = b.fdiv(self._load(b, self._at(b, arg["g"], out_at)), count)

            def tap(at: ir.Value, inside: ir.Value) -> None:
                slot = b.select(inside, self._at(b, arg["dx"], at), trash)
                b.store(b.fadd(self._load(b, slot), share), slot)

            taps(tap)

        self._windows(b, arg, g, window)
