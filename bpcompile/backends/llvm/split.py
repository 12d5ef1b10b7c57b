"""Kernel calls whose work divides over the thread pool (threads.py): the images of a batch,
the rows of an elementwise loop, the output channels of a weight gradient.

A call site states how its kernel's work divides (`Split`): which argument counts the units,
and how far each pointer argument moves per unit. The call stores its arguments in a context
on the stack and hands `bpc_parallel` a task that gives each part its own range of units:
either the same kernel on a slice (pointers moved to the part's first unit, the count cut to
the part's), or, for a kernel that takes the range itself, its first and last unit. The units
are independent and each is computed as one pass over the whole would compute it, so the
result is the same bit for bit however many parts ran.

Work below PARALLEL_WORK (inner steps, about a nanosecond each) stays a plain call: a step
of a small network never waits on another thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from llvmlite import ir

from .loops import PTR, i64
from .tasks import declare_parallel, define_task, pack, part_range

if TYPE_CHECKING:
    from .entry import EntryWriter

PARALLEL_WORK = 1 << 15


@dataclass(frozen=True)
class Split:
    """How a kernel call's work divides. `count`: the argument that counts the units.
    `strides`: per argument, the bytes a pointer moves per unit (an int, or a value the
    entry function computes from the sizes; 0: every part reads or writes the whole).
    `first`: an argument that takes the part's first unit, for kernels that run
    `for unit in range(first, count)` over absolute units; then no pointer moves and
    `count` takes the part's end."""

    count: int
    strides: tuple[int | ir.Value, ...] = ()
    first: int | None = None


def call(w: EntryWriter, function: ir.Function, args: list[ir.Value], split: Split,
         work: ir.Value) -> None:
    """function(*args), its units divided over the pool when `work` (the inner steps of
    the whole call) is worth it; noted for `bpcompile show` as `EntryWriter.call` does."""
    w.functions.setdefault(w.current, []).append(function)
    divided(w.b, function, args, split, work)


def divided(b: ir.IRBuilder, function: ir.Function, args: list[ir.Value], split: Split,
            work: ir.Value) -> None:
    """function(*args) at `b`, its units divided over the pool when `work` is worth it.
    The context holds the arguments, then the stride of each argument that moves."""
    moving = [k for k, stride in enumerate(split.strides)
              if not (isinstance(stride, int) and stride == 0)] if split.first is None else []
    values = [*args, *(_i64(split.strides[k]) for k in moving)]
    with b.if_else(b.icmp_signed(">=", work, i64(PARALLEL_WORK))) as (large, small):
        with large:
            context, fields = pack(b, values, f"{function.name}.args")
            task = _task(b.module, function, fields, split.count, split.first, tuple(moving))
            b.call(declare_parallel(b.module), [task, context])
        with small:
            b.call(function, args)


def _i64(value: int | ir.Value) -> ir.Value:
    return i64(value) if isinstance(value, int) else value


def _task(module: ir.Module, function: ir.Function, fields: ir.LiteralStructType,
          count: int, first: int | None, moving: tuple[int, ...]) -> ir.Function:
    """`void task(ptr context, i64 part, i64 parts)`: the kernel over part `part` of the
    units; one per kernel and way of dividing it."""
    how = f"from{first}" if first is not None else "by" + "_".join(map(str, moving))
    task, b, loaded, part, parts = define_task(module, f"{function.name}.part.{count}.{how}",
                                               fields)
    if b is None:
        return task
    args, strides = loaded[:len(function.args)], loaded[len(function.args):]
    start, end = part_range(b, args[count], part, parts)
    if first is not None:
        args[first], args[count] = start, end
    else:
        for k, stride in zip(moving, strides):
            assert args[k].type == PTR
            args[k] = b.gep(args[k], [b.mul(start, stride)], source_etype=ir.IntType(8))
        args[count] = b.sub(end, start, name="units")
    b.call(function, args)
    b.ret_void()
    return task


def units(w: EntryWriter, count: ir.Value, per_unit: int) -> ir.Value:
    """The inner steps of `count` units of `per_unit` steps each."""
    return w.b.mul(count, i64(per_unit))

