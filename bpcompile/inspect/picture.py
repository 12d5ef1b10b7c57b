"""`bpcompile graph`: a compiled network's graph as a picture, written as Graphviz DOT or as
Mermaid text, or rendered to SVG or PNG by Graphviz's `dot` program.

The picture is the optimized graph both backends print, one box per node and one arrow per
input an op reads. Boxes are named as the generated NumPy code names their values: the `.bp`
names for params, data and named intermediates, `d_<name>` for adjoints, `loss` for the loss.
The forward picture holds what `forward` and `loss` compute; the backward picture adds what
`value_and_grad` computes on top, plus one box for the seed of reverse mode, `d_loss = 1`,
which the compiler folds into the first adjoints (a dashed arrow leads to each of them).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .. import atomic
from ..backends.numpy.module import ModuleWriter
from ..backends.numpy.statements import FunctionWriter
from ..errors import BPError
from ..graph.ir import LEAVES, Graph, Node, Op
from ..graph.shapes import format_shape
from ..graph.spelling import Speller
from ..runtime.net import CompiledNet

LABEL_LIMIT = 60  # characters of an expression in a box; longer ones end in an ellipsis
SEED = "seed"     # the picture's id of the box standing for d loss / d loss = 1


class GraphvizError(BPError):
    """Graphviz's `dot` program is not installed, or failed to render a picture."""


@dataclass(frozen=True)
class Outline:
    """The outline of a box: Graphviz's shape name and Mermaid's brackets around a label."""

    dot: str
    mermaid: tuple[str, str]


@dataclass(frozen=True)
class Look:
    """The colours of a box, by the role its value plays (the last role of a box wins)."""

    fill: str
    border: str
    width: int  # the border's width: points in Graphviz, pixels in Mermaid


DATA = Outline("parallelogram", ("[/", "/]"))
STORED = Outline("cylinder", ("[(", ")]"))
STRUCTURAL = Outline("box", ("[", "]"))
REDUCTION = Outline("invtrapezium", ("[\\", "/]"))
SOFTMAX_FAMILY = Outline("hexagon", ("{{", "}}"))

OUTLINES: dict[Op, Outline] = {
    Op.INPUT: DATA,
    Op.PARAM: STORED,
    Op.STATE: STORED,
    Op.GRAD: DATA,  # a gradient given to apply_gradients
    Op.ELEMENTWISE: Outline("ellipse", ("([", "])")),
    Op.MATMUL: STRUCTURAL,
    Op.TRANSPOSE: STRUCTURAL,
    Op.PERMUTE: STRUCTURAL,
    Op.RESHAPE: STRUCTURAL,
    Op.SLICE: STRUCTURAL,
    Op.UNSLICE: STRUCTURAL,
    Op.CONCAT: STRUCTURAL,
    Op.SUM: REDUCTION,
    Op.PROD: REDUCTION,
    Op.MAX: REDUCTION,
    Op.ARGMAX: REDUCTION,
    Op.ONEHOT: STRUCTURAL,
    Op.TAKE: STRUCTURAL,
    Op.TAKE_GRAD: STRUCTURAL,
    Op.CONV: STRUCTURAL,
    Op.CONV_INPUT_GRAD: STRUCTURAL,
    Op.CONV_WEIGHT_GRAD: STRUCTURAL,
    Op.POOL: REDUCTION,
    Op.POOL_GRAD: STRUCTURAL,
    Op.ARGMAX_ONEHOT: REDUCTION,
    Op.LOGSUMEXP: REDUCTION,
    Op.SOFTMAX: SOFTMAX_FAMILY,
    Op.LOG_SOFTMAX: SOFTMAX_FAMILY,
    Op.SOFTMAX_XENT: SOFTMAX_FAMILY,
}

