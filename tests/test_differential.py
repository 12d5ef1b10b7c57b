"""Differential tests on random valid networks (drawn by `bp_strategies.networks`).

For each network, oracles in turn:
- it compiles on both backends, and both describe it alike (params, inputs, outputs, state);
- `init` gives the same arrays on both;
- NumPy written from SPEC (the generator's meaning of every expression) computes the same
  forward outputs and loss as the compiled network;
- the other backend: forward, loss and value_and_grad agree to a relative 1e-10 per array
  in float64, at a random point and at that point with some params exactly 0 (kinks and
  ties met exactly), and so do a few optimizer `step`s (losses, params, state after each);
- PyTorch's update rules (SGD, Adam/AdamW, clip_grad_norm_) written out in NumPy, applied to
  the numpy backend's gradient, for every step the numpy backend takes;
- central finite differences in float64, written here, for the gradient at the random point:
  entry by entry (a sample of large params) and along one random direction through all;
- a second batch size with data in views that are not contiguous, after which the first
  calls give the same results again, and the arrays they returned are unchanged;
- for a network with dropout or batchnorm (see bp_strategies.MODE_FEATURES), all of the
  above in training mode as well: the reference draws the masks of the seed and step count
  in the state with SPEC's generator, and writes the running statistics a step must write.

Examples are derandomized so CI is reproducible. A longer run:
    BPCOMPILE_FUZZ_EXAMPLES=2000 BPCOMPILE_FUZZ_SEED=1 python -m pytest tests/test_differential.py
(see docs/FUZZING.md). A failure prints the program, its batch sizes and data seed.
"""

from __future__ import annotations

import math
import os
import re
import traceback

import numpy as np
import pytest
from bp_strategies import Case, Mode, networks
from hypothesis import HealthCheck, given, note, seed, settings

import bpcompile as bpc
from bpcompile.runtime.randomness import RNG

BACKENDS = ("numpy", "llvm")
EXAMPLES = int(os.environ.get("BPCOMPILE_FUZZ_EXAMPLES", "80"))  # CI; long runs set more
FUZZ_SEED = os.environ.get("BPCOMPILE_FUZZ_SEED")

SETTINGS = settings(
    max_examples=EXAMPLES, deadline=None, database=None, derandomize=FUZZ_SEED is None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.large_base_example],
)

BACKEND_RTOL = 1e-10   # relative to the array's own largest entry
# An array whose entries all lie far below the scale of the computation is compared against
# that scale instead: TINY times the largest value the same call returned, or 1. So such an
# array may differ by 1e-14 of that scale. Two cases need it: a gradient that cancels to
# rounding noise (d/db of cross_entropy(z - b, t) for a b broadcast along rows that sum to 1),
# and one through a saturated tanh or sigmoid, whose derivative 1 - y**2 (read off the
# output, by design) carries a few ulps of 1 from each backend's own tanh.
TINY = 1e-4
REFERENCE_RTOL = 1e-9  # NumPy from SPEC against the compiled forward and loss

# Finite differences: a fourth-order stencil first; where a kink (relu, abs, max, a
# comparison) lies within the step, smaller second-order steps. A wrong derivative is wrong
# at every step; a kink crossed is not crossed by the smaller ones.
FD_STEPS = ((1e-4, 4), (1e-6, 2), (1e-8, 2))
FD_RTOL = 1e-6
FD_ATOL = 1e-8         # times the scale of the loss and gradient
FD_MAX_ENTRIES = 12    # entries checked per param (a random sample of larger ones)
STEPS = 3
# The rounding noise a step's own gradient may carry, relative to the largest gradient or
# loss: about 500 ulps, a sum of a few dozen rounded terms. Adam turns it into a move of up
# to lr / eps times itself where a gradient is noise alone (seed 2: a log_softmax of equal
# entries, whose gradient is exactly 0; one backend found 7e-14 in a fused step).
STEP_GRADIENT_NOISE = 1e-13


# ----------------------------------------------------------------------- comparisons


