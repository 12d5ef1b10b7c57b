"""One product C = op(A) @ op(B), computed whichever way pays for its sizes, chosen when it
runs: the prebuilt function (prebuilt.py) every plain matmul node calls.

    void product(ptr c, ptr a, ptr b, ptr scratch, i64 m, i64 n, i64 k, i64 form)

C is [m, n], dense. `form` says how A and B are read: A[i, p] at i * k + p, or with
A_TRANSPOSED at p * m + i (A = X.T read in place); B[p, j] at p * n + j, or with
B_TRANSPOSED at j * k + p (B = W.T read in place; `scratch`, k * n elements, is where the
loop nest copies it transposed). The routes, tried in this order (ROUTES):

    large      m * n * k at least the threshold (blas.py): BLAS, or without it our packed
               GEMM (gemm.py), either operand read transposed in place; on the CPUs
               PACKED_OVER_BLAS names, our packed GEMM for the float32 products it names
    dot        B transposed, A not, k at least dot.MIN_VECTORS vectors: dot products
               along k (dot.py), B's rows read in place
    loop nest  the rest (matmul.py), after B is copied transposed into `scratch` if it is
               read transposed

Deciding in the library rather than in each network's code takes every way of computing a
product, and the thread-pool tasks each way divides its work with, out of every network's
module: a quarter of a small network's IR, compiled once per machine instead of once per
network. The decision itself costs a few compares per product. `routes` says the same in
Python, for `bpcompile show` and for tests, which check it against the machine code.
"""

from __future__ import annotations

from enum import Enum
from itertools import product as every
from typing import TYPE_CHECKING

from llvmlite import ir

from . import dot
from .blas import BLAS_THRESHOLDS
from .gemm import PACKED_THRESHOLD
from .jit import host
from .loops import I64, PTR, i64, prebuilt_name
from .split import Split, divided

if TYPE_CHECKING:
    from .matmul import Matmul

A_TRANSPOSED, B_TRANSPOSED = 2, 1  # the bits of `form`
# CPUs (as LLVM names the host) where our packed GEMM beat OpenBLAS on large float32
# products whose C has at least this many columns. On 2 Zen 4 cores (benchmarks/gemm.py,
# the wide network's products) ours ran at 1.01x-1.12x OpenBLAS's speed with 784-1,024
# columns (172 GFLOP/s against 153-170) and OpenBLAS 2x ours with 10; 64 is set between the
# two, unmeasured. On the Intel Xeon measured before, OpenBLAS was up to 15% faster, so
# elsewhere BLAS stays.
PACKED_OVER_BLAS: dict[str, int] = {"znver4": 64}
SIGNATURE = ir.FunctionType(ir.VoidType(), [PTR, PTR, PTR, PTR, I64, I64, I64, I64])


class Route(Enum):
    LARGE = "large"
    DOT = "dot products"
    LOOP_NEST = "loop nest"


def form_of(a_transposed: bool, b_transposed: bool) -> int:
    return A_TRANSPOSED * a_transposed + B_TRANSPOSED * b_transposed


def large_kernel(n: int | None, itemsize: int, blas: bool, cpu: str) -> tuple[str, ...]:
    """What the large route may call for a product with C of n columns (None: bound when
    it runs): "blas", "packed", or either."""
    columns = PACKED_OVER_BLAS.get(cpu)
    if not blas:
        return ("packed",)
    if columns is None or itemsize != 4:
        return ("blas",)
    if n is None:
        return ("blas", "packed")
    return ("packed",) if n >= columns else ("blas",)


def large_threshold(itemsize: int, b_transposed: bool, blas: bool) -> int:
    """Multiply-adds from which a product takes the large route."""
    return BLAS_THRESHOLDS[itemsize, b_transposed] if blas else PACKED_THRESHOLD