LOOKS: dict[str, Look] = {
    "value": Look("#ffffff", "#6b7280", 1),      # an intermediate value with no role
    "input": Look("#dbeafe", "#1d4ed8", 1),
    "target": Look("#fce7f3", "#be185d", 1),
    "param": Look("#fef3c7", "#b45309", 1),
    "output": Look("#e0f2fe", "#0369a1", 3),
    "loss": Look("#fecaca", "#b91c1c", 3),
    "gradient": Look("#bbf7d0", "#15803d", 3),
    "seed": Look("#f3f4f6", "#374151", 1),
}

# Mermaid reads these inside a quoted label; `#...;` is its way to write any character.
MERMAID_ENTITIES = str.maketrans({
    "#": "#35;", '"': "#quot;", "<": "#lt;", ">": "#gt;", "&": "#amp;",
    "[": "#91;", "]": "#93;", "{": "#123;", "}": "#125;", "`": "#96;",
})


@dataclass(frozen=True)
class Box:
    id: str
    lines: tuple[str, ...]   # the label: value, shape, roles
    outline: Outline
    look: str                # a key of LOOKS
    backward: bool           # computed only by the backward pass


@dataclass(frozen=True)
class Arrow:
    tail: str
    head: str
    seed: bool = False       # from the seed box: the chain rule starts here


@dataclass(frozen=True)
class Picture:
    name: str                # the network's name
    title: str
    boxes: tuple[Box, ...]
    arrows: tuple[Arrow, ...]
    parts: bool              # draw the forward and backward boxes as two groups


def box_id(i: int) -> str:
    """The picture's id of graph node `i`."""
    return f"n{i}"


def forward_nodes(graph: Graph) -> list[int]:
    """The nodes `forward` and `loss` compute, with every input, target and param."""
    roots = [*graph.outputs.values(), *([graph.loss] if graph.loss is not None else [])]
    return sorted(set(graph.live(roots)) | set(graph.inputs.values())
                  | set(graph.params.values()))


def seed_heads(graph: Graph, backward: set[int]) -> list[int]:
    """The adjoints the seed `d_loss = 1` was folded into: the gradients and the backward
    values that are adjoints (of `.bp` names), that read no other such adjoint."""
    adjoints = set(graph.grads.values()) | {i for i in backward if graph.nodes[i].adjoint}
    return sorted(i for i in adjoints
                  if not any(j in adjoints for j in graph.nodes[i].inputs))


def picture(net: CompiledNet, backward: bool = False) -> Picture:
    """The boxes and arrows of `net`'s forward graph, or with `backward` of its forward and
    backward graph; BPError when `backward` is asked of a network without a loss."""
    graph = net.compiled.graph
    if backward and graph.loss is None:
        raise BPError(f"network {net.name} has no loss, so no backward graph "
                      f"(leave out --backward to draw its forward graph)")
    forward = forward_nodes(graph)
    shown = sorted(set(forward) | set(graph.live(graph.grads.values()))) if backward \
        else forward
    names = _names(net, forward)
    roles = _roles(net, graph, backward)
    module = ModuleWriter(net.compiled, net.dtype.name)
    math = Speller(graph, names, module.symbol_names)
    in_forward = set(forward)
    boxes = [_box(i, graph.nodes[i], names, roles.get(i, []), math, i not in in_forward)
             for i in shown]
    arrows = [Arrow(box_id(j), box_id(i)) for i in shown for j in graph.nodes[i].inputs]
    if backward:
        boxes.append(Box(SEED, ("d_loss = 1", format_shape(()), "seed"),
                         OUTLINES[Op.ELEMENTWISE], "seed", True))
        heads = seed_heads(graph, set(shown) - in_forward)
        arrows += [Arrow(SEED, box_id(i), seed=True) for i in heads]
    part = "forward and backward" if backward else "forward"
    return Picture(net.name, f"{net.network.source.filename}: {part}", tuple(boxes),
                   tuple(arrows), parts=backward)


