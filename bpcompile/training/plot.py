"""`bpcompile train --plot`: the loss curve as an image, through matplotlib (an optional
extra: `pip install "bpcompile[plot]"`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .. import atomic
from ..errors import BPError

INSTALL = 'pip install "bpcompile[plot]"  (or: pip install matplotlib)'


def require_matplotlib() -> None:
    """Fail before training, not after it, when the plot cannot be drawn."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise BPError(f"--plot needs matplotlib, which is not installed: {INSTALL}") from None


def loss_curve(path: str | Path, step_losses: Sequence[float], steps_per_epoch: float,
               epochs: Sequence[int], train: Sequence[float],
               validation: Sequence[float | None], title: str,
               first_step: float = 0.0) -> None:
    """Each step's loss (faint), each epoch's mean and validation loss, written atomically
    in the format the file name's extension names (png, svg, pdf...). `first_step` is
    where the steps start, in epochs (a resumed run starts part of the way in)."""
    require_matplotlib()
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    from matplotlib import pyplot

    path = Path(path)
    figure, axes = pyplot.subplots(figsize=(7, 4.2), layout="constrained")
    try:
        steps = [first_step + (k + 1) / steps_per_epoch for k in range(len(step_losses))]
        axes.plot(steps, step_losses, color="tab:blue", alpha=0.25, linewidth=0.8,
                  label="step loss")
        axes.plot(epochs, train, color="tab:blue", marker="o", label="train loss (epoch)")
        shown = [(e, v) for e, v in zip(epochs, validation) if v is not None]
        if shown:
            axes.plot(*zip(*shown), color="tab:orange", marker="s", label="validation loss")
        positive = all(v > 0 for v in [*step_losses, *train])
        axes.set_yscale("log" if positive else "linear")
        axes.set_xlabel("epoch")
        axes.set_ylabel("loss")
        axes.set_title(title)
        axes.legend()
        fmt = path.suffix.lstrip(".") or "png"
        atomic.write(path, lambda file: figure.savefig(file, format=fmt))
    except ValueError as error:  # e.g. an unknown image format
        raise BPError(f"{path}: cannot write the plot ({error})") from None
    finally:
        pyplot.close(figure)
