"""`bpcompile explain`: a small network's gradients unrolled into scalars, as a student
derives them by hand.

Every param entry and every sample's input and target becomes a SymPy symbol (`W1_11`,
`x_1`, `t`); the forward graph is interpreted on NumPy object arrays of SymPy expressions
(one rule per op, in `RULES`), giving the loss as one scalar expression; `sympy.diff` gives
each weight's gradient. Reading it needs the names a student uses: each value the `.bp` file
names (`h`, `y`) gets a symbol per entry (`h_1`, `y`), substituted back into the gradient,
so dL/dW1_11 reads `(y - t) * y * (1 - y) * W2_11 * h_1 * (1 - h_1) * x_1`.

This unrolls on purpose: it grows with the number of weights, so it refuses big networks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from itertools import product

import numpy as np
import sympy

from ..graph.expressions import ATOM, Code, ExpressionPrinter
from ..differentiate.symbolic import SIGN_PRESERVING
from ..errors import BPNameError, BPShapeError, BPTypeError
from ..graph.ir import LEAVES, Graph, Node, Op, operand
from ..graph.shapes import dim_symbol
from ..runtime.net import CompiledNet
from .notebook import latex, name_latex

MAX_WEIGHTS = 64   # scalar weights: each is one sympy.diff of the whole unrolled loss
MAX_BATCH = 8      # samples: the loss grows with each

Tensor = np.ndarray  # an object array of SymPy expressions


# ---------------------------------------------------------------- the interpreter

def _map(function: Callable[..., sympy.Expr], *arrays: Tensor) -> Tensor:
    """`function` on each entry (broadcasting), as an object array even when 0-d."""
    result = np.frompyfunc(function, len(arrays), 1)(*arrays)
    return np.asarray(result, dtype=object)


def _sum(a: Tensor, axes: tuple[int, ...] | None, keepdims: bool = False) -> Tensor:
    return np.asarray(np.sum(a, axis=axes, keepdims=keepdims), dtype=object)


def _exp(a: Tensor) -> Tensor:
    return _map(sympy.exp, a)


def _log_softmax(a: Tensor, axis: int) -> Tensor:
    return a - _map(sympy.log, _sum(_exp(a), (axis,), keepdims=True))


def _max(node: Node, a: Tensor) -> Tensor:
    """One axis at a time: an object ufunc reduces over only one axis at once."""
    maximum = np.frompyfunc(sympy.Max, 2, 1)
    for axis in sorted(node.axes, reverse=True):
        a = np.asarray(maximum.reduce(a, axis=axis, keepdims=node.keepdims), dtype=object)
    return a


def _softmax_xent(node: Node, logits: Tensor, t: Tensor) -> Tensor:
    """Mean over rows of -sum(t * log_softmax(logits))."""
    axis = node.axes[0]
    rows = logits.size // logits.shape[axis]
    return _sum(-t * _log_softmax(logits, axis), None) / rows


class Interpreter:
    """Evaluates forward nodes on object arrays; `sizes` binds the symbolic dims."""

    def __init__(self, sizes: dict[str, int]):
        self.sizes = {dim_symbol(d): sympy.Integer(n) for d, n in sizes.items()}

    def elementwise(self, node: Node, args: list[Tensor]) -> Tensor:
        expr = node.expr.xreplace(self.sizes)
        if not args:
            return np.full(tuple(self.shape(node)), expr, dtype=object)
        symbols = [operand(k) for k in range(len(args))]
        return _map(lambda *values: expr.xreplace(dict(zip(symbols, values))), *args)

    def shape(self, node: Node) -> list[int]:
        return [self.sizes[dim_symbol(d)] if isinstance(d, str) else d for d in node.shape]


RULES: dict[Op, Callable[[Interpreter, Node, list[Tensor]], Tensor]] = {
    Op.ELEMENTWISE: Interpreter.elementwise,
    Op.MATMUL: lambda _, node, a: np.asarray(np.matmul(a[0], a[1]), dtype=object),
    Op.TRANSPOSE: lambda _, node, a: a[0].T,
    Op.RESHAPE: lambda run, node, a: a[0].reshape([int(d) for d in run.shape(node)]),
    Op.SUM: lambda _, node, a: _sum(a[0], node.axes, node.keepdims),
    Op.MAX: lambda _, node, a: _max(node, a[0]),
    Op.SOFTMAX: lambda _, node, a: _exp(a[0]) / _sum(_exp(a[0]), node.axes[:1], True),
    Op.LOG_SOFTMAX: lambda _, node, a: _log_softmax(a[0], node.axes[0]),
    Op.LOGSUMEXP: lambda _, node, a: _map(sympy.log, _sum(_exp(a[0]), node.axes,
                                                          node.keepdims)),
    Op.SOFTMAX_XENT: lambda _, node, a: _softmax_xent(node, a[0], a[1]),
}


# ------------------------------------------------------------------------ names

def scalars(name: str, shape: tuple[int, ...], batch_axes: frozenset[int] = frozenset()
            ) -> tuple[Tensor, dict[sympy.Symbol, str]]:
    """One real symbol per entry, `W1_12` (1-based), plain `t` for a single entry; axes in
    `batch_axes` (a batch of one) leave no index. Also each symbol's LaTeX, `{W_{1}}_{12}`."""
    kept = [n for k, n in enumerate(shape) if k not in batch_axes]
    join = "_" if any(n > 9 for n in kept) else ""
    result = np.empty(shape, dtype=object)
    names: dict[sympy.Symbol, str] = {}
    for index in product(*(range(n) for n in shape)):
        digits = [str(i + 1) for k, i in enumerate(index) if k not in batch_axes]
        suffix = join.join(digits) if int(np.prod(kept)) > 1 else ""
        symbol = sympy.Symbol(f"{name}_{suffix}" if suffix else name, real=True)
        result[index] = symbol
        names[symbol] = (f"{{{name_latex(name)}}}_{{{','.join(digits)}}}" if suffix
                         else name_latex(name))
    return result, names


