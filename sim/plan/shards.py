"""The shard records ``apportion plan merge`` joins: found in files (a whole plan.json, or
JSON lines, also ``kubectl logs --prefix`` lines), each checked for the shape the merge
and the verdict read before any of it is used.

A record is written by ``apportion plan --shard i/N --json``; one edited by hand or cut
and pasted from a log can hold any JSON, and a field of the wrong type (``"shards": "2"``,
``"candidates": null``, a candidate without its ``key``) was a TypeError or KeyError deep
in the merge. Here it is named as a JSON Lines trace's bad field is: ``shards.log line 3
field candidates[0].key: is required``. The contents of an evaluation's ``summary``,
``queues`` and ``curves`` are the simulator's, taken as written.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from scheduler.cli import CommandError
from scheduler.fieldpaths import join
from scheduler.loading import field_problems
from scheduler.textfile import read_text
from sim.jsontext import JsonProblem, parse
from sim.rows import location

__all__ = ["SHARD_KEYS", "read_shards"]

SHARD_KEYS = ("fingerprint", "shard", "shards", "candidates")
"""What every shard's record holds; JSON without them is no shard's output (a log line)."""

_SHOWN = 5
"""Problems said of one record; the rest are counted."""


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError("is not a finite number")
    return value


_Count = Annotated[int, Field(ge=0)]
_Finite = Annotated[float, AfterValidator(_finite)]
# strict: a record is JSON our own code wrote; "2" for 2 is damage, not a spelling.
_RECORD = ConfigDict(extra="allow", strict=True)


class _Evaluation(BaseModel):
    model_config = ConfigDict(**_RECORD, title="evaluation")

    slo_met: list[bool]
    slo_values: list[float | None]
    summary: dict[str, Any]
    queues: dict[str, Any]
    curves: dict[str, Any]
    slo_by_queue: list[dict[str, float | None]]


class _Candidate(BaseModel):
    model_config = ConfigDict(**_RECORD, title="candidate")

    key: str
    status: str
    current: bool
    cost_per_hour: _Finite
    counts: list[_Count]
    evaluation: _Evaluation | None


class _Replay(BaseModel):
    """How the merge rebuilds the sweep's inputs to simulate quota splits."""

    model_config = ConfigDict(**_RECORD, title="replay")

    trace: str
    cluster: str
    growth: _Finite
    horizon_hours: _Finite | None
    price: list[str]
    policy: str
    seed: int
    max_jobs: _Count | None
    hints: list[str] = []


class _Inputs(BaseModel):
    model_config = ConfigDict(**_RECORD, title="inputs")

    slos: list[str]
    levels: list[_Finite]
    pools: list[str]
    replay: _Replay | None = None


class _Record(BaseModel):
    model_config = ConfigDict(**_RECORD, title="shard record")

    fingerprint: str
    shard: Annotated[list[_Count], Field(min_length=2, max_length=2)]
    shards: Annotated[int, Field(ge=1)]
    candidates: list[_Candidate]
    simulations: _Count
    inputs: _Inputs
    today: _Evaluation | None = None
    simulation_wall_s: list[_Finite] = []
    wall_s: _Finite = 0.0
    ahead: dict[str, _Count] = {}
    monotonicity: dict[str, list[Any]] = {}


def read_shards(paths: list[Path]) -> list[tuple[str, dict[str, Any]]]:
    """Every shard record in these files, with where it was read (file, and line)."""
    records = []
    for path in paths:
        try:
            text = read_text(path)
        except OSError as error:
            raise CommandError(f"cannot read {path}: {error.strerror}") from None
        try:
            whole = parse(text)  # a plan.json (one process's or a shard's record)
        except JsonProblem as error:
            whole = None
            if error.reason != "not JSON":  # else lines of JSON, read below
                at, column = location(text, error.offset)
                raise CommandError(f"{path} line {at} column {column}: {error.problem}") from None
        if isinstance(whole, dict):
            records.append((str(path), _shard_record(whole, str(path))))
            continue
        for n, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if line.startswith("[") and "] " in line and not line.startswith("[{"):
                line = line.split("] ", 1)[1]  # kubectl logs --prefix
            if not line.startswith("{"):
                continue
            try:
                record = parse(line)
            except JsonProblem as error:
                raise CommandError(
                    f"{path} line {n}: not a shard's JSON ({error.problem})"
                ) from None
            records.append((str(path), _shard_record(record, f"{path} line {n}")))
        if not text.strip():
            raise CommandError(f"{path}: empty")
    return records


def _shard_record(record: object, where: str) -> dict[str, Any]:
    lacking = [k for k in SHARD_KEYS if not isinstance(record, dict) or k not in record]
    if not isinstance(record, dict) or lacking:
        raise CommandError(
            f"{where}: not a shard's record (it has no {', '.join(map(repr, lacking))})"
        )
    problems = _problems(record)
    if problems:
        more = len(problems) - _SHOWN
        said = "; ".join(problems[:_SHOWN]) + (f"; and {more} more" if more > 0 else "")
        raise CommandError(f"{where}: not a shard's record as plan writes it: {said}")
    return record


def _problems(record: dict[str, Any]) -> list[str]:
    """What is wrong with the record's shape, each at its field; then what its fields say
    of each other (a shard of its own split; as many values as goals, counts as pools)."""
    try:
        checked = _Record.model_validate(record)
    except ValidationError as error:
        return [f"field {join('', *p.loc)}: {p.text}" for p in field_problems(error, _Record)]
    problems = []
    i, n = checked.shard
    if i >= n or n != checked.shards:
        problems.append(f"field shard: {i}/{n} is not one of {checked.shards} shards")
    goals, pools = len(checked.inputs.slos), len(checked.inputs.pools)
    evaluations = [("today", checked.today)] + [
        (f"candidates[{k}].evaluation", c.evaluation) for k, c in enumerate(checked.candidates)
    ]
    for field, ev in evaluations:
        if ev is not None and not len(ev.slo_met) == len(ev.slo_values) == goals:
            problems.append(f"field {field}: does not give one value per goal ({goals})")
    for k, c in enumerate(checked.candidates):
        if len(c.counts) != pools:
            problems.append(f"field candidates[{k}].counts: does not give one count per pool")
    return problems
