"""Graph -> a standalone Python module that needs only NumPy.

Each entry point (`forward`, `loss`, `value_and_grad`, `step`) is printed from the nodes its
results need, in topological order. A value gets its own line when the `.bp` file named it,
when it is read more than once, or when it is a result; otherwise it is written inline where
it is read, as a person would (`h = sigmoid(x @ W1 + b1)`). Every line carries a comment with
the `.bp` line it comes from. `step` calls `value_and_grad`, refuses non-finite values, then
updates params and state in place.
"""

from __future__ import annotations

import keyword
import textwrap
from collections import Counter
from collections.abc import Callable, Iterator

import sympy

from ..._version import __version__
from ...differentiate.optimizers import state_names
from ...driver import Compiled
from ...graph.ir import LEAVES, Graph, Node, Op, operand
from ...graph.shapes import Shape, broadcast, dim_symbol, symbols_of
from ...runtime.initializers import source as init_source
from .helpers import HELPERS, helper_closure
from .printer import ATOM, MUL, POWER, Code, NumpyPrinter, number

INLINE_LIMIT = 60  # characters; longer unnamed expressions get a line of their own
# Names the generated module uses itself: a `.bp` name equal to one gets a trailing `_`.
RESERVED = set(keyword.kwlist) | {
    "np", "p", "s", "rng", "seed", "DTYPE", "PARAMS", "INPUTS", "TARGETS", "OUTPUTS",
    "STATE", "NonFiniteError", "float", "dict", "print", "range", "len", "grads",
    "init", "forward", "loss", "value_and_grad", "init_state", "step", "apply_gradients",
    "update",
} | set(HELPERS)


def _identifier(name: str) -> str:
    """A `.bp` name as a Python identifier: `h1.W` -> `h1_W`, `lambda` -> `lambda_`."""
    name = name.replace(".", "_")
    return name + "_" if name in RESERVED else name


class Names:
    """Hands out distinct Python names: the `.bp` name where there is one."""

    def __init__(self, taken: set[str]):
        self.taken = set(RESERVED) | taken

    def fresh(self, wanted: str) -> str:
        base = _identifier(wanted)
        if base in self.taken:
            base += "_"
        name, k = base, 2
        while name in self.taken:
            name, k = f"{base}{k}", k + 1
        self.taken.add(name)
        return name


def _shape_code(shape: Shape) -> str:
    dims = [str(d) for d in shape]
    return f"({dims[0]},)" if len(dims) == 1 else f"({', '.join(dims)})"


def _axes_code(node: Node, rank: int) -> str:
    """The `axis=` argument of a reduction, or '' when it reduces everything to a scalar."""
    if len(node.axes) == rank and not node.keepdims:
        return ""
    axis = str(node.axes[0]) if len(node.axes) == 1 else str(node.axes)
    return f", axis={axis}" + (", keepdims=True" if node.keepdims else "")