def _names(net: CompiledNet, forward: list[int]) -> dict[int, str]:
    """The name of each value that has one: leaves and the values the generated code holds
    in variables, named by the naming source the code uses; the rest are drawn as their
    expressions."""
    graph = net.compiled.graph
    module = ModuleWriter(net.compiled, net.dtype.name)
    roots = [*graph.outputs.values()]
    if graph.loss is not None:
        roots += [graph.loss, *graph.grads.values()]
    writer = FunctionWriter(module)
    module.body(writer, list(net.network.data), roots)
    naming = module.naming
    names = {i: naming[i].code for i in writer.bound}
    # what the .bp file named is drawn with its name (h1.W, a value `s`); the rest as the
    # code names it (d_h1_W)
    names.update({i: naming[i].text for i in forward if graph.nodes[i].name is not None
                  and not graph.nodes[i].derived and not graph.nodes[i].adjoint})
    return names


def _roles(net: CompiledNet, graph: Graph, backward: bool) -> dict[int, list[tuple[str, str]]]:
    """(look, text) pairs per node, in the order their looks take precedence (last wins)."""
    roles: dict[int, list[tuple[str, str]]] = {}
    targets = set(net.network.targets)
    for name, i in graph.inputs.items():
        roles.setdefault(i, []).append(("target", "target") if name in targets
                                       else ("input", "input"))
    for i in graph.params.values():
        roles.setdefault(i, []).append(("param", "param"))
    for i in graph.outputs.values():
        roles.setdefault(i, []).append(("output", "output"))
    if graph.loss is not None:
        roles.setdefault(graph.loss, []).append(("loss", "loss"))
    if backward:
        for name, i in graph.grads.items():
            roles.setdefault(i, []).append(("gradient", f"gradient of {name}"))
    return roles


def _box(i: int, node: Node, names: dict[int, str], roles: list[tuple[str, str]],
         math: Speller, backward: bool) -> Box:
    if node.op in LEAVES:
        head = names[i]
    else:
        head = _shortened(math.spell(i).text)
        if i in names:
            head = f"{names[i]} = {head}"
    lines = [head, format_shape(node.shape)]
    if roles:
        lines.append(", ".join(text for _, text in roles))
    look = roles[-1][0] if roles else "value"
    return Box(box_id(i), tuple(lines), OUTLINES[node.op], look, backward)


def _shortened(text: str) -> str:
    return text if len(text) <= LABEL_LIMIT else text[:LABEL_LIMIT - 1] + "…"


# ------------------------------------------------------------------------------ DOT


def dot_string(text: str) -> str:
    """`text` as a DOT quoted string: backslashes and quotes escaped, newlines as `\\n`."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def to_dot(pic: Picture) -> str:
    """The picture as a Graphviz `digraph`."""
    lines = [
        f"digraph {dot_string(pic.name)} {{",
        f"  label={dot_string(pic.title)};",
        "  labelloc=t;",
        '  fontname="Helvetica";',
        '  node [fontname="Helvetica", fontsize=11, style=filled];',
        '  edge [color="#4b5563"];',
    ]
    if pic.parts:
        for part, backward in (("forward", False), ("backward", True)):
            lines.append(f"  subgraph cluster_{part} {{")
            lines.append(f"    label={dot_string(part)};")
            lines += [f"    {_dot_box(b)}" for b in pic.boxes if b.backward == backward]
            lines.append("  }")
    else:
        lines += [f"  {_dot_box(b)}" for b in pic.boxes]
    for arrow in pic.arrows:
        style = " [style=dashed]" if arrow.seed else ""
        lines.append(f"  {arrow.tail} -> {arrow.head}{style};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _dot_box(box: Box) -> str:
    look = LOOKS[box.look]
    return (f"{box.id} [label={dot_string(chr(10).join(box.lines))}, "
            f"shape={box.outline.dot}, fillcolor={dot_string(look.fill)}, "
            f"color={dot_string(look.border)}, penwidth={look.width}];")


# -------------------------------------------------------------------------- Mermaid


def mermaid_string(text: str) -> str:
    """`text` as a Mermaid quoted label: special characters as `#...;` entities, newlines as
    `<br>`."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return '"' + "<br>".join(line.translate(MERMAID_ENTITIES) for line in lines) + '"'


