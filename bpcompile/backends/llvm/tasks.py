"""What a network module writes to use the thread pool (threads.py): a context packed on
the stack, a task that unpacks it and takes its part's range of the units, and the call of
`bpc_parallel`. split.py (kernels) and matmul.py (BLAS products) build their tasks so."""

from __future__ import annotations

from llvmlite import ir

from .loops import I32, PTR, i64, local
from .threads import PARALLEL, TASK


def pack(builder: ir.IRBuilder, values: list[ir.Value], name: str
         ) -> tuple[ir.Value, ir.LiteralStructType]:
    """A context on the stack holding `values` (for a task to unpack), and its type."""
    fields = ir.LiteralStructType([v.type for v in values])
    context = local(builder, fields, name)
    for k, value in enumerate(values):
        # no source_etype: llvmlite then types the pointer by the field
        builder.store(value, builder.gep(context, [ir.Constant(I32, 0), ir.Constant(I32, k)]))
    return context, fields


def define_task(module: ir.Module, name: str, fields: ir.LiteralStructType, names: str | None
                = None) -> tuple[ir.Function, ir.IRBuilder, list[ir.Value], ir.Value, ir.Value]:
    """A task (internal) that unpacks a context of type `fields`, or the one already named
    `name` (then the builder is None): (task, builder, values, part, parts)."""
    existing = module.globals.get(name)
    if existing is not None:
        return existing, None, [], None, None  # type: ignore[return-value]
    task = ir.Function(module, TASK, name)
    task.linkage = "internal"
    task.attributes.add("nounwind")
    # A task unpacks its context, takes its range and calls a kernel: it runs only for
    # work worth dividing (split.py), where a few unoptimized instructions do not show,
    # and LLVM's optimizer spent about a tenth of a small network's LLVM time on tasks.
    task.attributes.add("noinline")
    task.attributes.add("optnone")
    context, part, parts = task.args
    context.name, part.name, parts.name = "context", "part", "parts"
    b = ir.IRBuilder(task.append_basic_block("entry"))
    labels = names or [f"arg{k}" for k in range(len(fields.elements))]
    values = [b.load(b.gep(context, [ir.Constant(I32, 0), ir.Constant(I32, k)],
                           source_etype=fields), typ=t, name=label)
              for k, (t, label) in enumerate(zip(fields.elements, labels))]
    return task, b, values, part, parts


def part_range(b: ir.IRBuilder, count: ir.Value, part: ir.Value, parts: ir.Value
               ) -> tuple[ir.Value, ir.Value]:
    """[first, end) of `count` units that part `part` of `parts` takes: shares differ by at
    most one, and depend on nothing but the three numbers."""
    first = b.sdiv(b.mul(count, part), parts, name="first")
    end = b.sdiv(b.mul(count, b.add(part, i64(1))), parts, name="end")
    return first, end


def declare_parallel(module: ir.Module) -> ir.Function:
    """`bpc_parallel` as a network module declares it."""
    existing = module.globals.get(PARALLEL)
    if existing is not None:
        return existing
    return ir.Function(module, ir.FunctionType(ir.VoidType(), [PTR, PTR]), PARALLEL)