class FunctionWriter:
    """Prints one entry point's body: statements for the nodes behind `roots`."""

    def __init__(self, module: ModuleWriter, preset: dict[int, str] | None = None):
        self.module = module
        self.graph = module.graph
        self.names = Names(module.taken)
        self.preset = preset or {}  # node id -> the name its line should use
        self.bound: dict[int, str] = {}  # node id -> variable already holding it
        self.lines: list[str] = []
        self.sizes: set[str] = set()  # symbolic sizes the body reads
        self.line_of: dict[int, int] = {}  # node id -> index in `lines` of its statement

    # -------------------------------------------------------------------- nodes

    def emit(self, roots: list[int], keep: set[int] = frozenset()) -> None:
        """Statements computing `roots`; nodes in `keep` get a line of their own."""
        live = self._live(roots)
        readers = Counter(roots)
        for i in live:
            readers.update(j for j in self.graph.nodes[i].inputs)
        inline: dict[int, Code] = {}
        for i in live:
            node = self.graph.nodes[i]
            code = self.code(node, [inline.get(j) or Code(self.bound[j], ATOM)
                                    for j in node.inputs])
            own_line = (node.name is not None or readers[i] != 1 or i in keep
                        or len(code.text) > INLINE_LIMIT)
            if own_line:
                self.assign(i, node, code)
            else:
                inline[i] = code

    def _live(self, roots: list[int]) -> list[int]:
        seen: set[int] = set()
        stack = [r for r in roots if r not in self.bound]
        while stack:
            i = stack.pop()
            if i in seen or i in self.bound:
                continue
            seen.add(i)
            stack.extend(self.graph.nodes[i].inputs)
        return sorted(seen)

    def assign(self, i: int, node: Node, code: Code) -> None:
        name = self.preset.get(i) or self.names.fresh(node.name or "tmp")
        self.line_of[i] = len(self.lines)
        self.statement(f"{name} = {code.text}", node.lines)
        self.bound[i] = name

    def statement(self, text: str, lines: tuple[int, ...] = ()) -> None:
        comment = self.module.where(lines)
        self.lines.append(f"{text}  # {comment}" if comment else text)

    def code(self, node: Node, args: list[Code]) -> Code:
        return OP_CODE[node.op](self, node, args)

    def elementwise(self, node: Node, args: list[Code]) -> Code:
        names = {operand(k): code for k, code in enumerate(args)}
        names.update(self.module.dim_names)
        self.sizes |= {str(s)[4:] for s in node.expr.free_symbols if str(s).startswith("dim:")}
        if not node.inputs:
            value = number(node.expr) if not node.expr.free_symbols else \
                NumpyPrinter(names).print(node.expr)
            if not node.shape:
                return value
            return Code(f"np.full({self.shape(node.shape)}, {value.text}, dtype=DTYPE)", ATOM)
        replacements, reduced = _common_subexpressions(node.expr, self.module.temporaries())
        for symbol, value in replacements:
            printer = NumpyPrinter(names)
            temp = self.names.fresh("common")
            self.statement(f"{temp} = {printer.print(value).text}", node.lines)
            self.module.helpers |= printer.helpers
            names[symbol] = Code(temp, ATOM)
        printer = NumpyPrinter(names)
        code = printer.print(reduced)
        self.module.helpers |= printer.helpers
        # what the printed code reads: cse may cancel terms the node's expression kept
        read = _operands_read(reduced, replacements)
        reached = broadcast(*(self.graph.nodes[node.inputs[int(s.name[1:])]].shape
                              for s in read))
        if not read:
            return Code(f"np.full({self.shape(node.shape)}, {code.text}, dtype=DTYPE)", ATOM)
        if reached != node.shape:  # the operands alone do not fill the result's shape
            code = Code(f"np.broadcast_to({code.text}, {self.shape(node.shape)})", ATOM)
        return code

    def shape(self, shape: Shape) -> str:
        """A shape as a tuple literal; its symbolic sizes become variables of the body."""
        self.sizes |= set(symbols_of(shape))
        return _shape_code(tuple(self.module.size_var.get(d, d) for d in shape))

    def helper_call(self, name: str, *args: str) -> Code:
        self.module.helpers.add(name)
        return Code(f"{name}({', '.join(args)})", ATOM)


def _common_subexpressions(expr: sympy.Expr, names: Iterator[sympy.Symbol]
                           ) -> tuple[list[tuple[sympy.Symbol, sympy.Expr]], sympy.Expr]:
    """`sympy.cse` of one expression, keeping only the replacements its result still reads
    (terms that cancel leave some unread)."""
    replacements, (reduced,) = sympy.cse([expr], symbols=names)
    needed = set(reduced.free_symbols)
    kept = []
    for symbol, value in reversed(replacements):
        if symbol in needed:
            kept.append((symbol, value))
            needed |= value.free_symbols
    return kept[::-1], reduced


def _operands_read(expr: sympy.Expr, replacements: list[tuple[sympy.Symbol, sympy.Expr]]
                   ) -> set[sympy.Symbol]:
    """The operand symbols (a0, a1, ...) `expr` reads, directly or through `replacements`."""
    values = dict(replacements)
    read: set[sympy.Symbol] = set()
    stack = list(expr.free_symbols)
    while stack:
        symbol = stack.pop()
        if symbol in values:
            stack.extend(values[symbol].free_symbols)
        elif symbol.name[:1] == "a" and symbol.name[1:].isdigit():
            read.add(symbol)
    return read


