"""The tensor IR: a small enum of ops and frozen nodes in a graph that is already in
topological order (a node only refers to nodes before it).

Elementwise work is a single op, ELEMENTWISE, whose node carries a SymPy expression over the
symbols `a0, a1, ...` standing for its inputs (broadcast to the node's shape); everything else
is structural and small. The builder hash-conses nodes, so building the same computation twice
gives the same node: common subexpressions are shared as the graph is built.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import Enum, auto

import sympy

from .shapes import Shape, format_shape


class Op(Enum):
    INPUT = auto()          # data given at call time: inputs and targets (name)
    PARAM = auto()          # a trained tensor (name)
    STATE = auto()          # optimizer state: momentum buffers, Adam moments, the step count
    ELEMENTWISE = auto()    # expr over a0..an, inputs broadcast to shape
    MATMUL = auto()         # NumPy matmul, any rank (batch dims broadcast)
    TRANSPOSE = auto()      # 2-D transpose
    PERMUTE = auto()        # numpy.transpose(x, axes): axes is the permutation
    RESHAPE = auto()        # same elements in the same (C) order, new shape
    SLICE = auto()          # x[...]: attrs holds (start, step) per input axis (a negative
                            # start counts from the end); axes are the indexed axes, dropped
    UNSLICE = auto()        # a SLICE's gradient: its input scattered into zeros of shape
    CONCAT = auto()         # the inputs joined along axes[0]
    SUM = auto()            # sum over axes
    PROD = auto()           # product over axes
    MAX = auto()            # max over axes
    ARGMAX = auto()         # index of the first maximum along axes[0], as a number (no
                            # gradient, like a comparison)
    TAKE = auto()           # numpy.take(table, index, axis=axes[0]): inputs (table, index)
    TAKE_GRAD = auto()      # TAKE's gradient: the adjoint (inputs[0]) added into zeros of
                            # the table's shape at the rows index (inputs[1]) names
    CONV = auto()           # torch's conv1d/conv2d of inputs (x, W); attrs = (stride,
                            # padding, dilation, groups), one int per spatial axis
    CONV_INPUT_GRAD = auto()   # CONV's gradient for x, of inputs (adjoint, W): a
                               # transposed convolution; attrs as CONV's
    CONV_WEIGHT_GRAD = auto()  # CONV's gradient for W, of inputs (x, adjoint): the
                               # correlation of x with the adjoint; attrs as CONV's
    POOL = auto()           # max or average pooling; attrs = (kind, kernel, stride, padding)
    POOL_GRAD = auto()      # POOL's gradient, of inputs (x, adjoint): to the first maximum
                            # of each window, or spread evenly over it; attrs as POOL's
    ONEHOT = auto()         # class indices -> rows of 0s with a 1 at the index; attrs =
                            # (classes,). Data only: checked at call time, no gradient
    ARGMAX_ONEHOT = auto()  # 1 at the first arg-max along axes, 0 elsewhere (max's gradient;
                            # made only by the backward pass, never differentiated)
    SOFTMAX = auto()        # along axes[0]
    LOG_SOFTMAX = auto()    # along axes[0], max-shifted
    LOGSUMEXP = auto()      # over axes, max-shifted
    SOFTMAX_XENT = auto()   # mean over rows of -sum(t * log_softmax(logits), axis=-1)
    GRAD = auto()           # a param's gradient as the optimizer reads it (name): what
                            # value_and_grad computed (step), or what the caller gave
                            # (apply_gradients)


LEAVES = frozenset({Op.INPUT, Op.PARAM, Op.STATE, Op.GRAD})


# A node's own value, as a derivative's cheaper form reads it (d sigmoid(z) = out * (1 - out)).
OUT = sympy.Symbol("out", real=True)


def operand(index: int) -> sympy.Symbol:
    """The symbol for an elementwise node's `index`-th input."""
    return sympy.Symbol(f"a{index}", real=True)


