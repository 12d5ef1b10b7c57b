"""The fast path's loops over a network's arrays (fastcall.py), in the prebuilt library:
what differs between networks (each array's name, table slot, flags, rank and sizes) is a
table of records, a constant of each network's module, and the code that walks it is
compiled once per machine instead of unrolled into every network. A network's fast step
was a fifth to a quarter of its IR.

    i32 bind_arrays(ctx, dict, records, count, sizes, table, held, starts, ends)
        each record's array taken from `dict` by its interned name and checked
        (`array_data`): its data pointer put in its table slot and in starts, its end in
        ends, the array itself in held; 0 at the first that is missing or does not match
    i32 bind_keywords(ctx, args, nargs, kwnames, records, count, sizes, table)
        the same for arrays given by keyword, matched to names by identity; 0 unless the
        call gives exactly these names
    i32 disjoint(starts, ends, count)
        1 if no two of the spans [start, end) share a byte

The records of one call: {i64 key (the name's slot in the context), i64 table slot, i64
bytes, i32 flags, i32 rank, ptr spec (the sizes, as array_data reads them)}.
"""

from __future__ import annotations

from llvmlite import ir

from .fastpath import TUPLE_ITEMS, TUPLE_SIZE, Context
from .loops import I32, I64, PTR, for_range, i64, prebuilt_name

I8 = ir.IntType(8)
RECORD = ir.LiteralStructType([I64, I64, I64, I32, I32, PTR])
KEY, SLOT, BYTES, FLAGS, RANK, SPEC = range(6)
SIGNATURES = {
    "bind_arrays": ir.FunctionType(I32, [PTR] * 3 + [I64] + [PTR] * 5),
    "bind_keywords": ir.FunctionType(I32, [PTR, PTR, I64, PTR, PTR, I64, PTR, PTR]),
    "disjoint": ir.FunctionType(I32, [PTR, PTR, I64]),
}


def function(module: ir.Module, name: str, t: ir.Type) -> ir.Function:
    """One of the three, declared in `module` (or the one already there)."""
    symbol = prebuilt_name(name, t, 0)
    existing = module.globals.get(symbol)
    if existing is not None:
        return existing
    return ir.Function(module, SIGNATURES[name], symbol)


def define(module: ir.Module, t: ir.Type, array_data: ir.Function) -> None:
    """Define the three in the prebuilt library's module, `array_data` its checker."""
    dict_get = ir.Function(module, ir.FunctionType(PTR, [PTR, PTR]), "PyDict_GetItem")
    _define_bind_arrays(function(module, "bind_arrays", t), array_data, dict_get)
    _define_bind_keywords(function(module, "bind_keywords", t), array_data)
    _define_disjoint(function(module, "disjoint", t))


def records(module: ir.Module, name: str, entries: list[tuple[int, int, int, int, int,
                                                           ir.GlobalVariable]]
            ) -> ir.GlobalVariable:
    """A network's constant table of records (key, slot, bytes, flags, rank, spec)."""
    table = ir.GlobalVariable(module, ir.ArrayType(RECORD, len(entries)), name)
    table.global_constant = True
    table.linkage = "internal"
    table.initializer = ir.Constant(table.value_type, [
        ir.Constant(RECORD, [i64(key), i64(slot), i64(size), ir.Constant(I32, flags),
                             ir.Constant(I32, rank), spec])
        for key, slot, size, flags, rank, spec in entries])
    return table


def _named(f: ir.Function, names: str) -> ir.IRBuilder:
    f.attributes.add("noinline")
    for arg, name in zip(f.args, names.split()):
        arg.name = name
    return ir.IRBuilder(f.append_basic_block("entry"))


def _at(b: ir.IRBuilder, pointer: ir.Value, index: ir.Value, t: ir.Type = PTR) -> ir.Value:
    """The slot `index` of an array of `t` (a pointer, unless said)."""
    return b.gep(pointer, [index], source_etype=t)


def _field(b: ir.IRBuilder, records_: ir.Value, k: ir.Value, field: int) -> ir.Value:
    at = b.gep(records_, [k, ir.Constant(I32, field)], source_etype=RECORD)
    return b.load(at, typ=RECORD.elements[field])


