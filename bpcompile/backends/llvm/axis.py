"""Loop nests along one axis, for the structural ops: reductions, the softmax family,
transposes, the finiteness check.

An op along one axis sees its tensor as [outer, axis, inner] (C order): element (o, a, i) is
at (o * A + a) * I + i. Along the last axis I = 1 and rows are contiguous; reducing every
axis is [1, size, 1]. Each kernel loops over o and i and makes its passes over a.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from llvmlite import ir

from .loops import I64, for_range, i64, local, product
from .mathlib import MathFunctions
from .vectors import transpose_square

REASSOC = ("reassoc", "contract")  # sums may be reordered (pairwise or vector lanes), as NumPy does


@dataclass(frozen=True)
class AxisView:
    """A tensor as [outer, axis, inner]."""

    outer: ir.Value
    axis: ir.Value
    inner: ir.Value


def axis_view(builder: ir.IRBuilder, dims: list[ir.Value], axes: tuple[int, ...]) -> AxisView:
    """The [outer, axis, inner] view of a tensor of `dims` along `axes` (one axis, or all)."""
    if len(axes) == len(dims) and len(axes) != 1:
        return AxisView(i64(1), product(builder, dims), i64(1))
    (axis,) = axes
    return AxisView(product(builder, dims[:axis]), dims[axis], product(builder, dims[axis + 1:]))


class AxisLoops:
    """Emits structural kernels into a function, for one dtype."""

    def __init__(self, builder: ir.IRBuilder, lib: MathFunctions):
        self.b = builder
        self.lib = lib
        self.t = lib.t

    # ------------------------------------------------------------------ memory

    def load(self, base: ir.Value, offset: ir.Value, name: str = "") -> ir.Value:
        return self.b.load(self.b.gep(base, [offset], source_etype=self.t), name=name,
                           typ=self.t)

    def store(self, value: ir.Value, base: ir.Value, offset: ir.Value) -> None:
        self.b.store(value, self.b.gep(base, [offset], source_etype=self.t))

    def const(self, value: float) -> ir.Constant:
        return ir.Constant(self.t, value)

    def accumulator(self, start: float, name: str) -> ir.Value:
        """A local variable (SSA after mem2reg) for a running value."""
        slot = local(self.b, self.t, name)
        self.b.store(self.const(start), slot)
        return slot

    def maximum(self, a: ir.Value, b: ir.Value) -> ir.Value:
        return self.b.call(self.lib.intrinsic("llvm.maximum", self.t, self.t), [a, b])

    # -------------------------------------------------------- along-axis helper

    def rows(self, view: AxisView, body: Callable[..., None], name: str) -> None:
        """Run `body(at, o, n)` for each (outer o, inner n) pair; `at(a)` is the offset of
        element a along the axis."""
        with for_range(self.b, view.outer, f"{name}.o") as o:
            with for_range(self.b, view.inner, f"{name}.n") as n:
                start = self.b.mul(o, self.b.mul(view.axis, view.inner))

                def at(a: ir.Value) -> ir.Value:
                    return self.b.add(self.b.add(start, self.b.mul(a, view.inner)), n)

                body(at, o, n)

    def reduce_max(self, source: ir.Value, view: AxisView, at, name: str) -> ir.Value:
        best = self.accumulator(-math.inf, f"{name}.max")
        with for_range(self.b, view.axis, f"{name}.a") as a:
            self.b.store(self.maximum(self.b.load(best, typ=self.t),
                                      self.load(source, at(a))), best)
        return self.b.load(best, typ=self.t)

    def sum_exp(self, source: ir.Value, view: AxisView, at, shift: ir.Value,
                name: str) -> ir.Value:
        total = self.accumulator(0.0, f"{name}.sum")
        with for_range(self.b, view.axis, f"{name}.a") as a:
            e = self.lib.call(self.b, "exp", self.b.fsub(self.load(source, at(a)), shift))
            self.b.store(self.b.fadd(self.b.load(total, typ=self.t), e, flags=REASSOC), total)
        return self.b.load(total, typ=self.t)

    def log_sum_exp(self, source: ir.Value, view: AxisView, at, name: str) -> ir.Value:
        """max + log(sum(exp(x - max))): finite for any finite x."""
        top = self.reduce_max(source, view, at, name)
        # an all -inf row: shift by 0 so exp(-inf - 0) = 0 and the result is -inf, not NaN
        finite = self.b.fcmp_ordered("!=", top, self.const(-math.inf))
        shift = self.b.select(finite, top, self.const(0.0))
        return self.b.fadd(shift, self.lib.call(self.b, "log",
                                                self.sum_exp(source, view, at, shift, name)))

    # ------------------------------------------------------------ the kernels

    def softmax(self, out: ir.Value, source: ir.Value, view: AxisView, name: str) -> None:
        def body(at, o, n):
            top = self.reduce_max(source, view, at, name)
            total = self.accumulator(0.0, f"{name}.sum")
            with for_range(self.b, view.axis, f"{name}.e") as a:
                e = self.lib.call(self.b, "exp", self.b.fsub(self.load(source, at(a)), top))
                self.store(e, out, at(a))
                self.b.store(self.b.fadd(self.b.load(total, typ=self.t), e, flags=REASSOC),
                             total)
            scale = self.b.fdiv(self.const(1.0), self.b.load(total, typ=self.t))
            with for_range(self.b, view.axis, f"{name}.w") as a:
                self.store(self.b.fmul(self.load(out, at(a)), scale), out, at(a))
        self.rows(view, body, name)

    def log_softmax(self, out: ir.Value, source: ir.Value, view: AxisView, name: str) -> None:
        def body(at, o, n):
            lse = self.log_sum_exp(source, view, at, name)
            with for_range(self.b, view.axis, f"{name}.w") as a:
                self.store(self.b.fsub(self.load(source, at(a)), lse), out, at(a))
        self.rows(view, body, name)

    def logsumexp(self, out: ir.Value, source: ir.Value, view: AxisView, name: str) -> None:
        """One value per (outer, inner) pair, stored at o * I + n."""
        def body(at, o, n):
            index = self.b.add(self.b.mul(o, view.inner), n)
            self.store(self.log_sum_exp(source, view, at, name), out, index)
        self.rows(view, body, name)

    def argmax_onehot(self, out: ir.Value, source: ir.Value, view: AxisView,
                      name: str) -> None:
        """1 at the first maximum along the axis (as NumPy's argmax), 0 elsewhere."""
        def body(at, o, n):
            best = self.accumulator(-math.inf, f"{name}.best")
            where = local(self.b, I64, f"{name}.where")
            self.b.store(i64(0), where)
            with for_range(self.b, view.axis, f"{name}.a") as a:
                x = self.load(source, at(a))
                better = self.b.fcmp_ordered(">", x, self.b.load(best, typ=self.t))
                self.b.store(self.b.select(better, x, self.b.load(best, typ=self.t)), best)
                self.b.store(self.b.select(better, a, self.b.load(where, typ=I64)), where)
            chosen = self.b.load(where, typ=I64)
            with for_range(self.b, view.axis, f"{name}.w") as a:
                hit = self.b.icmp_signed("==", a, chosen)
                self.store(self.b.select(hit, self.const(1.0), self.const(0.0)), out, at(a))
        self.rows(view, body, name)

    def argmax(self, out: ir.Value, source: ir.Value, view: AxisView, name: str) -> None:
        """The index of the first maximum along the axis (as NumPy's argmax: a NaN counts
        as the maximum), one per (outer, inner) pair, as a number."""
        def body(at, o, n):
            best = self.accumulator(-math.inf, f"{name}.best")
            where = local(self.b, I64, f"{name}.where")
            self.b.store(i64(-1), where)
            with for_range(self.b, view.axis, f"{name}.a") as a:
                x = self.load(source, at(a))
                known = self.b.icmp_signed(">=", self.b.load(where, typ=I64), i64(0))
                top = self.b.load(best, typ=self.t)
                # the first element, a larger one, or the first NaN (once best is NaN,
                # nothing compares greater, so it stays)
                better = self.b.or_(self.b.not_(known), self.b.or_(
                    self.b.fcmp_ordered(">", x, top),
                    self.b.and_(self.b.fcmp_unordered("!=", x, x),
                                self.b.fcmp_ordered("==", top, top))))
                self.b.store(self.b.select(better, x, top), best)
                self.b.store(self.b.select(better, a, self.b.load(where, typ=I64)), where)
            index = self.b.add(self.b.mul(o, view.inner), n)
            self.store(self.b.sitofp(self.b.load(where, typ=I64), self.t), out, index)
        self.rows(view, body, name)

    def softmax_cross_entropy(self, out: ir.Value, logits: ir.Value, targets: ir.Value,
                              view: AxisView, name: str) -> None:
        """mean over rows of sum_c t_c (lse - z_c), rows along the last axis."""
        total = self.accumulator(0.0, f"{name}.total")

        def body(at, o, n):
            lse = self.log_sum_exp(logits, view, at, name)
            row = self.accumulator(0.0, f"{name}.row")
            with for_range(self.b, view.axis, f"{name}.c") as c:
                term = self.b.fmul(self.load(targets, at(c)),
                                   self.b.fsub(lse, self.load(logits, at(c))))
                self.b.store(self.b.fadd(self.b.load(row, typ=self.t), term, flags=REASSOC),
                             row)
            self.b.store(self.b.fadd(self.b.load(total, typ=self.t),
                                     self.b.load(row, typ=self.t), flags=REASSOC), total)
        self.rows(view, body, name)
        rows = self.b.sitofp(view.outer, self.t)
        self.store(self.b.fdiv(self.b.load(total, typ=self.t), rows), out, i64(0))

    def transpose(self, out: ir.Value, source: ir.Value, rows: ir.Value, cols: ir.Value,
                  name: str, lanes: int) -> None:
        """out[j, i] = source[i, j]: squares of lanes x lanes as `lanes` vector loads, a
        transpose in registers and `lanes` vector stores; the last rows and columns (past
        the whole squares) element by element."""
        b = self.b
        vt = ir.VectorType(self.t, lanes)
        itemsize = 8 if isinstance(self.t, ir.DoubleType) else 4

        def at(base: ir.Value, offset: ir.Value) -> ir.Value:
            return b.gep(base, [offset], source_etype=self.t)

        whole_rows = b.sub(rows, b.srem(rows, i64(lanes)), name=f"{name}.whole_rows")
        whole_cols = b.sub(cols, b.srem(cols, i64(lanes)), name=f"{name}.whole_cols")
        with for_range(b, whole_rows, f"{name}.i", step=lanes) as i0:
            with for_range(b, whole_cols, f"{name}.j", step=lanes) as j0:
                square = [b.load(at(source, b.add(b.mul(b.add(i0, i64(r)), cols), j0)),
                                 typ=vt, align=itemsize) for r in range(lanes)]
                for c, column in enumerate(transpose_square(b, square)):
                    b.store(column, at(out, b.add(b.mul(b.add(j0, i64(c)), rows), i0)),
                            align=itemsize)

        def element(i: ir.Value, j: ir.Value) -> None:
            value = self.load(source, b.add(b.mul(i, cols), j))
            self.store(value, out, b.add(b.mul(j, rows), i))

        with for_range(b, cols, f"{name}.right", start=whole_cols) as j:
            with for_range(b, rows, f"{name}.ri") as i:
                element(i, j)
        with for_range(b, whole_cols, f"{name}.below") as j:
            with for_range(b, rows, f"{name}.bi", start=whole_rows) as i:
                element(i, j)

    def copy(self, out: ir.Value, source: ir.Value, count: ir.Value, name: str) -> None:
        with for_range(self.b, count, f"{name}.k") as k:
            self.store(self.load(source, k), out, k)

    def non_finite(self, source: ir.Value, count: ir.Value, name: str) -> ir.Value:
        """True if any element is inf or NaN: sum(x * 0) is 0 for finite x, else NaN."""
        total = self.accumulator(0.0, f"{name}.probe")
        with for_range(self.b, count, f"{name}.k") as k:
            zeroed = self.b.fmul(self.load(source, k), self.const(0.0))
            self.b.store(self.b.fadd(self.b.load(total, typ=self.t), zeroed, flags=REASSOC),
                         total)
        value = self.b.load(total, typ=self.t)
        return self.b.fcmp_unordered("!=", value, value)
