"""Reading trace rows: line numbers, errors that name the cell, and skipping bad rows.

Every loader reports a bad value as ``file line N column C: 'value' problem``, worded as a
snapshot's problems are (``scheduler.loading``) — fixed at the row, not debugged in the
simulator. With ``BadRows(skip=True)`` (the command's ``--skip-bad-rows``) a bad row is
dropped instead and counted under its reason (``column gpu_num: is not an integer``), and
the run reports the counts.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from scheduler.consistency import MAX_NODE_GPUS
from scheduler.fieldpaths import did_you_mean, show
from scheduler.model import MAX_AMOUNT, TOO_MUCH_CPU, TOO_MUCH_MEMORY
from sim.jsontext import MAX_INT_DIGITS

__all__ = [
    "MAX_SECONDS",
    "MIN_RATE",
    "TOO_LONG",
    "TOO_MANY_GPUS",
    "TOO_SLOW",
    "BadRows",
    "Row",
    "RowError",
    "csv_rows",
    "location",
    "pod_gpus",
]

_UNSIGNED = re.compile(r"[0-9]+")
_NEGATIVE = re.compile(r"-[0-9]+")
_N = TypeVar("_N", int, float)
_NUMBER = re.compile(r"[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?")


class RowError(ValueError):
    """One bad row; ``reason`` is what the skip counts are keyed by."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


MAX_SECONDS = 10**12
"""The latest time and the most work (seconds at rate 1.0, or Gavel's steps) a trace row may
give: about 31,700 years of seconds, past any trace. Beyond it (1e308, a time written in
nanoseconds) the replay's clock and integrals overflowed (an OverflowError mid-run) or
printed 300-digit waits."""
TOO_LONG = "is more than 10^12, the most a trace's times and work may be (31,700 years of seconds)"
MIN_RATE = 1e-6
"""The slowest throughput a job may have on a GPU model (work per second): MAX_SECONDS of
work at it take 10^18 s, which the engine's integer clock still holds; 1e-320 made the
time infinite."""
TOO_SLOW = f"is below {MIN_RATE:g}, the slowest rate a job may have"

_NODE_BOUND = f"than a node can have ({MAX_NODE_GPUS})"
TOO_MANY_GPUS = f"more GPUs in one pod {_NODE_BOUND}"
"""A typo (GPUs in MiB, a count pasted twice), a bad row in every format as in snapshots:
the pod would wait for ever, and its size overflows the fragmentation measure."""


def pod_gpus(gpus: int, where: str, written: object) -> int:
    """``gpus`` whole GPUs for one pod, read at ``where`` (file, line, column) from the value
    ``written``, which may count several pods' GPUs; past ``MAX_NODE_GPUS``, a RowError."""
    if gpus <= MAX_NODE_GPUS:
        return gpus
    if str(written).strip() == str(gpus):
        raise RowError(f"{where}: {show(written)} is {TOO_MANY_GPUS}", TOO_MANY_GPUS)
    raise RowError(
        f"{where}: {show(written)} is {gpus} GPUs in one pod, more {_NODE_BOUND}", TOO_MANY_GPUS
    )


def location(text: str, offset: int) -> tuple[int, int]:
    """1-based (line, column) of a character offset in ``text``."""
    line = text.count("\n", 0, offset) + 1
    return line, offset - (text.rfind("\n", 0, offset) + 1) + 1


@dataclass(slots=True)
class BadRows:
    """Raise on the first bad row, or (``skip``) count bad rows per reason and go on."""

    skip: bool = False
    counts: dict[str, int] = field(default_factory=dict)
    examples: dict[str, str] = field(default_factory=dict)
    """The first full message per reason, for the report."""

    def record(self, error: RowError) -> None:
        if not self.skip:
            raise error
        self.counts[error.reason] = self.counts.get(error.reason, 0) + 1
        self.examples.setdefault(error.reason, str(error))

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass(frozen=True, slots=True)
class Row:
    source: str
    line: int
    values: dict[str, str]

    def error(self, column: str, problem: str) -> RowError:
        value = self.values.get(column, "")
        return RowError(
            f"{self.where(column)}: {show(value)} {problem}", f"column {column}: {problem}"
        )

    def where(self, column: str) -> str:
        return f"{self.source} line {self.line} column {column}"

    def node_gpus(self, column: str) -> int:
        """A node's GPUs, at most ``MAX_NODE_GPUS`` as in snapshots and ``uniform:``: a
        typo (100,000,000) built that many GPUs, until memory ran out."""
        gpus = self.count(column)
        if gpus > MAX_NODE_GPUS:
            raise self.error(column, f"is more GPUs {_NODE_BOUND}")
        return gpus

    def pod_gpus(self, column: str, gpus: int) -> int:
        """``gpus`` for one pod, read from ``column`` (``pod_gpus``)."""
        return pod_gpus(gpus, self.where(column), self.values.get(column, ""))

    def amount(self, column: str, memory: bool = False, scale: int = 1, unit: str = "") -> int:
        """A non-negative integer amount of CPU in milli-cores (``memory``: MiB), at most
        MAX_AMOUNT; a file that writes it in another ``unit`` (cores, GB) gives ``scale``
        of these per unit."""
        return self.at_most(column, self.count(column) * scale, memory, unit)

    def at_most(self, column: str, value: _N, memory: bool, unit: str = "") -> _N:
        """``value``, milli-cores (``memory``: MiB) read from ``column`` (written in
        ``unit``, if another), when at most MAX_AMOUNT; past it a RowError: numpy's arrays
        would overflow mid-run."""
        if value <= MAX_AMOUNT:
            return value
        problem = TOO_MUCH_MEMORY if memory else TOO_MUCH_CPU
        raise self.error(column, f"{unit} {problem}" if unit else problem)

    def text(self, column: str) -> str:
        value = self.values[column].strip()
        if not value:
            raise self.error(column, "is empty")
        return value

    def count(self, column: str, time: bool = False) -> int:
        """A non-negative integer; a ``time`` (or an amount of work) at most MAX_SECONDS."""
        raw = self.values[column].strip()
        if _UNSIGNED.fullmatch(raw):
            digits = raw.lstrip("0") or "0"
            if len(digits) > MAX_INT_DIGITS:  # int() refuses it, naming no cell
                raise self.error(column, "is too large")
            return self._time(column, int(digits), time)
        if _NEGATIVE.fullmatch(raw):
            raise self.error(column, "is negative")
        raise self.error(column, "is not an integer")

    def number(self, column: str, time: bool = False) -> float:
        """A finite decimal number (traces write times and plans as floats); a ``time`` (or
        an amount of work) at most MAX_SECONDS."""
        raw = self.values[column].strip()
        if not _NUMBER.fullmatch(raw):
            raise self.error(column, "is not a number")
        value = float(raw)
        if not math.isfinite(value):  # 1e400 matches the pattern
            raise self.error(column, "is too large")
        return self._time(column, value, time)

    def _time(self, column: str, value: _N, time: bool) -> _N:
        if time and value > MAX_SECONDS:
            raise self.error(column, TOO_LONG)
        return value


