"""Optimizers as graph fragments: `optimize sgd(...)` or `adam(...)` becomes elementwise nodes
that read params, gradients and state and compute their values after one step, exactly as
`torch.optim.SGD`, `torch.optim.Adam`/`AdamW` and `torch.nn.utils.clip_grad_norm_` do.

State is named after the param it belongs to: `W1.momentum` (SGD), `W1.m` and `W1.v` (Adam,
first and second moments) and `step` (Adam's step count).

Options are symbols in the update's expressions (`LR`, `BETA1`, ...), so the generated NumPy
module names them (`W1 -= LR * d_W1`); `hyperparameters` gives their values, which the LLVM
backend writes in as numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import sympy

from ..graph.ir import Graph, GraphBuilder, Node, Op, operand
from ..graph.network import OptimizerConfig
from .schedules import scheduled_lr

# clip_grad_norm_ divides by (norm + 1e-6) so that a zero gradient stays finite.
CLIP_EPS = sympy.Rational(1, 10**6)


def exact(value: float) -> sympy.Rational:
    """An option as the decimal it was written as, so 1 - 0.9 prints as 0.1."""
    return sympy.Rational(repr(float(value)))


def hyper(option: str) -> sympy.Symbol:
    """The symbol standing for an optimizer option: lr -> LR."""
    return sympy.Symbol(f"hyper:{option.upper()}", real=True)


def is_hyper(symbol: sympy.Basic) -> bool:
    return symbol.is_Symbol and symbol.name.startswith("hyper:")


def hyperparameters(config: OptimizerConfig) -> dict[sympy.Symbol, sympy.Rational]:
    """Each numeric option's symbol and its value, exactly as written."""
    return {hyper(k): exact(v) for k, v in config.options.items() if not isinstance(v, bool)}


@dataclass(frozen=True)
class StateEntry:
    """One array of optimizer state: `W1.m` belongs to param W1; Adam's `step` to none."""

    name: str
    param: str | None


def state_entries(config: OptimizerConfig, params: list[str]) -> list[StateEntry]:
    """The optimizer state a network keeps, in a fixed order."""
    if config.kind == "sgd":
        # a schedule reads the step count; plain SGD keeps none
        counted = [StateEntry("step", None)] if config.schedule else []
        if config.options["momentum"] > 0:
            return [*counted, *(StateEntry(f"{p}.momentum", p) for p in params)]
        return counted
    return [StateEntry("step", None),
            *(StateEntry(f"{p}.{k}", p) for p in params for k in ("m", "v"))]


def state_shapes(config: OptimizerConfig, shapes: dict[str, tuple]) -> dict[str, tuple]:
    """Each state entry's shape: its param's, or () for the step count."""
    return {e.name: () if e.param is None else shapes[e.param]
            for e in state_entries(config, list(shapes))}


def add_updates(graph: Graph, config: OptimizerConfig, shapes: dict[str, tuple]) -> Graph:
    """`graph` (with grads) plus state leaves and the update of every param and state."""
    builder = GraphBuilder.extending(graph)
    lines = (config.line,) if config.line else ()
    state = {
        name: builder.add(Node(Op.STATE, (), shape, name=name, lines=lines))
        for name, shape in state_shapes(config, shapes).items()
    }
    # The update reads gradients from leaves of their own: step binds them to the gradients
    # it computed, apply_gradients to the ones it is given.
    gradient_leaves = {
        name: builder.add(Node(Op.GRAD, (), shapes[name], name=name, lines=lines))
        for name in graph.grads
    }
    grads = dict(gradient_leaves)
    if config.options["clip_norm"]:
        grads = _clip(builder, grads, lines)
    update = _sgd if config.kind == "sgd" else _adam
    rate = _rate(builder, config, state, lines)
    updates, state_updates = update(builder, graph, config, grads, state, rate, lines)
    if config.schedule and config.kind == "sgd":
        state_updates["step"] = builder.elementwise(operand(0) + 1, (state["step"],), (),
                                                    lines=lines)
    return replace(graph, nodes=tuple(builder.nodes), state=state, updates=updates,
                   state_updates=state_updates, gradient_leaves=gradient_leaves,
                   constants=hyperparameters(config))


def _clip(builder: GraphBuilder, grads: dict[str, int],
          lines: tuple[int, ...]) -> dict[str, int]:
    """clip_grad_norm_: scale every gradient by min(1, max_norm / (global norm + 1e-6))."""
    squares = []
    for g in grads.values():
        shape = builder.nodes[g].shape
        square = builder.elementwise(operand(0) ** 2, (g,), shape, lines=lines)
        squares.append(builder.add(Node(Op.SUM, (square,), (), axes=tuple(range(len(shape))),
                                        lines=lines)))
    total = sympy.sqrt(sympy.Add(*(operand(k) for k in range(len(squares)))))
    norm = builder.elementwise(total, squares, (), name="grad_norm", lines=lines)
    coef = builder.elementwise(
        sympy.Min(1, hyper("clip_norm") / (operand(0) + CLIP_EPS)), (norm,), (),
        name="clip_coef", lines=lines,
    )
    return {
        name: builder.elementwise(operand(0) * operand(1), (g, coef), builder.nodes[g].shape,
                                  lines=lines)
        for name, g in grads.items()
    }


