"""Convolutions, each by the path that suits its shape: direct loop nests for layers with
small windows (direct.py), else im2col over the whole batch and one matrix product per
group; the input gradient always as a product and col2im. Pooling by the window kernels
(windows.py). A conv1d is the conv2d of a height-1 image, so one code path serves both.

The columns of a batch are a matrix [C*KH*KW, N*OH*OW]: one row per tap r = (c, kh, kw),
one column per output position of each image (windows.py writes it). With P = N*OH*OW and
R the taps of one group's channels, group k's rows are its R-row block, and

    forward          out[O/groups, P]   = W_k [O/groups, R] @ cols_k [R, P]
    weight gradient  dW_k [O/groups, R] = g_k [O/groups, P] @ cols_k^T

where out and g are [O, N, OH*OW]: the network's [N, O, OH, OW] with its first two axes
swapped, which is a copy of whole rows. One product over the whole batch is large enough
for BLAS (packing, cache blocking, both cores) where a product per image is not. The
forward's columns are kept in the workspace, and its weight gradient reads them again.
The input gradient goes image by image (`conv_input_grad`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from llvmlite import ir

from ...graph.ir import Node, Op
from . import direct, pooling, split, windows
from .blas import BLAS_THRESHOLD
from .entry import EntryWriter
from .loops import I64, PTR, for_range, i64
from .pooling import PoolingKernels
from .windows import Geometry, WindowKernels


def _as_2d(values: tuple[int, ...], fill: int) -> tuple[int, int]:
    return (fill, *values) if len(values) == 1 else tuple(values)  # type: ignore[return-value]


def geometry(w: EntryWriter, node: Node) -> Geometry[int]:
    """The sizes of `node`, a CONV-family or POOL-family node."""
    if node.op in (Op.POOL, Op.POOL_GRAD):
        x_shape = w.graph.nodes[node.inputs[0]].shape
        _, kernel, stride, padding = node.attrs
        dilation, groups, outputs = (1,) * len(kernel), 1, x_shape[1]
        out = w.graph.nodes[node.inputs[1]].shape if node.op is Op.POOL_GRAD else node.shape
    else:
        stride, padding, dilation, groups = node.attrs
        x_shape, k_shape, out = {
            Op.CONV: lambda a, b: (a, b, node.shape),
            Op.CONV_INPUT_GRAD: lambda g, k: (node.shape, k, g),
            Op.CONV_WEIGHT_GRAD: lambda x, g: (x, node.shape, g),
        }[node.op](*(w.graph.nodes[j].shape for j in node.inputs))
        kernel, outputs = k_shape[2:], k_shape[0]
    return Geometry(x_shape[1], *_as_2d(x_shape[2:], 1), outputs, *_as_2d(out[2:], 1),
                    *_as_2d(kernel, 1), *_as_2d(stride, 1), *_as_2d(padding, 0),
                    *_as_2d(dilation, 1), groups)


def _batch(w: EntryWriter, node: Node) -> ir.Value:
    return w.dims_of(node.shape[:1])[0]


def _at(w: EntryWriter, pointer: ir.Value, offset: ir.Value) -> ir.Value:
    return w.b.gep(pointer, [offset], source_etype=w.t)


# window kernel -> (who writes it, its pointer arguments)
WINDOWS = {name: (kind, pointers) for kind, table in ((WindowKernels, windows.KERNELS),
                                                     (PoolingKernels, pooling.KERNELS))
           for name, pointers in table.items()}


def _per_image(w: EntryWriter, g: Geometry[int], pointer: str) -> int:
    """Bytes of one image of a window or direct kernel's pointer argument (0: not per
    image, as a kernel's weights)."""
    elements = {
        "x": g.channels * g.height * g.width,
        "out": g.outputs * g.out_h * g.out_w,
        "xpad": g.channels * g.height * direct.padded_width(g, w.kernels.lanes),
    }
    elements.update(dx=elements["x"], g=elements["out"])
    if pointer == "where":  # the offset of each window's maximum, an i64
        return elements["out"] * 8
    return elements.get(pointer, 0) * w.itemsize


