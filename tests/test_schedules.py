"""Learning-rate schedules compiled into `step` (differentiate/schedules.py).

Oracles: torch.optim.lr_scheduler's closed forms, written here from its documentation (the
lr each step took is read back from a network whose gradient is a known constant); both
backends; and, where PyTorch is installed, its schedulers and optimizers themselves, step by
step (skipped cleanly without it).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import bpcompile as bpc

LR = 0.1
STEPS = 40

# schedule text -> the lr of the update after k updates, from torch's documented formulas
SCHEDULES = {
    "step(7, 0.5)": lambda k: LR * 0.5 ** (k // 7),
    "cosine(25)": lambda k: LR * (1 + math.cos(math.pi * k / 25)) / 2,
    "cosine(25, min_lr=0.01)": lambda k: 0.01 + (LR - 0.01) * (1 + math.cos(math.pi * k / 25)) / 2,
    "warmup(5)": lambda k: LR * min(k + 1, 5) / 5,
    "[warmup(4), cosine(20, min_lr=0.001)]": lambda k: LR * (k + 1) / 4 if k < 4 else
    0.001 + (LR - 0.001) * (1 + math.cos(math.pi * (k - 4) / 20)) / 2,
    "[warmup(3), step(10, 0.1)]": lambda k: LR * (k + 1) / 3 if k < 3 else
    LR * 0.1 ** ((k - 3) // 10),
}


def probe(schedule: str, backend: str) -> bpc.CompiledNet:
    """loss = sum(w * x): the gradient is x, so each step moves w by exactly lr * x."""
    return bpc.compile(f"input x[3]\nparam w[3] = zeros\nloss sum(w * x)\n"
                       f"optimize sgd(lr={LR}, schedule={schedule})\n", backend=backend)


@pytest.mark.parametrize("schedule", list(SCHEDULES))
def test_each_step_takes_the_scheduled_lr(schedule: str, backend: str) -> None:
    net = probe(schedule, backend)
    p = net.init()
    s = net.init_state(p)
    x = np.array([1.0, 2.0, -0.5])
    taken = []
    for _ in range(STEPS):
        before = p["w"].copy()
        net.step(p, s, x=x)
        taken.append(float((before - p["w"])[0]))  # lr * x[0], x[0] = 1
    expected = [SCHEDULES[schedule](k) for k in range(STEPS)]
    np.testing.assert_allclose(taken, expected, rtol=1e-12, atol=1e-17)
    assert float(s["step"]) == STEPS


@pytest.mark.parametrize("text, message", [
    ("schedule=cosine()", "cosine\\(\\) is missing its argument 'steps'"),
    ("schedule=cosine(0)", "steps must be a whole number of steps, at least 1"),
    ("schedule=step(10, 0)", "gamma must be positive"),
    ("schedule=cosin(10)", "unknown schedule 'cosin' \\(did you mean 'cosine'\\?\\)"),
    ("schedule=[cosine(10), warmup(3)]", "a schedule is step"),
    ("schedule=3", "a schedule is step"),
])
def test_a_bad_schedule_is_named(text: str, message: str) -> None:
    with pytest.raises(bpc.BPError, match=message):
        bpc.compile(f"input x[3]\nparam w[3]\nloss sum(w * x)\noptimize sgd(lr=0.1, {text})\n")


def test_a_schedule_survives_the_disk_cache() -> None:
    """The signature (and so a network opened from the cache) keeps the schedule."""
    from bpcompile.runtime.signature import Signature

    net = probe("[warmup(3), cosine(9)]", "numpy")
    again = Signature.from_json(net.signature.to_json())
    assert again.optimizer.schedule == (("warmup", (3.0,)), ("cosine", (9.0, 0.0)))


# ------------------------------------------------------------------ against PyTorch

REGRESSION = """
input x[N, 3]
target t[N, 2]
param W[3, 2] = xavier
param b[2] = zeros
loss mse(tanh(x @ W + b), t)
"""


def torch_schedulers(torch, optimizer, schedule: str):
    """The torch scheduler a schedule text means (stepped once per optimizer step)."""
    lr_scheduler = torch.optim.lr_scheduler
    kinds = {
        "step": lambda every, gamma: lr_scheduler.StepLR(optimizer, int(every), gamma),
        "cosine": lambda steps, min_lr=0.0: lr_scheduler.CosineAnnealingLR(
            optimizer, int(steps), eta_min=min_lr),
        "warmup": lambda steps: lr_scheduler.LinearLR(
            optimizer, start_factor=1 / steps, total_iters=int(steps) - 1),
    }
    calls = [c if c.endswith(")") else c + ")" for c in schedule.strip("[]").split("), ")]
    made = [eval(c, {}, kinds) for c in calls]  # noqa: S307
    if len(made) == 1:
        return made[0]
    warmup = int(calls[0][len("warmup("):-1])
    return lr_scheduler.SequentialLR(optimizer, made, milestones=[warmup])


@pytest.mark.parametrize("optimizer, schedule", [
    ("sgd(lr=0.1, momentum=0.9, nesterov=true)", "[warmup(4), cosine(20, min_lr=0.001)]"),
    ("sgd(lr=0.2, weight_decay=0.01)", "step(5, 0.5)"),
    ("adam(lr=0.05, weight_decay=0.1)", "[warmup(3), step(6, 0.3)]"),
    ("adam(lr=0.05)", "cosine(12)"),
])
def test_training_equals_pytorch(optimizer: str, schedule: str, backend: str) -> None:
    torch = pytest.importorskip("torch")
    net = bpc.compile(REGRESSION + f"optimize {optimizer[:-1]}, schedule={schedule})\n",
                      backend=backend)
    rng = np.random.default_rng(4)
    x, t = rng.standard_normal((16, 3)), rng.uniform(-0.5, 0.5, (16, 2))
    p = net.init(seed=1)
    s = net.init_state(p)
    W = torch.tensor(p["W"].copy(), requires_grad=True)
    b = torch.tensor(p["b"].copy(), requires_grad=True)
    options = dict(item.split("=") for item in optimizer[optimizer.index("(") + 1:-1]
                   .split(", "))
    lr = float(options.pop("lr"))
    decay = float(options.pop("weight_decay", 0.0))
    if optimizer.startswith("sgd"):
        torch_optimizer = torch.optim.SGD([W, b], lr=lr, weight_decay=decay,
                                          momentum=float(options.get("momentum", 0.0)),
                                          nesterov=options.get("nesterov") == "true")
    else:
        kind = torch.optim.AdamW if decay else torch.optim.Adam
        torch_optimizer = kind([W, b], lr=lr, weight_decay=decay)
    scheduler = torch_schedulers(torch, torch_optimizer, schedule)
    xt, tt = torch.tensor(x), torch.tensor(t)
    for step in range(STEPS // 2):
        loss = net.step(p, s, x=x, t=t)
        torch_optimizer.zero_grad()
        torch_loss = torch.mean((torch.tanh(xt @ W + b) - tt) ** 2)
        torch_loss.backward()
        torch_optimizer.step()
        scheduler.step()
        assert loss == pytest.approx(torch_loss.item(), rel=1e-10), step
    np.testing.assert_allclose(p["W"], W.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(p["b"], b.detach().numpy(), rtol=1e-10, atol=1e-12)
