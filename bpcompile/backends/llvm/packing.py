"""The packed GEMM's operands (gemm.py), copied into the order its micro-kernel reads.

A's block [MC, KC] becomes MR-row strips, each holding, for every p, the strip's MR values
of column p side by side; B's panel [KC, NC] becomes NR-column strips, each holding, for
every p, the strip's NR values of row p. Strips are padded with zeros past the matrix's
edge, so the micro-kernel always computes whole tiles.

Each operand is read through two strides, so a transposed operand (X.T @ dZ, dZ @ W.T) is
packed straight from where it lies, never copied first. Where a strip's source runs the other
way from its packed order (a row-major A, a B that is W.T), squares of lanes x lanes are
loaded as vectors and transposed in registers; the matrix's edges go element by element.
"""

from __future__ import annotations

from dataclasses import dataclass

from llvmlite import ir

from .loops import I32, I64, PTR, for_range, i64, prebuilt_name
from .mathlib import MathFunctions
from .vectors import Vectors, transpose_square

ALIGN = 64


@dataclass(frozen=True)
class Blocking:
    """The micro-kernel's tile (MR rows by `vectors` vectors) and the cache blocks, in
    elements. MC is a multiple of MR and NC of NR, so only the matrix's own edges are
    partial."""

    mr: int
    vectors: int
    kc: int
    mc: int
    nc: int


# (MR, vectors) per vector width: wide tiles, and narrow ones (one vector) for products
# with at most a vector's worth of columns (a classifier's last layer), which a wide tile
# would mostly pad
TILES = {False: {64: (12, 2), 32: (6, 2), 16: (4, 2)},
         True: {64: (24, 1), 32: (12, 1), 16: (8, 1)}}