def _taps(g: Geometry[int]) -> int:
    return g.channels // g.groups * g.kernel_h * g.kernel_w


def _by_image(w: EntryWriter, function: ir.Function, names: list[str],
              pointers: list[ir.Value], batch: ir.Value, g: Geometry[int],
              per_image: int) -> None:
    """function(*pointers, batch), the images divided over the thread pool when there are
    enough (`per_image`: the kernel's inner steps per image)."""
    strides = tuple(_per_image(w, g, name) for name in names) + (0,)
    split.call(w, function, [*pointers, batch], split.Split(len(names), strides),
               split.units(w, batch, per_image))


def _by_range(w: EntryWriter, function: ir.Function, args: list[ir.Value], units: ir.Value,
              work: ir.Value) -> None:
    """function(*args, first, last) over units [0, units), which divide over the thread
    pool when `work` is worth it."""
    count = len(args) + 1
    split.call(w, function, [*args, i64(0), units], split.Split(count, first=count - 1), work)


def _window_kernel(w: EntryWriter, name: str, g: Geometry[int]) -> ir.Function:
    kind, names = WINDOWS[name]
    args = ([(pointer, PTR) for pointer in names] + [("batch", I64)]
            + [("first", I64), ("last", I64)] * (name in windows.RANGES))
    return w.kernels.define((name, g), name, args, ir.VoidType(),
                            kind(w.kernels, g).body(name))


def _window(w: EntryWriter, name: str, pointers: list[ir.Value], batch: ir.Value,
            g: Geometry[int]) -> None:
    names = WINDOWS[name][1]
    ranged = windows.RANGES.get(name)
    function = _window_kernel(w, name, g)
    if ranged:  # the columns hold every image in each row: the kernel takes a range
        work = split.units(w, batch, g.out_h * g.out_w * _taps(g) * g.groups)
        if ranged == "channels":
            _by_range(w, function, [*pointers, batch], i64(g.channels), work)
        else:
            _by_range(w, function, [*pointers, batch], batch, work)
        return
    _by_image(w, function, names, pointers, batch, g,
              g.outputs * g.out_h * g.out_w * g.kernel_h * g.kernel_w)


