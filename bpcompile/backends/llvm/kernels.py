"""Loop nests for the structural ops: reductions, the softmax family, transposes.

An op along one axis sees its tensor as [outer, axis, inner] (C order): element (o, a, i) is
at (o * A + a) * I + i. Along the last axis I = 1 and rows are contiguous; reducing every
axis is [1, size, 1]. Each kernel loops over o and i and makes its passes over a.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import sympy
from llvmlite import ir

from ...graph.ir import operand
from ...graph.shapes import dim_symbol
from .expr import ExprCompiler
from .loops import I32, I64, PTR, for_range, i64, product
from .mathlib import MathLibrary
from .rows import RowKernels

REASSOC = ("reassoc", "contract")  # sums may be reordered (pairwise or vector lanes), as NumPy does


@dataclass(frozen=True)
class AxisView:
    """A tensor as [outer, axis, inner]."""

    outer: ir.Value
    axis: ir.Value
    inner: ir.Value


def axis_view(builder: ir.IRBuilder, dims: list[ir.Value], axes: tuple[int, ...]) -> AxisView:
    """The [outer, axis, inner] view of a tensor of `dims` along `axes` (one axis, or all)."""
    if len(axes) == len(dims) and len(axes) != 1:
        return AxisView(i64(1), product(builder, dims), i64(1))
    (axis,) = axes
    return AxisView(product(builder, dims[:axis]), dims[axis], product(builder, dims[axis + 1:]))


class Kernels:
    """Emits structural kernels into a function, for one dtype."""

    def __init__(self, builder: ir.IRBuilder, lib: MathLibrary):
        self.b = builder
        self.lib = lib
        self.t = lib.t

    # ------------------------------------------------------------------ memory

    def load(self, base: ir.Value, offset: ir.Value, name: str = "") -> ir.Value:
        return self.b.load(self.b.gep(base, [offset], source_etype=self.t), name=name,
                           typ=self.t)

    def store(self, value: ir.Value, base: ir.Value, offset: ir.Value) -> None:
        self.b.store(value, self.b.gep(base, [offset], source_etype=self.t))

    def const(self, value: float) -> ir.Constant:
        return ir.Constant(self.t, value)

    def accumulator(self, start: float, name: str) -> ir.Value:
        """A local variable (SSA after mem2reg) for a running value."""
        entry = self.b.function.entry_basic_block
        with self.b.goto_block(entry):
            self.b.position_at_start(entry)
            slot = self.b.alloca(self.t, name=name)
        self.b.store(self.const(start), slot)
        return slot

    def maximum(self, a: ir.Value, b: ir.Value) -> ir.Value:
        return self.b.call(self.lib.intrinsic("llvm.maximum", self.t, self.t), [a, b])

    # -------------------------------------------------------- along-axis helper

    def rows(self, view: AxisView, body: Callable[..., None], name: str) -> None:
        """Run `body(at, o, n)` for each (outer o, inner n) pair; `at(a)` is the offset of
        element a along the axis."""
        with for_range(self.b, view.outer, f"{name}.o") as o:
            with for_range(self.b, view.inner, f"{name}.n") as n:
                start = self.b.mul(o, self.b.mul(view.axis, view.inner))

                def at(a: ir.Value) -> ir.Value:
                    return self.b.add(self.b.add(start, self.b.mul(a, view.inner)), n)

                body(at, o, n)

    def reduce_max(self, source: ir.Value, view: AxisView, at, name: str) -> ir.Value:
        best = self.accumulator(-math.inf, f"{name}.max")
        with for_range(self.b, view.axis, f"{name}.a") as a:
            self.b.store(self.maximum(self.b.load(best, typ=self.t),
                                      self.load(source, at(a))), best)
        return self.b.load(best, typ=self.t)

    def sum_exp(self, source: ir.Value, view: AxisView, at, shift: ir.Value,
                name: str) -> ir.Value:
        total = self.accumulator(0.0, f"{name}.sum")
        with for_range(self.b, view.axis, f"{name}.a") as a:
            e = self.lib.call(self.b, "exp", self.b.fsub(self.load(source, at(a)), shift))
            self.b.store(self.b.fadd(self.b.load(total, typ=self.t), e, flags=REASSOC), total)
        return self.b.load(total, typ=self.t)

    def log_sum_exp(self, source: ir.Value, view: AxisView, at, name: str) -> ir.Value:
        """max + log(sum(exp(x - max))): finite for any finite x."""
        top = self.reduce_max(source, view, at, name)
        # an all -inf row: shift by 0 so exp(-inf - 0) = 0 and the result is -inf, not NaN
        finite = self.b.fcmp_ordered("!=", top, self.const(-math.inf))
        shift = self.b.select(finite, top, self.const(0.0))
        return self.b.fadd(shift, self.lib.call(self.b, "log",
                                                self.sum_exp(source, view, at, shift, name)))

    # ------------------------------------------------------------ the kernels

    def softmax(self, out: ir.Value, source: ir.Value, view: AxisView, name: str) -> None:
        def body(at, o, n):
            top = self.reduce_max(source, view, at, name)
            total = self.accumulator(0.0, f"{name}.sum")
            with for_range(self.b, view.axis, f"{name}.e") as a:
                e = self.lib.call(self.b, "exp", self.b.fsub(self.load(source, at(a)), top))
                self.store(e, out, at(a))
                self.b.store(self.b.fadd(self.b.load(total, typ=self.t), e, flags=REASSOC),
                             total)
            scale = self.b.fdiv(self.const(1.0), self.b.load(total, typ=self.t))
            with for_range(self.b, view.axis, f"{name}.w") as a:
                self.store(self.b.fmul(self.load(out, at(a)), scale), out, at(a))
        self.rows(view, body, name)

    def log_softmax(self, out: ir.Value, source: ir.Value, view: AxisView, name: str) -> None:
        def body(at, o, n):
            lse = self.log_sum_exp(source, view, at, name)
            with for_range(self.b, view.axis, f"{name}.w") as a:
                self.store(self.b.fsub(self.load(source, at(a)), lse), out, at(a))
        self.rows(view, body, name)

    def logsumexp(self, out: ir.Value, source: ir.Value, view: AxisView, name: str) -> None:
        """One value per (outer, inner) pair, stored at o * I + n."""
        def body(at, o, n):
            index = self.b.add(self.b.mul(o, view.inner), n)
            self.store(self.log_sum_exp(source, view, at, name), out, index)
        self.rows(view, body, name)

    def argmax_onehot(self, out: ir.Value, source: ir.Value, view: AxisView,
                      name: str) -> None:
        """1 at the first maximum along the axis (as NumPy's argmax), 0 elsewhere."""
        def body(at, o, n):
            best = self.accumulator(-math.inf, f"{name}.best")
            where = self.b.alloca(I64, name=f"{name}.where")
            self.b.store(i64(0), where)
            with for_range(self.b, view.axis, f"{name}.a") as a:
                x = self.load(source, at(a))
                better = self.b.fcmp_ordered(">", x, self.b.load(best, typ=self.t))
                self.b.store(self.b.select(better, x, self.b.load(best, typ=self.t)), best)
                self.b.store(self.b.select(better, a, self.b.load(where, typ=I64)), where)
            chosen = self.b.load(where, typ=I64)
            with for_range(self.b, view.axis, f"{name}.w") as a:
                hit = self.b.icmp_signed("==", a, chosen)
                self.store(self.b.select(hit, self.const(1.0), self.const(0.0)), out, at(a))
        self.rows(view, body, name)

    def softmax_cross_entropy(self, out: ir.Value, logits: ir.Value, targets: ir.Value,
                              view: AxisView, name: str) -> None:
        """mean over rows of sum_c t_c (lse - z_c), rows along the last axis."""
        total = self.accumulator(0.0, f"{name}.total")

        def body(at, o, n):
            lse = self.log_sum_exp(logits, view, at, name)
            row = self.accumulator(0.0, f"{name}.row")
            with for_range(self.b, view.axis, f"{name}.c") as c:
                term = self.b.fmul(self.load(targets, at(c)),
                                   self.b.fsub(lse, self.load(logits, at(c))))
                self.b.store(self.b.fadd(self.b.load(row, typ=self.t), term, flags=REASSOC),
                             row)
            self.b.store(self.b.fadd(self.b.load(total, typ=self.t),
                                     self.b.load(row, typ=self.t), flags=REASSOC), total)
        self.rows(view, body, name)
        rows = self.b.sitofp(view.outer, self.t)
        self.store(self.b.fdiv(self.b.load(total, typ=self.t), rows), out, i64(0))

    def transpose(self, out: ir.Value, source: ir.Value, rows: ir.Value, cols: ir.Value,
                  name: str) -> None:
        """out[j, i] = source[i, j], written in row order of the output."""
        with for_range(self.b, cols, f"{name}.j") as j:
            with for_range(self.b, rows, f"{name}.i") as i:
                value = self.load(source, self.b.add(self.b.mul(i, cols), j))
                self.store(value, out, self.b.add(self.b.mul(j, rows), i))

    def copy(self, out: ir.Value, source: ir.Value, count: ir.Value, name: str) -> None:
        with for_range(self.b, count, f"{name}.k") as k:
            self.store(self.load(source, k), out, k)

    def non_finite(self, source: ir.Value, count: ir.Value, name: str) -> ir.Value:
        """True if any element is inf or NaN: sum(x * 0) is 0 for finite x, else NaN."""
        total = self.accumulator(0.0, f"{name}.probe")
        with for_range(self.b, count, f"{name}.k") as k:
            zeroed = self.b.fmul(self.load(source, k), self.const(0.0))
            self.b.store(self.b.fadd(self.b.load(total, typ=self.t), zeroed, flags=REASSOC),
                         total)
        value = self.b.load(total, typ=self.t)
        return self.b.fcmp_unordered("!=", value, value)


# --------------------------------------------------------------- shared kernels


def runtime_name(name: str, t: ir.Type, lanes: int) -> str:
    """The symbol of a runtime library kernel: one per dtype and vector width."""
    dtype = "f64" if isinstance(t, ir.DoubleType) else "f32"
    return f"bpc_runtime.{name}.{dtype}x{lanes}"


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


class KernelLibrary:
    """One internal function per distinct kernel, shared by every entry point of a module.

    Networks repeat themselves (the same update for every param, the same activation in
    every layer): compiling each distinct loop nest once keeps compile time proportional to
    the variety of a network, not its size. Entry functions are then short lists of calls.

    Loops over the innermost axis are written vectorized: a body on `lanes`-wide vectors,
    then the same body on scalars for the remainder. Writing the vectors ourselves, instead
    of leaving it to LLVM's loop vectorizer, cut compile time by more than half (measured
    on digits.bp) for the same machine code in the hot loops.
    """

    def __init__(self, module: ir.Module, lib: MathLibrary, lanes: int,
                 runtime: bool = False):
        self.module = module
        self.lib = lib
        self.t = lib.t
        self.lanes = lanes
        self.vt = ir.VectorType(self.t, lanes)
        self.itemsize = 8 if isinstance(self.t, ir.DoubleType) else 4
        self.cache: dict[tuple, ir.Function] = {}
        self.names: Counter[str] = Counter()
        # Kernels no network shapes (matmul, softmax, ...) live in the runtime library
        # (library.py), compiled once per machine: a network's module only declares them;
        # the library's module (runtime=True) defines them.
        self.runtime = runtime

    def _function(self, key: tuple, name: str, args: list[tuple[str, ir.Type]],
                  returns: ir.Type, body: Callable[[ir.IRBuilder, dict], ir.Value | None],
                  shared: bool = False) -> ir.Function:
        function = self.cache.get(key)
        if function is not None:
            return function
        fnty = ir.FunctionType(returns, [t for _, t in args])
        if shared:
            function = ir.Function(self.module, fnty, runtime_name(name, self.t, self.lanes))
            self.cache[key] = function
            if not self.runtime:
                return function  # a declaration: the library defines it
        else:
            self.names[name] += 1
            unique = name if self.names[name] == 1 else f"{name}.{self.names[name]}"
            function = ir.Function(self.module, fnty, f"bpc.{unique}")
            function.linkage = "internal"
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

    def splat(self, b: ir.IRBuilder, x: ir.Value) -> ir.Value:
        single = b.insert_element(ir.Constant(self.vt, ir.Undefined), x, i64(0))
        zeros = ir.Constant(ir.VectorType(I32, self.lanes), [0] * self.lanes)
        return b.shuffle_vector(single, ir.Constant(self.vt, ir.Undefined), zeros)

    def load(self, b: ir.IRBuilder, base: ir.Value, offset: ir.Value, vector: bool):
        pointer = b.gep(base, [offset], source_etype=self.t)
        name = f"{base.name}.v" if vector else f"{base.name}.s"
        if vector:
            return b.load(pointer, typ=self.vt, align=self.itemsize, name=name)
        return b.load(pointer, typ=self.t, name=name)

    def store(self, b: ir.IRBuilder, value: ir.Value, base: ir.Value, offset: ir.Value) -> None:
        b.store(value, b.gep(base, [offset], source_etype=self.t), align=self.itemsize)

    def operands(self, b: ir.IRBuilder, arg: dict, patterns: tuple[Pattern, ...],
                 sizes: tuple[str, ...], dims: list[ir.Value], index: list[ir.Value],
                 vector: bool) -> dict:
        """Each operand's value at `index` (a vector of consecutive innermost elements when
        `vector`); operands broadcast along the innermost axis are loaded once and splat."""
        values = {}
        for j, pattern in enumerate(patterns):
            offset = broadcast_offset(b, pattern, dims, index)
            varies = bool(pattern) and not pattern[-1]
            value = self.load(b, arg[f"a{j}"], offset, vector and varies)
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

            def element(index: list[ir.Value], vector: bool) -> None:
                values = self.operands(b, arg, patterns, sizes, dims, index, vector)
                result = self.evaluate(b, expr, values, vector)
                self.store(b, result, out, broadcast_offset(b, (False,) * rank, dims, index))

            if rank == 0:
                element([], False)
                return
            self.nested(b, dims[:-1], lambda index: self.vector_loop(
                b, dims[-1], lambda j, vector: element([*index, j], vector)))

        return self._function(key, name, args, ir.VoidType(), body)

    # -------------------------------------------------------------- reductions

    def reduction(self, op: str, expr: sympy.Expr, patterns: tuple[Pattern, ...], rank: int,
                  axes: tuple[int, ...], sizes: tuple[str, ...], name: str) -> ir.Function:
        """out = sum or max over `axes` of expr(a0, ...) on a rank-`rank` tensor; out is dense
        over the kept axes. The expression is usually just a0; when an elementwise node is
        read only by this reduction, its expression is computed right here instead."""
        key = ("reduce", op, expr, patterns, rank, axes, sizes)
        args = [("out", PTR)] + [(f"a{k}", PTR) for k in range(len(patterns))]
        args += [(f"n{a}", I64) for a in range(rank)] + [(s, self.t) for s in sizes]
        start = 0.0 if op == "sum" else -math.inf

        def body(b: ir.IRBuilder, arg: dict) -> None:
            k = Kernels(b, self.lib)
            dims = [arg[f"n{a}"] for a in range(rank)]
            out = arg["out"]

            def combine(x: ir.Value, y: ir.Value) -> ir.Value:
                if op == "sum":
                    return b.fadd(x, y, flags=REASSOC)
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
                    acc_v = b.alloca(self.vt, name="acc.v")
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

        return self._function(key, name, args, ir.VoidType(), body)

    def horizontal(self, b: ir.IRBuilder, op: str, vector: ir.Value) -> ir.Value:
        """The sum or max of a vector's lanes."""
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
            scalar = lambda: getattr(Kernels(b, self.lib), kind)(  # noqa: E731
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

        return self._function((kind,), kind, args, ir.VoidType(), body, shared=True)

    def softmax_cross_entropy(self) -> ir.Function:
        args = [("out", PTR), ("logits", PTR), ("t", PTR), ("rows", I64), ("classes", I64)]

        def body(b: ir.IRBuilder, arg: dict) -> None:
            RowKernels(b, self.lib, self.lanes).cross_entropy(
                arg["out"], arg["logits"], arg["t"], arg["rows"], arg["classes"])

        return self._function(("xent",), "softmax_cross_entropy", args, ir.VoidType(), body,
                              shared=True)

    def transpose(self) -> ir.Function:
        args = [("out", PTR), ("x", PTR), ("rows", I64), ("cols", I64)]

        def body(b: ir.IRBuilder, arg: dict) -> None:
            Kernels(b, self.lib).transpose(arg["out"], arg["x"], arg["rows"], arg["cols"], "t")

        return self._function(("transpose",), "transpose", args, ir.VoidType(), body,
                              shared=True)

    def non_finite(self) -> ir.Function:
        """1 if any of the n values is inf or NaN, else 0: sum(x * 0) is 0 exactly when
        every x is finite, and one vector pass computes it."""
        args = [("x", PTR), ("n", I64)]

        def body(b: ir.IRBuilder, arg: dict) -> ir.Value:
            k = Kernels(b, self.lib)
            acc_v = b.alloca(self.vt, name="probe.v")
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

        return self._function(("non_finite",), "non_finite", args, I32, body, shared=True)
