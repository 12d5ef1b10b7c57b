"""Vectors of one element type and width, as the matmul kernels (matmul.py, gemm.py,
packing.py) use them: a scalar broadcast to every lane, the mask of the lanes left at a
row's end, loads and stores that take such a mask (an edge vector) or none (a whole one),
the micro-kernels' loop of rank-one updates held in registers; and the transpose of a square
of vectors in registers."""

from __future__ import annotations

from collections.abc import Callable

from llvmlite import ir

from .loops import I32, I64, PTR, i64
from .mathlib import declare_intrinsic


class Vectors:
    def __init__(self, module: ir.Module, t: ir.Type, lanes: int):
        self.module, self.t, self.lanes = module, t, lanes
        self.itemsize = 8 if isinstance(t, ir.DoubleType) else 4
        self.vt = ir.VectorType(t, lanes)
        self.mask_type = ir.VectorType(ir.IntType(1), lanes)

    def splat(self, b: ir.IRBuilder, x: ir.Value) -> ir.Value:
        """`x` in every lane."""
        single = b.insert_element(ir.Constant(self.vt, ir.Undefined), x, i64(0))
        zeros = ir.Constant(ir.VectorType(I32, self.lanes), [0] * self.lanes)
        return b.shuffle_vector(single, ir.Constant(self.vt, ir.Undefined), zeros)

    def mask(self, b: ir.IRBuilder, remaining: ir.Value) -> ir.Value:
        """Lanes below `remaining`: all when a whole vector is left, none when nothing is."""
        vector = ir.VectorType(I64, self.lanes)
        lanes = ir.Constant(vector, list(range(self.lanes)))
        bound = b.insert_element(ir.Constant(vector, ir.Undefined), remaining, i64(0))
        bound = b.shuffle_vector(bound, ir.Constant(vector, ir.Undefined),
                                 ir.Constant(ir.VectorType(I32, self.lanes), [0] * self.lanes))
        return b.icmp_signed("<", lanes, bound)

    def load(self, b: ir.IRBuilder, pointer: ir.Value, mask: ir.Value | None = None
             ) -> ir.Value:
        """A vector from `pointer` (element-aligned); masked lanes read as zero."""
        if mask is None:
            return b.load(pointer, typ=self.vt, align=self.itemsize)
        load = declare_intrinsic(self.module, "llvm.masked.load",
                                 [PTR, self.mask_type, self.vt], self.vt, [self.vt, PTR])
        return b.call(load, [pointer, mask, ir.Constant(self.vt, [0.0] * self.lanes)])

    def store(self, b: ir.IRBuilder, value: ir.Value, pointer: ir.Value,
              mask: ir.Value | None = None) -> None:
        """`value` to `pointer` (element-aligned), masked lanes left as they were."""
        if mask is None:
            b.store(value, pointer, align=self.itemsize)
            return
        store = declare_intrinsic(self.module, "llvm.masked.store",
                                  [self.vt, PTR, self.mask_type], ir.VoidType(),
                                  [self.vt, PTR])
        b.call(store, [value, pointer, mask])


def rank_one_updates(b: ir.IRBuilder, fma: ir.Function, rows: int, vectors: int,
                     count: ir.Value, columns_at: Callable[[ir.Value], list[ir.Value]],
                     scalar_at: Callable[[ir.Value, int], ir.Value], vec: Vectors
                     ) -> list[list[ir.Value]]:
    """sum over p < count of scalar_at(p, r) * columns_at(p)[v], for each of `rows` x
    `vectors` accumulators held in registers (phis) across the loop: a micro-kernel's inner
    loop, one row of B's vectors and one broadcast of A per row each step. Returns the sums;
    the builder is left after the loop."""
    zero = ir.Constant(vec.vt, [0.0] * vec.lanes)
    before = b.block
    loop, body, done = (b.append_basic_block(name) for name in ("p.loop", "p.body", "p.done"))
    b.branch(loop)
    b.position_at_end(loop)
    p = b.phi(I64, name="p")
    p.add_incoming(i64(0), before)
    acc = [[b.phi(vec.vt, name=f"c{r}_{v}") for v in range(vectors)] for r in range(rows)]
    for phi in (phi for row in acc for phi in row):
        phi.add_incoming(zero, before)
    b.cbranch(b.icmp_signed("<", p, count), body, done)
    b.position_at_end(body)
    columns = columns_at(p)
    updated = []
    for r in range(rows):
        splat = vec.splat(b, scalar_at(p, r))
        updated.append([b.call(fma, [splat, columns[v], acc[r][v]]) for v in range(vectors)])
    for phi, value in zip((phi for row in acc for phi in row),
                          (value for row in updated for value in row)):
        phi.add_incoming(value, b.block)
    p.add_incoming(b.add(p, i64(1)), b.block)
    b.branch(loop)
    b.position_at_end(done)
    return acc


def transpose_square(b: ir.IRBuilder, rows: list[ir.Value]) -> list[ir.Value]:
    """The transpose of a square of vectors (rows[i][j] -> result[j][i]), in log2(lanes)
    stages of two-source shuffles: stage s swaps, in every 2s x 2s block, the top-right
    s x s block with the bottom-left one, so the last stage (s = 1) leaves each element
    mirrored across the diagonal."""
    lanes = len(rows)
    rows = list(rows)
    s = lanes // 2
    while s >= 1:
        for i in range(lanes):
            if i & s:
                continue
            upper, lower = rows[i], rows[i + s]
            keep = [j if not j & s else lanes + j - s for j in range(lanes)]
            swap = [j + s if not j & s else lanes + j for j in range(lanes)]
            rows[i] = b.shuffle_vector(upper, lower, ir.Constant(ir.VectorType(I32, lanes),
                                                                 keep))
            rows[i + s] = b.shuffle_vector(upper, lower,
                                           ir.Constant(ir.VectorType(I32, lanes), swap))
        s //= 2
    return rows
