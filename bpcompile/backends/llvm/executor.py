"""The `llvm` backend's executor: JIT each entry point, keep its engine alive, fill pointer
tables and call one native function per entry point.

Arrays reach the checked entry points here already checked and converted by `CompiledNet`
(checks.py). `step` also has a native fast path (fastcall.py) that the network installs as
its `step` once compiled. Workspaces for intermediate values are allocated once per entry
and binding of the symbolic sizes, and reused.

Threads: the fast path releases the GIL while its kernel runs (fastcall.py), so other
Python threads run meanwhile; the checked calls hold it (PYFUNCTYPE) and take a lock around
filling their table and calling, so calls on one network never overlap. The fast path has
its own table and loss buffer, and shares step's workspace with the checked step: a
`busy` word set while a fast step runs keeps the two apart (a fast step finding it set
takes the checked path, which waits for it).
"""

from __future__ import annotations

import contextlib
import ctypes
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import llvmlite  # the package's version only: its binding loads with the first code
import numpy as np

from ..._version import __version__
from ...errors import BPNumericError
from ...graph.shapes import Shape
from ...runtime import cache
from ...runtime.net import Compiled
from ...runtime.randomness import RNG
from ...runtime.signature import Signature
from .blas import find_blas
from .fastcall import BUSY, TRY_BUSY
from .fastpath import Context, array_fields, builtin, python_symbols
from .layout import ALIGN, Layout, layout_of, workspace_bytes

if TYPE_CHECKING:
    from .codegen import Program
    from .jit import Engine

Arrays = dict[str, np.ndarray]
# PYFUNCTYPE keeps the GIL during the call: no other thread can touch a table meanwhile.
ENTRY = ctypes.PYFUNCTYPE(ctypes.c_int32, ctypes.c_void_p, ctypes.c_void_p)
MAX_WORKSPACES = 8  # per entry point: one per recent batch size


# LLVM's binding (a large shared library) and the code generator (SymPy) load the first
# time code is needed, not when a network is opened: these call into them.


def compile_ir(ir_text: str, object_code: bytes | None = None,
               symbols: dict[str, int] | None = None) -> tuple[Engine, bytes]:
    from .jit import compile_ir as compile_module

    return compile_module(ir_text, object_code=object_code, symbols=symbols)


def generate(*args: object, **kwargs: object) -> Program:
    from .codegen import generate as generate_module

    return generate_module(*args, **kwargs)


def vector_bytes() -> int:
    from .jit import vector_bytes as widest

    return widest()


def object_key(signature: Signature, dtype: np.dtype, entry: str) -> str:
    """Everything that decides an entry point's machine code."""
    from .jit import host

    cpu, features = host()
    blas = find_blas()
    return cache.key("object", __version__, llvmlite.__version__, cpu, features,
                     repr(blas and (blas.sgemm, blas.dgemm, blas.int_bits)),
                     repr(array_fields()), dtype.name, entry, signature.filename,
                     signature.source, signature.mode)


def external_symbols() -> dict[str, int]:
    """Functions compiled code may call: the Python C-API (fast path) and BLAS."""
    blas = find_blas()
    return {**python_symbols(), **(blas.symbols() if blas is not None else {})}


class Table:
    """A pointer table and sizes array, as an entry function reads them."""

    def __init__(self, layout: Layout, dtype: np.dtype):
        self.pointers = (ctypes.c_void_p * layout.size)()
        self.dims = (ctypes.c_int64 * max(1, len(layout.dims)))()
        self.loss = np.zeros(1, dtype=dtype)
        self.pointers[layout.loss] = self.loss.ctypes.data


