"""Data-parallel training on a Dask cluster (`pip install "bpcompile[dask]"`).

Dask moves the data and the gradients; the compiled network makes each worker fast. Each
step of synchronous data parallelism:

1. the params go out to the workers, inside the tasks that need them;
2. the global batch (the rows `training.batches` picks, exactly as one process would) is
   split by the row chunks the data lives in, and each chunk's worker computes
   `value_and_grad` on its share with its own compiled network, compiled there from the
   `.bp` source through its disk cache (an execution engine is never pickled);
3. the shares are combined by a tree reduction, pairwise in chunk order, weighted by the
   rows each covered;
4. the driver applies one optimizer update (`apply_gradients`).

A worker that dies mid-step loses nothing: its tasks are pure, so Dask recomputes them
elsewhere, and the combined gradient is the same sum in the same order, bit for bit; only the
driver updates, once per step.

The loss must be a mean or a sum over the rows of the batch (every loss built-in is), or the
shares would not add up to the whole; `row_reduction` checks that on real rows first.

Batch norm normalizes each row with the statistics of the whole batch, so its shares would
not add up: each would use its own rows' mean and variance. A network with batch norm takes
its step where its rows are gathered instead: each chunk sends the step's rows it holds (a
batch, not the chunk) to one task, which puts them in the global batch's order and runs the
network's own `step` on them, exactly as one process does, running statistics included. The
gradient is then not spread over the workers; what Dask still gives such a network is data
that lives on the cluster and need not fit on one machine. (Spreading it, as PyTorch's
SyncBatchNorm does, costs two reductions per batch-norm layer per step: the statistics on
the way forward, mean(dy) and mean(dy * x_hat) on the way back.)
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..errors import BPError, BPNameError, BPNumericError, BPTypeError
from ..runtime.net import Arrays, CompiledNet
from ..runtime.randomness import RNG
from . import dataset as datasets
from .checkpoint import Checkpoint, Progress
from .loop import EpochHook, TrainResult, fit

try:
    import dask.array as da
    from dask import delayed
    from distributed import Client, Future
except ImportError:  # the extra is not installed: `require()` says how to get it
    da = None

INSTALL = 'pip install "bpcompile[dask]"  (or: pip install "dask[array]" distributed)'


def require() -> None:
    if da is None:
        raise BPError(f"training on a Dask cluster needs dask and distributed: {INSTALL}")


# ----------------------------------------------------------------- on the workers


@dataclass(frozen=True)
class NetSpec:
    """What a worker needs to compile the network itself: text, not an engine."""

    source: str
    filename: str
    backend: str
    dtype: str

    @classmethod
    def of(cls, net: CompiledNet) -> NetSpec:
        return cls(net.source, net.signature.filename, net.backend, net.dtype.name)


@lru_cache(maxsize=8)
def compiled(spec: NetSpec) -> CompiledNet:
    """This process's network for `spec`, compiled once (through the disk cache)."""
    from ..api import compile

    return compile(spec.source, backend=spec.backend, dtype=spec.dtype,
                   filename=spec.filename)


Share = tuple[int, float, Arrays]  # rows covered, weighted loss, weighted gradients


def share(spec: NetSpec, weighting: str, params: Arrays, whole: Arrays,
          chunk: Arrays, rows: np.ndarray, positions: np.ndarray,
          rng: np.ndarray | None) -> Share:
    """One chunk's part of a step: value_and_grad on its rows of the global batch, weighted
    so that shares add up (a mean loss is weighted by its rows, a sum loss is not); with
    dropout, the rows' part of the whole batch's masks (`positions`, `rng`)."""
    net = compiled(spec)
    data = {**whole, **rows_of(chunk, rows)}
    keyed = {} if rng is None else {"state": {RNG: rng}, "mask_rows": positions}
    loss, grads = net.value_and_grad(params, **keyed, **data)
    weight = len(rows) if weighting == "mean" else 1
    return len(rows), loss * weight, {name: g * weight for name, g in grads.items()}


def rows_of(chunk: Arrays, rows: np.ndarray) -> Arrays:
    """A chunk's rows of the global batch (on the worker that holds the chunk)."""
    return {name: array[rows] for name, array in chunk.items()}


