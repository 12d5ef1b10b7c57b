"""`bpcompile graph` (SPEC section 3): the compiled graph as Graphviz DOT and Mermaid text, and
rendered through Graphviz's `dot`.

Oracles: the compiled graph itself, walked here independently of the picture code (its nodes
and the inputs each reads are exactly the boxes and arrows); the API's shapes of params,
inputs and targets; the variables the generated `value_and_grad` returns (the names of the
gradients); parsers written here for the DOT and Mermaid the command prints, with their own
unescaping (escaping round trips); the other format and the other backend (the same picture);
and a fake `dot` program that records how it was called. Graphviz need not be installed.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import BACKENDS, example_paths

import bpcompile as bpc
from bpcompile.graph.ir import Graph, Op
from bpcompile.inspect import picture as pic

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_IDS = [p.name for p in example_paths()]
POSIX_ONLY = pytest.mark.skipif(os.name == "nt", reason="the fake `dot` is a POSIX shell script")

# A network using every op of the IR (max's gradient is ARGMAX_ONEHOT, logsumexp's a RESHAPE),
# an op reading one value twice (S @ S: two arrows), a param the loss ignores (its gradient
# is a constant 0) and a long elementwise expression.
EVERY_OP = """\
input x[N, 4]
target t[N, 3]
param W[4, 3]
param v[3]
param unused[2]
param S[3, 3]
z = x @ W
m = max(z, axis=1)
s = logsumexp(z, axis=-1)
p = softmax(z)
q = log_softmax(z.T, axis=0)
r = sum(z, axis=1) + m + s
output p, q
loss cross_entropy(z, t) + mean(r) + sum(q) + sum(S @ S) + sum(exp(v) * sin(v) * cos(v)
    + tanh(v) * gelu(v))
"""
NO_LOSS = "input x[N, 2]\nparam W[2, 2]\ny = tanh(x @ W)\n"


# ------------------------------------------------------------------------ parsers


@dataclass
class Parsed:
    """Boxes (id -> label lines, attributes), arrows and groups of a picture's text."""

    labels: dict[str, list[str]] = field(default_factory=dict)
    attrs: dict[str, dict[str, str]] = field(default_factory=dict)
    arrows: list[tuple[str, str]] = field(default_factory=list)
    dashed: list[tuple[str, str]] = field(default_factory=list)
    groups: dict[str, set[str]] = field(default_factory=dict)
    title: str = ""


DOT_QUOTED = r'"(?:[^"\\]|\\.)*"'
DOT_ATTR = re.compile(rf'(\w+)=({DOT_QUOTED}|[^,\]\s]+)')
DOT_NODE = re.compile(rf'^(\w+) \[((?:\w+=(?:{DOT_QUOTED}|[^,\]\s]+)(?:, )?)+)\];$')
DOT_EDGE = re.compile(r'^(\w+) -> (\w+)( \[style=dashed\])?;$')


def dot_unquote(text: str) -> str:
    assert text.startswith('"') and text.endswith('"'), text
    out, body, k = [], text[1:-1], 0
    while k < len(body):
        if body[k] == "\\":
            nxt = body[k + 1]
            out.append({"n": "\n", "\\": "\\", '"': '"'}[nxt])
            k += 2
        else:
            assert body[k] != '"', text  # an unescaped quote would end the string
            out.append(body[k])
            k += 1
    return "".join(out)


def parse_dot(text: str) -> Parsed:
    """Every line must be one this parser knows: a stray token fails the test."""
    lines = text.rstrip("\n").split("\n")
    assert lines[0].startswith("digraph ") and lines[0].endswith(" {") and lines[-1] == "}"
    parsed, group = Parsed(), None
    for raw in lines[1:-1]:
        line = raw.strip()
        if m := re.fullmatch(rf"label=({DOT_QUOTED});", line):
            if group is None:
                parsed.title = dot_unquote(m[1])
        elif m := re.fullmatch(r"subgraph cluster_(\w+) \{", line):
            assert group is None, "clusters do not nest"
            group = m[1]
            parsed.groups[group] = set()
        elif line == "}":
            assert group is not None
            group = None
        elif line.startswith(("node [", "edge [")) or line in ("labelloc=t;",
                                                               'fontname="Helvetica";'):
            continue
        elif m := DOT_EDGE.fullmatch(line):
            (parsed.dashed if m[3] else parsed.arrows).append((m[1], m[2]))
        elif m := DOT_NODE.fullmatch(line):
            assert m[1] not in parsed.labels, f"box {m[1]} twice"
            attrs = {k: dot_unquote(v) if v.startswith('"') else v
                     for k, v in DOT_ATTR.findall(m[2])}
            parsed.attrs[m[1]] = attrs
            parsed.labels[m[1]] = attrs["label"].split("\n")
            if group is not None:
                parsed.groups[group].add(m[1])
        else:
            raise AssertionError(f"not DOT this test knows: {raw!r}")
    assert group is None
    return parsed


