"""Jupyter reprs: `CompiledNet._repr_html_` and `Explanation._repr_latex_`.

Oracles: Python's html.parser (the table parses, its tags nest, its text names every param
with its shape) and LaTeX's rules (balanced braces); a name full of HTML specials must come
out escaped, never as markup.
"""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import pytest

import bpcompile as bpc
from bpcompile.graph.shapes import format_shape

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


class Reader(HTMLParser):
    """Collects text and checks that tags nest."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.tags: list[str] = []
        self.text: list[str] = []
        self.nested = True

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.stack.append(tag)
        self.tags.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack.pop() != tag:
            self.nested = False

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def read(html: str) -> Reader:
    reader = Reader()
    reader.feed(html)
    reader.close()
    assert reader.nested and not reader.stack, html
    return reader


@pytest.mark.parametrize("example", sorted(EXAMPLES.glob("*.bp")), ids=lambda p: p.name)
@pytest.mark.parametrize("backend", ["numpy", "llvm"])
def test_html_names_every_param_and_shape(example: Path, backend: str) -> None:
    net = bpc.compile_file(example, backend=backend)
    reader = read(net._repr_html_())
    text = " ".join(reader.text)
    assert net.name in text and backend in text and net.dtype.name in text
    for name, shape in net.params.items():
        assert f"{name} {format_shape(shape)}" in text or \
            (name in reader.text and format_shape(shape) in text)
    for name in [*net.inputs, *net.targets, *net.outputs]:
        assert name in text
    assert net.signature.optimizer.kind in text
    assert reader.tags[0] == "table"


def test_html_escapes_the_name(tmp_path: Path) -> None:
    path = tmp_path / "x<script>&y.bp"
    path.write_text((EXAMPLES / "xor.bp").read_text().replace("network xor\n", ""))
    net = bpc.compile_file(path)
    assert net.name == "x<script>&y"
    html = net._repr_html_()
    assert "<script>" not in html and "&lt;script&gt;&amp;y" in html
    assert "script" not in read(html).tags
    assert "x<script>&y" in "".join(read(html).text)


def test_explanation_renders_as_latex() -> None:
    explanation = bpc.explain(bpc.compile_file(EXAMPLES / "xor.bp"), param="W2")
    shown = explanation._repr_latex_()
    assert shown.startswith("$$") and shown.rstrip().endswith("$$")
    assert shown.count("{") == shown.count("}")
    assert r"\begin{aligned}" in shown and r"\end{aligned}" in shown
    assert shown.count(r"\frac{\partial L}") == 3
    assert str(explanation) == explanation.text()