def _csv_problem(
    error: csv.Error, stopped: int, text: str, start: int, header: Sequence[str], delimiter: str
) -> str:
    """The csv module's error, at the line it ``stopped`` on. A field past its size limit
    ('field larger than field limit (131072)') is named at the row's ``start`` line and,
    when that line shows which, its column, with what the limit is."""
    limit = csv.field_size_limit()
    if not str(error).startswith("field larger than field limit"):
        return f"line {stopped}: {error}"
    lines = io.StringIO(text.removeprefix("\ufeff"), newline="").readlines()  # as the reader
    cells = lines[start - 1].rstrip("\r\n").split(delimiter) if start <= len(lines) else []
    # The first cell past the limit, or the one whose quote its line never closes.
    at = next((k for k, c in enumerate(cells) if len(c) > limit or c.count('"') % 2), None)
    column = f" column {header[at]}" if at is not None and at < len(header) else ""
    return (
        f"line {start}{column}: more than {limit:,} characters, the most Python's csv module "
        "reads in one field (a quote left open runs on to it)"
    )


def csv_rows(
    text: str,
    source: str,
    columns: Sequence[str],
    bad: BadRows | None = None,
    names: Sequence[str] | None = None,
    delimiter: str = ",",
    known: Sequence[str] | None = None,
) -> Iterator[Row]:
    """Rows of CSV text as dicts, each with its line number. The header row names the
    columns unless ``names`` is given (files without a header, like PAI's tables). A row
    with the wrong number of fields goes to ``bad`` (raised by default). ``known``: every
    column the format has; another in the header is the file's error, said once, rather
    than every row's (which ``--skip-bad-rows`` would then skip, all of them); so is a
    column named twice (which of the two is meant?)."""
    bad = bad if bad is not None else BadRows()
    # strict: a stray or unclosed quote is an error, not a silently merged field
    reader = csv.reader(
        io.StringIO(text.removeprefix("\ufeff"), newline=""), strict=True, delimiter=delimiter
    )
    if names is None:
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise ValueError(
                f"{source}: empty; expected a header row with {', '.join(columns)}"
            ) from None
        except csv.Error as e:
            where = _csv_problem(e, reader.line_num, text, 1, (), delimiter)
            raise ValueError(f"{source} {where}") from None
        first: dict[str, int] = {}
        for field_no, name in enumerate(header, 1):
            if name and first.setdefault(name, field_no) != field_no:  # the last one won
                raise ValueError(
                    f"{source} line 1 column {name}: named twice in the header (fields "
                    f"{first[name]} and {field_no})"
                )
        missing = [c for c in columns if c not in header]
        if missing:
            raise ValueError(
                f"{source} line 1: missing column(s) {', '.join(missing)}; "
                f"found: {', '.join(header)}"
            )
        unknown = next((c for c in header if c not in known), None) if known else None
        if known and unknown is not None:
            raise ValueError(
                f"{source} line 1 column {unknown}: unknown column"
                f"{did_you_mean(unknown, known)} (columns: {', '.join(known)})"
            )
    else:
        header = list(names)
    while True:
        start = reader.line_num + 1  # the row's first line (a quoted field may span lines)
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            where = _csv_problem(e, reader.line_num, text, start, header, delimiter)
            raise ValueError(f"{source} {where}") from None
        if not fields:  # blank line
            continue
        if len(fields) != len(header):
            bad.record(
                RowError(
                    f"{source} line {reader.line_num}: {len(fields)} fields, "
                    f"the header has {len(header)}",
                    "wrong number of fields",
                )
            )
            continue
        yield Row(source, reader.line_num, dict(zip(header, fields, strict=True)))