MERMAID_BRACKETS = [("[/", "/]"), ("[(", ")]"), ("([", "])"), ("[\\", "/]"), ("{{", "}}"),
                    ("[", "]")]
MERMAID_ENTITY = re.compile(r"#(quot|lt|gt|amp|\d+);")


def mermaid_unquote(text: str) -> str:
    assert text.startswith('"') and text.endswith('"') and '"' not in text[1:-1], text
    body = text[1:-1].replace("<br>", "\n")
    assert "<" not in body and ">" not in body and "[" not in body and "]" not in body, text
    assert "#" not in MERMAID_ENTITY.sub("", body), f"a raw # in {text}"
    named = {"quot": '"', "lt": "<", "gt": ">", "amp": "&"}
    return MERMAID_ENTITY.sub(lambda m: named.get(m[1]) or chr(int(m[1])), body)


def parse_mermaid(text: str) -> Parsed:
    lines = text.rstrip("\n").split("\n")
    assert lines[0] == "---" and lines[2] == "---" and lines[3] == "flowchart TD", lines[:4]
    parsed, group = Parsed(), None
    parsed.title = ast.literal_eval(lines[1].removeprefix("title: "))
    classes: dict[str, str] = {}
    for raw in lines[4:]:
        line = raw.strip()
        if m := re.fullmatch(r'subgraph (\w+)\["\w+"\]', line):
            group = m[1]
            parsed.groups[group] = set()
        elif line == "end":
            group = None
        elif m := re.fullmatch(r"(\w+) (-->|-\.->) (\w+)", line):
            (parsed.dashed if m[2] == "-.->" else parsed.arrows).append((m[1], m[3]))
        elif line.startswith("classDef "):
            continue
        elif m := re.fullmatch(r"class ([\w,]+) (\w+)", line):
            for box in m[1].split(","):
                assert box not in classes, f"{box} in two classes"
                classes[box] = m[2]
        elif m := re.fullmatch(r"(\w+)(.*)", line):
            box, rest = m[1], m[2]
            opening, closing = next((o, c) for o, c in MERMAID_BRACKETS
                                    if rest.startswith(o + '"') and rest.endswith('"' + c))
            parsed.labels[box] = mermaid_unquote(rest[len(opening):-len(closing)]).split("\n")
            parsed.attrs[box] = {"shape": opening + closing}
            if group is not None:
                parsed.groups[group].add(box)
        else:
            raise AssertionError(f"not Mermaid this test knows: {raw!r}")
    for box, name in classes.items():
        parsed.attrs[box]["class"] = name
    assert set(classes) == set(parsed.labels), "every box has exactly one class"
    return parsed


PARSERS = {"dot": (pic.to_dot, parse_dot), "mermaid": (pic.to_mermaid, parse_mermaid)}


# ------------------------------------------------------------------------ oracles


def shape_text(shape: tuple) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def reachable(graph: Graph, roots: list[int]) -> set[int]:
    """The nodes `roots` read, walked here without Graph.live."""
    seen, todo = set(), list(roots)
    while todo:
        i = todo.pop()
        if i not in seen:
            seen.add(i)
            todo += graph.nodes[i].inputs
    return seen


def expected_nodes(net: bpc.CompiledNet, backward: bool) -> tuple[set[int], set[int]]:
    """(forward nodes, backward-only nodes): what forward and loss compute, every data array
    and param; and what the gradients need besides."""
    g = net.compiled.graph
    roots = list(g.outputs.values()) + ([g.loss] if g.loss is not None else [])
    forward = reachable(g, roots) | set(g.inputs.values()) | set(g.params.values())
    back = reachable(g, list(g.grads.values())) - forward if backward else set()
    return forward, back


