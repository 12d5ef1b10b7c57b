"""How long a fresh process takes to start using a network compiled before: import
bpcompile and open the network from the warm disk cache, then its first training step.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/startup.py [--runs 15]

Each figure is the median wall time of fresh processes (the interpreter's own start
included), alternating the measurements round by round. Also measured, for the floor: an
empty Python, and one importing NumPy and llvmlite's binding, which any process that runs
the LLVM backend's code loads.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "digits.bp"

OPEN = f"""
import bpcompile as bpc
net = bpc.compile_file({str(EXAMPLE)!r}, backend="llvm")
"""
STEP = OPEN + """
import numpy as np
p = net.init(); s = net.init_state(p)
x = np.zeros((4, 64)); t = np.zeros((4, 10)); t[:, 0] = 1
net.step(p, s, x=x, t=t)
"""
# From a warm cache, nothing of the front end (parser, SymPy) may load.
FIRST_STEP = STEP + """
import sys
assert "sympy" not in sys.modules and "lark" not in sys.modules, "the front end loaded"
"""
PROGRAMS = {
    "python, nothing imported": "pass",
    "import numpy and llvmlite.binding (the floor)": "import numpy, llvmlite.binding",
    "import bpcompile, open digits.bp from the cache": OPEN,
    "... and its first training step": FIRST_STEP,
}


def wall(program: str, env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", program], env=env, check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        env = dict(os.environ, BPCOMPILE_CACHE_DIR=folder)
        wall(STEP, env)  # fills the cache: every later process finds it warm
        times: dict[str, list[float]] = {name: [] for name in PROGRAMS}
        for _ in range(args.runs):
            for name, program in PROGRAMS.items():
                times[name].append(wall(program, env))
    print(f"median wall time of {args.runs} fresh processes each (cache warm)\n")
    print("| what | ms |\n| --- | --- |")
    for name, values in times.items():
        print(f"| {name} | {1000 * statistics.median(values):.0f} |")


if __name__ == "__main__":
    main()
