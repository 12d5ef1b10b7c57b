"""CompiledNet: what `bpcompile.compile` returns. It checks every array a call is given,
then hands the call to its backend's executor; it also draws initial params and state, which
do not depend on the backend."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from ..errors import BPNameError, BPShapeError, BPTypeError
from ..graph.shapes import Shape
from . import checks, initializers, params_file
from .randomness import RNG, check_rng, draw_masks, fresh_rng
from .signature import Signature
from .summary import net_html

if TYPE_CHECKING:  # types only: a network opened from the disk cache loads no SymPy
    from ..graph.ir import Graph
    from ..graph.network import Network

Arrays = dict[str, np.ndarray]


class Executor(Protocol):
    """A backend's compiled entry points; arrays arrive checked and converted."""

    code: str

    def forward(self, p: Arrays, data: Arrays, sizes: dict[str, int]) -> Arrays: ...

    def loss(self, p: Arrays, data: Arrays, sizes: dict[str, int]) -> float: ...

    def value_and_grad(self, p: Arrays, data: Arrays,
                       sizes: dict[str, int]) -> tuple[float, Arrays]: ...

    def step(self, p: Arrays, s: Arrays, data: Arrays, sizes: dict[str, int]) -> float: ...

    def apply_gradients(self, p: Arrays, s: Arrays, grads: Arrays) -> None: ...


class Compiled(Protocol):
    """A network and its optimized graph (the driver's `Compiled`)."""

    network: Network
    graph: Graph

    def for_backend(self, backend: str) -> Graph: ...


