"""Text to AST. The grammar lives in `grammar.lark`; this module turns lark's parse tree into the
frozen dataclasses of `syntax.py` and lark's exceptions into `BPSyntaxError` with a caret."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from functools import lru_cache
from importlib import resources
from typing import Any

import lark
from lark import Lark, Token, Transformer, v_args
from lark.exceptions import (
    UnexpectedCharacters,
    UnexpectedEOF,
    UnexpectedInput,
    UnexpectedToken,
    VisitError,
)

from ..errors import BPSyntaxError, Pos, Source
from ..runtime import cache
from . import syntax as S

_OPENERS = {"LPAR": "RPAR", "LSQB": "RSQB"}
_CLOSERS = {"RPAR", "RSQB"}


class _BracketNewlines:
    """Post-lexer: drops newlines while a `(` or `[` is open, so statements continue."""

    always_accept = ("_NL",)

    def __init__(self) -> None:
        self.open: list[Token] = []

    def process(self, stream: Iterator[Token]) -> Iterator[Token]:
        self.open = []
        for token in stream:
            if token.type in _OPENERS:
                self.open.append(token)
            elif token.type in _CLOSERS and self.open:
                self.open.pop()
            elif token.type == "_NL" and self.open:
                continue
            yield token


GRAMMAR_CACHE = "grammar.lark-cache"


@lru_cache(maxsize=1)
def _lark() -> Lark:
    """The parser. Lark's analysis of the grammar takes a few hundredths of a second; its
    result is kept in the disk cache (checksummed, written atomically, stamped with the
    grammar's hash, lark's version and the compiler's fingerprint) so later processes start
    faster."""
    grammar = resources.files(__package__).joinpath("grammar.lark").read_text()
    # the saved parser refers to this module's classes: any change to the compiler is new
    stamp = {"grammar": hashlib.sha256(grammar.encode()).hexdigest(), "lark": lark.__version__,
             "compiler": cache.compiler_fingerprint()}
    cached = cache.load(GRAMMAR_CACHE)
    if cached is not None and cached[0] == stamp:
        return Lark.load(io.BytesIO(cached[1]))
    parser = Lark(
        grammar,
        parser="lalr",
        lexer="basic",
        postlex=_BracketNewlines(),
        propagate_positions=True,
        maybe_placeholders=True,
    )
    saved = io.BytesIO()
    parser.save(saved)
    cache.store(GRAMMAR_CACHE, stamp, saved.getvalue())
    return parser


def _pos(item: Any) -> Pos:
    """The position of a token or of a tree's meta."""
    return Pos(item.line, item.column)


@v_args(meta=True)
class _ToAst(Transformer):
    """Builds `syntax` dataclasses bottom-up from lark's tree."""

    def __init__(self, source: Source):
        super().__init__()
        self.source = source

    def _text(self, meta: Any) -> str:
        return self.source.text[meta.start_pos:meta.end_pos]

    # expressions
    def number(self, meta, children):
        return S.Number(str(children[0]), _pos(meta))

    def boolean(self, meta, children):
        return S.Boolean(str(children[0]) == "true", _pos(meta))

    def name(self, meta, children):
        return S.Name(str(children[0]), _pos(meta))

    def attr(self, meta, children):
        base, attr = children
        return S.Attr(base, str(attr), _pos(meta), self._text(meta))

    def neg(self, meta, children):
        return S.Neg(children[-1], _pos(meta), self._text(meta))

    def binop(self, meta, children):
        left, op, right = children
        return S.BinOp(str(op), left, right, _pos(meta), self._text(meta))

    compare = binop

    def list(self, meta, children):
        items = tuple(c for c in children if c is not None)
        return S.List(items, _pos(meta), self._text(meta))

    def index(self, meta, children):
        base, *subscripts = children
        return S.Index(base, tuple(subscripts), _pos(meta), self._text(meta))

    def slice(self, meta, children):
        start, stop, step = children
        return S.Slice(start, stop, step, _pos(meta))

    def ellipsis(self, meta, children):
        return S.Ellipsis_(_pos(meta))

    def keyword(self, meta, children):
        name, value = children
        return S.Keyword(str(name), value, _pos(name))

    def call(self, meta, children):
        func, *args = (c for c in children if c is not None)
        positional = tuple(a for a in args if not isinstance(a, S.Keyword))
        keywords = tuple(a for a in args if isinstance(a, S.Keyword))
        return S.Call(str(func), positional, keywords, _pos(meta), self._text(meta))

    # statements
    def dim(self, meta, children):
        token = children[0]
        value: str | int = str(token) if token.type == "NAME" else _dim_number(token, self.source)
        return S.Dim(value, _pos(token))

    def dims(self, meta, children):
        return tuple(c for c in children if c is not None)

    def network_stmt(self, meta, children):
        return S.NetworkStmt(str(children[0]), _pos(meta))

    def const_stmt(self, meta, children):
        return S.ConstStmt(str(children[0]), children[1], _pos(meta))

    def input_stmt(self, meta, children):
        return S.DataStmt("input", str(children[0]), children[1], _pos(meta))

    def target_stmt(self, meta, children):
        return S.DataStmt("target", str(children[0]), children[1], _pos(meta))

    def param_stmt(self, meta, children):
        name, dims, init = children
        return S.ParamStmt(str(name), dims, init, _pos(meta))

    def def_stmt(self, meta, children):
        name, *params, body = (c for c in children if c is not None)
        return S.DefStmt(str(name), tuple(str(p) for p in params), body, _pos(meta))

    def assign_stmt(self, meta, children):
        return S.AssignStmt(str(children[0]), children[1], _pos(meta))

    def output_stmt(self, meta, children):
        names = tuple(S.Name(str(t), _pos(t)) for t in children)
        return S.OutputStmt(names, _pos(meta))

    def loss_stmt(self, meta, children):
        return S.LossStmt(children[0], _pos(meta))

    def optimize_stmt(self, meta, children):
        return S.OptimizeStmt(children[0], _pos(meta))

    def start(self, meta, children):
        return tuple(children)


def _dim_number(token: Token, source: Source) -> int:
    text = str(token)
    if not text.isdigit() or int(text) < 1:
        raise BPSyntaxError(
            f"a dimension must be a positive integer or a name, not {text}", source, _pos(token)
        )
    return int(text)


def parse(text: str, filename: str = "<string>") -> S.Program:
    """Parse `.bp` source text into a `Program`; raise `BPSyntaxError` with a caret if bad."""
    source = Source(filename, text)
    parser = _lark()
    try:
        # '\r\n' as '\n', so that the column of an end of line is the one after its text.
        tree = parser.parse((text + "\n").replace("\r\n", "\n"))
    except UnexpectedInput as error:
        raise _syntax_error(error, source, parser) from None
    try:
        statements = _ToAst(source).transform(tree)
    except VisitError as error:  # a check inside the transformer failed
        raise error.orig_exc from None
    return S.Program(statements, source)


# ----------------------------------------------------------------------------- messages

_EXPRESSION_STARTERS = {"NAME", "NUMBER", "LPAR", "MINUS"}
_KEYWORDS = {
    "NETWORK", "CONST", "INPUT", "TARGET", "PARAM", "DEF", "OUTPUT", "LOSS", "OPTIMIZE", "BOOL",
}


def _describe_terminal(name: str, parser: Lark) -> str:
    """How a terminal is called in a message: 'a name', "')'", 'end of line'."""
    special = {
        "NAME": "a name", "NUMBER": "a number", "_NL": "end of line", "$END": "end of file",
        "COMPARE": "a comparison", "MUL_OP": "'*', '/' or '@'",
        "BOOL": "true or false",
    }
    if name in special:
        return special[name]
    try:
        pattern = parser.get_terminal(name).pattern
    except KeyError:
        return name.lower()
    return f"'{pattern.value}'"


def _describe_token(token: Token) -> str:
    if token.type == "$END":
        return "end of file"
    if token.type == "_NL":
        return "end of line"
    return f"'{token.value}'"


def _syntax_error(error: UnexpectedInput, source: Source, parser: Lark) -> BPSyntaxError:
    postlex: _BracketNewlines = parser.options.postlex
    if isinstance(error, UnexpectedCharacters):
        # lark's own copy: its text has '\r\n' as '\n', so its offsets are not source.text's.
        return BPSyntaxError(f"unexpected character {error.char!r}", source,
                             Pos(error.line, error.column))
    if isinstance(error, UnexpectedEOF) or (
        isinstance(error, UnexpectedToken) and error.token.type == "$END"
    ):
        if postlex.open:
            opener = postlex.open[-1]
            return BPSyntaxError(
                f"'{opener.value}' is never closed", source, _pos(opener)
            )
        last = max(1, len(source.text.rstrip("\n").split("\n")))
        return BPSyntaxError("unexpected end of file", source, Pos(last, 1))
    assert isinstance(error, UnexpectedToken)
    token = error.token
    expected = set(error.expected)
    where = Pos(token.line, token.column)
    if token.type in _KEYWORDS and "NAME" in expected:
        return BPSyntaxError(
            f"'{token.value}' is a keyword and cannot be used as a name", source, where
        )
    before = source.line(token.line)[: token.column - 1]
    words = before.split()
    if token.type == "EQUAL" and len(words) == 1 and words[0].upper() in _KEYWORDS:
        # Point at the keyword the message names, not at the '=' the parser stopped on.
        keyword_col = len(before) - len(before.lstrip()) + 1
        return BPSyntaxError(
            f"'{words[0]}' is a keyword and cannot be assigned", source,
            Pos(token.line, keyword_col),
        )
    if not postlex.open:  # LALR look-ahead sets mention closers even outside brackets
        expected -= {"RPAR", "RSQB", "COMMA"}
    if _EXPRESSION_STARTERS <= expected:
        wanted = "an expression"
    else:
        names = sorted(_describe_terminal(t, parser) for t in expected)
        wanted = names[0] if len(names) == 1 else "one of " + ", ".join(names[:6])
    return BPSyntaxError(f"unexpected {_describe_token(token)}; expected {wanted}", source, where)