def close(a, b, scale: float, rtol: float, atol: float = 0.0) -> tuple[bool, float]:
    """max|a - b| <= rtol * max(max|b|, TINY * scale) + atol, with NaNs and infinities in
    the same places; also gives the relative difference."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        return False, math.inf
    finite = np.isfinite(b)
    if not np.array_equal(finite, np.isfinite(a)) or not np.array_equal(a[~finite], b[~finite],
                                                                       equal_nan=True):
        return False, math.inf
    if not finite.any():
        return True, 0.0
    error = float(np.max(np.abs(a[finite] - b[finite])))
    size = max(float(np.max(np.abs(b[finite]))), TINY * max(scale, 1.0))
    return error <= rtol * size + atol, error / size


def scale_of(*values) -> float:
    """The largest finite magnitude among the arrays and numbers a call returned."""
    found = [0.0]
    for value in values:
        arrays = value.values() if isinstance(value, dict) else [value]
        for array in arrays:
            array = np.asarray(array, dtype=np.float64)
            finite = array[np.isfinite(array)]
            if finite.size:
                found.append(float(np.max(np.abs(finite))))
    return max(found)


def assert_close(a, b, what: str, scale: float, rtol: float = BACKEND_RTOL,
                 atol: float = 0.0) -> None:
    ok, error = close(a, b, scale, rtol, atol)
    assert ok, (f"{what}: relative difference {error:.3g} (allowed {rtol:g}"
                f"{f' + {atol:.3g}' if atol else ''})\n{a!r}\n{b!r}")


def assert_all_close(a: dict, b: dict, what: str, rtol: float = BACKEND_RTOL,
                     atol: float = 0.0) -> None:
    assert set(a) == set(b), f"{what}: names {sorted(a)} != {sorted(b)}"
    scale = scale_of(a, b)
    for name in b:
        assert np.shape(a[name]) == np.shape(b[name]), f"{what} {name}: shapes differ"
        assert_close(a[name], b[name], f"{what} {name}", scale, rtol, atol)


def data_for(case: Case, names) -> dict[str, np.ndarray]:
    return {n: case.data[n] for n in names}


# ------------------------------------------------------------------ optimizer reference


OPTIMIZERS = {
    "sgd": {"lr": 0.01, "momentum": 0.0, "nesterov": False, "weight_decay": 0.0,
            "clip_norm": 0.0},
    "adam": {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.0,
             "clip_norm": 0.0},
}


def optimizer_options(text: str) -> tuple[str, dict]:
    """The kind and every option of an `optimize` call's text ('' is the default sgd)."""
    kind = text.split("(")[0] or "sgd"
    options = dict(OPTIMIZERS[kind])
    for key, value in re.findall(r"(\w+)=([-+.\w]+)", text):
        options[key] = value == "true" if key == "nesterov" else float(value)
    return kind, options


def reference_step(text: str, p: dict, s: dict, g: dict) -> tuple[dict, dict]:
    """New params and state after one step of torch.optim.SGD / Adam / AdamW (as SPEC has
    them), with torch.nn.utils.clip_grad_norm_ first when clip_norm is given."""
    kind, o = optimizer_options(text)
    p = {n: v.copy() for n, v in p.items()}
    s = {n: np.array(v, copy=True) for n, v in s.items()}
    if o["clip_norm"]:
        total = math.sqrt(sum(float(np.sum(x**2)) for x in g.values()))
        coef = min(1.0, o["clip_norm"] / (total + 1e-6))
        g = {n: x * coef for n, x in g.items()}
    if kind == "sgd":
        for n in p:
            d = g[n] + o["weight_decay"] * p[n] if o["weight_decay"] else g[n]
            if o["momentum"]:
                s[f"{n}.momentum"] = o["momentum"] * s[f"{n}.momentum"] + d
                d = d + o["momentum"] * s[f"{n}.momentum"] if o["nesterov"] \
                    else s[f"{n}.momentum"]
            p[n] = p[n] - o["lr"] * d
        return p, s
    s["step"] = s["step"] + 1
    t = float(s["step"])
    for n in p:
        if o["weight_decay"]:
            p[n] = p[n] * (1 - o["lr"] * o["weight_decay"])
        s[f"{n}.m"] = o["beta1"] * s[f"{n}.m"] + (1 - o["beta1"]) * g[n]
        s[f"{n}.v"] = o["beta2"] * s[f"{n}.v"] + (1 - o["beta2"]) * g[n] ** 2
        denominator = np.sqrt(s[f"{n}.v"]) / math.sqrt(1 - o["beta2"] ** t) + o["eps"]
        p[n] = p[n] - o["lr"] / (1 - o["beta1"] ** t) * s[f"{n}.m"] / denominator
    return p, s


