"""`bpcompile show`: for each param, the gradient SymPy derived, as math and as the code that
computes it.

Three parts per param: the local derivatives SymPy found for the elementwise steps between
the param and the loss (in the cheapest form, reading forward values); the chain of adjoints
from the loss back to the param; and the generated lines computing that chain.
"""

from __future__ import annotations

import re

import sympy

from .backends.numpy import FunctionWriter, ModuleWriter
from .backends.numpy_expr import ATOM, COMPARE, Code, NumpyPrinter
from .errors import BPNameError
from .ir import Graph, Node, Op, operand
from .runtime import CompiledNet
from .shapes import format_shape
from .symbolic import OUT, partial


def _forward_nodes(graph: Graph) -> set[int]:
    roots = list(graph.outputs.values()) + ([graph.loss] if graph.loss is not None else [])
    return set(graph.live(roots))


class MathNames:
    """Math spelling of values: the generated code's name, or the expression inline."""

    def __init__(self, graph: Graph, names: dict[int, str], dims: dict):
        self.graph = graph
        self.names = names
        self.dims = dims

    def of(self, i: int) -> str:
        if i in self.names:
            return self.names[i]
        return self.expression(self.graph.nodes[i])

    def code(self, i: int) -> Code:
        text = self.of(i)
        return Code(text, ATOM if _is_atom(text) else COMPARE)

    def formula(self, expr: sympy.Expr, inputs: tuple[int, ...], out: str | None = None) -> str:
        """`expr` over `inputs` (and OUT, the value `out`) written for people."""
        names = {operand(k): self.code(j) for k, j in enumerate(inputs)}
        names.update(self.dims)
        if out is not None:
            names[OUT] = Code(out, ATOM if _is_atom(out) else COMPARE)
        return NumpyPrinter(names, math=True).print(expr).text

    def expression(self, node: Node) -> str:
        args = [self.of(j) for j in node.inputs]
        if node.op is Op.ELEMENTWISE:
            return self.formula(node.expr, node.inputs)
        if node.op is Op.MATMUL:
            return f"{args[0]} @ {args[1]}"
        if node.op is Op.TRANSPOSE:
            return f"{args[0]}.T"
        if node.op is Op.RESHAPE:
            return args[0]
        axes = f", axis={node.axes[0] if len(node.axes) == 1 else node.axes}" if node.axes \
            else ""
        spelled = {Op.SUM: "sum", Op.MAX: "max", Op.SOFTMAX: "softmax",
                   Op.LOG_SOFTMAX: "log_softmax", Op.LOGSUMEXP: "logsumexp",
                   Op.ARGMAX_ONEHOT: "onehot_argmax", Op.SOFTMAX_XENT: "cross_entropy"}
        if node.op is Op.SOFTMAX_XENT:
            return f"cross_entropy({args[0]}, {args[1]})"
        return f"{spelled[node.op]}({args[0]}{axes})"


def describe(net: CompiledNet, param: str | None = None) -> str:
    """The text `bpcompile show` prints."""
    graph = net.compiled.graph
    if graph.loss is None:
        raise BPNameError(f"network {net.name} has no loss, so no gradients to show")
    names = [param] if param is not None else list(graph.grads)
    for name in names:
        if name not in graph.grads:
            known = ", ".join(graph.grads)
            raise BPNameError(f"no param named '{name}' (params: {known})")
    module = ModuleWriter(net.compiled, net.dtype.name)
    writer = FunctionWriter(module, {graph.loss: "loss"})
    module.body(writer, list(net.network.data), [graph.loss, *graph.grads.values()])
    math = MathNames(graph, writer.bound, module.dim_names)
    forward = _forward_nodes(graph)
    sections = [_describe_param(net, graph, name, writer, math, forward) for name in names]
    return "\n\n".join(sections) + "\n"


def _describe_param(net: CompiledNet, graph: Graph, name: str, writer: FunctionWriter,
                    math: MathNames, forward: set[int]) -> str:
    info = net.network.params[name]
    filename = net.network.source.filename
    grad = graph.grads[name]
    chain = [i for i in graph.live([grad]) if i not in forward and i in writer.line_of]
    lines = [f"param {name} {format_shape(info.shape)}  ({filename}:{info.line}, "
             f"starts as {info.init.describe()})"]

    local = _local_derivatives(graph, graph.params[name], forward, math)
    if local:
        lines.append("  local derivatives (SymPy, reading forward values where cheaper):")
        lines += [f"    {text}" for text in local]
    lines.append(f"  chain rule, from the loss back to {name}:")
    width = max((len(writer.bound[i]) for i in chain), default=0)
    for i in chain:
        lines.append(f"    {writer.bound[i]:<{width}} = {math.expression(graph.nodes[i])}")
    lines.append(f"  generated code ({net.backend} backend, value_and_grad):")
    if net.backend == "numpy":
        lines += [f"    {writer.lines[writer.line_of[i]]}" for i in chain]
    else:
        from .backends.llvm.runtime import describe_gradient

        lines[-1] = "  generated LLVM IR (value_and_grad: kernel calls, then kernels):"
        lines += [f"    {line}" for line in describe_gradient(net.compiled, net.dtype, name)]
    return "\n".join(lines)


def _local_derivatives(graph: Graph, param: int, forward: set[int],
                       math: MathNames) -> list[str]:
    """For each elementwise node between the param and the loss: d node / d input."""
    downstream = {param}
    for i, node in enumerate(graph.nodes):
        if any(j in downstream for j in node.inputs):
            downstream.add(i)
    result = []
    for i in sorted(downstream & forward):
        node = graph.nodes[i]
        if node.op is not Op.ELEMENTWISE:
            continue
        value = math.of(i)
        for k, j in enumerate(node.inputs):
            if j not in downstream:
                continue
            derivative = math.formula(partial(node.expr, k), node.inputs, value)
            result.append(f"∂{_wrapped(value)}/∂{_wrapped(math.of(j))} = {derivative}")
    return result


def _is_atom(text: str) -> bool:
    """A name, or one call like `softmax(z, axis=1)`: needs no parentheses."""
    return text.isidentifier() or re.fullmatch(r"[A-Za-z_][\w.]*\([^()]*\)", text) is not None


def _wrapped(text: str) -> str:
    return text if text.isidentifier() else f"({text})"
