"""Every op has an entry in every table keyed by op, so a new op cannot be half added: its
gradient rule, both printers, the spellings people read, its picture, its name, and its
meaning for `explain`.

Oracle: the Op enum itself, against each table.
"""

from __future__ import annotations

import pytest

from bpcompile.backends.llvm.ops import EMIT
from bpcompile.differentiate.autodiff import BACKWARD_ONLY, VJP
from bpcompile.graph.ir import LEAVES, Op
from bpcompile.graph.naming import OP_WORDS
from bpcompile.graph.spelling import OP_SPELLING
from bpcompile.inspect.picture import OUTLINES
from bpcompile.inspect.scalars import RULES

COMPUTED = [op for op in Op if op not in LEAVES]
# ELEMENTWISE nodes print their SymPy expression; the other ops are spelled by the table.
TABLES = {
    "gradient rule (differentiate/autodiff.py VJP)": (
        VJP, [op for op in COMPUTED if op not in BACKWARD_ONLY]),
    "NumPy and math spelling (graph/spelling.py OP_SPELLING)": (
        OP_SPELLING, [op for op in COMPUTED if op is not Op.ELEMENTWISE]),
    "LLVM code (backends/llvm/ops.py EMIT)": (EMIT, COMPUTED),
    "explain's interpreter (inspect/scalars.py RULES)": (
        RULES, [op for op in COMPUTED if op not in BACKWARD_ONLY]),
    "picture outline (inspect/picture.py OUTLINES)": (OUTLINES, list(Op)),
    "derived names (graph/naming.py OP_WORDS)": (OP_WORDS, COMPUTED),
}


@pytest.mark.parametrize("table", list(TABLES))
def test_every_op_is_in_every_table(table: str) -> None:
    entries, needed = TABLES[table]
    missing = [op.name for op in needed if op not in entries]
    assert not missing, f"{table} has no entry for {missing}"


def test_backward_only_ops_are_not_leaves() -> None:
    assert not BACKWARD_ONLY & LEAVES