def expected_step(case: Case, p: dict, s: dict, grads: dict) -> tuple[dict, dict, dict]:
    """A training step's params and state by PyTorch's rules, and the running statistics
    it writes (torch.nn.BatchNorm's update, from the batch the reference normalizes)."""
    trained = {n: v for n, v in p.items() if n in case.params}
    optimizer_state = {n: v for n, v in s.items() if n != RNG}
    new_params, new_state = reference_step(case.optimizer, trained, optimizer_state, grads)
    if RNG in s:   # the step counts itself
        new_state[RNG] = s[RNG] + np.array([0, 1], dtype=np.uint64)
    buffers = {}
    if case.buffers:
        mode = training_mode(s)
        case.evaluate(p, case.data, mode)
        buffers = case.buffers_after_step(p, mode.stats)
    return new_params, new_state, buffers


def step_sensitivity(text: str) -> float:
    """How far a step moves a param per unit change of its gradient, at most. Adam divides
    by sqrt(v) + eps: a gradient that cancels to rounding noise (far below eps) moves its
    param by about lr / eps times that noise, differently on each backend."""
    kind, o = optimizer_options(text)
    if kind == "adam":
        return o["lr"] / o["eps"]
    return o["lr"] * (1.0 + o["weight_decay"]) / (1.0 - o["momentum"])


# ---------------------------------------------------------------------- the checks


def compile_all(case: Case, backends) -> dict[str, bpc.CompiledNet]:
    nets = {}
    for backend in backends:
        try:
            nets[backend] = bpc.compile(case.source, backend=backend, filename="fuzz.bp")
        except bpc.BPError as error:
            pytest.fail(f"a valid program does not compile on {backend}:\n{error}")
    for net in nets.values():
        assert net.params == case.params and net.buffers == case.buffers
        assert set(net.inputs) == set(case.inputs) and set(net.targets) == set(case.targets)
        assert net.outputs == case.outputs
    if len(nets) == 2:
        a, b = nets.values()
        assert a.inputs == b.inputs and a.targets == b.targets and a.state == b.state
    return nets


def check_init(nets: dict[str, bpc.CompiledNet], case: Case) -> dict[str, np.ndarray]:
    inits = {b: net.init(seed=case.seed % 1000) for b, net in nets.items()}
    for name, shape in {**case.params, **case.buffers}.items():
        for init in inits.values():
            assert init[name].shape == shape and init[name].dtype == np.float64
            assert init[name].flags.c_contiguous
            assert np.array_equal(init[name], inits["numpy"][name]), name
        if name in case.inits:   # gamma ones, beta zeros, running_var ones, ...
            assert np.all(inits["numpy"][name] == case.inits[name]), name
    return inits["numpy"]


# ------------------------------------------------------------- training mode's state

TRAINING_STEP = 5   # the step count in the states the training-mode checks start from


def training_states(nets, case: Case) -> dict[str, dict[str, np.ndarray]]:
    """Fresh states of the data seed, their step count (dropout's) at TRAINING_STEP."""
    states = {}
    for backend, net in nets.items():
        states[backend] = net.init_state(seed=case.seed % 1000)
        if RNG in states[backend]:
            states[backend][RNG][1] = TRAINING_STEP
    return states


def training_mode(state: dict[str, np.ndarray] | None) -> Mode:
    """The reference's training mode for a call given `state` (None: seed 0, step 0)."""
    if state is None or RNG not in state:
        return Mode(training=True)
    return Mode(training=True, seed=int(state[RNG][0]), step=int(state[RNG][1]))


def check_forward(nets, case: Case, p: dict[str, np.ndarray], reference: bool,
                  states: dict | None = None) -> dict:
    """The outputs in inference mode, or with `states` in training mode."""
    inputs = data_for(case, case.inputs)
    training = states is not None
    outs = {b: net.forward(p, training=training, state=states[b] if training else None,
                           **inputs) for b, net in nets.items()}
    mode = f"{'training' if training else 'inference'} mode"
    if "llvm" in nets:
        assert_all_close(outs["llvm"], outs["numpy"], f"forward (llvm vs numpy, {mode})")
    if reference:
        expected, _ = case.evaluate(p, case.data,
                                    training_mode(states["numpy"]) if training else None)
        assert_all_close(outs["numpy"], expected, f"forward (numpy vs NumPy from SPEC, "
                         f"{mode})", REFERENCE_RTOL)
    return outs


