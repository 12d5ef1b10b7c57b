"""Convolutions and pooling, as torch.nn.functional defines them: `conv2d`/`conv1d` over
[N, C, H, W] / [N, C, L] with stride, padding, dilation and groups; `max_pool2d`,
`avg_pool2d` and their 1-D forms; and the layer sugar `c1 = conv(x, channels, kernel, ...)`.
Channels and spatial sizes must be fixed numbers (the batch may be a size like N)."""

from __future__ import annotations

from ..errors import BPShapeError, BPTypeError
from ..graph.ir import Op
from ..graph.shapes import Shape, format_shape
from . import syntax as S
from .arguments import bind, int_list_option, number_option, tensor_argument
from .context import Lowering
from .values import Tensor, Value


def spatial_input(lw: Lowering, x: Tensor, spatial: int, call: S.Call, what: str) -> None:
    """x must be [N, C, *spatial] with fixed channels and spatial sizes."""
    layout = "[N, C, L]" if spatial == 1 else "[N, C, H, W]"
    if len(x.shape) != spatial + 2:
        raise lw.error(BPShapeError, f"{call.func}() takes {what} laid out {layout}, but "
                       f"{S.expr_text(call.args[0])} is {format_shape(x.shape)}", call.pos)
    if not all(isinstance(d, int) for d in x.shape[1:]):
        raise lw.error(BPShapeError, f"{call.func}() needs fixed channels and sizes, but "
                       f"{S.expr_text(call.args[0])} is {format_shape(x.shape)}", call.pos)


def spatial_options(lw: Lowering, bound: dict, spatial: int, call: S.Call,
             names: tuple[str, ...]) -> list[tuple[int, ...]]:
    """Each of `names` (stride, padding, ...) as one integer per spatial axis."""
    result = []
    for name in names:
        values = int_list_option(lw, bound[name], f"{call.func}()'s {name}", spatial)
        least = 0 if name == "padding" else 1
        if not all(isinstance(v, int) and v >= least for v in values):
            raise lw.error(BPTypeError, f"{call.func}()'s {name} must be "
                           f"{'a whole number' if least == 0 else 'a positive integer'}"
                           f" (or a list of {spatial})", getattr(bound[name], "pos", call.pos))
        result.append(tuple(values))
    return result


def output_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def _convolve(lw: Lowering, call: S.Call, spatial: int) -> Value:
    bound = bind(lw, call, ("x", "W", "stride", "padding", "dilation", "groups"),
                 {"stride": 1, "padding": 0, "dilation": 1, "groups": 1})
    x, w = tensor_argument(lw, bound["x"]), tensor_argument(lw, bound["W"])
    spatial_input(lw, x, spatial, call, "an input")
    stride, padding, dilation = spatial_options(lw, bound, spatial, call,
                                         ("stride", "padding", "dilation"))
    groups = number_option(lw, bound["groups"], f"{call.func}()'s groups")
    if not (groups.is_Integer and groups > 0):
        raise lw.error(BPTypeError, f"{call.func}()'s groups must be a positive integer",
                       getattr(bound["groups"], "pos", call.pos))
    names = (S.expr_text(bound["x"]), S.expr_text(bound["W"]))
    return convolution(lw, x, w, stride, padding, dilation, int(groups), call, names)


def convolution(lw: Lowering, x: Tensor, w: Tensor, stride, padding, dilation, groups: int,
                call: S.Call, names: tuple[str, str]) -> Tensor:
    """The CONV node of x and w (called `names` in messages), every size checked."""
    spatial = len(x.shape) - 2
    channels = x.shape[1]
    described = (f"{names[0]} is {format_shape(x.shape)} and {names[1]} is "
                 f"{format_shape(w.shape)}")
    if len(w.shape) != spatial + 2 or not all(isinstance(d, int) for d in w.shape):
        raise lw.error(BPShapeError, f"{call.func}() needs W laid out [O, C/groups, "
                       f"{'K' if spatial == 1 else 'KH, KW'}], but {described}", call.pos)
    if channels % groups or w.shape[0] % groups or w.shape[1] != channels // groups:
        raise lw.error(BPShapeError, f"{call.func}() with groups={groups} needs C and O "
                       f"divisible by {groups} and W's axis 1 equal to C/groups, but "
                       f"{described}", call.pos)
    sizes = tuple(output_size(n, k, s, p, d) for n, k, s, p, d in
                  zip(x.shape[2:], w.shape[2:], stride, padding, dilation))
    if min(sizes) < 1:
        raise lw.error(BPShapeError, f"{call.func}()'s kernel does not fit: {described}, "
                       f"with padding {list(padding)} and dilation {list(dilation)}",
                       call.pos)
    shape: Shape = (x.shape[0], w.shape[0], *sizes)
    attrs = (stride, padding, dilation, groups)
    return lw.node(Op.CONV, (x.node, w.node), shape, attrs=attrs)


def _pool(lw: Lowering, call: S.Call, spatial: int, kind: str) -> Value:
    bound = bind(lw, call, ("x", "kernel", "stride", "padding"),
                 {"stride": None, "padding": 0})
    x = tensor_argument(lw, bound["x"])
    spatial_input(lw, x, spatial, call, "an input")
    if bound["stride"] is None:
        bound["stride"] = bound["kernel"]  # PyTorch's default: windows side by side
    kernel, stride, padding = spatial_options(lw, bound, spatial, call,
                                       ("kernel", "stride", "padding"))
    if any(2 * p > k for p, k in zip(padding, kernel)):
        raise lw.error(BPShapeError, f"{call.func}()'s padding may be at most half the "
                       f"kernel (as PyTorch's), not {list(padding)} for {list(kernel)}",
                       call.pos)
    sizes = tuple(output_size(n, k, s, p, 1)
                  for n, k, s, p in zip(x.shape[2:], kernel, stride, padding))
    if min(sizes) < 1:
        raise lw.error(BPShapeError, f"{call.func}()'s kernel {list(kernel)} does not fit "
                       f"{format_shape(x.shape)}", call.pos)
    return lw.node(Op.POOL, (x.node,), (*x.shape[:2], *sizes),
                   attrs=(kind, kernel, stride, padding))


CONVOLUTION_CALLS = {
    "conv2d": lambda lw, call: _convolve(lw, call, 2),
    "conv1d": lambda lw, call: _convolve(lw, call, 1),
    "max_pool2d": lambda lw, call: _pool(lw, call, 2, "max"),
    "max_pool1d": lambda lw, call: _pool(lw, call, 1, "max"),
    "avg_pool2d": lambda lw, call: _pool(lw, call, 2, "avg"),
    "avg_pool1d": lambda lw, call: _pool(lw, call, 1, "avg"),
}
