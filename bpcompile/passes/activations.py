"""Name the value before each activation: `h = f(x @ W + b)` becomes `h_pre = x @ W + b` and
`h = f(h_pre)`, with `h_pre` a name the compiler derived.

A later pass may need that value on its own: the stability rewrite turns
`binary_cross_entropy(sigmoid(z), t)` into softplus terms of z itself, so the loss reads
`y_pre` instead of `y`, and the loss's gradient is then the adjoint `d_y_pre`, as textbooks
write it. Where nothing else reads `h_pre`, fusion merges it back into `h` (derived names
do not hold it apart), and the code reads `h = f(x @ W + b)` as before.
"""

from __future__ import annotations

import sympy

from ..graph.functions import Clip, Elu, LeakyRelu, Relu, Sigmoid, Softplus
from ..graph.ir import Graph, GraphBuilder, Node, Op, copy_node, operand, rebuild
from ..graph.vocabulary import FUNCTIONS

# Functions `h = f(...)` is an activation of: f of one argument (and constant options).
ACTIVATIONS = (Sigmoid, Softplus, Relu, LeakyRelu, Elu, sympy.exp, sympy.log, sympy.tanh,
               sympy.sin, sympy.cos, sympy.Abs,
               *(f.kind for f in FUNCTIONS if f.kind.nargs == {1} or f.kind is Clip))


def _argument(expr: sympy.Expr) -> sympy.Expr | None:
    """The one argument an activation `f(arg, constants...)` applies f to."""
    if not isinstance(expr, ACTIVATIONS):
        return None
    varying = [a for a in expr.args if a.free_symbols]
    if len(varying) != 1 or varying[0] is not expr.args[0]:
        return None
    return varying[0]


def name_pre_activations(graph: Graph) -> Graph:
    def visit(builder: GraphBuilder, node: Node, inputs: tuple[int, ...]) -> int:
        argument = None
        if node.op is Op.ELEMENTWISE and node.name is not None and not node.derived:
            argument = _argument(node.expr)
        if argument is None:
            return copy_node(builder, node, inputs)
        name = f"{node.name}_pre"
        if argument.is_Symbol:  # f(x @ W): the operand itself is the value before f
            builder.note(inputs[int(argument.name[1:])], name, (), derived=True)
            return copy_node(builder, node, inputs)
        pre = builder.elementwise(argument, inputs, node.shape, name=name,
                                  lines=node.lines, derived=True)
        expr = node.expr.xreplace({argument: operand(len(inputs))})
        return builder.elementwise(expr, inputs + (pre,), node.shape, lines=node.lines,
                                   like=node)

    return rebuild(graph, visit)