def _sizes(g: Geometry[int]) -> tuple[int, int, int]:
    """(R, Q, O/groups): taps of one group's channels, positions per image, and output
    channels per group."""
    return (g.channels // g.groups * g.kernel_h * g.kernel_w, g.out_h * g.out_w,
            g.outputs // g.groups)


def _columns(w: EntryWriter, g: Geometry[int], x: int, batch: ir.Value) -> ir.Value:
    """The columns of input node x for geometry g, written once per entry function."""
    key = ("columns", x, g)
    if key not in w.shared:
        rows, positions, _ = _sizes(g)
        shape = (g.groups * rows, w.graph.nodes[x].shape[0], positions)
        w.shared[key] = w.allocate(shape, f"{w.label(x)}.cols")
        _window(w, "im2col", [w.shared[key], w.storage[x]], batch, g)
    return w.shared[key]


def _swap_outer(w: EntryWriter, target: ir.Value, source: ir.Value, outer: ir.Value,
                middle: ir.Value, inner: int) -> None:
    """target[m, o, :] = source[o, m, :] for source [outer, middle, inner]: a copy of
    whole rows."""
    b = w.b
    with for_range(b, outer, "o") as o, for_range(b, middle, "m") as m:
        read = _at(w, source, b.mul(b.add(b.mul(o, middle), m), i64(inner)))
        write = _at(w, target, b.mul(b.add(b.mul(m, outer), o), i64(inner)))
        w.lib.copy_bytes(b, write, read, i64(inner * w.itemsize))


def _channels_first(w: EntryWriter, g: Geometry[int], adjoint: int) -> ir.Value:
    """Node `adjoint` [N, O, OH, OW] as [O, N, OH*OW], written once per entry function."""
    key = ("channels first", adjoint)
    if key not in w.shared:
        node = w.graph.nodes[adjoint]
        _, positions, _ = _sizes(g)
        w.shared[key] = w.allocate((g.outputs, node.shape[0], positions),
                                   f"{w.label(adjoint)}.by_channel")
        _swap_outer(w, w.shared[key], w.storage[adjoint], _batch(w, node), i64(g.outputs),
                    positions)
    return w.shared[key]


class Operand(NamedTuple):
    """A product's operand: where it is, and whether it is stored transposed."""

    at: ir.Value
    transposed: bool = False


def _product(w: EntryWriter, c: ir.Value, a: Operand, b: Operand, m: ir.Value, n: ir.Value,
             k: ir.Value, scratch: ir.Value | None = None) -> None:
    """C[m, n] = op(A) @ op(B), all dense: BLAS for large products (a transpose is a flag)
    and always when B is transposed, or without BLAS our packed GEMM for large ones (either
    operand read in place); else the loop nest, which reads a transposed A through its
    strides, and without BLAS a transposed B copied into `scratch` (so only a network
    compiled without BLAS has one)."""
    def loop_nest() -> None:
        right = b.at
        if b.transposed:
            assert scratch is not None
            w.call(w.kernels.transpose(), [scratch, b.at, n, k])
            right = scratch
        w.functions.setdefault(w.current, []).append(w.matmul.function())
        a_row, a_col = (i64(1), m) if a.transposed else (k, i64(1))
        w.matmul.call(w.b, c, a.at, right, m, n, k, a_row, a_col)

    def large() -> None:
        w.functions.setdefault(w.current, []).append(
            w.matmul.call_large(w.b, c, a.at, a.transposed, b.at, b.transposed, m, n, k))

    if w.matmul.blas is not None and b.transposed:
        large()
        return
    is_large = w.matmul.large(w.b, m, n, k, w.label(w.current), b.transposed)
    with w.b.if_else(is_large) as (big, small):
        with big:
            large()
        with small:
            loop_nest()


def _each_group(w: EntryWriter, g: Geometry[int], body: Callable[[ir.Value], None]) -> None:
    """body(group) for each group: a loop only when there are several."""
    if g.groups == 1:
        body(i64(0))
        return
    with for_range(w.b, i64(g.groups), "group") as group:
        body(group)


def _direct(w: EntryWriter, name: str, g: Geometry[int], pointers: list[ir.Value],
            batch: ir.Value) -> None:
    names = direct.KERNELS[name]
    ranged = name in direct.BY_OUTPUT
    args = ([(pointer, PTR) for pointer in names] + [("batch", I64)]
            + [("first", I64), ("last", I64)] * ranged)
    function = w.kernels.define((name, g), name, args, ir.VoidType(),
                                direct.DirectKernels(w.kernels, g).body(name))
    work = g.outputs * g.out_h * g.out_w * _taps(g)
    if not ranged:
        _by_image(w, function, names, pointers, batch, g,
                  work if name != "padded" else _per_image(w, g, "xpad") // w.itemsize)
        return
    # a sum over the images for each output channel: the channels divide
    _by_range(w, function, [*pointers, batch], i64(g.outputs), split.units(w, batch, work))


def _padded(w: EntryWriter, g: Geometry[int], x: int, batch: ir.Value) -> ir.Value:
    """Input node x in rows padded for the direct kernels, written once per entry."""
    key = ("padded", x, g)
    if key not in w.shared:
        node = w.graph.nodes[x]
        shape = (node.shape[0], g.channels, g.height, direct.padded_width(g, w.kernels.lanes))
        w.shared[key] = w.allocate(shape, f"{w.label(x)}.padded")
        _direct(w, "padded", g, [w.shared[key], w.storage[x]], batch)
    return w.shared[key]


def conv(w: EntryWriter, i: int, node: Node) -> None:
    g = geometry(w, node)
    batch = _batch(w, node)
    if direct.suits(g):
        _direct(w, "direct_conv", g, [w.storage[i], _padded(w, g, node.inputs[0], batch),
                                      w.storage[node.inputs[1]]], batch)
        return
    rows, positions, outputs = _sizes(g)
    cols = _columns(w, g, node.inputs[0], batch)
    total = w.b.mul(batch, i64(positions), name="positions")
    by_channel = w.allocate((g.outputs, node.shape[0], positions), f"{w.label(i)}.by_channel")
    kernel = w.storage[node.inputs[1]]

    def group(k: ir.Value) -> None:
        b = w.b
        _product(w, _at(w, by_channel, b.mul(b.mul(k, i64(outputs)), total)),
                 Operand(_at(w, kernel, b.mul(k, i64(outputs * rows)))),
                 Operand(_at(w, cols, b.mul(b.mul(k, i64(rows)), total))),
                 i64(outputs), total, i64(rows))

    _each_group(w, g, group)
    _swap_outer(w, w.storage[i], by_channel, i64(g.outputs), batch, positions)


def conv_weight_grad(w: EntryWriter, i: int, node: Node) -> None:
    """dW_k = g_k @ cols_k^T, over the whole batch at once."""
    x, adjoint = node.inputs
    g = geometry(w, node)
    batch = _batch(w, w.graph.nodes[x])
    if direct.suits(g):
        _direct(w, "direct_weight_grad", g, [w.storage[i], _padded(w, g, x, batch),
                                             w.storage[adjoint]], batch)
        return
    rows, positions, outputs = _sizes(g)
    cols = _columns(w, g, x, batch)
    by_channel = _channels_first(w, g, adjoint)
    total = w.b.mul(batch, i64(positions), name="positions")
    scratch = None if w.matmul.blas is not None else \
        w.allocate((w.graph.nodes[x].shape[0], positions, rows), f"{w.label(i)}.cols_t")

    def group(k: ir.Value) -> None:
        b = w.b
        _product(w, _at(w, w.storage[i], b.mul(k, i64(outputs * rows))),
                 Operand(_at(w, by_channel, b.mul(b.mul(k, i64(outputs)), total))),
                 Operand(_at(w, cols, b.mul(b.mul(k, i64(rows)), total)), transposed=True),
                 i64(outputs), i64(rows), total, scratch)

    _each_group(w, g, group)


def conv_input_grad(w: EntryWriter, i: int, node: Node) -> None:
    """dcols_k = W_k^T @ g_k for every group, then col2im adds each tap back where it read:
    image by image while one image's product is below BLAS's size (its columns still in
    cache for col2im), the images divided over the threads; else over the whole batch,
    one product per group (BLAS) from the gradient laid out channels first (as the weight
    gradient reads it), then col2im with the images divided."""
    adjoint, kernel = node.inputs
    g = geometry(w, node)
    rows, positions, outputs = _sizes(g)
    batch = _batch(w, node)
    dcols = w.allocate((node.shape[0], g.groups * rows, positions), f"{w.label(i)}.cols")
    if w.matmul.blas is None or rows * positions * outputs < BLAS_THRESHOLD:
        _by_range(w, _input_grad_images(w, g),
                  [w.storage[i], dcols, w.storage[kernel], w.storage[adjoint], batch], batch,
                  split.units(w, batch, 2 * g.outputs * positions * rows))
        return
    total = w.b.mul(batch, i64(positions), name="positions")
    by_channel = _channels_first(w, g, adjoint)

    def group(k: ir.Value) -> None:
        b = w.b
        _product(w, _at(w, dcols, b.mul(b.mul(k, i64(rows)), total)),
                 Operand(_at(w, w.storage[kernel], b.mul(k, i64(outputs * rows))),
                         transposed=True),
                 Operand(_at(w, by_channel, b.mul(b.mul(k, i64(outputs)), total))),
                 i64(rows), total, i64(outputs))

    _each_group(w, g, group)
    _window(w, "col2im", [w.storage[i], dcols], batch, g)


def _input_grad_images(w: EntryWriter, g: Geometry[int]) -> ir.Function:
    """`input_grad_images(dx, dcols, w, g, batch, first, last)`: for images first to last,
    each group's columns W_k^T @ g_k (the loop-nest matmul) into the image's block of
    dcols, then col2im into the image's dx."""
    rows, positions, outputs = _sizes(g)
    col2im = _window_kernel(w, "col2im", g)
    matmul = w.matmul.function()
    w.functions.setdefault(w.current, []).extend([matmul, col2im])

    def body(b: ir.IRBuilder, arg: dict) -> None:
        image = g.channels * g.height * g.width
        with for_range(b, arg["last"], "n", start=arg["first"]) as n:
            cols = b.gep(arg["dcols"], [b.mul(n, i64(g.groups * rows * positions))],
                         source_etype=w.t)
            for k in range(g.groups):
                first = b.add(b.mul(n, i64(g.outputs)), i64(k * outputs))
                # A = W_k^T, read through strides: A[r, o] = W_k[o, r]
                w.matmul.call(b, b.gep(cols, [i64(k * rows * positions)], source_etype=w.t),
                              b.gep(arg["w"], [i64(k * outputs * rows)], source_etype=w.t),
                              b.gep(arg["g"], [b.mul(first, i64(positions))],
                                    source_etype=w.t),
                              i64(rows), i64(positions), i64(outputs), i64(1), i64(rows))
            dx = b.gep(arg["dx"], [b.mul(n, i64(image))], source_etype=w.t)
            b.call(col2im, [dx, cols, i64(1), i64(0), i64(1)])

    args = [(name, PTR) for name in ("dx", "dcols", "w", "g")] + [
        (name, I64) for name in ("batch", "first", "last")]
    return w.kernels.define(("input_grad_images", g), "input_grad_images", args,
                            ir.VoidType(), body)


def _has_gradient(w: EntryWriter, node: Node) -> bool:
    """Whether this entry also writes the gradient of a pooling like `node` (the same
    input and options: the same windows and maxima)."""
    return any(w.graph.nodes[j].op is Op.POOL_GRAD and
               w.graph.nodes[j].inputs[0] == node.inputs[0] and
               w.graph.nodes[j].attrs == node.attrs for j in w.emitting)


def pool(w: EntryWriter, i: int, node: Node) -> None:
    x, g = node.inputs[0], geometry(w, node)
    if node.attrs[0] == "max" and _has_gradient(w, node):
        # the gradient will need each window's first maximum: found here, once
        where = w.shared[("first maximum", x, g)] = w.allocate(
            node.shape, f"{w.label(i)}.where", itemsize=8)
        _window(w, "max_pool_where", [w.storage[i], where, w.storage[x]], _batch(w, node), g)
        return
    kind = {"max": "max_pool", "avg": "avg_pool"}[node.attrs[0]]
    _window(w, kind, [w.storage[i], w.storage[x]], _batch(w, node), g)


def pool_grad(w: EntryWriter, i: int, node: Node) -> None:
    x, adjoint = node.inputs
    g = geometry(w, node)
    where = w.shared.get(("first maximum", x, g))
    if node.attrs[0] == "max" and where is not None:
        kind = "max_pool_spread" if g.tiles() else "max_pool_scatter"
        _window(w, kind, [w.storage[i], where, w.storage[adjoint]], _batch(w, node), g)
        return
    pointers = {"max": [w.storage[i], w.storage[x], w.storage[adjoint]],
                "avg": [w.storage[i], w.storage[adjoint]]}[node.attrs[0]]
    _window(w, f"{node.attrs[0]}_pool_grad", pointers, _batch(w, node), g)
