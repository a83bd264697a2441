"""JSON read from users' files (JSON Lines traces, Philly's log, Gavel's throughput table,
shard records, metrics exports) with every problem at a character of the text.

``json`` answers two inputs with no position at all: nesting deeper than Python's
recursion limit (``[[[…]]]`` 100,000 deep: a RecursionError) and an integer of more than
4,300 digits (a ValueError from ``int``). Here both are a ``JsonProblem`` at their offset,
as a syntax error is, so each reader names the file, line and column (and a row of JSON
Lines is a bad row ``--skip-bad-rows`` can skip). Nesting is bounded (``MAX_DEPTH``) even
where ``json`` would get through, as the checks that walk a value afterwards recurse too.
"""

from __future__ import annotations

import json
import re

__all__ = ["MAX_DEPTH", "MAX_INT_DIGITS", "JsonProblem", "decode", "parse"]

MAX_DEPTH = 100
"""Arrays and objects inside each other: the formats read here nest a few levels."""
MAX_INT_DIGITS = 4300
"""Python's own limit on reading an integer (``sys.get_int_max_str_digits``'s default)."""

_DECODER = json.JSONDecoder()
# What the locator walks: strings (skipped whole, so brackets in them do not count),
# numbers and brackets; anything else lies between them.
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|-?[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?|[\[\]{}]')


class JsonProblem(ValueError):
    """Text that is not JSON these readers take: ``problem`` at character ``offset``;
    ``reason`` is the problem without details, what skipped rows are counted by."""

    def __init__(self, offset: int, problem: str, reason: str) -> None:
        super().__init__(problem)
        self.offset = offset
        self.problem = problem
        self.reason = reason


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
    MAX_INT_DIGITS."""
    try:
        value, end = _DECODER.raw_decode(text, start)
    except json.JSONDecodeError as error:
        raise JsonProblem(error.pos, error.msg, "not JSON") from None
    except (RecursionError, ValueError) as error:  # too deep; an integer too long for int()
        located = _located(text, start, len(text))
        raise located or JsonProblem(start, str(error), "not JSON") from None
    # Only a value with that many brackets can nest that deep: most are not walked.
    if text.count("[", start, end) + text.count("{", start, end) > MAX_DEPTH:
        located = _located(text, start, end)
        if located is not None:
            raise located
    return value, end


def _located(text: str, start: int, end: int) -> JsonProblem | None:
    """The first nesting past MAX_DEPTH or integer past MAX_INT_DIGITS in the value at
    ``start`` (json says neither where)."""
    depth = 0
    for token in _TOKEN.finditer(text, start, end):
        written = token.group()
        if written[0] in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                return JsonProblem(
                    token.start(),
                    f"arrays and objects nested more than {MAX_DEPTH} deep",
                    "nested too deep",
                )
        elif written[0] in "]}":
            depth -= 1
        elif written[0] != '"' and written.lstrip("-").isdigit():  # an integer
            digits = len(written.lstrip("-"))
            if digits > MAX_INT_DIGITS:
                return JsonProblem(
                    token.start(),
                    f"an integer of {digits:,} digits (at most {MAX_INT_DIGITS:,})",
                    "integer too long",
                )
        if depth <= 0:
            return None  # the value ended
    return None
