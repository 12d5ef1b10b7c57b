"""The prebuilt `product` (backends/llvm/products.py), which picks how each product is
computed when it runs, called alone: for every form (either operand read transposed) and
sizes on both sides of each boundary (k at the dot-product length, the work at the large
route's threshold and at the thread pool's), C against NumPy; and the route the machine
code took against the route table `routes`, through the one trace a route leaves: the loop
nest copies a transposed B into `scratch`, the other routes read B in place. `routes`
with sizes unknown at compile time covers every route the known sizes could take."""

from __future__ import annotations

import ctypes
import itertools

import numpy as np
import pytest

from bpcompile.backends.llvm import dot, prebuilt, products, split
from bpcompile.backends.llvm.blas import find_blas
from bpcompile.backends.llvm.jit import host, vector_bytes
from bpcompile.backends.llvm.products import Route, routes

I64 = ctypes.c_int64
PRODUCT = ctypes.CFUNCTYPE(None, *[ctypes.c_void_p] * 4, *[I64] * 4)
TOLERANCE = {"float64": 1e-13, "float32": 3e-6}
FORMS = list(itertools.product((False, True), repeat=2))


def lanes(dtype: str) -> int:
    return vector_bytes() // np.dtype(dtype).itemsize


def boundary_sizes(dtype: str) -> list[tuple[int, int, int]]:
    """(m, n, k) just under and at the dot products' k, the pool's work and the large
    route's work, whichever form."""
    long_k = dot.MIN_VECTORS * lanes(dtype)
    sizes = [(5, 7, long_k - 1), (5, 7, long_k), (3, 130, long_k + 3), (1, 40, 2 * long_k),
             (2, 3, 4), (64, 512, 1)]
    pool = split.PARALLEL_WORK
    sizes += [(pool // 64 // 8 - 1, 64, 8), (pool // 64 // 8, 64, 8)]
    itemsize = np.dtype(dtype).itemsize
    for b_t in (False, True):
        threshold = products.large_threshold(itemsize, b_t, find_blas() is not None)
        side = round(threshold ** (1 / 3))
        sizes += [(side - 1, side, side), (side, side, side)]
    return sorted(set(sizes))


def call_product(a: np.ndarray, b: np.ndarray, m: int, n: int, k: int, a_t: bool,
                 b_t: bool) -> tuple[np.ndarray, np.ndarray]:
    """C, and the scratch buffer as the call left it (NaN where it was not written)."""
    dtype = str(a.dtype)
    c = np.full((m, n), np.nan, dtype)
    scratch = np.full(k * n, np.nan, dtype)
    call = PRODUCT(prebuilt.address("product", dtype, vector_bytes()))
    call(c.ctypes.data, a.ctypes.data, b.ctypes.data, scratch.ctypes.data, m, n, k,
         products.form_of(a_t, b_t))
    return c, scratch


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("a_t, b_t", FORMS)
def test_each_route_computes_the_product_the_table_names(dtype: str, a_t: bool,
                                                         b_t: bool) -> None:
    for m, n, k in boundary_sizes(dtype):
        rng = np.random.default_rng(m + 7 * n + 31 * k)
        a = rng.normal(size=(k, m) if a_t else (m, k)).astype(dtype)
        b = rng.normal(size=(n, k) if b_t else (k, n)).astype(dtype)
        c, scratch = call_product(a, b, m, n, k, a_t, b_t)
        want = (a.T if a_t else a).astype(np.float64) @ (b.T if b_t else b).astype(np.float64)
        scale = TOLERANCE[dtype] * max(1.0, np.sqrt(k)) * 4
        np.testing.assert_allclose(c, want, rtol=0, atol=scale, err_msg=f"{m}x{n}x{k}")
        (route,) = routes(m, n, k, a_t, b_t, np.dtype(dtype).itemsize, lanes(dtype),
                          find_blas() is not None)
        copied = not np.isnan(scratch).all()
        assert copied == (b_t and route is Route.LOOP_NEST), (m, n, k, route)
        if copied:  # the loop nest's copy of B transposed, exactly
            np.testing.assert_array_equal(scratch.reshape(k, n), b.T)


def test_the_table_with_unknown_sizes_covers_every_known_route() -> None:
    """A size bound at run time: the routes said for it hold the route of every value."""
    for itemsize, lane_count, blas in itertools.product((4, 8), (4, 8, 16), (False, True)):
        long_k = dot.MIN_VECTORS * lane_count
        values = [1, 3, long_k - 1, long_k, 64, 300, 4096]
        for a_t, b_t in FORMS:
            for m, n, k in itertools.product(values, repeat=3):
                (known,) = routes(m, n, k, a_t, b_t, itemsize, lane_count, blas)
                for hidden in itertools.product((False, True), repeat=3):
                    sizes = [None if h else v for h, v in zip(hidden, (m, n, k))]
                    assert known in routes(*sizes, a_t, b_t, itemsize, lane_count, blas), \
                        (m, n, k, hidden, a_t, b_t)


def test_dot_products_are_only_for_a_transposed_b_alone() -> None:
    """The dot route reads B's rows in place; with A transposed, or B not, it never
    applies, whatever the sizes."""
    for a_t, b_t in FORMS:
        said = routes(None, None, None, a_t, b_t, 4, 16, True)
        assert (Route.DOT in said) == (b_t and not a_t)
        assert Route.LARGE in said


def test_the_large_route_names_its_kernel_by_cpu_and_width() -> None:
    """BLAS unless the CPU is one where our packed GEMM measured faster for float32 products
    of that many columns; without BLAS always ours."""
    for cpu, columns in products.PACKED_OVER_BLAS.items():
        assert products.large_kernel(columns, 4, True, cpu) == ("packed",)
        assert products.large_kernel(columns - 1, 4, True, cpu) == ("blas",)
        assert products.large_kernel(None, 4, True, cpu) == ("blas", "packed")
        assert products.large_kernel(columns, 8, True, cpu) == ("blas",)
    assert products.large_kernel(4096, 4, True, "a cpu not measured") == ("blas",)
    assert products.large_kernel(4096, 8, False, "any") == ("packed",)


@pytest.mark.skipif(find_blas() is None or host()[0] not in products.PACKED_OVER_BLAS,
                    reason="our packed GEMM replaces BLAS only on the CPUs it measured "
                           "faster on, with BLAS present")
def test_wide_float32_products_take_our_packed_gemm_here() -> None:
    """On such a CPU a large float32 product with enough columns is our packed GEMM's, bit
    for bit as the packed GEMM called alone (its parts are whole tiles, each summed as one
    pass would)."""
    m, k = 64, 1000  # k past both GEMMs' cache blocks: their sums' rounding would differ
    n = products.PACKED_OVER_BLAS[host()[0]] * 2
    assert m * n * k >= products.large_threshold(4, False, True)
    rng = np.random.default_rng(1)
    a = rng.normal(size=(m, k)).astype("float32")
    b = rng.normal(size=(k, n)).astype("float32")
    c, _ = call_product(a, b, m, n, k, False, False)
    alone = np.empty((m, n), "float32")
    packed = ctypes.CFUNCTYPE(None, *[ctypes.c_void_p] * 3, *[I64] * 8)(
        prebuilt.address("packed_product", "float32", vector_bytes()))
    packed(alone.ctypes.data, a.ctypes.data, b.ctypes.data, m, n, k, k, 1, n, 1, n)
    np.testing.assert_array_equal(c, alone)
