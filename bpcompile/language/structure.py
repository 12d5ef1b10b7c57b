"""Ops that move elements without computing on them: indexing and slicing (`x[:, 0:9]`),
`reshape`, `flatten`, `transpose`, `concat` and `stack`, each checked against the shapes it
is given, with the error located at the call."""

from __future__ import annotations

import sympy

from ..errors import BPShapeError, BPTypeError
from ..graph.functions import count, is_size, size_name
from ..graph.ir import Op
from ..graph.shapes import Dim, Shape, format_shape, normalize_axis
from . import syntax as S
from .arguments import axis_option, bind, int_list_option, size_item, tensor_argument
from .context import Lowering
from .values import Tensor, Value

# ------------------------------------------------------------------------ indexing


def index(lw: Lowering, expr: S.Index) -> Value:
    """x[i, a:b:c, ...]: a SLICE node holding (start, step) for every axis of x; indexed
    axes are dropped. A size bound at call time (`N`) takes `:`, `::-1` or an index."""
    x = tensor_argument(lw, expr.base)
    subscripts = _expand_ellipsis(lw, expr, len(x.shape))
    attrs: list[tuple[int, int]] = []
    dropped: list[int] = []
    shape: list[Dim] = []
    for axis, (subscript, size) in enumerate(zip(subscripts, x.shape)):
        if isinstance(subscript, S.Slice):
            start, step, length = _slice(lw, subscript, size, expr)
            attrs.append((start, step))
            shape.append(length)
        else:
            attrs.append((_position(lw, subscript, size, expr), 1))
            dropped.append(axis)
    if tuple(shape) == x.shape and all(a == (0, 1) for a in attrs):
        return x  # x[:, :] is x
    return lw.node(Op.SLICE, (x.node,), tuple(shape), axes=tuple(dropped), attrs=tuple(attrs))


def _expand_ellipsis(lw: Lowering, expr: S.Index, rank: int) -> list[S.Subscript]:
    """The subscripts with `...` (or the missing trailing ones) as full slices."""
    subscripts = list(expr.subscripts)
    dots = [k for k, s in enumerate(subscripts) if isinstance(s, S.Ellipsis_)]
    if len(dots) > 1:
        raise lw.error(BPTypeError, "an index may hold '...' only once", subscripts[dots[1]].pos)
    written = len(subscripts) - len(dots)
    if written > rank:
        raise lw.error(BPShapeError, f"{S.expr_text(expr)} indexes {written} axes, but "
                       f"{S.expr_text(expr.base)} has {rank}", expr.pos)
    full = [S.Slice(None, None, None, expr.pos)] * (rank - written)
    if dots:
        return subscripts[:dots[0]] + full + subscripts[dots[0] + 1:]
    return subscripts + full


def _integer(lw: Lowering, expr: S.Expr | None, what: str) -> int | None:
    if expr is None:
        return None
    item = size_item(lw, expr, what)
    if not isinstance(item, int):
        raise lw.error(BPTypeError, f"{what} must be an integer, not the size {item}",
                       expr.pos)
    return item


def _position(lw: Lowering, subscript: S.Expr, size: Dim, expr: S.Index) -> int:
    """An integer index, checked against a known size; negative counts from the end (and
    stays negative along a size bound at call time, where each call checks that the size
    is large enough: pipeline.least_sizes)."""
    i = _integer(lw, subscript, "an index")
    assert i is not None
    if isinstance(size, int):
        if not -size <= i < size:
            raise lw.error(BPShapeError, f"index {i} is out of range for an axis of size "
                           f"{size} in {S.expr_text(expr)}", subscript.pos)
        return i % size
    return i


def _slice(lw: Lowering, subscript: S.Slice, size: Dim,
           expr: S.Index) -> tuple[int, int, Dim]:
    """(start, step, length) of a slice, as Python's `slice.indices` reads it."""
    start, stop, step = (_integer(lw, part, "a slice bound")
                         for part in (subscript.start, subscript.stop, subscript.step))
    if step == 0:
        raise lw.error(BPShapeError, "a slice step cannot be zero", subscript.step.pos)
    step = 1 if step is None else step
    if isinstance(size, str):
        if start is None and stop is None and step in (1, -1):
            return (0 if step == 1 else -1), step, size
        raise lw.error(BPShapeError, f"the axis of size {size} is bound at call time: it "
                       f"takes ':', '::-1' or an index, not a part of it", subscript.pos)
    first, end, step = slice(start, stop, step).indices(size)
    length = len(range(first, end, step))
    if length == 0:
        raise lw.error(BPShapeError, f"this slice of an axis of size {size} is empty in "
                       f"{S.expr_text(expr)}", subscript.pos)
    return first, step, length


