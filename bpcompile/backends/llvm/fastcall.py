"""The native fast path of `step`: a CPython builtin whose body is JIT-compiled IR.

A tiny network's step is a few hundred nanoseconds of arithmetic, and the Python around a
ctypes call (reading `arr.ctypes.data` alone costs about 1 us per array) would be ten times
that. So `net.step` becomes a builtin function (METH_FASTCALL | METH_KEYWORDS) that does, in
native code, what the checked path does in Python: for every param, state and data array
it checks the exact type, dtype descriptor, flags, rank and sizes, that no two arrays it
updates in place share memory, binds the symbolic sizes, fills the pointer table and calls
the compiled step. With dropout it also checks the state's `rng` entry, draws each mask
for that seed and step count (masks.py: the masks NumPy draws, bit for bit) and, once the
step is taken, counts it.

Anything it does not accept as-is (a missing or extra name, an int array to convert, a new
batch size, a non-finite step) makes it call the fully checked Python implementation with
the same arguments: the fallback raises the errors and does the conversions. The fast path
never changes an array before every check has passed, and the step kernel itself changes
nothing when it refuses.

It reads NumPy's public `PyArrayObject_fields` struct. The offsets are probed on a live
array at startup; if anything does not match, there is no fast path and every call takes
the checked path.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from llvmlite import ir

from ...graph.network import MaskInfo
from . import fastbind
from .fastpath import (
    ALIGNED,
    C_CONTIGUOUS,
    OB_TYPE,
    WRITEABLE,
    ArrayFields,
    Context,
)
from .layout import Layout
from .loops import I32, I64, PTR, for_range, i64, local, prebuilt_name
from .masks import draw_mask

I8 = ir.IntType(8)
def array_data_function(module: ir.Module, fields: ArrayFields | None,
                        name: str) -> ir.Function:
    """`ptr array_data(obj, ndarray, descr, flags, rank, spec, sizes)`: obj's data
    pointer if obj is exactly an ndarray with that descriptor, those flags set, that
    rank and the sizes `spec` gives, else null. spec[k] >= 0 is a fixed size; -1 - s
    is symbol s, bound in `sizes` (where -1 means not yet bound) or checked against it.
    """
    fnty = ir.FunctionType(PTR, [PTR, PTR, PTR, I32, I32, PTR, PTR])
    f = ir.Function(module, fnty, name)
    if fields is None:
        return f  # a declaration: the prebuilt library defines it
    f.attributes.add("noinline")
    obj, ndarray, descr, flags, rank, spec, sizes = f.args
    for arg, arg_name in zip(f.args, ("obj", "ndarray", "descr", "flags", "rank", "spec",
                                      "sizes")):
        arg.name = arg_name
    b = ir.IRBuilder(f.append_basic_block("entry"))
    bad = f.append_basic_block("bad")
    ir.IRBuilder(bad).ret(ir.Constant(PTR, None))

    def check(condition: ir.Value, label: str) -> None:
        ok = f.append_basic_block(label)
        b.cbranch(condition, ok, bad)
        b.position_at_end(ok)

    check(b.icmp_unsigned("!=", obj, ir.Constant(PTR, None)), "given")
    check(b.icmp_unsigned("==", _field(b, obj, OB_TYPE, PTR), ndarray), "ndarray")
    same = b.and_(b.icmp_unsigned("==", _field(b, obj, fields.descr, PTR), descr),
                  b.icmp_signed("==", b.and_(_field(b, obj, fields.flags, I32), flags),
                                flags))
    check(b.and_(same, b.icmp_signed("==", _field(b, obj, fields.nd, I32), rank)),
          "layout")
    dims = _field(b, obj, fields.dimensions, PTR)
    count = b.sext(rank, I64)
    with for_range(b, count, "axis") as axis:
        size = b.load(b.gep(dims, [axis], source_etype=I64), typ=I64)
        wanted = b.load(b.gep(spec, [axis], source_etype=I64), typ=I64)
        fixed = b.icmp_signed(">=", wanted, i64(0))
        slot = b.gep(sizes, [b.sub(i64(-1), b.select(fixed, i64(-1), wanted))],
                     source_etype=I64)
        bound = b.load(slot, typ=I64)
        unbound = b.and_(b.not_(fixed), b.icmp_signed("==", bound, i64(-1)))
        with b.if_then(unbound):
            b.store(size, slot)
        expected = b.select(fixed, wanted, b.select(unbound, size, bound))
        ok = b.and_(b.icmp_signed("==", size, expected), b.icmp_signed(">", size, i64(0)))
        check(ok, "size")
    b.ret(_field(b, obj, fields.data, PTR))
    return f


def _field(b: ir.IRBuilder, obj: ir.Value, offset: int, t: ir.Type) -> ir.Value:
    return b.load(b.gep(obj, [i64(offset)], source_etype=I8), typ=t)


BUSY = "bpc_busy"
# Steps whose params times sizes (a rough count of their work) reach this release the GIL
GIL_FREE_WORK = 1 << 16
TRY_BUSY = "bpc_try_busy"


def try_busy_function(module: ir.Module) -> ir.Function:
    """`i32 bpc_try_busy()`: mark the network busy and return 1, or return 0 if a fast
    step already has; the checked step calls it (holding the GIL, so that no fast step can
    begin between the test and the mark) before it touches step's workspace."""
    busy = module.globals[BUSY]
    f = ir.Function(module, ir.FunctionType(I32, []), TRY_BUSY)
    b = ir.IRBuilder(f.append_basic_block("entry"))
    idle = b.icmp_signed("==", b.load(busy, typ=I32), ir.Constant(I32, 0))
    with b.if_then(idle):
        b.store(ir.Constant(I32, 1), busy)
    b.ret(b.zext(idle, I32))
    return f


