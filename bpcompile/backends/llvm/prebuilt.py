"""The prebuilt library: kernels that do not depend on the network (every way of computing a
product and the function that picks one, the softmax family, cross-entropy, transpose, the
finiteness check, the fast path's array check and its walks over a network's arrays),
compiled once per dtype and machine and kept in the disk cache. Network modules declare
them; their addresses are registered with LLVM before a network's module is finalized.

Compiling these once instead of inside every network's module takes the largest and most
repeated part out of each network's compile time.
"""

from __future__ import annotations

import llvmlite
import llvmlite.binding as llvm
from llvmlite import ir

from ...runtime import cache
from . import fastbind, threads
from .blas import find_blas
from .fastcall import array_data_function
from .fastpath import array_fields, python_symbols
from .jit import Engine, compile_ir, host
from .loops import prebuilt_name
from .mathlib import FORMATS, MathFunctions
from .matmul import Matmul
from .products import product_function

ALONG_AXIS = ("softmax", "log_softmax", "logsumexp", "argmax_onehot", "argmax")


def library_ir(dtype: str, vector_bytes: int, blas: bool = True, fast_path: bool = True
               ) -> str:
    """The prebuilt library's module for one dtype and vector width; without `blas`, large
    products take our packed GEMM, and without `fast_path`, the fast step's table walkers
    (which call Python) are left out: exported C calls neither."""
    from .kernels import (
        Kernels,  # SymPy's expression compiler: only when compiling anew
    )

    module = ir.Module(name=f"bpcompile_prebuilt_{dtype}")
    lib = MathFunctions(module, dtype)
    matmul = Matmul(module, lib, vector_bytes, prebuilt=True, blas=blas)
    matmul.function()
    matmul.dot_function()
    kernels = Kernels(module, lib, matmul.lanes, prebuilt=True)
    product_function(matmul, kernels.transpose())
    for kind in ALONG_AXIS:
        kernels.along_axis(kind)
    kernels.softmax_cross_entropy()
    kernels.transpose()
    kernels.non_finite()
    array_data = array_data_function(module, array_fields(),
                                     prebuilt_name("array_data", lib.t, 0))
    if fast_path:
        fastbind.define(module, lib.t, array_data)
    return str(module)


_LOADED: dict[tuple[str, int], Engine] = {}  # kept for the life of the process


def load(dtype: str, vector_bytes: int) -> None:
    """Compile (or load from the disk cache) the library, and register its functions. Its
    products call the thread pool, loaded first, and BLAS."""
    if (dtype, vector_bytes) in _LOADED:
        return
    threads.load()
    engine = _engine(dtype, vector_bytes)
    _LOADED[(dtype, vector_bytes)] = engine
    for name in _function_names(dtype, vector_bytes):
        llvm.add_symbol(name, engine.address(name))


def address(kernel: str, dtype: str, vector_bytes: int) -> int:
    """The address of one of the library's kernels ("matmul", "packed_product", ...),
    loading the library first: for calling a kernel alone (tests, benchmarks/gemm.py)."""
    load(dtype, vector_bytes)
    return _LOADED[(dtype, vector_bytes)].address(
        prebuilt_name(kernel, FORMATS[dtype].type, _lanes(dtype, vector_bytes)))


def _lanes(dtype: str, vector_bytes: int) -> int:
    return vector_bytes // (8 if dtype == "float64" else 4)


def _function_names(dtype: str, vector_bytes: int) -> tuple[str, ...]:
    """The symbols `library_ir` defines (as `prebuilt_name` spells them)."""
    t, lanes = FORMATS[dtype].type, _lanes(dtype, vector_bytes)
    kernels = ("product", "matmul", "matmul_nt", "gemm", "gemm_narrow", "packed_product",
               *ALONG_AXIS, "softmax_cross_entropy", "transpose", "non_finite")
    fast_path = ("array_data", *fastbind.SIGNATURES)
    return (*(prebuilt_name(k, t, lanes) for k in kernels),
            *(prebuilt_name(k, t, 0) for k in fast_path))


def _engine(dtype: str, vector_bytes: int) -> Engine:
    cpu, features = host()
    blas = find_blas()
    symbols = {**python_symbols(), **(blas.symbols() if blas is not None else {})}
    name = cache.key("runtime library", llvmlite.__version__, cpu, features, dtype,
                     str(vector_bytes), repr(array_fields()), repr(blas and (
                         blas.sgemm, blas.dgemm, blas.int_bits, blas.set_threads))) + ".o"
    cached = cache.load(name)
    if cached is not None:
        engine, _ = compile_ir("", object_code=cached[1], symbols=symbols)
        return engine
    engine, object_code = compile_ir(library_ir(dtype, vector_bytes, blas is not None),
                                     symbols=symbols)
    if object_code:
        cache.store(name, {"library": dtype}, object_code)
    return engine
