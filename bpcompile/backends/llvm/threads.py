"""One pool of native worker threads for the process, which compiled kernels split their
work over: `bpc_parallel(task, context)` runs `task(context, part, parts)` for every part,
part 0 on the calling thread and one part on each worker, and returns when all are done.

The pool is a small module of its own (IR below), compiled once per machine and cached like
the prebuilt library; network modules declare `bpc_parallel` and its address is registered
before they are loaded. The workers are started here, from Python, each running the native
`bpc_pool_worker` loop through ctypes with the GIL released; they never touch Python again.

How a worker waits: after a task it spins, yielding the core at each turn, so that the
next task of the same step (tens of microseconds later) starts at once; after SPINS turns
with nothing to do it sleeps on a condition variable, so an idle process costs nothing.
`bpc_parallel` wakes sleepers only when there are any (a sequentially consistent pair of
counters: the caller publishes the task and then reads `sleepers`, a worker counts itself
in `sleepers` and then reads the task, so at least one of them sees the other).

A call that finds the pool in use (a step on another thread) or not started (before
`start`, or in a child after fork) runs every part itself, in one call with parts = 1.
Our kernels split their work into parts whose results are what one pass over the whole
would write, bit for bit (split.py), so how many parts ran never changes them; a BLAS
product cut into parts (matmul.py) may round its last bit apart from the whole.

BPCOMPILE_THREADS sets how many threads a step uses (the caller's and the workers); by
default, the cores the process may run on.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

import llvmlite
from llvmlite import ir

from ...runtime import cache
from .loops import I32, I64, PTR, i64

if TYPE_CHECKING:
    from .jit import Engine

PARALLEL = "bpc_parallel"
SPINS = 4000          # turns a worker yields the core before sleeping (about a millisecond)
SYNC_BYTES = 128      # room for a pthread mutex or condition variable on any platform
ENV_THREADS = "BPCOMPILE_THREADS"

# The pool's state, one global: generation (bumped for each task), pending (parts not yet
# done), sleepers, busy (a call holds the pool), workers (0 until started), ready (workers
# that have entered their loop), stop, parts, task, context, mutex, condition.
FIELDS = ("generation", "pending", "sleepers", "busy", "workers", "ready", "stop", "parts")
# the C library's functions the pool calls, with how many pointers each takes
LIBC = {"pthread_mutex_init": 2, "pthread_mutex_lock": 1, "pthread_mutex_unlock": 1,
        "pthread_cond_init": 2, "pthread_cond_wait": 2, "pthread_cond_broadcast": 1,
        "sched_yield": 0}
TASK = ir.FunctionType(ir.VoidType(), [PTR, I64, I64])
SYNC = ir.ArrayType(ir.IntType(8), SYNC_BYTES)
# a literal struct, not a named one: LLVM renames a named type each time a module holding
# it is parsed into the same context (%bpc.pool.1, .2, ...), so `code` would differ per call
POOL = ir.LiteralStructType([I64] * len(FIELDS) + [PTR, PTR, SYNC, SYNC])
NAMED_FIELDS = ("task", "context", "mutex", "condition")
TASK_FIELD, CONTEXT_FIELD, MUTEX_FIELD, CONDITION_FIELD = (len(FIELDS) + k for k in range(4))


class Callee:
    """A function pointer as llvmlite's `call` takes a callee: it must tell the function's
    type, which an opaque pointer does not (as its InlineAsm does)."""

    def __init__(self, pointer: ir.Value, function_type: ir.FunctionType):
        self.pointer = pointer
        self.type = pointer.type
        self.function_type = function_type

    def get_reference(self) -> str:
        return self.pointer.get_reference()


class _Writer:
    """Writes the pool module."""

    def __init__(self) -> None:
        self.module = ir.Module(name="bpcompile_threads")
        self.pool = ir.GlobalVariable(self.module, POOL, "bpc_pool")
        self.pool.initializer = ir.Constant(POOL, None)
        self.pool.align = 64
        self.libc = {name: ir.Function(self.module, ir.FunctionType(I32, [PTR] * pointers),
                                       name) for name, pointers in LIBC.items()}

    def field(self, b: ir.IRBuilder, name: str | int) -> ir.Value:
        index = FIELDS.index(name) if isinstance(name, str) else name
        label = name if isinstance(name, str) else NAMED_FIELDS[index - len(FIELDS)]
        # no source_etype: llvmlite then types the pointer by the field
        return b.gep(self.pool, [ir.Constant(I32, 0), ir.Constant(I32, index)],
                     name=f"{label}.at")

    def load(self, b: ir.IRBuilder, name: str, ordering: str = "seq_cst") -> ir.Value:
        return b.load_atomic(self.field(b, name), ordering, 8, typ=I64, name=name)

    def store(self, b: ir.IRBuilder, name: str, value: ir.Value,
              ordering: str = "seq_cst") -> None:
        b.store_atomic(value, self.field(b, name), ordering, 8)

    def add(self, b: ir.IRBuilder, name: str, value: int, ordering: str = "seq_cst"
            ) -> ir.Value:
        return b.atomic_rmw("add", self.field(b, name), i64(value), ordering)

    def libc_call(self, b: ir.IRBuilder, name: str, *args: ir.Value) -> None:
        b.call(self.libc[name], list(args))

    def function(self, name: str, args: list[tuple[str, ir.Type]]
                 ) -> tuple[ir.Function, ir.IRBuilder, dict[str, ir.Value]]:
        f = ir.Function(self.module, ir.FunctionType(ir.VoidType(), [t for _, t in args]),
                        name)
        for arg, (arg_name, _) in zip(f.args, args):
            arg.name = arg_name
        return f, ir.IRBuilder(f.append_basic_block("entry")), dict(zip(
            (n for n, _ in args), f.args))

    def wait_until(self, b: ir.IRBuilder, done: Callable[[ir.IRBuilder], ir.Value],
                   label: str) -> None:
        """Spin, yielding the core, until done(b) is true."""
        f = b.function
        check, turn, after = (f.append_basic_block(f"{label}.{s}")
                              for s in ("check", "turn", "done"))
        b.branch(check)
        b.position_at_end(check)
        b.cbranch(done(b), after, turn)
        b.position_at_end(turn)
        self.libc_call(b, "sched_yield")
        b.branch(check)
        b.position_at_end(after)

    def reset(self) -> None:
        """`bpc_pool_reset()`: a fresh pool with no workers (at start, and in a child after
        fork, where the parent's workers do not exist and its locks may be held)."""
        _, b, _ = self.function("bpc_pool_reset", [])
        for name in FIELDS:
            self.store(b, name, i64(0))
        self.libc_call(b, "pthread_mutex_init", self.field(b, MUTEX_FIELD),
                       ir.Constant(PTR, None))
        self.libc_call(b, "pthread_cond_init", self.field(b, CONDITION_FIELD),
                       ir.Constant(PTR, None))
        b.ret_void()

    def open(self) -> None:
        """`bpc_pool_open(workers)`: let calls use the workers (once all are in their loop)."""
        _, b, arg = self.function("bpc_pool_open", [("workers", I64)])
        self.wait_until(b, lambda b: b.icmp_signed("==", self.load(b, "ready"),
                                                   arg["workers"]), "ready")
        self.store(b, "workers", arg["workers"])
        b.ret_void()

    def wake_sleepers(self, b: ir.IRBuilder) -> None:
        with b.if_then(b.icmp_signed("!=", self.load(b, "sleepers"), i64(0))):
            mutex = self.field(b, MUTEX_FIELD)
            self.libc_call(b, "pthread_mutex_lock", mutex)
            self.libc_call(b, "pthread_cond_broadcast", self.field(b, CONDITION_FIELD))
            self.libc_call(b, "pthread_mutex_unlock", mutex)

    def close(self) -> None:
        """`bpc_pool_close()`: once no call holds the pool, no call will use the workers,
        and each worker leaves its loop."""
        _, b, _ = self.function("bpc_pool_close", [])
        self.wait_until(b, self.acquire, "idle")
        self.store(b, "workers", i64(0))
        self.store(b, "stop", i64(1))
        self.add(b, "generation", 1)
        self.wake_sleepers(b)
        self.wait_until(b, lambda b: b.icmp_signed("==", self.load(b, "ready"), i64(0)),
                        "left")
        self.store(b, "busy", i64(0))
        b.ret_void()

    def acquire(self, b: ir.IRBuilder) -> ir.Value:
        """Take the pool if no call holds it: true if taken."""
        swap = b.cmpxchg(self.field(b, "busy"), i64(0), i64(1), "seq_cst", "seq_cst")
        return b.extract_value(swap, 1)

    def run_task(self, b: ir.IRBuilder, task: ir.Value, context: ir.Value, part: ir.Value,
                 parts: ir.Value) -> None:
        b.call(Callee(task, TASK), [context, part, parts])

    def worker(self) -> None:
        """`bpc_pool_worker(index)`: run part `index` of each task, until stopped."""
        f, b, arg = self.function("bpc_pool_worker", [("index", I64)])
        seen, spins = b.alloca(I64, name="seen"), b.alloca(I64, name="spins")
        b.store(self.load(b, "generation"), seen)
        self.add(b, "ready", 1)
        blocks = ("idle", "spin", "turn", "yield", "sleep", "asleep", "recheck", "awake",
                  "work", "stopped", "run")
        block = {name: f.append_basic_block(name) for name in blocks}
        b.branch(block["idle"])

        b.position_at_end(block["idle"])
        b.store(i64(0), spins)
        b.branch(block["spin"])

        b.position_at_end(block["spin"])
        generation = self.load(b, "generation")
        fresh = b.icmp_signed("!=", generation, b.load(seen, typ=I64))
        b.cbranch(fresh, block["work"], block["turn"])

        b.position_at_end(block["turn"])
        count = b.load(spins, typ=I64)
        b.store(b.add(count, i64(1)), spins)
        b.cbranch(b.icmp_signed("<", count, i64(SPINS)), block["yield"], block["sleep"])
        b.position_at_end(block["yield"])
        self.libc_call(b, "sched_yield")
        b.branch(block["spin"])

        b.position_at_end(block["sleep"])
        mutex, condition = self.field(b, MUTEX_FIELD), self.field(b, CONDITION_FIELD)
        self.libc_call(b, "pthread_mutex_lock", mutex)
        self.add(b, "sleepers", 1)
        b.branch(block["recheck"])
        b.position_at_end(block["recheck"])
        still = b.icmp_signed("==", self.load(b, "generation"), b.load(seen, typ=I64))
        b.cbranch(still, block["asleep"], block["awake"])
        b.position_at_end(block["asleep"])
        self.libc_call(b, "pthread_cond_wait", condition, mutex)
        b.branch(block["recheck"])
        b.position_at_end(block["awake"])
        self.add(b, "sleepers", -1)
        self.libc_call(b, "pthread_mutex_unlock", mutex)
        b.branch(block["idle"])

        b.position_at_end(block["work"])
        b.store(generation, seen)
        b.cbranch(b.icmp_signed("!=", self.load(b, "stop"), i64(0)), block["stopped"],
                  block["run"])
        b.position_at_end(block["stopped"])
        self.add(b, "ready", -1)
        b.ret_void()

        b.position_at_end(block["run"])
        self.run_task(b, b.load(self.field(b, TASK_FIELD), typ=PTR),
                      b.load(self.field(b, CONTEXT_FIELD), typ=PTR), arg["index"],
                      self.load(b, "parts", "acquire"))
        self.add(b, "pending", -1, "release")
        b.branch(block["idle"])

    def parallel(self) -> None:
        """`bpc_parallel(task, context)`: every part of the task, part 0 here."""
        f, b, arg = self.function(PARALLEL, [("task", PTR), ("context", PTR)])
        workers = self.load(b, "workers", "acquire")
        alone, shared = f.append_basic_block("alone"), f.append_basic_block("shared")
        taken = f.append_basic_block("taken")
        b.cbranch(b.icmp_signed("==", workers, i64(0)), alone, taken)
        b.position_at_end(taken)
        b.cbranch(self.acquire(b), shared, alone)

        b.position_at_end(alone)
        self.run_task(b, arg["task"], arg["context"], i64(0), i64(1))
        b.ret_void()

        b.position_at_end(shared)
        workers = self.load(b, "workers", "acquire")  # close() may have run meanwhile
        parts = b.add(workers, i64(1))
        b.store(arg["task"], self.field(b, TASK_FIELD))  # published by the generation's bump
        b.store(arg["context"], self.field(b, CONTEXT_FIELD))
        self.store(b, "parts", parts, "release")
        self.store(b, "pending", workers, "release")
        self.add(b, "generation", 1)
        self.wake_sleepers(b)
        self.run_task(b, arg["task"], arg["context"], i64(0), parts)
        self.wait_until(b, lambda b: b.icmp_signed(
            "==", self.load(b, "pending", "acquire"), i64(0)), "pending")
        self.store(b, "busy", i64(0), "release")
        b.ret_void()


def pool_ir() -> str:
    writer = _Writer()
    writer.reset()
    writer.open()
    writer.close()
    writer.worker()
    writer.parallel()
    return str(writer.module)


class Pool:
    """The process's pool: its compiled module and its worker threads."""

    def __init__(self) -> None:
        self.engine = _engine()
        self.calls = {name: ctypes.CFUNCTYPE(None, *args)(self.engine.address(name))
                      for name, args in (("bpc_pool_reset", ()),
                                         ("bpc_pool_open", (ctypes.c_int64,)),
                                         ("bpc_pool_close", ()),
                                         ("bpc_pool_worker", (ctypes.c_int64,)))}
        self.threads: list[threading.Thread] = []
        self.calls["bpc_pool_reset"]()

    def start(self, workers: int) -> None:
        """Start `workers` threads (after stopping any running)."""
        self.stop()
        self.threads = [threading.Thread(target=self.calls["bpc_pool_worker"], args=(k,),
                                         name=f"bpcompile-worker-{k}", daemon=True)
                        for k in range(1, workers + 1)]
        for thread in self.threads:
            thread.start()
        self.calls["bpc_pool_open"](workers)

    def stop(self) -> None:
        if self.threads:
            self.calls["bpc_pool_close"]()
            for thread in self.threads:
                thread.join()
            self.threads = []
            self.calls["bpc_pool_reset"]()

    def after_fork(self) -> None:
        """In a child: the parent's workers are not here; start the child's own."""
        workers = len(self.threads)
        self.threads = []
        self.calls["bpc_pool_reset"]()
        if workers:
            self.start(workers)


def threads_wanted() -> int:
    """How many threads a step may use: BPCOMPILE_THREADS, else the cores this process may
    run on."""
    text = os.environ.get(ENV_THREADS, "").strip()
    if text:
        try:
            wanted = int(text)
        except ValueError:
            raise ValueError(f"{ENV_THREADS}={text!r}: expected a whole number of threads, "
                             "at least 1") from None
        if wanted < 1:
            raise ValueError(f"{ENV_THREADS}={text!r}: expected at least 1 thread")
        return wanted
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


_POOL: Pool | None = None
_LOCK = threading.Lock()


def load() -> int:
    """Compile (or load from the disk cache) the pool, start its workers the first time,
    and register `bpc_parallel`; returns its address."""
    global _POOL
    import llvmlite.binding as llvm

    with _LOCK:
        if _POOL is None:
            _POOL = Pool()
            _POOL.start(threads_wanted() - 1)
            atexit.register(_POOL.stop)
            if hasattr(os, "register_at_fork"):
                os.register_at_fork(after_in_child=_POOL.after_fork)
        address = _POOL.engine.address(PARALLEL)
        llvm.add_symbol(PARALLEL, address)
        return address


def restart(threads: int) -> None:
    """Use `threads` threads from now on (1: every part on the calling thread)."""
    load()
    assert _POOL is not None
    with _LOCK:
        _POOL.start(threads - 1)


def _engine() -> Engine:
    from .jit import compile_ir, host

    cpu, features = host()
    name = cache.key("thread pool", llvmlite.__version__, cpu, features, str(SPINS),
                     str(SYNC_BYTES)) + ".o"
    cached = cache.load(name)
    if cached is not None:
        engine, _ = compile_ir("", object_code=cached[1])
        return engine
    engine, object_code = compile_ir(pool_ir())
    if object_code:
        cache.store(name, {"library": "thread pool"}, object_code)
    return engine
