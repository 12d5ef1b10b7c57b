"""LLVM's time for a network's step module: the IR bpcompile prints for `step` (with the
fast path), optimized at O3 and compiled to an object, best of --repeats, and its size in
lines; with --against, the same for another checkout of bpcompile (an older commit, say),
the two modules compiled alternately in one process, so that both meet the same machine.

    python benchmarks/llvm_time.py --workloads xor,mlp,digits_full [--against DIR]

DIR is the root of another checkout (`git worktree add /tmp/old COMMIT`); each side's IR
is printed in a process of its own, importing that side's bpcompile.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

PRINT = """
import json, sys
sys.path.insert(0, {root!r})
sys.path.insert(1, {here!r})
import bpcompile
from bpcompile.backends.llvm import codegen, jit
from workloads import WORKLOADS
texts = {{}}
for name in {names!r}:
    w = next(w for w in WORKLOADS if w.name == name)
    net = bpcompile.compile(w.source, backend="llvm", dtype=w.dtype)
    e = net._executor
    texts[name] = codegen.generate(e.compiled(), e.signature, e.dtype.name,
                                   jit.vector_bytes(), ("step",), fast=True).ir
print(json.dumps(texts))
"""


def step_modules(root: Path, names: list[str]) -> dict[str, str]:
    """The step module's IR of each workload, as the bpcompile under `root` prints it."""
    script = PRINT.format(root=str(root), here=str(HERE), names=names)
    env = {**os.environ, "BPCOMPILE_CACHE_DIR": "off"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          check=True, env=env)
    return json.loads(done.stdout.strip().splitlines()[-1])


def llvm_seconds(ir_text: str) -> float:
    """Parse, optimize and compile `ir_text` to an object once."""
    import llvmlite.binding as llvm

    from bpcompile.backends.llvm import jit

    module = llvm.parse_assembly(ir_text)
    start = time.perf_counter()
    jit.optimize(module)
    jit.new_target_machine().emit_object(module)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", default="xor,mlp,digits_full")
    parser.add_argument("--against", type=Path, help="another checkout's root")
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    names = args.workloads.split(",")
    sides = {"this": step_modules(HERE.parent, names)}
    if args.against:
        sides["against"] = step_modules(args.against.resolve(), names)
    best = {(side, name): float("inf") for side in sides for name in names}
    for _ in range(args.repeats):
        for name in names:
            for side, texts in sides.items():
                best[side, name] = min(best[side, name], llvm_seconds(texts[name]))
    header = "| workload | " + " | ".join(f"{side}: lines | {side}: LLVM (ms)" for side in sides)
    print(header + " |")
    print("| --- |" + " --- | --- |" * len(sides))
    for name in names:
        cells = " | ".join(f"{sides[side][name].count(chr(10)):,} | {best[side, name] * 1e3:.1f}"
                           for side in sides)
        print(f"| {name} | {cells} |")


if __name__ == "__main__":
    main()
