"""Graph -> a standalone Python module that needs only NumPy.

Each entry point (`forward`, `loss`, `value_and_grad`, `step`) is printed from the nodes its
results need, in topological order (statements.py). `step` calls `value_and_grad`, refuses
non-finite values, then `update` applies the optimizer's update in place, as the one update
plan (passes/updates.py) orders it. Optimizer options are named constants at the top of the
module (`LR = 0.1`), and every name is one the naming source gives (graph/naming.py).
"""

from __future__ import annotations

import textwrap

import sympy

from ..._version import __version__
from ...differentiate.optimizers import StateEntry, is_hyper, state_entries
from ...graph.expressions import ATOM, Code
from ...graph.functions import dim_symbol
from ...graph.ir import LEAVES, Graph, Node, Op, operand
from ...graph.naming import NAMES_NOTE, Naming
from ...graph.shapes import Shape
from ...passes.updates import plan_updates
from ...runtime.initializers import source as init_source
from ...runtime.net import Compiled
from ...runtime.randomness import RNG
from .helpers import HELPERS, helper_closure
from .lines import WIDTH, fit
from .statements import FunctionWriter


class ModuleWriter:
    """Prints the whole module for one compiled network and dtype. `suffix` names the entry
    points of one mode in the module of a network with modes (modal.py); `counts_steps`: its
    state holds dropout's step count, which apply_gradients advances."""

    def __init__(self, compiled: Compiled, dtype: str, suffix: str = "",
                 counts_steps: bool = False):
        self.suffix = suffix
        self.counts_steps = counts_steps
        self.network = compiled.network
        self.graph: Graph = compiled.graph
        self.dtype = dtype
        self.helpers: set[str] = set()
        self.naming = Naming(self.graph)
        self.filename = self.network.source.filename
        sizes = sorted({d for shape in self.network.data.values() for d in shape
                        if isinstance(d, str)})
        self.size_var = {d: self.naming.fresh(d) for d in sizes}
        used = {s for node in self.graph.nodes if node.expr is not None
                for s in node.expr.free_symbols if is_hyper(s)}
        self.constants = {symbol: self.naming.fresh(symbol.name[len("hyper:"):])
                          for symbol in self.graph.constants if symbol in used}
        self.symbol_names: dict[sympy.Symbol, Code] = {
            **{dim_symbol(d): Code(v, ATOM) for d, v in self.size_var.items()},
            **{s: Code(v, ATOM) for s, v in self.constants.items()},
        }

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
                w.bound[i] = self.naming[i].code
                lines.append(f'{w.bound[i]} = p["{name}"]')
        for name in data:
            i = g.inputs[name]
            w.bound[i] = self.naming[i].code
            lines.append(f"{w.bound[i]} = np.asarray({w.bound[i]}, dtype=DTYPE)")
        return lines

    def sizes(self, w: FunctionWriter, data: list[str]) -> list[str]:
        """Lines binding the symbolic sizes the body reads, from the first array having each."""
        lines, bound = [], set()
        for name in data:
            for axis, dim in enumerate(self.network.data[name]):
                if isinstance(dim, str) and dim in w.sizes and dim not in bound:
                    bound.add(dim)
                    array = self.naming[self.graph.inputs[name]].code
                    lines.append(f"{self.size_var[dim]} = {array}.shape[{axis}]")
        return lines

    def body(self, w: FunctionWriter, data: list[str], roots: list[int],
             params: bool = True) -> list[str]:
        """Prologue, size bindings and the statements computing `roots`."""
        head = self.prologue(w, data, params)
        w.emit(roots, keep=set(roots))
        return head + self.sizes(w, data) + w.lines

    def arguments(self, data: list[str]) -> list[str]:
        return [self.naming[self.graph.inputs[n]].code for n in data]

    def function(self, name: str, args: list[str], doc: str, body: list[str]) -> str:
        wrapped = textwrap.fill(doc, width=WIDTH - 3, initial_indent='    """',
                                subsequent_indent="    ")
        signature = f"def {name}({', '.join(args)}):"
        lines = fit(signature, "", "") + [wrapped + '"""']
        lines += [f"    {line}" if line else "" for line in body]
        return "\n".join(lines)

    def forward(self) -> str:
        inputs = list(self.network.inputs)
        g = self.graph
        w = FunctionWriter(self)
        body = self.body(w, inputs, list(g.outputs.values()))
        body += dict_lines("return ", {n: w.bound[i] for n, i in g.outputs.items()}, 4)
        return self.function("forward" + self.suffix, ["p", *self.arguments(inputs)],
                             "The network's outputs for inputs " + _listing(inputs) + ".", body)

    def loss(self) -> str:
        data = list(self.network.data)
        g = self.graph
        w = FunctionWriter(self)
        body = self.body(w, data, [g.loss])
        body.append(f"return float({w.bound[g.loss]})")
        return self.function("loss" + self.suffix, ["p", *self.arguments(data)],
                             "The loss, as a Python float.", body)

    def value_and_grad(self) -> str:
        data = list(self.network.data)
        g = self.graph
        w = FunctionWriter(self)
        body = self.body(w, data, [g.loss, *g.grads.values(), *g.buffer_updates.values()])
        args, doc = ["p", *self.arguments(data)], "The loss and its gradient with respect to " \
            "every param."
        if g.buffer_updates:  # batch norm in training mode: step keeps the new statistics
            new = dict_lines("buffers.update(", {n: w.bound[i]
                                                 for n, i in g.buffer_updates.items()}, 8)
            new[-1] += ")"
            body += ["if buffers is not None:", *(f"    {line}" for line in new)]
            args.append("buffers=None")
            doc += " With a dict `buffers`, also the buffers' values after this batch."
        # a gradient that is a param's own values (d/dv of sum(u * v) is u; of sum(V * W.T),
        # W.T) is handed out as a copy: step updates the param in place while its update
        # still reads the gradient
        grads = {n: f"np.copy({w.bound[i]})" if _views_a_param(g, i) else w.bound[i]
                 for n, i in g.grads.items()}
        body += dict_lines(f"return float({w.bound[g.loss]}), ", grads, 4)
        return self.function("value_and_grad" + self.suffix, args, doc, body)

    def step(self) -> str:
        data = list(self.network.data)
        call_args = ", ".join(["p", *self.arguments(data)])
        # batch norm in training mode: value_and_grad hands out the running statistics too,
        # written into p once the update is done
        buffers = bool(self.graph.buffer_updates)
        body = [*(["buffers = {}"] if buffers else []),
                f"loss, grads = value_and_grad{self.suffix}({call_args}"
                f"{', buffers' if buffers else ''})",
                "refuse_non_finite(loss, grads)",
                "update(p, s, grads)",
                *(["for name, value in buffers.items():  # the running statistics",
                   "    p[name][...] = value"] if buffers else []),
                "return loss"]
        self.helpers.add("refuse_non_finite")
        optimizer = self.network.optimizer
        doc = (f"One training step with {optimizer.text}, in place on p and s; returns the "
               f"loss before the update. Raises NonFiniteError, changing nothing, if the "
               f"loss or a gradient is not finite.")
        return self.function("step" + self.suffix, ["p", "s", *self.arguments(data)], doc,
                             body)

    def apply_gradients(self) -> str:
        optimizer = self.network.optimizer
        doc = (f"One update of {optimizer.text} with the gradients given (a dict like "
               f"value_and_grad's), in place on p and s. Raises NonFiniteError, changing "
               f"nothing, if a gradient is not finite.")
        body = ['refuse_non_finite(0.0, grads, "apply_gradients")', "update(p, s, grads)"]
        if self.counts_steps:
            body.append(f's["{RNG}"][1] += 1  # dropout\'s step count')
            doc += " Counts a step for dropout's masks."
        return self.function("apply_gradients", ["p", "s", "grads"], doc, body)

    def update(self) -> str:
        """The optimizer's update, reading gradients from `grads`: what step and
        apply_gradients share."""
        g = self.graph
        w = FunctionWriter(self)
        head = self.prologue(w, [])
        for name, i in g.gradient_leaves.items():
            w.bound[i] = self.naming[i].code
            head.append(f'{w.bound[i]} = grads["{name}"]')
        for name, i in g.state.items():
            w.bound[i] = self.naming[i].code
            head.append(f'{w.bound[i]} = s["{name}"]')
        self._updates(w)
        doc = f"The update of {self.network.optimizer.text}, in place on p and s."
        return self.function("update", ["p", "s", "grads"], doc, head + w.lines)

    def _updates(self, w: FunctionWriter) -> None:
        """New values into params and state as the update plan orders them: straight into
        the array where nothing later reads the old value, else aside and copied in at the
        end (from a snapshot, for a value that is a leaf an update overwrites meanwhile)."""
        g = self.graph
        plan = plan_updates(g, sorted(w.bound))
        overwritten = set(plan.in_place.values()) | {leaf for _, leaf in plan.deferred}
        snapshots: dict[int, str] = {}
        for node, leaf in plan.set_aside:
            if g.nodes[node].op in LEAVES and node in overwritten and node not in snapshots:
                snapshots[node] = self.naming.fresh(f"old_{self.naming[node].code}")
                # np.copy, not .copy(): a constant gradient may be a plain number
                w.statement(f"{snapshots[node]} = np.copy({w.bound[node]})")
        for i in plan.order:
            node = g.nodes[i]
            code = w.code(i, [Code(w.bound[j], ATOM) for j in node.inputs])
            leaf = plan.in_place.get(i)
            if leaf is None:
                w.assign(i, node, code)
                continue
            w.statement(self._in_place(i, node, w.bound[leaf], leaf, w), node.lines)
            w.bound[i] = w.bound[leaf]
        for node, leaf in plan.written_last():
            w.statement(f"{w.bound[leaf]}[...] = {snapshots.get(node, w.bound[node])}")

    def _in_place(self, i: int, node: Node, target: str, leaf: int, w: FunctionWriter) -> str:
        """`W -= LR * d_W` where the update is the old value minus something, else
        `W[...] =`."""
        if leaf in node.inputs and node.expr is not None:
            own = operand(node.inputs.index(leaf))
            change = node.expr - own
            if own not in sympy.expand(change).free_symbols:
                sign, amount = ("-=", -change) if change.could_extract_minus_sign() \
                    else ("+=", change)
                delta = Node(node.op, node.inputs, node.shape, expr=amount)
                code = w.elementwise(i, delta, [Code(w.bound[j], ATOM) for j in node.inputs])
                return f"{target} {sign} {code.text}"
        code = w.code(i, [Code(w.bound[j], ATOM) for j in node.inputs])
        return f"{target}[...] = {code.text}"

    def init(self) -> str:
        lines = ["rng = np.random.default_rng(seed)", "return {"]
        for name, info in self.network.params.items():
            if info.init.kind in ("xavier", "he"):
                self.helpers.add(info.init.kind)
            entry = f'"{name}": {init_source(info.init, info.shape)},'
            lines += [line[4:] for line in fit(entry, info.init.describe(), "        ")]
        lines.append("}")
        doc = ("Fresh params, drawn in declaration order from np.random.default_rng(seed) "
               "in float64, then cast to DTYPE.")
        return self.function("init", ["seed=0"], doc, lines)

    def init_state(self) -> str:
        entries = state_entries(self.network.optimizer, list(self.network.trained))
        optimizer = self.network.optimizer.text
        items = [f'"{entry.name}": {_zeros(entry)},' for entry in entries]
        if self.counts_steps:
            items.append(f'"{RNG}": np.array([seed, 0], dtype=np.uint64),')
            doc = f"Optimizer state for {optimizer}, all zeros, and dropout's seed and step count."
        elif not entries:
            doc = f"{optimizer} keeps no state."
        else:
            doc = f"Optimizer state for {optimizer}, all zeros."
        if self.network.modal and not self.counts_steps:
            doc = doc[:-1] + " (seed is for dropout's masks: this network draws none)."
        # a network with modes takes init_state(p, seed=) as CompiledNet does, dropout or not
        args = ["p", "seed=0"] if self.network.modal else ["p"]
        lines = ["return {", *(f"    {item}" for item in items), "}"] if items else ["return {}"]
        return self.function("init_state", args, doc, lines)

    def header(self) -> list[str]:
        net = self.network
        lines = [
            f'"""{net.name}: compiled by bpcompile {__version__} from {self.filename}.',
            "",
            "Standalone: needs only NumPy. Params and optimizer state are dicts of arrays;",
            "data arrays are arguments. Generated code: edit the .bp file and recompile.",
            "",
            NAMES_NOTE,
            '"""',
            "",
            "import numpy as np",
            "",
            f"DTYPE = np.{self.dtype}",
            *dict_lines("PARAMS = ", {n: repr(i.shape) for n, i in net.params.items()}),
            *dict_lines("INPUTS = ", {n: _shape_literal(s) for n, s in net.inputs.items()
                                      if not (self.counts_steps and n in net.masks)}),
            *dict_lines("TARGETS = ", {n: _shape_literal(s) for n, s in net.targets.items()}),
            f"OUTPUTS = {_tuple_literal(net.outputs)}",
        ]
        if self.constants:
            lines += ["", f"# {net.optimizer.text}"]
            lines += [f"{name} = {float(self.graph.constants[symbol])!r}"
                      for symbol, name in self.constants.items()]
        return lines

    def module(self) -> str:
        functions = [self.init(), self.forward()]
        if self.graph.loss is not None:
            functions += [self.loss(), self.value_and_grad(), self.init_state(), self.step(),
                          self.apply_gradients(), self.update()]
        helpers = [HELPERS[h] for h in helper_closure(self.helpers)]
        parts = ["\n".join(self.header()), self.errors(), *helpers, *functions]
        return "\n\n\n".join(parts) + "\n"

    def errors(self) -> str:
        return "\n".join([
            "class NonFiniteError(FloatingPointError):",
            '    """step or apply_gradients met a loss or gradient that is not finite, and '
            'changed',
            '    nothing."""',
        ])


