"""C = A @ B for large products: our own packed, cache-blocked GEMM (the Goto/BLIS scheme).

The register-blocked loop nest (matmul.py) streams all of B past every few rows of A, so
once B outgrows the caches it waits on memory. Here the product is cut into blocks that
stay in cache, each copied ("packed") once into the order the micro-kernel reads:

    for jc in 0..n by NC:           B's panel [KC, NC] packed once, read from L3/L2
      for pc in 0..k by KC:
        pack B[pc:pc+KC, jc:jc+NC] as NR-column strips, row p of a strip contiguous
        for ic in 0..m by MC:       A's block [MC, KC] packed once, read from L2
          pack A[ic:ic+MC, pc:pc+KC] as MR-row strips, column p of a strip contiguous
          for jr in 0..NC by NR:    one strip of B, reused by every strip of A (L1)
            for ir in 0..MC by MR:
              micro-kernel: C[MR, NR] (+)= A strip @ B strip

The micro-kernel holds C's MR x NR tile in registers for the whole KC loop: per step p it
loads NR / lanes vectors of the B strip, broadcasts MR values of the A strip and does
MR * NR / lanes fused multiply-adds; the first KC block writes C, later ones add to it.
Packing reads each operand through two strides, so a transposed A or B (X.T @ dZ,
dZ @ W.T) costs nothing: no transpose is ever copied. Strips are padded with zeros, so the
kernel always computes a whole tile; an edge tile stores only its rows and columns.

The pack buffers come from aligned_alloc for each call (a C program's heap, the one libc
function this file adds); with none to be had, small blocks packed on the stack. How the
operands are packed: packing.py.
"""

from __future__ import annotations

from llvmlite import ir

from .loops import I32, I64, PTR, for_range, i64, prebuilt_name
from .mathlib import MathFunctions
from .packing import ALIGN, Packing, round_up, smin
from .vectors import rank_one_updates

# Products of at least this many multiply-adds are packed (below it, every operand fits in
# cache and the loop nest, which packs nothing, is as fast; measured in benchmarks/gemm.py).
PACKED_THRESHOLD = 1 << 21
LIBC = ("aligned_alloc", "free")  # what this file adds to the C library functions called


