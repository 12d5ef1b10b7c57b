"""`NET.h`: the C interface of an exported network (c_abi.py), with every array's shape and
every status a call returns written beside the prototypes, so the header is the manual."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ..graph.shapes import Shape
from ..runtime.signature import Signature
from .c_abi import BAD_INDEX, BAD_SIZE, NO_MEMORY, Part, c_sizes, shapes_of

TOP = """\
/* {prefix}.h: the network `{name}` ({filename}), exported by bpcompile with its trained
 * params. Link {prefix}.o into a program: cc -O2 main.c {prefix}.o -lm
 * It needs the C and math libraries only (no Python, NumPy or BLAS).
 *
 * Element type: {t}. Arrays are C-contiguous (row-major), of the shapes written beside
 * each function; each size (N, ...) is passed as an int64_t before the arrays.
 *
 * Params and buffers ({prefix}_param): {params}
 * Optimizer: {optimizer}
 *
 * Every int below is 0 on success; otherwise the call refused and changed nothing:
 *   {bad_size_name:{w}} a size below 0, too large, or too small for this network
 *   {no_memory_name:{w}} no memory for the workspace of this batch size
 *   {bad_index_name:{w}} a class index that is not a whole number in [0, classes)
 *   {one:{w}} the loss is not finite
 *   {two:{w}} the gradient of trained param k (counted from 0 in the order
 *   {blank:{w}} above, buffers left out) is not finite
 * (For those last two, *loss is written all the same, so that a program can report it.)
 * Calls on one {prefix} must not overlap; separate ones are independent.
 */
#ifndef {upper}_H
#define {upper}_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {{
#endif

#define {upper}_BAD_SIZE ({bad_size})
#define {upper}_NO_MEMORY ({no_memory})
#define {upper}_BAD_INDEX ({bad_index})

/* params, buffers, optimizer state, gradients and workspace */
typedef struct {prefix} {prefix};

/* A network holding the exported params (state zeroed, as init_state); NULL if out of
 * memory. */
{prefix} *{prefix}_new(void);
void {prefix}_free({prefix} *net);
"""

ENTRY_DOCS = {
    "forward": "The outputs, in inference mode.",
    "value_and_grad": "The loss and, in {prefix}_grad, every param's gradient, in training "
                      "mode; params unchanged.",
    "step": "One training step in place: the loss before the update.",
}

LOOKUP = """
/* The array of a param or buffer by its .bp name ("W1", "h1.W"), updated in place by
 * step, and its element count in *size (if size is not NULL); NULL for an unknown name. */
{t} *{prefix}_param({prefix} *net, const char *name, int64_t *size);
"""

GRAD = """
/* The gradient of a trained param by name, as the last value_and_grad computed it. */
{t} *{prefix}_grad({prefix} *net, const char *name, int64_t *size);
"""

SEED = """
/* Dropout's masks from now on are those of `seed` (its step count restarts at 0), as
 * net.init_state(p, seed=seed) in Python; a new network has seed 0. */
void {prefix}_seed({prefix} *net, uint64_t seed);
"""

BOTTOM = """
#ifdef __cplusplus
}
#endif

#endif
"""


def _shape(shape: Shape) -> str:
    return f"[{', '.join(map(str, shape))}]"


def header(prefix: str, signature: Signature, dtype: np.dtype, parts: Mapping[str, Part],
           optimizer: str) -> str:
    """NET.h for the entry points of `parts`; `optimizer` as checkpoints spell it."""
    t = "double" if dtype == np.float64 else "float"
    upper = prefix.upper()
    params = ", ".join(f"{n}{_shape(i.shape)}" + (" (buffer)" if i.buffer else "")
                       for n, i in signature.params.items())
    text = TOP.format(prefix=prefix, name=signature.name, filename=signature.filename, t=t,
                      params=params, upper=upper, optimizer=optimizer,
                      bad_size=BAD_SIZE, no_memory=NO_MEMORY, bad_index=BAD_INDEX,
                      bad_size_name=f"{upper}_BAD_SIZE", no_memory_name=f"{upper}_NO_MEMORY",
                      bad_index_name=f"{upper}_BAD_INDEX", one="1", two="2 + k", blank="",
                      w=len(upper) + len("_NO_MEMORY") + 1)
    for entry, part in parts.items():
        shapes = dict(shapes_of(part.signature, entry))
        arguments = [f"{prefix} *net", *(f"int64_t {d}" for d in c_sizes(part.signature,
                                                                          entry))]
        for name in shapes:
            constant = "" if name in part.signature.outputs and entry == "forward" \
                else "const "
            arguments.append(f"{constant}{t} *{_c_name(name)}")
        if entry != "forward":
            arguments.append(f"{t} *loss")
        described = ", ".join(f"{n}{_shape(s)}" for n, s in shapes.items())
        doc = ENTRY_DOCS[entry].format(prefix=prefix)
        text += f"\n/* {doc}\n * {described} */\n"
        text += f"int {prefix}_{entry}({', '.join(arguments)});\n"
    text += LOOKUP.format(prefix=prefix, t=t)
    if "value_and_grad" in parts:
        text += GRAD.format(prefix=prefix, t=t)
    if signature.masks:
        text += SEED.format(prefix=prefix)
    return text + BOTTOM


def _c_name(name: str) -> str:
    return "".join(c if c.isalnum() or c == "_" else "_" for c in name)

