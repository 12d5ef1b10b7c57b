"""A small network unrolled into scalars, for `explain`: the forward graph interpreted on
NumPy object arrays of SymPy expressions (one rule per op, in `RULES`), the values the
`.bp` file names given a symbol per entry (`h` -> `h_1, h_2`), and each weight's gradient
found by the chain rule over those named values, as a student derives it.

The chain rule runs backward over the named values: the adjoint of each one, then each
weight's gradient, every term written with the names (sigmoid(u) is `y` where `y =
sigmoid(u)`, so sigmoid's derivative reads `y * (1 - y)`) and simplified term by term. So
the output layer's `∂L/∂y * y * (1 - y)` of sigmoid with binary cross-entropy cancels to
`y - t`, and softmax with cross-entropy gives `softmax(z)_1 - t_1` (targets of
cross-entropy sum to 1 along a row).
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import product

import numpy as np
import sympy

from ..differentiate.symbolic import SIGN_PRESERVING
from ..errors import BPError
from ..graph.functions import dim_symbol
from ..graph.ir import LEAVES, Graph, Node, Op, operand
from ..graph.shapes import slice_subscripts
from .notebook import name_latex

Tensor = np.ndarray  # an object array of SymPy expressions
SIMPLIFY_LIMIT = 60  # operations: larger terms are only factored, never simplified


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
    Op.PERMUTE: lambda _, node, a: np.transpose(a[0], node.axes),
    Op.SLICE: lambda _, node, a: np.asarray(a[0][slice_subscripts(
        node.attrs, node.axes, a[0].shape, node.shape)], dtype=object),
    Op.UNSLICE: lambda run, node, a: _unslice(node, a[0], run.shape(node)),
    Op.CONCAT: lambda _, node, a: np.concatenate(a, axis=node.axes[0]),
    Op.PROD: lambda _, node, a: np.asarray(np.prod(a[0], axis=node.axes,
                                                   keepdims=node.keepdims), dtype=object),
    Op.ARGMAX: lambda _, node, a: _no_formula("argmax (an index with no gradient)"),
    Op.ONEHOT: lambda _, node, a: _no_formula("class indices made one-hot"),
    Op.TAKE: lambda _, node, a: _no_formula("a gather by indices given at call time"),
    Op.CONV: lambda run, node, a: _conv(node, a[0], a[1], run.shape(node)),
    Op.POOL: lambda run, node, a: _pool(node, a[0], run.shape(node)),
    Op.TAKE_GRAD: lambda _, node, a: _no_formula("a scatter by indices given at call time"),
}


def _windows(node: Node, x: Tensor, shape: list[int], kernel, stride, padding, dilation,
             fill: sympy.Expr):
    """For each output entry (n, o, *position): the padded input's channel-o-or-group view
    and the input positions its window reads, tap by tap."""
    d = len(kernel)
    padded = np.full((*x.shape[:2], *(m + 2 * p for m, p in zip(x.shape[2:], padding))),
                     fill, dtype=object)
    padded[(slice(None), slice(None)) + tuple(slice(p, p + m) for p, m in
                                              zip(padding, x.shape[2:]))] = x
    for index in np.ndindex(*shape):
        taps = [(tap, tuple(q * s + t * dl for q, s, t, dl in
                            zip(index[2:], stride, tap, dilation)))
                for tap in np.ndindex(*kernel)]
        yield index, padded, taps, d


def _conv(node: Node, x: Tensor, k: Tensor, shape: list[int]) -> Tensor:
    """torch's conv1d/conv2d on symbols: each output a sum of products, as written by hand."""
    stride, padding, dilation, groups = node.attrs
    out = np.empty(shape, dtype=object)
    per_group = x.shape[1] // groups
    for index, padded, taps, _ in _windows(node, x, shape, k.shape[2:], stride, padding,
                                           dilation, sympy.Integer(0)):
        n, o = index[:2]
        first = o // (k.shape[0] // groups) * per_group
        out[index] = sympy.Add(*(padded[(n, first + c, *at)] * k[(o, c, *tap)]
                                 for c in range(per_group) for tap, at in taps))
    return out