def blocking(vector_bytes: int, itemsize: int, narrow: bool = False) -> Blocking:
    """The tile that fills the vector registers (32 with AVX-512, 16 before it) with
    accumulators, leaving room for the B vectors and a broadcast; blocks sized so that a
    B strip (KC x NR) sits in L1, the A block (MC x KC) in L2, the B panel in L3."""
    lanes = vector_bytes // itemsize
    mr, vectors = TILES[narrow].get(vector_bytes, TILES[narrow][16])
    kc = 1024 // itemsize if vector_bytes >= 32 else 512 // itemsize
    nr = lanes * vectors
    return Blocking(mr, vectors, kc, mc=mr * max(1, 96 // mr), nc=nr * max(1, 2048 // nr))


class Packing:
    """The sizes of one dtype and vector width, the two packing functions and the vector
    helpers the micro-kernel shares with them."""

    def __init__(self, module: ir.Module, lib: MathFunctions, vector_bytes: int,
                 prebuilt: bool = False, narrow: bool = False):
        self.module, self.lib, self.t = module, lib, lib.t
        self.prebuilt, self.narrow = prebuilt, narrow
        self.family = "gemm_narrow" if narrow else "gemm"  # the functions' name
        self.itemsize = 8 if isinstance(self.t, ir.DoubleType) else 4
        self.lanes = vector_bytes // self.itemsize
        self.vt = ir.VectorType(self.t, self.lanes)
        self.vec = Vectors(module, self.t, self.lanes)
        self.blocks = blocking(vector_bytes, self.itemsize, narrow)
        self.nr = self.blocks.vectors * self.lanes

    def _at(self, b: ir.IRBuilder, base: ir.Value, index: ir.Value) -> ir.Value:
        return b.gep(base, [index], source_etype=self.t)

    def _internal(self, name: str, args: list[tuple[str, ir.Type]]) -> tuple[ir.Function,
                                                                          ir.IRBuilder]:
        full = prebuilt_name(f"{self.family}.{name}", self.t, self.lanes)
        f = ir.Function(self.module, ir.FunctionType(ir.VoidType(), [t for _, t in args]),
                        full)
        f.linkage = "internal"
        f.attributes.add("noinline")
        for arg, (label, _) in zip(f.args, args):
            arg.name = label
        return f, ir.IRBuilder(f.append_basic_block("entry"))

    def _pack_a(self) -> ir.Function:
        """A's block [mc, kc] as MR-row strips: strip s holds, for each p, rows
        s*MR .. s*MR+MR-1 of column p side by side (zeros past the last row)."""
        mr = self.blocks.mr
        f, b = self._internal("pack_a", [("packed", PTR), ("a", PTR), ("mc", I64),
                                         ("kc", I64), ("a_row", I64), ("a_col", I64)])
        packed, a, mc, kc, a_row, a_col = f.args
        zero, lanes = ir.Constant(self.t, 0.0), self.lanes
        column_type = ir.VectorType(self.t, mr)
        with for_range(b, mc, "i", step=mr) as i0:
            rows = smin(b, b.sub(mc, i0), i64(mr), "rows")
            strip = self._at(b, packed, b.mul(i0, kc))
            whole = b.icmp_signed("==", rows, i64(mr), name="whole")
            # A = X.T (X's rows contiguous): a column of a whole strip is one vector load
            by_columns = b.and_(whole, b.icmp_signed("==", a_row, i64(1)))
            with b.if_then(by_columns):
                with for_range(b, kc, "p") as p:
                    column = b.load(self._at(b, a, b.add(i0, b.mul(p, a_col))),
                                    typ=column_type, align=self.itemsize)
                    b.store(column, self._at(b, strip, b.mul(p, i64(mr))),
                            align=self.itemsize)
            # A's rows contiguous: squares of lanes x lanes transposed in registers
            by_rows = b.and_(whole, b.icmp_signed("==", a_col, i64(1)))
            squares = b.select(by_rows, b.mul(b.sdiv(kc, i64(lanes)), i64(lanes)), i64(0))
            with for_range(b, squares, "p", step=lanes) as p0:
                self._transposed_rows(b, strip, a, i0, p0, a_row)
            # the rest (edges; any other strides) element by element; a row past the end
            # reads the strip's last row and stores zero
            rest = b.select(by_columns, kc, squares, name="rest")
            starts = [b.mul(b.add(i0, smin(b, i64(r), b.sub(rows, i64(1)), "")), a_row)
                      for r in range(mr)]
            keep = [b.icmp_signed("<", i64(r), rows) for r in range(mr)]
            with for_range(b, kc, "p", start=rest) as p:
                column = b.mul(p, a_col)
                out = b.mul(p, i64(mr))
                for r in range(mr):
                    value = b.load(self._at(b, a, b.add(starts[r], column)), typ=self.t)
                    b.store(b.select(keep[r], value, zero),
                            self._at(b, strip, b.add(out, i64(r))))
        b.ret_void()
        return f

    def _transposed_rows(self, b: ir.IRBuilder, strip: ir.Value, a: ir.Value, i0: ir.Value,
                         p0: ir.Value, a_row: ir.Value) -> None:
        """Columns p0 .. p0+lanes-1 of a whole strip of a row-major A: its MR rows read
        `lanes` at a time (a square padded with zero rows when MR is not a multiple of
        lanes), transposed, each column's MR values stored side by side."""
        mr, lanes = self.blocks.mr, self.lanes
        zero = ir.Constant(self.vt, [0.0] * lanes)
        for g in range(0, mr, lanes):
            real = min(lanes, mr - g)
            rows = [b.load(self._at(b, a, b.add(b.mul(b.add(i0, i64(g + r)), a_row), p0)),
                           typ=self.vt, align=self.itemsize) if r < real else zero
                    for r in range(lanes)]
            for p, column in enumerate(transpose_square(b, rows)):
                if real < lanes:
                    column = b.shuffle_vector(column, ir.Constant(self.vt, ir.Undefined),
                                              ir.Constant(ir.VectorType(I32, real),
                                                          list(range(real))))
                out = b.add(b.mul(b.add(p0, i64(p)), i64(mr)), i64(g))
                b.store(column, self._at(b, strip, out), align=self.itemsize)

    def _pack_b(self) -> ir.Function:
        """B's panel [kc, nc] as NR-column strips: strip s holds, for each p, columns
        s*NR .. s*NR+NR-1 of row p side by side (zeros past the last column). Rows of a
        row-major B are read as (masked) vectors; a transposed B element by element."""
        f, b = self._internal("pack_b", [("packed", PTR), ("b", PTR), ("kc", I64),
                                         ("nc", I64), ("b_row", I64), ("b_col", I64)])
        packed, src, kc, nc, b_row, b_col = f.args
        vectors, lanes, zero = self.blocks.vectors, self.lanes, ir.Constant(self.t, 0.0)
        with b.if_else(b.icmp_signed("==", b_col, i64(1))) as (rows_dense, strided):
            with rows_dense:
                with for_range(b, nc, "j", step=self.nr) as j0:
                    strip = self._at(b, packed, b.mul(j0, kc))
                    masks = [self.vec.mask(b, b.sub(b.sub(nc, j0), i64(v * lanes)))
                             for v in range(vectors)]
                    with for_range(b, kc, "p") as p:
                        row = b.add(b.mul(p, b_row), j0)
                        out = b.mul(p, i64(self.nr))
                        for v in range(vectors):
                            value = self.vec.load(
                                b, self._at(b, src, b.add(row, i64(v * lanes))), masks[v])
                            b.store(value, self._at(b, strip, b.add(out, i64(v * lanes))),
                                    align=ALIGN if (v * lanes * self.itemsize) % ALIGN == 0
                                    else self.itemsize)
            with strided:
                with for_range(b, nc, "j", step=self.nr) as j0:
                    strip = self._at(b, packed, b.mul(j0, kc))
                    cols = smin(b, b.sub(nc, j0), i64(self.nr), "cols")
                    # B = W.T (W's rows contiguous): whole strips go through registers a
                    # square of lanes x lanes at a time, transposed there
                    square = b.and_(b.icmp_signed("==", b_row, i64(1)),
                                    b.icmp_signed("==", cols, i64(self.nr)), name="square")
                    whole = b.select(square, b.mul(b.sdiv(kc, i64(lanes)), i64(lanes)),
                                     i64(0), name="whole")
                    with for_range(b, whole, "p", step=lanes) as p0:
                        self._transposed_squares(b, strip, src, j0, p0, b_col)
                    starts = [b.mul(b.add(j0, smin(b, i64(j), b.sub(cols, i64(1)), "")),
                                    b_col) for j in range(self.nr)]
                    keep = [b.icmp_signed("<", i64(j), cols) for j in range(self.nr)]
                    with for_range(b, kc, "p", start=whole) as p:
                        row = b.mul(p, b_row)
                        out = b.mul(p, i64(self.nr))
                        for j in range(self.nr):
                            value = b.load(self._at(b, src, b.add(row, starts[j])),
                                           typ=self.t)
                            b.store(b.select(keep[j], value, zero),
                                    self._at(b, strip, b.add(out, i64(j))))
        b.ret_void()
        return f

    def _transposed_squares(self, b: ir.IRBuilder, strip: ir.Value, src: ir.Value,
                            j0: ir.Value, p0: ir.Value, b_col: ir.Value) -> None:
        """Rows p0 .. p0+lanes-1 of a whole strip of B = W.T: for each square of the
        strip, `lanes` vector loads along W's rows, a transpose in registers, `lanes`
        vector stores into the strip."""
        lanes = self.lanes
        for v in range(self.blocks.vectors):
            rows = [b.load(self._at(b, src, b.add(b.mul(b.add(j0, i64(v * lanes + j)), b_col),
                                                  p0)), typ=self.vt, align=self.itemsize)
                    for j in range(lanes)]
            for p, row in enumerate(transpose_square(b, rows)):
                out = b.add(b.mul(b.add(p0, i64(p)), i64(self.nr)), i64(v * lanes))
                b.store(row, self._at(b, strip, out),
                        align=ALIGN if (v * lanes * self.itemsize) % ALIGN == 0
                        else self.itemsize)

    # -------------------------------------------------------------------- vectors


def smin(b: ir.IRBuilder, x: ir.Value, y: ir.Value, name: str) -> ir.Value:
    return b.select(b.icmp_signed("<", x, y), x, y, name=name)


def round_up(b: ir.IRBuilder, x: ir.Value, multiple: int) -> ir.Value:
    return b.mul(b.sdiv(b.add(x, i64(multiple - 1)), i64(multiple)), i64(multiple))
