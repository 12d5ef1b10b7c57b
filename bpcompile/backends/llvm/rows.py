"""The softmax family over contiguous rows (the last axis), on vectors.

Each row is walked a vector at a time, the last vector masked to the row's end, so a row of
10 float32 logits is one masked vector and its `exp`s run in parallel; rows of up to four
vectors are held in registers and several done at once. Masked-off lanes load as -inf where
a maximum follows and as 0 where a sum follows, and their exps are 0. The scalar kernels in
kernels.py remain for other axes.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

from llvmlite import ir

from .loops import I32, I64, PTR, for_range, i64, local
from .mathlib import MathFunctions, declare_intrinsic

REASSOC = ("reassoc", "contract")
# Rows of at most this many vectors (say 10 float64 logits: two vectors of 8) are held in
# registers and done several at a time, as straight-line code: each row is a chain of
# dependent steps (max, exp, sum, log), and interleaving independent chains keeps the core
# busy where one chain alone would leave it waiting (a row of 10 float64 logits took about
# 115 ns one at a time). A row of three vectors takes the four-vector code, its last vector
# masked off.
SHORT_ROWS = (1, 2, 4)
GROUP = 4  # rows at once, while their vectors and exps fit the 16 to 32 vector registers


def rows_at_once(vectors: int) -> int:
    """How many rows of `vectors` vectors `short_rows` interleaves."""
    return max(1, min(GROUP, 8 // vectors))


class RowKernels:
    """Row-wise kernels for one builder, dtype and vector width."""

    def __init__(self, b: ir.IRBuilder, lib: MathFunctions, lanes: int):
        self.b = b
        self.lib = lib
        self.t = lib.t
        self.lanes = lanes
        self.vt = ir.VectorType(self.t, lanes)
        self.vops = lib.ops(self.vt)
        self.mask_type = ir.VectorType(ir.IntType(1), lanes)

    # ------------------------------------------------------------------ vectors

    def mask(self, remaining: ir.Value) -> ir.Value:
        """Lanes below `remaining` (all of them when a whole vector is left)."""
        b = self.b
        lanes = ir.Constant(ir.VectorType(I64, self.lanes), list(range(self.lanes)))
        single = b.insert_element(ir.Constant(ir.VectorType(I64, self.lanes), ir.Undefined),
                                  remaining, i64(0))
        bound = b.shuffle_vector(single, ir.Constant(ir.VectorType(I64, self.lanes),
                                                     ir.Undefined),
                                 ir.Constant(ir.VectorType(I32, self.lanes), [0] * self.lanes))
        return b.icmp_signed("<", lanes, bound)

    def load(self, base: ir.Value, offset: ir.Value, mask: ir.Value, fill: float) -> ir.Value:
        load = declare_intrinsic(self.lib.module, "llvm.masked.load",
                                 [PTR, self.mask_type, self.vt], self.vt, [self.vt, PTR])
        pointer = self.b.gep(base, [offset], source_etype=self.t)
        return self.b.call(load, [pointer, mask, self.vops.const(fill)])

    def store(self, value: ir.Value, base: ir.Value, offset: ir.Value, mask: ir.Value) -> None:
        store = declare_intrinsic(self.lib.module, "llvm.masked.store",
                                  [self.vt, PTR, self.mask_type], ir.VoidType(), [self.vt, PTR])
        self.b.call(store, [value, self.b.gep(base, [offset], source_etype=self.t), mask])

    def across(self, count: ir.Value, body: Callable[[ir.Value, ir.Value], None],
               name: str) -> None:
        """`body(j, mask)` for each vector of a row of `count` elements."""
        b = self.b
        with for_range(b, count, name, step=self.lanes) as j:
            body(j, self.mask(b.sub(count, j)))

    def accumulate(self, start: float, name: str) -> ir.Value:
        slot = local(self.b, self.vt, name)
        self.b.store(self.vops.const(start), slot)
        return slot

    def reduce(self, kind: str, vector: ir.Value) -> ir.Value:
        if kind == "sum":
            function = self.lib.intrinsic("llvm.vector.reduce.fadd", self.t, self.vt,
                                          result=self.t, overload=(self.vt,))
            return self.b.call(function, [ir.Constant(self.t, 0.0), vector],
                               fastmath=("reassoc",))
        function = self.lib.intrinsic("llvm.vector.reduce.fmaximum", self.vt, result=self.t,
                                      overload=(self.vt,))
        return self.b.call(function, [vector])

    def exp_where(self, x: ir.Value, mask: ir.Value) -> ir.Value:
        """exp(x) in the lanes of `mask`, 0 in the others. A masked-off lane takes exp(0),
        not exp(-inf): exp underflows through a subnormal product, which costs the core a
        microcode assist (rows of 10 float64 logits, six lanes in sixteen masked off, took
        twice as long)."""
        zero = self.vops.const(0.0)
        e = self.lib.call(self.b, "exp", self.b.select(mask, x, zero))
        return self.b.select(mask, e, zero)

    def splat(self, x: ir.Value) -> ir.Value:
        b = self.b
        single = b.insert_element(ir.Constant(self.vt, ir.Undefined), x, i64(0))
        return b.shuffle_vector(single, ir.Constant(self.vt, ir.Undefined),
                                ir.Constant(ir.VectorType(I32, self.lanes), [0] * self.lanes))

    # ---------------------------------------------------------------- row parts

    def maximum(self, x: ir.Value, start: ir.Value, count: ir.Value) -> ir.Value:
        best = self.accumulate(-math.inf, "max.v")

        def body(j: ir.Value, mask: ir.Value) -> None:
            value = self.load(x, self.b.add(start, j), mask, -math.inf)
            self.b.store(self.combine("max", self.b.load(best, typ=self.vt), value), best)

        self.across(count, body, "m")
        return self.reduce("max", self.b.load(best, typ=self.vt))

    def shift(self, top: ir.Value) -> ir.Value:
        """The max to subtract: 0 for a row of -inf, so exp gives 0 there, not NaN."""
        finite = self.b.fcmp_ordered("!=", top, ir.Constant(self.t, -math.inf))
        return self.b.select(finite, top, ir.Constant(self.t, 0.0))

    def exp_sum(self, x: ir.Value, start: ir.Value, count: ir.Value, shift: ir.Value,
                out: ir.Value | None = None) -> ir.Value:
        """sum(exp(x - shift)) over the row, storing each exp in `out` if given."""
        total = self.accumulate(0.0, "sum.v")
        shift_v = self.splat(shift)

        def body(j: ir.Value, mask: ir.Value) -> None:
            offset = self.b.add(start, j)
            value = self.load(x, offset, mask, -math.inf)
            e = self.exp_where(self.b.fsub(value, shift_v), mask)
            if out is not None:
                self.store(e, out, offset, mask)
            self.b.store(self.b.fadd(self.b.load(total, typ=self.vt), e, flags=REASSOC),
                         total)

        self.across(count, body, "e")
        return self.reduce("sum", self.b.load(total, typ=self.vt))

    def log_sum_exp(self, x: ir.Value, start: ir.Value, count: ir.Value) -> ir.Value:
        shift = self.shift(self.maximum(x, start, count))
        return self.b.fadd(shift, self.lib.call(self.b, "log",
                                                self.exp_sum(x, start, count, shift)))

    # ---------------------------------------------------------- short rows

    def short_rows(self, kind: str, out: ir.Value, x: ir.Value, t: ir.Value | None,
                   outer: ir.Value, count: ir.Value, total: ir.Value | None,
                   vectors: int) -> None:
        """`kind` for rows of at most `vectors` vectors, held in registers, several rows at
        a time. A row past the end, or a vector past a row's end, gets an all-false mask:
        it loads nothing and stores nothing."""
        b = self.b
        row_masks = [self.mask(b.sub(count, i64(v * self.lanes))) for v in range(vectors)]
        no_lanes = ir.Constant(self.mask_type, [0] * self.lanes)
        group = rows_at_once(vectors)
        with for_range(b, outer, "rows", step=group) as o:
            rows = [b.add(o, i64(r)) for r in range(group)]
            valid = [b.icmp_signed("<", row, outer) for row in rows]
            masks = [[b.select(ok, mask, no_lanes) for mask in row_masks] for ok in valid]
            starts = [b.mul(row, count) for row in rows]
            values = [[self.load(x, self.at(start, v), mask, -math.inf)
                       for v, mask in enumerate(row_mask)]
                      for start, row_mask in zip(starts, masks)]
            shifts = [self.shift(self.reduce("max", self.fold("max", row))) for row in values]
            exps = [[self.exp_where(b.fsub(v, self.splat(shift)), mask)
                     for v, mask in zip(row, row_mask)]
                    for row, row_mask, shift in zip(values, masks, shifts)]
            sums = [self.reduce("sum", self.fold("sum", row)) for row in exps]
            # every log before any branch, so the rows' chains stay interleaved
            lses = [b.fadd(shift, self.lib.call(b, "log", total_exp))
                    for shift, total_exp in zip(shifts, sums)] if kind != "softmax" else sums
            for r in range(group):
                self.finish_short(kind, out, t, rows[r], valid[r], masks[r], starts[r],
                                  values[r], exps[r], sums[r], lses[r], total)

    def at(self, start: ir.Value, vector: int) -> ir.Value:
        """Where a row's `vector`-th vector starts."""
        return start if vector == 0 else self.b.add(start, i64(vector * self.lanes))

    def combine(self, kind: str, x: ir.Value, y: ir.Value) -> ir.Value:
        """The lane-wise max or sum of two vectors."""
        if kind == "max":
            return self.b.call(self.lib.intrinsic("llvm.maximum", self.vt, self.vt), [x, y])
        return self.b.fadd(x, y, flags=REASSOC)

    def fold(self, kind: str, vectors: list[ir.Value]) -> ir.Value:
        """The lane-wise max or sum of a row's vectors: one vector to reduce."""
        return functools.reduce(lambda x, y: self.combine(kind, x, y), vectors)

    def finish_short(self, kind: str, out: ir.Value, t: ir.Value | None, row: ir.Value,
                     valid: ir.Value, masks: list[ir.Value], start: ir.Value,
                     values: list[ir.Value], exps: list[ir.Value], total_exp: ir.Value,
                     lse: ir.Value, total: ir.Value | None) -> None:
        """What each kernel does with a short row's vectors: its values, their max-shifted
        exps, and its log-sum-exp."""
        b = self.b
        if kind == "softmax":
            scale = self.splat(b.fdiv(ir.Constant(self.t, 1.0), total_exp))
            for v, (e, mask) in enumerate(zip(exps, masks)):
                self.store(b.fmul(e, scale), out, self.at(start, v), mask)
            return
        if kind == "log_softmax":
            shift = self.splat(lse)
            for v, (value, mask) in enumerate(zip(values, masks)):
                self.store(b.fsub(value, shift), out, self.at(start, v), mask)
        elif kind == "logsumexp":
            with b.if_then(valid):
                b.store(lse, b.gep(out, [row], source_etype=self.t))
        else:  # cross-entropy: this row's lse * sum(t) - sum(t * z)
            targets = [self.load(t, self.at(start, v), mask, 0.0)
                       for v, mask in enumerate(masks)]
            weights = self.reduce("sum", self.fold("sum", targets))
            products = self.reduce("sum", self.fold("sum", [
                b.fmul(tv, b.select(mask, value, self.vops.const(0.0)))
                for tv, value, mask in zip(targets, values, masks)]))
            row_loss = b.select(valid, b.fsub(b.fmul(lse, weights), products),
                                ir.Constant(self.t, 0.0))
            b.store(b.fadd(b.load(total, typ=self.t), row_loss, flags=REASSOC), total)

    # ------------------------------------------------------------------ kernels

    def rows(self, outer: ir.Value, count: ir.Value,
             body: Callable[[ir.Value, ir.Value], None], kind: str = "",
             out: ir.Value | None = None, x: ir.Value | None = None,
             t: ir.Value | None = None, total: ir.Value | None = None) -> None:
        """`body(o, start)` for each row o, starting at element `start`; rows of at most
        SHORT_ROWS[-1] vectors go through `short_rows` instead when `kind` is given."""
        self._rows_by_length(outer, count, body, kind, out, x, t, total,
                             SHORT_ROWS if kind else ())

    def _rows_by_length(self, outer: ir.Value, count: ir.Value,
                        body: Callable[[ir.Value, ir.Value], None], kind: str,
                        out: ir.Value | None, x: ir.Value | None, t: ir.Value | None,
                        total: ir.Value | None, lengths: tuple[int, ...]) -> None:
        """The shortest of `lengths` (in vectors) that holds a row, else one row at a time."""
        if not lengths:
            with for_range(self.b, outer, "row") as o:
                body(o, self.b.mul(o, count))
            return
        fits = self.b.icmp_signed("<=", count, i64(lengths[0] * self.lanes))
        with self.b.if_else(fits) as (short, longer):
            with short:
                self.short_rows(kind, out, x, t, outer, count, total, lengths[0])
            with longer:
                self._rows_by_length(outer, count, body, kind, out, x, t, total, lengths[1:])

    def softmax(self, out: ir.Value, x: ir.Value, outer: ir.Value, count: ir.Value) -> None:
        def body(o: ir.Value, start: ir.Value) -> None:
            shift = self.shift(self.maximum(x, start, count))
            total = self.exp_sum(x, start, count, shift, out)
            scale = self.splat(self.b.fdiv(ir.Constant(self.t, 1.0), total))

            def normalize(j: ir.Value, mask: ir.Value) -> None:
                offset = self.b.add(start, j)
                self.store(self.b.fmul(self.load(out, offset, mask, 0.0), scale), out, offset,
                           mask)

            self.across(count, normalize, "w")

        self.rows(outer, count, body, "softmax", out, x)

    def log_softmax(self, out: ir.Value, x: ir.Value, outer: ir.Value,
                    count: ir.Value) -> None:
        def body(o: ir.Value, start: ir.Value) -> None:
            lse = self.splat(self.log_sum_exp(x, start, count))

            def write(j: ir.Value, mask: ir.Value) -> None:
                offset = self.b.add(start, j)
                self.store(self.b.fsub(self.load(x, offset, mask, 0.0), lse), out, offset, mask)

            self.across(count, write, "w")

        self.rows(outer, count, body, "log_softmax", out, x)

    def logsumexp(self, out: ir.Value, x: ir.Value, outer: ir.Value, count: ir.Value) -> None:
        def body(o: ir.Value, start: ir.Value) -> None:
            self.b.store(self.log_sum_exp(x, start, count),
                         self.b.gep(out, [o], source_etype=self.t))

        self.rows(outer, count, body, "logsumexp", out, x)

    def cross_entropy(self, out: ir.Value, z: ir.Value, t: ir.Value, outer: ir.Value,
                      count: ir.Value) -> None:
        """mean over rows of sum_c t_c (lse - z_c) = lse * sum(t) - sum(t * z)."""
        total = local(self.b, self.t, "total")
        self.b.store(ir.Constant(self.t, 0.0), total)

        def body(o: ir.Value, start: ir.Value) -> None:
            lse = self.log_sum_exp(z, start, count)
            weights = self.accumulate(0.0, "t.v")
            products = self.accumulate(0.0, "tz.v")

            def add(j: ir.Value, mask: ir.Value) -> None:
                offset = self.b.add(start, j)
                tv = self.load(t, offset, mask, 0.0)
                zv = self.load(z, offset, mask, 0.0)
                self.b.store(self.b.fadd(self.b.load(weights, typ=self.vt), tv, flags=REASSOC),
                             weights)
                self.b.store(self.b.fadd(self.b.load(products, typ=self.vt),
                                         self.b.fmul(tv, zv), flags=REASSOC), products)

            self.across(count, add, "c")
            row = self.b.fsub(self.b.fmul(lse, self.reduce("sum", self.b.load(weights,
                                                                                typ=self.vt))),
                              self.reduce("sum", self.b.load(products, typ=self.vt)))
            self.b.store(self.b.fadd(self.b.load(total, typ=self.t), row, flags=REASSOC), total)

        self.rows(outer, count, body, "cross_entropy", out, z, t, total)
        mean = self.b.fdiv(self.b.load(total, typ=self.t), self.b.sitofp(outer, self.t))
        self.b.store(mean, out)