@dataclass(frozen=True)
class Node:
    op: Op
    inputs: tuple[int, ...]
    shape: Shape
    expr: sympy.Expr | None = None     # ELEMENTWISE only
    axes: tuple[int, ...] = ()         # reductions, softmax family
    keepdims: bool = False
    attrs: tuple = ()                  # other static facts of an op (a slice's starts)
    name: str | None = None            # a leaf's name, or the `.bp` name this value was given
    lines: tuple[int, ...] = field(default=(), compare=False)  # `.bp` lines it comes from
    # How `name` reads (graph/naming.py): the adjoint d_name, d loss / d name; or a name the
    # compiler derived from a `.bp` name (h_pre, h_sigmoid), which fusion may merge away.
    adjoint: bool = field(default=False, compare=False)
    derived: bool = field(default=False, compare=False)

    def key(self) -> tuple:
        """What makes two nodes the same computation (names and lines do not)."""
        leaf_name = self.name if self.op in LEAVES else None
        return (self.op, self.inputs, self.shape, self.expr, self.axes, self.keepdims,
                self.attrs, leaf_name)


@dataclass(frozen=True)
class Graph:
    """Nodes in topological order, and the roles some of them play.

    `updates` maps a param's name to the node computing its value after one step, and
    `state_updates` does the same for optimizer state (two tables: a param may be called
    like a state entry, `step`). The updates read each param's gradient from a leaf of its
    own (`gradient_leaves`, Op.GRAD), not from the node computing it in `grads`, so the
    same update serves `step` and `apply_gradients`.
    """

    nodes: tuple[Node, ...]
    inputs: dict[str, int] = field(default_factory=dict)
    params: dict[str, int] = field(default_factory=dict)
    state: dict[str, int] = field(default_factory=dict)
    outputs: dict[str, int] = field(default_factory=dict)
    loss: int | None = None
    grads: dict[str, int] = field(default_factory=dict)
    updates: dict[str, int] = field(default_factory=dict)
    state_updates: dict[str, int] = field(default_factory=dict)
    gradient_leaves: dict[str, int] = field(default_factory=dict)
    # Buffers are params without gradients (batch norm's running statistics); in training
    # mode `step` writes each buffer's `buffer_updates` node into it once the update is
    # done, never `apply_gradients`, which has no batch to compute them from.
    buffers: tuple[str, ...] = ()
    buffer_updates: dict[str, int] = field(default_factory=dict)
    # Named constants the expressions read as symbols (the optimizer's `LR`, `BETA1`, ...),
    # and their values: NumPy code names them, LLVM writes the numbers in.
    constants: dict[sympy.Symbol, sympy.Expr] = field(default_factory=dict)

    def roots(self) -> list[int]:
        ids = [*self.outputs.values(), *self.grads.values(), *self.updates.values(),
               *self.state_updates.values(), *self.buffer_updates.values()]
        if self.loss is not None:
            ids.append(self.loss)
        return ids

    @property
    def trained(self) -> dict[str, int]:
        """The params that have gradients: all but the buffers."""
        return {n: i for n, i in self.params.items() if n not in self.buffers}

    def leaf_updates(self) -> list[tuple[int, int]]:
        """(update, leaf) node pairs: each param's and state entry's new value and itself."""
        return ([(node, self.params[n]) for n, node in self.updates.items()]
                + [(node, self.state[n]) for n, node in self.state_updates.items()])

    def users(self) -> dict[int, list[int]]:
        """For each node, the nodes that read it (a node reading twice counts twice)."""
        result: dict[int, list[int]] = {i: [] for i in range(len(self.nodes))}
        for i, node in enumerate(self.nodes):
            for j in node.inputs:
                result[j].append(i)
        return result

    def live(self, roots: Iterable[int]) -> list[int]:
        """The ids `roots` depend on, in topological order."""
        seen: set[int] = set()
        stack = list(roots)
        while stack:
            i = stack.pop()
            if i not in seen:
                seen.add(i)
                stack.extend(self.nodes[i].inputs)
        return sorted(seen)

    def with_roles(self, remap: Mapping[int, int], nodes: tuple[Node, ...]) -> Graph:
        """This graph's roles moved through `remap` onto `nodes`."""
        move = lambda ids: {k: remap[v] for k, v in ids.items()}  # noqa: E731
        return Graph(
            nodes=nodes,
            inputs=move(self.inputs), params=move(self.params), state=move(self.state),
            outputs=move(self.outputs),
            loss=None if self.loss is None else remap[self.loss],
            grads=move(self.grads), updates=move(self.updates),
            state_updates=move(self.state_updates),
            gradient_leaves=move(self.gradient_leaves), constants=dict(self.constants),
            buffers=self.buffers, buffer_updates=move(self.buffer_updates),
        )

    def pretty(self) -> str:
        """One line per node, for debugging (`BPCOMPILE_DEBUG=1` prints each stage)."""
        roles: dict[int, list[str]] = {}
        for kind in ("inputs", "params", "state", "outputs", "grads", "updates",
                     "state_updates", "gradient_leaves", "buffer_updates"):
            for name, i in getattr(self, kind).items():
                roles.setdefault(i, []).append(f"{kind[:-1] if kind != 'state' else kind}:{name}")
        if self.loss is not None:
            roles.setdefault(self.loss, []).append("loss")
        lines = []
        for i, n in enumerate(self.nodes):
            detail = str(n.expr) if n.expr is not None else ""
            if n.axes:
                detail += f" axes={n.axes}" + (" keepdims" if n.keepdims else "")
            if n.attrs:
                detail += f" attrs={n.attrs}"
            ins = ", ".join(f"%{j}" for j in n.inputs)
            tag = f"  [{', '.join(roles[i])}]" if i in roles else ""
            label = f" {'d_' if n.adjoint else ''}{n.name}" if n.name else ""
            lines.append(
                f"%{i} = {n.op.name.lower()}({ins}) {detail} : {format_shape(n.shape)}{label}{tag}"
            )
        return "\n".join(lines)


