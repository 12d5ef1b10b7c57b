"""Layer sugar: `h1 = dense(x, units, act=relu)` declares the params `h1.W` and `h1.b` and
computes `act(x @ h1.W + h1.b)`. A layer is the whole right side of an assignment, since
the assigned name names its params."""

from __future__ import annotations

import math
from collections.abc import Callable

import sympy

from ..errors import BPShapeError, BPTypeError, Pos
from ..graph.ir import Op, operand
from ..graph.network import Init
from ..graph.shapes import format_shape
from . import syntax as S
from .arguments import bind, number_option, tensor_argument
from .builtins import ELEMENTWISE, REQUIRED
from .context import Lowering
from .convolution import convolution, output_size, spatial_input, spatial_options
from .modes import batchnorm
from .norms import layernorm
from .structure import take
from .values import Tensor, Value

RELU_FAMILY = frozenset({"relu", "leaky_relu", "elu", "gelu", "silu"})


def dense(lw: Lowering, call: S.Call, name: str) -> Value:
    """`name = dense(x, units, act=linear)`: declares name.W and name.b, computes act(x@W+b)."""
    bound = bind(lw, call, ("x", "units", "act"), {"act": None})
    x = tensor_argument(lw, bound["x"])
    units = number_option(lw, bound["units"], "dense()'s units")
    if not (units.is_Integer and units > 0):
        raise lw.error(BPTypeError, "dense()'s units must be a positive integer",
                       bound["units"].pos)
    if not x.shape or not isinstance(x.shape[-1], int):
        raise lw.error(
            BPShapeError,
            f"dense() needs a fixed number of input features, but "
            f"{S.expr_text(bound['x'])} is {format_shape(x.shape)}",
            call.pos,
        )
    act = bound["act"]
    act_name = "linear" if act is None else act.id if isinstance(act, S.Name) else None
    activation_of = activation(lw, act_name, act, call.pos)
    init = Init("he") if act_name in RELU_FAMILY else Init("xavier")
    w = lw.add_param(f"{name}.W", (x.shape[-1], int(units)), init, call.pos)
    b = lw.add_param(f"{name}.b", (int(units),), Init("zeros"), call.pos)
    shape = x.shape[:-1] + (int(units),)
    product = lw.node(Op.MATMUL, (x.node, w), shape)
    u, v = operand(0), operand(1)
    node = lw.builder.elementwise(activation_of(u + v), (product.node, b), shape,
                                  lines=(lw.line,))
    return Tensor(node, shape)


def embedding(lw: Lowering, call: S.Call, name: str) -> Value:
    """`name = embedding(ids, vocab, dim)`: declares name.W[vocab, dim] = normal(1) (as
    torch.nn.Embedding starts) and computes take(name.W, ids): one row per id."""
    bound = bind(lw, call, ("ids", "vocab", "dim"))
    sizes = []
    for option in ("vocab", "dim"):
        value = number_option(lw, bound[option], f"embedding()'s {option}")
        if not (value.is_Integer and value > 0):
            raise lw.error(BPTypeError, f"embedding()'s {option} must be a positive integer",
                           bound[option].pos)
        sizes.append(int(value))
    w = lw.add_param(f"{name}.W", tuple(sizes), Init("normal", (1.0,)), call.pos)
    return take(lw, Tensor(w, tuple(sizes)), bound["ids"], 0, call)


def activation(lw: Lowering, name: str | None, expr: object,
                pos: Pos) -> Callable[[sympy.Expr], sympy.Expr]:
    if name in ELEMENTWISE and ELEMENTWISE[name].arity == 1 \
            and REQUIRED not in ELEMENTWISE[name].options.values():
        builtin = ELEMENTWISE[name]
        defaults = [sympy.sympify(v) for v in builtin.options.values()]
        return lambda u: builtin.make(u, *defaults)
    if name in lw.defs and len(lw.defs[name][0]) == 1:
        (symbol,), body = lw.defs[name]
        return lambda u: body.xreplace({symbol: u})
    where = getattr(expr, "pos", pos)
    raise lw.error(
        BPTypeError,
        "act= must name an elementwise function of one argument (relu, tanh, a def, ...)",
        where,
    )


