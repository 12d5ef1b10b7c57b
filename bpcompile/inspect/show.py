"""`bpcompile show`: the gradient of the loss with respect to each param, as math SymPy
derived and as the code that computes it.

What the params share is printed once: the forward values the backward pass reads, the local
derivatives SymPy found (in the cheapest form that reads forward values), the chain of
adjoints from the loss back, the activation derivatives and the textbook delta chain, and
the generated lines computing the shared chain. Then each param's own: its gradient as math
and the generated code computing it. Every `NAME = EXPR` line is Python over NumPy-like
functions (`sum(d_h, axis=0)`, `sigmoid(z)`), in the names of the generated code (one naming
source, graph/naming.py), so a test evaluates what `show` prints. `latex=True` prints the
same as LaTeX. The delta chain is read and spelled in `chain`; this module assembles.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..backends.numpy.module import ModuleWriter
from ..backends.numpy.statements import FunctionWriter
from ..differentiate.symbolic import partial
from ..errors import BPNameError
from ..graph.expressions import ATOM, Code
from ..graph.ir import LEAVES, Graph, Op
from ..graph.naming import legend
from ..graph.shapes import format_shape
from ..graph.spelling import Speller
from ..runtime.net import CompiledNet
from .chain import ChainReader, Latex, Plain, numbering, textbook
from .normalization import TextbookGradient, textbook_gradients
from .notebook import latex_escape, texttt


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
    view = GradientView(net, names)
    return view.latex() if latex else view.text()


NORMALIZATION = ("textbook form of the input gradient of {} (SymPy, from the definition "
                 "above; the means are over the normalized axes):")


@dataclass(frozen=True)
class Equation:
    left: str
    right: str
    code: str = ""  # the generated line computing it, where there is one


class GradientView:
    """Everything `show` says about some params' gradients, ready to print."""

    def __init__(self, net: CompiledNet, params: list[str]):
        self.net, self.params = net, params
        graph: Graph = net.compiled.graph
        self.graph = graph
        module = ModuleWriter(net.compiled, net.dtype.name)
        writer = FunctionWriter(module)
        module.body(writer, list(net.network.data), [graph.loss, *graph.grads.values()])
        naming = self.naming = module.naming
        self.speller = Speller(graph, {i: naming[i].code for i in writer.bound},
                               module.symbol_names)
        self.writer = writer
        forward = set(graph.live([graph.loss, *graph.outputs.values()]))
        chains = {p: [i for i in graph.live([graph.grads[p]])
                      if i not in forward and i in writer.line_of] for p in params}
        needed = [i for i in sorted(set().union(*map(set, chains.values())))]
        count = {i: sum(i in set(c) for c in chains.values()) for i in needed}
        alone = len(params) == 1  # then only the gradient itself is the param's own
        self.own = {p: [i for i in chains[p] if count[i] == 1
                        and (not alone or i == graph.grads[p])] for p in params}
        owned = set().union(*map(set, self.own.values()))
        self.shared = [i for i in needed if i not in owned]
        read = set(graph.live([graph.loss, *(graph.grads[p] for p in params)]))
        self.forward = [i for i in sorted(forward & read) if i in writer.line_of]
        self.local = _local_derivatives(graph, [graph.params[p] for p in params], forward,
                                        self.speller)
        printed = set(self.shared).union(*map(set, self.own.values()))
        self.normalizations: list[TextbookGradient] = [
            t for t in textbook_gradients(graph, self.speller, forward) if t.gradient in printed]
        reader = ChainReader(graph, forward)
        self.steps = {p: reader.gradient(graph.grads[p]) for p in graph.grads}
        self.numbers = numbering([s for s in self.steps.values() if s is not None])

    # ------------------------------------------------------------------ the parts

    def equation(self, i: int) -> Equation:
        """Node i's line: its name, its math, and the generated code computing it."""
        return Equation(self.speller.names[i], self.speller.spell(i).text, self.code_line(i))

    def gradient(self, param: str) -> list[Equation]:
        """The lines of a param's own part of the chain, ending with its gradient `d_W`,
        also where the gradient is a value of another name (a forward value, as d/dv of
        sum(u * v) is u; or another param's zero gradient)."""
        grad = self.graph.grads[param]
        lines = [self.equation(i) for i in self.own[param] if i != grad]
        name = self.naming[self.graph.params[param]].code
        left = f"d_{name}"
        if grad in self.own[param] and self.speller.names.get(grad) != left:
            lines.append(self.equation(grad))  # the value it shares, by its own name
        if self.speller.names.get(grad) == left:
            return lines + [self.equation(grad)]
        # a value printed before is read by its name; another (a gradient a param printed
        # later shares) by its expression
        earlier = set(self.forward) | set(self.shared)
        for other in self.params[:self.params.index(param)]:
            earlier |= set(self.own[other])
        # a leaf (d loss / d w3 is the param w4 itself, in sum(w3 * w4)) is its name
        leaf = self.graph.nodes[grad].op in LEAVES
        right = self.speller.code(grad) if grad in earlier or leaf else \
            self.speller.spell(grad)
        return lines + [Equation(left, right.text)]

    def code_line(self, i: int) -> str:
        """Node i's statement in the generated code: a line, or a wrapped statement with its
        comment above it and its continuation lines indented."""
        lines = self.writer.lines
        start = self.writer.line_of[i]
        end = start + 1
        if lines[start].startswith("# "):  # the comment of a statement too long for it
            end += 1
        while end < len(lines) and lines[end].startswith(" "):
            end += 1
        return "\n".join(lines[start:end])

    def deltas(self, spell: Plain) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        """(activation derivatives, delta chain) of the shown params, each equation once;
        the chain ends with each param's gradient in textbook form."""
        derivatives: list[tuple[str, str]] = []
        chain: list[tuple[str, str]] = []
        gradients: list[tuple[str, str]] = []
        for param in self.params:
            step = self.steps[param]
            if step is None:
                continue
            found, lines = textbook(step, param, spell)
            derivatives += [d for d in found if d not in derivatives]
            chain += [c for c in lines[:-1] if c not in chain]
            gradients.append(lines[-1])
        return derivatives, chain + gradients

    def ir(self) -> tuple[list[str], dict[str, list[str]]]:
        from ..backends.llvm.describe import (
            describe_gradients,  # llvmlite only when asked
        )

        return describe_gradients(self.net.compiled, self.net.signature, self.net.dtype,
                                  self.params)

    def header(self, param: str) -> str:
        info = self.net.network.params[param]
        return (f"param {param} {format_shape(info.shape)}  "
                f"({self.net.network.source.filename}:{info.line}, "
                f"starts as {info.init.describe()})")

    def title(self) -> str:
        network = self.net.network
        return (f"network {network.name} ({network.source.filename}): gradients of the loss, "
                f"by SymPy and the chain rule")

    # ------------------------------------------------------------------ as text

    def text(self) -> str:
        spell = Plain(self.graph, self.speller, self.numbers)
        derivatives, deltas = self.deltas(spell)
        shown = [*self.speller.names.values(), *(f"d_{p}" for p in self.params)]
        note = legend(shown)
        lines = [self.title(), *([f"  {note}"] if note else [])]
        lines.append("  forward values (value_and_grad computes them first):")
        lines += _aligned([self.equation(i) for i in self.forward])
        if self.local:
            lines.append("  local derivatives (SymPy, reading forward values where cheaper):")
            lines += [f"    ∂{_wrapped(v)}/∂{_wrapped(j)} = {d}" for v, j, d in self.local]
        lines.append(f"  chain rule, from the loss back to {', '.join(self.params)}:")
        lines += _aligned([self.equation(i) for i in self.shared])
        if derivatives:
            lines.append("  activation derivatives (SymPy, then read off the forward values):")
            lines += [f"    {left} = {right}" for left, right in derivatives]
        lines.append("  delta chain (textbook form, δk = ∂L/∂zk of layer k):")
        if deltas:
            lines += [f"    {left} = {right}" for left, right in deltas]
        if len(deltas) < len(self.params):
            lines.append("    (not a plain stack of layers: the chain rule above is the whole "
                         "story" + (")" if not deltas else " for the other params)"))
        for norm in self.normalizations:
            lines.append(f"  {NORMALIZATION.format(norm.statement)}")
            lines += _aligned([Equation(left, right) for left, right in norm.lines])
        shared_code, own_code = self.code()
        lines.append(f"  {self.code_title()}")
        lines += [f"    {line}" for line in shared_code]
        for param in self.params:
            lines += ["", self.header(param), "  gradient:"]
            lines += _aligned(self.gradient(param))
            lines.append(f"  {self.code_title()}")
            lines += [f"    {line}" for line in own_code[param]]
        return "\n".join(lines) + "\n"

    def code_title(self) -> str:
        if self.net.backend == "numpy":
            return "generated code (numpy backend, value_and_grad):"
        return "generated LLVM IR (value_and_grad: kernel calls, then kernels):"

    def code(self) -> tuple[list[str], dict[str, list[str]]]:
        """The generated code of the shared chain, and of each param's own part."""
        if self.net.backend != "numpy":
            return self.ir()
        shared = [self.code_line(i) for i in self.shared]
        own = {p: [self.code_line(i) for i in self.own[p]] for p in self.params}
        return ([line for block in shared for line in block.split("\n")],
                {p: [line for block in lines for line in block.split("\n")]
                 for p, lines in own.items()})

    # ------------------------------------------------------------------ as LaTeX

    def latex(self) -> str:
        spell = Latex(self.graph, self.speller, self.numbers)
        derivatives, deltas = self.deltas(spell)
        lines = [rf"\section*{{{latex_escape(self.title())}}}"]
        lines.append("Forward values (value_and_grad computes them first):")
        lines += _align([(texttt(e.left), texttt(e.right))
                         for e in (self.equation(i) for i in self.forward)])
        if self.local:
            lines.append(r"Local derivatives (SymPy, reading forward values where cheaper):")
            lines += _align([(rf"\frac{{\partial {texttt(v)}}}{{\partial {texttt(j)}}}",
                              texttt(d)) for v, j, d in self.local])
        lines.append(rf"Chain rule, from the loss back to "
                     rf"{', '.join(texttt(p) for p in self.params)}:")
        lines += _align([(texttt(e.left), texttt(e.right))
                         for e in (self.equation(i) for i in self.shared)])
        if derivatives:
            lines.append(r"Activation derivatives (SymPy, then read off the forward values):")
            lines += _align(derivatives)
        lines.append(r"Delta chain (textbook form, $\delta_k = \partial L / \partial z_k$):")
        lines += _align(deltas) if deltas else [
            r"not a plain stack of layers: the chain rule above is the whole story."]
        for norm in self.normalizations:
            title = NORMALIZATION.format(norm.statement)
            lines.append(latex_escape(title[0].upper() + title[1:]))
            lines += _align([(texttt(left), texttt(right)) for left, right in norm.lines])
        shared_code, own_code = self.code()
        title = self.code_title()
        lines.append(latex_escape(title[0].upper() + title[1:]))
        lines += [r"\begin{verbatim}", *shared_code, r"\end{verbatim}"]
        for param in self.params:
            lines.append(rf"\subsection*{{{latex_escape(self.header(param))}}}")
            lines += _align([(texttt(e.left), texttt(e.right)) for e in self.gradient(param)])
            lines += [r"\begin{verbatim}", *own_code[param], r"\end{verbatim}"]
        return "\n".join(lines) + "\n"