class GraphBuilder:
    """Appends nodes, returning the existing id when the same computation is added again."""

    def __init__(self) -> None:
        self.nodes: list[Node] = []
        self._ids: dict[tuple, int] = {}

    def add(self, node: Node) -> int:
        key = node.key()
        existing = self._ids.get(key)
        if existing is not None:
            self.note(existing, node.name, node.lines, node.adjoint, node.derived)
            return existing
        assert all(0 <= i < len(self.nodes) for i in node.inputs), "inputs must exist"
        self.nodes.append(node)
        self._ids[key] = len(self.nodes) - 1
        return len(self.nodes) - 1

    def note(self, i: int, name: str | None, lines: tuple[int, ...], adjoint: bool = False,
             derived: bool = False) -> None:
        """Record that node `i` is also known as `name` (the first name given is kept, as a
        name the `.bp` file wrote is kept over a derived one) and also comes from `lines`."""
        old = self.nodes[i]
        lines = tuple(sorted(set(old.lines) | set(lines)))
        named = dict(name=old.name, adjoint=old.adjoint, derived=old.derived)
        if name is not None and (old.name is None or old.derived and not derived):
            named = dict(name=name, adjoint=adjoint, derived=derived)
        if lines != old.lines or named["name"] != old.name:
            self.nodes[i] = replace(old, lines=lines, **named)

    @classmethod
    def extending(cls, graph: Graph) -> GraphBuilder:
        """A builder that starts with `graph`'s nodes, to add more after them."""
        builder = cls()
        builder.nodes = list(graph.nodes)
        builder._ids = {node.key(): i for i, node in enumerate(graph.nodes)}
        return builder

    def elementwise(
        self, expr: sympy.Expr, inputs: Iterable[int], shape: Shape,
        name: str | None = None, lines: tuple[int, ...] = (), like: Node | None = None,
        derived: bool = False,
    ) -> int:
        """An ELEMENTWISE node in canonical form (see `canonical`); `a0` alone, of the right
        shape, is its input itself. `like`: a node whose name (and how it reads) to give."""
        adjoint = False
        if like is not None:
            name, adjoint, derived = like.name, like.adjoint, like.derived
        expr, order = canonical(expr, inputs)
        if expr == operand(0) and self.nodes[order[0]].shape == shape:
            self.note(order[0], name, lines, adjoint, derived)
            return order[0]
        return self.add(Node(Op.ELEMENTWISE, order, shape, expr=expr, name=name, lines=lines,
                             adjoint=adjoint, derived=derived))

    def graph(self, template: Graph, remap: Mapping[int, int]) -> Graph:
        return template.with_roles(remap, tuple(self.nodes))