def gathered_step(spec: NetSpec, params: Arrays, state: Arrays, whole: Arrays,
                  pieces: list[Arrays], positions: np.ndarray) -> tuple[float, Arrays, Arrays]:
    """A whole step on one worker: the batch's rows, sent by the chunks holding them, put
    back in the batch's order (`positions`: where each sits), then `step` on copies of the
    params and state. Returns the loss and the new params (running statistics too) and
    state; a pure task, so a retry elsewhere gives the same."""
    net = compiled(spec)
    order = np.argsort(positions, kind="stable")
    batch = {name: np.concatenate([piece[name] for piece in pieces])[order]
             for name in pieces[0]}
    p = {name: array.copy() for name, array in params.items()}
    s = {name: array.copy() for name, array in state.items()}
    loss = net.step(p, s, **whole, **batch)
    return loss, p, s


def same(value: object) -> object:
    """The value itself: a task that keeps arrays without the batch dim on the cluster,
    rebuilt from its spec if its worker dies."""
    return value


def first_rows(chunk: Arrays, count: int) -> Arrays:
    """The first `count` rows of each array of a chunk (on a worker)."""
    return {name: array[:count] for name, array in chunk.items()}


def combine(a: Share, b: Share) -> Share:
    """Two shares as one (a node of the tree reduction)."""
    return a[0] + b[0], a[1] + b[1], {name: a[2][name] + b[2][name] for name in a[2]}


def read_rows(path: str, start: int, stop: int) -> np.ndarray:
    """Rows start:stop of an `.npy` file, read through a memory map (on a worker)."""
    return np.array(np.load(path, mmap_mode="r")[start:stop])


# ------------------------------------------------------------------ on the driver


def lazy_npy(path: str | Path, rows_per_chunk: int) -> da.Array:
    """An `.npy` file as a Dask array read lazily by the workers, chunk by chunk: it never
    has to fit in the driver's memory (the workers need the same path)."""
    require()
    path = str(Path(path).resolve())
    header = np.load(path, mmap_mode="r", allow_pickle=False)  # maps, reads no rows
    shape, dtype = header.shape, header.dtype
    del header
    if not shape:
        raise BPTypeError(f"{path}: a 0-d array has no rows to split")
    pieces = [da.from_delayed(delayed(read_rows)(path, a, min(a + rows_per_chunk, shape[0])),
                              (min(a + rows_per_chunk, shape[0]) - a, *shape[1:]), dtype)
              for a in range(0, shape[0], rows_per_chunk)]
    return da.concatenate(pieces, axis=0)


def start_client(address: str) -> Client:
    """`local:N` starts a cluster of N worker processes on this machine (one thread each);
    anything else is the address of a running scheduler, as `tcp://host:8786`."""
    require()
    if address.startswith("local:"):
        workers = address.removeprefix("local:")
        if not workers.isdigit() or int(workers) < 1:
            raise BPTypeError(f"--dask local:N needs a number of workers, not '{workers}'")
        # the client starts the cluster, and closes it with itself. Its workers log only
        # what is critical: closing the cluster, a worker's heartbeat can find the
        # scheduler gone and log an ERROR with a traceback (Dask's shutdown noise, on a run
        # that succeeded); a failing task still reaches us as the exception it raised
        return Client(n_workers=int(workers), threads_per_worker=1, processes=True,
                      dashboard_address=None, silence_logs=logging.CRITICAL)
    try:
        return Client(address, timeout=30)
    except OSError as error:
        raise BPError(f"cannot reach the Dask scheduler at {address}: {error}") from None


def row_reduction(net: CompiledNet, p: Arrays, rows: Arrays, whole: Arrays) -> str:
    """'mean' or 'sum': how the loss combines the rows of a batch, found on real rows
    (two parts of different sizes against the whole); BPError if it is neither."""
    count = len(next(iter(rows.values())))
    if count < 3:
        raise BPTypeError("data-parallel training needs at least 3 rows")
    cut = count // 3

    def part(which: slice) -> float:
        return net.loss(p, **whole, **{name: a[which] for name, a in rows.items()})

    total, first, second = part(slice(None)), part(slice(0, cut)), part(slice(cut, None))
    # the rounding of sums over the rows in the net's dtype: 1e-4 in float32, 2e-13 in
    # float64; a loss that is neither misses by far more on real rows
    tolerance = 1000 * float(np.finfo(net.dtype).eps)
    scale = max(abs(total), abs(first), abs(second), 1e-300)

    def close(value: float) -> bool:
        return math.isclose(value, total, rel_tol=tolerance, abs_tol=tolerance * scale)

    if close((cut * first + (count - cut) * second) / count):
        return "mean"
    if close(first + second):
        return "sum"
    raise BPTypeError(
        f"network {net.name}: data-parallel training needs a loss that is a mean or a sum "
        f"over the rows of a batch, and this one is neither (on {count} rows the loss is "
        f"{total:.6g}; on their first {cut} rows {first:.6g}, on the rest {second:.6g})")