def gradient_variables(net: bpc.CompiledNet) -> dict[str, str]:
    """param -> the variable the generated value_and_grad returns as its gradient."""
    tree = ast.parse(bpc.compile(net.source, backend="numpy").code(training=True))
    function = next(n for n in tree.body if getattr(n, "name", "") == "value_and_grad")
    returned = next(n for n in ast.walk(function) if isinstance(n, ast.Return))
    grads = returned.value.elts[1]
    return {ast.literal_eval(k): v.id for k, v in zip(grads.keys, grads.values)}


def bp_assignments(source: str) -> list[str]:
    """The names a `.bp` text assigns with `NAME = ...`."""
    return re.findall(r"^([A-Za-z_]\w*)\s*=(?!=)", source, flags=re.MULTILINE)


def look_of(parsed: Parsed, box: str, fmt: str) -> tuple[str, str]:
    """A box's outline and colour: DOT's shape and fill, Mermaid's brackets and class."""
    attrs = parsed.attrs[box]
    return (attrs["shape"], attrs["fillcolor"] if fmt == "dot" else attrs["class"])


def check_picture(net: bpc.CompiledNet, parsed: Parsed, backward: bool, fmt: str) -> None:
    """Everything a picture of `net` must show, against the graph and the API."""
    g = net.compiled.graph
    forward, back = expected_nodes(net, backward)
    ids = {f"n{i}" for i in forward | back}
    seed = {"seed"} if backward else set()
    assert set(parsed.labels) == ids | seed
    expected_arrows = Counter((f"n{j}", f"n{i}") for i in forward | back
                              for j in g.nodes[i].inputs)
    assert Counter(parsed.arrows) == expected_arrows
    for i in forward | back:  # every box says its shape
        assert parsed.labels[f"n{i}"][1] == shape_text(g.nodes[i].shape)

    leaves = {**{n: ("input", s) for n, s in net.inputs.items()},
              **{n: ("target", s) for n, s in net.targets.items()},
              **{n: ("param", s) for n, s in net.params.items()}}
    looks: dict[str, set[tuple[str, str]]] = {}
    for name, (role, shape) in leaves.items():
        box = f"n{g.inputs[name] if role != 'param' else g.params[name]}"
        assert parsed.labels[box][:2] == [name, shape_text(shape)]
        assert role in parsed.labels[box][2]
        looks.setdefault(role, set()).add(look_of(parsed, box, fmt))
    roles = list(looks)  # inputs, targets and params look different from one another
    for k, a in enumerate(roles):
        for b in roles[k + 1:]:
            assert not looks[a] & looks[b], (a, b)

    for name in bp_assignments(net.source):  # named intermediates, with their shapes
        (i,) = [i for i in forward if g.nodes[i].name == name]
        assert parsed.labels[f"n{i}"][0].startswith(f"{name} = ")
    for name, i in g.outputs.items():
        assert "output" in parsed.labels[f"n{i}"][2]
        assert parsed.labels[f"n{i}"][1] == shape_text(net.signature.output_shapes[name])
    if g.loss is not None:
        assert parsed.labels[f"n{g.loss}"][0].startswith("loss = ")
        assert "loss" in parsed.labels[f"n{g.loss}"][2].split(", ")
        assert parsed.labels[f"n{g.loss}"][1] == "[]"

    if not backward:
        assert not parsed.dashed and not parsed.groups
        assert not any("gradient" in " ".join(lines) for lines in parsed.labels.values())
        return
    assert parsed.groups == {"forward": {f"n{i}" for i in forward},
                             "backward": {f"n{i}" for i in back} | {"seed"}}
    assert parsed.labels["seed"] == ["d_loss = 1", "[]", "seed"]
    assert parsed.dashed and all(tail == "seed" for tail, _ in parsed.dashed)
    arrows: dict[str, list[str]] = {}
    for tail, head in parsed.arrows + parsed.dashed:
        arrows.setdefault(tail, []).append(head)
    from_seed, todo = set(), ["seed"]
    while todo:
        box = todo.pop()
        if box not in from_seed:
            from_seed.add(box)
            todo += arrows.get(box, [])
    for param, variable in gradient_variables(net).items():
        box = f"n{g.grads[param]}"
        assert parsed.labels[box][0].startswith(f"{variable} = "), (param, variable)
        assert f"gradient of {param}" in parsed.labels[box][2]
        assert box in from_seed, f"gradient of {param} not reached from d_loss"


