"""C = A @ B as a register-blocked, vectorized loop nest for the host CPU, a BLAS call or
our packed GEMM.

The micro-kernel keeps a block of C, ROWS rows by VECTORS vectors (4 x 64 floats with
AVX-512), in registers for the whole k loop: per k it loads VECTORS vectors of B's row k and
broadcasts one element of A per row, then does ROWS x VECTORS fused multiply-adds. Columns
left over after whole blocks go through the same kernel one (masked) vector at a time.

A is addressed through two strides, so A may be a transposed view (X.T @ dZ reads X
directly); B's rows must be contiguous, and C is written densely.

Large products call the BLAS NumPy ships with (OpenBLAS, with its packing, cache blocking
and threads), or without it our own packed GEMM (gemm.py), split over the thread pool: at
those sizes a loop nest without cache blocking falls far behind either. Both read a
transposed operand in place, so the caller transposes B only for the loop nest, and the
loop nest itself hands a large product it is given (a convolution's, a batched one's) to
the packed GEMM. Which of these a plain matmul node takes is decided when it runs, by the
prebuilt `product` (products.py).
"""

from __future__ import annotations

from llvmlite import ir

from . import dot
from .blas import BLAS_THRESHOLDS, NO_TRANS, ROW_MAJOR, TRANS, find_blas
from .gemm import PACKED_THRESHOLD, PackedGemm
from .loops import I32, I64, PTR, for_range, i64, prebuilt_name
from .mathlib import MathFunctions
from .tasks import declare_parallel, define_task, pack, part_range
from .vectors import Vectors, rank_one_updates

ROWS = 4


