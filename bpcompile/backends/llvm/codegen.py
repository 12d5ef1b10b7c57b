"""Graph -> one LLVM module with an entry function per entry point.

Every entry function has the signature `i32 bpc_<entry>(ptr table, ptr dims)`: `table` holds
one pointer per array (params, state, data, outputs, the workspace; see `Layout`), `dims`
the size bound to each symbol. It returns 0, or for `step` 1 + the index of the first
non-finite quantity (the loss, then each gradient), in which case nothing was updated.

Each node gets storage before any code is written: a leaf reads its table slot; a result
writes straight into its output slot (and `step` writes new params and state in place when
nothing later reads the old value); a RESHAPE shares its input's memory; a TRANSPOSE read
only as a matmul's left operand is a view; an elementwise node read only by a reduction is
computed inside the reduction's loop; everything else gets a workspace buffer, at offsets the
function computes from the dims.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sympy
from llvmlite import ir

from ...driver import Compiled, signature
from ...graph.ir import LEAVES, Graph, Node, Op, operand
from ...graph.shapes import Shape
from ...passes.fuse import fuse
from .fastcall import FastStep, array_fields
from .layout import Layout, layout_of
from .kernels import KernelLibrary, axis_view
from .loops import I32, I64, PTR, i64, product
from .mathlib import MathLibrary
from .matmul import Matmul

ENTRIES = ("forward", "loss", "value_and_grad", "step", "apply_gradients")
ALIGN = 64  # bytes: every workspace buffer starts on a cache line


@dataclass
class Program:
    """What the runtime needs: the IR, the table layout, and each entry's workspace; and,
    for `bpcompile show`, the graph the IR was printed from and which functions compute
    each of its nodes."""

    ir: str
    layout: Layout
    entries: tuple[str, ...]
    workspace: dict[str, list[Shape]] = field(default_factory=dict)  # entry -> buffer shapes
    graph: Graph | None = None
    functions: dict[str, dict[int, list[str]]] = field(default_factory=dict)  # entry -> node


def workspace_bytes(shapes: list[Shape], sizes: dict[str, int], itemsize: int) -> int:
    """Bytes the buffers of `shapes` take once sizes are bound (aligned as the IR aligns)."""
    total = 0
    for shape in shapes:
        count = 1
        for d in shape:
            count *= d if isinstance(d, int) else sizes[d]
        total += -(-count * itemsize // ALIGN) * ALIGN
    return total


class EntryWriter:
    """Writes one entry function."""

    def __init__(self, module: ir.Module, graph: Graph, layout: Layout, lib: MathLibrary,
                 matmul: Matmul, library: KernelLibrary, entry: str):
        self.graph = graph
        self.layout = layout
        self.lib = lib
        self.matmul = matmul
        self.library = library
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
        self.workspace_offset: ir.Value = i64(0)
        self.current = -1  # the node being emitted
        self.functions: dict[int, list[str]] = {}  # node -> functions its code calls
        self.dim: dict[str, ir.Value] = {
            name: self.b.load(self.b.gep(self.f.args[1], [i64(k)], source_etype=I64),
                              typ=I64, name=name)
            for k, name in enumerate(layout.dims)
        }

    # ------------------------------------------------------------------ storage

    def slot(self, index: int, name: str) -> ir.Value:
        pointer = self.b.gep(self.f.args[0], [i64(index)], source_etype=PTR)
        return self.b.load(pointer, typ=PTR, name=name)

    def dims_of(self, shape: Shape) -> list[ir.Value]:
        return [i64(d) if isinstance(d, int) else self.dim[d] for d in shape]

    def count(self, shape: Shape) -> ir.Value:
        return product(self.b, self.dims_of(shape))

    def allocate(self, shape: Shape, name: str) -> ir.Value:
        """A workspace buffer, at the next aligned offset."""
        if not hasattr(self, "_workspace"):
            self._workspace = self.slot(self.layout.workspace, "workspace")
        pointer = self.b.gep(self._workspace, [self.workspace_offset], source_etype=ir.IntType(8),
                             name=name)
        size = self.b.mul(self.count(shape), i64(self.itemsize))
        aligned = self.b.and_(self.b.add(size, i64(ALIGN - 1)), i64(-ALIGN))
        self.workspace_offset = self.b.add(self.workspace_offset, aligned)
        self.work.append(shape)
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
                u.op is Op.MATMUL and u.inputs[0] == i and u.inputs[1] != i for u in users
            ):
                self.views.add(i)
            elif node.op is Op.TRANSPOSE and users and i not in results and all(
                u.op is Op.MATMUL and u.inputs[1] == i and u.inputs[0] != i for u in users
            ):
                # BLAS reads it transposed in place; the loop nest needs it materialized,
                # which the matmul does itself, only on the loop-nest branch
                self.b_views.add(i)
            elif (node.op is Op.ELEMENTWISE and node.inputs and len(users) == 1
                  and users[0].op in (Op.SUM, Op.MAX) and i not in results):
                self.virtual.add(i)

    def storage_for(self, i: int, results: dict[int, list[tuple[int, str]]],
                    in_place: dict[int, int]) -> ir.Value | None:
        node = self.graph.nodes[i]
        label = (node.name or f"t{i}").replace(".", "_")
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
        for i in order:
            node = self.graph.nodes[i]
            pointer = self.storage_for(i, results, in_place)
            if pointer is not None:
                self.storage[i] = pointer
            if node.op in EMIT:
                self.current = i
                EMIT[node.op](self, i, node)

    def call(self, function: ir.Function, args: list[ir.Value]) -> ir.Value:
        """Call a kernel for the current node, noting which (for `bpcompile show`)."""
        self.functions.setdefault(self.current, []).append(function.name)
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
        name = self.graph.nodes[i].name
        return (name or f"t{i}").replace(".", "_")

    def size_values(self, expr: sympy.Expr) -> tuple[tuple[str, ...], list[ir.Value]]:
        """The symbolic sizes an expression reads, and their values as floats."""
        names = tuple(sorted(str(s)[4:] for s in expr.free_symbols
                             if str(s).startswith("dim:")))
        return names, [self.b.sitofp(self.dim[n], self.t) for n in names]

    def copy(self, target: ir.Value, source: ir.Value, shape: Shape) -> None:
        nbytes = self.b.mul(self.count(shape), i64(self.itemsize))
        memcpy = self.lib.intrinsic("llvm.memcpy", PTR, PTR, I64, ir.IntType(1),
                                    result=ir.VoidType(), overload=(PTR, PTR, I64))
        self.b.call(memcpy, [target, source, nbytes, ir.Constant(ir.IntType(1), 0)])

    # ----------------------------------------------------------------- the ops

    def elementwise(self, i: int, node: Node) -> None:
        if i in self.virtual:
            return
        shapes = [self.graph.nodes[j].shape for j in node.inputs]
        dims, padded = collapse(node.shape, shapes)
        patterns = tuple(tuple(p[a] == 1 and dims[a] != 1 for a in range(len(dims)))
                         for p in padded)
        out = self.storage[i]
        pointers = [self.storage[j] for j in node.inputs]
        alias = next((k for k, p in enumerate(pointers) if p is out), None)
        sizes, size_values = self.size_values(node.expr)
        kernel = self.library.elementwise(node.expr, patterns, len(dims), sizes, alias,
                                          self.label(i))
        args = ([] if alias is not None else [out]) + pointers
        self.call(kernel, args + self.dims_of(dims) + size_values)

    def reduction(self, i: int, node: Node) -> None:
        source = node.inputs[0]
        shape = self.graph.nodes[source].shape
        if source in self.virtual:  # compute the elementwise input inside the reduction
            inner = self.graph.nodes[source]
            expr, operands = inner.expr, list(inner.inputs)
        else:
            expr, operands = operand(0), [source]
        rank = len(shape)
        patterns = tuple(
            tuple(a < rank - len(s) or (s[a - rank + len(s)] == 1 and shape[a] != 1)
                  for a in range(rank))
            for s in (self.graph.nodes[j].shape for j in operands)
        )
        sizes, size_values = self.size_values(expr)
        op = "sum" if node.op is Op.SUM else "max"
        kernel = self.library.reduction(op, expr, patterns, rank, node.axes, sizes,
                                        f"{op}_{self.label(i)}")
        pointers = [self.storage[j] for j in operands]
        self.call(kernel, [self.storage[i], *pointers, *self.dims_of(shape), *size_values])

    def matmul_op(self, i: int, node: Node) -> None:
        """BLAS for large products (transposes as flags), the loop nest for the rest."""
        a, b = node.inputs
        a_node, b_node = self.graph.nodes[a], self.graph.nodes[b]
        if a in self.views:  # A = X.T with X [k, m]: A[i, p] = X[p, i]
            a_source = a_node.inputs[0]
            k, m = self.dims_of(self.graph.nodes[a_source].shape)
            a_row, a_col = i64(1), m
        else:
            a_source = a
            dims = self.dims_of(a_node.shape)
            m, k = (i64(1), dims[0]) if len(dims) == 1 else dims
            a_row, a_col = k, i64(1)
        b_source = b_node.inputs[0] if b in self.b_views else b
        b_dims = self.dims_of(b_node.shape)
        n = i64(1) if len(b_dims) == 1 else b_dims[1]
        out, a_ptr = self.storage[i], self.storage[a_source]

        def loop_nest() -> None:
            if b in self.b_views:
                self.call(self.library.transpose(),
                            [self.storage[b], self.storage[b_source], n, k])
            self.functions.setdefault(i, []).append(self.matmul.function().name)
            self.matmul.call(self.b, out, a_ptr, self.storage[b], m, n, k, a_row, a_col)

        if self.matmul.blas is None:
            loop_nest()
            return
        with self.b.if_else(self.matmul.large(self.b, m, n, k)) as (large, small):
            with large:
                self.functions.setdefault(i, []).append("BLAS gemm")
                self.matmul.call_blas(self.b, out, a_ptr, a in self.views,
                                      self.storage[b_source], b in self.b_views, m, n, k)
            with small:
                loop_nest()

    def transpose(self, i: int, node: Node) -> None:
        if i in self.views or i in self.b_views:
            return
        rows, cols = self.dims_of(self.graph.nodes[node.inputs[0]].shape)
        self.call(self.library.transpose(),
                    [self.storage[i], self.storage[node.inputs[0]], rows, cols])

    def along_axis(self, i: int, node: Node) -> None:
        source = node.inputs[0]
        view = axis_view(self.b, self.dims_of(self.graph.nodes[source].shape), node.axes)
        kernel = self.library.along_axis(ALONG_AXIS[node.op])
        self.call(kernel, [self.storage[i], self.storage[source], view.outer, view.axis,
                             view.inner])

    def softmax_xent(self, i: int, node: Node) -> None:
        logits, targets = node.inputs
        dims = self.dims_of(self.graph.nodes[logits].shape)
        rows = product(self.b, dims[:-1])
        self.call(self.library.softmax_cross_entropy(),
                    [self.storage[i], self.storage[logits], self.storage[targets], rows,
                     dims[-1]])


ALONG_AXIS = {
    Op.SOFTMAX: "softmax", Op.LOG_SOFTMAX: "log_softmax", Op.LOGSUMEXP: "logsumexp",
    Op.ARGMAX_ONEHOT: "argmax_onehot",
}


EMIT = {
    Op.ELEMENTWISE: EntryWriter.elementwise,
    Op.SUM: EntryWriter.reduction,
    Op.MAX: EntryWriter.reduction,
    Op.MATMUL: EntryWriter.matmul_op,
    Op.TRANSPOSE: EntryWriter.transpose,
    Op.SOFTMAX: EntryWriter.along_axis,
    Op.LOG_SOFTMAX: EntryWriter.along_axis,
    Op.LOGSUMEXP: EntryWriter.along_axis,
    Op.ARGMAX_ONEHOT: EntryWriter.along_axis,
    Op.SOFTMAX_XENT: EntryWriter.softmax_xent,
}


def collapse(shape: Shape, inputs: list[Shape]) -> tuple[Shape, list[Shape]]:
    """Merge neighbouring axes along which every operand is either whole or broadcast alike,
    so [N, 3] + [N, 3] is one loop and [N, 3] + [3] stays two."""
    rank = len(shape)
    padded = [(1,) * (rank - len(s)) + tuple(s) for s in inputs]
    kinds = [tuple(p[a] == 1 and shape[a] != 1 for p in padded) for a in range(rank)]
    groups: list[list[int]] = []
    for axis in range(rank):
        if groups and kinds[axis] == kinds[groups[-1][-1]]:
            groups[-1].append(axis)
        else:
            groups.append([axis])

    def merged(dims: tuple) -> tuple:
        result = []
        for group in groups:
            values = [dims[a] for a in group]
            if all(isinstance(v, int) for v in values):
                size = 1
                for v in values:
                    size *= v
                result.append(size)
            elif len(values) == 1:
                result.append(values[0])
            else:
                ints = [v for v in values if isinstance(v, int) and v != 1]
                symbols = [v for v in values if isinstance(v, str)]
                if ints or len(symbols) > 1:
                    return None  # a product of sizes we cannot name: keep the axes
                result.append(symbols[0])
        return tuple(result)

    out = merged(shape)
    if out is None:
        return shape, [tuple(p) for p in padded]
    return out, [merged(p) for p in padded]


def _roots(graph: Graph, layout: Layout, entry: str) -> dict[int, list[tuple[int, str]]]:
    """Node -> the output slots (and names) it must end up in, for one entry."""
    results: dict[int, list[tuple[int, str]]] = {}

    def add(node: int, slot: int, name: str) -> None:
        results.setdefault(node, []).append((slot, name))

    if entry == "forward":
        for name, node in graph.outputs.items():
            add(node, layout.output(name), name)
        return results
    add(graph.loss, layout.loss, "loss")
    if entry == "value_and_grad":
        for name, node in graph.grads.items():
            add(node, layout.grad(name), f"d_{name}")
    return results


def _write_entry(module: ir.Module, graph: Graph, layout: Layout, lib: MathLibrary,
                 matmul: Matmul, library: KernelLibrary, entry: str) -> EntryWriter:
    writer = EntryWriter(module, graph, layout, lib, matmul, library, entry)
    results = _roots(graph, layout, entry)
    if entry not in ("step", "apply_gradients"):
        order = graph.live(list(results))
        writer.plan(order, results, {})
        writer.emit(order, results, {})
        writer.copy_results(results)
        writer.b.ret(ir.Constant(I32, 0))
        return writer
    if entry == "apply_gradients":  # the caller's gradients: checked, then the updates
        leaves = list(graph.gradient_leaves.values())
        rest, in_place = _update_order(graph, leaves, {})
        writer.plan(leaves + rest, {}, in_place)
        _refuse_non_finite(writer, library, leaves, first_status=2)
        _write_updates(writer, graph, set(leaves), rest, in_place)
        return writer
    # step: loss and gradients, the finiteness check, then the updates, which read each
    # gradient where step computed it
    first = graph.live([graph.loss, *graph.grads.values()])
    aliases = {leaf: graph.grads[name] for name, leaf in graph.gradient_leaves.items()}
    rest, in_place = _update_order(graph, first, aliases)
    writer.plan(first + rest, results, in_place, keep=set(graph.grads.values()))
    writer.emit(first, results, {})
    writer.copy_results(results)
    _refuse_non_finite(writer, library, [graph.loss, *graph.grads.values()], first_status=1)
    _write_updates(writer, graph, set(first), rest, in_place)
    return writer


def _refuse_non_finite(writer: EntryWriter, library: KernelLibrary, quantities: list[int],
                       first_status: int) -> None:
    """Return status first_status + k, changing nothing, if quantity k is not finite."""
    check = library.non_finite()
    for k, node in enumerate(quantities):
        bad = writer.b.call(check, [writer.pointer(node),
                                    writer.count(writer.graph.nodes[node].shape)])
        with writer.b.if_then(writer.b.icmp_signed("!=", bad, ir.Constant(I32, 0)),
                              likely=False):
            writer.b.ret(ir.Constant(I32, first_status + k))


def _update_order(graph: Graph, computed: list[int],
                  aliases: dict[int, int]) -> tuple[list[int], dict[int, int]]:
    """The nodes left to compute for the updates, given `computed`, and which updates may
    overwrite their leaf in place; `aliases` maps a gradient leaf to the node whose storage
    it reads."""
    done = set(computed)
    rest = [i for i in graph.live([node for node, _ in graph.leaf_updates()])
            if i not in done]
    return rest, _in_place(graph, computed + rest, set(rest), aliases)


def _write_updates(writer: EntryWriter, graph: Graph, done: set[int], rest: list[int],
                   in_place: dict[int, int]) -> None:
    """Every param's and state entry's new value, written into it; `done` is what the
    entry has computed already."""
    pairs = graph.leaf_updates()
    # A new value that exists before the updates (a gradient, or a param itself: Adam's
    # first moment is the gradient when beta1 = 0) is set aside now, since the updates
    # may overwrite what it is read from; it is written to its leaf at the end.
    set_aside: dict[tuple[int, int], ir.Value] = {}
    for node, leaf in pairs:
        if node != leaf and (node in done or graph.nodes[node].op in LEAVES):
            shape = graph.nodes[node].shape
            set_aside[node, leaf] = writer.allocate(shape, f"new_{writer.label(leaf)}")
            writer.copy(set_aside[node, leaf], writer.pointer(node), shape)
    writer.emit(rest, {}, in_place)
    for node, leaf in pairs:
        if node != leaf and in_place.get(node) != leaf:
            source = set_aside.get((node, leaf)) or writer.pointer(node)
            writer.copy(writer.pointer(leaf), source, graph.nodes[node].shape)
    writer.b.ret(ir.Constant(I32, 0))


def _in_place(graph: Graph, order: list[int], updating: set[int],
              aliases: dict[int, int]) -> dict[int, int]:
    """Update node -> the leaf it may overwrite directly: an elementwise update computed in
    the update phase (`updating`), with no later node reading the leaf's old value (itself,
    or through a gradient leaf aliasing it), and written into no other leaf."""
    position = {i: k for k, i in enumerate(order)}
    result: dict[int, int] = {}
    for node, leaf in graph.leaf_updates():
        if graph.nodes[node].op is not Op.ELEMENTWISE or node not in updating \
                or node in result:
            continue
        names = {leaf} | {g for g, target in aliases.items() if target == leaf}
        readers = [i for i in order if names & set(graph.nodes[i].inputs) and i != node]
        if all(position[r] < position[node] for r in readers):
            result[node] = leaf
    return result


def entries_of(compiled: Compiled) -> tuple[str, ...]:
    """The entry points a network has: all five with a loss, else only forward."""
    return ENTRIES if compiled.graph.loss is not None else ("forward",)


def generate(compiled: Compiled, dtype: str, vector_bytes: int,
             entries: tuple[str, ...] | None = None, fast: bool = False) -> Program:
    """The LLVM module for `compiled` in `dtype` with `entries` (default: all it has); with
    `fast`, also `bpc_fast_step`, the native fast path of step (fastcall.py)."""
    network = compiled.network
    # LLVM runs elementwise chains as one loop each: fuse across `.bp` names too.
    graph = fuse(compiled.graph, differentiate=False, respect_names=False)
    layout = layout_of(signature(compiled))
    module = ir.Module(name=network.name)
    lib = MathLibrary(module, dtype)
    matmul = Matmul(module, lib, vector_bytes)
    library = KernelLibrary(module, lib, matmul.lanes)
    entries = entries or entries_of(compiled)
    writers = {entry: _write_entry(module, graph, layout, lib, matmul, library, entry)
               for entry in entries}
    fields = array_fields()
    if fast and "step" in entries and fields is not None:
        shapes = {name: info.shape for name, info in network.params.items()}
        FastStep(module, layout, fields, lib.t, shapes, network.data).emit(
            module.globals["bpc_step"])
    return Program(str(module), layout, entries,
                   {entry: w.work for entry, w in writers.items()}, graph,
                   {entry: w.functions for entry, w in writers.items()})
