"""`bpcompile explain`: a small network's gradients unrolled into scalars, as a student
derives them by hand.

Every param entry and every sample's input and target becomes a SymPy symbol (`W1_11`,
`x_1`, `t`); each value the `.bp` file names (`h`, `y`) gets a symbol per entry (`h_1`, `y`)
and a definition; each weight's gradient comes from the chain rule over those names
(scalars.py), so dL/dW1_11 reads `(y - t) * y * (1 - y) * W2_11 * h_1 * (1 - h_1) * x_1`,
and the output layer of sigmoid with binary cross-entropy reads `(y - t) * h_1`.

This unrolls on purpose: it grows with the number of weights, so it refuses big networks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import sympy

from ..errors import BPNameError, BPShapeError, BPTypeError
from ..graph.expressions import ATOM, Code, ExpressionPrinter
from ..runtime.net import CompiledNet
from .notebook import latex
from .scalars import RULES, Interpreter, ScalarNames, Tensor, scalars

MAX_WEIGHTS = 64   # scalar weights: each is one gradient of the unrolled loss
MAX_BATCH = 8      # samples: the loss grows with each


@dataclass(frozen=True, repr=False)
class Explanation:
    """A network's loss and gradients over scalar symbols, written with named values.

    `params` and `data` hold each array's symbols in its shape; `definitions` the named
    forward values in order (`h_1 = sigmoid(W1_11 * x_1 + ...)`); `loss` and `grads` (each
    param's gradient, in its shape) are written over those names. `unrolled` substitutes
    the definitions back, leaving only params and data.
    """

    name: str
    batch: int
    params: dict[str, Tensor]
    data: dict[str, Tensor]
    definitions: tuple[tuple[sympy.Symbol, sympy.Expr], ...]
    loss: sympy.Expr
    grads: dict[str, Tensor]
    order: tuple[sympy.Symbol, ...]  # reading order: loss side first, inputs last
    latex_names: dict[sympy.Symbol, str]
    assumes_rows_sum_to_one: bool = False  # cross_entropy's targets, as one-hot rows do

    def unrolled(self, expr: sympy.Expr) -> sympy.Expr:
        for symbol, value in reversed(self.definitions):
            expr = expr.xreplace({symbol: value})
        return expr

    def text(self) -> str:
        names = {s: Code(s.name, ATOM) for s in self.order}
        show = lambda e: ExpressionPrinter(names, math=True).print(e).text  # noqa: E731
        data = ", ".join(s.name for a in self.data.values() for s in a.flat)
        lines = [f"explain {self.name}: {_samples(self.batch)}; data {data}",
                 "  forward, each named value as a student writes it:"]
        lines += [f"    {s.name} = {show(e)}" for s, e in self.definitions]
        lines.append(f"    L = {show(self.loss)}")
        lines.append("  gradients (the chain rule over the names above, each term simplified "
                     "by SymPy):")
        if self.assumes_rows_sum_to_one:
            lines.append("    (each row of cross_entropy's targets sums to 1, as one-hot rows "
                         "do)")
        for name, grad in self.grads.items():
            lines += [f"    ∂L/∂{w.name} = {show(g)}" for w, g in zip(self.params[name].flat,
                                                                    grad.flat)]
        return "\n".join(lines) + "\n"

    def latex(self, environment: str = "align*") -> str:
        """LaTeX of the same, in `environment` (`aligned` inside $$ for notebooks)."""
        names = self.latex_names
        show = lambda e: latex(e, names, order=self.order)  # noqa: E731
        rows = [f"{names[s]} &= {show(e)}" for s, e in self.definitions]
        rows.append(f"L &= {show(self.loss)}")
        for name, grad in self.grads.items():
            rows += [rf"\frac{{\partial L}}{{\partial {names[w]}}} &= {show(g)}"
                     for w, g in zip(self.params[name].flat, grad.flat)]
        body = " \\\\\n".join(f"  {row}" for row in rows)
        return f"\\begin{{{environment}}}\n{body}\n\\end{{{environment}}}\n"

    def _repr_latex_(self) -> str:
        """Jupyter shows the gradients as typeset math."""
        return f"$$\n{self.latex('aligned')}$$"

    def __str__(self) -> str:
        return self.text()

    def __repr__(self) -> str:
        """A plain REPL shows the gradients, as `print` does."""
        return self.text()


def _samples(batch: int) -> str:
    return "one sample" if batch == 1 else f"a batch of {batch} samples"


# ------------------------------------------------------------------------ explain

def explain(net: CompiledNet, batch: int = 1, param: str | None = None) -> Explanation:
    """`net`'s loss on `batch` samples and the gradient of every weight (or of `param`'s
    entries), unrolled into scalars and simplified; BPError for a network without a loss or
    too big to unroll."""
    graph = net.network.graph
    if graph.loss is None:
        raise BPNameError(f"explain: network {net.name} has no loss, so no gradients to "
                          f"explain")
    if param is not None and param not in graph.trained:
        raise BPNameError(f"no param named '{param}' (params: {', '.join(graph.trained)})")
    weights = sum(int(np.prod(shape)) for shape in net.params.values())
    if weights > MAX_WEIGHTS:
        raise BPShapeError(f"explain: network {net.name} has {weights} scalar weights; "
                           f"explain unrolls at most {MAX_WEIGHTS}")
    if not 1 <= batch <= MAX_BATCH:
        raise BPShapeError(f"explain: batch {batch} is not between 1 and {MAX_BATCH}")
    for counted, line in net.signature.batch_counts:
        if all(isinstance(d, str) for d in counted) and batch < 2:
            raise BPShapeError(f"explain: the batchnorm at {net.signature.filename}:{line} "
                               f"normalizes over the batch, which needs 2 samples or more: "
                               f"try --batch 2")
    latex_names: dict[sympy.Symbol, str] = {}
    values: dict[int, Tensor] = {}
    leaves = {**{n: (i, False) for n, i in graph.inputs.items()},
              **{n: (i, True) for n, i in graph.params.items()}}
    for name, (i, is_param) in leaves.items():
        shape = graph.nodes[i].shape
        axes = frozenset(k for k, d in enumerate(shape) if isinstance(d, str))
        concrete = tuple(batch if isinstance(d, str) else d for d in shape)
        values[i], names = scalars(name, concrete, axes if batch == 1 else frozenset())
        latex_names.update(names)
    run = Interpreter({d: batch for n in graph.nodes for d in n.shape if isinstance(d, str)})
    live = graph.live([graph.loss])
    for i in live:
        node = graph.nodes[i]
        if i in values:
            continue
        if node.op not in RULES:
            raise BPTypeError(f"explain: cannot unroll a {node.op.name.lower()} node")
        value = RULES[node.op](run, node, [values[j] for j in node.inputs])
        values[i] = np.asarray(value, dtype=object)  # NumPy gives 0-d results as scalars
    names = ScalarNames(graph, live, values, batch)
    latex_names.update(names.latex_names)
    loss = names.tidy(values[graph.loss].item())
    chosen = [param] if param is not None else list(graph.trained)
    grads = names.gradients(loss, {n: values[graph.params[n]] for n in chosen})
    return Explanation(
        name=net.name, batch=batch,
        params={n: values[i] for n, i in graph.params.items()},
        data={n: values[i] for n, i in graph.inputs.items()},
        definitions=tuple(names.definitions), loss=loss, grads=grads,
        order=names.order(graph, live, values), latex_names=latex_names,
        assumes_rows_sum_to_one=bool(names.row_sums),
    )