class PackedGemm(Packing):
    """The packed GEMM of one dtype and vector width, defined in the prebuilt library
    (network modules declare `product`): A[i, p] at i * a_row + p * a_col, B[p, j] at
    p * b_row + j * b_col, C[i, j] at i * ldc + j."""

    def __init__(self, module: ir.Module, lib: MathFunctions, vector_bytes: int,
                 prebuilt: bool = False, narrow: bool = False):
        super().__init__(module, lib, vector_bytes, prebuilt, narrow)
        self._function: ir.Function | None = None
        self.vector_bytes = vector_bytes

    def function(self) -> ir.Function:
        """`gemm(c, a, b, m, n, k, a_row, a_col, b_row, b_col, ldc, packed_a, packed_b,
        mc, kc, nc)`: the blocks given (MC a multiple of MR, NC of NR) and buffers for them,
        `packed_a` of MC * KC elements and `packed_b` of KC * NC, both 64-aligned."""
        if self._function is None:
            fnty = ir.FunctionType(ir.VoidType(), [PTR, PTR, PTR] + [I64] * 8 + [PTR, PTR]
                                   + [I64] * 3)
            self._function = ir.Function(self.module, fnty,
                                         prebuilt_name(self.family, self.t, self.lanes))
            if self.prebuilt:
                self._define(self._function)
        return self._function

    def pack_sizes(self, b: ir.IRBuilder, m: ir.Value, n: ir.Value, k: ir.Value
                   ) -> tuple[ir.Value, ir.Value, ir.Value, ir.Value, ir.Value]:
        """(mc, kc, nc, bytes of packed A, bytes of packed B) for a product of m x n x k:
        the full blocks, or less for a smaller product (so a small one allocates little);
        packed B's bytes a multiple of 64, to start 64-aligned after packed A."""
        blocks = self.blocks
        mc = smin(b, round_up(b, m, blocks.mr), i64(blocks.mc), "mc")
        kc = smin(b, k, i64(blocks.kc), "kc")
        nc = smin(b, round_up(b, n, self.nr), i64(blocks.nc), "nc")
        a_bytes = round_up(b, b.mul(b.mul(mc, kc), i64(self.itemsize)), ALIGN)
        b_bytes = b.mul(b.mul(kc, nc), i64(self.itemsize), name="b_bytes")
        return mc, kc, nc, a_bytes, b_bytes

    def product(self) -> ir.Function:
        """`product(c, a, b, m, n, k, a_row, a_col, b_row, b_col, ldc)`: C = A @ B through
        `gemm` (the narrow tile's when C has at most a vector's worth of columns), with
        pack buffers from aligned_alloc, freed after; if none can be had, small blocks
        packed on the stack (slower, never wrong)."""
        name = prebuilt_name("packed_product", self.t, self.lanes)
        existing = self.module.globals.get(name)
        if existing is not None:
            return existing
        fnty = ir.FunctionType(ir.VoidType(), [PTR, PTR, PTR] + [I64] * 8)
        f = ir.Function(self.module, fnty, name)
        if not self.prebuilt:
            return f
        f.attributes.add("noinline")
        for arg, label in zip(f.args, ("c", "a", "b", "m", "n", "k", "a_row", "a_col",
                                       "b_row", "b_col", "ldc")):
            arg.name = label
        b = ir.IRBuilder(f.append_basic_block("entry"))
        c, a, bm, m, n, k = f.args[:6]
        strides = list(f.args[6:])
        with b.if_then(b.icmp_signed("==", k, i64(0))):  # nothing to add up: C = 0
            with for_range(b, m, "i") as i:
                self.lib.zero_bytes(b, self._at(b, c, b.mul(i, strides[-1])),
                                    b.mul(n, i64(self.itemsize)))
            b.ret_void()
        narrow = PackedGemm(self.module, self.lib, self.vector_bytes, self.prebuilt,
                            narrow=True)
        with b.if_else(b.icmp_signed("<=", n, i64(narrow.nr))) as (few_columns, many):
            with few_columns:
                narrow.call(b, f.args)
            with many:
                self.call(b, f.args)
        b.ret_void()
        return f

    def call(self, b: ir.IRBuilder, args: list[ir.Value]) -> None:
        """This tile's `gemm` on product's arguments, its pack buffers allocated for the
        product (or small ones on the stack when there is no memory) and freed after."""
        c, a, bm, m, n, k = args[:6]
        strides = list(args[6:])
        gemm = self.function()
        mc, kc, nc, a_bytes, b_bytes = self.pack_sizes(b, m, n, k)
        buffer = b.call(libc(self.module, "aligned_alloc", PTR, [I64, I64]),
                        [i64(ALIGN), b.add(a_bytes, b_bytes)], name="buffer")
        with b.if_else(b.icmp_unsigned("!=", buffer, ir.Constant(PTR, None)),
                       likely=True) as (allocated, refused):
            with allocated:
                b.call(gemm, [c, a, bm, m, n, k, *strides, buffer,
                              b.gep(buffer, [a_bytes], source_etype=ir.IntType(8)), mc, kc,
                              nc])
                b.call(libc(self.module, "free", ir.VoidType(), [PTR]), [buffer])
            with refused:
                small_kc = self.blocks.kc // 4
                small_a = local_array(b, ir.ArrayType(self.t, self.blocks.mr * small_kc),
                                      f"{self.family}.small_a")
                small_b = local_array(b, ir.ArrayType(self.t, small_kc * self.nr),
                                      f"{self.family}.small_b")
                b.call(gemm, [c, a, bm, m, n, k, *strides, small_a, small_b,
                              i64(self.blocks.mr), i64(small_kc), i64(self.nr)])

    # ------------------------------------------------------------------ the blocks

    def _define(self, f: ir.Function) -> None:
        f.attributes.add("noinline")
        names = ("c", "a", "b", "m", "n", "k", "a_row", "a_col", "b_row", "b_col", "ldc",
                 "packed_a", "packed_b", "mc_block", "kc_block", "nc_block")
        for arg, name in zip(f.args, names):
            arg.name = name
        (c, a, bm, m, n, k, a_row, a_col, b_row, b_col, ldc, packed_a, packed_b, mc_block,
         kc_block, nc_block) = f.args
        mr = self.blocks.mr
        b = ir.IRBuilder(f.append_basic_block("entry"))
        micro, pack_a, pack_b = self._micro(), self._pack_a(), self._pack_b()
        # k in equal blocks of at most kc_block (784 as 4 x 196, not 3 x 256 + 16: a
        # short last block would pass over all of C for a few multiply-adds)
        k_blocks = b.sdiv(b.add(k, b.sub(kc_block, i64(1))), kc_block)
        kc_block = b.sdiv(b.add(k, b.sub(k_blocks, i64(1))), k_blocks, name="kc_even")
        with for_range(b, n, "jc", step=nc_block) as jc:
            nc = smin(b, b.sub(n, jc), nc_block, "nc")
            with for_range(b, k, "pc", step=kc_block) as pc:
                kc = smin(b, b.sub(k, pc), kc_block, "kc")
                b_block = self._at(b, bm, b.add(b.mul(pc, b_row), b.mul(jc, b_col)))
                b.call(pack_b, [packed_b, b_block, kc, nc, b_row, b_col])
                overwrite = b.zext(b.icmp_signed("==", pc, i64(0)), I32)
                with for_range(b, m, "ic", step=mc_block) as ic:
                    mc = smin(b, b.sub(m, ic), mc_block, "mc")
                    a_block = self._at(b, a, b.add(b.mul(ic, a_row), b.mul(pc, a_col)))
                    b.call(pack_a, [packed_a, a_block, mc, kc, a_row, a_col])
                    with for_range(b, nc, "jr", step=self.nr) as jr:
                        strip_b = self._at(b, packed_b, b.mul(jr, kc))
                        cols = smin(b, b.sub(nc, jr), i64(self.nr), "cols")
                        with for_range(b, mc, "ir", step=mr) as ir_:
                            strip_a = self._at(b, packed_a, b.mul(ir_, kc))
                            rows = smin(b, b.sub(mc, ir_), i64(mr), "rows")
                            row = b.add(ic, ir_)
                            tile = self._at(b, c, b.add(b.mul(row, ldc), b.add(jc, jr)))
                            b.call(micro, [tile, ldc, strip_a, strip_b, kc, rows, cols,
                                           overwrite])
        b.ret_void()

    # ------------------------------------------------------------ the micro-kernel

    def _micro(self) -> ir.Function:
        """C's tile [rows, cols] (rows <= MR, cols <= NR) = (or +=, unless `overwrite`)
        the A strip [MR, kc] @ the B strip [kc, NR], accumulated in registers."""
        mr, vectors, lanes = self.blocks.mr, self.blocks.vectors, self.lanes
        f, b = self._internal("micro", [("c", PTR), ("ldc", I64), ("a", PTR), ("b", PTR),
                                        ("kc", I64), ("rows", I64), ("cols", I64),
                                        ("overwrite", I32)])
        c, ldc, a, strip_b, kc, rows, cols, overwrite = f.args
        fma = self.lib.intrinsic("llvm.fma", self.vt, self.vt, self.vt)

        def columns_at(p: ir.Value) -> list[ir.Value]:  # row p of the B strip
            row = b.mul(p, i64(self.nr))
            return [b.load(self._at(b, strip_b, b.add(row, i64(v * lanes))), typ=self.vt,
                           align=ALIGN if v * lanes * self.itemsize % ALIGN == 0
                           else self.itemsize)
                    for v in range(vectors)]

        def scalar_at(p: ir.Value, r: int) -> ir.Value:  # column p of the A strip, row r
            return b.load(self._at(b, a, b.add(b.mul(p, i64(mr)), i64(r))), typ=self.t)

        acc = rank_one_updates(b, fma, mr, vectors, kc, columns_at, scalar_at, self.vec)
        add = b.icmp_signed("==", overwrite, ir.Constant(I32, 0), name="add")
        whole = b.and_(b.icmp_signed("==", rows, i64(mr)),
                       b.icmp_signed("==", cols, i64(self.nr)), name="whole")
        with b.if_else(whole, likely=True) as (full, edge):
            with full:
                self._store_tile(b, acc, c, ldc, add, [None] * vectors, None)
            with edge:
                masks = [self.vec.mask(b, b.sub(cols, i64(v * lanes))) for v in range(vectors)]
                self._store_tile(b, acc, c, ldc, add, masks, rows)
        b.ret_void()
        return f

    def _store_tile(self, b: ir.IRBuilder, acc: list[list[ir.Value]], c: ir.Value,
                    ldc: ir.Value, add: ir.Value, masks: list[ir.Value | None],
                    rows: ir.Value | None) -> None:
        """The tile into C: added to what C holds after the first KC block, written over
        it in the first (C is not read then)."""
        with b.if_else(add) as (accumulate, overwrite):
            for adding, branch in ((True, accumulate), (False, overwrite)):
                with branch:
                    for r, row in enumerate(acc):
                        if rows is None:
                            self._store_row(b, row, c, r, ldc, masks, adding)
                        else:
                            with b.if_then(b.icmp_signed("<", i64(r), rows)):
                                self._store_row(b, row, c, r, ldc, masks, adding)

    def _store_row(self, b: ir.IRBuilder, row: list[ir.Value], c: ir.Value, r: int,
                   ldc: ir.Value, masks: list[ir.Value | None], adding: bool) -> None:
        start = b.mul(i64(r), ldc)
        for v, value in enumerate(row):
            at = self._at(b, c, b.add(start, i64(v * self.lanes)))
            if adding:
                value = b.fadd(value, self.vec.load(b, at, masks[v]))
            self.vec.store(b, value, at, masks[v])


def libc(module: ir.Module, name: str, result: ir.Type, args: list[ir.Type]) -> ir.Function:
    """A C library function, declared once per module."""
    existing = module.globals.get(name)
    return existing or ir.Function(module, ir.FunctionType(result, args), name)


def local_array(b: ir.IRBuilder, typ: ir.ArrayType, name: str) -> ir.Value:
    """A 64-aligned array on the stack, allocated once in the entry block."""
    entry = b.function.entry_basic_block
    with b.goto_block(entry):
        b.position_at_start(entry)
        array = b.alloca(typ, name=name)
        array.align = ALIGN
    return array
