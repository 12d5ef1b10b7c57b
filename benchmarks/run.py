"""Time one full training step of each workload in every implementation, one at a time.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/run.py [--workloads xor,wide]

Unset those two variables: they make OpenBLAS pick another kernel or cache size than it
would on its own, and the run warns when either is set. Workers get this process's
environment unchanged.

Each implementation runs in a worker process of its own (benchmarks/timing_worker.py),
started once per workload and kept alive across rounds, so compiling and JIT warmup happen
once, before any timing, and no thread pool (OpenBLAS's, PyTorch's, XLA's) shares a process
with another's. In each round the parent asks every worker in turn, the order rotated each
round, to time one block of steps (enough for about 20 ms); only that worker runs, the others
wait blocked on a pipe, so they never compete for the cores, and a pause before each block
lets the last worker's spinning BLAS threads go to sleep. Rounds spread drift in the
machine's speed over all implementations alike. The table reports the median time per step
over the rounds, and each peer's time as a ratio to the LLVM backend's in the same run (below
1 means the peer is faster). Under it: the BLAS (and OpenMP) each worker loaded, as
threadpoolctl sees it when installed, and the share of the cores that other processes used
while blocks ran, which should be near 0%: on a busy machine every time is inflated, and
PyTorch's, whose two OpenMP threads wait on each other, by far the most. PyTorch eager,
torch.compile and JAX are used when installed, and skipped with a note when not, or when they
fail to build. Compile times are measured in fresh processes (see compile_times.py).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import platform
import select
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

HERE = Path(__file__).resolve().parent
WORKER = HERE / "timing_worker.py"

IMPLEMENTATIONS = ("llvm", "numpy", "hand numpy", "pytorch", "torch.compile", "jax")
LABELS = {
    "llvm": "llvm",
    "numpy": "numpy backend",
    "hand numpy": "hand NumPy",
    "pytorch": "PyTorch eager",
    "torch.compile": "torch.compile",
    "jax": "JAX jit",
}
OPTIONAL_MODULES = {"pytorch": "torch", "torch.compile": "torch", "jax": "jax"}
DISTORTING_VARIABLES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")

# Generous: torch.compile's first build on a fresh machine takes about a minute on 2 cores.
STARTUP_TIMEOUT = 600.0
BLOCK_TIMEOUT = 120.0
# OpenBLAS's threads spin after their last call before they sleep (measured here: 20-30 ms
# of CPU, all within 100 ms of the block's end); a pause before each block keeps the last
# worker's spinning out of the next worker's block.
DEFAULT_SETTLE_MS = 150.0


class WorkerError(RuntimeError):
    pass


@dataclass
class Worker:
    """One timing_worker.py process and the pipes to it."""

    impl: str
    process: subprocess.Popen[bytes]
    log: IO[bytes]
    pending: bytes = b""

    def send(self, command: str) -> None:
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(command.encode() + b"\n")
            self.process.stdin.flush()
        except BrokenPipeError as error:
            raise WorkerError(f"exited with {self.process.wait()}{self.log_tail()}") from error

    def receive(self, timeout: float) -> dict[str, Any]:
        """The next JSON line from the worker, or WorkerError if it dies or stays silent."""
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self.pending:
            remaining = deadline - time.monotonic()
            readable, _, _ = select.select([fd], [], [], max(remaining, 0.0))
            if not readable:
                raise WorkerError(f"no answer in {timeout:.0f} s{self.log_tail()}")
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                raise WorkerError(f"exited with {self.process.wait()}{self.log_tail()}")
            self.pending += chunk
        line, self.pending = self.pending.split(b"\n", 1)
        return json.loads(line)

    def log_tail(self) -> str:
        self.log.seek(0)
        lines = self.log.read().decode(errors="replace").strip().splitlines()
        return (": " + lines[-1]) if lines else ""

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.send("quit")
                self.process.wait(timeout=30)
            except (WorkerError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()
        self.log.close()


@dataclass
class Report:
    """What a worker said about itself once warmed up."""

    count: int
    pools: list[dict[str, Any]]
    notes: list[str]


@dataclass
class Measurement:
    """One workload: median microseconds per step, and what was learned on the way."""

    times: dict[str, float] = field(default_factory=dict)
    reports: dict[str, Report] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    foreign_load: float | None = None


def installed(impl: str) -> bool:
    """Whether the library `impl` needs is installed; found without importing it here."""
    module = OPTIONAL_MODULES.get(impl)
    return module is None or importlib.util.find_spec(module) is not None


def start_worker(impl: str, workload: str) -> Worker:
    log = tempfile.TemporaryFile()
    process = subprocess.Popen(
        [sys.executable, str(WORKER), impl, workload],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
        env=dict(os.environ),  # the parent's environment, exactly: no thread-count tweaks
    )
    return Worker(impl, process, log)


def ready(worker: Worker) -> Report:
    """Waits for the worker to build and warm up its step; WorkerError if it could not."""
    message = worker.receive(STARTUP_TIMEOUT)
    if not message["ok"]:
        raise WorkerError(message["error"])
    return Report(message["count"], message["pools"], message["notes"])


def machine_busy_seconds() -> float | None:
    """CPU seconds all cores of the machine have spent busy since boot (None off Linux)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return None
    # user nice system idle iowait irq softirq steal: all but idle and iowait are busy.
    ticks = [int(value) for value in fields[:8]]
    busy = sum(ticks) - ticks[3] - ticks[4]
    return busy / os.sysconf("SC_CLK_TCK")


