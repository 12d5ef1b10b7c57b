"""`export --to c`, the C interface: `NET_new`, `NET_forward`, `NET_step`, ... written in
LLVM IR around the network's own entry functions (backends/llvm/codegen.py), which take a
pointer table and the sizes.

A `NET` is one block of memory, 64-byte aligned: a header (the workspace and its capacity,
dropout's seed and step count), then the params and buffers (copied from the trained values,
which the library holds as data), the optimizer state (zeros, as `init_state` makes it) and
the gradients. Each call checks its sizes and class indices (a bad one would read outside an
array), grows the workspace when a batch needs more, draws dropout's masks (the generator
of runtime/randomness.py, so C and Python draw the same masks), fills the entry function's
table on the stack and calls it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

import numpy as np
from llvmlite import ir

from ..backends.llvm.layout import ALIGN, Layout, layout_of
from ..backends.llvm.loops import I32, I64, PTR, for_range, i64, local
from ..backends.llvm.masks import draw_mask
from ..backends.llvm.threads import PARALLEL, TASK, Callee
from ..graph.shapes import Shape
from ..runtime.signature import Signature

I1 = ir.IntType(1)
I8 = ir.IntType(8)
# the header's fields: byte offsets of 8-byte words
WORKSPACE, CAPACITY, SEED, STEP = 0, 8, 16, 24
HEADER = ALIGN
# what a refused call returns (positive: the entry function's own status, a quantity that
# is not finite: 1 the loss, 1 + k the gradient of the k-th param)
BAD_SIZE, NO_MEMORY, BAD_INDEX = -1, -2, -3
MAX_SIZE = 1 << 40  # no size of a real batch comes near; products of a few stay in 64 bits


@dataclass(frozen=True)
class Part:
    """One entry function the interface calls: its symbol, the signature of its mode and the
    shapes of its workspace buffers."""

    symbol: str
    signature: Signature
    workspace: tuple[Shape, ...]

    @property
    def layout(self) -> Layout:
        return layout_of(self.signature)


def aligned(size: int) -> int:
    return -(-size // ALIGN) * ALIGN


class Block:
    """Where each array of a NET lives: byte offsets from the block's start."""

    def __init__(self, signature: Signature, itemsize: int):
        self.offsets: dict[tuple[str, str], int] = {}
        self.sizes: dict[tuple[str, str], int] = {}
        at = HEADER
        groups = (("param", {n: i.shape for n, i in signature.params.items()}),
                  ("state", signature.state),
                  ("grad", {n: i.shape for n, i in signature.trained.items()}))
        for kind, shapes in groups:
            for name, shape in shapes.items():
                self.offsets[kind, name] = at
                self.sizes[kind, name] = math.prod(shape)
                at += aligned(math.prod(shape) * itemsize)
            if kind == "param":
                self.params_end = at
        self.total = at

    def trained_bytes(self, params: Mapping[str, np.ndarray], dtype: np.dtype) -> bytearray:
        """The params region (from HEADER to params_end) holding `params`."""
        data = bytearray(self.params_end - HEADER)
        for (kind, name), offset in self.offsets.items():
            if kind == "param":
                raw = np.ascontiguousarray(params[name], dtype=dtype).tobytes()
                data[offset - HEADER:offset - HEADER + len(raw)] = raw
        return data


