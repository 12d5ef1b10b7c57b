"""Graph -> one LLVM module with an entry function per entry point.

Every entry function has the signature `i32 bpc_<entry>(ptr table, ptr dims)`: `table` holds
one pointer per array (params, state, data, outputs, the workspace; see `Layout`), `dims`
the size bound to each symbol. It returns 0, or for `step` 1 + the index of the first
non-finite quantity (the loss, then each gradient), in which case nothing was updated.

An entry function computes its results (entry.py plans where each value lives, ops.py
writes each op), and `step` and `apply_gradients` then check the loss and gradients and
apply the optimizer's update in the order of the one update plan (passes/updates.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from llvmlite import ir

from ...graph.ir import Graph
from ...graph.naming import Naming
from ...graph.shapes import Shape
from ...passes.updates import UpdatePlan, plan_updates
from ...runtime.net import Compiled
from ...runtime.signature import Signature
from .entry import EntryWriter
from .fastcall import FastStep
from .fastpath import array_fields
from .jit import target_machine
from .kernels import Kernels
from .layout import Layout, layout_of
from .loops import I32
from .mathlib import MathFunctions
from .matmul import Matmul
from .ops import EMIT

ENTRIES = ("forward", "loss", "value_and_grad", "step", "apply_gradients")


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


def _write_entry(module: ir.Module, graph: Graph, naming: Naming, layout: Layout,
                 lib: MathFunctions, matmul: Matmul, kernels: Kernels,
                 entry: str) -> EntryWriter:
    writer = EntryWriter(module, graph, naming, layout, lib, matmul, kernels, entry, EMIT)
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
        plan = plan_updates(graph, leaves)
        writer.plan(leaves + list(plan.order), {}, plan.in_place)
        _refuse_non_finite(writer, kernels, leaves, first_status=2)
        _write_updates(writer, graph, plan)
        return writer
    # step: loss and gradients, the finiteness check, then the updates, which read each
    # gradient where step computed it
    # (and the buffers' new values, batch norm's running statistics, written last)
    buffers = graph.buffer_updates
    first = graph.live([graph.loss, *graph.grads.values(), *buffers.values()])
    aliases = {leaf: graph.grads[name] for name, leaf in graph.gradient_leaves.items()}
    plan = plan_updates(graph, first, aliases)
    writer.plan(first + list(plan.order), results, plan.in_place,
                keep=set(graph.grads.values()) | set(buffers.values()))
    writer.emit(first, results, {})
    writer.copy_results(results)
    _refuse_non_finite(writer, kernels, [graph.loss, *graph.grads.values()], first_status=1)
    _write_updates(writer, graph, plan, buffers)
    return writer


def _refuse_non_finite(writer: EntryWriter, kernels: Kernels, quantities: list[int],
                       first_status: int) -> None:
    """Return status first_status + k, changing nothing, if quantity k is not finite."""
    check = kernels.non_finite()
    for k, node in enumerate(quantities):
        bad = writer.b.call(check, [writer.pointer(node),
                                    writer.count(writer.graph.nodes[node].shape)])
        with writer.b.if_then(writer.b.icmp_signed("!=", bad, ir.Constant(I32, 0)),
                              likely=False):
            writer.b.ret(ir.Constant(I32, first_status + k))


def _write_updates(writer: EntryWriter, graph: Graph, plan: UpdatePlan,
                   buffers: dict[str, int] | None = None) -> None:
    """Every param's and state entry's new value, written into it as `plan` orders; then
    each buffer's (`buffers`, computed before the update phase)."""
    set_aside: dict[tuple[int, int], ir.Value] = {}
    for node, leaf in plan.set_aside:
        shape = graph.nodes[node].shape
        set_aside[node, leaf] = writer.allocate(shape, f"new_{writer.label(leaf)}")
        writer.copy(set_aside[node, leaf], writer.pointer(node), shape)
    writer.emit(list(plan.order), {}, plan.in_place)
    for node, leaf in plan.written_last():
        source = set_aside.get((node, leaf)) or writer.pointer(node)
        writer.copy(writer.pointer(leaf), source, graph.nodes[node].shape)
    for name, node in (buffers or {}).items():
        writer.copy(writer.pointer(graph.params[name]), writer.pointer(node),
                    graph.nodes[node].shape)
    writer.b.ret(ir.Constant(I32, 0))


def entries_of(compiled: Compiled) -> tuple[str, ...]:
    """The entry points a network has: all five with a loss, else only forward."""
    return ENTRIES if compiled.graph.loss is not None else ("forward",)


def generate(compiled: Compiled, signature: Signature, dtype: str, vector_bytes: int,
             entries: tuple[str, ...] | None = None, fast: bool = False,
             blas: bool = True) -> Program:
    """The LLVM module for `compiled` in `dtype` with `entries` (default: all it has); with
    `fast`, also `bpc_fast_step`, the native fast path of step (fastcall.py); without
    `blas`, every product a loop nest of our own (exported C calls no BLAS)."""
    network = compiled.network
    graph = compiled.for_backend("llvm")
    layout = layout_of(signature)
    module = ir.Module(name=network.name)
    lib = MathFunctions(module, dtype)
    matmul = Matmul(module, lib, vector_bytes, blas=blas)
    kernels = Kernels(module, lib, matmul.lanes)
    entries = entries or entries_of(compiled)
    naming = Naming(graph)
    writers = {entry: _write_entry(module, graph, naming, layout, lib, matmul, kernels, entry)
               for entry in entries}
    for writer in writers.values():
        writer.skip_optimizer_if_glue()
    fields = array_fields()
    if fast and "step" in entries and fields is not None:
        shapes = {name: info.shape for name, info in network.params.items()}
        FastStep(module, layout, fields, lib.t, shapes, signature.state, network.data,
                 signature.masks).emit(module.globals["bpc_step"])
    kernels.name_by_values()
    module.triple = target_machine().triple
    module.data_layout = str(target_machine().target_data)
    functions = {entry: {i: [f if isinstance(f, str) else f.name for f in called]
                         for i, called in w.functions.items()}
                 for entry, w in writers.items()}
    return Program(_with_source(str(module), network.source.filename), layout, entries,
                   {entry: w.work for entry, w in writers.items()}, graph, functions)


def _with_source(ir_text: str, filename: str) -> str:
    """The module's text naming the `.bp` file it was compiled from."""
    escaped = "".join(c if c.isprintable() and c not in '"\\' else f"\\{ord(c):02X}"
                      for c in filename)
    return f'source_filename = "{escaped}"\n{ir_text}'