def _pool(node: Node, x: Tensor, shape: list[int]) -> Tensor:
    kind, kernel, stride, padding = node.attrs
    out = np.empty(shape, dtype=object)
    fill = sympy.S.NegativeInfinity if kind == "max" else sympy.Integer(0)
    for index, padded, taps, _ in _windows(node, x, shape, kernel, stride, padding,
                                           (1,) * len(kernel), fill):
        values = [padded[(*index[:2], *at)] for _, at in taps]
        out[index] = sympy.Max(*values) if kind == "max" else \
            sympy.Add(*values) / len(values)
    return out


def _unslice(node: Node, g: Tensor, shape: list[int]) -> Tensor:
    out = np.full(shape, sympy.Integer(0), dtype=object)
    out[slice_subscripts(node.attrs, node.axes, tuple(shape), g.shape)] = g
    return out


def _no_formula(what: str) -> Tensor:
    raise BPError(f"explain writes every value as a formula of named symbols, and {what} "
                  "has none; explain a network with one-hot targets instead")


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




class ScalarNames:
    """Symbols for the entries of each value the `.bp` file names (`h` -> `h_1, h_2, h_3`),
    the definitions that say what each is, the substitution that writes an expression with
    them, and the chain rule over them."""

    def __init__(self, graph: Graph, live: list[int], values: dict[int, Tensor], batch: int):
        self.symbols: dict[int, Tensor] = {}
        self.latex_names: dict[sympy.Symbol, str] = {}
        self.exact: dict[sympy.Basic, sympy.Basic] = {}  # whole expressions -> symbols
        self.parts: list[tuple[sympy.Expr, sympy.Symbol]] = []  # sums and ratios, by subs
        self.definitions: list[tuple[sympy.Symbol, sympy.Expr]] = []
        self.row_sums: list[sympy.Expr] = []  # target rows of cross_entropy: each sums to 1
        self.softmax: list[sympy.Symbol] = []  # softmax(z)_k of cross_entropy's logits
        taken = {s.name for i in live if graph.nodes[i].op in LEAVES for s in values[i].flat}
        for i in live:
            node = graph.nodes[i]
            if node.op is Op.SOFTMAX_XENT:
                self._cross_entropy(graph, node, values, batch)
            if node.name is None or node.op in LEAVES or i == graph.loss \
                    or node.name in taken:
                continue
            axes = frozenset(k for k, d in enumerate(node.shape) if isinstance(d, str))
            symbols, names = scalars(node.name, values[i].shape,
                                     axes if batch == 1 else frozenset())
            self.symbols[i] = symbols
            self.latex_names.update(names)
            for symbol, value in zip(symbols.flat, values[i].flat):
                if not value.is_Atom and value not in self.exact:  # not a number or a copy
                    self.define(symbol, value)

    def define(self, symbol: sympy.Symbol, value: sympy.Expr) -> None:
        """Name `value` `symbol`: it reads as the symbol wherever it appears from now on."""
        written = value.func(*(self.tidy(a) for a in value.args))
        self.definitions.append((symbol, written))
        self.exact[value] = self.exact[written] = symbol
        if isinstance(written, (sympy.Add, sympy.Mul)):
            self.parts.append((written, symbol))
        if isinstance(value, SIGN_PRESERVING):  # relu'(u) tests u > 0: h > 0
            self.exact[value.args[0] > 0] = self.exact[written.args[0] > 0] = symbol > 0

    def _cross_entropy(self, graph: Graph, node: Node, values: dict[int, Tensor],
                       batch: int) -> None:
        """Name softmax(z)_k where the logits z are named, and note that each target row
        sums to 1."""
        logits, targets = node.inputs
        for row in np.ndindex(values[targets].shape[:-1]):
            self.row_sums.append(sympy.Add(*values[targets][row]))
        if logits not in self.symbols:
            return
        z, name = self.symbols[logits], graph.nodes[logits].name
        for row in np.ndindex(z.shape[:-1]):
            total = sympy.Add(*(sympy.exp(v) for v in z[row]))
            for k, v in enumerate(z[row]):
                digits = [str(i + 1) for i in (*row, k)] if batch > 1 else [str(k + 1)]
                symbol = sympy.Symbol(f"softmax({name})_{''.join(digits)}", real=True)
                self.latex_names[symbol] = (rf"\operatorname{{softmax}}\left("
                                            rf"{name_latex(name)}\right)_{{{','.join(digits)}}}")
                self.define(symbol, sympy.exp(v) / total)
                self.softmax.append(symbol)

    def written(self, expr: sympy.Expr) -> sympy.Expr:
        """`expr` with the names: whole expressions replaced, then sums and ratios, which
        SymPy merges into the sums and products around them, found by `subs`."""
        expr = expr.xreplace(self.exact)
        for value, symbol in reversed(self.parts):
            expr = expr.subs(value, symbol)
        return expr

    def tidy(self, expr: sympy.Expr) -> sympy.Expr:
        """`expr` written with the names, its common factors pulled out, and each target row
        of cross_entropy summed to its 1."""
        expr = sympy.factor_terms(self.written(expr))
        for row in self.row_sums:
            expr = expr.subs(row, 1)
        return expr

    def simplest(self, expr: sympy.Expr) -> sympy.Expr:
        """The shortest of a few equal forms: as it is, its common factors pulled out, its
        fractions cancelled (`(-t / y + (1 - t) / (1 - y)) * y * (1 - y)` is `y - t`)."""
        expr = self.tidy(expr)
        candidates = [expr]
        if sympy.count_ops(expr) <= SIMPLIFY_LIMIT:
            expanded = sympy.expand(expr)
            candidates += [self.tidy(sympy.cancel(expr)), self.tidy(expanded)]
            if self.softmax:  # softmax(z)_1 * (t_1 + t_2 + t_3) - t_1: a row sums to 1
                candidates.append(self.tidy(sympy.collect(expanded, self.softmax)))
        return min(candidates, key=lambda e: (sympy.count_ops(e), sympy.default_sort_key(e)))

    def gradients(self, loss: sympy.Expr, weights: dict[str, Tensor]) -> dict[str, Tensor]:
        """Each weight's gradient by the chain rule over the named values: the adjoint of
        each value from the last back, then Σ adjoint * ∂value/∂weight, term by term."""
        defined = dict(self.definitions)
        order = [symbol for symbol, _ in self.definitions]
        users = {s: [u for u in order if s in defined[u].free_symbols] for s in order}
        adjoint: dict[sympy.Symbol, sympy.Expr] = {}
        for value in reversed(order):
            terms = [sympy.diff(loss, value)] + [
                adjoint[u] * self.written(sympy.diff(defined[u], value))
                for u in users[value] if adjoint[u] != 0]
            adjoint[value] = self.simplest(sympy.Add(*(self.simplest(t) for t in terms)))

        def gradient(weight: sympy.Symbol) -> sympy.Expr:
            terms = [sympy.diff(loss, weight)] + [
                adjoint[u] * self.written(sympy.diff(defined[u], weight))
                for u in order if weight in defined[u].free_symbols and adjoint[u] != 0]
            return self.simplest(sympy.Add(*(self.simplest(t) for t in terms)))

        return {name: _map(gradient, array) for name, array in weights.items()}

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
        named = [s for i in sorted(arrays, key=key) for s in arrays[i].flat]
        extra = [s for s, _ in self.definitions if s not in set(named)]  # softmax(z)_k
        return tuple(extra + named)


def _targets(graph: Graph, live: list[int]) -> set[str]:
    """Data the outputs do not read: the targets."""
    forward = set(graph.live(graph.outputs.values()))
    return {n for n, i in graph.inputs.items() if i not in forward and i in live}