@dataclass(frozen=True)
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
        lines.append("  gradients (sympy.diff of L, simplified, written with the names above):")
        for name, grad in self.grads.items():
            lines += [f"    ∂L/∂{w.name} = {show(g)}" for w, g in zip(self.params[name].flat,
                                                                    grad.flat)]
        return "\n".join(lines) + "\n"

    def latex(self, environment: str = "align*") -> str:
        """LaTeX of the same, in `environment` (`aligned` inside $$ for notebooks)."""
        names = self.latex_names
        show = lambda e: latex(e, names)  # noqa: E731
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
    if param is not None and param not in graph.params:
        raise BPNameError(f"no param named '{param}' (params: {', '.join(graph.params)})")
    weights = sum(int(np.prod(shape)) for shape in net.params.values())
    if weights > MAX_WEIGHTS:
        raise BPShapeError(f"explain: network {net.name} has {weights} scalar weights; "
                           f"explain unrolls at most {MAX_WEIGHTS}")
    if not 1 <= batch <= MAX_BATCH:
        raise BPShapeError(f"explain: batch {batch} is not between 1 and {MAX_BATCH}")
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
    naming = Naming(graph, live, values, batch)
    latex_names.update(naming.latex_names)
    loss = values[graph.loss].item()
    chosen = [param] if param is not None else list(graph.params)
    grads = {name: _map(lambda w: naming.tidy(sympy.diff(loss, w)), values[graph.params[name]])
             for name in chosen}
    return Explanation(
        name=net.name, batch=batch,
        params={n: values[i] for n, i in graph.params.items()},
        data={n: values[i] for n, i in graph.inputs.items()},
        definitions=tuple(naming.definitions), loss=naming.tidy(loss), grads=grads,
        order=naming.order(graph, live, values), latex_names=latex_names,
    )


class Naming:
    """Symbols for the entries of each value the `.bp` file names (`h` -> `h_1, h_2, h_3`),
    and the substitution that writes an expression with them."""

    def __init__(self, graph: Graph, live: list[int], values: dict[int, Tensor], batch: int):
        self.symbols: dict[int, Tensor] = {}
        self.latex_names: dict[sympy.Symbol, str] = {}
        self.replace: dict[sympy.Basic, sympy.Basic] = {}
        self.definitions: list[tuple[sympy.Symbol, sympy.Expr]] = []
        taken = {s.name for i in live if graph.nodes[i].op in LEAVES for s in values[i].flat}
        for i in live:
            node = graph.nodes[i]
            if node.name is None or node.op in LEAVES or i == graph.loss \
                    or node.name in taken:
                continue
            shape = values[i].shape
            axes = frozenset(k for k, d in enumerate(node.shape) if isinstance(d, str))
            symbols, names = scalars(node.name, shape, axes if batch == 1 else frozenset())
            self.symbols[i] = symbols
            self.latex_names.update(names)
            for symbol, value in zip(symbols.flat, values[i].flat):
                if value.is_Atom or value in self.replace:
                    continue  # a number or a copy of an input: nothing to name
                self.definitions.append((symbol, value.func(*(self.tidy(a)
                                                              for a in value.args))))
                self.replace[value] = symbol
                if isinstance(value, SIGN_PRESERVING):  # relu'(u) tests u > 0: h > 0
                    self.replace[value.args[0] > 0] = symbol > 0

    def tidy(self, expr: sympy.Expr) -> sympy.Expr:
        """`expr` written with the names, then its common factors pulled out. A named sum
        merges into the sums around it (SymPy flattens them), so it is found by `subs`."""
        expr = expr.xreplace(self.replace)
        for value, symbol in reversed(self.replace.items()):
            if isinstance(value, sympy.Add):
                expr = expr.subs(value, symbol)
        return sympy.factor_terms(expr)

    def order(self, graph: Graph, live: list[int], values: dict[int, Tensor]
              ) -> tuple[sympy.Symbol, ...]:
        """Symbols by distance from the loss, so a product reads from the output back to
        the input: (y - t) * y * (1 - y) * W2_11 * h_1 * (1 - h_1) * x_1."""
        users = graph.users()
        depth = {graph.loss: 0}
        for i in reversed(live):
            steps = [depth[u] + (1 if u in self.symbols else 0) for u in users[i] if u in depth]
            depth.setdefault(i, min(steps, default=0))
        targets = {graph.inputs[n] for n in graph.inputs if n in _targets(graph, live)}
        kind = {Op.PARAM: 1, Op.INPUT: 3}

        def key(i: int) -> tuple[int, int, int]:
            node = graph.nodes[i]
            rank = 0 if i in targets else 2 if i in self.symbols else kind.get(node.op, 4)
            return depth[i], rank, i

        arrays = {**{i: values[i] for i in live if graph.nodes[i].op in LEAVES}, **self.symbols}
        return tuple(s for i in sorted(arrays, key=key) for s in arrays[i].flat)


def _targets(graph: Graph, live: list[int]) -> set[str]:
    """Data the outputs do not read: the targets."""
    forward = set(graph.live(graph.outputs.values()))
    return {n for n, i in graph.inputs.items() if i not in forward and i in live}