def check_inference_loss(nets, case: Case, p: dict[str, np.ndarray]) -> None:
    """A modal network's loss in inference mode (value_and_grad's is training mode's)."""
    losses = {b: net.loss(p, **case.data) for b, net in nets.items()}
    if "llvm" in nets:
        assert_close(losses["llvm"], losses["numpy"], "loss (llvm vs numpy, inference mode)",
                     scale_of(losses["numpy"]))
    _, expected = case.evaluate(p, case.data)
    assert_close(losses["numpy"], expected, "loss (numpy vs NumPy from SPEC, inference mode)",
                 max(abs(expected), 1e-3 * case.loss.bound), REFERENCE_RTOL)


def check_loss_and_grad(nets, case: Case, p: dict[str, np.ndarray], reference: bool,
                        states: dict | None = None
                        ) -> dict[str, tuple[float, dict[str, np.ndarray]]]:
    """Training mode's loss and gradient, dropout's masks those of `states` (None: seed 0
    and step 0); `loss` with training=True must give value_and_grad's loss."""
    data = case.data
    state = {b: None if states is None else states[b] for b in nets}
    losses = {b: net.loss(p, training=True, state=state[b], **data) for b, net in nets.items()}
    values = {b: net.value_and_grad(p, state=state[b], **data) for b, net in nets.items()}
    for backend in nets:
        assert isinstance(losses[backend], float)
        value, grads = values[backend]
        assert value == pytest.approx(losses[backend], rel=1e-12, abs=1e-300) or \
            (math.isnan(value) and math.isnan(losses[backend])), "value_and_grad's loss"
        assert set(grads) == set(case.params)
        for name, g in grads.items():
            assert g.shape == case.params[name] and g.dtype == np.float64, name
    if "llvm" in nets:
        assert_close(losses["llvm"], losses["numpy"], "loss (llvm vs numpy)",
                     scale_of(losses["numpy"]))
        assert_all_close(values["llvm"][1], values["numpy"][1], "gradient (llvm vs numpy)")
    if reference:
        _, expected = case.evaluate(p, data, training_mode(state["numpy"]))
        assert_close(losses["numpy"], expected, "loss (numpy vs NumPy from SPEC)",
                     max(abs(expected), 1e-3 * case.loss.bound), REFERENCE_RTOL)
    return values


def finite_difference(net, p, data, direction: dict, h: float, order: int,
                      state: dict | None = None) -> float:
    """Of the training-mode loss, dropout's masks those of `state` (fixed, so the loss is
    a smooth function of the params between kinks)."""
    def at(k: float) -> float:
        return net.loss({n: v + k * h * direction[n] if n in direction else v
                         for n, v in p.items()}, training=True, state=state, **data)

    if order == 4:
        return (-at(2) + 8 * at(1) - 8 * at(-1) + at(-2)) / (12 * h)
    return (at(1) - at(-1)) / (2 * h)


def check_finite_differences(net, case: Case, p: dict[str, np.ndarray], loss: float,
                             grads: dict[str, np.ndarray], state: dict | None = None) -> None:
    scale = max(1.0, abs(loss), scale_of(grads))
    rng = np.random.default_rng(case.seed % 2**32)

    def agrees(analytic: float, direction: dict, size: float, what: str) -> None:
        tried = []
        for h, order in FD_STEPS:
            numeric = finite_difference(net, p, case.data, direction, h * size, order, state)
            tried.append(numeric)
            norm = math.sqrt(sum(float(np.sum(u**2)) for u in direction.values()))
            if abs(analytic - numeric) <= FD_RTOL * max(abs(analytic), abs(numeric)) + \
                    FD_ATOL * scale * norm:
                return
        pytest.fail(f"{what}: gradient {analytic!r}, finite differences {tried} "
                    f"(steps {[h for h, _ in FD_STEPS]})")

    trained = {n: v for n, v in p.items() if n in case.params}   # not the buffers
    for name, value in trained.items():
        flat = np.arange(value.size)
        if value.size > FD_MAX_ENTRIES:
            flat = rng.choice(value.size, FD_MAX_ENTRIES, replace=False)
        for k in flat:
            index = np.unravel_index(k, value.shape)
            unit = np.zeros(value.shape)
            unit[index] = 1.0
            agrees(float(grads[name][index]), {name: unit},
                   max(1.0, abs(float(value[index]))), f"d loss / d {name}{list(index)}")
    if trained:  # one direction through every param at once
        u = {n: rng.standard_normal(v.shape) for n, v in trained.items()}
        agrees(float(sum(np.sum(u[n] * grads[n]) for n in trained)), u, 1.0,
               "along a random direction")