# ------------------------------------------------------------------- the pictures


@pytest.fixture(scope="module")
def nets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bpc.CompiledNet]:
    extra = tmp_path_factory.mktemp("nets")
    (extra / "every_op.bp").write_text(EVERY_OP)
    (extra / "no_loss.bp").write_text(NO_LOSS)
    paths = [*example_paths(), extra / "every_op.bp", extra / "no_loss.bp"]
    return {p.name: bpc.compile_file(p) for p in paths}


ALL_NETS = [*EXAMPLE_IDS, "every_op.bp", "no_loss.bp"]


@pytest.mark.parametrize("fmt", sorted(PARSERS))
@pytest.mark.parametrize("backward", [False, True], ids=["forward", "backward"])
@pytest.mark.parametrize("name", ALL_NETS)
def test_picture_is_the_graph(nets: dict, name: str, backward: bool, fmt: str) -> None:
    net = nets[name]
    if backward and not net.has_loss:
        with pytest.raises(bpc.BPError, match="no loss"):
            pic.picture(net, backward)
        return
    write, parse = PARSERS[fmt]
    text = write(pic.picture(net, backward))
    check_picture(net, parse(text), backward, fmt)
    assert text.endswith("}\n" if fmt == "dot" else "\n") and "\r" not in text


@pytest.mark.parametrize("backward", [False, True], ids=["forward", "backward"])
@pytest.mark.parametrize("name", EXAMPLE_IDS)
def test_dot_and_mermaid_draw_the_same_picture(nets: dict, name: str, backward: bool) -> None:
    picture = pic.picture(nets[name], backward)
    dot, mermaid = parse_dot(pic.to_dot(picture)), parse_mermaid(pic.to_mermaid(picture))
    assert dot.labels == mermaid.labels
    assert dot.arrows == mermaid.arrows and dot.dashed == mermaid.dashed
    assert dot.groups == mermaid.groups and dot.title == mermaid.title
    assert dot.title == f"{name}: {'forward and backward' if backward else 'forward'}"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("example", example_paths(), ids=EXAMPLE_IDS)
def test_every_backend_draws_the_same_graph(nets: dict, example: Path, backend: str) -> None:
    net = bpc.compile_file(example, backend=backend)
    for backward in (False, True):
        assert pic.draw(net, "dot", backward) == pic.draw(nets[example.name], "dot", backward)


def test_xor_labels(nets: dict) -> None:
    """The exact words of a small picture, as a person checks them by eye."""
    parsed = parse_dot(pic.to_dot(pic.picture(nets["xor.bp"], backward=True)))
    heads = {lines[0] for lines in parsed.labels.values()}
    assert {"h = sigmoid(x @ W1 + b1)", "y = sigmoid(h @ W2 + b2)", "d_y = y - t",
            "d_h = d_y_pre @ W2.T", "d_W1 = x.T @ d_h_pre", "d_b2 = sum(d_y_pre, axis=0)",
            "loss = sum((y - t) ** 2) / 2"} <= heads


def test_long_expressions_are_shortened(nets: dict) -> None:
    parsed = parse_dot(pic.to_dot(pic.picture(nets["every_op.bp"], backward=True)))
    long = [lines[0] for lines in parsed.labels.values() if lines[0].endswith("…")]
    assert long
    assert all(len(head.split(" = ", 1)[1]) == pic.LABEL_LIMIT for head in long)


# ----------------------------------------------------------------------- escaping

AWKWARD = ['say "hi"', "back\\slash", "a\\nb is not a newline", "two\nlines", "#1 <b> & c",
           "[x] {y} (z) `q`", 'end"; n0 -> n1 [label="x', "#quot; stays text", "∂loss/∂W"]


@pytest.mark.parametrize("text", AWKWARD)
def test_labels_round_trip(text: str) -> None:
    box = pic.Box("n0", (text, "[]", "input"), pic.OUTLINES[Op.INPUT], "input", False)
    other = pic.Box("n1", ("y", "[]"), pic.OUTLINES[Op.MATMUL], "value", False)
    picture = pic.Picture(text, text, (box, other), (pic.Arrow("n0", "n1"),), parts=False)
    for fmt, (write, parse) in PARSERS.items():
        parsed = parse(write(picture))
        assert parsed.labels["n0"] == [*text.split("\n"), "[]", "input"], fmt
        assert parsed.title == text, fmt
        assert parsed.arrows == [("n0", "n1")], fmt


