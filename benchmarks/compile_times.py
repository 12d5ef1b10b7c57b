"""Compile time: from `.bp` text to a finished first training step, in a fresh process.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/compile_times.py

For each workload, fresh processes (imports are done before the clock starts):
  first   bpcompile.compile(..., backend="llvm") with an empty disk cache, then the first
          step (which compiles it), less the time a step takes once compiled; this includes
          building the runtime library, once per machine and dtype;
  new     the same for a network the cache has not seen, the runtime library already built:
          what compiling a network costs from then on;
  cached  the same network again, now that the disk cache holds it;
  jax     JAX's first call of the jitted training step (trace and XLA compile), less the
          time a call takes once compiled.
Drawing the initial params is not counted. Medians over --repeats runs of each.

Also `deep`: a 20-layer dense relu MLP of width 512 (5.2 million weights), text to a
compiled network on the numpy backend (the front end: parsing, lowering, SymPy, passes, code
generation), in a fresh process.
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
import bpcompile as bpc
import bpcompile.backends.llvm.executor  # an import, like `import jax`: not compile time
from workloads import WORKLOADS
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
print(json.dumps(compiled + first - again))
"""

LIBRARY = """
import bpcompile.backends.llvm.prebuilt as library
from bpcompile.backends.llvm.jit import vector_bytes
for dtype in ("float32", "float64"):
    library.load(dtype, vector_bytes())
print(0)
"""

DEEP = """
import json, time
import bpcompile as bpc
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
import bpcompile as bpc
from workloads import WORKLOADS
import jax
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
print(json.dumps(first - again))
"""


def run(script: str, cache: str) -> float:
    """Seconds the script reports, run in a fresh Python process."""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True,
        env={**os.environ, "BPCOMPILE_CACHE_DIR": cache},
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


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
                run(LIBRARY, cache)  # builds the runtime library only
                cold.append(run(script, cache))
                cached.append(run(script, cache))
            if have_jax:
                jax_first.append(run(JAX.format(here=str(HERE), name=name), "off"))
        row = [name, statistics.median(first), statistics.median(cold),
               statistics.median(cached),
               statistics.median(jax_first) if jax_first else float("nan")]
        rows.append(row)
        print(f"{name}: first {row[1]:.3f} s, new {row[2]:.3f} s, cached {row[3] * 1e3:.1f} ms,"
              f" jax first call {row[4]:.3f} s", file=sys.stderr)
    deep = statistics.median(run(DEEP, "off") for _ in range(args.repeats))
    print(f"20-layer, width-512 dense relu MLP, text to compiled network (numpy backend): "
          f"{deep:.3f} s\n")
    print("| workload | llvm, first on a machine (s) | llvm, new network (s) | "
          "llvm, cached (ms) | JAX first call (s) |")
    print("| --- | --- | --- | --- | --- |")
    for name, first, cold, cached, jax_first in rows:
        print(f"| {name} | {first:.3f} | {cold:.3f} | {cached * 1e3:.1f} | {jax_first:.3f} |")


if __name__ == "__main__":
    main()