# --------------------------------------------------------------------- reshaping


def reshape_call(lw: Lowering, call: S.Call) -> Value:
    bound = bind(lw, call, ("x", "shape"))
    x = tensor_argument(lw, bound["x"])
    if not isinstance(bound["shape"], S.List):
        raise lw.error(BPTypeError, "reshape() takes the new shape as a list, as "
                       "reshape(x, [N, -1])", bound["shape"].pos)
    dims = list(int_list_option(lw, bound["shape"], "the shape of reshape()"))
    return _reshaped(lw, x, dims, call)


def _reshaped(lw: Lowering, x: Tensor, dims: list[int | str], call: S.Call) -> Tensor:
    """x as `dims` (one -1 allowed), when the element counts agree."""
    unknown = [k for k, d in enumerate(dims) if d == -1]
    if len(unknown) > 1 or any(isinstance(d, int) and d < 1 and d != -1 for d in dims):
        raise lw.error(BPShapeError, f"{call.func}() takes sizes of 1 or more and at most "
                       f"one -1, not {format_shape(tuple(dims))}", call.pos)
    total = count(x.shape)
    if unknown:
        known = count(tuple(d for d in dims if d != -1))
        rest = sympy.simplify(total / known)
        size = _dim_of(rest)
        if size is None:
            raise lw.error(BPShapeError, f"{call.func}() cannot size the -1 in "
                           f"{format_shape(tuple(dims))} for {format_shape(x.shape)}: it "
                           f"would be {_spelled(rest)} elements, a product with a size bound at call "
                           f"time, which has no name; keep that size as an axis of its own",
                           call.pos)
        dims[unknown[0]] = size
    shape = tuple(dims)
    if sympy.simplify(count(shape) - total) != 0:
        raise lw.error(BPShapeError, f"{call.func}() cannot make {format_shape(x.shape)} "
                       f"into {format_shape(shape)}: the element counts differ", call.pos)
    if shape == x.shape:
        return x
    return lw.node(Op.RESHAPE, (x.node,), shape)


def _spelled(count: sympy.Expr) -> str:
    """A count as the `.bp` file writes sizes: 4*N."""
    return str(count.xreplace({s: sympy.Symbol(size_name(s)) for s in count.free_symbols
                               if is_size(s)}))


def _dim_of(value: sympy.Expr) -> Dim | None:
    """A SymPy size as a dim: a positive integer or one size symbol."""
    if value.is_Integer and value > 0:
        return int(value)
    if value.is_Symbol and is_size(value):
        return size_name(value)
    return None


def flatten_call(lw: Lowering, call: S.Call) -> Value:
    """The axes from `start` on merged into one, as torch.flatten(x, start_dim)."""
    bound = bind(lw, call, ("x", "start"), {"start": S.Number("1", call.pos)})
    x = tensor_argument(lw, bound["x"])
    start = axis_option(lw, bound["start"], max(len(x.shape), 1), "flatten()", call.pos)
    if len(x.shape) <= 1:
        return x
    merged = count(x.shape[start:])
    dim = _dim_of(sympy.simplify(merged))
    if dim is None:
        raise lw.error(BPShapeError, f"flatten() would merge {format_shape(x.shape[start:])}"
                       f", a product of sizes bound at call time that has no name", call.pos)
    return _reshaped(lw, x, [*x.shape[:start], dim], call)


def transpose_call(lw: Lowering, call: S.Call) -> Value:
    """numpy.transpose(x, perm); without perm the axes reversed."""
    bound = bind(lw, call, ("x", "axes"), {"axes": None})
    x = tensor_argument(lw, bound["x"])
    rank = len(x.shape)
    if bound["axes"] is None:
        perm = tuple(reversed(range(rank)))
    else:
        items = int_list_option(lw, bound["axes"], "the axes of transpose()", rank)
        try:
            perm = tuple(normalize_axis(int(a), rank) for a in items)
        except (IndexError, ValueError):
            perm = ()
        if sorted(perm) != list(range(rank)):
            raise lw.error(BPShapeError, f"transpose() needs a permutation of the {rank} axes "
                           f"of {format_shape(x.shape)}, not {list(items)}", call.pos)
    if perm == tuple(range(rank)):
        return x
    shape = tuple(x.shape[a] for a in perm)
    if rank == 2:
        return lw.node(Op.TRANSPOSE, (x.node,), shape)
    return lw.node(Op.PERMUTE, (x.node,), shape, axes=perm)