def test_file_names_are_escaped(tmp_path: Path) -> None:
    path = tmp_path / 'my "odd" #1 <net>.bp'
    path.write_text((REPO / "examples" / "xor.bp").read_text())
    net = bpc.compile_file(path)
    for fmt, (write, parse) in PARSERS.items():
        assert parse(write(pic.picture(net))).title == f"{path.name}: forward", fmt


# ---------------------------------------------------------------------------- CLI


def bpcompile_cmd(*args: str | Path, cwd: Path,
                  env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = dict(env or os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", "bpcompile.cli", *map(str, args)], cwd=cwd,
                          env=env, capture_output=True, timeout=120)


def assert_clean_failure(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2
    stderr = result.stderr.decode()
    assert "Traceback" not in stderr and stderr.strip()
    return stderr


@pytest.mark.parametrize("options, fmt, backward", [
    ((), "dot", False),
    (("--format", "mermaid", "--backward"), "mermaid", True),
])
def test_cli_prints_the_picture(tmp_path: Path, nets: dict, options: tuple, fmt: str,
                                backward: bool) -> None:
    result = bpcompile_cmd("graph", REPO / "examples" / "xor.bp", *options, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    text = result.stdout.decode()
    write, parse = PARSERS[fmt]
    assert text == write(pic.picture(nets["xor.bp"], backward))
    check_picture(nets["xor.bp"], parse(text), backward, fmt)
    assert list(tmp_path.iterdir()) == []


def test_cli_is_deterministic(tmp_path: Path) -> None:
    """Two processes with different hash seeds print the same bytes."""
    outputs = []
    for seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        result = bpcompile_cmd("graph", REPO / "examples" / "digits.bp", "--backward",
                               "--format", "mermaid", cwd=tmp_path, env=env)
        assert result.returncode == 0, result.stderr
        outputs.append(result.stdout)
    assert outputs[0] == outputs[1]


def test_cli_writes_a_file(tmp_path: Path) -> None:
    out = tmp_path / "xor.dot"
    out.write_text("stale")
    result = bpcompile_cmd("graph", REPO / "examples" / "xor.bp", "--backward", "-o", out,
                           cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "xor.dot" in result.stdout.decode()
    assert out.read_bytes() == pic.draw(bpc.compile_file(REPO / "examples" / "xor.bp"),
                                        "dot", backward=True)
    assert [p.name for p in tmp_path.iterdir()] == ["xor.dot"]  # no temp file left


def test_cli_backward_without_a_loss(tmp_path: Path) -> None:
    path = tmp_path / "no_loss.bp"
    path.write_text(NO_LOSS)
    assert "loss" in assert_clean_failure(bpcompile_cmd("graph", path, "--backward",
                                                        cwd=tmp_path))
    result = bpcompile_cmd("graph", path, cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.startswith(b"digraph")


def test_cli_bad_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.bp"
    path.write_text("input x[N, 2]\ny = x + nope\n")
    stderr = assert_clean_failure(bpcompile_cmd("graph", path, cwd=tmp_path))
    assert stderr.startswith("bad.bp:2:9: error:")


@pytest.mark.parametrize("fmt", pic.IMAGE_FORMATS)
def test_missing_dot_says_how_to_install_it(tmp_path: Path, fmt: str) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    env = dict(os.environ, PATH=str(empty))
    result = bpcompile_cmd("graph", REPO / "examples" / "xor.bp", "--format", fmt, cwd=work,
                           env=env)
    stderr = assert_clean_failure(result)
    for words in ("apt install graphviz", "brew install graphviz", "conda install graphviz",
                  "--format dot", fmt.upper()):
        assert words in stderr, words
    assert result.stdout == b"" and list(work.iterdir()) == []


FAKE_DOT = """\
#!/bin/sh
# A stand-in for Graphviz: records its arguments and input, draws a fake image or fails.
printf '%s\\n' "$@" > "$FAKE_DOT_DIR/args"
cat > "$FAKE_DOT_DIR/input"
if [ -n "$FAKE_DOT_EMPTY" ]; then
    exit 0
fi
if [ -n "$FAKE_DOT_FAIL" ]; then
    echo "Error: <stdin>: syntax error in line 3 near '->'" >&2
    exit 1
fi
case "$1" in
    -Tsvg) printf '<svg>fake</svg>\\n' ;;
    -Tpng) printf '\\211PNG\\r\\n\\032\\nfake' ;;
    *) echo "fake dot: unexpected $1" >&2; exit 3 ;;
esac
"""
FAKE_IMAGES = {"svg": b"<svg>fake</svg>\n", "png": b"\x89PNG\r\n\x1a\nfake"}


@pytest.fixture
def fake_dot(tmp_path: Path) -> dict[str, str]:
    """An environment whose PATH finds the fake `dot` first; it logs into tmp_path/log."""
    bin_dir, log = tmp_path / "bin", tmp_path / "log"
    bin_dir.mkdir()
    log.mkdir()
    script = bin_dir / "dot"
    script.write_text(FAKE_DOT)
    script.chmod(0o755)
    return dict(os.environ, PATH=str(bin_dir) + os.pathsep + os.environ.get("PATH", ""),
                FAKE_DOT_DIR=str(log))


@POSIX_ONLY
@pytest.mark.parametrize("fmt", pic.IMAGE_FORMATS)
def test_render_runs_dot(tmp_path: Path, fake_dot: dict, fmt: str) -> None:
    work = tmp_path / "work"
    work.mkdir()
    result = bpcompile_cmd("graph", REPO / "examples" / "xor.bp", "--format", fmt, "--backward",
                           cwd=work, env=fake_dot)
    assert result.returncode == 0, result.stderr
    out = work / f"xor.{fmt}"  # the default: NET.svg / NET.png in the current directory
    assert f"xor.{fmt}" in result.stdout.decode()
    assert out.read_bytes() == FAKE_IMAGES[fmt]
    assert [p.name for p in work.iterdir()] == [out.name]
    log = Path(fake_dot["FAKE_DOT_DIR"])
    assert (log / "args").read_text().split("\n")[:-1] == [f"-T{fmt}"]
    net = bpc.compile_file(REPO / "examples" / "xor.bp")
    assert (log / "input").read_text() == pic.to_dot(pic.picture(net, backward=True))


@POSIX_ONLY
def test_render_to_a_named_file_and_stdout(tmp_path: Path, fake_dot: dict) -> None:
    out = tmp_path / "pictures" / "net.png"
    out.parent.mkdir()
    out.write_bytes(b"old")
    args = ("graph", REPO / "examples" / "mlp.bp", "--format", "png")
    result = bpcompile_cmd(*args, "-o", out, cwd=tmp_path, env=fake_dot)
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == FAKE_IMAGES["png"]
    assert [p.name for p in out.parent.iterdir()] == ["net.png"]
    result = bpcompile_cmd(*args, "-o", "-", cwd=tmp_path, env=fake_dot)
    assert result.returncode == 0 and result.stdout == FAKE_IMAGES["png"]


@POSIX_ONLY
def test_failing_dot_is_reported(tmp_path: Path, fake_dot: dict) -> None:
    out = tmp_path / "xor.svg"
    out.write_bytes(b"the previous picture")
    env = dict(fake_dot, FAKE_DOT_FAIL="1")
    result = bpcompile_cmd("graph", REPO / "examples" / "xor.bp", "--format", "svg", "-o", out,
                           cwd=tmp_path, env=env)
    stderr = assert_clean_failure(result)
    assert "syntax error in line 3" in stderr and "exit status 1" in stderr
    assert out.read_bytes() == b"the previous picture"  # left as it was
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bin", "log", "xor.svg"]


@POSIX_ONLY
def test_render_in_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                           fake_dot: dict) -> None:
    """The same through the API, and a `dot` that writes nothing is an error too."""
    monkeypatch.setenv("PATH", fake_dot["PATH"])
    monkeypatch.setenv("FAKE_DOT_DIR", fake_dot["FAKE_DOT_DIR"])
    assert pic.render("digraph {}\n", "svg") == FAKE_IMAGES["svg"]
    with pytest.raises(pic.GraphvizError, match="unexpected -Tpdf"):
        pic.render("digraph {}\n", "pdf")
    monkeypatch.setenv("FAKE_DOT_EMPTY", "1")
    with pytest.raises(pic.GraphvizError, match="wrote no SVG"):
        pic.render("digraph {}\n", "svg")
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(pic.GraphvizError, match="apt install graphviz"):
        pic.render("digraph {}\n", "png")
