"""The packed GEMM (backends/llvm/gemm.py) called alone, against NumPy in float64: every
edge of its blocking (sizes of 1, sizes just past a tile, a cache block or a panel), both
operands read transposed through their strides, a C with rows longer than the product's,
k = 0, and the small blocks it packs on the stack when it cannot allocate. The edges are
tried at every vector width up to the host's (16, 32 and 64 bytes: SSE2's, AVX2's and
AVX-512's tiles), each a prebuilt library of its own."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bpcompile.backends.llvm import prebuilt
from bpcompile.backends.llvm.jit import vector_bytes
from bpcompile.backends.llvm.packing import blocking

I64 = ctypes.c_int64
PRODUCT = ctypes.CFUNCTYPE(None, *[ctypes.c_void_p] * 3, *[I64] * 8)
GEMM = ctypes.CFUNCTYPE(None, *[ctypes.c_void_p] * 3, *[I64] * 8, *[ctypes.c_void_p] * 2,
                        *[I64] * 3)
TOLERANCE = {"float64": 1e-13, "float32": 3e-6}


WIDTHS = [w for w in (16, 32, 64) if w <= vector_bytes()]


def blocks(dtype: str, narrow: bool = False, width: int | None = None):
    return blocking(width or vector_bytes(), np.dtype(dtype).itemsize, narrow)


def lanes(dtype: str, width: int | None = None) -> int:
    return (width or vector_bytes()) // np.dtype(dtype).itemsize


def operands(m: int, n: int, k: int, dtype: str, a_t: bool, b_t: bool, seed: int = 0):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(k, m) if a_t else (m, k)).astype(dtype)
    b = rng.normal(size=(n, k) if b_t else (k, n)).astype(dtype)
    return a, b


def strides(m: int, n: int, k: int, a_t: bool, b_t: bool) -> list[int]:
    return [*((1, m) if a_t else (k, 1)), *((1, k) if b_t else (n, 1))]


def product(c: np.ndarray, a: np.ndarray, b: np.ndarray, m: int, n: int, k: int,
            a_t: bool, b_t: bool, width: int | None = None) -> None:
    call = PRODUCT(prebuilt.address("packed_product", str(c.dtype), width or vector_bytes()))
    call(c.ctypes.data, a.ctypes.data, b.ctypes.data, m, n, k,
         *strides(m, n, k, a_t, b_t), c.shape[1])


def expected(a: np.ndarray, b: np.ndarray, a_t: bool, b_t: bool) -> np.ndarray:
    return (a.T if a_t else a).astype(np.float64) @ (b.T if b_t else b).astype(np.float64)


def assert_product(c: np.ndarray, want: np.ndarray, k: int) -> None:
    # each element a sum of k products of normal numbers: error grows like sqrt(k)
    scale = TOLERANCE[str(c.dtype)] * max(1.0, np.sqrt(k)) * 4
    np.testing.assert_allclose(c, want, rtol=0, atol=scale)


def edge_sizes(dtype: str, width: int | None = None) -> list[tuple[int, int, int]]:
    """Sizes at each blocking edge: one row or column, a tile and one more, MC, KC and
    NC and one more."""
    bl, nb = blocks(dtype, width=width), blocks(dtype, narrow=True, width=width)
    v = lanes(dtype, width)
    nr = bl.vectors * v
    wide = [(1, 1, 1), (1, 300, 70), (300, 1, 70), (bl.mr, nr, 5), (bl.mr + 1, nr + 1, 3),
            (bl.mr - 1, nr - 1, bl.kc + 1), (bl.mc + 1, 2 * nr + 3, bl.kc),
            (bl.mc, 17, 2 * bl.kc + 1), (7, bl.nc + 1, 9), (2 * bl.mc + 5, bl.nc, 31)]
    # at most a vector's worth of columns: the narrow tile
    narrow = [(nb.mr, v, 5), (nb.mr + 1, v - 1, nb.kc + 1), (nb.mc + 1, 10, 2 * nb.kc + 3),
              (nb.mr - 1, 1, 40), (3 * nb.mc + 7, v, nb.kc)]
    return wide + narrow


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("a_t, b_t", [(False, False), (True, False), (False, True),
                                      (True, True)])
def test_every_blocking_edge_matches_numpy(dtype: str, a_t: bool, b_t: bool,
                                           width: int) -> None:
    for m, n, k in edge_sizes(dtype, width):
        a, b = operands(m, n, k, dtype, a_t, b_t)
        c = np.full((m, n), np.nan, dtype=dtype)
        product(c, a, b, m, n, k, a_t, b_t, width)
        assert_product(c, expected(a, b, a_t, b_t), k)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_a_block_of_a_wider_c_leaves_the_rest_alone(dtype: str) -> None:
    """ldc > n: the product writes its columns of C's rows and nothing past them, as a
    part of a product split over threads does."""
    m, n, k, width = 37, 45, 29, 80
    a, b = operands(m, n, k, dtype, False, False)
    c = np.full((m, width), -7.0, dtype=dtype)
    product(c, a, b, m, n, k, False, False)
    assert_product(c[:, :n], expected(a, b, False, False), k)
    assert np.all(c[:, n:] == -7.0)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_nothing_to_sum_gives_zeros(dtype: str) -> None:
    c = np.full((5, 6), np.nan, dtype=dtype)
    empty = np.zeros((5, 0), dtype=dtype)
    product(c, empty, np.zeros((0, 6), dtype=dtype), 5, 6, 0, False, False)
    assert np.all(c == 0)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("narrow", [False, True])
def test_small_blocks_give_the_same_product(dtype: str, narrow: bool) -> None:
    """The blocks `product` falls back to without memory (one tile, a quarter of KC),
    through `gemm` itself with buffers of exactly that size: the same numbers."""
    bl = blocks(dtype, narrow)
    nr = bl.vectors * lanes(dtype)
    m, n, k = 2 * bl.mr + 3, (nr - 3) if narrow else 3 * nr + 5, bl.kc + 7
    a, b = operands(m, n, k, dtype, True, True)
    kc = bl.kc // 4
    packed_a = np.zeros(bl.mr * kc + 64, dtype=dtype)
    packed_b = np.zeros(kc * nr + 64, dtype=dtype)
    c = np.full((m, n), np.nan, dtype=dtype)
    gemm = GEMM(prebuilt.address("gemm_narrow" if narrow else "gemm", dtype, vector_bytes()))
    gemm(c.ctypes.data, a.ctypes.data, b.ctypes.data, m, n, k, *strides(m, n, k, True, True),
         n, aligned(packed_a), aligned(packed_b), bl.mr, kc, nr)
    assert_product(c, expected(a, b, True, True), k)


def aligned(array: np.ndarray) -> int:
    """The first 64-aligned address inside `array` (which has 64 bytes to spare)."""
    return -(-array.ctypes.data // 64) * 64


@settings(max_examples=40, deadline=None, derandomize=True)
@given(m=st.integers(1, 130), n=st.integers(1, 150), k=st.integers(1, 300),
       a_t=st.booleans(), b_t=st.booleans(), dtype=st.sampled_from(["float64", "float32"]))
def test_any_shape_matches_numpy(m: int, n: int, k: int, a_t: bool, b_t: bool,
                                 dtype: str) -> None:
    a, b = operands(m, n, k, dtype, a_t, b_t, seed=m * n + k)
    c = np.full((m, n), np.nan, dtype=dtype)
    product(c, a, b, m, n, k, a_t, b_t)
    assert_product(c, expected(a, b, a_t, b_t), k)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_the_transpose_kernel_at_every_square_edge(dtype: str) -> None:
    """The loop nest's transpose (a W.T it reads row by row): squares of lanes x lanes
    through registers, the rows and columns past them element by element."""
    lanes = vector_bytes() // np.dtype(dtype).itemsize
    transpose = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, I64, I64)(
        prebuilt.address("transpose", dtype, vector_bytes()))
    rng = np.random.default_rng(4)
    for rows, cols in [(1, 1), (lanes, lanes), (lanes + 1, 2 * lanes + 3), (3, 5 * lanes),
                       (4 * lanes, 2), (lanes - 1, lanes - 1), (2 * lanes, 3 * lanes)]:
        x = rng.normal(size=(rows, cols)).astype(dtype)
        out = np.full((cols, rows), np.nan, dtype=dtype)
        transpose(out.ctypes.data, x.ctypes.data, rows, cols)
        np.testing.assert_array_equal(out, x.T)