@dataclass
class Block:
    per_step: float      # seconds per step
    wall: float          # seconds the block took
    cpu: float           # CPU seconds the worker used in it, all its threads
    busy: float | None   # CPU seconds the whole machine used meanwhile


def time_block(worker: Worker, settle: float) -> Block:
    time.sleep(settle)
    before = machine_busy_seconds()
    worker.send("block")
    answer = worker.receive(BLOCK_TIMEOUT)
    after = machine_busy_seconds()
    busy = None if before is None or after is None else after - before
    return Block(answer["seconds"], answer["wall"], answer["cpu"], busy)


def foreign_load(blocks: list[Block]) -> float | None:
    """The share of the machine's cores that something other than the timed worker used
    while blocks ran: other processes, or the hypervisor (steal). Near 0 is a clean run."""
    if not blocks or any(block.busy is None for block in blocks):
        return None
    wall = sum(block.wall for block in blocks)
    others = sum(block.busy - block.cpu for block in blocks)  # type: ignore[operator]
    return max(others, 0.0) / (wall * (os.cpu_count() or 1))


def rotated(items: list[str], shift: int) -> list[str]:
    """`items` started at position `shift`, so no implementation always goes first."""
    if not items:
        return items
    shift %= len(items)
    return items[shift:] + items[:shift]


def start_all(workload: str, impls: list[str], result: Measurement) -> dict[str, Worker]:
    """Starts the workers one after another, so that each warms up and calibrates alone."""
    workers = {}
    for impl in impls:
        worker = start_worker(impl, workload)
        try:
            result.reports[impl] = ready(worker)
        except WorkerError as error:
            result.skipped[impl] = str(error)
            worker.close()
            continue
        workers[impl] = worker
    return workers


def run_rounds(workers: dict[str, Worker], rounds: int, settle: float,
               result: Measurement) -> tuple[dict[str, list[float]], list[Block]]:
    """Seconds per step of each block, by implementation, and all blocks in order. A worker
    that dies on the way is dropped and its implementation noted as skipped."""
    samples: dict[str, list[float]] = {impl: [] for impl in workers}
    blocks: list[Block] = []
    for round_number in range(rounds):
        for impl in rotated(list(workers), round_number):
            try:
                block = time_block(workers[impl], settle)
            except WorkerError as error:
                result.skipped[impl] = f"died while timing: {error}"
                workers.pop(impl).close()
                del samples[impl]
                continue
            samples[impl].append(block.per_step)
            blocks.append(block)
    return samples, blocks


def measure(workload: str, impls: list[str], rounds: int, settle: float) -> Measurement:
    result = Measurement()
    workers = start_all(workload, impls, result)
    try:
        samples, blocks = run_rounds(workers, rounds, settle, result)
    finally:
        for worker in workers.values():
            worker.close()
    result.times = {impl: statistics.median(values) * 1e6 for impl, values in samples.items()}
    result.foreign_load = foreign_load(blocks)
    return result


def format_time(microseconds: float | None) -> str:
    if microseconds is None:
        return "-"
    if microseconds < 100:
        return f"{microseconds:,.1f}"
    return f"{microseconds:,.0f}"


def format_ratio(ratio: float | None) -> str:
    """Two significant digits or so, as in the README: 53x, 3.1x, 1.08x, 0.92x."""
    if ratio is None:
        return "-"
    if ratio >= 10:
        return f"{ratio:.0f}x"
    if ratio >= 2:
        return f"{ratio:.1f}x"
    return f"{ratio:.2f}x"


def table_row(name: str, times: dict[str, float], impls: list[str]) -> str:
    cells = [format_time(times.get(impl)) for impl in impls]
    for impl in impls[1:]:
        ratio = None
        if impl in times and "llvm" in times:
            ratio = times[impl] / times["llvm"]
        cells.append(format_ratio(ratio))
    return f"| {name} | " + " | ".join(cells) + " |"


def table(results: dict[str, Measurement], impls: list[str]) -> str:
    """A Markdown table: times first, then each peer over llvm (impls[0] is llvm)."""
    columns = [f"{LABELS[impl]} (us)" for impl in impls]
    columns += [f"{LABELS[impl]} / llvm" for impl in impls[1:]]
    lines = ["| workload | " + " | ".join(columns) + " |", "|" + " --- |" * (1 + len(columns))]
    for name, result in results.items():
        lines.append(table_row(name, result.times, impls))
    return "\n".join(lines)


def describe_pool(pool: dict[str, Any]) -> str:
    text = f"{pool['internal_api']} {pool['version'] or '(version unknown)'}"
    if pool.get("architecture"):
        text += f" kernel {pool['architecture']}"
    return text + f", {pool['num_threads']} threads"


