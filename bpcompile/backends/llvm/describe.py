"""The LLVM IR behind some params' gradients, for `bpcompile show --backend llvm`: for each
node of the gradients' chains, the kernels its code calls in `value_and_grad`, then those
kernels' definitions. What several params' gradients share is told once, then each param's
own part."""

from __future__ import annotations

import numpy as np

from ...runtime.net import Compiled
from ...runtime.signature import Signature
from .codegen import generate
from .jit import vector_bytes


def describe_gradients(compiled: Compiled, signature: Signature, dtype: np.dtype,
                       params: list[str]) -> tuple[list[str], dict[str, list[str]]]:
    """(the IR of the chain the params share, each param's own IR)."""
    program = generate(compiled, signature, dtype.name, vector_bytes(), ("value_and_grad",))
    graph = program.graph
    used = program.functions["value_and_grad"]
    forward = set(graph.live([*graph.outputs.values(), graph.loss]))
    chains = {p: [i for i in graph.live([graph.grads[p]]) if i not in forward]
              for p in params}
    count: dict[int, int] = {}
    for chain in chains.values():
        for i in chain:
            count[i] = count.get(i, 0) + 1
    alone = len(params) == 1
    own = {p: [i for i in chain if i == graph.grads[p] or (not alone and count[i] == 1)]
           for p, chain in chains.items()}
    owned = {i for nodes in own.values() for i in nodes}
    shared = sorted(i for i in count if i not in owned)
    printed: set[str] = set()
    return (_lines(program, shared, used, printed),
            {p: _lines(program, own[p], used, printed) for p in params})


def _lines(program, nodes: list[int], used: dict[int, list[str]],
           printed: set[str]) -> list[str]:
    """Each node's kernel calls, then the kernels not printed before."""
    graph = program.graph
    lines = [f"; {_label(graph.nodes[i], i)} ({graph.nodes[i].op.name.lower()}): "
             f"{', '.join(used.get(i, ['no code: a view or reshape']))}" for i in nodes]
    for i in nodes:
        for name in used.get(i, []):
            if name.startswith("bpc.") and name != "bpc.matmul" and name not in printed:
                printed.add(name)
                lines += ["", *_function_text(program.ir, name)]
    return lines


def _label(node, i: int) -> str:
    if node.name is None:
        return f"%{i}"
    return f"d_{node.name}" if node.adjoint else node.name


def _function_text(ir_text: str, name: str) -> list[str]:
    """The lines of one function's definition in a module's text."""
    lines = ir_text.splitlines()
    for start, line in enumerate(lines):
        if line.startswith("define") and f'@"{name}"(' in line:
            end = lines.index("}", start)
            return lines[start:end + 1]
    return []
