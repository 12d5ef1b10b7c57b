"""Gradient health: is every layer still learning?

Backpropagation multiplies each layer's error term by the next layer's weights and by its
activation's derivative. Through many sigmoid layers (whose derivative is at most 1/4) the
products shrink geometrically, and the first layers stop learning: gradients *vanish*. With
large weights they grow instead and training diverges: gradients *explode*. Both show in the
norm of each param's gradient, compared with the largest one in the network and with the
param's own size.

    report = bpcompile.gradient_health(net, p, x=X, t=T)
    print(report)            # a table, then a warning per layer in trouble
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ..runtime.net import CompiledNet

# A param's gradient vanishes when its norm is below this fraction of the network's largest
# gradient norm: the layer learns a thousand times slower than the fastest one (per unit of
# learning rate). Deep sigmoid stacks reach 1e-4 and less in their first layers.
VANISH_RATIO = 1e-3
# A gradient this small learns nothing whatever the others do (a dead relu layer).
VANISH_ABSOLUTE = 1e-10
# A gradient explodes when its norm is this many times the param's own norm (or 1 for a
# param still near zero): one step of a moderate learning rate would rewrite the param.
EXPLODE_RATIO = 1e3


@dataclass(frozen=True)
class ParamHealth:
    """One param's gradient: its norm, and compared with the largest and with the param."""

    name: str
    layer: str          # the `.bp` name a user knows it by: `h1` for dense's `h1.W`
    line: int           # where the param (or its layer) is declared
    grad_norm: float
    param_norm: float
    relative: float     # grad_norm / the network's largest grad_norm

    @property
    def vanishing(self) -> bool:
        return self.grad_norm < VANISH_ABSOLUTE or self.relative < VANISH_RATIO

    @property
    def exploding(self) -> bool:
        return not math.isfinite(self.grad_norm) or \
            self.grad_norm > EXPLODE_RATIO * max(1.0, self.param_norm)

    @property
    def status(self) -> str:
        return "exploding" if self.exploding else "vanishing" if self.vanishing else "ok"


@dataclass(frozen=True)
class HealthReport:
    """Every param's gradient health at one point, in declaration order."""

    loss: float
    params: tuple[ParamHealth, ...]
    filename: str

    @property
    def ok(self) -> bool:
        return all(status == "ok" for _, status in self.layers().values())

    def warnings(self) -> list[str]:
        """One sentence per layer in trouble, naming it, where it is declared and its worst
        param, then what to try."""
        largest = max(self.params, key=lambda p: p.grad_norm, default=None)
        exploding, vanishing = [], []
        for layer, members in self._by_layer().items():
            where = f"layer {layer} ({self.filename}:{members[0].line})"
            if any(p.exploding for p in members):
                worst = max(members, key=lambda p: p.grad_norm / max(1.0, p.param_norm))
                exploding.append(
                    f"{where}: gradients explode: |grad {worst.name}| = "
                    f"{worst.grad_norm:.3g}, {worst.grad_norm / max(1.0, worst.param_norm):.3g} "
                    f"times |{worst.name}|")
            elif all(p.vanishing for p in members) and largest is not None:
                worst = min(members, key=lambda p: p.relative)
                vanishing.append(
                    f"{where}: gradients vanish: |grad {worst.name}| = {worst.grad_norm:.3g}, "
                    f"{worst.relative:.2g} of the largest (|grad {largest.name}|)")
        if exploding:
            exploding.append("exploding gradients: lower the learning rate, add clip_norm= to "
                             "the optimizer, or draw smaller initial weights")
        if vanishing:
            vanishing.append("vanishing gradients: those layers barely learn. Saturating "
                             "activations (sigmoid, tanh) in deep stacks do this, since each "
                             "layer scales the error term by the activation's derivative "
                             "(sigmoid' <= 1/4): try relu with he init, or fewer layers")
        return exploding + vanishing

    def _by_layer(self) -> dict[str, list[ParamHealth]]:
        grouped: dict[str, list[ParamHealth]] = {}
        for p in self.params:
            grouped.setdefault(p.layer, []).append(p)
        return grouped

    def layers(self) -> dict[str, tuple[float, str]]:
        """Each layer's gradient norm (all its params together) and its status: exploding
        if a param's gradient explodes, vanishing if every param's vanishes. (One param alone
        may have no gradient by design: a bias followed by batch norm, which subtracts the
        batch's mean, so the bias never changes the loss; the layer still learns.)"""
        return {layer: (math.sqrt(sum(p.grad_norm ** 2 for p in members)),
                        "exploding" if any(p.exploding for p in members) else
                        "vanishing" if all(p.vanishing for p in members) else "ok")
                for layer, members in self._by_layer().items()}

    def table(self) -> str:
        width = max([len(p.name) for p in self.params] + [5])
        lines = [f"{'param':<{width}}  {'|grad|':>10}  {'|param|':>10}  "
                 f"{'of largest':>10}  status"]
        for p in self.params:
            lines.append(f"{p.name:<{width}}  {p.grad_norm:>10.3g}  {p.param_norm:>10.3g}  "
                         f"{p.relative:>10.2g}  {p.status}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return "\n".join([self.table(), *self.warnings()])


def layer_of(name: str) -> str:
    """`h1.W` belongs to the layer `h1 = dense(...)`; a plain param is its own layer."""
    return name.split(".")[0]


def gradient_health(net: CompiledNet, p: Mapping, /, **data: object) -> HealthReport:
    """The health of every param's gradient for these params and data."""
    loss, grads = net.value_and_grad(p, **data)
    norms = {name: float(np.linalg.norm(np.asarray(g, dtype=np.float64)))
             for name, g in grads.items()}
    finite = [n for n in norms.values() if math.isfinite(n)]
    largest = max(finite, default=0.0)
    signature = net.signature
    params = tuple(
        ParamHealth(
            name=name,
            layer=layer_of(name),
            line=signature.params[name].line,
            grad_norm=norms[name],
            param_norm=float(np.linalg.norm(np.asarray(p[name], dtype=np.float64))),
            relative=norms[name] / largest if largest > 0 else 0.0,
        )
        for name in net.params
    )
    return HealthReport(loss, params, signature.filename)