def routes(m: int | None, n: int | None, k: int | None, a_transposed: bool,
           b_transposed: bool, itemsize: int, lanes: int, blas: bool) -> tuple[Route, ...]:
    """The routes a product may take, given the sizes known when it compiles (None: bound
    when it runs); exactly one when all three are known."""
    work = None if None in (m, n, k) else m * n * k  # type: ignore[operator]
    if work is not None and work >= large_threshold(itemsize, b_transposed, blas):
        return (Route.LARGE,)
    dot_form = b_transposed and not a_transposed
    long_k = None if k is None else k >= dot.MIN_VECTORS * lanes
    small = (((Route.DOT,) if dot_form and long_k is not False else ()) +
             ((Route.LOOP_NEST,) if not dot_form or long_k is not True else ()))
    return ((Route.LARGE,) if work is None else ()) + small


def product_function(matmul: Matmul, transpose: ir.Function | None = None) -> ir.Function:
    """`product` in `matmul`'s module: declared, or defined when `transpose` (the prebuilt
    transpose kernel the loop nest copies B with) is given."""
    name = prebuilt_name("product", matmul.t, matmul.lanes)
    existing = matmul.module.globals.get(name)
    if existing is not None:
        return existing
    function = ir.Function(matmul.module, SIGNATURE, name)
    if transpose is not None:
        _define(function, matmul, transpose)
    return function


def _define(f: ir.Function, matmul: Matmul, transpose: ir.Function) -> None:
    f.attributes.add("noinline")
    names = ("c", "a", "b", "scratch", "m", "n", "k", "form")
    for arg, label in zip(f.args, names):
        arg.name = label
    c, a, b_ptr, scratch, m, n, k, form = f.args
    b = ir.IRBuilder(f.append_basic_block("entry"))
    a_transposed = b.icmp_signed("!=", b.and_(form, i64(A_TRANSPOSED)), i64(0), name="a_t")
    b_transposed = b.icmp_signed("!=", b.and_(form, i64(B_TRANSPOSED)), i64(0), name="b_t")
    work = b.mul(b.mul(m, n), k, name="work")
    blas = matmul.blas is not None
    threshold = b.select(b_transposed, i64(large_threshold(matmul.itemsize, True, blas)),
                         i64(large_threshold(matmul.itemsize, False, blas)), name="threshold")

    with b.if_then(b.icmp_signed(">=", work, threshold)):  # the large route, by form
        columns = PACKED_OVER_BLAS.get(host()[0]) if blas and matmul.itemsize == 4 else None
        packed = (b.icmp_signed(">=", n, i64(columns), name="packed") if columns is not None
                  else ir.Constant(ir.IntType(1), 0))
        done = b.append_basic_block("large.done")
        switch = b.switch(form, done)
        for a_t, b_t in every((False, True), repeat=2):
            case = b.append_basic_block(f"large.{'T' if a_t else 'N'}{'T' if b_t else 'N'}")
            switch.add_case(i64(form_of(a_t, b_t)), case)
            b.position_at_end(case)
            with b.if_else(packed) as (ours, theirs):
                with ours:
                    matmul.call_packed(b, c, a, a_t, b_ptr, b_t, m, n, k)
                with theirs:
                    matmul.call_large(b, c, a, a_t, b_ptr, b_t, m, n, k)
            b.branch(done)
        b.position_at_end(done)
        b.ret_void()

    itemsize = i64(matmul.itemsize)
    rows_of_c = b.mul(n, itemsize)
    dot_ok = b.and_(b_transposed, b.not_(a_transposed))
    long_k = b.icmp_signed(">=", k, i64(dot.MIN_VECTORS * matmul.lanes))
    with b.if_then(b.and_(dot_ok, long_k, name="dot")):  # A's and B's rows read in place
        divided(b, matmul.dot_function(), [c, a, b_ptr, m, n, k],
                Split(3, (rows_of_c, b.mul(k, itemsize))), work)
        b.ret_void()

    with b.if_then(b_transposed):
        b.call(transpose, [scratch, b_ptr, n, k])
    right = b.select(b_transposed, scratch, b_ptr, name="right")
    a_row = b.select(a_transposed, i64(1), k, name="a_row")
    a_col = b.select(a_transposed, m, i64(1), name="a_col")
    # C's rows divide over the threads: a part reads its rows of A and all of B
    divided(b, matmul.function(), [c, a, right, m, n, k, a_row, a_col],
            Split(3, (rows_of_c, b.mul(a_row, itemsize))), work)
    b.ret_void()