class LLVMExecutor:
    """Each entry point is its own module, compiled the first time it is called (or loaded
    from the disk cache): a training loop pays for `step` (and `forward`, if it evaluates),
    not for all four."""

    def __init__(self, signature: Signature, dtype: np.dtype, compiled: Callable[[], Compiled]):
        self.signature = signature
        self.compiled = compiled
        self.dtype = dtype
        self.workspace_shapes: dict[str, list[Shape]] = {}
        self.engines: dict[str, Engine] = {}  # kept alive as long as this executor
        self.entries: dict[str, Callable[..., int]] = {}
        self.layout = layout_of(signature)
        self.tables: dict[str, Table] = {}
        self.workspaces: dict[str, dict[tuple[int, ...], np.ndarray]] = {}
        self.lock = threading.Lock()
        self.output_shapes = dict(signature.output_shapes)
        self.fast_step = None  # the builtin, once `step` is compiled
        self._fast_keepalive: list[object] = []

    @property
    def code(self) -> str:
        """The IR of every entry point with the prebuilt library linked in: one module, so
        the text is a whole program that LLVM's parser and tools accept (two modules'
        texts one after the other are not: each repeats the other's definitions)."""
        import llvmlite.binding as llvm

        from .prebuilt import library_ir
        from .threads import pool_ir

        network = llvm.parse_assembly(generate(self.compiled(), self.signature, self.dtype.name,
                                               vector_bytes()).ir)
        # the entry points without the fast path (fastcall.py), so without its table walkers
        network.link_in(llvm.parse_assembly(library_ir(self.dtype.name, vector_bytes(),
                                                       fast_path=False)))
        network.link_in(llvm.parse_assembly(pool_ir()))
        network.name = self.signature.name
        return (f"; network {self.signature.name} ({self.dtype.name}): every entry point, "
                f"then the prebuilt library (prebuilt.py) its kernels call and the thread "
                f"pool (threads.py)\n{network}")

    # ---------------------------------------------------------------- compiling

    def _entry(self, entry: str) -> Callable[..., int]:
        function = self.entries.get(entry)
        if function is None:
            engine, shapes = self._engine(entry)
            self.workspace_shapes[entry], self.engines[entry] = shapes, engine
            self.tables[entry] = Table(self.layout, self.dtype)
            function = self.entries[entry] = ENTRY(engine.address(f"bpc_{entry}"))
        return function

    def _engine(self, entry: str) -> tuple[Engine, list[Shape]]:
        """The compiled entry point, from the disk cache if it holds it, else compiled (and
        stored there); with the shapes of its workspace buffers."""
        from . import threads
        from .prebuilt import load

        load(self.dtype.name, vector_bytes())
        threads.load()
        name = object_key(self.signature, self.dtype, entry) + ".o"
        cached = cache.load(name)
        if cached is not None:
            header, object_code = cached
            engine, _ = compile_ir("", object_code=object_code, symbols=external_symbols())
            return engine, [tuple(shape) for shape in header["workspace"]]
        program = generate(self.compiled(), self.signature, self.dtype.name, vector_bytes(),
                           (entry,), fast=entry == "step")
        engine, object_code = compile_ir(program.ir, symbols=external_symbols())
        shapes = program.workspace[entry]
        if object_code:
            cache.store(name, {"workspace": [list(s) for s in shapes]}, object_code)
        return engine, shapes

    def install_fast_step(self, fallback: Callable[..., float]) -> object | None:
        """The native `step` builtin (once step is compiled), with `fallback` as its checked
        path; None where the fast path is unavailable."""
        if self.fast_step is not None or "step" not in self.engines:
            return self.fast_step
        engine = self.engines["step"]
        address = engine.address("bpc_fast_step")
        if not address:
            return None
        context = Context(self.layout)
        ctx = (ctypes.c_void_p * context.size).from_address(
            engine.engine.get_global_value_address("bpc_ctx"))
        self.fast_table = Table(self.layout, self.dtype)
        ctx[Context.TABLE] = ctypes.addressof(self.fast_table.pointers)
        ctx[Context.LOSS] = self.fast_table.loss.ctypes.data
        ctx[Context.NDARRAY] = id(np.ndarray)
        ctx[Context.DICT] = id(dict)
        ctx[Context.DESCR] = id(self.dtype)
        keys = [sys.intern(RNG), np.dtype(np.uint64)]
        ctx[Context.RNG], ctx[Context.RNG_DESCR] = id(keys[0]), id(keys[1])
        for kind, names in (("param", self.layout.params), ("state", self.layout.state),
                            ("data", self.layout.data)):
            for name in names:
                key = sys.intern(name)
                keys.append(key)
                ctx[context.key(kind, name)] = id(key)
        self.fast_bound = (ctypes.c_int64 * (len(self.layout.dims) + 1)).from_address(
            engine.engine.get_global_value_address("bpc_bound_dims"))
        self._busy = ctypes.c_int32.from_address(engine.engine.get_global_value_address(BUSY))
        self._try_busy = ctypes.PYFUNCTYPE(ctypes.c_int32)(engine.address(TRY_BUSY))
        function, definition = builtin(address, fallback, "step",
                                       "One training step (native fast path).")
        self._fast_keepalive += [keys, definition, fallback]
        self.fast_step = function
        if getattr(self, "_last_step_sizes", None) is not None:
            with self.lock:  # so the very next call runs natively, at these sizes
                self._bind_fast_workspace(self._last_step_sizes)
        return function

    @contextlib.contextmanager
    def _not_fast(self) -> Iterator[None]:
        """While the checked step runs: no fast step, which shares step's workspace (and
        runs without the GIL), running in another thread. Waits for one that is."""
        if self.fast_step is None:
            yield
            return
        while not self._try_busy():
            time.sleep(0)  # lets the fast step's thread take the GIL back and finish
        try:
            yield
        finally:
            self._busy.value = 0

    def _bind_fast_workspace(self, sizes: dict[str, int]) -> None:
        """Point the fast path's table at step's workspace for `sizes`."""
        key = tuple(sizes.get(d, 0) for d in self.layout.dims)
        self._workspace("step", sizes)  # allocates it if it was evicted
        buffer = self.workspaces["step"][key]
        self._fast_workspace = buffer  # kept alive while the fast table points into it
        address = buffer.ctypes.data
        self.fast_table.pointers[self.layout.workspace] = address + (-address % ALIGN)
        # dropout's masks, which the fast step draws for each step, for these sizes
        self._fast_masks = {name: self._empty(info.shape, sizes)
                            for name, info in self.signature.masks.items()}
        for name, mask in self._fast_masks.items():
            self.fast_table.pointers[self.layout.data_slot(name)] = mask.ctypes.data
        for k, name in enumerate(self.layout.dims):
            self.fast_bound[k] = sizes[name]
        self.fast_bound[len(self.layout.dims)] = 1  # the workspace is set

    # ----------------------------------------------------------------- plumbing

    def _workspace(self, entry: str, sizes: dict[str, int]) -> int:
        """The aligned address of `entry`'s workspace for these sizes."""
        key = tuple(sizes.get(d, 0) for d in self.layout.dims)
        buffers = self.workspaces.setdefault(entry, {})
        buffer = buffers.get(key)
        if buffer is None:
            if len(buffers) >= MAX_WORKSPACES:
                buffers.pop(next(iter(buffers)))
            needed = workspace_bytes(self.workspace_shapes[entry], sizes, self.dtype.itemsize)
            buffer = buffers[key] = np.empty(needed + ALIGN, dtype=np.uint8)
        address = buffer.ctypes.data
        return address + (-address % ALIGN)

    def _bind(self, entry: str, p: Arrays, data: Arrays, sizes: dict[str, int],
              s: Arrays | None = None) -> Table:
        self._entry(entry)
        layout, table = self.layout, self.tables[entry]
        for name in layout.params:
            table.pointers[layout.param(name)] = p[name].ctypes.data
        for name, array in data.items():
            table.pointers[layout.data_slot(name)] = array.ctypes.data
        for name in layout.state if s is not None else ():
            table.pointers[layout.state_slot(name)] = s[name].ctypes.data
        for k, name in enumerate(layout.dims):
            # a dim only targets have is unknown to forward, whose code never reads it
            table.dims[k] = sizes.get(name, 0)
        table.pointers[layout.workspace] = self._workspace(entry, sizes)
        return table

    def _call(self, entry: str, table: Table) -> int:
        return self.entries[entry](ctypes.addressof(table.pointers),
                                   ctypes.addressof(table.dims))

    def _empty(self, shape: tuple, sizes: dict[str, int]) -> np.ndarray:
        concrete = tuple(d if isinstance(d, int) else sizes[d] for d in shape)
        return np.empty(concrete, dtype=self.dtype)

    # ------------------------------------------------------------- entry points

    def forward(self, p: Arrays, data: Arrays, sizes: dict[str, int]) -> Arrays:
        outputs = {name: self._empty(self.output_shapes[name], sizes)
                   for name in self.layout.outputs}
        with self.lock:
            table = self._bind("forward", p, data, sizes)
            for name, array in outputs.items():
                table.pointers[self.layout.output(name)] = array.ctypes.data
            self._call("forward", table)
        return outputs

    def loss(self, p: Arrays, data: Arrays, sizes: dict[str, int]) -> float:
        with self.lock:
            table = self._bind("loss", p, data, sizes)
            self._call("loss", table)
            return float(table.loss[0])

    def value_and_grad(self, p: Arrays, data: Arrays,
                       sizes: dict[str, int]) -> tuple[float, Arrays]:
        grads = {name: np.empty(info.shape, dtype=self.dtype)
                 for name, info in self.signature.trained.items()}
        with self.lock:
            table = self._bind("value_and_grad", p, data, sizes)
            for name, array in grads.items():
                table.pointers[self.layout.grad(name)] = array.ctypes.data
            self._call("value_and_grad", table)
            return float(table.loss[0]), grads

    def step(self, p: Arrays, s: Arrays, data: Arrays, sizes: dict[str, int]) -> float:
        with self.lock, self._not_fast():
            table = self._bind("step", p, data, sizes, s)
            status = self._call("step", table)
            loss = float(table.loss[0])
            self._last_step_sizes = sizes
            if self.fast_step is not None:  # let the fast path use this batch size next
                self._bind_fast_workspace(sizes)
        if status:
            raise BPNumericError(f"step: {self.describe_status(status, loss)}; "
                                 f"step changed nothing")
        return loss

    def apply_gradients(self, p: Arrays, s: Arrays, grads: Arrays) -> None:
        with self.lock:
            table = self._bind("apply_gradients", p, {}, {}, s)
            for name, array in grads.items():
                table.pointers[self.layout.grad(name)] = array.ctypes.data
            status = self._call("apply_gradients", table)
        if status:
            raise BPNumericError(f"apply_gradients: {self.describe_status(status, 0.0)}; "
                                 f"apply_gradients changed nothing")

    def describe_status(self, status: int, loss: float) -> str:
        if status == 1:
            return f"the loss is {loss}"
        # status 2 + k names trained param k: buffers (batch norm's statistics) have no
        # gradient, so they are not counted
        return f"the gradient of {list(self.signature.trained)[status - 2]} is not finite"
