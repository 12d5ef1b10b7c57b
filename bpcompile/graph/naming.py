"""The one naming source: what every value of a graph is called, in the generated NumPy
module, in `show`, in `graph` pictures and in `explain` alike, so a name means the same value
everywhere it is read.

Every name is one the `.bp` file wrote, or made from one with a documented affix:

    NAME           a param, input, target or value the file named; `loss`, the loss
    d_NAME         the adjoint of NAME, d loss / d NAME; d_W is the gradient of param W
    NAME_pre       the value before NAME's activation: NAME = f(NAME_pre)
    NAME_FUNCTION  FUNCTION (sigmoid, exp, sum, softmax, ...) computed for NAME: of NAME, or
                   inside NAME's statement, kept as a value because another line reads it
    NAME_part      a piece of NAME's statement, computed once because it is read twice
    new_NAME       NAME's value after the optimizer's step, before it is written into NAME

People read `h1.W` and `d_h1.W`; code reads the identifiers `h1_W` and `d_h1_W`. Names that
collide get `_2`, `_3`; a name that is a Python keyword or one the generated module uses for
itself gets a trailing `_`.
"""

from __future__ import annotations

import keyword
import re
from collections.abc import Iterable
from dataclasses import dataclass

import sympy

from .functions import Elu, LeakyRelu, Power, Relu, Sigmoid, Softplus
from .ir import LEAVES, Graph, Op
from .vocabulary import FUNCTIONS

# What the names mean, as the generated module's header and `show` tell people.
NAMES_NOTE = """\
Names: each value is called what the .bp file calls it; d_NAME is the adjoint of NAME
(d loss / d NAME, so d_W is the gradient of param W); NAME_pre is the value before NAME's
activation; NAME_FUNCTION (h_sigmoid, z_softmax) is that function computed for NAME and kept
because another line reads it; NAME_part is a piece of NAME's statement computed once; and
new_NAME is NAME after the optimizer's step."""


# Each documented affix, how to find it in a name, and what it means: `legend` says only what
# the names a person is shown use.
AFFIXES: tuple[tuple[str, str, str], ...] = (
    ("d_NAME", r"^d_", "the adjoint of NAME, d loss / d NAME"),
    ("NAME_pre", r"_pre$", "the value before NAME's activation"),
    ("NAME_part", r"_part(_\d+)?$", "a piece of NAME's statement, computed once"),
    ("new_NAME", r"^new_", "NAME after the optimizer's step"),
)


def legend(names: Iterable[str]) -> str:
    """`names: d_NAME = ...; NAME_pre = ...` for the affixes `names` use ('' for none)."""
    names = list(names)
    used = [f"{affix} = {meaning}" for affix, pattern, meaning in AFFIXES
            if any(re.search(pattern, name) for name in names)]
    return "names: " + "; ".join(used) if used else ""


# Names the generated module uses itself: a `.bp` name equal to one gets a trailing `_`.
RESERVED = frozenset(keyword.kwlist) | {
    "np", "p", "s", "rng", "seed", "DTYPE", "PARAMS", "INPUTS", "TARGETS", "OUTPUTS",
    "STATE", "NonFiniteError", "float", "dict", "print", "range", "len", "grads",
    "init", "forward", "value_and_grad", "init_state", "step", "apply_gradients",
    "update", "sigmoid", "elu", "softmax", "log_softmax", "logsumexp", "cross_entropy",
    "onehot_argmax", "refuse_non_finite", "erf", "unslice", "onehot", "take",
    "scatter_add", "windows", "conv", "conv_transpose", "correlate", "max_pool", "avg_pool",
    "max_pool_grad", "avg_pool_grad", "spread", "columns",
}

# The word a value computed by each op is named with: `z_softmax`, `d_y_sum`.
OP_WORDS: dict[Op, str] = {
    Op.MATMUL: "matmul", Op.TRANSPOSE: "T", Op.RESHAPE: "reshaped", Op.SUM: "sum",
    Op.MAX: "max", Op.ARGMAX_ONEHOT: "argmax", Op.SOFTMAX: "softmax",
    Op.LOG_SOFTMAX: "log_softmax", Op.LOGSUMEXP: "logsumexp",
    Op.SOFTMAX_XENT: "cross_entropy", Op.ELEMENTWISE: "part", Op.PERMUTE: "transposed",
    Op.SLICE: "slice", Op.UNSLICE: "unsliced", Op.CONCAT: "joined", Op.PROD: "prod",
    Op.ARGMAX: "argmax", Op.ONEHOT: "onehot", Op.TAKE: "rows", Op.TAKE_GRAD: "scattered",
    Op.CONV: "conv", Op.CONV_INPUT_GRAD: "conv_transpose", Op.CONV_WEIGHT_GRAD: "correlate",
    Op.POOL: "pool", Op.POOL_GRAD: "unpooled",
}


@dataclass(frozen=True)
class ValueName:
    text: str  # as people read it: h1.W, d_h1.W
    code: str  # as a Python identifier: h1_W, d_h1_W


def identifier(text: str) -> str:
    """A name as Python code spells it: `h1.W` -> `h1_W`, `lambda` -> `lambda_`."""
    name = text.replace(".", "_")
    return name + "_" if name in RESERVED else name


# The `.bp` name of each function a value may be named after (h_sigmoid, z_exp).
FUNCTION_WORDS: dict[type, str] = {
    Sigmoid: "sigmoid", Softplus: "softplus", Relu: "relu", LeakyRelu: "leaky_relu",
    Elu: "elu", Power: "power", sympy.exp: "exp", sympy.log: "log", sympy.tanh: "tanh",
    sympy.sin: "sin", sympy.cos: "cos", sympy.Abs: "abs", sympy.Max: "maximum",
    sympy.Min: "minimum",
    **{function.kind: function.word for function in FUNCTIONS},
}


