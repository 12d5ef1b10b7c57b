"""Lines of generated code that fit: a statement longer than the width is wrapped at its
outermost operators (or the commas of its outermost call) inside parentheses, as a person
would wrap it, and its `# file.bp:12` comment moves to a line of its own above it."""

from __future__ import annotations

WIDTH = 99  # columns, indentation included
INDENT = "    "
# Where a long expression breaks: at its loosest operators first.
LEVELS = ((" + ", " - "), (" * ", " / ", " @ "))
BREAKS = tuple(b for level in LEVELS for b in level)
OPENERS, CLOSERS = "([{", ")]}"


def fit(statement: str, comment: str, indent: str, width: int = WIDTH) -> list[str]:
    """`statement  # comment` at `indent`, as one line if it fits, else wrapped."""
    one = f"{indent}{statement}  # {comment}" if comment else f"{indent}{statement}"
    if len(one) <= width:
        return [one]
    head = [f"{indent}# {comment}"] if comment else []
    if len(indent) + len(statement) <= width:
        return head + [f"{indent}{statement}"]
    return head + _wrapped(statement, indent, width)


def _wrapped(statement: str, indent: str, width: int) -> list[str]:
    target, rhs = _split_assignment(statement)
    if rhs.startswith("(") and _closing(rhs, 0) == len(rhs) - 1:
        rhs = rhs[1:-1]  # already parenthesized: wrap its inside
    inner = indent + INDENT
    for level in LEVELS:
        pieces = _pieces(rhs, level)
        if len(pieces) > 1:
            return [f"{indent}{target}(", *_fill(pieces, inner, width), f"{indent})"]
    call = _call(rhs)
    if call is None:  # nothing to break at: leave it long rather than break it wrongly
        return [f"{indent}{statement}"]
    function, arguments = call
    lines = [f"{indent}{target}{function}("]
    for argument in _pieces(arguments, (", ",), keep=False):
        # the comma goes after the argument, however it wraps: inside parentheses it would
        # make a tuple
        wrapped = _fit_piece(argument.strip(), inner, width - 1)
        lines += [*wrapped[:-1], wrapped[-1] + ","]
    return lines + [f"{indent})"]


def _fit_piece(piece: str, indent: str, width: int) -> list[str]:
    if len(indent) + len(piece) <= width:
        return [f"{indent}{piece}"]
    return _wrapped(piece, indent, width)


def _split_assignment(statement: str) -> tuple[str, str]:
    """(`name = `, the rest): the target, with its operator, and what it is given; or the
    operator a wrapped piece starts with (`+ `), and the operand."""
    for operator in (" = ", " -= ", " += "):
        position = statement.find(operator)
        if position > 0 and _depth_at(statement, position) == 0:
            end = position + len(operator)
            return statement[:end], statement[end:]
    for lead in ("return ", *(b.lstrip() for b in BREAKS)):
        if statement.startswith(lead):
            return lead, statement[len(lead):]
    return "", statement


def _depth_at(text: str, position: int) -> int:
    depth = 0
    for character in text[:position]:
        depth += (character in OPENERS) - (character in CLOSERS)
    return depth


def _closing(text: str, start: int) -> int:
    """The index of the bracket closing the one at `start`."""
    depth = 0
    for k in range(start, len(text)):
        depth += (text[k] in OPENERS) - (text[k] in CLOSERS)
        if depth == 0:
            return k
    return -1


def _pieces(text: str, breaks: tuple[str, ...], keep: bool = True) -> list[str]:
    """`text` cut before each of `breaks` outside brackets and strings (the operator starts
    the next piece when `keep`)."""
    pieces, start, depth, quote, k = [], 0, 0, "", 0
    while k < len(text):
        character = text[k]
        if quote:
            quote = "" if character == quote else quote
        elif character in "\"'":
            quote = character
        elif character in OPENERS or character in CLOSERS:
            depth += 1 if character in OPENERS else -1
        elif depth == 0:
            found = next((b for b in breaks if text.startswith(b, k)), None)
            if found is not None:
                pieces.append(text[start:k])
                start = k + 1 if keep else k + len(found)
                k += len(found)
                continue
        k += 1
    pieces.append(text[start:])
    return [p for p in pieces if p]


def _call(text: str) -> tuple[str, str] | None:
    """(`np.where`, its arguments) when `text` is one call."""
    opening = text.find("(")
    if opening <= 0 or _closing(text, opening) != len(text) - 1:
        return None
    function = text[:opening]
    if not function.replace(".", "").replace("_", "").isalnum():
        return None
    return function, text[opening + 1:-1]


def _fill(pieces: list[str], indent: str, width: int) -> list[str]:
    """Pieces joined greedily into lines of at most `width`."""
    lines: list[str] = []
    current = ""
    for piece in pieces:
        candidate = f"{current} {piece}" if current else piece
        if current and len(indent) + len(candidate) > width:
            lines += _fit_piece(current, indent, width)
            current = piece
        else:
            current = candidate
    if current:
        lines += _fit_piece(current, indent, width)
    return lines