def _matmul(w: FunctionWriter, node: Node, args: list[Code]) -> Code:
    return Code(f"{args[0].at(MUL)} @ {args[1].at(POWER)}", MUL)


def _transpose(w: FunctionWriter, node: Node, args: list[Code]) -> Code:
    return Code(f"{args[0].at(ATOM)}.T", ATOM)


def _reshape(w: FunctionWriter, node: Node, args: list[Code]) -> Code:
    return Code(f"{args[0].at(ATOM)}.reshape({w.shape(node.shape)})", ATOM)


def _reduction(function: str) -> Callable[[FunctionWriter, Node, list[Code]], Code]:
    def code(w: FunctionWriter, node: Node, args: list[Code]) -> Code:
        rank = len(w.graph.nodes[node.inputs[0]].shape)
        return Code(f"{function}({args[0].text}{_axes_code(node, rank)})", ATOM)
    return code


def _axis_helper(name: str) -> Callable[[FunctionWriter, Node, list[Code]], Code]:
    def code(w: FunctionWriter, node: Node, args: list[Code]) -> Code:
        axis = str(node.axes[0]) if len(node.axes) == 1 else str(node.axes)
        extra = [f"keepdims={node.keepdims}"] if node.op is Op.LOGSUMEXP else []
        return w.helper_call(name, args[0].text, f"axis={axis}", *extra)
    return code


def _softmax_xent(w: FunctionWriter, node: Node, args: list[Code]) -> Code:
    return w.helper_call("softmax_cross_entropy", args[0].text, args[1].text)


OP_CODE: dict[Op, Callable[[FunctionWriter, Node, list[Code]], Code]] = {
    Op.ELEMENTWISE: FunctionWriter.elementwise,
    Op.MATMUL: _matmul,
    Op.TRANSPOSE: _transpose,
    Op.RESHAPE: _reshape,
    Op.SUM: _reduction("np.sum"),
    Op.MAX: _reduction("np.max"),
    Op.ARGMAX_ONEHOT: _axis_helper("argmax_onehot"),
    Op.SOFTMAX: _axis_helper("softmax"),
    Op.LOG_SOFTMAX: _axis_helper("log_softmax"),
    Op.LOGSUMEXP: _axis_helper("logsumexp"),
    Op.SOFTMAX_XENT: _softmax_xent,
}