class Matmul:
    """The matmul kernel of one dtype and vector width. It lives in the prebuilt library
    (prebuilt.py): a network's module declares it, the library's (prebuilt=True) defines it."""

    def __init__(self, module: ir.Module, lib: MathFunctions, vector_bytes: int,
                 prebuilt: bool = False, blas: bool = True):
        self.module = module
        self.prebuilt = prebuilt
        self.lib = lib
        self.t = lib.t
        self.itemsize = 8 if isinstance(self.t, ir.DoubleType) else 4
        self.lanes = vector_bytes // self.itemsize
        self.vectors = 4 if vector_bytes >= 64 else 2  # accumulators must fit the registers
        self.vt = ir.VectorType(self.t, self.lanes)
        self.vec = Vectors(module, self.t, self.lanes)
        self._function: ir.Function | None = None
        self._dot: ir.Function | None = None
        # without BLAS (exported C links against nothing but libc and libm), every product
        # is ours: the loop nest, or the packed GEMM for large ones
        self.blas = find_blas() if blas else None
        self.gemm = PackedGemm(module, lib, vector_bytes, prebuilt)

    # -------------------------------------------------------------- call sites

    def call(self, builder: ir.IRBuilder, c: ir.Value, a: ir.Value, b: ir.Value,
             m: ir.Value, n: ir.Value, k: ir.Value, a_row: ir.Value, a_col: ir.Value) -> None:
        """C[m, n] = A[m, k] @ B[k, n], A[i, p] at i * a_row + p * a_col, B and C dense."""
        builder.call(self.function(), [c, a, b, m, n, k, a_row, a_col])

    def large(self, builder: ir.IRBuilder, m: ir.Value, n: ir.Value, k: ir.Value,
              name: str = "product", b_transposed: bool = False) -> ir.Value:
        """Whether the product `name` goes to BLAS, or without BLAS to the packed GEMM
        split over the thread pool (the loop nest takes the rest)."""
        work = builder.mul(builder.mul(m, n), k, name=f"{name}.work")
        threshold = (BLAS_THRESHOLDS[self.itemsize, b_transposed] if self.blas is not None
                     else PACKED_THRESHOLD)
        return builder.icmp_signed(">=", work, i64(threshold), name=f"{name}.large")

    def call_large(self, builder: ir.IRBuilder, c: ir.Value, a: ir.Value, a_transposed: bool,
                   b: ir.Value, b_transposed: bool, m: ir.Value, n: ir.Value, k: ir.Value
                   ) -> ir.Function | str:
        """A product `large` said yes to: BLAS where there is one, else our packed GEMM,
        either operand read transposed in place. Returns what it called, for `show`."""
        if self.blas is not None:
            self.call_blas(builder, c, a, a_transposed, b, b_transposed, m, n, k)
            return "BLAS gemm"
        self.call_packed(builder, c, a, a_transposed, b, b_transposed, m, n, k)
        return self.gemm.product()

    def call_blas(self, builder: ir.IRBuilder, c: ir.Value, a: ir.Value, a_transposed: bool,
                  b: ir.Value, b_transposed: bool, m: ir.Value, n: ir.Value,
                  k: ir.Value) -> None:
        """C = op(A) @ op(B) through CBLAS gemm, row-major. Where BLAS's thread count can be
        set, C's rows (its columns, if it has fewer rows) divide over the step's thread
        pool, one single-threaded gemm per part: BLAS's own threads would spin on the
        cores the pool's workers wait on, and each side would slow the other (LeNet-5's
        step took 11.8 ms so, against 6.6 ms)."""
        assert self.blas is not None
        if self.blas.set_threads is None:
            self._gemm(builder, a_transposed, b_transposed, c, a, b, m, n, k,
                       m if a_transposed else k, k if b_transposed else n, n)
            return
        context, fields = pack(builder, [c, a, b, m, n, k], "product.args")
        set_threads = self.module.globals.get(self.blas.set_threads) or ir.Function(
            self.module, ir.FunctionType(I32, [I32]), self.blas.set_threads)
        before = builder.call(set_threads, [ir.Constant(I32, 1)], name="blas_threads")
        builder.call(declare_parallel(self.module),
                     [self._gemm_task(a_transposed, b_transposed, fields), context])
        builder.call(set_threads, [before])

    def _gemm_task(self, a_transposed: bool, b_transposed: bool,
                   fields: ir.LiteralStructType) -> ir.Function:
        """The task of one part of a product: its share of C's rows, or of its columns when
        C has fewer rows than columns."""
        name = f"bpc.gemm.{'T' if a_transposed else 'N'}{'T' if b_transposed else 'N'}.part"
        task, b, values, part, parts = define_task(self.module, name, fields, "cabmnk")
        if b is None:
            return task
        c, a, b_, m, n, k = values
        by_rows = b.icmp_signed(">=", m, n, name="by_rows")
        first, end = part_range(b, b.select(by_rows, m, n, name="count"), part, parts)
        units = b.sub(end, first, name="units")

        def moved(pointer: ir.Value, row_step: ir.Value, column_step: ir.Value) -> ir.Value:
            step = b.select(by_rows, row_step, column_step)
            return b.gep(pointer, [b.mul(first, step)], source_etype=self.t)

        with b.if_then(b.icmp_signed(">", units, i64(0))):
            self._gemm(b, a_transposed, b_transposed,
                       moved(c, n, i64(1)),
                       moved(a, i64(1) if a_transposed else k, i64(0)),
                       moved(b_, i64(0), k if b_transposed else i64(1)),
                       b.select(by_rows, units, m), b.select(by_rows, n, units), k,
                       m if a_transposed else k, k if b_transposed else n, n)
        b.ret_void()
        return task

    def _gemm(self, builder: ir.IRBuilder, a_transposed: bool, b_transposed: bool,
              c: ir.Value, a: ir.Value, b: ir.Value, m: ir.Value, n: ir.Value, k: ir.Value,
              lda: ir.Value, ldb: ir.Value, ldc: ir.Value) -> None:
        """One CBLAS gemm call, C = op(A) @ op(B) with the given leading dimensions."""
        assert self.blas is not None
        width = ir.IntType(self.blas.int_bits)
        name = self.blas.dgemm if self.itemsize == 8 else self.blas.sgemm
        gemm = self.module.globals.get(name)
        if gemm is None:
            args = [I32, I32, I32, width, width, width, self.t, PTR, width, PTR, width, self.t,
                    PTR, width]
            gemm = ir.Function(self.module, ir.FunctionType(ir.VoidType(), args), name)

        def integer(value: ir.Value) -> ir.Value:
            return value if width.width == 64 else builder.trunc(value, width)

        flag = lambda transposed: ir.Constant(I32, TRANS if transposed else NO_TRANS)  # noqa
        builder.call(gemm, [
            ir.Constant(I32, ROW_MAJOR), flag(a_transposed), flag(b_transposed),
            integer(m), integer(n), integer(k), ir.Constant(self.t, 1.0), a, integer(lda),
            b, integer(ldb), ir.Constant(self.t, 0.0), c, integer(ldc),
        ])

    # ------------------------------------------------------------------ kernel

    def function(self) -> ir.Function:
        if self._function is None:
            fnty = ir.FunctionType(ir.VoidType(), [PTR, PTR, PTR, I64, I64, I64, I64, I64])
            name = prebuilt_name("matmul", self.t, self.lanes)
            self._function = ir.Function(self.module, fnty, name)
            if self.prebuilt:
                self._define(self._function)
        return self._function

    def dot_function(self) -> ir.Function:
        """C = A @ B.T as dot products, B's rows read in place (dot.py)."""
        if self._dot is None:
            name = prebuilt_name("matmul_nt", self.t, self.lanes)
            self._dot = ir.Function(self.module, dot.signature(), name)
            if self.prebuilt:
                dot.define_dot_products(self._dot, self.lib, self.vec, self.vectors)
        return self._dot

    def _define(self, f: ir.Function) -> None:
        f.attributes.add("noinline")
        for arg, name in zip(f.args, ("c", "a", "b", "m", "n", "k", "a_row", "a_col")):
            arg.name = name
        b = ir.IRBuilder(f.append_basic_block("entry"))
        c_ptr, a_ptr, b_ptr, m, n, k, a_row, a_col = f.args
        self._packed_if_large(b, f.args)
        block = self.lanes * self.vectors
        block_cols = b.sub(n, b.srem(n, i64(block)), name="block_cols")
        left = b.sub(n, block_cols, name="left")  # columns after the whole blocks
        # Rows go by ROWS; a last partial group reads a valid row in place of the missing
        # ones and does not store them, so one kernel shape serves every row.
        # the columns after the whole blocks need `tail` vectors, the last one masked
        tail = b.sdiv(b.add(left, i64(self.lanes - 1)), i64(self.lanes), name="tail")
        with for_range(b, m, "i", step=ROWS) as i0:
            with for_range(b, block_cols, "j", step=block) as j0:
                self._micro(b, f.args, i0, j0, self.vectors, None)
            done = b.append_basic_block("tail.done")
            cases = {v: b.append_basic_block(f"tail{v}") for v in range(1, self.vectors + 1)}
            switch = b.switch(tail, done)
            for vectors, case in cases.items():
                switch.add_case(ir.Constant(I64, vectors), case)
                b.position_at_end(case)
                self._micro(b, f.args, i0, block_cols, vectors, left)
                b.branch(done)
            b.position_at_end(done)
        b.ret_void()

    def _packed_if_large(self, b: ir.IRBuilder, args: list[ir.Value]) -> None:
        """Return after the packed GEMM (gemm.py) for a product large enough to pay for
        packing; go on to the loop nest for the rest."""
        c_ptr, a_ptr, b_ptr, m, n, k, a_row, a_col = args
        work = b.mul(b.mul(m, n), k, name="work")
        with b.if_then(b.icmp_signed(">=", work, i64(PACKED_THRESHOLD))):
            b.call(self.gemm.product(), [c_ptr, a_ptr, b_ptr, m, n, k, a_row, a_col, n,
                                         i64(1), n])
            b.ret_void()

    def call_packed(self, builder: ir.IRBuilder, c: ir.Value, a: ir.Value, a_transposed: bool,
                    b: ir.Value, b_transposed: bool, m: ir.Value, n: ir.Value,
                    k: ir.Value) -> None:
        """C = op(A) @ op(B) through the packed GEMM, either operand read transposed in
        place; C's rows (its columns, if it has fewer rows) divide over the thread pool,
        in whole tiles, each part packing its own blocks."""
        context, fields = pack(builder, [c, a, b, m, n, k], "product.args")
        task = self._packed_task(a_transposed, b_transposed, fields)
        builder.call(declare_parallel(self.module), [task, context])

    def _packed_task(self, a_transposed: bool, b_transposed: bool,
                     fields: ir.LiteralStructType) -> ir.Function:
        name = (f"bpc.packed.{'T' if a_transposed else 'N'}{'T' if b_transposed else 'N'}"
                ".part")
        task, b, values, part, parts = define_task(self.module, name, fields, "cabmnk")
        if b is None:
            return task
        c, a, b_, m, n, k = values
        a_row, a_col = (i64(1), m) if a_transposed else (k, i64(1))
        b_row, b_col = (i64(1), k) if b_transposed else (n, i64(1))
        by_rows = b.icmp_signed(">=", m, n, name="by_rows")
        count = b.select(by_rows, m, n, name="count")
        tile = b.select(by_rows, i64(self.gemm.blocks.mr), i64(self.gemm.nr), name="tile")
        tiles = b.sdiv(b.add(count, b.sub(tile, i64(1))), tile, name="tiles")
        first_tile, end_tile = part_range(b, tiles, part, parts)
        first = b.mul(first_tile, tile, name="first")
        end = b.mul(end_tile, tile)
        end = b.select(b.icmp_signed("<", end, count), end, count, name="end")
        units = b.sub(end, first, name="units")

        def moved(pointer: ir.Value, row_step: ir.Value, column_step: ir.Value) -> ir.Value:
            step = b.select(by_rows, row_step, column_step)
            return b.gep(pointer, [b.mul(first, step)], source_etype=self.t)

        with b.if_then(b.icmp_signed(">", units, i64(0))):
            b.call(self.gemm.product(), [
                moved(c, n, i64(1)), moved(a, a_row, i64(0)), moved(b_, i64(0), b_col),
                b.select(by_rows, units, m), b.select(by_rows, n, units), k,
                a_row, a_col, b_row, b_col, n])
        b.ret_void()
        return task

    def _micro(self, b: ir.IRBuilder, args, i0: ir.Value, j0: ir.Value, vectors: int,
               remaining: ir.Value | None) -> None:
        """C[i0:i0+ROWS, j0:j0+vectors*lanes] from accumulators held across the k loop; with
        `remaining`, the last vector is masked to the columns left."""
        c_ptr, a_ptr, b_ptr, m, n, k, a_row, a_col = args
        # only the last vector can be partial; the others load and store whole
        masks: list[ir.Value | None] = [None] * vectors
        if remaining is not None:
            masks[-1] = self.vec.mask(b, b.sub(remaining, i64((vectors - 1) * self.lanes)))
        last_row = b.sub(m, i64(1))
        rows = [b.add(i0, i64(r)) for r in range(ROWS)]
        # a row past the end reads the last row instead (its results are not stored)
        sources = [b.select(b.icmp_signed("<", row, m), row, last_row) for row in rows]
        a_rows = [b.mul(row, a_row) for row in sources]
        fma = self.lib.intrinsic("llvm.fma", self.vt, self.vt, self.vt)

        def columns_at(p: ir.Value) -> list[ir.Value]:  # row p of B, the block's columns
            row = b.mul(p, n)
            return [self.vec.load(b, b.gep(b_ptr, [b.add(row, b.add(j0, i64(v * self.lanes)))],
                                           source_etype=self.t), masks[v])
                    for v in range(vectors)]

        def scalar_at(p: ir.Value, r: int) -> ir.Value:  # A[row r of the block, p]
            return b.load(b.gep(a_ptr, [b.add(a_rows[r], b.mul(p, a_col))],
                                source_etype=self.t), typ=self.t)

        acc = rank_one_updates(b, fma, ROWS, vectors, k, columns_at, scalar_at, self.vec)
        for r in range(ROWS):
            with b.if_then(b.icmp_signed("<", rows[r], m), likely=True):
                row_start = b.mul(rows[r], n)
                for v in range(vectors):
                    index = b.add(row_start, b.add(j0, i64(v * self.lanes)))
                    self.vec.store(b, acc[r][v], b.gep(c_ptr, [index], source_etype=self.t),
                                masks[v])