class Interface:
    """The interface's module for one network: every `NET_*` function."""

    def __init__(self, prefix: str, signature: Signature, dtype: np.dtype,
                 params: Mapping[str, np.ndarray], parts: Mapping[str, Part]):
        self.prefix = prefix
        self.signature = signature
        self.t = ir.DoubleType() if dtype == np.float64 else ir.FloatType()
        self.itemsize = dtype.itemsize
        self.parts = parts
        self.module = ir.Module(name=f"{prefix}_interface")
        self.block = Block(signature, self.itemsize)
        self.libc = {
            "aligned_alloc": ir.FunctionType(PTR, [I64, I64]),
            "free": ir.FunctionType(ir.VoidType(), [PTR]),
            "strcmp": ir.FunctionType(I32, [PTR, PTR]),
            "memcpy": ir.FunctionType(PTR, [PTR, PTR, I64]),
            "memset": ir.FunctionType(PTR, [PTR, I32, I64]),
        }
        self.functions = {name: ir.Function(self.module, kind, name)
                          for name, kind in self.libc.items()}
        trained = self.block.trained_bytes(params, dtype)
        self.trained = self.constant(f"{prefix}_trained", trained)
        self.trained_size = len(trained)

    # ------------------------------------------------------------------ helpers

    def constant(self, name: str, data: bytes | bytearray) -> ir.GlobalVariable:
        kind = ir.ArrayType(I8, len(data))
        value = ir.GlobalVariable(self.module, kind, name)
        value.initializer = ir.Constant(kind, bytearray(data))
        value.global_constant = True
        value.linkage = "internal"
        value.align = ALIGN
        return value

    def function(self, name: str, result: ir.Type, args: list[tuple[str, ir.Type]]
                 ) -> tuple[ir.Function, ir.IRBuilder]:
        f = ir.Function(self.module, ir.FunctionType(result, [t for _, t in args]),
                        f"{self.prefix}_{name}")
        for arg, (label, _) in zip(f.args, args):
            arg.name = label
        f.attributes.add("nounwind")
        return f, ir.IRBuilder(f.append_basic_block("entry"))

    def call(self, b: ir.IRBuilder, name: str, *args: ir.Value, label: str = "") -> ir.Value:
        return b.call(self.functions[name], list(args), name=label)

    @staticmethod
    def at(b: ir.IRBuilder, base: ir.Value, offset: int | ir.Value, name: str = "") -> ir.Value:
        return b.gep(base, [i64(offset) if isinstance(offset, int) else offset],
                     source_etype=I8, name=name)

    def word(self, b: ir.IRBuilder, net: ir.Value, field: int, name: str) -> ir.Value:
        return b.load(self.at(b, net, field), typ=I64, name=name)

    def set_word(self, b: ir.IRBuilder, net: ir.Value, field: int, value: ir.Value) -> None:
        b.store(value, self.at(b, net, field))

    @staticmethod
    def refuse_if(b: ir.IRBuilder, condition: ir.Value, status: int) -> None:
        with b.if_then(condition, likely=False):
            b.ret(ir.Constant(I32, status))

    # ---------------------------------------------------------------- the module

    def write(self) -> str:
        self.new()
        self.free()
        if self.signature.masks:
            self.seed()
        self.lookup("param", self.signature.params)
        self.lookup("grad", self.signature.trained)
        self.serial_parallel()
        for entry, part in self.parts.items():
            self.entry(entry, part)
        return str(self.module)

    def new(self) -> None:
        f, b = self.function("new", PTR, [])
        total = i64(self.block.total)
        net = self.call(b, "aligned_alloc", i64(ALIGN), total, label="net")
        with b.if_then(b.icmp_unsigned("==", net, ir.Constant(PTR, None)), likely=False):
            b.ret(ir.Constant(PTR, None))
        self.call(b, "memset", net, ir.Constant(I32, 0), total)
        self.call(b, "memcpy", self.at(b, net, HEADER, "params"), self.trained,
                  i64(self.trained_size))
        b.ret(net)

    def free(self) -> None:
        f, b = self.function("free", ir.VoidType(), [("net", PTR)])
        net = f.args[0]
        with b.if_then(b.icmp_unsigned("!=", net, ir.Constant(PTR, None))):
            self.call(b, "free", b.load(self.at(b, net, WORKSPACE), typ=PTR))
            self.call(b, "free", net)
        b.ret_void()

    def seed(self) -> None:
        """`NET_seed(net, seed)`: dropout's masks from here on are those of `seed`, as
        `net.init_state(p, seed=seed)` gives them in Python (the step count restarts)."""
        f, b = self.function("seed", ir.VoidType(), [("net", PTR), ("seed", I64)])
        self.set_word(b, f.args[0], SEED, f.args[1])
        self.set_word(b, f.args[0], STEP, i64(0))
        b.ret_void()

    def lookup(self, kind: str, names: Iterable[str]) -> None:
        """`NET_param` / `NET_grad`: the array of a `.bp` name and its element count, or
        NULL for a name the network does not have."""
        f, b = self.function(kind, PTR, [("net", PTR), ("name", PTR), ("size", PTR)])
        net, name, size = f.args
        for known in names:
            text = self.constant(f"{self.prefix}_{kind}_name.{known}",
                                 known.encode() + b"\0")
            same = self.call(b, "strcmp", name, text, label="differs")
            with b.if_then(b.icmp_signed("==", same, ir.Constant(I32, 0))):
                with b.if_then(b.icmp_unsigned("!=", size, ir.Constant(PTR, None))):
                    b.store(i64(self.block.sizes[kind, known]), size)
                b.ret(self.at(b, net, self.block.offsets[kind, known], known))
        b.ret(ir.Constant(PTR, None))

    def serial_parallel(self) -> None:
        """`bpc_parallel`, which kernels call to split their work over the thread pool: here
        every part runs on the caller's thread (a C program has no pool)."""
        f = ir.Function(self.module, ir.FunctionType(ir.VoidType(), [PTR, PTR]), PARALLEL)
        task, context = f.args
        b = ir.IRBuilder(f.append_basic_block("entry"))
        b.call(Callee(task, TASK), [context, i64(0), i64(1)])
        b.ret_void()

    # ------------------------------------------------------------ entry points

    def entry(self, entry: str, part: Part) -> None:
        """`int NET_<entry>(net, sizes..., arrays..., [loss])`: see the module docstring."""
        signature, layout = part.signature, part.layout
        sizes = c_sizes(signature, entry)
        arrays = c_arrays(signature, entry)
        args = [("net", PTR), *((d, I64) for d in sizes), *((a, PTR) for a in arrays)]
        if entry != "forward":
            args.append(("loss", PTR))
        f, b = self.function(entry, I32, args)
        net = f.args[0]
        dim = dict(zip(sizes, f.args[1:1 + len(sizes)]))
        given = dict(zip(arrays, f.args[1 + len(sizes):1 + len(sizes) + len(arrays)]))
        self.check_sizes(b, signature, dim, training=entry != "forward" or signature.mode
                         == "training" and signature.modal)
        self.check_indices(b, signature, dim, given)
        masks = {name: info.shape for name, info in signature.masks.items()}
        mask_bytes, mask_offsets, too_large = self.buffer_bytes(b, list(masks.values()), dim)
        work_bytes, _, work_too_large = self.buffer_bytes(b, list(part.workspace), dim)
        too_large = b.or_(too_large, work_too_large)
        total = b.add(mask_bytes, work_bytes, name="bytes")
        self.refuse_if(b, b.or_(too_large, b.icmp_signed("<", total, mask_bytes)), BAD_SIZE)
        workspace = self.workspace(b, net, total)
        for (name, info), offset in zip(signature.masks.items(), mask_offsets):
            given[name] = self.at(b, workspace, offset, name)
            self.draw_mask(b, net, given[name], info.site, info.rate,
                           self.count(b, info.shape, dim))
        table = local(b, ir.ArrayType(PTR, layout.size), "table")
        loss = local(b, self.t, "loss.value")

        def put(slot: int, pointer: ir.Value) -> None:
            b.store(pointer, b.gep(table, [ir.Constant(I32, 0), ir.Constant(I32, slot)]))

        for name in layout.params:
            put(layout.param(name), self.at(b, net, self.block.offsets["param", name], name))
            grad = self.block.offsets.get(("grad", name))
            put(layout.grad(name), ir.Constant(PTR, None) if grad is None else
                self.at(b, net, grad, f"d_{name}"))
        for name in layout.state:
            put(layout.state_slot(name), self.at(b, net, self.block.offsets["state", name],
                                                 name))
        for name in layout.data:
            put(layout.data_slot(name), given.get(name, ir.Constant(PTR, None)))
        for name in layout.outputs:
            put(layout.output(name), given.get(name, ir.Constant(PTR, None)))
        put(layout.loss, loss)
        put(layout.workspace, self.at(b, workspace, mask_bytes, "work"))
        dims = local(b, ir.ArrayType(I64, max(1, len(layout.dims))), "dims")
        for k, name in enumerate(layout.dims):
            b.store(dim.get(name, i64(0)), b.gep(dims, [ir.Constant(I32, 0),
                                                        ir.Constant(I32, k)]))
        callee = self.module.globals.get(part.symbol) or ir.Function(
            self.module, ir.FunctionType(I32, [PTR, PTR]), part.symbol)
        status = b.call(callee, [table, dims], name="status")
        if entry != "forward":
            with b.if_then(b.icmp_unsigned("!=", f.args[-1], ir.Constant(PTR, None))):
                b.store(b.load(loss, typ=self.t), f.args[-1])
        if entry == "step" and signature.masks:  # a step taken counts for the masks
            with b.if_then(b.icmp_signed("==", status, ir.Constant(I32, 0))):
                self.set_word(b, net, STEP, b.add(self.word(b, net, STEP, "steps"), i64(1)))
        b.ret(status)

    def check_sizes(self, b: ir.IRBuilder, signature: Signature, dim: dict[str, ir.Value],
                    training: bool) -> None:
        """Refuse a size below 0 or above MAX_SIZE, below what an index along it needs, or
        (training batch norm) a batch of one value per channel."""
        for name, value in dim.items():
            least = signature.least_sizes.get(name, (0, 0))[0]
            self.refuse_if(b, b.or_(b.icmp_signed("<", value, i64(least)),
                                    b.icmp_signed(">", value, i64(MAX_SIZE))), BAD_SIZE)
        for counted, _ in signature.batch_counts if training else ():
            if all(isinstance(d, int) or d in dim for d in counted):
                self.refuse_if(b, b.icmp_signed("<", self.count(b, counted, dim), i64(2)),
                               BAD_SIZE)

    def check_indices(self, b: ir.IRBuilder, signature: Signature, dim: dict[str, ir.Value],
                      given: dict[str, ir.Value]) -> None:
        """Refuse a class index that is not a whole number in [0, classes)."""
        for name, classes in signature.indices.items():
            if name not in given:
                continue
            count = self.count(b, signature.data[name], dim)
            with for_range(b, count, f"{name}.i") as i:
                value = b.load(b.gep(given[name], [i], source_etype=self.t), typ=self.t)
                whole = b.fptosi(value, I64)
                fine = b.and_(b.fcmp_ordered("==", b.sitofp(whole, self.t), value),
                              b.and_(b.icmp_signed(">=", whole, i64(0)),
                                     b.icmp_signed("<", whole, i64(classes))))
                self.refuse_if(b, b.not_(fine), BAD_INDEX)

    def count(self, b: ir.IRBuilder, shape: Shape, dim: dict[str, ir.Value]) -> ir.Value:
        total: ir.Value = i64(1)
        for d in shape:
            total = b.mul(total, i64(d) if isinstance(d, int) else dim[d])
        return total

    def buffer_bytes(self, b: ir.IRBuilder, shapes: list[Shape], dim: dict[str, ir.Value]
                     ) -> tuple[ir.Value, list[ir.Value], ir.Value]:
        """The bytes of buffers of `shapes` one after another, each aligned (as the entry
        function lays out its workspace); each one's offset; and whether a product
        overflowed 64 bits."""
        total: ir.Value = i64(0)
        overflow: ir.Value = ir.Constant(I1, 0)
        offsets = []
        for shape in shapes:
            offsets.append(total)
            size: ir.Value = i64(self.itemsize)
            for d in shape:
                product = b.smul_with_overflow(size, i64(d) if isinstance(d, int) else
                                               dim.get(d, i64(0)))
                size = b.extract_value(product, 0)
                overflow = b.or_(overflow, b.extract_value(product, 1))
            rounded = b.and_(b.add(size, i64(ALIGN - 1)), i64(-ALIGN))
            added = b.sadd_with_overflow(total, rounded)
            total = b.extract_value(added, 0)
            overflow = b.or_(overflow, b.extract_value(added, 1))
        return total, offsets, overflow

    def workspace(self, b: ir.IRBuilder, net: ir.Value, needed: ir.Value) -> ir.Value:
        """The NET's workspace, grown (64-byte aligned) if it holds less than `needed`."""
        capacity = self.word(b, net, CAPACITY, "capacity")
        with b.if_then(b.icmp_signed(">", needed, capacity), likely=False):
            self.call(b, "free", b.load(self.at(b, net, WORKSPACE), typ=PTR))
            self.set_word(b, net, CAPACITY, i64(0))
            grown = self.call(b, "aligned_alloc", i64(ALIGN),
                              b.and_(b.add(needed, i64(ALIGN - 1)), i64(-ALIGN)), label="grown")
            b.store(grown, self.at(b, net, WORKSPACE))
            self.refuse_if(b, b.icmp_unsigned("==", grown, ir.Constant(PTR, None)), NO_MEMORY)
            self.set_word(b, net, CAPACITY, needed)
        return b.load(self.at(b, net, WORKSPACE), typ=PTR, name="workspace")

    def draw_mask(self, b: ir.IRBuilder, net: ir.Value, mask: ir.Value, site: int,
                  rate: float, count: ir.Value) -> None:
        """One dropout's mask, as randomness.draw_mask draws it for the NET's seed and
        step count: 0 where dropped, 1 / (1 - rate) elsewhere."""
        draw_mask(b, self.t, self.word(b, net, SEED, "seed"), self.word(b, net, STEP, "steps"),
                  mask, site, rate, count)


def c_sizes(signature: Signature, entry: str) -> list[str]:
    """The size symbols a C entry point takes, in order of first appearance in its arrays."""
    seen: dict[str, None] = {}
    for shape in _given(signature, entry).values():
        for d in shape:
            if isinstance(d, str):
                seen.setdefault(d)
    return list(seen)


def c_arrays(signature: Signature, entry: str) -> list[str]:
    """The arrays a C entry point takes: its data, then (forward) the outputs."""
    return list(_given(signature, entry)) + (list(signature.outputs) if entry == "forward"
                                             else [])


def _given(signature: Signature, entry: str) -> dict[str, Shape]:
    return dict(signature.inputs) if entry == "forward" else dict(signature.data)


def shapes_of(signature: Signature, entry: str) -> Iterator[tuple[str, Shape]]:
    """Each array a C entry point takes, with its shape (for the header's comments)."""
    for name in c_arrays(signature, entry):
        yield name, signature.output_shapes.get(name) or signature.data[name]
