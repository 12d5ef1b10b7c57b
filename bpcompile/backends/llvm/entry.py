"""One entry function being written: the storage of every node's values, and the order
their code is emitted in.

Every entry function has the signature `i32 bpc_<entry>(ptr table, ptr dims)`: `table` holds
one pointer per array (params, state, data, outputs, the workspace; see `Layout`), `dims`
the size bound to each symbol. Each node gets storage before any code is written: a leaf
reads its table slot; a result writes straight into its output slot (and `step` writes new
params and state in place when nothing later reads the old value); a RESHAPE shares its
input's memory; a TRANSPOSE read only as a matmul's left operand is a view; an elementwise
node read only by a reduction is computed inside the reduction's loop; everything else gets
a workspace buffer, at offsets the function computes from the dims.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import sympy
from llvmlite import ir

from ...graph.functions import is_size, size_name
from ...graph.ir import LEAVES, Graph, Node, Op
from ...graph.naming import Naming
from ...graph.shapes import Shape
from .kernels import Kernels
from .layout import ALIGN, Layout
from .loops import I32, I64, PTR, i64, product
from .mathlib import MathFunctions
from .matmul import Matmul


class EntryWriter:
    """Writes one entry function."""

    def __init__(self, module: ir.Module, graph: Graph, naming: Naming, layout: Layout,
                 lib: MathFunctions, matmul: Matmul, kernels: Kernels, entry: str,
                 ops: Mapping[Op, Callable[[EntryWriter, int, Node], None]]):
        self.graph = graph
        self.ops = ops  # how each op's node is written (ops.py)
        self.naming = naming
        self.layout = layout
        self.lib = lib
        self.matmul = matmul
        self.kernels = kernels
        self.entry = entry
        self.t = lib.t
        self.itemsize = 8 if isinstance(self.t, ir.DoubleType) else 4
        self.f = ir.Function(module, ir.FunctionType(I32, [PTR, PTR]), f"bpc_{entry}")
        self.f.attributes.add("noinline")  # the fast path calls it; one copy is enough
        self.f.args[0].name, self.f.args[1].name = "table", "dims"
        self.b = ir.IRBuilder(self.f.append_basic_block("entry"))
        self.storage: dict[int, ir.Value] = {}
        self.virtual: set[int] = set()   # elementwise nodes computed inside their reader
        self.views: set[int] = set()     # transposes read as matmul left operands
        self.b_views: set[int] = set()   # transposes read as matmul right operands
        self.work: list[Shape] = []
        # buffers one op writes and a later op of this entry reads again (a convolution's
        # columns, which its weight gradient reuses), by what they hold
        self.shared: dict[tuple, ir.Value] = {}
        self.emitting: set[int] = set()
        self.workspace_offset: ir.Value = i64(0)
        self.current = -1  # the node being emitted
        # node -> the functions its code calls (their names are final only once the module
        # is complete: a kernel several values share is renamed then)
        self.functions: dict[int, list[ir.Function | str]] = {}
        self.dim: dict[str, ir.Value] = {
            name: self.b.load(self.b.gep(self.f.args[1], [i64(k)], source_etype=I64,
                                         name=f"{name}.slot"), typ=I64, name=name)
            for k, name in enumerate(layout.dims)
        }

    # ------------------------------------------------------------------ storage

    def slot(self, index: int, name: str) -> ir.Value:
        """The array in the table's slot `index`, named as its value: %x, %W1, %loss."""
        pointer = self.b.gep(self.f.args[0], [i64(index)], source_etype=PTR,
                             name=f"{name}.slot")
        return self.b.load(pointer, typ=PTR, name=name)

    def dims_of(self, shape: Shape) -> list[ir.Value]:
        return [i64(d) if isinstance(d, int) else self.dim[d] for d in shape]

    def count(self, shape: Shape, name: str = "") -> ir.Value:
        """The number of elements of `shape`, named `name.count` when it is computed."""
        dims = self.dims_of(shape)
        if len(dims) > 1 and name:
            total = dims[0]
            for k, dim in enumerate(dims[1:]):
                total = self.b.mul(total, dim, name=f"{name}.count" if k == len(dims) - 2
                                   else "")
            return total
        return product(self.b, dims)

    def allocate(self, shape: Shape, name: str, itemsize: int | None = None) -> ir.Value:
        """A workspace buffer, at the next aligned offset: %h = workspace + %h.offset, and
        the next buffer starts at %h.end. Its elements are floats, or `itemsize` bytes."""
        if not hasattr(self, "_workspace"):
            self._workspace = self.slot(self.layout.workspace, "workspace")
        offset = self.workspace_offset
        pointer = self.b.gep(self._workspace, [offset], source_etype=ir.IntType(8),
                             name=name)
        size = self.b.mul(self.count(shape, name), i64(itemsize or self.itemsize),
                          name=f"{name}.bytes")
        aligned = self.b.and_(self.b.add(size, i64(ALIGN - 1)), i64(-ALIGN),
                              name=f"{name}.aligned")
        self.workspace_offset = self.b.add(offset, aligned, name=f"{name}.end")
        self.work.append(shape if itemsize in (None, self.itemsize) else
                         (*shape, -(-itemsize // self.itemsize)))
        return pointer

    def pointer(self, i: int) -> ir.Value:
        """Where node i's values are; a leaf no one has read yet gets its slot loaded."""
        if i not in self.storage:
            self.storage[i] = self.leaf(self.graph.nodes[i])
        return self.storage[i]

    def leaf(self, node: Node) -> ir.Value:
        if node.op is Op.GRAD:  # step: the gradient just computed; else the caller's array
            if self.entry == "step":
                return self.pointer(self.graph.grads[node.name])
            return self.slot(self.layout.grad(node.name), f"d_{node.name}")
        if node.op is Op.PARAM:
            return self.slot(self.layout.param(node.name), node.name)
        if node.op is Op.STATE:
            return self.slot(self.layout.state_slot(node.name), node.name)
        return self.slot(self.layout.data_slot(node.name), node.name)

    def plan(self, live: list[int], results: dict[int, list[tuple[int, str]]],
             in_place: dict[int, int], keep: set[int] = frozenset()) -> None:
        """Decide where each live node's values go (see the module docstring); `keep`
        names nodes read later through an alias, which need storage of their own."""
        g = self.graph
        readers: dict[int, list[int]] = {i: [] for i in live}
        for i in live:
            for j in g.nodes[i].inputs:
                readers[j].append(i)
        for i in live:
            node = g.nodes[i]
            users = [g.nodes[r] for r in readers[i]]
            if i in keep:
                continue
            if node.op is Op.TRANSPOSE and users and i not in results and all(
                self.plain_matmul(u) and u.inputs[0] == i and u.inputs[1] != i
                for u in users
            ):
                self.views.add(i)
            elif node.op is Op.TRANSPOSE and users and i not in results and all(
                self.plain_matmul(u) and u.inputs[1] == i and u.inputs[0] != i
                for u in users
            ):
                # BLAS reads it transposed in place; the loop nest needs it materialized,
                # which the matmul does itself, only on the loop-nest branch
                self.b_views.add(i)
            elif (node.op is Op.ELEMENTWISE and node.inputs and len(users) == 1
                  and users[0].op in (Op.SUM, Op.MAX) and i not in results):
                self.virtual.add(i)

    def plain_matmul(self, node: Node) -> bool:
        """A matmul of 1-D and 2-D operands, which reads a transposed operand in place."""
        return node.op is Op.MATMUL and all(len(self.graph.nodes[j].shape) <= 2
                                            for j in node.inputs)

    def storage_for(self, i: int, results: dict[int, list[tuple[int, str]]],
                    in_place: dict[int, int]) -> ir.Value | None:
        node = self.graph.nodes[i]
        label = self.label(i)
        if node.op in LEAVES:
            return self.leaf(node)
        if node.op is Op.RESHAPE:
            return self.storage[node.inputs[0]]
        if i in self.views or i in self.virtual:
            return None
        if i in in_place:
            return self.pointer(in_place[i])
        if i in results:
            slot, name = results[i][0]
            return self.slot(slot, name.replace(".", "_"))
        return self.allocate(node.shape, label)

    # -------------------------------------------------------------------- emit

    def emit(self, order: list[int], results: dict[int, list[tuple[int, str]]],
             in_place: dict[int, int]) -> None:
        self.emitting = set(order)  # what an op may look ahead to (does a gradient follow?)
        for i in order:
            node = self.graph.nodes[i]
            pointer = self.storage_for(i, results, in_place)
            if pointer is not None:
                self.storage[i] = pointer
            if node.op in self.ops:
                self.current = i
                self.ops[node.op](self, i, node)

    def skip_optimizer_if_glue(self) -> None:
        """Mark the function `optnone` if it has no loop of its own (no phi: `for_range`
        is the only maker of phis here), only kernel calls and arithmetic on sizes. LLVM's
        optimizer gains such glue nothing measurable (the xor, mlp and digits steps took
        the same time either way) and spent 10-14% of a small network's LLVM time on it."""
        if not any(isinstance(instruction, ir.PhiInstr) for block in self.f.blocks
                   for instruction in block.instructions):
            self.f.attributes.add("optnone")

    def call(self, function: ir.Function, args: list[ir.Value]) -> ir.Value:
        """Call a kernel for the current node, noting which (for `bpcompile show`)."""
        self.functions.setdefault(self.current, []).append(function)
        return self.b.call(function, args)

    def copy_results(self, results: dict[int, list[tuple[int, str]]]) -> None:
        """Results whose slot is not where the node's values live get copied there."""
        for i, slots in results.items():
            node = self.graph.nodes[i]
            for slot, name in slots:
                target = self.slot(slot, name.replace(".", "_"))
                source = self.storage[i]
                if source is not target:
                    self.copy(target, source, node.shape)

    # ------------------------------------------------------------------ helpers

    def label(self, i: int) -> str:
        """Node i's name, from the one naming source: the value a kernel computes."""
        return self.naming[i].code

    def size_values(self, expr: sympy.Expr) -> tuple[tuple[str, ...], list[ir.Value]]:
        """The symbolic sizes an expression reads, and their values as floats."""
        names = tuple(sorted(size_name(s) for s in expr.free_symbols if is_size(s)))
        return names, [self.b.sitofp(self.dim[n], self.t) for n in names]

    def zero(self, target: ir.Value, shape: Shape) -> None:
        """Fill with 0.0 (all bits zero, in both float types)."""
        self.lib.zero_bytes(self.b, target, self.b.mul(self.count(shape), i64(self.itemsize)))

    def copy(self, target: ir.Value, source: ir.Value, shape: Shape) -> None:
        self.lib.copy_bytes(self.b, target, source,
                            self.b.mul(self.count(shape), i64(self.itemsize)))
