"""The kernels of a module: one internal function per distinct loop nest (elementwise
expressions, reductions, the softmax family, transposes, the finiteness check), shared by
every entry point; kernels no network shapes live in the prebuilt library (prebuilt.py)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable

import sympy
from llvmlite import ir

from ...graph.functions import dim_symbol
from ...graph.ir import operand
from .axis import REASSOC, AxisLoops, AxisView
from .expr import ExprCompiler
from .loops import I32, I64, PTR, for_range, i64, local, prebuilt_name, product
from .mathlib import MathFunctions
from .rows import RowKernels
from .vectors import Vectors

Pattern = tuple[bool, ...]  # per axis of the loop nest: is this operand broadcast along it?


def broadcast_offset(b: ir.IRBuilder, pattern: Pattern, dims: list[ir.Value],
                     index: list[ir.Value]) -> ir.Value:
    """Offset of `index` in a dense operand that is broadcast along the axes `pattern` marks."""
    offset: ir.Value | None = None
    for axis, broadcast in enumerate(pattern):
        if not broadcast:
            offset = index[axis] if offset is None else \
                b.add(b.mul(offset, dims[axis]), index[axis])
    return i64(0) if offset is None else offset


class Kernels:
    """One internal function per distinct kernel, shared by every entry point of a module.

    Networks repeat themselves (the same update for every param, the same activation in
    every layer): compiling each distinct loop nest once keeps compile time proportional to
    the variety of a network, not its size. Entry functions are then short lists of calls.

    Loops over the innermost axis are written vectorized: a body on `lanes`-wide vectors,
    then the same body for the remainder, on scalars (`vector_loop`) or, in elementwise
    kernels, once more on a vector whose lanes past the end are masked off
    (`masked_loop`). Writing the vectors ourselves, instead of leaving it to LLVM's loop
    vectorizer, cut compile time by more than half (measured on digits.bp) for the same
    machine code in the hot loops. A masked last vector spares LLVM a scalar copy of each
    expression (its exp, tanh, ... inlined twice): a small network's LLVM time fell by
    10-20%. Reductions keep the scalar remainder: their expression is usually a bare
    operand, and a masked store read back at once by the next kernel cannot be forwarded
    to the load (xor's step took 0.72 us with masked reductions, 0.66 without).
    """

    def __init__(self, module: ir.Module, lib: MathFunctions, lanes: int,
                 prebuilt: bool = False):
        self.module = module
        self.lib = lib
        self.t = lib.t
        self.lanes = lanes
        self.vt = ir.VectorType(self.t, lanes)
        self.vec = Vectors(module, self.t, lanes)
        self.itemsize = 8 if isinstance(self.t, ir.DoubleType) else 4
        self.cache: dict[tuple, ir.Function] = {}
        self.names: Counter[str] = Counter()
        self.values: dict[str, list[str]] = {}  # kernel -> the values it computes
        # Kernels no network shapes (matmul, softmax, ...) live in the prebuilt library
        # (prebuilt.py), compiled once per machine: a network's module only declares them;
        # the library's module (prebuilt=True) defines them.
        self.prebuilt = prebuilt

    def define(self, key: tuple, name: str, args: list[tuple[str, ir.Type]],
               returns: ir.Type, body: Callable[[ir.IRBuilder, dict], ir.Value | None],
               shared: bool = False) -> ir.Function:
        """The kernel `key` names, written by `body` the first time it is asked for;
        `shared` kernels are the prebuilt library's, only declared here."""
        function = self.cache.get(key)
        if function is not None:
            if not shared:
                self.values.setdefault(function.name, []).append(name)
            return function
        fnty = ir.FunctionType(returns, [t for _, t in args])
        if shared:
            function = ir.Function(self.module, fnty, prebuilt_name(name, self.t, self.lanes))
            self.cache[key] = function
            if not self.prebuilt:
                return function  # a declaration: the library defines it
        else:
            self.names[name] += 1
            unique = name if self.names[name] == 1 else f"{name}.{self.names[name]}"
            function = ir.Function(self.module, fnty, f"bpc.{unique}")
            function.linkage = "internal"
            self.values[function.name] = [name]
        function.attributes.add("nounwind")
        # Kept out of line: each kernel is optimized once, on its own, instead of inside
        # one huge entry function (which cost several times the compile time).
        function.attributes.add("noinline")
        for arg, (arg_name, _) in zip(function.args, args):
            arg.name = arg_name
        builder = ir.IRBuilder(function.append_basic_block("entry"))
        result = body(builder, {n: a for (n, _), a in zip(args, function.args)})
        if returns == ir.VoidType():
            builder.ret_void()
        else:
            builder.ret(result)
        self.cache[key] = function
        return function

    def name_by_values(self) -> None:
        """Name each kernel after the values it computes: `bpc.h` computes h; a kernel
        several values share (the same activation in two layers) is `bpc.h+y`, or
        `bpc.new_W1+3_more`. Done once every entry is written, before the module is
        printed (llvmlite prints a name only then)."""
        for old, values in self.values.items():
            distinct = list(dict.fromkeys(values))
            if len(distinct) == 1:
                continue
            shown = distinct if len(distinct) <= 3 else \
                [distinct[0], f"{len(distinct) - 1}_more"]
            function = self.module.globals.pop(old)
            function.name = f"bpc.{'+'.join(shown)}"
            self.module.globals[function.name] = function

    # ----------------------------------------------------------------- loops

    def nested(self, b: ir.IRBuilder, dims: list[ir.Value], body, name: str = "i",
               index: tuple = ()) -> None:
        """Loops over `dims`, outermost first; `body(index)` gets one index per axis."""
        if len(index) == len(dims):
            body(list(index))
            return
        with for_range(b, dims[len(index)], f"{name}{len(index)}") as k:
            self.nested(b, dims, body, name, (*index, k))

    def vector_loop(self, b: ir.IRBuilder, count: ir.Value, body: Callable[[ir.Value, bool],
                    None], name: str = "j") -> None:
        """`body(j, True)` for each whole vector of `count`, then `body(j, False)` for the
        elements left over."""
        whole = b.sub(count, b.srem(count, i64(self.lanes)), name=f"{name}.whole")
        with for_range(b, whole, f"{name}.v", step=self.lanes) as j:
            body(j, True)
        with for_range(b, count, f"{name}.s", start=whole) as j:
            body(j, False)

    def masked_loop(self, b: ir.IRBuilder, count: ir.Value,
                    body: Callable[[ir.Value, ir.Value | None], None], name: str = "j") -> None:
        """`body(j, None)` for each whole vector of `count`, then `body(j, mask)` once for
        the elements left over, if any, as a vector whose lanes past `count` are masked
        off: loaded as zero, computed, never stored."""
        whole = b.sub(count, b.srem(count, i64(self.lanes)), name=f"{name}.whole")
        with for_range(b, whole, f"{name}.v", step=self.lanes) as j:
            body(j, None)
        left = b.sub(count, whole, name=f"{name}.left")
        with b.if_then(b.icmp_signed(">", left, i64(0))):
            body(whole, self.vec.mask(b, left))

    def splat(self, b: ir.IRBuilder, x: ir.Value) -> ir.Value:
        single = b.insert_element(ir.Constant(self.vt, ir.Undefined), x, i64(0))
        zeros = ir.Constant(ir.VectorType(I32, self.lanes), [0] * self.lanes)
        return b.shuffle_vector(single, ir.Constant(self.vt, ir.Undefined), zeros)

    def load(self, b: ir.IRBuilder, base: ir.Value, offset: ir.Value, vector: bool,
             mask: ir.Value | None = None):
        pointer = b.gep(base, [offset], source_etype=self.t)
        name = f"{base.name}.v" if vector else f"{base.name}.s"
        if mask is not None:
            return self.vec.load(b, pointer, mask)
        if vector:
            return b.load(pointer, typ=self.vt, align=self.itemsize, name=name)
        return b.load(pointer, typ=self.t, name=name)

    def store(self, b: ir.IRBuilder, value: ir.Value, base: ir.Value, offset: ir.Value,
              mask: ir.Value | None = None) -> None:
        self.vec.store(b, value, b.gep(base, [offset], source_etype=self.t), mask)

    def operands(self, b: ir.IRBuilder, arg: dict, patterns: tuple[Pattern, ...],
                 sizes: tuple[str, ...], dims: list[ir.Value], index: list[ir.Value],
                 vector: bool, mask: ir.Value | None = None) -> dict:
        """Each operand's value at `index` (a vector of consecutive innermost elements when
        `vector`, its lanes outside `mask` zero); operands broadcast along the innermost
        axis are loaded once and splat."""
        values = {}
        for j, pattern in enumerate(patterns):
            offset = broadcast_offset(b, pattern, dims, index)
            varies = bool(pattern) and not pattern[-1]
            value = self.load(b, arg[f"a{j}"], offset, vector and varies,
                              mask if varies else None)
            values[operand(j)] = self.splat(b, value) if vector and not varies else value
        for size in sizes:
            values[dim_symbol(size)] = self.splat(b, arg[size]) if vector else arg[size]
        return values

    def evaluate(self, b: ir.IRBuilder, expr: sympy.Expr, values: dict, vector: bool):
        return ExprCompiler(b, self.lib, values, self.vt if vector else self.t).emit(expr)

    # ------------------------------------------------------------ elementwise

    def elementwise(self, expr: sympy.Expr, patterns: tuple[Pattern, ...], rank: int,
                    sizes: tuple[str, ...], alias: int | None, name: str) -> ir.Function:
        """out[i] = expr(a0[i], a1[i], ...) over a rank-`rank` loop nest. With `alias` = k,
        the result goes to operand k's memory (an in-place update)."""
        key = ("elementwise", expr, patterns, rank, sizes, alias)
        operands = [(f"a{k}", PTR) for k in range(len(patterns))]
        args = ([] if alias is not None else [("out", PTR)]) + operands
        args += [(f"n{a}", I64) for a in range(rank)] + [(s, self.t) for s in sizes]

        def body(b: ir.IRBuilder, arg: dict) -> None:
            dims = [arg[f"n{a}"] for a in range(rank)]
            out = arg["out"] if alias is None else arg[f"a{alias}"]

            def element(index: list[ir.Value], vector: bool, mask: ir.Value | None) -> None:
                values = self.operands(b, arg, patterns, sizes, dims, index, vector, mask)
                result = self.evaluate(b, expr, values, vector)
                self.store(b, result, out, broadcast_offset(b, (False,) * rank, dims, index),
                           mask)

            if rank == 0:
                element([], False, None)
                return
            self.nested(b, dims[:-1], lambda index: self.masked_loop(
                b, dims[-1], lambda j, mask: element([*index, j], True, mask)))

        return self.define(key, name, args, ir.VoidType(), body)

    # -------------------------------------------------------------- reductions

    def reduction(self, op: str, expr: sympy.Expr, patterns: tuple[Pattern, ...], rank: int,
                  axes: tuple[int, ...], sizes: tuple[str, ...], name: str) -> ir.Function:
        """out = sum or max over `axes` of expr(a0, ...) on a rank-`rank` tensor; out is dense
        over the kept axes. The expression is usually just a0; when an elementwise node is
        read only by this reduction, its expression is computed right here instead."""
        key = ("reduce", op, expr, patterns, rank, axes, sizes)
        args = [("out", PTR)] + [(f"a{k}", PTR) for k in range(len(patterns))]
        args += [(f"n{a}", I64) for a in range(rank)] + [(s, self.t) for s in sizes]
        start = {"sum": 0.0, "prod": 1.0, "max": -math.inf}[op]

        def body(b: ir.IRBuilder, arg: dict) -> None:
            k = AxisLoops(b, self.lib)
            dims = [arg[f"n{a}"] for a in range(rank)]
            out = arg["out"]

            def combine(x: ir.Value, y: ir.Value) -> ir.Value:
                if op == "sum":
                    return b.fadd(x, y, flags=REASSOC)
                if op == "prod":
                    return b.fmul(x, y, flags=REASSOC)
                return b.call(self.lib.intrinsic("llvm.maximum", x.type, x.type), [x, y])

            def value(index: list[ir.Value], vector: bool) -> ir.Value:
                values = self.operands(b, arg, patterns, sizes, dims, index, vector)
                return self.evaluate(b, expr, values, vector)

            kept = [dims[a] for a in range(rank) if a not in axes]
            with for_range(b, product(b, kept), "init") as i:
                k.store(k.const(start), out, i)
            if rank == 0:
                k.store(value([], False), out, i64(0))
                return
            outer_pattern = tuple(a in axes for a in range(rank - 1))

            def along_last(index: list[ir.Value]) -> None:
                target = broadcast_offset(b, outer_pattern, dims[:-1], index)
                if rank - 1 in axes:  # reduce the innermost axis: in registers
                    lanes = self.lib.ops(self.vt)
                    acc_v = local(b, self.vt, "acc.v")
                    b.store(lanes.const(start), acc_v)
                    acc = k.accumulator(start, "acc")

                    def step(j: ir.Value, vector: bool) -> None:
                        slot = acc_v if vector else acc
                        t = self.vt if vector else self.t
                        b.store(combine(b.load(slot, typ=t), value([*index, j], vector)), slot)

                    self.vector_loop(b, dims[-1], step)
                    total = combine(self.horizontal(b, op, b.load(acc_v, typ=self.vt)),
                                    b.load(acc, typ=self.t))
                    k.store(combine(k.load(out, target), total), out, target)
                else:  # keep the innermost axis: accumulate whole rows of out
                    def step(j: ir.Value, vector: bool) -> None:
                        position = b.add(b.mul(target, dims[-1]), j)
                        current = self.load(b, out, position, vector)
                        self.store(b, combine(current, value([*index, j], vector)), out,
                                   position)

                    self.vector_loop(b, dims[-1], step)

            self.nested(b, dims[:-1], along_last)

        return self.define(key, name, args, ir.VoidType(), body)

    def horizontal(self, b: ir.IRBuilder, op: str, vector: ir.Value) -> ir.Value:
        """The sum, product or max of a vector's lanes."""
        if op == "prod":
            reduce = self.lib.intrinsic("llvm.vector.reduce.fmul", self.t, self.vt,
                                        result=self.t, overload=(self.vt,))
            return b.call(reduce, [ir.Constant(self.t, 1.0), vector], fastmath=("reassoc",))
        if op == "sum":
            reduce = self.lib.intrinsic("llvm.vector.reduce.fadd", self.t, self.vt,
                                        result=self.t, overload=(self.vt,))
            return b.call(reduce, [ir.Constant(self.t, 0.0), vector], fastmath=("reassoc",))
        reduce = self.lib.intrinsic("llvm.vector.reduce.fmaximum", self.vt, result=self.t,
                                    overload=(self.vt,))
        return b.call(reduce, [vector])

    # -------------------------------------------------------- along one axis

    def along_axis(self, kind: str) -> ir.Function:
        """softmax, log_softmax, logsumexp or argmax_onehot over an [outer, axis, inner] view;
        rows along the last axis (inner = 1) go through the vector kernels of rows.py."""
        args = [("out", PTR), ("x", PTR), ("outer", I64), ("axis", I64), ("inner", I64)]

        def body(b: ir.IRBuilder, arg: dict) -> None:
            view = AxisView(arg["outer"], arg["axis"], arg["inner"])
            scalar = lambda: getattr(AxisLoops(b, self.lib), kind)(  # noqa: E731
                arg["out"], arg["x"], view, kind)
            row_kernel = getattr(RowKernels(b, self.lib, self.lanes), kind, None)
            if row_kernel is None:  # argmax_onehot: rare, scalar is fine
                scalar()
                return
            with b.if_else(b.icmp_signed("==", arg["inner"], i64(1))) as (rows, other):
                with rows:
                    row_kernel(arg["out"], arg["x"], arg["outer"], arg["axis"])
                with other:
                    scalar()

        return self.define((kind,), kind, args, ir.VoidType(), body, shared=True)

    def softmax_cross_entropy(self) -> ir.Function:
        args = [("out", PTR), ("logits", PTR), ("t", PTR), ("rows", I64), ("classes", I64)]

        def body(b: ir.IRBuilder, arg: dict) -> None:
            RowKernels(b, self.lib, self.lanes).cross_entropy(
                arg["out"], arg["logits"], arg["t"], arg["rows"], arg["classes"])

        return self.define(("xent",), "softmax_cross_entropy", args, ir.VoidType(), body,
                              shared=True)

    def transpose(self) -> ir.Function:
        args = [("out", PTR), ("x", PTR), ("rows", I64), ("cols", I64)]

        def body(b: ir.IRBuilder, arg: dict) -> None:
            AxisLoops(b, self.lib).transpose(arg["out"], arg["x"], arg["rows"], arg["cols"], "t",
                                             self.lanes)

        return self.define(("transpose",), "transpose", args, ir.VoidType(), body,
                              shared=True)

    def non_finite(self) -> ir.Function:
        """1 if any of the n values is inf or NaN, else 0: sum(x * 0) is 0 exactly when
        every x is finite, and one vector pass computes it."""
        args = [("x", PTR), ("n", I64)]

        def body(b: ir.IRBuilder, arg: dict) -> ir.Value:
            k = AxisLoops(b, self.lib)
            acc_v = local(b, self.vt, "probe.v")
            b.store(self.lib.ops(self.vt).const(0.0), acc_v)
            acc = k.accumulator(0.0, "probe")

            def step(j: ir.Value, vector: bool) -> None:
                slot, t = (acc_v, self.vt) if vector else (acc, self.t)
                zero = self.lib.ops(t).const(0.0)
                zeroed = b.fmul(self.load(b, arg["x"], j, vector), zero)
                b.store(b.fadd(b.load(slot, typ=t), zeroed), slot)

            self.vector_loop(b, arg["n"], step)
            total = b.fadd(self.horizontal(b, "sum", b.load(acc_v, typ=self.vt)),
                           b.load(acc, typ=self.t))
            return b.zext(b.fcmp_unordered("!=", total, total), I32)

        return self.define(("non_finite",), "non_finite", args, I32, body, shared=True)
