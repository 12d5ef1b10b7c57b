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
machine's speed over all implementations alike. Other processes are watched too (through
/proc): a round during which they used more than --max-busy of the cores is timed again, since
a busy machine inflates every time, and PyTorch's, whose two OpenMP threads wait on each
other, many times over. The table reports the median time per step over the rounds, and each
peer's time as a ratio to the LLVM backend's in the same run (below 1 means the peer is
faster). Under it: the BLAS (and OpenMP) each worker loaded, as threadpoolctl sees it when
installed, and how busy the machine was otherwise. PyTorch eager,
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

IMPLEMENTATIONS = ("llvm", "llvm own gemm", "numpy", "hand numpy", "pytorch",
                   "torch.compile", "jax")
LABELS = {
    "llvm": "llvm",
    "llvm own gemm": "llvm, no BLAS",
    "numpy": "numpy backend",
    "hand numpy": "hand NumPy",
    "pytorch": "PyTorch eager",
    "torch.compile": "torch.compile",
    "jax": "JAX jit",
}
OPTIONAL_MODULES = {"pytorch": "torch", "torch.compile": "torch", "jax": "jax"}
WORKER_ENVIRONMENT = {"llvm own gemm": {"BPCOMPILE_NO_BLAS": "1"}}
DISTORTING_VARIABLES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")

# Generous: torch.compile's first build on a fresh machine takes about a minute on 2 cores.
STARTUP_TIMEOUT = 600.0
BLOCK_TIMEOUT = 120.0
# OpenBLAS's threads spin after their last call before they sleep (measured here: 20-30 ms
# of CPU, all within 100 ms of the block's end); a pause before each block keeps the last
# worker's spinning out of the next worker's block.
DEFAULT_SETTLE_MS = 150.0
# A round during which other processes used more than --max-busy of the cores is timed again,
# after a pause, up to RETRY_FACTOR times the rounds asked for in all.
DEFAULT_MAX_BUSY_PERCENT = 10.0
RETRY_FACTOR = 3
BUSY_PAUSE = 0.5


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

    pools: list[dict[str, Any]]
    notes: list[str]


@dataclass
class Measurement:
    """One workload: median microseconds per step, and what was learned on the way."""

    times: dict[str, float] = field(default_factory=dict)
    reports: dict[str, Report] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    foreign_load: float | None = None   # over the rounds used, as in foreign_share
    retaken: int = 0                    # rounds timed again because the machine was busy


def installed(impl: str) -> bool:
    """Whether the library `impl` needs is installed; found without importing it here."""
    module = OPTIONAL_MODULES.get(impl)
    return module is None or importlib.util.find_spec(module) is not None


def start_worker(impl: str, workload: str) -> Worker:
    log = tempfile.TemporaryFile()
    process = subprocess.Popen(
        [sys.executable, str(WORKER), impl, workload],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
        # the parent's environment, exactly (no thread-count tweaks), but for the llvm
        # backend without BLAS: every product its own packed GEMM or loop nest
        env=dict(os.environ, **WORKER_ENVIRONMENT.get(impl, {})),
    )
    return Worker(impl, process, log)


def ready(worker: Worker) -> Report:
    """Waits for the worker to build and warm up its step; WorkerError if it could not."""
    message = worker.receive(STARTUP_TIMEOUT)
    if not message["ok"]:
        raise WorkerError(message["error"])
    return Report(message["pools"], message["notes"])


def busy_ticks() -> int | None:
    """Clock ticks all cores of the machine have spent busy since boot (None off Linux)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return None
    # user nice system idle iowait irq softirq steal: all but idle and iowait are busy;
    # steal is time the hypervisor gave to another machine, as disturbing as a process.
    ticks = [int(value) for value in fields[:8]]
    return sum(ticks) - ticks[3] - ticks[4]


def process_ticks(pid: int) -> int:
    """Clock ticks process `pid` has run, all its threads together (0 once it is gone)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    # The command name, in parentheses, may hold spaces; utime and stime are the 12th and
    # 13th fields after it.
    fields = text.rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


@dataclass
class Snapshot:
    when: float
    busy: int | None   # the whole machine's busy ticks
    ours: int          # ticks of this process and its workers
    pids: list[int]


def snapshot(pids: list[int]) -> Snapshot:
    ours = sum(process_ticks(pid) for pid in pids)
    return Snapshot(time.perf_counter(), busy_ticks(), ours, pids)


def foreign_share(start: Snapshot, end: Snapshot) -> float | None:
    """The share of the machine's cores that anything but this process and its workers used
    between two snapshots. Ticks, not exact times, on both sides, so it is only good to a
    few percent over a round of about a second: enough to see another process at work."""
    if start.busy is None or end.busy is None:
        return None
    others = (end.busy - start.busy) - (end.ours - start.ours)
    capacity = (end.when - start.when) * os.sysconf("SC_CLK_TCK") * (os.cpu_count() or 1)
    return max(others, 0) / capacity


def time_block(worker: Worker, settle: float) -> float:
    """Seconds per step over one block of the worker's steps."""
    time.sleep(settle)
    worker.send("block")
    return worker.receive(BLOCK_TIMEOUT)["seconds"]


@dataclass
class Round:
    per_step: dict[str, float]   # seconds per step, by implementation
    foreign: float | None        # share of the cores others used meanwhile (foreign_share)