def canonical(expr: sympy.Expr, inputs: Iterable[int]) -> tuple[sympy.Expr, tuple[int, ...]]:
    """`expr` over `inputs` with unread inputs dropped, an input read twice given one
    symbol, and symbols numbered a0, a1, ... in order: equal computations look equal."""
    used = expr.free_symbols
    order: list[int] = []
    renaming: dict[sympy.Symbol, sympy.Symbol] = {}
    for k, i in enumerate(inputs):
        symbol = operand(k)
        if symbol not in used:
            continue
        if i not in order:
            order.append(i)
        renaming[symbol] = _temp(order.index(i))
    expr = expr.xreplace(renaming)
    return expr.xreplace({_temp(k): operand(k) for k in range(len(order))}), tuple(order)


def _temp(k: int) -> sympy.Symbol:
    """Distinct stand-ins for renaming a0, a1, ... without clashes midway."""
    return sympy.Symbol(f"tmp:{k}", real=True)


Visit = Callable[[GraphBuilder, Node, tuple[int, ...]], int]


def rebuild(graph: Graph, visit: Visit | None = None, roots: Iterable[int] | None = None) -> Graph:
    """Copy the live part of `graph` through a fresh builder.

    `visit(builder, node, new_inputs)` returns the new id for `node` (default: the node with
    its inputs remapped). Hash-consing in the builder merges what the visit makes equal, and
    only nodes reachable from `roots` (default: the graph's roles) are kept: so `rebuild` is
    also CSE and dead-code elimination.
    """
    builder = GraphBuilder()
    remap: dict[int, int] = {}
    keep = graph.live(graph.roots() if roots is None else roots)
    keep = sorted(set(keep) | set(graph.inputs.values()) | set(graph.params.values())
                  | set(graph.state.values()))
    for i in keep:
        node = graph.nodes[i]
        new_inputs = tuple(remap[j] for j in node.inputs)
        if visit is None:
            remap[i] = copy_node(builder, node, new_inputs)
        else:
            remap[i] = visit(builder, node, new_inputs)
    return builder.graph(graph, remap)


def copy_node(builder: GraphBuilder, node: Node, inputs: tuple[int, ...]) -> int:
    """`node` with new inputs, re-canonicalized if elementwise."""
    if node.op is Op.ELEMENTWISE:
        assert node.expr is not None
        return builder.elementwise(node.expr, inputs, node.shape, lines=node.lines, like=node)
    return builder.add(replace(node, inputs=inputs))


def inline(
    expr: sympy.Expr, inputs: tuple[int, ...], k: int,
    inner: sympy.Expr, inner_inputs: tuple[int, ...],
) -> tuple[sympy.Expr, tuple[int, ...]]:
    """`expr` with its `k`-th operand replaced by the elementwise expression `inner` (over
    `inner_inputs`), in canonical form."""
    shift = len(inputs)
    moved = inner.xreplace({operand(m): operand(shift + m) for m in range(len(inner_inputs))})
    return canonical(expr.xreplace({operand(k): moved}), inputs + inner_inputs)
