"""The BLAS NumPy ships with (OpenBLAS), found in the process: its gemm symbols and integer
width. Large products call it; it is part of what decides a network's machine code."""

from __future__ import annotations

import ctypes
import glob
import os
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

# Products of at least this many multiply-adds go to BLAS, the loop nest takes the rest
# (measured; see benchmarks/).
BLAS_THRESHOLD = 1 << 21
# In float64, where the loop nest reads B as it is (it copies a transposed B first), it beat
# dgemm up to about 2**26 multiply-adds (2 cores of an Intel Xeon, Emerald Rapids, with
# OpenBLAS's SkylakeX kernels; 1797x64 @ 64x64, the product of the full-batch digits step:
# 157 us against 240; 256x784 @ 784x256: 981 against 1,230). Keyed by (item size, B
# transposed).
BLAS_THRESHOLDS = {(4, False): BLAS_THRESHOLD, (4, True): BLAS_THRESHOLD,
                   (8, False): 1 << 26, (8, True): BLAS_THRESHOLD}
SET_THREADS = "openblas_set_num_threads_local"
ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112


@dataclass(frozen=True)
class Blas:
    """A CBLAS gemm found in the process: its symbol names and integer width."""

    library: str
    sgemm: str
    dgemm: str
    int_bits: int
    # `int openblas_set_num_threads_local(int)` (OpenBLAS 0.3.27 and later): sets the
    # threads BLAS calls use and returns the count it replaces. Present, a step's products
    # run on the step's own threads (matmul.py), BLAS's set to one for them.
    set_threads: str | None = None

    def symbols(self) -> dict[str, int]:
        lib = ctypes.CDLL(self.library)
        names = (self.sgemm, self.dgemm) + ((self.set_threads,) if self.set_threads else ())
        return {name: ctypes.cast(getattr(lib, name), ctypes.c_void_p).value for name in names}


@lru_cache(maxsize=1)
def find_blas() -> Blas | None:
    """The OpenBLAS bundled with NumPy's wheels, or None (then every matmul is a loop
    nest). Set BPCOMPILE_NO_BLAS=1 to measure the loop nests alone."""
    if os.environ.get("BPCOMPILE_NO_BLAS"):
        return None
    root = os.path.dirname(os.path.dirname(np.__file__))
    patterns = [os.path.join(root, "numpy.libs", "libscipy_openblas*"),
                os.path.join(os.path.dirname(np.__file__), ".dylibs", "libscipy_openblas*")]
    names = [("scipy_cblas_sgemm64_", "scipy_cblas_dgemm64_", 64),
             ("scipy_cblas_sgemm", "scipy_cblas_dgemm", 32),
             ("cblas_sgemm64_", "cblas_dgemm64_", 64)]
    for pattern in patterns:
        for path in sorted(glob.glob(pattern)):
            try:
                lib = ctypes.CDLL(path)
            except OSError:
                continue
            for sgemm, dgemm, bits in names:
                if hasattr(lib, sgemm) and hasattr(lib, dgemm):
                    set_threads = SET_THREADS if hasattr(lib, SET_THREADS) else None
                    return Blas(path, sgemm, dgemm, bits, set_threads)
    return None
