"""Draw the scaling run: step time against batch size and against width, one line per
implementation, from the medians `run.py --workloads scaling --json` wrote.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/run.py \\
        --workloads scaling --implementations "llvm,hand numpy,pytorch,jax" \\
        --json scaling.json
    python benchmarks/scaling_plot.py scaling.json docs/scaling.png

Needs matplotlib (`pip install -e ".[plot]"`).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from run import LABELS
from scaling_workloads import BATCHES, PREFIX, WIDTHS

NAME = re.compile(rf"{PREFIX}b(\d+)_w(\d+)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("medians", help="run.py's --json file")
    parser.add_argument("out", help="the picture to write (.png or .svg)")
    args = parser.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    medians: dict[str, dict[str, float]] = json.loads(Path(args.medians).read_text())
    points = {tuple(map(int, NAME.fullmatch(name).groups())): times
              for name, times in medians.items() if NAME.fullmatch(name)}
    width_at, batch_at = 256, 256  # the fixed size of each sweep (scaling_workloads.py)
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    sweeps = [(axes[0], [(b, (b, width_at)) for b in BATCHES], "batch size",
               f"width {width_at}"),
              (axes[1], [(w, (batch_at, w)) for w in WIDTHS], "width", f"batch {batch_at}")]
    implementations = sorted({impl for times in points.values() for impl in times},
                             key=list(LABELS).index)
    for ax, sweep, label, fixed in sweeps:
        for impl in implementations:
            xs = [x for x, key in sweep if impl in points.get(key, {})]
            ys = [points[key][impl] for x, key in sweep if impl in points.get(key, {})]
            ax.plot(xs, ys, marker="o", label=LABELS[impl])
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("microseconds per training step")
        ax.set_title(f"784-W-W-10 relu, float32, sgd; {fixed}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    figure.tight_layout()
    figure.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