class ClusterData:
    """A network's data on the cluster: the batched arrays in row chunks (the same chunks
    for all), persisted on the workers; arrays without the batch dim, broadcast whole."""

    def __init__(self, client: Client, arrays: Mapping[str, object], batched: frozenset[str],
                 workers: int) -> None:
        first = next(name for name in arrays if name in batched)
        lead = _as_dask(arrays[first], None, workers)
        self.rows = int(lead.shape[0])
        self.chunks = lead.chunks[0]
        self.starts = np.cumsum((0,) + self.chunks)
        parts: dict[str, list[Future]] = {}
        for name in batched:
            array = _as_dask(arrays[name], self.chunks, workers)
            if array.shape[0] != self.rows:
                raise BPTypeError(f"{name} has {array.shape[0]} rows, but {first} has "
                                  f"{self.rows}")
            with warnings.catch_warnings():
                # NumPy data goes out inside the task graph on purpose: a chunk whose
                # worker dies is then rebuilt from the graph (scattered data would be lost)
                warnings.filterwarnings("ignore", "Sending large graph", UserWarning)
                parts[name] = client.compute(list(array.to_delayed().ravel()))
        self.chunk_futures = [{name: parts[name][k] for name in batched}
                              for k in range(len(self.chunks))]
        whole = {name: np.asarray(a) for name, a in arrays.items() if name not in batched}
        self.whole = client.submit(same, whole, pure=False) if whole else None
        self.whole_local = whole
        self.batched = batched
        self.client = client

    def head(self, count: int) -> Arrays:
        """Up to `count` rows of the batched arrays, on the driver, for checks: sliced on
        the workers, chunk after chunk (a chunk may hold fewer rows than wanted, and the
        driver need not hold a whole one)."""
        parts: list[Arrays] = []
        for chunk in self.chunk_futures:
            have = sum(len(next(iter(part.values()))) for part in parts)
            if have >= count:
                break
            parts.append(self.client.submit(first_rows, chunk, count - have,
                                            pure=False).result())
        return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}

    def split(self, rows: np.ndarray) -> list[tuple[int, np.ndarray, np.ndarray]]:
        """A global batch's rows, as (chunk, rows within it, where each sits in the batch)
        for the chunks it touches: the positions key dropout's masks, as in one process."""
        order = np.argsort(rows, kind="stable")
        rows = rows[order]
        result = []
        for k, (start, stop) in enumerate(zip(self.starts[:-1], self.starts[1:])):
            lo, hi = np.searchsorted(rows, [start, stop])
            if hi > lo:
                result.append((k, rows[lo:hi] - start, order[lo:hi]))
        return result


