"""The `llvm` backend's executor: JIT the program, keep its engine alive, fill the pointer
table, and call one native function per entry point.

Arrays arrive here already checked and converted by `CompiledNet` (see checks.py). The
workspace for intermediate values is allocated once per binding of the symbolic sizes and
reused. A lock serializes calls on one network: the table and the workspace are shared.
"""

from __future__ import annotations

import ctypes
import threading

import numpy as np

from ...compiler import Compiled
from ...errors import BPNumericError
from .codegen import ALIGN, Program, generate, workspace_bytes
from .jit import Engine, compile_ir, vector_bytes

Arrays = dict[str, np.ndarray]
ENTRY = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_void_p, ctypes.c_void_p)


class LLVMExecutor:
    """Each entry point is its own module, compiled the first time it is called: a training
    loop pays for `step` (and `forward`, if it evaluates), not for all four."""

    def __init__(self, compiled: Compiled, dtype: np.dtype):
        self.compiled = compiled
        self.dtype = dtype
        self.network = compiled.network
        self.programs: dict[str, Program] = {}
        self.engines: dict[str, Engine] = {}  # kept alive as long as this executor
        self.entries: dict[str, ctypes._CFuncPtr] = {}
        layout = generate(compiled, dtype.name, vector_bytes(), ("forward",)).layout
        self.layout = layout
        self.table = (ctypes.c_void_p * layout.size)()
        self.dims = (ctypes.c_int64 * max(1, len(layout.dims)))()
        self.loss_out = np.zeros(1, dtype=dtype)
        self.table[layout.loss] = self.loss_out.ctypes.data
        self.workspaces: dict[tuple[int, ...], np.ndarray] = {}
        self.lock = threading.Lock()
        graph = compiled.graph
        self.output_shapes = {name: graph.nodes[graph.outputs[name]].shape
                              for name in layout.outputs}

    # ----------------------------------------------------------------- plumbing

    @property
    def code(self) -> str:
        """The IR of every entry point, as one module."""
        return generate(self.compiled, self.dtype.name, vector_bytes()).ir

    def _entry(self, entry: str) -> ctypes._CFuncPtr:
        function = self.entries.get(entry)
        if function is None:
            program = generate(self.compiled, self.dtype.name, vector_bytes(), (entry,))
            engine, _ = compile_ir(program.ir)
            self.programs[entry], self.engines[entry] = program, engine
            function = self.entries[entry] = ENTRY(engine.address(f"bpc_{entry}"))
        return function

    def _workspace(self, entry: str, sizes: dict[str, int]) -> int:
        """The aligned address of a workspace big enough for `entry` at these sizes (one
        buffer per binding of the sizes, grown when a newly compiled entry needs more)."""
        key = tuple(sizes[d] for d in self.layout.dims)
        needed = workspace_bytes(self.programs[entry].workspace[entry], sizes,
                                 self.dtype.itemsize)
        buffer = self.workspaces.get(key)
        if buffer is None or buffer.nbytes < needed + ALIGN:
            buffer = np.empty(needed + ALIGN, dtype=np.uint8)
            self.workspaces[key] = buffer
        address = buffer.ctypes.data
        return address + (-address % ALIGN)

    def _bind(self, entry: str, p: Arrays, data: Arrays, sizes: dict[str, int],
              s: Arrays | None = None) -> None:
        layout = self.layout
        for name in layout.params:
            self.table[layout.param(name)] = p[name].ctypes.data
        for name, array in data.items():
            self.table[layout.data_slot(name)] = array.ctypes.data
        if s is not None:
            for name in layout.state:
                self.table[layout.state_slot(name)] = s[name].ctypes.data
        for k, name in enumerate(layout.dims):
            self.dims[k] = sizes[name]
        self.table[layout.workspace] = self._workspace(entry, sizes)

    def _call(self, entry: str) -> int:
        return self._entry(entry)(ctypes.addressof(self.table), ctypes.addressof(self.dims))

    def _empty(self, shape: tuple, sizes: dict[str, int]) -> np.ndarray:
        concrete = tuple(d if isinstance(d, int) else sizes[d] for d in shape)
        return np.empty(concrete, dtype=self.dtype)

    # ------------------------------------------------------------- entry points

    def forward(self, p: Arrays, data: Arrays, sizes: dict[str, int]) -> Arrays:
        with self.lock:
            self._entry("forward")
            self._bind("forward", p, data, sizes)
            outputs = {}
            for name in self.layout.outputs:
                outputs[name] = self._empty(self.output_shapes[name], sizes)
                self.table[self.layout.output(name)] = outputs[name].ctypes.data
            self._call("forward")
        return outputs

    def loss(self, p: Arrays, data: Arrays, sizes: dict[str, int]) -> float:
        with self.lock:
            self._entry("loss")
            self._bind("loss", p, data, sizes)
            self._call("loss")
            return float(self.loss_out[0])

    def value_and_grad(self, p: Arrays, data: Arrays,
                       sizes: dict[str, int]) -> tuple[float, Arrays]:
        grads = {name: np.empty(info.shape, dtype=self.dtype)
                 for name, info in self.network.params.items()}
        with self.lock:
            self._entry("value_and_grad")
            self._bind("value_and_grad", p, data, sizes)
            for name, array in grads.items():
                self.table[self.layout.grad(name)] = array.ctypes.data
            self._call("value_and_grad")
            return float(self.loss_out[0]), grads

    def step(self, p: Arrays, s: Arrays, data: Arrays, sizes: dict[str, int]) -> float:
        with self.lock:
            self._entry("step")
            self._bind("step", p, data, sizes, s)
            status = self._call("step")
            loss = float(self.loss_out[0])
        if status:
            raise BPNumericError(f"step: {self.describe_status(status, loss)}; "
                                 f"step changed nothing")
        return loss

    def describe_status(self, status: int, loss: float) -> str:
        if status == 1:
            return f"the loss is {loss}"
        return f"the gradient of {self.layout.params[status - 2]} is not finite"
