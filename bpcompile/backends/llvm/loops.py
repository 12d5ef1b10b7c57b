"""Counted loops in IR, in the shape LLVM's loop vectorizer expects."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from llvmlite import ir

I64 = ir.IntType(64)
I32 = ir.IntType(32)
PTR = ir.PointerType()


def i64(value: int) -> ir.Constant:
    return ir.Constant(I64, value)


@contextmanager
def for_range(builder: ir.IRBuilder, count: ir.Value, name: str = "i",
              start: ir.Value | None = None, step: int | ir.Value = 1
              ) -> Iterator[ir.Value]:
    """`for name in range(start, count, step)`: the body is emitted inside the `with`."""
    before = builder.block
    head = builder.append_basic_block(f"{name}.loop")
    body = builder.append_basic_block(f"{name}.body")
    done = builder.append_basic_block(f"{name}.done")
    builder.branch(head)
    builder.position_at_end(head)
    index = builder.phi(I64, name=name)
    index.add_incoming(start if start is not None else i64(0), before)
    builder.cbranch(builder.icmp_signed("<", index, count), body, done)
    builder.position_at_end(body)
    yield index
    following = builder.add(index, i64(step) if isinstance(step, int) else step,
                            name=f"{name}.next")
    index.add_incoming(following, builder.block)
    builder.branch(head)
    builder.position_at_end(done)


def local(builder: ir.IRBuilder, typ: ir.Type, name: str) -> ir.Value:
    """A local variable: an alloca at the top of the function's entry block, where LLVM
    promotes it to registers (an alloca anywhere else stays in memory, and inside a loop
    grows the stack on every iteration)."""
    entry = builder.function.entry_basic_block
    with builder.goto_block(entry):
        builder.position_at_start(entry)
        return builder.alloca(typ, name=name)


def product(builder: ir.IRBuilder, values: list[ir.Value]) -> ir.Value:
    """The product of i64 values (1 for none)."""
    if not values:
        return i64(1)
    result = values[0]
    for value in values[1:]:
        result = builder.mul(result, value)
    return result


def prebuilt_name(name: str, t: ir.Type, lanes: int) -> str:
    """The symbol of a prebuilt library kernel: one per dtype and vector width."""
    dtype = "f64" if isinstance(t, ir.DoubleType) else "f32"
    return f"bpc_prebuilt.{name}.{dtype}x{lanes}"