def _as_dask(array: object, chunks: tuple[int, ...] | None, workers: int) -> da.Array:
    """A Dask array split along its rows: into `chunks`, or into about one chunk per
    worker."""
    if not isinstance(array, da.Array):
        array = np.asarray(array)
        array = da.from_array(array, chunks=(-(-len(array) // workers),) + array.shape[1:])
    if chunks is not None and array.chunks[0] != chunks:
        array = array.rechunk({0: chunks})
    return array.rechunk({axis: -1 for axis in range(1, array.ndim)}) if array.ndim > 1 \
        else array


def tree_reduce(client: Client, shares: list[Future]) -> Future:
    """Shares combined pairwise, in a fixed order: the same sum whichever worker adds."""
    while len(shares) > 1:
        paired = [client.submit(combine, shares[k], shares[k + 1], pure=False)
                  for k in range(0, len(shares) - 1, 2)]
        shares = paired + ([shares[-1]] if len(shares) % 2 else [])
    return shares[0]


def global_gradient(client: Client, spec: NetSpec, weighting: str, params: Arrays,
                    data: ClusterData, rows: np.ndarray,
                    rng: np.ndarray | None = None) -> tuple[float, Arrays]:
    """The loss and gradient of one global batch, computed where its rows are."""
    shares = [client.submit(share, spec, weighting, params, data.whole or {},
                            data.chunk_futures[k], local, positions, rng, pure=False)
              for k, local, positions in data.split(rows)]
    covered, loss, grads = tree_reduce(client, shares).result()
    if weighting == "mean":
        return loss / covered, {name: g / covered for name, g in grads.items()}
    return loss, grads


def cluster_stepper(client: Client, net: CompiledNet, data: ClusterData,
                    weighting: str) -> Callable[[Arrays, Arrays, np.ndarray], float]:
    """One synchronous data-parallel step: params out, shares in, one update here."""
    spec = NetSpec.of(net)

    def step(p: Arrays, s: Arrays, rows: np.ndarray) -> float:
        # In each task's spec, not scattered: a task whose worker dies is run again
        # elsewhere with them, while scattered data would be lost (and a task of their
        # own would add a round trip, about 10 ms, to every step).
        params = {name: a.copy() for name, a in p.items()}
        rng = s[RNG].copy() if RNG in s else None  # apply_gradients then counts the step
        loss, grads = global_gradient(client, spec, weighting, params, data, rows, rng)
        if not math.isfinite(loss):
            raise BPNumericError(f"step: the loss is {loss}; step changed nothing")
        net.apply_gradients(p, s, grads)
        return loss

    return step


def gathering_stepper(client: Client, net: CompiledNet, data: ClusterData
                      ) -> Callable[[Arrays, Arrays, np.ndarray], float]:
    """A step of a network with batch norm: its rows gathered from their chunks into one
    task that steps as one process does (the module docstring says why)."""
    spec = NetSpec.of(net)

    def step(p: Arrays, s: Arrays, rows: np.ndarray) -> float:
        parts = data.split(rows)
        pieces = [client.submit(rows_of, data.chunk_futures[k], local, pure=False)
                  for k, local, _ in parts]
        positions = np.concatenate([where for _, _, where in parts])
        # the task copies what it steps (a retry must see its inputs unchanged), and this
        # process waits for it: the arrays go out as they are
        loss, new_p, new_s = client.submit(gathered_step, spec, p, s, data.whole or {},
                                           pieces, positions, pure=False).result()
        for name, array in new_p.items():
            p[name][...] = array
        for name, array in new_s.items():
            s[name][...] = array
        return loss

    return step


def train_on_cluster(client: Client, net: CompiledNet, arrays: Mapping[str, object], *,
                     epochs: int, batch_size: int = 32, seed: int = 0,
                     start: Checkpoint | None = None, progress_bar: bool = False,
                     on_epoch: EpochHook | None = None,
                     after_step: Callable[[int, int], None] | None = None) -> TrainResult:
    """`training.fit` with each step's gradient computed on the cluster: the same global
    batches, the same init, the same updates, so the same params as one process (to
    rounding). `arrays` holds Dask arrays (or NumPy ones) named like the network's data."""
    require()
    signature = net.signature
    missing = [name for name in signature.data if name not in arrays]
    if missing:
        raise BPNameError(f"no array named {', '.join(map(repr, missing))} (the network's "
                          f"data: {', '.join(map(repr, signature.data))})")
    dim = datasets.batch_dim(signature)
    if dim is None:
        raise BPTypeError(f"network {net.name}: no data array has a batch dim to split")
    batched = frozenset(n for n, shape in signature.data.items() if shape[:1] == (dim,))
    workers = max(1, len(client.scheduler_info()["workers"]))
    data = ClusterData(client, {n: arrays[n] for n in signature.data}, batched, workers)
    if start is None:
        params = net.init(seed=seed)
        start = Checkpoint(params, net.init_state(params, seed=seed), Progress(), seed)
    if signature.batch_counts:  # batch norm: the whole batch's statistics, on one worker
        stepper = gathering_stepper(client, net, data)
    else:
        weighting = row_reduction(net, start.params, data.head(64), data.whole_local)
        stepper = cluster_stepper(client, net, data, weighting)
    rows = datasets.Dataset({}, batched, data.rows, "the cluster's data")
    return fit(net, rows, epochs=epochs, batch_size=batch_size, seed=seed, start=start,
               progress_bar=progress_bar, on_epoch=on_epoch, after_step=after_step,
               stepper=stepper)