def _checked(b: ir.IRBuilder, array_data: ir.Function, ctx: ir.Value, array: ir.Value,
             records_: ir.Value, k: ir.Value, sizes: ir.Value) -> ir.Value:
    """array_data of `array` for record k: its data, or null."""
    def context(slot: int) -> ir.Value:
        return b.load(_at(b, ctx, i64(slot)), typ=PTR)

    return b.call(array_data, [array, context(Context.NDARRAY), context(Context.DESCR),
                               _field(b, records_, k, FLAGS), _field(b, records_, k, RANK),
                               _field(b, records_, k, SPEC), sizes], name="data")


def _refuse_if_null(b: ir.IRBuilder, value: ir.Value) -> None:
    with b.if_then(b.icmp_unsigned("==", value, ir.Constant(PTR, None)), likely=False):
        b.ret(ir.Constant(I32, 0))


def _define_bind_arrays(f: ir.Function, array_data: ir.Function,
                        dict_get: ir.Function) -> None:
    b = _named(f, "ctx dict records count sizes table held starts ends")
    ctx, holder, records_, count, sizes, table, held, starts, ends = f.args
    with for_range(b, count, "k") as k:
        key = b.load(_at(b, ctx, _field(b, records_, k, KEY)), typ=PTR, name="key")
        array = b.call(dict_get, [holder, key], name="array")
        b.store(array, _at(b, held, k))
        data = _checked(b, array_data, ctx, array, records_, k, sizes)
        _refuse_if_null(b, data)
        b.store(data, _at(b, table, _field(b, records_, k, SLOT)))
        b.store(data, _at(b, starts, k))
        b.store(b.gep(data, [_field(b, records_, k, BYTES)], source_etype=I8), _at(b, ends, k))
    b.ret(ir.Constant(I32, 1))


def _define_bind_keywords(f: ir.Function, array_data: ir.Function) -> None:
    b = _named(f, "ctx args nargs kwnames records count sizes table")
    ctx, args, nargs, kwnames, records_, count, sizes, table = f.args
    _refuse_if_null(b, kwnames)
    given = b.load(b.gep(kwnames, [i64(TUPLE_SIZE)], source_etype=I8), typ=I64, name="given")
    with b.if_then(b.icmp_signed("!=", given, count), likely=False):
        b.ret(ir.Constant(I32, 0))
    found = b.alloca(PTR, name="found")
    with for_range(b, count, "k") as k:
        key = b.load(_at(b, ctx, _field(b, records_, k, KEY)), typ=PTR, name="key")
        b.store(ir.Constant(PTR, None), found)
        with for_range(b, count, "j") as j:  # the keyword whose name is this key
            name = b.load(b.gep(kwnames, [b.add(i64(TUPLE_ITEMS), b.mul(j, i64(8)))],
                                source_etype=I8), typ=PTR)
            with b.if_then(b.icmp_unsigned("==", name, key)):
                b.store(b.load(_at(b, args, b.add(nargs, j)), typ=PTR), found)
        data = _checked(b, array_data, ctx, b.load(found, typ=PTR), records_, k, sizes)
        _refuse_if_null(b, data)
        b.store(data, _at(b, table, _field(b, records_, k, SLOT)))
    b.ret(ir.Constant(I32, 1))


def _define_disjoint(f: ir.Function) -> None:
    """Every pair compared: constant code size, a nanosecond or so a pair."""
    b = _named(f, "starts ends count")
    starts, ends, count = f.args

    def at(table: ir.Value, k: ir.Value) -> ir.Value:
        return b.load(_at(b, table, k), typ=PTR)

    with for_range(b, count, "first") as i:
        with for_range(b, count, "second", start=b.add(i, i64(1))) as j:
            overlap = b.and_(b.icmp_unsigned("<", at(starts, i), at(ends, j)),
                             b.icmp_unsigned("<", at(starts, j), at(ends, i)))
            with b.if_then(overlap, likely=False):
                b.ret(ir.Constant(I32, 0))
    b.ret(ir.Constant(I32, 1))