def function_word(expr: sympy.Expr) -> str | None:
    """`sigmoid` for sigmoid(...), `exp` for exp(...): the outermost function of `expr`, as
    the `.bp` language spells it."""
    return FUNCTION_WORDS.get(type(expr))


class Naming:
    """The names of a graph's values; `naming[i]` is node i's."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.names: dict[int, ValueName] = {}
        self.taken: set[str] = set(RESERVED)  # identifiers in use, by values and by `fresh`
        self.texts: set[str] = set()
        self._users = graph.users()
        self._assign()

    def __getitem__(self, i: int) -> ValueName:
        return self.names[i]

    def fresh(self, wanted: str) -> str:
        """A new identifier like `wanted`, unused by any value: for lines of code that are
        not values of the graph (a `_part` of an expression, a snapshot)."""
        base = identifier(wanted)
        name, k = base, 2
        while name in self.taken:
            name, k = f"{base}_{k}", k + 1
        self.taken.add(name)
        return name

    # ------------------------------------------------------------------ assigning

    def _give(self, i: int, text: str) -> None:
        if i in self.names:
            return
        base, k = text, 2
        while text in self.texts or identifier(text) in self.taken:
            text, k = f"{base}_{k}", k + 1
        self.texts.add(text)
        self.taken.add(identifier(text))
        self.names[i] = ValueName(text, identifier(text))

    def _alias(self, i: int, of: int) -> None:
        """Node i is called as node `of` is: a gradient leaf reads the gradient itself."""
        self.names[i] = self.names[of]

    def _assign(self) -> None:
        """In order of precedence: what the file named keeps its name when another value
        would take it."""
        g, nodes = self.graph, self.graph.nodes
        for name, i in [*g.inputs.items(), *g.params.items()]:
            self._give(i, name)
        for i, node in enumerate(nodes):
            if node.name is not None and node.op not in LEAVES and not node.adjoint \
                    and not node.derived:
                self._give(i, node.name)
        for name, i in g.outputs.items():
            self._give(i, name)
        if g.loss is not None:
            self._give(g.loss, "loss")
        for name, i in g.grads.items():
            self._give(i, f"d_{name}")
        for i, node in enumerate(nodes):
            if node.adjoint and node.name is not None:
                self._give(i, f"d_{node.name}")
        for name, i in g.gradient_leaves.items():
            # the gradient as update() is given it: called as value_and_grad calls it, unless
            # that is the name of another value (a gradient that is a param's own values)
            grad = g.grads.get(name)
            if grad in self.names and self.names[grad].text == f"d_{name}":
                self._alias(i, grad)
            else:
                self._give(i, f"d_{name}")
        for name, i in g.state.items():
            self._give(i, name)
        for i, node in enumerate(nodes):
            if node.name is not None and node.derived and not node.adjoint:
                self._give(i, node.name)
        for name, i in [*g.updates.items(), *g.state_updates.items(),
                        *g.buffer_updates.items()]:
            self._give(i, f"new_{name}")
        primary = set(self.names)
        written = {i for i in primary if not nodes[i].derived}  # names the file wrote
        roots = [*g.outputs.values(), *([] if g.loss is None else [g.loss])]
        self._forward = set(g.live(roots))
        for i in range(len(nodes)):
            if i not in self.names:
                self._give(i, self._derived(i, primary, written))

    def _derived(self, i: int, primary: set[int], written: set[int]) -> str:
        """A name for a value nothing named: after the one value it reads (`z_softmax`),
        else after the named statement it is part of (`h_pre`, `h_part`): one the file
        wrote, where there is one."""
        node = self.graph.nodes[i]
        word = function_word(node.expr) if node.op is Op.ELEMENTWISE else OP_WORDS[node.op]
        named_inputs = [j for j in dict.fromkeys(node.inputs) if j in primary]
        if word is not None and word != "part" and len(set(node.inputs)) == 1 \
                and named_inputs:
            return f"{self.names[named_inputs[0]].text}_{word}"
        owner = self._owner(i, written)
        if owner is None:
            owner = self._owner(i, primary)
        if owner is None:
            return f"value_{word or 'part'}"
        if self._is_pre(i, owner):
            return f"{self.names[owner].text}_pre"
        return f"{self.names[owner].text}_{word or 'part'}"

    def _owner(self, i: int, primary: set[int]) -> int | None:
        """The nearest named value that reads node i, directly or through unnamed ones: a
        forward value's owner is a forward value (a statement of the `.bp` file)."""
        frontier, seen = [i], {i}
        forward = i in self._forward
        while frontier:
            following = []
            for j in frontier:
                for user in sorted(set(self._users[j])):
                    if forward and user not in self._forward:
                        continue
                    if user in primary:
                        return user
                    if user not in seen:
                        seen.add(user)
                        following.append(user)
            frontier = following
        return None

    def _is_pre(self, i: int, owner: int) -> bool:
        """Is node i the one argument of the activation `owner` applies (owner = f(i))?"""
        node = self.graph.nodes[owner]
        if node.op is not Op.ELEMENTWISE or not isinstance(node.expr, sympy.Function):
            return False
        arguments = [a for a in node.expr.args if a.free_symbols]
        return (len(arguments) == 1 and arguments[0].is_Symbol
                and node.inputs[int(arguments[0].name[1:])] == i)