def to_mermaid(pic: Picture) -> str:
    """The picture as a Mermaid flowchart, its title in the front matter."""
    # A JSON string is a YAML double-quoted scalar: any title survives the front matter.
    lines = ["---", f"title: {json.dumps(pic.title)}", "---", "flowchart TD"]
    if pic.parts:
        for part, backward in (("forward", False), ("backward", True)):
            lines.append(f"  subgraph {part}[{mermaid_string(part)}]")
            lines += [f"    {_mermaid_box(b)}" for b in pic.boxes if b.backward == backward]
            lines.append("  end")
    else:
        lines += [f"  {_mermaid_box(b)}" for b in pic.boxes]
    for arrow in pic.arrows:
        lines.append(f"  {arrow.tail} {'-.->' if arrow.seed else '-->'} {arrow.head}")
    used = sorted({b.look for b in pic.boxes})
    for name in used:
        look = LOOKS[name]
        lines.append(f"  classDef {name} fill:{look.fill},stroke:{look.border},"
                     f"stroke-width:{look.width}px")
    for name in used:
        ids = [b.id for b in pic.boxes if b.look == name]
        lines.append(f"  class {','.join(ids)} {name}")
    return "\n".join(lines) + "\n"


def _mermaid_box(box: Box) -> str:
    opening, closing = box.outline.mermaid
    return f"{box.id}{opening}{mermaid_string(chr(10).join(box.lines))}{closing}"


# ------------------------------------------------------------------------ rendering

TEXT_FORMATS = {"dot": to_dot, "mermaid": to_mermaid}
IMAGE_FORMATS = ("svg", "png")
FORMATS = (*TEXT_FORMATS, *IMAGE_FORMATS)

INSTALL_GRAPHVIZ = (
    "bpcompile: rendering {format} needs Graphviz's `dot` program, which is not installed "
    "(not found on PATH).\n"
    "Install Graphviz: `apt install graphviz` (Debian, Ubuntu), `dnf install graphviz` "
    "(Fedora), `brew install graphviz` (macOS), `conda install graphviz`, "
    "or see https://graphviz.org/download/.\n"
    "Without it, `--format dot` and `--format mermaid` still work: paste their text into "
    "any Graphviz or Mermaid viewer."
)


def draw(net: CompiledNet, format: str, backward: bool = False) -> bytes:
    """The picture of `net` in `format` (one of FORMATS): UTF-8 text for dot and mermaid,
    the rendered file for svg and png. GraphvizError when rendering is impossible."""
    pic = picture(net, backward)
    if format in TEXT_FORMATS:
        return TEXT_FORMATS[format](pic).encode("utf-8")
    if format not in IMAGE_FORMATS:
        raise BPError(f"unknown picture format '{format}' (formats: {', '.join(FORMATS)})")
    return render(to_dot(pic), format)


def render(dot_text: str, format: str) -> bytes:
    """`dot_text` rendered by Graphviz's `dot -T<format>`, reading standard input and
    writing standard output; GraphvizError, with `dot`'s own message, when it fails."""
    program = shutil.which("dot")
    if program is None:
        raise GraphvizError(INSTALL_GRAPHVIZ.format(format=format.upper()))
    try:
        result = subprocess.run([program, f"-T{format}"], input=dot_text.encode("utf-8"),
                                capture_output=True, check=False)
    except OSError as error:
        raise GraphvizError(f"bpcompile: could not run {program}: {error}") from None
    message = result.stderr.decode("utf-8", errors="replace").strip()
    if result.returncode != 0:
        raise GraphvizError(f"bpcompile: Graphviz's dot failed (exit status "
                            f"{result.returncode}) rendering {format.upper()}:\n{message}")
    if not result.stdout:
        raise GraphvizError(f"bpcompile: Graphviz's dot wrote no {format.upper()}"
                            + (f":\n{message}" if message else ""))
    return result.stdout


def save(path: Path, data: bytes) -> None:
    """Write atomically: a reader never sees half a file, and a failed write leaves the old
    file (if any) as it was."""
    atomic.write_bytes(path, data)