class CompiledNet:
    """A compiled `.bp` network: init, forward, loss, value_and_grad, step, code.

    Calls need only its `signature`; the compiled graph (`compiled`, with SymPy inside) is
    built on first use when the network came from the disk cache.
    """

    def __init__(self, signature: Signature, backend: str, dtype: np.dtype,
                 executor: Executor, compiled: Callable[[], Compiled],
                 reopen: Callable[[np.dtype], CompiledNet],
                 inference: Callable[[], Executor] | None = None,
                 module: Callable[[], str] | None = None):
        self.signature = signature
        self.backend = backend
        self.dtype = dtype
        self._executor = executor
        # a modal network's inference-mode code, compiled when first called
        self._open_inference = inference
        self._inference: Executor | None = None
        # a modal network's standalone NumPy module (both modes), generated when asked for
        self._module = module
        self._build = compiled
        self._compiled: Compiled | None = None
        self._reopen = reopen
        self.name = signature.name
        self.source = signature.source
        # params are trained, buffers not; p holds both, as a torch state_dict does
        self.params: dict[str, tuple[int, ...]] = {n: i.shape
                                                   for n, i in signature.trained.items()}
        self.buffers: dict[str, tuple[int, ...]] = {n: i.shape
                                                    for n, i in signature.buffers.items()}
        self._stored = {n: i.shape for n, i in signature.params.items()}  # what p holds
        self.inputs: dict[str, Shape] = dict(signature.inputs)
        self.targets: dict[str, Shape] = dict(signature.targets)
        self.outputs: tuple[str, ...] = tuple(signature.outputs)
        self.state: dict[str, tuple[int, ...]] = dict(signature.state)

    @property
    def compiled(self) -> Compiled:
        """The network's optimized graph (built now if this net came from the cache)."""
        if self._compiled is None:
            self._compiled = self._build()
        return self._compiled

    @property
    def network(self) -> Network:
        return self.compiled.network

    def with_dtype(self, dtype: np.dtype) -> CompiledNet:
        """The same network on the same backend in another dtype (gradcheck's float64
        twin of a float32 network)."""
        return self._reopen(np.dtype(dtype))

    def __repr__(self) -> str:
        return (f"<CompiledNet {self.name} backend={self.backend} dtype={self.dtype.name} "
                f"params={list(self.params)}>")

    def _repr_html_(self) -> str:
        """Jupyter's view: a table of params, data, outputs and optimizer."""
        return net_html(self.signature, self.backend, self.dtype.name)

    @property
    def has_loss(self) -> bool:
        return self.signature.has_loss

    # ---------------------------------------------------------------- entry points

    def init(self, seed: int = 0) -> Arrays:
        """Fresh params: C-contiguous arrays of the net's dtype, drawn in declaration order."""
        rng = np.random.default_rng(seed)
        params = {}
        for name, info in self.signature.params.items():
            try:
                # np.asarray, not np.ascontiguousarray, which makes a 0-d (`[]`) param 1-d
                params[name] = np.asarray(initializers.draw(info.init, info.shape, rng),
                                          dtype=self.dtype, order="C")
            except MemoryError:
                size = int(np.prod(info.shape, dtype=np.float64))
                raise BPShapeError(
                    f"init: param {name} {list(info.shape)} has {size:,} elements, more than "
                    f"fit in memory"
                ) from None
        return params

    def init_state(self, p: Mapping | None = None, seed: int = 0) -> Arrays:
        """Zeroed optimizer state (momentum buffers, Adam moments and step count); with
        dropout, also `rng`: the seed of its masks and the step count, [seed, 0]."""
        state = {name: np.zeros(shape, dtype=self.dtype) for name, shape in self.state.items()}
        if self.signature.masks:
            state[RNG] = fresh_rng(seed)
        return state

    def load_params(self, path: str | Path) -> Arrays:
        """The params and buffers saved at `path` (by `save_params`, or a training
        checkpoint, whose optimizer state and metadata are ignored), checked against this
        network and converted to its dtype; BPError naming what is missing or wrong."""
        return params_file.load_params(path, self._stored, self.dtype, self.name)

    def save_params(self, p: Mapping, path: str | Path, /) -> None:
        """Write the params and buffers of `p` (checked: every one, each of its shape) to
        `path`, an `.npz` that `load_params` and `np.load` read, atomically."""
        params = checks.check_params(p, self._stored, self.dtype, "save_params")
        params_file.save_params(path, params)

    def forward(self, p: Mapping, /, *, training: bool = False, state: Mapping | None = None,
                **data: object) -> Arrays:
        """The outputs, in inference mode unless `training` (then dropout draws the masks
        of `state`'s seed and step count, or of seed 0 and step 0). Targets given are
        ignored, so a whole batch's dict can be passed."""
        params = checks.check_params(p, self._stored, self.dtype, "forward")
        data = {name: value for name, value in data.items() if name not in self.targets}
        arrays, sizes = checks.check_data(data, self.inputs, self.dtype, "forward")
        checks.check_indices(arrays, self.signature.indices, "forward")
        self._check_least_sizes(sizes, "forward")
        run = self._mode(training, arrays, sizes, state, "forward")
        return _within_memory("forward", run.forward, params, arrays, sizes)

    def loss(self, p: Mapping, /, *, training: bool = False, state: Mapping | None = None,
             **data: object) -> float:
        """The loss, in inference mode unless `training` (as `forward`)."""
        self._need_loss("loss")
        params = checks.check_params(p, self._stored, self.dtype, "loss")
        arrays, sizes = checks.check_data(data, self.signature.data, self.dtype, "loss")
        checks.check_indices(arrays, self.signature.indices, "loss")
        self._check_least_sizes(sizes, "loss")
        run = self._mode(training, arrays, sizes, state, "loss")
        return _within_memory("loss", run.loss, params, arrays, sizes)

    def value_and_grad(self, p: Mapping, /, *, training: bool = True,
                       state: Mapping | None = None, mask_rows: object = None,
                       **data: object) -> tuple[float, Arrays]:
        """The loss and the gradient of every param, in training mode unless told (as
        `forward`: dropout's masks are those `step` would draw with this `state`).
        `mask_rows`, for a share of a batch computed apart (data-parallel training): where
        each row given sits in the whole batch, whose masks it then draws its part of."""
        self._need_loss("value_and_grad")
        params = checks.check_params(p, self._stored, self.dtype, "value_and_grad")
        arrays, sizes = checks.check_data(data, self.signature.data, self.dtype,
                                          "value_and_grad")
        checks.check_indices(arrays, self.signature.indices, "value_and_grad")
        self._check_least_sizes(sizes, "value_and_grad")
        run = self._mode(training, arrays, sizes, state, "value_and_grad", mask_rows)
        return _within_memory("value_and_grad", run.value_and_grad, params, arrays, sizes)

    def step(self, p: Mapping, s: Mapping, /, *, training: bool = True,
             **data: object) -> float:
        """One training step in place on `p` and `s` (and, in training mode, batch norm's
        running statistics in `p`); the loss before the update. Dropout draws the masks of
        `s`'s seed and step count, which then counts this step."""
        self._need_loss("step")
        rng = check_rng(s, "step") if self.signature.masks else None
        params = checks.check_in_place(p, self._stored, self.dtype, "param", "step")
        state = checks.check_in_place(_optimizer_state(s), self.state, self.dtype, "state",
                                      "step")
        checks.check_disjoint({**{f"param {n}": a for n, a in params.items()},
                               **{f"state {n}": a for n, a in state.items()}}, "step")
        arrays, sizes = checks.check_data(data, self.signature.data, self.dtype, "step")
        checks.check_indices(arrays, self.signature.indices, "step")
        self._check_least_sizes(sizes, "step")
        run = self._mode(training, arrays, sizes, s, "step")
        loss = _within_memory("step", run.step, params, state, arrays, sizes)
        if rng is not None:
            rng[1] += np.uint64(1)
        if run is self._executor:
            self._install_fast_step()
        return loss

    def apply_gradients(self, p: Mapping, s: Mapping, grads: Mapping, /) -> None:
        """One optimizer update with the gradients given (as value_and_grad returns them,
        e.g. summed or averaged over several batches or machines), in place on `p` and `s`.
        `step` is value_and_grad followed by this (batch norm's running statistics aside,
        which need the batch). A gradient that is not finite raises BPNumericError and
        changes nothing. With dropout, the step count in `s` counts this update."""
        self._need_loss("apply_gradients")
        call = "apply_gradients"
        rng = check_rng(s, call) if self.signature.masks else None
        params = checks.check_in_place(p, self._stored, self.dtype, "param", call)
        state = checks.check_in_place(_optimizer_state(s), self.state, self.dtype, "state",
                                      call)
        updated = {**{f"param {n}": a for n, a in params.items()},
                   **{f"state {n}": a for n, a in state.items()}}
        checks.check_disjoint(updated, call)
        given = checks.check_gradients(grads, self.params, self.dtype, updated.values(), call)
        self._executor.apply_gradients(params, state, given)
        if rng is not None:
            rng[1] += np.uint64(1)

    def _mode(self, training: object, arrays: Arrays, sizes: dict[str, int],
              state: Mapping | None, call: str, mask_rows: object = None) -> Executor:
        """The executor of the mode asked for; in training mode, dropout's masks drawn into
        `arrays` and batch norm's batches checked."""
        run = self._executor_for(training, call)
        if not training or not self.signature.modal:
            return run
        for counted, line in self.signature.batch_counts:
            values = math.prod(d if isinstance(d, int) else sizes[d] for d in counted)
            if values < 2:
                raise BPShapeError(
                    f"{call}: batchnorm at {self.signature.filename}:{line} needs more than "
                    f"one value per channel in training mode, but this batch gives "
                    f"{values} (sizes {sizes})")
        rng = None if state is None or not self.signature.masks else check_rng(state, call)
        rows = None
        if mask_rows is not None:
            rows = np.asarray(mask_rows)
            if rows.ndim != 1 or rows.dtype.kind not in "iu" or (rows < 0).any():
                raise BPTypeError(f"{call}: mask_rows must be a list of row positions (whole "
                                  f"numbers, 0 or more), not {rows.dtype} {rows.shape}")
        arrays.update(draw_masks(self.signature.masks, sizes, rng, self.dtype, rows))
        return run

    def _executor_for(self, training: object, call: str) -> Executor:
        if not isinstance(training, (bool, np.bool_)):
            raise BPTypeError(f"{call}: training must be True or False, not {training!r}")
        if training or not self.signature.modal:
            return self._executor
        if self._inference is None:
            assert self._open_inference is not None
            self._inference = self._open_inference()
        return self._inference

    def _install_fast_step(self) -> None:
        """Once a backend has a native step that checks arrays itself (the llvm backend),
        make it this network's `step`; it falls back to the method above for anything it
        does not accept as-is, so behaviour is the same."""
        install = getattr(self._executor, "install_fast_step", None)
        # the native path checks shapes and flags, not values or least sizes: class
        # indices and indexing along a size bound at call time need the checked path
        if install is not None and "step" not in self.__dict__ \
                and not self.signature.indices and not self.signature.least_sizes:
            fast = install(CompiledNet.step.__get__(self))
            if fast is not None:
                self.step = fast

    def code(self, training: bool | None = None) -> str:
        """The generated source: a Python module (numpy) or LLVM IR (llvm). For a network
        with dropout or batch norm, the numpy module holds both modes and draws dropout's
        masks itself; `training=True|False` gives the one mode's code the network runs
        (masks as arguments), which is also what the llvm backend shows by default."""
        if training is None:
            if self._module is not None:
                return self._module()
            training = True
        return self._executor_for(training, "code").code

    def _check_least_sizes(self, sizes: Mapping[str, int], call: str) -> None:
        checks.check_least_sizes(sizes, self.signature.least_sizes, self.signature.filename,
                                 call)

    def _need_loss(self, call: str) -> None:
        if not self.has_loss:
            raise BPNameError(f"{call}: network {self.name} has no loss statement")


def _optimizer_state(s: object) -> object:
    """`s` without dropout's `rng` entry, which is no array the compiled code reads."""
    if isinstance(s, Mapping) and RNG in s:
        return {k: v for k, v in s.items() if k != RNG}
    return s


def _within_memory(call: str, run: Callable, *args: object):
    """Run a call; a batch too large for memory is a BPError, not a MemoryError. Nothing
    has been changed then: both backends compute every new value before writing any."""
    try:
        return run(*args)
    except MemoryError:
        sizes = args[-1]
        raise BPShapeError(
            f"{call}: not enough memory for these arrays (sizes {sizes})"
        ) from None