Updates = tuple[dict[str, int], dict[str, int]]  # params' new values, state's new values


def _rate(builder: GraphBuilder, config: OptimizerConfig, state: dict[str, int],
          lines: tuple[int, ...]) -> int | None:
    """The scheduled lr of this update, from the updates counted before it (`lr_now`); None
    without a schedule, where the updates read LR itself."""
    if not config.schedule:
        return None
    return builder.elementwise(scheduled_lr(config.schedule, hyper("lr"), operand(0)),
                               (state["step"],), (), name="lr_now", lines=lines)


def _lr(rate: int | None, inputs: list[int]) -> sympy.Expr:
    """The lr an update reads: LR, or the scheduled value as its next operand."""
    if rate is None:
        return hyper("lr")
    inputs.append(rate)
    return operand(len(inputs) - 1)


def _sgd(builder: GraphBuilder, graph: Graph, config: OptimizerConfig, grads: dict[str, int],
         state: dict[str, int], rate: int | None, lines: tuple[int, ...]) -> Updates:
    o = config.options
    momentum, decay = (hyper(k) for k in ("momentum", "weight_decay"))
    p, g, buf = operand(0), operand(1), operand(2)
    updates: dict[str, int] = {}
    state_updates: dict[str, int] = {}
    for name, param in graph.trained.items():
        shape = builder.nodes[param].shape
        step = g + decay * p if o["weight_decay"] else g
        inputs = [param, grads[name]]
        if o["momentum"]:
            buffer = state[f"{name}.momentum"]
            # torch starts the buffer as the first gradient; momentum * 0 + g is that exactly.
            new_buffer = builder.elementwise(momentum * buf + step, [param, grads[name], buffer],
                                             shape, lines=lines)
            state_updates[f"{name}.momentum"] = new_buffer
            step = step + momentum * buf if o["nesterov"] else buf
            inputs.append(new_buffer)
        lr = _lr(rate, inputs)
        updates[name] = builder.elementwise(p - lr * step, inputs, shape, lines=lines)
    return updates, state_updates


def _adam(builder: GraphBuilder, graph: Graph, config: OptimizerConfig, grads: dict[str, int],
          state: dict[str, int], rate: int | None, lines: tuple[int, ...]) -> Updates:
    o = config.options
    beta1, beta2, eps, decay = (hyper(k) for k in ("beta1", "beta2", "eps", "weight_decay"))
    step = builder.elementwise(operand(0) + 1, (state["step"],), (), lines=lines)
    updates: dict[str, int] = {}
    state_updates: dict[str, int] = {"step": step}
    # Bias corrections, once per step for all params: lr / (1 - b1^t) and sqrt(1 - b2^t).
    sized = [step]
    lr = _lr(rate, sized)
    step_size = builder.elementwise(lr / (1 - beta1 ** operand(0)), sized, (),
                                    name="step_size", lines=lines)
    correction = builder.elementwise(sympy.sqrt(1 - beta2 ** operand(0)), (step,), (),
                                     name="bias_correction2", lines=lines)
    old, grad = operand(0), operand(1)
    p, size, m, v, corr = (operand(k) for k in range(5))
    # Weight decay in Adam is decoupled, as in AdamW: the param shrinks before the step,
    # by the lr of this step (torch multiplies by the group's lr, which a scheduler sets).
    decayed = [] if rate is None else [rate]
    start = p * (1 - (hyper("lr") if rate is None else operand(5)) * decay) \
        if o["weight_decay"] else p
    for name, param in graph.trained.items():
        shape = builder.nodes[param].shape
        new_m = builder.elementwise(beta1 * old + (1 - beta1) * grad,
                                    (state[f"{name}.m"], grads[name]), shape, lines=lines)
        new_v = builder.elementwise(beta2 * old + (1 - beta2) * grad**2,
                                    (state[f"{name}.v"], grads[name]), shape, lines=lines)
        state_updates[f"{name}.m"], state_updates[f"{name}.v"] = new_m, new_v
        updates[name] = builder.elementwise(
            start - size * m / (sympy.sqrt(v) / corr + eps),
            (param, step_size, new_m, new_v, correction, *decayed), shape, lines=lines,
        )
    return updates, state_updates