class FastStep:
    """Emits `bpc_fast_step` into the module holding `bpc_step`."""

    def __init__(self, module: ir.Module, layout: Layout, fields: ArrayFields, t: ir.Type,
                 param_shapes: dict[str, tuple[int, ...]],
                 state_shapes: dict[str, tuple[int, ...]], data_shapes: dict[str, tuple],
                 masks: Mapping[str, MaskInfo]):
        self.module = module
        self.masks = masks  # drawn here, into buffers the executor sets in the table
        self.t = t
        self.layout = layout
        self.fields = fields
        self.context = Context(layout)
        self.param_shapes = param_shapes
        self.state_shapes = state_shapes
        self.data_shapes = data_shapes
        self.ctx = ir.GlobalVariable(module, ir.ArrayType(PTR, self.context.size), "bpc_ctx")
        self.ctx.initializer = ir.Constant(self.ctx.value_type, None)
        # the sizes the fast table's workspace was made for, then 1 once it is set
        self.bound = ir.GlobalVariable(module, ir.ArrayType(I64, len(layout.dims) + 1),
                                       "bpc_bound_dims")
        self.bound.initializer = ir.Constant(self.bound.value_type, None)
        declare = lambda name, ret, *args: ir.Function(  # noqa: E731
            module, ir.FunctionType(ret, list(args)), name)
        # set while a fast step runs without the GIL: another call (fast or checked) must
        # not touch the fast table or step's workspace meanwhile; every change of it is
        # made holding the GIL, so a plain load and store are enough
        self.busy = ir.GlobalVariable(module, I32, BUSY)
        self.busy.initializer = ir.Constant(I32, 0)
        self.save_thread = declare("PyEval_SaveThread", PTR)
        self.restore_thread = declare("PyEval_RestoreThread", ir.VoidType(), PTR)
        self.incref = declare("Py_IncRef", ir.VoidType(), PTR)
        self.decref = declare("Py_DecRef", ir.VoidType(), PTR)
        self.dict_get = declare("PyDict_GetItem", PTR, PTR, PTR)
        self.dict_size = declare("PyDict_Size", I64, PTR)
        self.new_float = declare("PyFloat_FromDouble", PTR, ir.DoubleType())
        self.vectorcall = declare("PyObject_Vectorcall", PTR, PTR, PTR, I64, PTR)
        lanes = 0  # array_data does not depend on the vector width; one per dtype
        self.array_data = array_data_function(module, None, prebuilt_name("array_data", t, lanes))
        self.bind_arrays, self.bind_keywords, self.disjoint = (
            fastbind.function(module, name, t)
            for name in ("bind_arrays", "bind_keywords", "disjoint"))
        self.specs = 0
        self.itemsize = 8 if isinstance(t, ir.DoubleType) else 4

    # ------------------------------------------------------------------ helpers

    def field(self, b: ir.IRBuilder, obj: ir.Value, offset: int, t: ir.Type) -> ir.Value:
        return b.load(b.gep(obj, [i64(offset)], source_etype=I8), typ=t)

    def ctx_slot(self, b: ir.IRBuilder, slot: int) -> ir.Value:
        return b.load(b.gep(self.ctx, [i64(0), i64(slot)], source_etype=self.ctx.value_type),
                      typ=PTR)

    def spec(self, shape: tuple) -> ir.GlobalVariable:
        """The size spec of `shape` for `bpc.array_data`, as a constant global."""
        values = [d if isinstance(d, int) else -1 - self.layout.dims.index(d) for d in shape]
        spec = ir.GlobalVariable(self.module, ir.ArrayType(I64, max(1, len(values))),
                                 f"bpc.spec{self.specs}")
        self.specs += 1
        spec.global_constant = True
        spec.linkage = "internal"
        spec.initializer = ir.Constant(spec.value_type, values or [0])
        return spec

    # --------------------------------------------------------------------- body

    def emit(self, step: ir.Function) -> ir.Function:
        fnty = ir.FunctionType(PTR, [PTR, PTR, I64, PTR])
        f = ir.Function(self.module, fnty, "bpc_fast_step")
        fallback, args, nargs, kwnames = f.args
        for arg, arg_name in zip(f.args, ("fallback", "args", "nargs", "kwnames")):
            arg.name = arg_name
        entry = f.append_basic_block("entry")
        slow = f.append_basic_block("slow")
        b = ir.IRBuilder(slow)
        b.ret(b.call(self.vectorcall, [fallback, args, nargs, kwnames]))
        self.b, self.f, self.slow = ir.IRBuilder(entry), f, slow
        b = self.b
        sizes = b.alloca(I64, size=max(1, len(self.layout.dims)), name="sizes")
        for k in range(len(self.layout.dims)):
            b.store(i64(-1), b.gep(sizes, [i64(k)], source_etype=I64))
        # another thread's fast step is running (without the GIL): the checked path waits
        self.require(b.icmp_signed("==", b.load(self.busy, typ=I32), ir.Constant(I32, 0)),
                     "idle")
        table = self.ctx_slot(b, Context.TABLE)
        self.require(b.icmp_signed("==", nargs, i64(2)), "positional")
        p, s = (b.load(b.gep(args, [i64(k)], source_etype=PTR), typ=PTR) for k in (0, 1))
        # the arrays updated in place: the dicts' (kept alive while the GIL is off), then
        # the state's rng entry; their spans, which must not overlap
        groups = (("param", self.layout.params, p), ("state", self.layout.state, s))
        updated = len(self.layout.params) + len(self.layout.state) + bool(self.masks)
        held, starts, ends = (b.alloca(PTR, size=max(1, updated), name=name)
                              for name in ("held", "starts", "ends"))
        bound = 0
        for kind, group, holder in groups:
            extra = 1 if kind == "state" and self.masks else 0  # the state's rng entry
            self.require_dict(holder, len(group) + extra, kind)
            if not group:
                continue
            at = [b.gep(array, [i64(bound)], source_etype=PTR) for array in (held, starts, ends)]
            ok = b.call(self.bind_arrays, [self.ctx, holder, self.records(kind, group),
                                           i64(len(group)), sizes, table, *at])
            self.require(b.icmp_signed("!=", ok, ir.Constant(I32, 0)), f"{kind}.arrays")
            bound += len(group)
        rng = self.rng(s, sizes, held, starts, ends, bound) if self.masks else None
        self.held = (held, updated)
        if updated >= 2:  # as checks.check_disjoint: the same array twice, or two views
            # of one buffer, would have one update overwrite a value another still reads
            ok = b.call(self.disjoint, [starts, ends, i64(updated)])
            self.require(b.icmp_signed("!=", ok, ir.Constant(I32, 0)), "disjoint")
        self.data(args, nargs, kwnames, table, sizes)
        for k in range(len(self.layout.dims) + 1):
            wanted = i64(1) if k == len(self.layout.dims) else \
                b.load(b.gep(sizes, [i64(k)], source_etype=I64), typ=I64)
            have = b.load(b.gep(self.bound, [i64(0), i64(k)],
                                source_etype=self.bound.value_type), typ=I64)
            self.require(b.icmp_signed("==", wanted, have), "workspace")
        if rng is not None:
            self.draw_masks(table, rng, sizes)
        status = self.call_step(step, [table, self.bound], sizes)
        self.require(b.icmp_signed("==", status, ir.Constant(I32, 0)), "finite")
        if rng is not None:  # the step is taken: it counts for the masks
            steps = b.gep(rng, [i64(1)], source_etype=I64)
            b.store(b.add(b.load(steps, typ=I64), i64(1)), steps)
        loss = b.load(self.ctx_slot(b, Context.LOSS), typ=self.t)
        if self.t != ir.DoubleType():
            loss = b.fpext(loss, ir.DoubleType())
        b.ret(b.call(self.new_float, [loss]))
        try_busy_function(self.module)
        return f

    def rng(self, s: ir.Value, sizes: ir.Value, held: ir.Value, starts: ir.Value,
            ends: ir.Value, k: int) -> ir.Value:
        """The data of the state's `rng` entry, [seed, step count]: exactly a writable,
        C-contiguous uint64 array of 2 (else the checked path, which says what is wrong);
        held, and its span noted, as the k-th array updated in place."""
        b = self.b
        array = b.call(self.dict_get, [s, self.ctx_slot(b, Context.RNG)])
        data = b.call(self.array_data, [
            array, self.ctx_slot(b, Context.NDARRAY), self.ctx_slot(b, Context.RNG_DESCR),
            ir.Constant(I32, C_CONTIGUOUS | ALIGNED | WRITEABLE), ir.Constant(I32, 1),
            self.spec((2,)), sizes], name="rng")
        self.require(b.icmp_unsigned("!=", data, ir.Constant(PTR, None)), "rng")
        b.store(array, b.gep(held, [i64(k)], source_etype=PTR))
        b.store(data, b.gep(starts, [i64(k)], source_etype=PTR))
        b.store(b.gep(data, [i64(16)], source_etype=I8), b.gep(ends, [i64(k)], source_etype=PTR))
        return data

    def draw_masks(self, table: ir.Value, rng: ir.Value, sizes: ir.Value) -> None:
        """Each dropout's mask for this step, into the buffer the table's slot points at
        (the executor's, for the sizes the workspace is bound to)."""
        b = self.b
        seed = b.load(rng, typ=I64, name="seed")
        steps = b.load(b.gep(rng, [i64(1)], source_etype=I64), typ=I64, name="steps")
        for name, info in self.masks.items():
            count = i64(1)
            for d in info.shape:
                size = i64(d) if isinstance(d, int) else b.load(
                    b.gep(sizes, [i64(self.layout.dims.index(d))], source_etype=I64), typ=I64)
                count = b.mul(count, size)
            mask = b.load(b.gep(table, [i64(self.layout.data_slot(name))], source_etype=PTR),
                          typ=PTR)
            draw_mask(b, self.t, seed, steps, mask, info.site, info.rate, count)

    def call_step(self, step: ir.Function, args: list[ir.Value], sizes: ir.Value
                  ) -> ir.Value:
        """The step kernel's status: called with the GIL released when the step is large
        enough for other threads to gain (releasing and taking it back costs about 0.1
        us, a fifth of xor's whole step), else called as it is."""
        b = self.b
        work = i64(sum(math.prod(shape) for shape in self.param_shapes.values()))
        for k in range(len(self.layout.dims)):
            work = b.mul(work, b.load(b.gep(sizes, [i64(k)], source_etype=I64), typ=I64))
        status = local(b, I32, "status")
        with b.if_else(b.icmp_signed(">=", work, i64(GIL_FREE_WORK))) as (large, small):
            with large:
                b.store(self.without_gil(step, args), status)
            with small:
                b.store(b.call(step, args), status)
        return b.load(status, typ=I32)

    def without_gil(self, step: ir.Function, args: list[ir.Value]) -> ir.Value:
        """step(*args) with the GIL released, so other Python threads run meanwhile: the
        network marked busy first, and each param and state array held by a reference of
        our own, since another thread could take one out of its dict (dropping the last
        reference) while the kernel still writes it. The data arrays are held by the call's
        own arguments."""
        b = self.b
        held, count = self.held
        b.store(ir.Constant(I32, 1), self.busy)
        self.each_held(held, count, self.incref)
        thread = b.call(self.save_thread, [], name="thread")
        status = b.call(step, args, name="status")
        b.call(self.restore_thread, [thread])
        self.each_held(held, count, self.decref)
        b.store(ir.Constant(I32, 0), self.busy)
        return status

    def each_held(self, held: ir.Value, count: int, function: ir.Function) -> None:
        with for_range(self.b, i64(count), "held") as k:
            self.b.call(function, [self.b.load(self.b.gep(held, [k], source_etype=PTR),
                                               typ=PTR)])

    def require(self, condition: ir.Value, label: str) -> None:
        """Continue only if `condition` holds; otherwise take the checked path."""
        ok = self.f.append_basic_block(f"ok.{label}")
        self.b.cbranch(condition, ok, self.slow)
        self.b.position_at_end(ok)

    def require_dict(self, obj: ir.Value, size: int, label: str) -> None:
        b = self.b
        kind = self.field(b, obj, OB_TYPE, PTR)
        self.require(b.icmp_unsigned("==", kind, self.ctx_slot(b, Context.DICT)), f"{label}.dict")
        count = b.call(self.dict_size, [obj])
        self.require(b.icmp_signed("==", count, i64(size)), f"{label}.size")

    def records(self, kind: str, names: list[str] | tuple[str, ...]) -> ir.GlobalVariable:
        """The constant records (fastbind.py) of the arrays `names` of one kind: param
        and state arrays are written in place, data arrays only read."""
        shapes = {"param": self.param_shapes, "state": self.state_shapes,
                  "data": self.data_shapes}[kind]
        slot = {"param": self.layout.param, "state": self.layout.state_slot,
                "data": self.layout.data_slot}[kind]
        flags = C_CONTIGUOUS | ALIGNED | (0 if kind == "data" else WRITEABLE)
        entries = []
        for name in names:
            shape = shapes[name]
            nbytes = math.prod(shape) * self.itemsize if kind != "data" else 0  # span
            entries.append((self.context.key(kind, name), slot(name), nbytes, flags,
                            len(shape), self.spec(shape)))
        return fastbind.records(self.module, f"bpc.{kind}.records", entries)

    def data(self, args: ir.Value, nargs: ir.Value, kwnames: ir.Value, table: ir.Value,
             sizes: ir.Value) -> None:
        """The data arrays, given by keyword: matched to their names by identity (call sites
        pass interned strings, so this is the common case; anything else falls back)."""
        b = self.b
        names = [name for name in self.layout.data if name not in self.masks]
        if not names:
            self.require(b.icmp_unsigned("==", kwnames, ir.Constant(PTR, None)), "no.keywords")
            return
        ok = b.call(self.bind_keywords, [self.ctx, args, nargs, kwnames,
                                         self.records("data", names), i64(len(names)), sizes,
                                         table])
        self.require(b.icmp_signed("!=", ok, ir.Constant(I32, 0)), "keywords")
