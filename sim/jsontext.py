"""JSON read from users' files (JSON Lines traces, Philly's log, Gavel's throughput table,
shard records, metrics exports) with every problem at a character of the text.

``json`` answers two inputs with no position at all: nesting deeper than Python's
recursion limit (``[[[…]]]`` 100,000 deep: a RecursionError) and an integer of more than
4,300 digits (a ValueError from ``int``); and it keeps the last of a key given twice
(``{"gpus": 1, "gpus": 2}``) without a word. Here each is a ``JsonProblem`` at its offset,
as a syntax error is, so each reader names the file, line and column (and a row of JSON
Lines is a bad row ``--skip-bad-rows`` can skip); a duplicate key is refused as snapshots
refuse it (``scheduler.loading``). Nesting is bounded (``MAX_DEPTH``) even where ``json``
would get through, as the checks that walk a value afterwards recurse too.
"""

from __future__ import annotations

import json
import re

from scheduler.fieldpaths import json_sentence

__all__ = ["MAX_DEPTH", "MAX_INT_DIGITS", "JsonProblem", "decode", "parse"]

MAX_DEPTH = 100
"""Arrays and objects inside each other: the formats read here nest a few levels."""
MAX_INT_DIGITS = 4300
"""Python's own limit on reading an integer (``sys.get_int_max_str_digits``'s default)."""


class _Repeated(Exception):
    """A key given twice in one object (found again, with its place, by ``_located``)."""


def _unique(pairs: list[tuple[str, object]]) -> dict[str, object]:
    found = dict(pairs)
    if len(found) != len(pairs):
        raise _Repeated
    return found


_DECODER = json.JSONDecoder(object_pairs_hook=_unique)
# What the locator walks: strings (skipped whole, so brackets in them do not count),
# numbers and brackets; anything else lies between them.
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|-?[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?|[\[\]{}]')
_COLON = re.compile(r"[ \t\r\n]*:")


class JsonProblem(ValueError):
    """Text that is not JSON these readers take: ``problem`` at character ``offset``;
    ``reason`` is the problem without details, what skipped rows are counted by."""

    def __init__(self, offset: int, problem: str, reason: str) -> None:
        super().__init__(problem)
        self.offset = offset
        self.problem = problem
        self.reason = reason

    @property
    def said(self) -> str:
        """The problem as a whole file's: a syntax error says the file is not JSON at all
        ('not JSON (Expecting value)'), where 'Expecting value' alone did not."""
        return f"not JSON ({self.problem})" if self.reason == "not JSON" else self.problem


def parse(text: str) -> object:
    """The one JSON value ``text`` holds (``json.loads``), or JsonProblem."""
    start = len(text) - len(text.lstrip())
    value, end = decode(text, start)
    rest = len(text) - len(text[end:].lstrip())
    if rest < len(text):
        raise JsonProblem(rest, "Extra data", "not JSON")
    return value


def decode(text: str, start: int = 0) -> tuple[object, int]:
    """The JSON value at ``start`` and the offset after it (``JSONDecoder.raw_decode``),
    or JsonProblem: a syntax error, nesting past MAX_DEPTH, an integer past
    MAX_INT_DIGITS, a key given twice in one object."""
    try:
        value, end = _DECODER.raw_decode(text, start)
    except json.JSONDecodeError as error:
        raise JsonProblem(error.pos, json_sentence(error.msg), "not JSON") from None
    # Too deep; an integer too long for int(); a key twice.
    except (RecursionError, ValueError, _Repeated) as error:
        located = _located(text, start, len(text))
        raise located or JsonProblem(start, str(error), "not JSON") from None
    # Only a value with that many brackets can nest that deep: most are not walked.
    if text.count("[", start, end) + text.count("{", start, end) > MAX_DEPTH:
        located = _located(text, start, end)
        if located is not None:
            raise located
    return value, end


def _located(text: str, start: int, end: int) -> JsonProblem | None:
    """The first nesting past MAX_DEPTH, integer past MAX_INT_DIGITS or key given twice in
    the value at ``start`` (json says none of them where)."""
    open_: list[set[str] | None] = []
    """The arrays (None) and objects (their keys so far) the walk is in."""
    for token in _TOKEN.finditer(text, start, end):
        written = token.group()
        if written[0] in "[{":
            open_.append(set() if written[0] == "{" else None)
            if len(open_) > MAX_DEPTH:
                return JsonProblem(
                    token.start(),
                    f"arrays and objects nested more than {MAX_DEPTH} deep",
                    "nested too deep",
                )
        elif written[0] in "]}":
            open_.pop()
        elif written[0] == '"':
            keys = open_[-1] if open_ else None
            if keys is not None and _COLON.match(text, token.end()):  # a key
                key = json.loads(written)
                if key in keys:
                    return JsonProblem(token.start(), f"duplicate key {key!r}", "duplicate key")
                keys.add(key)
        elif written.lstrip("-").isdigit() and len(written.lstrip("-")) > MAX_INT_DIGITS:
            digits = len(written.lstrip("-"))
            return JsonProblem(
                token.start(),
                f"an integer of {digits:,} digits (at most {MAX_INT_DIGITS:,})",
                "integer too long",
            )
        if not open_:
            return None  # the value ended
    return None
