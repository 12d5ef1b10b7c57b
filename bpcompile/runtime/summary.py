"""A compiled network summarized for people: the HTML table Jupyter shows for a CompiledNet
(its name, backend, dtype, each param with its shape and init, data, outputs, optimizer)."""

from __future__ import annotations

import html
import math
from collections.abc import Mapping

from ..graph.shapes import Shape, format_shape
from .signature import Signature


def _rows(signature: Signature, backend: str, dtype: str) -> list[tuple[str, str]]:
    """(label, text) rows of the summary table; text is plain, escaped later."""
    def listing(entries: Mapping[str, Shape]) -> str:
        return ", ".join(f"{n} {format_shape(s)}" for n, s in entries.items()) or "(none)"

    optimizer = signature.optimizer
    options = ", ".join(f"{k}={v}" for k, v in optimizer.options.items())
    return [
        ("backend", backend),
        ("dtype", dtype),
        ("inputs", listing(signature.inputs)),
        ("targets", listing(signature.targets)),
        ("outputs", ", ".join(signature.outputs) or "(none)"),
        ("loss", "yes" if signature.has_loss else "no"),
        ("optimizer", f"{optimizer.kind}({options})"),
    ]


def net_html(signature: Signature, backend: str, dtype: str) -> str:
    """A compact HTML table for Jupyter: the network's name, backend, dtype, each param with
    its shape and init, data, outputs and optimizer. Everything from the user is escaped."""
    e = html.escape
    total = sum(math.prod(info.shape) for info in signature.params.values())
    parts = [f"<table><caption>CompiledNet <b>{e(signature.name)}</b></caption>"]
    parts += [f"<tr><th>{e(label)}</th><td>{e(text)}</td></tr>"
              for label, text in _rows(signature, backend, dtype)]
    parts.append(f"<tr><th>params</th><td>{total} scalars</td></tr>")
    for name, info in signature.params.items():
        parts.append(f"<tr><td>{e(name)}</td><td>{e(format_shape(info.shape))} "
                     f"= {e(info.init.describe())}</td></tr>")
    parts.append("</table>")
    return "\n".join(parts)
