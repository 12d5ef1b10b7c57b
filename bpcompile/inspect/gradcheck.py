"""gradcheck: compare a network's gradient with central finite differences, in float64.

Two checks, as PyTensor's `verify_grad` and PyTorch's `gradcheck` do them:
- entry by entry, (L(p + h e_i) - L(p - h e_i)) / 2h against the gradient's entry i, for every
  entry of small params and a random sample of large ones;
- along a random direction u over all params at once, (L(p + h u) - L(p - h u)) / 2h against
  sum(u * g): one projection that involves every gradient entry.
A float32 network is checked through its float64 twin (same source, same backend).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from ..errors import BPNameError, BPTypeError
from ..runtime import checks
from ..runtime.net import CompiledNet


@dataclass(frozen=True)
class Mismatch:
    where: str          # "W1[0, 2]" or "random direction"
    analytic: float
    numeric: float
    rel_error: float


@dataclass(frozen=True)
class GradcheckResult:
    ok: bool
    max_rel_error: float
    checked: int                      # finite differences taken
    worst: Mismatch | None
    per_param: dict[str, float] = field(default_factory=dict)  # max rel error per param
    tolerance: float = 0.0

    def __str__(self) -> str:
        verdict = "passed" if self.ok else "FAILED"
        lines = [f"gradcheck {verdict}: max relative error {self.max_rel_error:.2e} "
                 f"(tolerance {self.tolerance:.0e}) over {self.checked} differences"]
        for name, error in self.per_param.items():
            lines.append(f"  {name:<20} {error:.2e}")
        if self.worst is not None and not self.ok:
            w = self.worst
            lines.append(f"  worst: {w.where}: analytic {w.analytic:.10g}, "
                         f"numeric {w.numeric:.10g}")
        return "\n".join(lines)


def _relative(analytic: float, numeric: float, floor: float) -> float:
    return abs(analytic - numeric) / max(abs(analytic), abs(numeric), floor)


def gradcheck(net: CompiledNet, p: Mapping, /, *, eps: float = 1e-6, tolerance: float = 1e-5,
              max_entries: int = 32, seed: int = 0, training: bool = True,
              **data: object) -> GradcheckResult:
    """Check `net`'s gradient at `p` on `data` (see the module docstring), in training mode
    unless told: batch norm with the batch's statistics, dropout with the masks of seed 0
    and step 0 in every call, so that the loss is one function of the params.

    An entry passes when |analytic - numeric| <= tolerance * max(|analytic|, |numeric|,
    floor), where floor = 1e-3 times the largest gradient entry: differences far below the
    gradient's own scale are rounding, not errors.
    """
    if not isinstance(net, CompiledNet):
        raise BPTypeError(f"gradcheck needs a compiled network, not {type(net).__name__}")
    if not net.has_loss:
        raise BPNameError(f"gradcheck: network {net.name} has no loss statement")
    twin = net if net.dtype == np.float64 else _float64_twin(net)
    # The checks every entry point makes: a complex, ragged or missing param is a BPError,
    # not a silent cast to float64 or a NumPy traceback. Nothing below writes into `params`.
    kept = checks.check_params(p, {**twin.params, **twin.buffers}, np.dtype(np.float64),
                               "gradcheck")
    params = {n: v for n, v in kept.items() if n in twin.params}  # buffers stay as given
    buffers = {n: v for n, v in kept.items() if n in twin.buffers}
    loss, grads = twin.value_and_grad(kept, training=training, **data)
    rng = np.random.default_rng(seed)
    scale = max((float(np.max(np.abs(g))) for g in grads.values() if g.size), default=0.0)
    floor = max(1e-3 * scale, 1e-12)

    def loss_at(shifted: dict[str, np.ndarray]) -> float:
        return twin.loss({**shifted, **buffers}, training=training, **data)

    worst: Mismatch | None = None
    per_param: dict[str, float] = {}
    checked = 0
    for name, value in params.items():
        flat_indices = np.arange(value.size)
        if value.size > max_entries:
            flat_indices = rng.choice(value.size, size=max_entries, replace=False)
        per_param[name] = 0.0
        for flat in flat_indices:
            index = np.unravel_index(flat, value.shape)
            step = eps * max(1.0, abs(float(value[index])))
            shifted = dict(params)
            shifted[name] = value.copy()
            shifted[name][index] = value[index] + step
            up = loss_at(shifted)
            shifted[name][index] = value[index] - step
            down = loss_at(shifted)
            numeric = (up - down) / (2 * step)
            analytic = float(grads[name][index])
            error = _relative(analytic, numeric, floor)
            checked += 1
            per_param[name] = max(per_param[name], error)
            label = f"{name}[{', '.join(map(str, index))}]" if index else name
            if worst is None or error > worst.rel_error:
                worst = Mismatch(label, analytic, numeric, error)

    if params:
        direction = {n: rng.standard_normal(v.shape) for n, v in params.items()}
        up = loss_at({n: v + eps * direction[n] for n, v in params.items()})
        down = loss_at({n: v - eps * direction[n] for n, v in params.items()})
        numeric = (up - down) / (2 * eps)
        analytic = float(sum(np.sum(direction[n] * grads[n]) for n in params))
        error = _relative(analytic, numeric, floor)
        checked += 1
        if worst is None or error > worst.rel_error:
            worst = Mismatch("random direction", analytic, numeric, error)

    max_error = worst.rel_error if worst is not None else 0.0
    return GradcheckResult(max_error <= tolerance, max_error, checked, worst, per_param,
                           tolerance)


def _float64_twin(net: CompiledNet) -> CompiledNet:
    """The same network in float64, where central differences are accurate."""
    return net.with_dtype(np.dtype(np.float64))
