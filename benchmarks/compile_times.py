"""Compile time: from `.bp` text to a finished first training step, in a fresh process.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/compile_times.py

For each workload, fresh processes; the libraries each side loads are imported before the
clock starts and timed apart (`import`): for bpcompile its front end (SymPy, with the tensor
module SymPy loads at the first sum computed, and lark) and llvmlite's binding, for JAX
`import jax` (XLA). Every process runs with PYTHONDONTWRITEBYTECODE unset, as Python runs by
default: with it set, each would compile bpcompile's sources to bytecode again, inside the
clock for the modules a first step loads:
  first   bpcompile.compile(..., backend="llvm") with an empty disk cache, then the first
          step (which compiles it), less the time a step takes once compiled; this includes
          what is built once per machine: the runtime library for the dtype, the thread
          pool, lark's analysis of the grammar;
  new     the same for a network the cache has not seen, what is built once per machine
          already built: what compiling a network costs from then on;
  cached  the same network again, now that the disk cache holds it;
  jax     JAX's first call of the jitted training step (trace and XLA compile), less the
          time a call takes once compiled.
The last two columns add each side's import to `new` and to `jax`: what a fresh process
pays, from its first import, to take its first step on a network it has not run before.
Drawing the initial params is not counted. Medians over --repeats runs of each.

Also `deep`: a 20-layer dense relu MLP of width 512 (5.2 million weights), text to a
compiled network on the numpy backend (the front end: parsing, lowering, SymPy, passes, code
generation), in a fresh process, its imports done first.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent

BPCOMPILE = """
import json, sys, time
sys.path.insert(0, {here!r})
import numpy as np
from workloads import WORKLOADS
start = time.perf_counter()
import bpcompile as bpc
import bpcompile.backends.llvm.jit  # llvmlite's binding
import bpcompile.pipeline  # the front end: SymPy, lark
import sympy.tensor.tensor  # SymPy loads it at the first sum any program computes
imported = time.perf_counter() - start
w = next(w for w in WORKLOADS if w.name == {name!r})
data = {{k: v.astype(w.dtype) for k, v in w.data(np.random.default_rng(0)).items()}}
start = time.perf_counter()
net = bpc.compile(w.source, backend="llvm", dtype=w.dtype)
compiled = time.perf_counter() - start
p = net.init(seed=0)
s = net.init_state(p)
start = time.perf_counter()
net.step(p, s, **data)
first = time.perf_counter() - start
start = time.perf_counter()
net.step(p, s, **data)
again = time.perf_counter() - start
print(json.dumps([compiled + first - again, imported]))
"""

PER_MACHINE = """
import bpcompile.backends.llvm.prebuilt as library
from bpcompile.backends.llvm import threads
from bpcompile.backends.llvm.jit import vector_bytes
from bpcompile.language.parser import parse
for dtype in ("float32", "float64"):
    library.load(dtype, vector_bytes())
threads.load()
parse("input x[N, 2]\\n")  # lark's analysis of the grammar, kept in the cache
print(0)
"""

DEEP = """
import json, time
import bpcompile as bpc
import bpcompile.pipeline  # SymPy and lark, imported before the clock as above
import sympy.tensor.tensor
lines = ["input x[N, 512]", "target t[N, 512]"]
previous = "x"
for layer in range(1, 21):
    lines.append(f"h{layer} = dense({previous}, 512, act={'relu' if layer < 20 else 'linear'})")
    previous = f"h{layer}"
lines += [f"loss mse({previous}, t)", "optimize adam(lr=0.001)"]
start = time.perf_counter()
bpc.compile("\\n".join(lines) + "\\n", backend="numpy")
print(json.dumps(time.perf_counter() - start))
"""

JAX = """
import json, sys, time
sys.path.insert(0, {here!r})
import numpy as np
from workloads import WORKLOADS
start = time.perf_counter()
import jax
imported = time.perf_counter() - start
import bpcompile as bpc
w = next(w for w in WORKLOADS if w.name == {name!r})
data = {{k: v.astype(w.dtype) for k, v in w.data(np.random.default_rng(0)).items()}}
params = bpc.compile(w.source, dtype=w.dtype).init(seed=0)
step = w.jax(params, data, w.dtype)   # builds the jitted function; compiles on first call
start = time.perf_counter()
step()
first = time.perf_counter() - start
start = time.perf_counter()
step()
again = time.perf_counter() - start
print(json.dumps([first - again, imported]))
"""


def run(script: str, cache: str) -> list[float] | float:
    """What the script reports (seconds), run in a fresh Python process."""
    env = {**os.environ, "BPCOMPILE_CACHE_DIR": cache}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            check=True, env=env)
    return json.loads(result.stdout.strip().splitlines()[-1])


def median(runs: list[list[float]]) -> float:
    """The median seconds of `runs`, each [seconds, import seconds]."""
    return statistics.median(run[0] for run in runs) if runs else float("nan")


def median_with_import(runs: list[list[float]]) -> float:
    return statistics.median(sum(run) for run in runs) if runs else float("nan")


def main() -> None:
    sys.path.insert(0, str(HERE))
    from scaling_workloads import PREFIX as SCALING_PREFIX
    from workloads import WORKLOADS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workloads", default=",".join(
        w.name for w in WORKLOADS if not w.name.startswith(SCALING_PREFIX)))
    args = parser.parse_args()
    try:
        import jax  # noqa: F401
        have_jax = True
    except ImportError:
        have_jax = False
    rows = []
    for name in args.workloads.split(","):
        first, cold, cached, jax_first = [], [], [], []
        for _ in range(args.repeats):
            script = BPCOMPILE.format(here=str(HERE), name=name)
            with tempfile.TemporaryDirectory() as cache:
                first.append(run(script, cache))
            with tempfile.TemporaryDirectory() as cache:
                run(PER_MACHINE, cache)
                cold.append(run(script, cache))
                cached.append(run(script, cache))
            if have_jax:
                jax_first.append(run(JAX.format(here=str(HERE), name=name), "off"))
        row = (name, median(first), median(cold), median(cached), median(jax_first),
               median_with_import(cold), median_with_import(jax_first))
        rows.append(row)
        print(f"{name}: first {row[1]:.3f} s, new {row[2]:.3f} s, cached {row[3] * 1e3:.1f} ms,"
              f" jax first call {row[4]:.3f} s; with imports: new {row[5]:.3f} s,"
              f" jax {row[6]:.3f} s", file=sys.stderr)
    deep = statistics.median(run(DEEP, "off") for _ in range(args.repeats))
    print(f"20-layer, width-512 dense relu MLP, text to compiled network (numpy backend): "
          f"{deep:.3f} s\n")
    print("| workload | llvm, first on a machine (s) | llvm, new network (s) | "
          "llvm, cached (ms) | JAX first call (s) | llvm new + import (s) | "
          "JAX first call + import (s) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, first, cold, cached, jax_first, cold_total, jax_total in rows:
        print(f"| {name} | {first:.3f} | {cold:.3f} | {cached * 1e3:.1f} | {jax_first:.3f} | "
              f"{cold_total:.3f} | {jax_total:.3f} |")


if __name__ == "__main__":
    main()