def time_round(workers: dict[str, Worker], order: list[str], settle: float,
               result: Measurement) -> Round:
    """One block of each worker, in `order`. A worker that dies is dropped and noted."""
    start = snapshot([os.getpid()] + [worker.process.pid for worker in workers.values()])
    per_step = {}
    for impl in order:
        try:
            per_step[impl] = time_block(workers[impl], settle)
        except WorkerError as error:
            result.skipped[impl] = f"died while timing: {error}"
            workers.pop(impl).close()
    return Round(per_step, foreign_share(start, snapshot(start.pids)))


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


def run_rounds(workers: dict[str, Worker], rounds: int, settle: float, max_busy: float,
               result: Measurement) -> list[Round]:
    """`rounds` rounds during which other processes used at most `max_busy` of the cores.
    A busier round is timed again after a pause, since on a shared machine someone else's
    test run slows every implementation, and PyTorch's (two OpenMP threads waiting on each
    other) many times over. If the machine never quietens, the least disturbed rounds fill
    up the count, and the report says so."""
    kept: list[Round] = []
    rejected: list[Round] = []
    attempts = 0
    while len(kept) < rounds and attempts < rounds * RETRY_FACTOR:
        timed = time_round(workers, rotated(list(workers), attempts), settle, result)
        attempts += 1
        if timed.foreign is None or timed.foreign <= max_busy:
            kept.append(timed)
        else:
            rejected.append(timed)
            time.sleep(BUSY_PAUSE)
    result.retaken = len(rejected)
    rejected.sort(key=lambda timed: timed.foreign or 0.0)
    return kept + rejected[:rounds - len(kept)]


def mean_foreign(rounds: list[Round]) -> float | None:
    shares = [timed.foreign for timed in rounds if timed.foreign is not None]
    return statistics.mean(shares) if shares else None


def measure(workload: str, impls: list[str], rounds: int, settle: float,
            max_busy: float) -> Measurement:
    result = Measurement()
    workers = start_all(workload, impls, result)
    try:
        timed = run_rounds(workers, rounds, settle, max_busy, result)
    finally:
        for worker in workers.values():
            worker.close()
    for impl in workers:  # the survivors
        values = [one.per_step[impl] for one in timed if impl in one.per_step]
        result.times[impl] = statistics.median(values) * 1e6
    result.foreign_load = mean_foreign(timed)
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


def load_lines(results: dict[str, Measurement], max_busy: float) -> list[str]:
    """How much of the machine other processes took during the rounds used, and how many
    rounds were timed again: printed always, since a busy machine inflates every time."""
    shares, retaken, warnings = [], [], []
    for name, result in results.items():
        if result.foreign_load is None:
            continue
        shares.append(f"{name} {result.foreign_load:.0%}")
        retaken.append(f"{name} {result.retaken}")
        if result.foreign_load > max_busy:
            warnings.append(f"warning: the machine stayed busy during {name}; its times are "
                            f"inflated")
    if not shares:
        return []
    return [f"cores used by other processes during the rounds used: {', '.join(shares)}",
            f"rounds timed again because others used over {max_busy:.0%} of the cores: "
            f"{', '.join(retaken)}"] + warnings


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
    from scaling_workloads import PREFIX as SCALING_PREFIX
    from workloads import WORKLOADS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", default=",".join(
        w.name for w in WORKLOADS if not w.name.startswith(SCALING_PREFIX)),
        help="names, comma-separated; `scaling` for every scale_* workload (batch and "
             "width swept; left out by default)")
    parser.add_argument("--implementations", default=",".join(IMPLEMENTATIONS))
    parser.add_argument("--rounds", type=int, default=15,
                        help="blocks timed per implementation and workload (default 15)")
    parser.add_argument("--settle-ms", type=float, default=DEFAULT_SETTLE_MS,
                        help="idle pause before each block (default %(default)s)")
    parser.add_argument("--max-busy", type=float, default=DEFAULT_MAX_BUSY_PERCENT,
                        help="percent of the cores other processes may use during a round "
                             "before it is timed again (default %(default)s)")
    parser.add_argument("--json", metavar="OUT.json",
                        help="also write the medians there: {workload: {implementation: us}} "
                             "(benchmarks/scaling_plot.py draws the scaling run's)")
    args = parser.parse_args()
    if args.workloads == "scaling":
        args.workloads = ",".join(w.name for w in WORKLOADS
                                  if w.name.startswith(SCALING_PREFIX))
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
        result = measure(name, impls, args.rounds, args.settle_ms / 1e3, args.max_busy / 100)
        results[name] = result
        summary = ", ".join(f"{impl} {t:,.1f} us" for impl, t in result.times.items())
        print(f"{name}: {summary}", file=sys.stderr, flush=True)
    shown = [impl for impl in impls if any(impl in r.times for r in results.values())]
    print(machine_line())
    print(f"median microseconds per training step over {args.rounds} rounds of one block "
          f"each, each implementation in its own process\n")
    print(table(results, shown))
    print("\nlibraries loaded, per implementation (threadpoolctl):")
    print("\n".join(library_lines(results, shown)))
    if args.json:
        Path(args.json).write_text(json.dumps(
            {name: result.times for name, result in results.items()}, indent=1))
    notes = [f"note: {LABELS[impl]} not installed, skipped" for impl in missing]
    for line in notes + skipped_lines(results) + load_lines(results, args.max_busy / 100):
        print(line)


if __name__ == "__main__":
    main()