def _aligned(equations: list[Equation]) -> list[str]:
    """`left = right`, the `=` signs in one column."""
    width = max((len(e.left) for e in equations), default=0)
    return [f"    {e.left:<{width}} = {e.right}" for e in equations]


def _align(equations: list[tuple[str, str]]) -> list[str]:
    """An align* environment, one equation a row."""
    if not equations:
        return []
    rows = [f"  {left} &= {right}" for left, right in equations]
    return [r"\begin{align*}", " \\\\\n".join(rows), r"\end{align*}"]


def _local_derivatives(graph: Graph, params: list[int], forward: set[int],
                       speller: Speller) -> list[tuple[str, str, str]]:
    """For each elementwise node between the params and the loss: (value, input, d value /
    d input), each once."""
    downstream = set(params)
    for i, node in enumerate(graph.nodes):
        if any(j in downstream for j in node.inputs):
            downstream.add(i)
    result: list[tuple[str, str, str]] = []
    for i in sorted(downstream & forward):
        node = graph.nodes[i]
        if node.op is not Op.ELEMENTWISE:
            continue
        value = speller.code(i)
        args = [speller.code(j) for j in node.inputs]
        for k, j in enumerate(node.inputs):
            if j not in downstream:
                continue
            out = value if value.precedence == ATOM else Code(f"({value.text})", ATOM)
            derivative = speller.expression(partial(node.expr, k), args, out=out).text
            entry = (value.text, args[k].text, derivative)
            if entry not in result:
                result.append(entry)
    return result


def _wrapped(text: str) -> str:
    return text if text.replace(".", "").replace("_", "").isalnum() else f"({text})"
