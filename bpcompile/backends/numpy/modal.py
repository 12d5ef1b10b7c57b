"""The standalone NumPy module of a network with modes (dropout, batch norm): both modes in
one file, as `compile` writes it and `net.code()` shows it.

Each mode's entry points are printed as module.py prints them, named for the mode
(`forward_training`, `forward_inference`); the training ones take dropout's masks as
arguments. The public `forward`, `loss`, `value_and_grad` and `step` take SPEC's `training=`
and `state=`, draw the masks the network's own calls draw (runtime/randomness.py: the same
generator, printed into the module) and call the mode's function.
"""

from __future__ import annotations

from collections.abc import Callable

from ...graph.network import MaskInfo
from ...runtime.net import Compiled
from ...runtime.randomness import GAMMA, RNG
from .helpers import HELPERS, helper_closure
from .module import ModuleWriter

# SplitMix64 and the masks, as runtime/randomness.py draws them (test_modes checks the two
# agree bit for bit). uint64 arrays wrap silently, as the generator wants.
DROPOUT_MASK = f'''def splitmix64(key, index):
    """Outputs number `index` (uint64 array, from 0) of SplitMix64 started at `key`
    (Steele, Lea and Flood, OOPSLA 2014)."""
    z = (np.asarray(index, dtype=np.uint64) + np.uint64(1)) * np.uint64({GAMMA:#x}) \\
        + np.uint64(key)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def dropout_mask(state, site, rate, shape):
    """The mask of the dropout numbered `site` (in file order) at the seed and step count in
    state["{RNG}"] (seed 0 and step 0 without a state): 0 where an element is dropped (the
    top 53 bits of its generator output, as a fraction of 2**53, below rate), else
    1 / (1 - rate)."""
    seed, step = (0, 0) if state is None else (int(state["{RNG}"][0]), int(state["{RNG}"][1]))
    key = splitmix64(splitmix64(seed, [step])[0], [site])[0]
    bits = splitmix64(key, np.arange(int(np.prod(shape))))
    kept = (bits >> np.uint64(11)) >= np.uint64(int(np.ceil(rate * 2.0**53)))
    scale = 0.0 if rate >= 1 else 1 / (1 - rate)
    return np.where(kept, scale, 0.0).astype(DTYPE).reshape(shape)'''

MODES_DOC = "In inference mode unless training=True."
MASKS_DOC = ("In training mode dropout's masks are those of the seed and step count in "
             "`{state}`{unless}.")


class ModalModuleWriter:
    """Prints the module of a network with modes from its two compiled graphs."""

    def __init__(self, training: Compiled, inference: Compiled, dtype: str):
        self.masks: dict[str, MaskInfo] = training.network.masks
        self.training = ModuleWriter(training, dtype, "_training", counts_steps=bool(self.masks))
        self.inference = ModuleWriter(inference, dtype, "_inference")
        self.network = training.network
        user = [n for n in self.network.inputs if n not in self.masks]
        self.inputs = user
        self.data = user + list(self.network.targets)

    def name(self, array: str) -> str:
        """An input's or a mask's argument name (the training module's)."""
        return self.training.arguments([array])[0]

    def draw_masks(self, data: list[str], state: str) -> list[str]:
        """Lines binding the size symbols the masks need, then each mask."""
        lines, bound = [], set()
        wanted = {d for info in self.masks.values() for d in info.shape if isinstance(d, str)}
        for array in data:
            for axis, dim in enumerate(self.network.data[array]):
                if dim in wanted and dim not in bound:
                    bound.add(dim)
                    lines.append(f"{self.training.size_var[dim]} = "
                                 f"np.shape({self.name(array)})[{axis}]")
        for mask, info in self.masks.items():
            dims = [str(d) if isinstance(d, int) else self.training.size_var[d]
                    for d in info.shape]
            shape = f"({dims[0]},)" if len(dims) == 1 else f"({', '.join(dims)})"
            lines.append(f"{self.name(mask)} = dropout_mask({state}, {info.site}, "
                         f"{info.rate!r}, {shape})  # {self.training.where((info.line,))}")
        return lines

    def dispatch(self, entry: str, data: list[str], training: bool, doc: str) -> str:
        """The public `entry`: the inference mode's function, or the masks drawn and the
        training mode's function called with them."""
        steps = entry == "step"
        head = ["p", "s"] if steps else ["p"]
        given = head + [self.name(n) for n in data]
        read = self.network.inputs if entry == "forward" else self.network.data
        with_masks = head + [self.name(n) for n in read]
        args = given + [f"training={training}"] + ([] if steps else ["state=None"])
        inference = f"{entry}_inference({', '.join(given)})"
        training_call = f"{entry}_training({', '.join(with_masks)})"
        masks = self.draw_masks(data, "s" if steps else "state")
        if steps and self.masks:   # the step is counted whichever the mode, as net.step does
            body = ["if training:", *(f"    {line}" for line in masks),
                    f"    loss = {training_call}", "else:", f"    loss = {inference}",
                    f's["{RNG}"][1] += 1  # dropout\'s step count', "return loss"]
        else:
            body = ["if not training:", f"    return {inference}", *masks,
                    f"return {training_call}"]
        doc = f"{doc} {MODES_DOC}"
        if self.masks:
            unless = "" if steps else " (seed 0 and step 0 without one)"
            doc += " " + MASKS_DOC.format(state="s" if steps else "state", unless=unless)
        return self.training.function(entry, args, doc, body)

    def module(self) -> str:
        training, inference = self.training, self.inference
        public = [self.dispatch("forward", self.inputs, False,
                                "The network's outputs for inputs "
                                f"{', '.join(self.inputs) or '(none)'}.")]
        modes = [training.forward(), inference.forward()]
        shared = [training.init()]
        if training.graph.loss is not None:
            public += [
                self.dispatch("loss", self.data, False, "The loss, as a Python float."),
                self.dispatch("value_and_grad", self.data, True,
                              "The loss and its gradient with respect to every param."),
                self.dispatch("step", self.data, True,
                              f"One step of {self.network.optimizer.text}, in place on p "
                              f"and s (and batch norm's running statistics in p); the loss "
                              f"before the update."),
            ]
            modes += [training.loss(), inference.loss(), training.value_and_grad(),
                      inference.value_and_grad(), training.step(), inference.step()]
            shared += [training.init_state(), training.apply_gradients(), training.update()]
        helpers = [HELPERS[h] for h in helper_closure(training.helpers | inference.helpers)]
        if self.masks:
            helpers.append(DROPOUT_MASK)
        errors = training.errors()
        parts = ["\n".join(training.header()), errors, *helpers, *shared, *public, *modes]
        return "\n\n\n".join(parts) + "\n"


def generate(training: Callable[[], Compiled], inference: Callable[[], Compiled],
             dtype: str = "float64") -> str:
    """The module's source text."""
    return ModalModuleWriter(training(), inference(), dtype).module()