def _zeros(entry: StateEntry) -> str:
    if entry.param is None:
        return "np.zeros((), dtype=DTYPE)"
    return f'np.zeros_like(p["{entry.param}"])'


def _views_a_param(graph: Graph, i: int) -> bool:
    """Is node i, as the generated code holds it, a param's array or a view of one: the
    param, its transpose or reshape, or an elementwise node that is one operand as it is
    (printed as that operand, broadcast where the shape grows)?"""
    node = graph.nodes[i]
    if node.op is Op.PARAM:
        return True
    if node.op in (Op.TRANSPOSE, Op.RESHAPE):
        return _views_a_param(graph, node.inputs[0])
    if node.op is Op.ELEMENTWISE and node.inputs and node.expr == operand(0):
        return _views_a_param(graph, node.inputs[0])
    return False


def dict_lines(prefix: str, items: dict[str, str], indent: int = 0) -> list[str]:
    """`prefix{"a": x, "b": y}` on one line if it fits, else one item per line."""
    pairs = [f'"{name}": {value}' for name, value in items.items()]
    one_line = f"{prefix}{{{', '.join(pairs)}}}"
    if indent + len(one_line) <= WIDTH:
        return [one_line]
    return [f"{prefix}{{", *(f"    {pair}," for pair in pairs), "}"]


def _shape_literal(shape: Shape) -> str:
    return _tuple_literal(shape)


def _tuple_literal(values: tuple) -> str:
    """A tuple of names and numbers, strings in double quotes as everywhere in the module."""
    items = [f'"{v}"' if isinstance(v, str) else repr(v) for v in values]
    return f"({items[0]},)" if len(items) == 1 else f"({', '.join(items)})"


def _listing(names: list[str]) -> str:
    return ", ".join(names) if names else "(none)"


def generate(compiled: Compiled, dtype: str = "float64") -> str:
    """The NumPy module's source text."""
    return ModuleWriter(compiled, dtype).module()