def check_steps(nets, case: Case, p0: dict[str, np.ndarray]) -> None:
    """A few steps on every backend; numpy's against the reference update, llvm's against
    numpy's. A step the loss or a gradient refuses (not finite) must change nothing.

    Each step starts every backend from numpy's params and state: a trajectory is not
    comparable. Adam moves a param whose gradient is rounding noise (1e-17 on one backend,
    0 on the other) by lr / eps times that noise, and the moved param changes the next
    gradient, so two correct backends part ever faster (found at seed 1, with a loss of
    binary_cross_entropy(sigmoid(w), sigmoid(w)), whose gradient at w = 0 is exactly 0).

    Steps are in training mode: dropout draws the masks of the state's seed and step
    count, which each step advances, and batchnorm writes its running statistics."""
    data = case.data
    compare = "llvm" in nets
    p = {b: {n: v.copy() for n, v in p0.items()} for b in nets}
    s = training_states(nets, case)
    sensitivity = step_sensitivity(case.optimizer)
    for k in range(STEPS):
        for b in nets:
            p[b] = {n: v.copy() for n, v in p["numpy"].items()}
            s[b] = {n: v.copy() for n, v in s["numpy"].items()}
        before = {b: net.loss(p[b], training=True, state=s[b], **data)
                  for b, net in nets.items()}
        _, grads = nets["numpy"].value_and_grad(p["numpy"], state=s["numpy"], **data)
        expected = expected_step(case, p["numpy"], s["numpy"], grads)
        # rounding noise in the gradient, times its effect on the step
        slack = sensitivity * STEP_GRADIENT_NOISE * max(1.0, scale_of(grads, before["numpy"]))
        results: dict[str, object] = {}
        for b, net in nets.items():
            kept = {n: v.copy() for n, v in {**p[b], **s[b]}.items()}
            try:
                results[b] = net.step(p[b], s[b], **data)
            except bpc.BPNumericError as error:
                results[b] = error
                for n, v in {**p[b], **s[b]}.items():
                    assert np.array_equal(v, kept[n], equal_nan=True), \
                        f"{b}: a refused step changed {n}"
        kinds = {b: type(r).__name__ for b, r in results.items()}
        assert len(set(kinds.values())) == 1, f"step {k}: {results}"
        if isinstance(results["numpy"], bpc.BPNumericError):
            return
        for b in nets:
            assert results[b] == pytest.approx(before[b], rel=1e-12, abs=1e-300), \
                f"{b} step {k} returns the loss before the update"
        trained = {n: v for n, v in p["numpy"].items() if n in case.params}
        assert_all_close(trained, expected[0], f"params after step {k} (numpy vs "
                         f"PyTorch's rule)", atol=slack)
        buffers = {n: v for n, v in p["numpy"].items() if n in case.buffers}
        assert_all_close(buffers, expected[2], f"running statistics after step {k} (numpy "
                         f"vs NumPy from SPEC)", REFERENCE_RTOL)
        assert_all_close(s["numpy"], expected[1], f"state after step {k} (numpy vs "
                         f"PyTorch's rule)")
        if compare:
            assert_close(results["llvm"], results["numpy"], f"step {k} loss",
                         scale_of(results["numpy"]))
            assert_all_close(p["llvm"], p["numpy"], f"params after step {k}", atol=slack)
            assert_all_close(s["llvm"], s["numpy"], f"state after step {k}")


def strided(array: np.ndarray) -> np.ndarray:
    """The same values in a view that is not contiguous (NaNs in the gaps it steps over)."""
    big = np.full(np.shape(array) + (2,), np.nan)
    big[..., 0] = array
    return big[..., 0]


def snapshot(results: dict) -> dict:
    return {k: (v[0], {n: g.copy() for n, g in v[1].items()}) if isinstance(v, tuple)
            else {n: o.copy() for n, o in v.items()} for k, v in results.items()}