class ModuleWriter:
    """Prints the whole module for one compiled network and dtype."""

    def __init__(self, compiled: Compiled, dtype: str):
        self.network = compiled.network
        self.graph: Graph = compiled.graph
        self.dtype = dtype
        self.helpers: set[str] = set()
        symbols = sorted({d for shape in self.network.data.values() for d in symbols_of(shape)})
        # The variable of every size, param and data array: distinct, and names no function
        # reuses.
        names = Names(set())
        self.size_var = {d: names.fresh(d) for d in symbols}
        self.dim_names = {dim_symbol(d): Code(v, ATOM) for d, v in self.size_var.items()}
        self.var = {n: names.fresh(n) for n in (*self.network.params, *self.network.data)}
        self.taken = names.taken
        self.filename = self.network.source.filename

    def temporaries(self):
        k = 0
        while True:
            yield sympy.Symbol(f"common:{k}", real=True)
            k += 1

    def where(self, lines: tuple[int, ...]) -> str:
        if not lines:
            return ""
        return f"{self.filename}:{','.join(str(n) for n in lines)}"

    # -------------------------------------------------------------- entry points

    def prologue(self, w: FunctionWriter, data: list[str], params: bool = True) -> list[str]:
        """Lines binding params and converting data arrays (registered as bound in `w`)."""
        g = self.graph
        lines = []
        if params:
            for name, i in g.params.items():
                w.bound[i] = self.var[name]
                lines.append(f'{self.var[name]} = p["{name}"]')
        for name in data:
            var = self.var[name]
            w.bound[g.inputs[name]] = var
            lines.append(f"{var} = np.asarray({var}, dtype=DTYPE)")
        return lines

    def sizes(self, w: FunctionWriter, data: list[str]) -> list[str]:
        """Lines binding the symbolic sizes the body reads, from the first array having each."""
        lines, bound = [], set()
        for name in data:
            for axis, dim in enumerate(self.network.data[name]):
                if isinstance(dim, str) and dim in w.sizes and dim not in bound:
                    bound.add(dim)
                    lines.append(f"{self.size_var[dim]} = {self.var[name]}.shape[{axis}]")
        return lines

    def body(self, w: FunctionWriter, data: list[str], roots: list[int],
             params: bool = True) -> list[str]:
        """Prologue, size bindings and the statements computing `roots`."""
        head = self.prologue(w, data, params)
        w.emit(roots, keep=set(roots))
        return head + self.sizes(w, data) + w.lines

    def function(self, name: str, args: list[str], doc: str, body: list[str]) -> str:
        wrapped = textwrap.fill(doc, width=92, initial_indent='    """',
                                subsequent_indent="    ")
        lines = [f"def {name}({', '.join(args)}):", wrapped + '"""']
        lines += [f"    {line}" for line in body]
        return "\n".join(lines)

    def forward(self) -> str:
        inputs = list(self.network.inputs)
        g = self.graph
        w = FunctionWriter(self)
        body = self.body(w, inputs, list(g.outputs.values()))
        body += _dict_lines("return ", {n: w.bound[i] for n, i in g.outputs.items()})
        return self.function("forward", ["p", *(self.var[n] for n in inputs)],
                             "The network's outputs for inputs " + _listing(inputs) + ".", body)

    def loss(self) -> str:
        data = list(self.network.data)
        g = self.graph
        w = FunctionWriter(self, {g.loss: "loss"})
        body = self.body(w, data, [g.loss])
        body.append(f"return float({w.bound[g.loss]})")
        return self.function("loss", ["p", *(self.var[n] for n in data)],
                             "The loss, as a Python float.", body)

    def value_and_grad(self) -> str:
        data = list(self.network.data)
        g = self.graph
        w = FunctionWriter(self, {g.loss: "loss"})
        body = self.body(w, data, [g.loss, *g.grads.values()])
        # a gradient that is a param's own values (d/dv of sum(u * v) is u; of sum(V * W.T),
        # W.T) is handed out as a copy: step updates the param in place while its update
        # still reads the gradient
        grads = {n: f"np.copy({w.bound[i]})" if _views_a_param(g, i) else w.bound[i]
                 for n, i in g.grads.items()}
        body += _dict_lines(f"return float({w.bound[g.loss]}), ", grads)
        return self.function(
            "value_and_grad", ["p", *(self.var[n] for n in data)],
            "The loss and its gradient with respect to every param.", body,
        )

    def step(self) -> str:
        data = list(self.network.data)
        call_args = ", ".join(["p", *(self.var[n] for n in data)])
        body = [f"loss, grads = value_and_grad({call_args})",
                "refuse_non_finite(loss, grads)",
                "update(p, s, grads)",
                "return loss"]
        self.helpers.add("refuse_non_finite")
        optimizer = self.network.optimizer
        doc = (f"One training step with {optimizer.text}, in place on p and s; returns the "
               f"loss before the update. Raises NonFiniteError, changing nothing, if the "
               f"loss or a gradient is not finite.")
        return self.function("step", ["p", "s", *(self.var[n] for n in data)], doc, body)

    def apply_gradients(self) -> str:
        optimizer = self.network.optimizer
        doc = (f"One update of {optimizer.text} with the gradients given (a dict like "
               f"value_and_grad's), in place on p and s. Raises NonFiniteError, changing "
               f"nothing, if a gradient is not finite.")
        body = ['refuse_non_finite(0.0, grads, "apply_gradients")', "update(p, s, grads)"]
        return self.function("apply_gradients", ["p", "s", "grads"], doc, body)

    def update(self) -> str:
        """The optimizer's update, reading gradients from `grads`: what step and
        apply_gradients share."""
        g = self.graph
        w = FunctionWriter(self)
        w.names.taken |= {"grads"}
        head = self.prologue(w, [])
        for name, i in g.gradient_leaves.items():
            var = w.names.fresh(f"d_{name}")
            w.bound[i] = var
            head.append(f'{var} = grads["{name}"]')
        for name, i in g.state.items():
            var = w.names.fresh(name)
            w.bound[i] = var
            head.append(f'{var} = s["{name}"]')
        self._updates(w)
        doc = f"The update of {self.network.optimizer.text}, in place on p and s."
        return self.function("update", ["p", "s", "grads"], doc, head + w.lines)

    def _updates(self, w: FunctionWriter) -> None:
        """New values into params and state, in place. A value is written into its array as
        soon as it is computed, unless something later still reads the old value.

        An update may also be a value that exists before any is written (Adam's first moment
        is the gradient itself when beta1 = 0) or one shared with another leaf's update:
        those are copied in at the end, from a snapshot if the value is a leaf that an
        update overwrites meanwhile."""
        g = self.graph
        leaf_of: dict[int, int] = {}
        copies: list[tuple[int, int]] = []
        ready = set(w.bound)  # values the step has before computing any update
        for node, leaf in g.leaf_updates():
            if node == leaf:  # unchanged
                continue
            if node in ready or node in leaf_of:
                copies.append((node, leaf))
            else:
                leaf_of[node] = leaf
        snapshots: dict[int, str] = {}
        for node, leaf in copies:
            if g.nodes[node].op in LEAVES and node not in snapshots:
                snapshots[node] = w.names.fresh(f"old_{w.bound[node]}")
                # np.copy, not .copy(): a constant gradient may be a plain number
                w.statement(f"{snapshots[node]} = np.copy({w.bound[node]})")
        order = w._live(list(leaf_of))
        last_read: dict[int, int] = {}
        for position, i in enumerate(order):
            for j in g.nodes[i].inputs:
                last_read[j] = position
        pending: list[tuple[int, str]] = []
        for position, i in enumerate(order):
            node = g.nodes[i]
            code = w.code(node, [Code(w.bound[j], ATOM) for j in node.inputs])
            if i not in leaf_of:
                w.assign(i, node, code)
                continue
            target = w.bound[leaf_of[i]]
            if last_read.get(leaf_of[i], -1) > position:
                temp = w.names.fresh(f"new_{target}")
                w.statement(f"{temp} = {code.text}", node.lines)
                pending.append((i, temp))
                w.bound[i] = temp
                continue
            w.statement(self._in_place(node, target, leaf_of[i], w), node.lines)
            w.bound[i] = target
        for i, temp in pending:
            w.lines.append(f"{w.bound[leaf_of[i]]}[...] = {temp}")
        for node, leaf in copies:
            value = snapshots.get(node, w.bound[node])
            w.lines.append(f"{w.bound[leaf]}[...] = {value}")

    def _in_place(self, node: Node, target: str, leaf: int, w: FunctionWriter) -> str:
        """`W -= lr * d_W` where the update is the old value minus something, else `W[...] =`."""
        if leaf in node.inputs and node.expr is not None:
            own = operand(node.inputs.index(leaf))
            change = node.expr - own
            if own not in sympy.expand(change).free_symbols:
                sign, amount = ("-=", -change) if change.could_extract_minus_sign() \
                    else ("+=", change)
                delta = Node(node.op, node.inputs, node.shape, expr=amount)
                code = w.code(delta, [Code(w.bound[j], ATOM) for j in node.inputs])
                return f"{target} {sign} {code.text}"
        code = w.code(node, [Code(w.bound[j], ATOM) for j in node.inputs])
        return f"{target}[...] = {code.text}"

    def init(self) -> str:
        lines = ["rng = np.random.default_rng(seed)", "return {"]
        for name, info in self.network.params.items():
            lines.append(f'    "{name}": {init_source(info.init, info.shape)},'
                         f'  # {info.init.describe()}')
        lines.append("}")
        doc = ("Fresh params, drawn in declaration order from np.random.default_rng(seed) "
               "in float64, then cast to DTYPE.")
        return self.function("init", ["seed=0"], doc, lines)

    def init_state(self) -> str:
        names = state_names(self.network.optimizer, list(self.network.params))
        if not names:
            return self.function("init_state", ["p"],
                                 f"{self.network.optimizer.text} keeps no state.", ["return {}"])
        lines = ["return {"]
        for name in names:
            if name == "step":
                lines.append('    "step": np.zeros((), dtype=DTYPE),')
            else:
                param = name.rsplit(".", 1)[0]
                lines.append(f'    "{name}": np.zeros_like(p["{param}"]),')
        lines.append("}")
        return self.function("init_state", ["p"],
                             f"Optimizer state for {self.network.optimizer.text}, all zeros.",
                             lines)

    def module(self) -> str:
        net = self.network
        functions = [self.init(), self.forward()]
        if self.graph.loss is not None:
            functions += [self.loss(), self.value_and_grad(), self.init_state(), self.step(),
                          self.apply_gradients(), self.update()]
        header = [
            f'"""{net.name}: compiled by bpcompile {__version__} from {self.filename}.',
            "",
            "Standalone: needs only NumPy. Params and optimizer state are dicts of arrays;",
            "data arrays are arguments. Generated code: edit the .bp file and recompile.",
            '"""',
            "",
            "import numpy as np",
            "",
            f"DTYPE = np.{self.dtype}",
            *_dict_lines("PARAMS = ", {n: repr(i.shape) for n, i in net.params.items()}),
            f"INPUTS = {_shapes_literal(net.inputs)}",
            f"TARGETS = {_shapes_literal(net.targets)}",
            f"OUTPUTS = {tuple(net.outputs)!r}",
            "",
            "",
            "class NonFiniteError(FloatingPointError):",
            '    """step or apply_gradients met a loss or gradient that is not finite, and '
            'changed nothing."""',
        ]
        helpers = [HELPERS[h] for h in helper_closure(self.helpers)]
        parts = ["\n".join(header), *helpers, *functions]
        return "\n\n\n".join(parts) + "\n"


