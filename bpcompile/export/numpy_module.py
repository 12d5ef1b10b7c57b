"""`export --to numpy`: the generated NumPy module with the trained params inside it.

The module is the numpy backend's own standalone module (`net.code()`: `init`, `forward`,
`loss`, `value_and_grad`, `init_state`, `step`, in both modes for a network with dropout or
batch norm), followed by the trained params and buffers as `TRAINED` and a `predict`
function over the network's inputs. Each param is stored as the base64 of its bytes
(little-endian, the net's dtype), so it comes back bit for bit, in a line a person can
still find by name; NumPy is the only import.
"""

from __future__ import annotations

import base64
import keyword
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .. import atomic
from ..runtime.net import CompiledNet

TRAINED_HEADER = '''

# ---------------------------------------------------------------- the trained network
# Exported by `bpcompile export` from {source}: params and buffers, each the base64 of its
# little-endian bytes. `predict` runs the network on new inputs with them.
import base64 as _base64


def _array(text, shape):
    """A trained array from its base64 bytes (a copy: step may update it in place)."""
    data = _base64.b64decode(text)
    return np.frombuffer(data, dtype=np.dtype(DTYPE).newbyteorder("<")).reshape(shape) \\
        .astype(DTYPE)


TRAINED = {{
{entries}
}}
'''

PREDICT = '''

def predict({args}):
    """{doc}"""
    with np.errstate(all="ignore"):  # an overflow shows as inf in the outputs, unwarned
        outputs = forward({arguments})
    return {result}
'''


def module_source(net: CompiledNet, params: Mapping[str, np.ndarray], source: str) -> str:
    """The standalone module of a numpy-backend `net`, holding `params` (params and
    buffers, checked by the caller)."""
    code = net.code()
    little = np.dtype(net.dtype).newbyteorder("<")
    entries = []
    for name in {**net.params, **net.buffers}:
        array = np.ascontiguousarray(params[name], dtype=little)
        text = base64.b64encode(array.tobytes()).decode("ascii")
        entries.append(f"    {name!r}: _array({text!r}, {tuple(array.shape)!r}),")
    inputs = list(net.inputs)
    outputs = list(net.outputs)
    if len(outputs) == 1:
        result, returned = f"outputs[{outputs[0]!r}]", f"`{outputs[0]}`"
    else:
        result, returned = "outputs", f"a dict of {', '.join(outputs)}"
    doc = (f"The trained network's {returned} for inputs "
           f"{', '.join(f'{n}{list(net.inputs[n])}' for n in inputs)}, in inference mode.")
    arguments = ["TRAINED", *(f"{n}={n}" for n in inputs),
                 *(["training=False"] if net.signature.modal else [])]
    return (code.rstrip("\n") + "\n" + TRAINED_HEADER.format(source=source,
                                                          entries="\n".join(entries))
            + PREDICT.format(args=", ".join(inputs), doc=doc, arguments=", ".join(arguments),
                             result=result))


def export(net: CompiledNet, params: Mapping[str, np.ndarray], source: str,
           folder: str | Path) -> Path:
    """Write NET.py into `folder` (made if absent), atomically; its path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{module_name(net.name)}.py"
    atomic.write_text(path, module_source(net, params, source))
    return path


def module_name(network: str) -> str:
    """The network's name as an importable module's: `my-net` is `my_net`."""
    name = re.sub(r"\W", "_", network)
    return f"net_{name}" if not name or name[0].isdigit() or keyword.iskeyword(name) else name
