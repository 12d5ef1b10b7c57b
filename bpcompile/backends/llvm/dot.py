"""C = A @ B.T as dot products: the product a backward pass takes with a weight read
transposed (`dZ @ W.T`), with B's rows read as they lie instead of copied transposed first.

Each element of C is a dot product along k, so A's rows and B's rows are both read a vector
of k at a time: a block of ROWS rows of A by `columns` rows of B keeps one vector of partial
sums per element of C in registers across the k loop (the last vector of k masked), then
adds each vector's lanes. That horizontal sum is the cost the broadcast loop nest
(matmul.py) does not pay, so where k is short (under MIN_VECTORS vectors) the loop nest
takes B, copied transposed first; products.py decides, when the product runs.
"""

from __future__ import annotations

from llvmlite import ir

from .loops import I64, PTR, for_range, i64, local
from .mathlib import MathFunctions
from .vectors import Vectors

ROWS = 4
# k of at least this many vectors: dot products beat copying B transposed first (float32 on
# a 2-core Xeon: 1x256 @ 256x784 51 us against 244, 16x256 @ 256x256 42 against 92,
# 128x128 @ 128x128 49 against 60; but 128x64 @ 64x64, four vectors, 33 against 30)
MIN_VECTORS = 8


def define_dot_products(function: ir.Function, lib: MathFunctions, vec: Vectors,
                        columns: int) -> None:
    """Define `void f(ptr c, ptr a, ptr b, i64 m, i64 n, i64 k)`: C[m, n] = A[m, k] @
    B[n, k].T, all three dense and row-major; `columns` rows of B at a time."""
    function.attributes.add("noinline")
    for arg, name in zip(function.args, ("c", "a", "b", "m", "n", "k")):
        arg.name = name
    c, a, b_rows, m, n, k = function.args
    b = ir.IRBuilder(function.append_basic_block("entry"))
    fma = lib.intrinsic("llvm.fma", vec.vt, vec.vt, vec.vt)
    total = lib.intrinsic("llvm.vector.reduce.fadd", vec.t, vec.vt, result=vec.t,
                          overload=(vec.vt,))
    zero = ir.Constant(vec.vt, [0.0] * vec.lanes)
    sums = [[local(b, vec.vt, f"sum{r}_{j}") for j in range(columns)] for r in range(ROWS)]
    whole = b.sub(k, b.srem(k, i64(vec.lanes)), name="whole")

    def clamped(index: ir.Value, count: ir.Value) -> ir.Value:
        """A row past the end reads the last row instead (its results are not stored)."""
        return b.select(b.icmp_signed("<", index, count), index, b.sub(count, i64(1)))

    with for_range(b, m, "i", step=ROWS) as i0:
        rows = [b.add(i0, i64(r)) for r in range(ROWS)]
        a_starts = [b.mul(clamped(row, m), k) for row in rows]
        with for_range(b, n, "j", step=columns) as j0:
            cols = [b.add(j0, i64(j)) for j in range(columns)]
            b_starts = [b.mul(clamped(col, n), k) for col in cols]
            for slots in sums:
                for slot in slots:
                    b.store(zero, slot)

            def accumulate(p: ir.Value, mask: ir.Value | None) -> None:
                def at(base: ir.Value, start: ir.Value) -> ir.Value:
                    return vec.load(b, b.gep(base, [b.add(start, p)], source_etype=vec.t), mask)

                a_vectors = [at(a, start) for start in a_starts]
                b_vectors = [at(b_rows, start) for start in b_starts]
                for r, a_vector in enumerate(a_vectors):
                    for j, b_vector in enumerate(b_vectors):
                        slot = sums[r][j]
                        b.store(b.call(fma, [a_vector, b_vector, b.load(slot, typ=vec.vt)]),
                                slot)

            with for_range(b, whole, "p", step=vec.lanes) as p:
                accumulate(p, None)
            with b.if_then(b.icmp_signed("<", whole, k)):
                accumulate(whole, vec.mask(b, b.sub(k, whole)))
            for r, row in enumerate(rows):
                for j, col in enumerate(cols):
                    inside = b.and_(b.icmp_signed("<", row, m), b.icmp_signed("<", col, n))
                    with b.if_then(inside, likely=True):
                        partial = b.load(sums[r][j], typ=vec.vt)
                        value = b.call(total, [ir.Constant(vec.t, 0.0), partial],
                                       fastmath=("reassoc",))
                        b.store(value, b.gep(c, [b.add(b.mul(row, n), col)],
                                             source_etype=vec.t))
    b.ret_void()


def signature() -> ir.FunctionType:
    return ir.FunctionType(ir.VoidType(), [PTR, PTR, PTR, I64, I64, I64])