# Ops whose NumPy spelling is a view of their first input, not a new array.
VIEWS = frozenset({Op.TRANSPOSE, Op.RESHAPE})


def _views_a_param(graph: Graph, i: int) -> bool:
    """Is node i, as the generated code holds it, a param's array or a view of one: the
    param, its transpose or reshape, or an elementwise node that is one operand as it is
    (printed as that operand, broadcast where the shape grows)?"""
    node = graph.nodes[i]
    if node.op is Op.PARAM:
        return True
    if node.op in VIEWS:
        return _views_a_param(graph, node.inputs[0])
    if node.op is Op.ELEMENTWISE and isinstance(node.expr, sympy.Symbol):
        return _views_a_param(graph, node.inputs[int(node.expr.name[1:])])
    return False


def _dict_lines(prefix: str, items: dict[str, str], width: int = 92) -> list[str]:
    """`prefix{"a": x, "b": y}` on one line if it fits, else one item per line."""
    pairs = [f'"{name}": {value}' for name, value in items.items()]
    one_line = f"{prefix}{{{', '.join(pairs)}}}"
    if len(one_line) <= width:
        return [one_line]
    return [f"{prefix}{{", *(f"    {pair}," for pair in pairs), "}"]


def _shapes_literal(shapes: dict[str, Shape]) -> str:
    items = ", ".join(f"{n!r}: ({', '.join(repr(d) for d in s)}{',' if len(s) == 1 else ''})"
                      for n, s in shapes.items())
    return f"{{{items}}}"


def _listing(names: list[str]) -> str:
    return ", ".join(names) if names else "(none)"


def generate(compiled: Compiled, dtype: str = "float64") -> str:
    """The NumPy module's source text."""
    return ModuleWriter(compiled, dtype).module()