def describe_worker(report: Report) -> str:
    blas = [describe_pool(p) for p in report.pools if p["user_api"] == "blas"]
    openmp = [describe_pool(p) for p in report.pools if p["user_api"] == "openmp"]
    if not report.pools:
        blas = ["unknown (install threadpoolctl to report it)"]
    parts = ["BLAS " + "; ".join(blas or ["none found"])]
    if openmp:
        parts.append("OpenMP " + "; ".join(openmp))
    return "; ".join(parts + report.notes)


def library_lines(results: dict[str, Measurement], impls: list[str]) -> list[str]:
    """One line per implementation; a second only where another workload's worker loaded
    something else (it should not)."""
    lines = []
    for impl in impls:
        seen: list[str] = []
        for result in results.values():
            report = result.reports.get(impl)
            if report is not None and describe_worker(report) not in seen:
                seen.append(describe_worker(report))
        lines += [f"  {LABELS[impl]}: {description}" for description in seen]
    return lines


def skipped_lines(results: dict[str, Measurement]) -> list[str]:
    lines = []
    for name, result in results.items():
        for impl, reason in result.skipped.items():
            first_line = reason.strip().splitlines()[0] if reason.strip() else "no reason given"
            lines.append(f"note: {LABELS[impl]} skipped on {name}: {first_line[:300]}")
    return lines


def load_lines(results: dict[str, Measurement]) -> list[str]:
    """How much of the machine other processes took while blocks ran: a shared machine's
    background work inflates every time, so it is printed whether or not it is small."""
    shares = {name: r.foreign_load for name, r in results.items() if r.foreign_load is not None}
    if not shares:
        return []
    listed = ", ".join(f"{name} {share:.0%}" for name, share in shares.items())
    lines = [f"cores used by other processes while blocks ran: {listed}"]
    for name, share in shares.items():
        if share > 0.05:
            lines.append(f"warning: on {name}, other processes took {share:.0%} of the cores; "
                         f"its times are inflated")
    return lines


def environment_warnings() -> list[str]:
    unset = " ".join(f"-u {name}" for name in DISTORTING_VARIABLES)
    return [f"warning: {name}={os.environ[name]} is set and overrides OpenBLAS's own choice "
            f"of kernel or blocking; run `env {unset} python benchmarks/run.py`"
            for name in DISTORTING_VARIABLES if name in os.environ]


def package_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def machine_line() -> str:
    return (f"machine: {platform.machine()}, {platform.processor() or 'cpu'}, "
            f"{os.cpu_count()} cores, Python {platform.python_version()}, "
            f"NumPy {package_version('numpy')}, PyTorch {package_version('torch')}, "
            f"JAX {package_version('jax')}")


def chosen_implementations(requested: str) -> tuple[list[str], list[str]]:
    """(to run, with llvm first since the ratios are to it; not installed)."""
    impls, missing = [], []
    for impl in requested.split(","):
        if impl not in LABELS:
            raise SystemExit(f"unknown implementation {impl!r}; known: {', '.join(LABELS)}")
        if installed(impl):
            impls.append(impl)
        else:
            missing.append(impl)
    impls = ["llvm"] + [impl for impl in impls if impl != "llvm"]
    return impls, missing


def parse_arguments() -> argparse.Namespace:
    from workloads import WORKLOADS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", default=",".join(w.name for w in WORKLOADS))
    parser.add_argument("--implementations", default=",".join(IMPLEMENTATIONS))
    parser.add_argument("--rounds", type=int, default=15,
                        help="blocks timed per implementation and workload (default 15)")
    parser.add_argument("--settle-ms", type=float, default=DEFAULT_SETTLE_MS,
                        help="idle pause before each block (default %(default)s)")
    args = parser.parse_args()
    unknown = set(args.workloads.split(",")) - {w.name for w in WORKLOADS}
    if unknown:
        parser.error(f"unknown workloads: {', '.join(sorted(unknown))}")
    return args


def main() -> None:
    sys.path.insert(0, str(HERE))
    args = parse_arguments()
    for line in environment_warnings():
        print(line, flush=True)
    impls, missing = chosen_implementations(args.implementations)
    results: dict[str, Measurement] = {}
    for name in args.workloads.split(","):
        result = measure(name, impls, args.rounds, args.settle_ms / 1e3)
        results[name] = result
        summary = ", ".join(f"{impl} {t:,.1f} us" for impl, t in result.times.items())
        print(f"{name}: {summary}", file=sys.stderr, flush=True)
    shown = [impl for impl in impls if any(impl in r.times for r in results.values())]
    print(machine_line())
    print(f"median microseconds per training step over {args.rounds} blocks, "
          f"each implementation in its own process\n")
    print(table(results, shown))
    print("\nlibraries loaded, per implementation (threadpoolctl):")
    print("\n".join(library_lines(results, shown)))
    notes = [f"note: {LABELS[impl]} not installed, skipped" for impl in missing]
    for line in notes + skipped_lines(results) + load_lines(results):
        print(line)


if __name__ == "__main__":
    main()