def conv_layer(lw: Lowering, call: S.Call, name: str) -> Value:
    """`name = conv(x, channels, kernel, stride=1, padding=0, act=linear)`: declares
    name.W[channels, C, kernel, kernel] and name.b[channels] and computes
    act(conv2d(x, name.W) + name.b) with the bias broadcast over H and W. name.W starts as
    PyTorch's fans say for a convolution (fan_in = C * kernel**2): He-normal for the relu
    family, Glorot-uniform otherwise."""
    bound = bind(lw, call, ("x", "channels", "kernel", "stride", "padding", "act"),
                 {"stride": 1, "padding": 0, "act": None})
    x = tensor_argument(lw, bound["x"])
    spatial_input(lw, x, 2, call, "an input")
    sizes = []
    for option in ("channels", "kernel"):
        value = number_option(lw, bound[option], f"conv()'s {option}")
        if not (value.is_Integer and value > 0):
            raise lw.error(BPTypeError, f"conv()'s {option} must be a positive integer",
                           bound[option].pos)
        sizes.append(int(value))
    channels, kernel = sizes
    stride, padding = spatial_options(lw, bound, 2, call, ("stride", "padding"))
    if any(output_size(n, kernel, s, p, 1) < 1
           for n, s, p in zip(x.shape[2:], stride, padding)):  # before sizing its init
        raise lw.error(BPShapeError, f"conv()'s kernel {kernel} does not fit "
                       f"{S.expr_text(bound['x'])}, which is {format_shape(x.shape)}, with "
                       f"padding {list(padding)}", call.pos)
    act = bound["act"]
    act_name = "linear" if act is None else act.id if isinstance(act, S.Name) else None
    apply = activation(lw, act_name, act, call.pos)
    fan_in, fan_out = x.shape[1] * kernel**2, channels * kernel**2
    # int / int: exact for any size (a float of a vast fan would overflow before add_param
    # refuses the param)
    glorot = math.sqrt(6 / (fan_in + fan_out))
    init = (Init("normal", (math.sqrt(2 / fan_in),)) if act_name in RELU_FAMILY else
            Init("uniform", (-glorot, glorot)))
    w_shape = (channels, x.shape[1], kernel, kernel)
    w = Tensor(lw.add_param(f"{name}.W", w_shape, init, call.pos), w_shape)
    b = lw.add_param(f"{name}.b", (channels,), Init("zeros"), call.pos)
    product = convolution(lw, x, w, stride, padding, (1, 1), 1, call,
                          (S.expr_text(bound["x"]), f"{name}.W"))
    bias = lw.node(Op.RESHAPE, (b,), (channels, 1, 1))
    node = lw.builder.elementwise(apply(operand(0) + operand(1)), (product.node, bias.node),
                                  product.shape, lines=(lw.line,))
    return Tensor(node, product.shape)




LAYERS: dict[str, Callable[[Lowering, S.Call, str], Value]] = {
    "dense": dense,
    "embedding": embedding,
    "conv": conv_layer,
    "layernorm": layernorm,
    "batchnorm": batchnorm,
}

_EXAMPLES = {"dense": "h1 = dense(x, 64, act=relu)", "embedding": "e = embedding(ids, 100, 16)",
             "conv": "c1 = conv(x, 6, 5, padding=2, act=relu)", "layernorm": "h = layernorm(x)",
             "batchnorm": "h = batchnorm(x)"}


def layer_elsewhere(lw: Lowering, call: S.Call) -> Value:
    raise lw.error(
        BPTypeError,
        f"{call.func}(...) must be the whole right side of an assignment, as in "
        f"{_EXAMPLES[call.func]}: the assigned name names its params",
        call.pos,
    )