def assert_same(results: dict, copies: dict, what: str) -> None:
    """Equal, exactly, to what was kept (arrays a call returned are the caller's)."""
    for key, value in results.items():
        arrays, kept = (value[1], copies[key][1]) if isinstance(value, tuple) else \
            (value, copies[key])
        if isinstance(value, tuple):
            assert value[0] == copies[key][0] or math.isnan(value[0]), f"{what}: {key}'s loss"
        for name, array in arrays.items():
            assert np.array_equal(array, kept[name], equal_nan=True), \
                f"{what}: {key}'s {name} differs"


def with_zeros(case: Case) -> dict[str, np.ndarray]:
    """The random point with some params exactly 0. At 0 relu, abs, leaky_relu, maximum
    and comparisons meet their kinks and ties exactly, and every backend computes the same
    exact zeros there, so their conventions (relu'(0) = 0, ...) must agree. (Ties between
    two different computations, as x @ ones against sum(x) at a network's init, are
    decided by rounding: that point is not compared.)"""
    rng = np.random.default_rng((case.seed + 2) % 2**32)
    names = [n for n in case.params if rng.random() < 0.4] or list(case.params)[:1]
    return {n: np.zeros_like(v) if n in names else v for n, v in case.point.items()}


def check_case(case: Case, backends=BACKENDS) -> None:
    nets = compile_all(case, backends)
    check_init(nets, case)
    # a modal network's training-mode checks: dropout's masks of a seed and a step count
    states = training_states(nets, case) if case.modal else None
    first: dict = {}
    for label, p, random_point in (("random point", case.point, True),
                                   ("random point with zeros", with_zeros(case), False)):
        note(f"checking at the {label}")
        outs = check_forward(nets, case, p, reference=True)
        if case.modal:
            check_forward(nets, case, p, reference=True, states=states)
        if random_point:
            first = {f"forward {b}": outs[b] for b in nets}
        if case.loss is None:
            continue
        if case.modal:
            check_inference_loss(nets, case, p)
        values = check_loss_and_grad(nets, case, p, reference=True, states=states)
        loss, grads = values["numpy"]
        if random_point:
            first.update({f"value_and_grad {b}": values[b] for b in nets})
            if math.isfinite(loss):  # finite differences only away from kinks
                check_finite_differences(nets["numpy"], case, p, loss, grads,
                                         None if states is None else states["numpy"])
        check_steps(nets, case, p)
    kept = snapshot(first)

    # another batch size (workspaces are per size), data in views that are not contiguous
    note(f"checking with batch sizes {case.other_sizes}, data not contiguous")
    other = case.resized(case.other_sizes, seed=(case.seed + 1) % 2**32)
    other.data = {n: strided(v) for n, v in other.data.items()}
    check_forward(nets, other, case.point, reference=True)
    if case.loss is not None:
        check_loss_and_grad(nets, other, case.point, reference=True)
        check_steps(nets, other, case.point)

    # the first results are untouched, and the same calls give them again, exactly
    assert_same(first, kept, "returned arrays, after later calls")
    again: dict = {}
    for b, net in nets.items():
        again[f"forward {b}"] = net.forward(case.point, **data_for(case, case.inputs))
        if case.loss is not None:
            again[f"value_and_grad {b}"] = net.value_and_grad(
                case.point, state=None if states is None else states[b], **case.data)
    assert_same(again, kept, "the same call again")


class Crash(Exception):
    """An exception other than a failed check, raised again from one place: each compiled
    network's code has a file name of its own, so an exception raised in it would look like
    a new bug to hypothesis each time it replays the example (and it would stop shrinking)."""


def check_network(case: Case) -> None:
    """check_case on both backends; an exception that is not a failed check is a crash."""
    try:
        check_case(case)
    except AssertionError:
        raise
    except Exception as error:
        where = "".join(traceback.format_exception(error)[-6:])
        raise Crash(f"{type(error).__name__}: {error}\n{where}") from None


def run(test):
    """Apply the settings, and a seed for a long run when one is given."""
    test = SETTINGS(test)
    return seed(int(FUZZ_SEED))(test) if FUZZ_SEED is not None else test


@run
@given(case=networks())
def test_random_networks_agree_everywhere(case: Case) -> None:
    note(f"program (batch sizes {case.sizes}, data seed {case.seed}):\n{case.source}")
    check_network(case)
