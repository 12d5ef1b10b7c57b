"""`bpcompile show`: for each param, the gradient SymPy derived, as math and as the code that
computes it.

Five parts per param: the local derivatives SymPy found for the elementwise steps between
the param and the loss (in the cheapest form, reading forward values); the chain of adjoints
from the loss back to the param; the derivative SymPy found for each activation on the way;
the same chain as textbooks write it, with error terms (deltas) of layers; and the generated
lines computing that chain. `latex=True` prints the same as LaTeX. The activation derivatives
and the delta chain are read and spelled in `chain`; this module names values and assembles.
"""

from __future__ import annotations

import sympy

from ..backends.numpy.module import FunctionWriter, ModuleWriter
from ..backends.numpy.printer import ATOM, COMPARE, Code, NumpyPrinter
from ..differentiate.symbolic import OUT, partial
from ..errors import BPNameError
from ..graph.ir import Graph, Node, Op, operand
from ..graph.shapes import format_shape
from ..runtime.net import CompiledNet
from .chain import ChainReader, GradientStep, Latex, Plain, is_atom, numbering, textbook
from .notebook import latex_escape, texttt


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
        return Code(text, ATOM if is_atom(text) else COMPARE)

    def formula(self, expr: sympy.Expr, inputs: tuple[int, ...], out: str | None = None) -> str:
        """`expr` over `inputs` (and OUT, the value `out`) written for people."""
        names = {operand(k): self.code(j) for k, j in enumerate(inputs)}
        names.update(self.dims)
        if out is not None:
            names[OUT] = Code(out, ATOM if is_atom(out) else COMPARE)
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


def describe(net: CompiledNet, param: str | None = None, latex: bool = False) -> str:
    """The text `bpcompile show` prints (`latex`: the same as LaTeX)."""
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
    reader = ChainReader(graph, forward)
    steps = {n: reader.gradient(i) for n, i in graph.grads.items()}
    numbers = numbering([step for step in steps.values() if step is not None])
    spell = (Latex if latex else Plain)(graph, math, numbers)
    parts = []
    for name in names:
        part = Part(net, name, writer, math, forward, steps[name], spell)
        parts.append(part.latex() if latex else part.text())
    return "\n\n".join(parts) + "\n"


class Part:
    """Everything `show` says about one param, ready to print as text or LaTeX."""

    def __init__(self, net: CompiledNet, name: str, writer: FunctionWriter, math: MathNames,
                 forward: set[int], step: GradientStep | None, spell: Plain):
        graph = net.compiled.graph
        self.net, self.name, self.spell = net, name, spell
        grad = graph.grads[name]
        self.chain = [i for i in graph.live([grad]) if i not in forward and i in writer.line_of]
        self.local = _local_derivatives(graph, graph.params[name], forward, math)
        self.adjoints = [(writer.bound[i], math.expression(graph.nodes[i])) for i in self.chain]
        self.derivatives, self.deltas = textbook(step, name, spell) if step else ([], [])
        if net.backend == "numpy":
            self.code_title = f"generated code ({net.backend} backend, value_and_grad):"
            self.code = [writer.lines[writer.line_of[i]] for i in self.chain]
        else:
            from ..backends.llvm.executor import describe_gradient

            self.code_title = "generated LLVM IR (value_and_grad: kernel calls, then kernels):"
            self.code = describe_gradient(net.compiled, net.dtype, name)

    def header(self) -> str:
        info = self.net.network.params[self.name]
        return (f"param {self.name} {format_shape(info.shape)}  "
                f"({self.net.network.source.filename}:{info.line}, "
                f"starts as {info.init.describe()})")

    def text(self) -> str:
        lines = [self.header()]
        if self.local:
            lines.append("  local derivatives (SymPy, reading forward values where cheaper):")
            lines += [f"    ∂{_wrapped(v)}/∂{_wrapped(j)} = {d}" for v, j, d in self.local]
        lines.append(f"  chain rule, from the loss back to {self.name}:")
        width = max((len(left) for left, _ in self.adjoints), default=0)
        lines += [f"    {left:<{width}} = {right}" for left, right in self.adjoints]
        if self.derivatives:
            lines.append("  activation derivatives (SymPy, then read off the forward values):")
            lines += [f"    {left} = {right}" for left, right in self.derivatives]
        lines.append("  delta chain (textbook form, δk = ∂L/∂zk of layer k):")
        if self.deltas:
            lines += [f"    {left} = {right}" for left, right in self.deltas]
        else:
            lines.append("    (not a plain stack of layers: the chain rule above is the whole "
                         "story)")
        lines.append(f"  {self.code_title}")
        lines += [f"    {line}" for line in self.code]
        return "\n".join(lines)

    def latex(self) -> str:
        lines = [rf"\subsection*{{{latex_escape(self.header())}}}"]
        if self.local:
            lines.append(r"Local derivatives (SymPy, reading forward values where cheaper):")
            lines += _align([(rf"\frac{{\partial {texttt(v)}}}{{\partial {texttt(j)}}}",
                              texttt(d)) for v, j, d in self.local])
        lines.append(rf"Chain rule, from the loss back to {texttt(self.name)}:")
        lines += _align([(texttt(left), texttt(right)) for left, right in self.adjoints])
        if self.derivatives:
            lines.append(r"Activation derivatives (SymPy, then read off the forward values):")
            lines += _align(self.derivatives)
        lines.append(r"Delta chain (textbook form, $\delta_k = \partial L / \partial z_k$):")
        lines += _align(self.deltas) if self.deltas else [
            r"not a plain stack of layers: the chain rule above is the whole story."]
        lines.append(latex_escape(self.code_title[0].upper() + self.code_title[1:]))
        lines += [r"\begin{verbatim}", *self.code, r"\end{verbatim}"]
        return "\n".join(lines)


def _align(equations: list[tuple[str, str]]) -> list[str]:
    """An align* environment, one equation a row."""
    rows = [f"  {left} &= {right}" for left, right in equations]
    return [r"\begin{align*}", " \\\\\n".join(rows), r"\end{align*}"]


def _local_derivatives(graph: Graph, param: int, forward: set[int],
                       math: MathNames) -> list[tuple[str, str, str]]:
    """For each elementwise node between the param and the loss: (value, input, d value /
    d input)."""
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
            result.append((value, math.of(j), derivative))
    return result


def _wrapped(text: str) -> str:
    return text if text.isidentifier() else f"({text})"