# ------------------------------------------------------------------------ gathering


def take_call(lw: Lowering, call: S.Call) -> Value:
    bound = bind(lw, call, ("table", "index", "axis"), {"axis": S.Number("0", call.pos)})
    table = tensor_argument(lw, bound["table"])
    return take(lw, table, bound["index"], bound["axis"], call)


def take(lw: Lowering, table: Tensor, written: S.Expr, axis_expr: object,
         call: S.Call) -> Tensor:
    """numpy.take(table, index, axis): the index must be data (an input or a target), so
    every call can check its values (whole numbers in range)."""
    index = tensor_argument(lw, written)
    if lw.builder.nodes[index.node].op is not Op.INPUT:
        raise lw.error(BPTypeError, f"{call.func}() takes its indices from an input array, "
                       f"and {S.expr_text(written)} is computed", written.pos)
    if not table.shape:
        raise lw.error(BPShapeError, f"{call.func}() takes rows of a tensor, not of a scalar",
                       call.pos)
    axis = axis_option(lw, axis_expr, len(table.shape), f"{call.func}()", call.pos)
    size = table.shape[axis]
    if not isinstance(size, int):
        raise lw.error(BPShapeError, f"{call.func}() gathers along an axis of fixed size, not "
                       f"{size}", call.pos)
    shape = table.shape[:axis] + index.shape + table.shape[axis + 1:]
    return lw.node(Op.TAKE, (table.node, index.node), shape, axes=(axis,), attrs=(size,))


# ------------------------------------------------------------------------ joining


def concat_call(lw: Lowering, call: S.Call) -> Value:
    tensors, axis = _joined(lw, call)
    return _concatenate(lw, tensors, axis, call)


def stack_call(lw: Lowering, call: S.Call) -> Value:
    """Each input gets a new axis of size 1 at `axis`; then they are joined along it."""
    tensors, axis = _joined(lw, call, new_axis=True)
    shapes = {t.shape for t in tensors}
    if len(shapes) > 1:
        raise lw.error(BPShapeError, "stack() needs tensors of one shape, not "
                       + ", ".join(format_shape(t.shape) for t in tensors), call.pos)
    raised = [Tensor(lw.node(Op.RESHAPE, (t.node,), t.shape[:axis] + (1,) + t.shape[axis:]
                             ).node, t.shape[:axis] + (1,) + t.shape[axis:]) for t in tensors]
    return _concatenate(lw, raised, axis, call)


def _joined(lw: Lowering, call: S.Call, new_axis: bool = False) -> tuple[list[Tensor], int]:
    keywords = [k for k in call.keywords if k.name != "axis"]
    if keywords:
        raise lw.error(BPTypeError, f"{call.func}() has no argument '{keywords[0].name}' (it "
                       "takes tensors, then axis=)", keywords[0].pos)
    if len(call.args) < 1:
        raise lw.error(BPTypeError, f"{call.func}() needs at least one tensor", call.pos)
    tensors = [tensor_argument(lw, a) for a in call.args]
    written = next((k.value for k in call.keywords if k.name == "axis"), None)
    rank = len(tensors[0].shape) + (1 if new_axis else 0)
    if rank == 0:
        raise lw.error(BPShapeError, f"{call.func}() joins tensors, not scalars", call.pos)
    axis = 0 if written is None else axis_option(lw, written, rank, f"{call.func}()",
                                                 call.pos)
    return tensors, axis


def _concatenate(lw: Lowering, tensors: list[Tensor], axis: int, call: S.Call) -> Tensor:
    first = tensors[0].shape
    for t in tensors[1:]:
        same_rank = len(t.shape) == len(first)
        if not same_rank or any(a != b for k, (a, b) in enumerate(zip(t.shape, first))
                                if k != axis):
            raise lw.error(BPShapeError, f"{call.func}() needs tensors that agree on every "
                           f"axis but {axis}, not "
                           + ", ".join(format_shape(t.shape) for t in tensors), call.pos)
    sizes = [t.shape[axis] for t in tensors]
    if not all(isinstance(s, int) for s in sizes):
        raise lw.error(BPShapeError, f"{call.func}() joins along axis {axis}, whose sizes "
                       f"{', '.join(map(str, sizes))} include one bound at call time; join "
                       "along an axis of fixed size", call.pos)
    if len(tensors) == 1:
        return tensors[0]
    shape: Shape = first[:axis] + (sum(sizes),) + first[axis + 1:]  # type: ignore[arg-type]
    return lw.node(Op.CONCAT, tuple(t.node for t in tensors), shape, axes=(axis,))
