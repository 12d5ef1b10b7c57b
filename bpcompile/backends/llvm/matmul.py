"""C = A @ B as a register-blocked, vectorized loop nest for the host CPU.

The micro-kernel keeps a block of C, ROWS rows by VECTORS vectors (4 x 64 floats with
AVX-512), in registers for the whole k loop: per k it loads VECTORS vectors of B's row k and
broadcasts one element of A per row, then does ROWS x VECTORS fused multiply-adds. Columns
left over after whole vectors are done with a dot-product loop LLVM vectorizes along k.

A is addressed through two strides, so A may be a transposed view (X.T @ dZ reads X
directly); B's rows must be contiguous, and C is written densely. One internal function per
module and dtype is emitted and called from every matmul site.
"""

from __future__ import annotations

from llvmlite import ir

from .loops import I64, PTR, for_range, i64
from .mathlib import CONTRACT, MathLibrary

ROWS = 4


class Matmul:
    def __init__(self, module: ir.Module, lib: MathLibrary, vector_bytes: int):
        self.module = module
        self.lib = lib
        self.t = lib.t
        width = 8 if isinstance(self.t, ir.DoubleType) else 4
        self.lanes = vector_bytes // width
        self.vectors = 4 if vector_bytes >= 64 else 2  # accumulators must fit the registers
        self.vt = ir.VectorType(self.t, self.lanes)
        self._function: ir.Function | None = None

    def call(self, builder: ir.IRBuilder, c: ir.Value, a: ir.Value, b: ir.Value,
             m: ir.Value, n: ir.Value, k: ir.Value, a_row: ir.Value, a_col: ir.Value) -> None:
        """C[m, n] = A[m, k] @ B[k, n], A[i, p] at i * a_row + p * a_col, B and C dense."""
        builder.call(self.function(), [c, a, b, m, n, k, a_row, a_col])

    def function(self) -> ir.Function:
        if self._function is None:
            self._function = self._define()
        return self._function

    # ------------------------------------------------------------------ emission

    def _define(self) -> ir.Function:
        fnty = ir.FunctionType(ir.VoidType(), [PTR, PTR, PTR, I64, I64, I64, I64, I64])
        f = ir.Function(self.module, fnty, "bpc.matmul")
        f.linkage = "internal"
        for arg, name in zip(f.args, ("c", "a", "b", "m", "n", "k", "a_row", "a_col")):
            arg.name = name
        for index in (0, 1, 2):
            f.args[index].add_attribute("noalias")
        b = ir.IRBuilder(f.append_basic_block("entry"))
        c_ptr, a_ptr, b_ptr, m, n, k, a_row, a_col = f.args
        block = self.lanes * self.vectors
        full_rows = b.sub(m, b.srem(m, i64(ROWS)), name="full_rows")
        block_cols = b.sub(n, b.srem(n, i64(block)), name="block_cols")
        vector_cols = b.sub(n, b.srem(n, i64(self.lanes)), name="vector_cols")

        def row_block(i0: ir.Value, rows: int) -> None:
            with for_range(b, block_cols, "j", step=block) as j0:
                self._micro(b, f.args, i0, j0, rows, self.vectors)
            with for_range(b, vector_cols, "jv", start=block_cols, step=self.lanes) as j0:
                self._micro(b, f.args, i0, j0, rows, 1)
            with for_range(b, n, "jt", start=vector_cols) as j:
                for r in range(rows):
                    self._dot(b, f.args, b.add(i0, i64(r)), j)

        with for_range(b, full_rows, "i", step=ROWS) as i0:
            row_block(i0, ROWS)
        with for_range(b, m, "ir", start=full_rows) as i0:
            row_block(i0, 1)
        b.ret_void()
        return f

    def _splat(self, b: ir.IRBuilder, x: ir.Value) -> ir.Value:
        single = b.insert_element(ir.Constant(self.vt, ir.Undefined), x, ir.Constant(I64, 0))
        zeros = ir.Constant(ir.VectorType(ir.IntType(32), self.lanes), [0] * self.lanes)
        return b.shuffle_vector(single, ir.Constant(self.vt, ir.Undefined), zeros)

    def _micro(self, b: ir.IRBuilder, args, i0: ir.Value, j0: ir.Value, rows: int,
               vectors: int) -> None:
        """C[i0:i0+rows, j0:j0+vectors*lanes] from accumulators held across the k loop."""
        c_ptr, a_ptr, b_ptr, m, n, k, a_row, a_col = args
        fma = self.lib.intrinsic("llvm.fma", self.vt, self.vt, self.vt)
        zero = ir.Constant(self.vt, [0.0] * self.lanes)
        before = b.block
        loop = b.append_basic_block("k.loop")
        body = b.append_basic_block("k.body")
        done = b.append_basic_block("k.done")
        b.branch(loop)
        b.position_at_end(loop)
        p = b.phi(I64, name="p")
        p.add_incoming(i64(0), before)
        acc = [[b.phi(self.vt, name=f"acc{r}{v}") for v in range(vectors)] for r in range(rows)]
        for row in acc:
            for phi in row:
                phi.add_incoming(zero, before)
        b.cbranch(b.icmp_signed("<", p, k), body, done)
        b.position_at_end(body)
        b_row = b.mul(p, n)
        columns = [b.load(b.gep(b_ptr, [b.add(b_row, b.add(j0, i64(v * self.lanes)))],
                                source_etype=self.t), typ=self.vt, align=4)
                   for v in range(vectors)]
        updated = []
        for r in range(rows):
            a_index = b.add(b.mul(b.add(i0, i64(r)), a_row), b.mul(p, a_col))
            a_value = b.load(b.gep(a_ptr, [a_index], source_etype=self.t), typ=self.t)
            broadcast = self._splat(b, a_value)
            updated.append([b.call(fma, [broadcast, columns[v], acc[r][v]])
                            for v in range(vectors)])
        following = b.add(p, i64(1))
        p.add_incoming(following, b.block)
        for r in range(rows):
            for v in range(vectors):
                acc[r][v].add_incoming(updated[r][v], b.block)
        b.branch(loop)
        b.position_at_end(done)
        for r in range(rows):
            row_start = b.mul(b.add(i0, i64(r)), n)
            for v in range(vectors):
                index = b.add(row_start, b.add(j0, i64(v * self.lanes)))
                b.store(acc[r][v], b.gep(c_ptr, [index], source_etype=self.t), align=4)

    def _dot(self, b: ir.IRBuilder, args, i: ir.Value, j: ir.Value) -> None:
        """C[i, j] = sum_p A[i, p] B[p, j] for a leftover column."""
        c_ptr, a_ptr, b_ptr, m, n, k, a_row, a_col = args
        entry = b.function.entry_basic_block
        with b.goto_block(entry):
            b.position_at_start(entry)
            total = b.alloca(self.t, name="dot")
        b.store(ir.Constant(self.t, 0.0), total)
        with for_range(b, k, "p") as p:
            a_value = b.load(b.gep(a_ptr, [b.add(b.mul(i, a_row), b.mul(p, a_col))],
                                   source_etype=self.t), typ=self.t)
            b_value = b.load(b.gep(b_ptr, [b.add(b.mul(p, n), j)], source_etype=self.t),
                             typ=self.t)
            product = b.fmul(a_value, b_value, flags=CONTRACT)
            b.store(b.fadd(b.load(total, typ=self.t), product, flags=("reassoc", "contract")),
                    total)
        b.store(b.load(total, typ=self.t),
                b.gep(c_ptr, [b.add(b.mul(i, n), j)], source_etype=self.t))
