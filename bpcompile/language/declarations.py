"""Declarations' options: how a param starts (`param W[2, 3] = xavier`) and how the network
trains (`optimize adam(lr=0.01)`), read and checked against the tables below."""

from __future__ import annotations

from collections.abc import Callable

from ..differentiate.schedules import SCHEDULES, Schedule
from ..errors import BPTypeError, did_you_mean
from ..graph.network import Init, OptimizerConfig
from ..graph.shapes import Shape
from . import syntax as S
from .arguments import bind, bool_option, number_option
from .context import Lowering
from .values import Scalar

_NAMED = ("zeros", "ones", "xavier", "he")
_CALLED = {"normal": ("std",), "uniform": ("low", "high")}


def parse_init(lw: Lowering, expr: S.Expr | None, shape: Shape) -> Init:
    """The Init an `= ...` clause asks for; xavier for 2-D and larger, zeros otherwise."""
    if expr is None:
        return Init("xavier") if len(shape) >= 2 else Init("zeros")
    if isinstance(expr, S.Name) and expr.id in _NAMED:
        return Init(expr.id)
    if isinstance(expr, S.Call) and expr.func in _CALLED:
        names = _CALLED[expr.func]
        bound = bind(lw, expr, names)
        args = tuple(float(number_option(lw, bound[n], f"{expr.func}'s {n}")) for n in names)
        if expr.func == "normal" and args[0] < 0:
            raise lw.error(BPTypeError, "normal's std must not be negative", expr.pos)
        if expr.func == "uniform" and args[0] > args[1]:
            raise lw.error(BPTypeError, "uniform(low, high) needs low <= high", expr.pos)
        return Init(expr.func, args)
    if isinstance(expr, S.Number | S.Neg) or (isinstance(expr, S.Name) and expr.id in lw.consts):
        value = lw.expression(expr)
        if isinstance(value, Scalar) and not value.expr.free_symbols:
            return Init("constant", (float(value.expr),))
    raise lw.error(
        BPTypeError,
        "an initializer is zeros, ones, a number, normal(std), uniform(low, high), "
        "xavier or he",
        expr.pos,
    )



# option -> default (None: required); the checks each option's value must pass.
OPTIONS: dict[str, dict[str, float | bool | None]] = {
    "sgd": {"lr": None, "momentum": 0.0, "nesterov": False, "weight_decay": 0.0,
            "clip_norm": 0.0},
    "adam": {"lr": 0.001, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.0,
             "clip_norm": 0.0},
}
CHECKS: dict[str, tuple[str, Callable[[float], bool]]] = {
    "lr": ("must be positive", lambda v: v > 0),
    "momentum": ("must be at least 0", lambda v: v >= 0),
    "weight_decay": ("must be at least 0", lambda v: v >= 0),
    "beta1": ("must be in [0, 1)", lambda v: 0 <= v < 1),
    "beta2": ("must be in [0, 1)", lambda v: 0 <= v < 1),
    "eps": ("must be at least 0", lambda v: v >= 0),
    "clip_norm": ("must be positive (leave it out to not clip)", lambda v: v >= 0),
}
def default_optimizer() -> OptimizerConfig:
    options = dict(OPTIONS["sgd"], lr=0.01)
    return OptimizerConfig("sgd", options, 0, "sgd(lr=0.01) (the default)")


def optimizer_config(lw: Lowering, stmt: S.OptimizeStmt) -> OptimizerConfig:
    """Read and check `optimize sgd(...)` / `adam(...)`."""
    call = stmt.call
    if call.func not in OPTIONS:
        raise lw.error(
            BPTypeError, f"unknown optimizer '{call.func}'; use sgd or adam", call.pos
        )
    defaults = OPTIONS[call.func]
    if call.args:
        raise lw.error(
            BPTypeError, f"give {call.func}'s options by name, as in {call.func}(lr=0.1)",
            call.args[0].pos,
        )
    given = {k: v for k, v in defaults.items() if v is not None}
    bound = bind(lw, call, (*defaults, "schedule"), {**given, "schedule": None})
    written = bound.pop("schedule")
    schedule = () if written is None else parse_schedule(lw, written)
    options: dict[str, float | bool] = {}
    for name, value in bound.items():
        where = getattr(value, "pos", call.pos)
        if name == "nesterov":
            options[name] = bool_option(lw, value, "nesterov")
            continue
        number = float(number_option(lw, value, f"{call.func}'s {name}"))
        message, ok = CHECKS[name]
        if not ok(number) or (name == "clip_norm" and hasattr(value, "pos") and number == 0):
            raise lw.error(BPTypeError, f"{name} {message}, not {number:g}", where)
        options[name] = number
    if options.get("nesterov") and not options["momentum"] > 0:
        raise lw.error(BPTypeError, "nesterov=true needs a momentum above 0", call.pos)
    return OptimizerConfig(call.func, options, stmt.pos.line, " ".join(call.text.split()),
                           schedule)


SCHEDULE_FORMS = ("step(every, gamma), cosine(steps, min_lr=0), warmup(steps), or "
                  "[warmup(steps), cosine(...)] / [warmup(steps), step(...)]")


def parse_schedule(lw: Lowering, expr: object) -> Schedule:
    """`schedule=cosine(1000)`, or a warmup then another: `[warmup(100), step(500, 0.5)]`."""
    calls = list(expr.items) if isinstance(expr, S.List) else [expr]
    where = getattr(expr, "pos", None)
    if not calls or not all(isinstance(c, S.Call) for c in calls) or len(calls) > 2 or \
            (len(calls) == 2 and (calls[0].func != "warmup" or calls[1].func == "warmup")):
        raise lw.error(BPTypeError, f"a schedule is {SCHEDULE_FORMS}", where)
    schedule = []
    for c in calls:
        if c.func not in SCHEDULES:
            raise lw.error(BPTypeError, f"unknown schedule '{c.func}'"
                           f"{did_you_mean(c.func, SCHEDULES)}: a schedule is "
                           f"{SCHEDULE_FORMS}", c.pos)
        defaults = SCHEDULES[c.func][0]
        bound = bind(lw, c, tuple(defaults), {k: v for k, v in defaults.items()
                                              if v is not None})
        numbers = []
        for name, value in bound.items():
            number = float(number_option(lw, value, f"{c.func}'s {name}"))
            counts = name in ("every", "steps")
            if (counts and (number < 1 or number != int(number))) or \
                    (name == "gamma" and not number > 0) or (name == "min_lr" and number < 0):
                rule = "a whole number of steps, at least 1" if counts else \
                    "positive" if name == "gamma" else "at least 0"
                raise lw.error(BPTypeError, f"{c.func}'s {name} must be {rule}, not "
                               f"{number:g}", getattr(value, "pos", c.pos))
            numbers.append(number)
        schedule.append((c.func, tuple(numbers)))
    return tuple(schedule)
