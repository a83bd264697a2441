"""Loader for Microsoft's Philly trace (Jeon et al., ATC'19): ``cluster_job_log``.

The file is one JSON list of jobs: ``jobid``, ``vc``, ``user``, ``status`` (Pass, Killed,
Failed), ``submitted_time`` and ``attempts``, each attempt with ``start_time``,
``end_time`` and ``detail`` — the servers it ran on, ``{ip, gpus: [...]}``. Times are
``YYYY-MM-DD HH:MM:SS`` or ``None``, with no zone. The trace's other tables are stamped
``PDT``/``PST`` (``2017-10-03 00:08:00 PDT``), so they are read as US Pacific local time
(``pacific_seconds``): a job running over 2017-11-05, when clocks went back, runs an hour
longer than its naive times say, and one ending in the repeated hour 01:00-02:00 may end
"before" it started on the clock (the README does not say; read naively, such a job's
runtime was an hour off, or negative).

Mapping to a ``Job``:

- queue = ``vc``; priority 0 (the trace has none);
- arrival = ``submitted_time``, seconds after the earliest submission in the file;
- work = the last attempt's run time (``end_time − start_time``) — earlier attempts
  failed and were retried, the last is the run that counts;
- demand = the last attempt's servers as a gang: one pod per server with that server's
  GPU count (servers with different counts: one pod with all of them when it fits one
  8-GPU node, else a bad row);
- a job whose last attempt has no ``end_time`` was still running when the trace was taken
  (the trace's README): kept, running until the latest time in the file, and counted
  (``still_running``), as openb's pods running at its end are;
- jobs that never ran (no attempt, or no submission time) and jobs whose last attempt
  has no ``start_time`` (a logging error, the README says) are skipped and counted.

Errors name the file, the line and column where the job's JSON object starts, and the
field: ``cluster_job_log line 812 column 3 (jobid application_…) field
attempts[0].start_time: 'yesterday' is not a time``.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from scheduler.consistency import MAX_NODE_GPUS
from scheduler.model import Demand, Workload
from sim.job import Job, from_origin
from sim.jsontext import JsonProblem, decode
from sim.rows import TOO_MANY_GPUS, BadRows, RowError, location

__all__ = ["load_philly_jobs", "pacific_seconds"]

_TIME = "%Y-%m-%d %H:%M:%S"
_EPOCH = datetime(1970, 1, 1)
_HOUR = timedelta(hours=1)
MAX_GPUS_PER_NODE = 8


def _sunday(year: int, month: int, nth: int) -> datetime:
    first = datetime(year, month, 1)
    return first + timedelta(days=(6 - first.weekday()) % 7 + 7 * (nth - 1))


def pacific_seconds(local: datetime, later: bool = False) -> float:
    """Seconds since the Unix epoch of a US Pacific wall-clock time: PDT (UTC−7) from the
    second Sunday of March to the first Sunday of November at 02:00, PST (UTC−8) otherwise
    (the US rule since 2007, which Philly's 2017 falls under). In the hour the clocks go
    back, which occurs twice, ``later`` takes the second (PST)."""
    back = _sunday(local.year, 11, 1) + 2 * _HOUR
    if later:
        back -= _HOUR
    summer = _sunday(local.year, 3, 2) + 2 * _HOUR <= local < back
    return (local - _EPOCH).total_seconds() + (7 if summer else 8) * 3600


def _objects(text: str, source: str) -> list[tuple[int, Any]]:
    """The list's elements with their offsets, so errors can name a line."""
    i = len(text) - len(text.lstrip())
    if not text[i : i + 1] == "[":
        raise ValueError(f"{source} line 1: expected a JSON list of jobs")
    i += 1
    out: list[tuple[int, Any]] = []
    while True:
        while i < len(text) and text[i] in " \t\r\n,":
            i += 1
        if i >= len(text):
            raise ValueError(f"{source}: the JSON list is not closed")
        if text[i] == "]":
            rest = i + 1 + len(text[i + 1 :]) - len(text[i + 1 :].lstrip())
            if rest < len(text):  # two lists concatenated, or a file cut and pasted
                line, column = location(text, rest)
                raise ValueError(f"{source} line {line} column {column}: text after the list")
            return out
        try:
            value, end = decode(text, i)
        except JsonProblem as error:
            line, column = location(text, error.offset)
            raise ValueError(f"{source} line {line} column {column}: {error.problem}") from None
        out.append((i, value))
        i = end


class _Bad(Exception):
    def __init__(self, field: str, value: object, problem: str) -> None:
        self.field, self.value, self.problem = field, value, problem


def _time(value: object, field: str) -> datetime | None:
    if value is None or value == "None":
        return None
    if not isinstance(value, str):
        raise _Bad(field, value, "is not a time")
    try:
        return datetime.strptime(value, _TIME)
    except ValueError:
        raise _Bad(field, value, "is not a time like 2017-10-03 14:00:00") from None


def load_philly_jobs(
    text: str, source: str, bad: BadRows | None = None
) -> tuple[tuple[Job, ...], dict[str, int], int]:
    """Jobs; the counts of jobs skipped on purpose; and how many were still running when
    the trace was taken (kept, cut at its latest time)."""
    bad = bad if bad is not None else BadRows()
    parsed: list[tuple[float, Workload, float, float | None]] = []
    """Submission, workload, start, end (None: still running), as ``pacific_seconds``."""
    skipped = {"never ran": 0, "last attempt's start not recorded": 0, "zero duration": 0}
    latest = 0.0
    seen: set[str] = set()
    for offset, job in _objects(text, source):
        line, column = location(text, offset)
        jobid = job.get("jobid") if isinstance(job, dict) else None
        where = f"{source} line {line} column {column} (jobid {jobid})"
        try:
            if not isinstance(job, dict):
                raise _Bad("(job)", job, "is not a JSON object")
            if not isinstance(jobid, str) or not jobid:
                raise _Bad("jobid", jobid, "is not a job id")
            if jobid in seen:
                raise _Bad("jobid", jobid, "repeats an earlier job")
            vc = job.get("vc")
            if not isinstance(vc, str) or not vc:
                raise _Bad("vc", vc, "is not a virtual cluster name")
            submitted = _time(job.get("submitted_time"), "submitted_time")
            attempts = job.get("attempts")
            if not isinstance(attempts, list):
                raise _Bad("attempts", attempts, "is not a list")
            if submitted is None or not attempts:
                skipped["never ran"] += 1
                continue
            k = len(attempts) - 1
            last = attempts[k]
            if not isinstance(last, dict):
                raise _Bad(f"attempts[{k}]", last, "is not an object")
            start = _time(last.get("start_time"), f"attempts[{k}].start_time")
            end = _time(last.get("end_time"), f"attempts[{k}].end_time")
            if start is None:
                skipped["last attempt's start not recorded"] += 1
                continue
            began = pacific_seconds(start)
            ended = None if end is None else _end(end, began)
            if ended is not None and ended < began:
                raise _Bad(f"attempts[{k}].end_time", last.get("end_time"), "is before start")
            if ended == began:
                skipped["zero duration"] += 1
                continue
            demand, pods = _demand(last.get("detail"), k)
        except _Bad as e:
            bad.record(
                RowError(
                    f"{where} field {e.field}: {e.value!r} {e.problem}", f"{e.field}: {e.problem}"
                )
            )
            continue
        seen.add(jobid)
        workload = Workload(name=jobid, queue=vc, created=0, pods=pods, demand=demand)
        submit = pacific_seconds(submitted)
        parsed.append((submit, workload, began, ended))
        latest = max(latest, submit, began if ended is None else ended)
    still_running = sum(end is None for *_, end in parsed)
    runs = [(t, w, int((latest if end is None else end) - start)) for t, w, start, end in parsed]
    return from_origin(runs), skipped, still_running


def _end(end: datetime, began: float) -> float:
    """An end in the hour the clocks go back is the second one when the first would be
    before the start (``began``, from ``pacific_seconds``)."""
    first = pacific_seconds(end)
    return first if first >= began else pacific_seconds(end, later=True)


def _demand(detail: object, k: int) -> tuple[Demand, int]:
    field = f"attempts[{k}].detail"
    if not isinstance(detail, list) or not detail:
        raise _Bad(field, detail, "lists no servers")
    counts = []
    for i, server in enumerate(detail):
        gpus = server.get("gpus") if isinstance(server, dict) else None
        if not isinstance(gpus, list) or not gpus:
            raise _Bad(f"{field}[{i}].gpus", gpus, "lists no GPUs")
        if len(gpus) > MAX_NODE_GPUS:
            raise _Bad(f"{field}[{i}].gpus", len(gpus), f"is {TOO_MANY_GPUS}")
        counts.append(len(gpus))
    if len(set(counts)) == 1:
        return Demand(gpus=counts[0]), len(counts)
    total = sum(counts)
    if total <= MAX_GPUS_PER_NODE:
        return Demand(gpus=total), 1
    raise _Bad(field, counts, "spreads unequal GPU counts over servers")
