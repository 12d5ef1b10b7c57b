"""Learning-rate schedules: the lr of each step as a SymPy expression of the step count k
(the updates taken before this one), compiled into `step` like the rest of the optimizer.

Each is `torch.optim.lr_scheduler`'s, stepped once per optimizer step:

- `step(every, gamma)`: StepLR(step_size=every, gamma): lr * gamma ** floor(k / every);
- `cosine(steps, min_lr=0)`: CosineAnnealingLR(T_max=steps, eta_min=min_lr), whose closed
  form is min_lr + (lr - min_lr) * (1 + cos(pi * k / steps)) / 2 (past `steps` it goes on
  along the cosine, as torch's does);
- `warmup(steps)`: LinearLR(start_factor=1/steps, total_iters=steps - 1): lr * (k + 1) /
  steps for the first `steps` steps, then lr;
- `[warmup(W), cosine(...)]` or `[warmup(W), step(...)]`: SequentialLR with the milestone W:
  the warmup, then the other schedule counting its steps from 0.
"""

from __future__ import annotations

from collections.abc import Callable

import sympy

from ..graph.functions import Floor

Schedule = tuple[tuple[str, tuple[float, ...]], ...]  # (kind, numbers) in the order given

# kind -> (its arguments with defaults (None: required), lr at step k from lr and them)
Rule = Callable[[sympy.Expr, sympy.Expr, tuple[sympy.Rational, ...]], sympy.Expr]


def _step(lr: sympy.Expr, k: sympy.Expr, args: tuple[sympy.Rational, ...]) -> sympy.Expr:
    every, gamma = args
    # k is a whole number: half a step up keeps floor off a boundary that SymPy's
    # k / every - 3 / every (after a warmup) would meet a rounding error below
    return lr * gamma ** Floor((k + sympy.Rational(1, 2)) / every)


def _cosine(lr: sympy.Expr, k: sympy.Expr, args: tuple[sympy.Rational, ...]) -> sympy.Expr:
    steps, least = args
    return least + (lr - least) * (1 + sympy.cos(sympy.pi * k / steps)) / 2


def _warmup(lr: sympy.Expr, k: sympy.Expr, args: tuple[sympy.Rational, ...]) -> sympy.Expr:
    (steps,) = args
    return sympy.Piecewise((lr * (k + 1) / steps, k < steps - 1), (lr, True))


SCHEDULES: dict[str, tuple[dict[str, float | None], Rule]] = {
    "step": ({"every": None, "gamma": None}, _step),
    "cosine": ({"steps": None, "min_lr": 0.0}, _cosine),
    "warmup": ({"steps": None}, _warmup),
}


def scheduled_lr(schedule: Schedule, lr: sympy.Expr, k: sympy.Expr) -> sympy.Expr:
    """The lr of the update after `k` updates: `lr` itself without a schedule."""
    if not schedule:
        return lr
    exact = [(kind, tuple(sympy.Rational(repr(float(v))) for v in args))
             for kind, args in schedule]
    (kind, args), *rest = exact
    if kind != "warmup" or not rest:
        return SCHEDULES[kind][1](lr, k, args)
    (steps,) = args
    (after, after_args), = rest
    return sympy.Piecewise((_warmup(lr, k, args), k < steps),
                           (SCHEDULES[after][1](lr, k - steps, after_args), True))

