"""Apportion's own job trace: CSV or JSON Lines, one job per row, validated by pydantic.

Fields (CSV header names = JSON keys):

- ``name`` (unique), ``queue`` (empty or missing: ``default``), ``submit`` (seconds),
  ``runtime`` (seconds at rate 1.0), both at most 10^12 (``sim.rows.MAX_SECONDS``);
- exactly one demand per pod: ``gpus``, ``gpu_milli`` (1–999), ``mig_profile`` (one some
  catalog GPU model has), or ``gpu_memory_mib``; ``pods`` (default 1; more = a gang);
  ``gpus`` 0 and no other demand is a CPU-only job, which Apportion does not schedule:
  left out and counted (``CPU_ONLY``), as the public traces' are;
- optional: ``priority`` (0), ``models`` (acceptable GPU models; CSV ``A|B``),
  ``cpu_milli``, ``memory_mib`` (each at most 10^12, ``scheduler.model.MAX_AMOUNT``),
  ``throughput`` (work per second per model, relative to 1.0, at least 1e-6; CSV
  ``H100-80GB=2.1;A100-80GB=1``), ``gpu_util`` (0–1, measured use).

This maps one to one onto ``Workload`` and ``Job``: queue, priority, demand and models
as given; ``runtime`` is the work; ``throughput`` both makes the job faster or slower
on each model and tells the allocator which models it prefers.

A bad row is named as a snapshot's problems are (``scheduler.loading``), every problem of
the row at once: ``jobs.csv line 4 column submit: '-5' is negative`` (``field`` in JSON
Lines, where a column is a character's).
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache
from typing import Annotated, TypeVar

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from scheduler.catalog import default_catalog
from scheduler.fieldpaths import join, not_a_mig_profile, show
from scheduler.loading import FieldProblem, field_problems, validated
from scheduler.model import CpuMilli, Demand, MemoryMib, NonNegative, Positive, Workload
from sim.job import DEFAULT_QUEUE, Job
from sim.jsontext import JsonProblem, parse
from sim.rows import (
    MAX_SECONDS,
    MIN_RATE,
    TOO_LONG,
    TOO_SLOW,
    BadRows,
    RowError,
    csv_rows,
    location,
    pod_gpus,
)

__all__ = ["CPU_ONLY", "JOB_FIELDS", "JobRow", "job_csv", "load_job_csv", "load_job_jsonl"]

CPU_ONLY = "cpu-only job"
"""What a row with ``gpus`` 0 and no other GPU demand is counted as, left out."""
_GPU_DEMANDS = ("gpu_milli", "mig_profile", "gpu_memory_mib")

_N = TypeVar("_N", int, float)
_V = TypeVar("_V")


def _within(value: _N) -> _N:
    """A submit time or runtime past MAX_SECONDS: a bad row, not an overflow mid-run."""
    if value > MAX_SECONDS:
        raise ValueError(TOO_LONG)
    return value


@cache
def _catalog_profiles() -> frozenset[str]:
    """Every catalog model's MIG profiles, once (not a new set per row)."""
    return frozenset(default_catalog().mig_profile_names())


def _mig_profile(name: str) -> str:
    """A profile no GPU model has: a bad row at its cell, as in a snapshot, not a job that
    waits to the end of the run as one the cluster "can never run". A cluster file adds
    GPU models without MIG, so the catalog's profiles are every cluster's."""
    profiles = _catalog_profiles()
    if name not in profiles:
        raise ValueError(not_a_mig_profile(name, profiles))
    return name


def _fast_enough(rate: float) -> float:
    """A rate below MIN_RATE: runtime ÷ rate could be no time the engine holds."""
    if rate < MIN_RATE:
        raise ValueError(TOO_SLOW)
    return rate


def _plain(value: _V) -> _V:
    """A number written as text (every CSV cell) with a '_': Python reads '1_000' as 1000,
    but no CSV writer writes one, so it is a typo or another field pasted in."""
    if isinstance(value, str) and "_" in value:
        raise ValueError(_NO_UNDERSCORE)
    return value


_NO_UNDERSCORE = "is not a number (a trace writes numbers without '_')"
_PLAIN = BeforeValidator(_plain)
_Seconds = Annotated[float, Field(gt=0, allow_inf_nan=False), _PLAIN, AfterValidator(_within)]
_Rate = Annotated[float, Field(gt=0, allow_inf_nan=False), _PLAIN, AfterValidator(_fast_enough)]


class JobRow(BaseModel):
    # title: what the list of fields is called when a field is unknown ('job fields: …').
    model_config = ConfigDict(extra="forbid", frozen=True, title="job")

    name: Annotated[str, Field(min_length=1)]
    queue: Annotated[str, Field(min_length=1)] = DEFAULT_QUEUE
    submit: Annotated[NonNegative, _PLAIN, AfterValidator(_within)]
    runtime: _Seconds
    gpus: Annotated[Positive, _PLAIN] | None = None
    gpu_milli: Annotated[int, Field(ge=1, le=999), _PLAIN] | None = None
    mig_profile: Annotated[str, AfterValidator(_mig_profile)] | None = None
    gpu_memory_mib: Annotated[Positive, _PLAIN] | None = None
    pods: Annotated[Positive, _PLAIN] = 1
    priority: Annotated[int, _PLAIN] = 0
    models: tuple[str, ...] = ()
    cpu_milli: Annotated[CpuMilli, _PLAIN] = 0
    memory_mib: Annotated[MemoryMib, _PLAIN] = 0
    throughput: dict[str, _Rate] = Field(default_factory=dict)
    gpu_util: Annotated[float, Field(ge=0, le=1), _PLAIN] | None = None

    def job(self) -> Job:
        demand = Demand(
            gpus=self.gpus,
            gpu_milli=self.gpu_milli,
            mig_profile=self.mig_profile,
            gpu_memory_mib=self.gpu_memory_mib,
            models=self.models,
        )
        workload = Workload(
            name=self.name,
            queue=self.queue,
            priority=self.priority,
            created=self.submit,
            pods=self.pods,
            demand=demand,
            cpu_milli=self.cpu_milli,
            memory_mib=self.memory_mib,
            throughput=dict(self.throughput),
        )
        return Job(
            workload,
            self.runtime,
            tuple(sorted(self.throughput.items())),
            gpu_util=self.gpu_util,
        )


JOB_FIELDS = tuple(JobRow.model_fields)


def _cpu_only(data: dict[str, object]) -> bool:
    """``gpus`` 0 (``0`` in a CSV cell, a JSON integer 0) and no other GPU demand."""
    gpus = data.get("gpus")
    if isinstance(gpus, bool) or not str(gpus).strip() or str(gpus).strip("0 "):
        return False
    return all(data.get(k) is None for k in _GPU_DEMANDS)


def _build(
    data: dict[str, object],
    source: str,
    line: int,
    noun: str,
    bad: BadRows,
    seen: dict[str, int],
    skipped: dict[str, int],
) -> Job | None:
    """The row's job; None (and the row to ``bad``) when it has problems, or to ``skipped``
    when it is a CPU-only job. ``noun`` is what a key is called in the file (column,
    field)."""
    cpu_only = _cpu_only(data)
    if cpu_only:  # checked as a 1-GPU job: its other cells must be right too
        data = {**data, "gpus": 1}
    where = f"{source} line {line}"
    job = None
    problems: list[FieldProblem] = []
    try:
        if noun == "field":  # JSON: a number is one as written (a CSV cell is always text)
            row, problems = validated(JobRow, data, from_yaml=False)
        else:
            row = JobRow.model_validate(data)
        if row is not None:
            job = row.job()
    except ValidationError as error:
        problems += field_problems(error, JobRow)
    if job is None:
        bad.record(_row_error(where, noun, problems))
        return None
    if cpu_only:
        skipped[CPU_ONLY] = skipped.get(CPU_ONLY, 0) + 1
        return None
    gpus = job.workload.demand.gpus
    if gpus is not None:
        try:
            pod_gpus(gpus, f"{where} {noun} gpus", data["gpus"])
        except RowError as error:
            bad.record(error)
            return None
    if job.name in seen:
        bad.record(
            RowError(
                f"{where} {noun} name: {show(job.name)} repeats the name on line {seen[job.name]}",
                f"{noun} name: repeated",
            )
        )
        return None
    seen[job.name] = line
    return job


def _row_error(where: str, noun: str, problems: list[FieldProblem]) -> RowError:
    """Every problem of a row in one error, counted (skipped) under the first one's."""

    def key(p: FieldProblem) -> str:
        return f"{noun} {join('', *p.loc)}" if p.loc else ""  # no key: a rule over the row

    said = "; ".join(f"{key(p)}: {p.text}" if p.loc else p.text for p in problems)
    first = problems[0]
    return RowError(
        f"{where} {said}" if first.loc else f"{where}: {said}",
        f"{key(first)}: {first.why}" if first.loc else first.why,
    )


def load_job_csv(
    text: str, source: str, bad: BadRows | None = None, skipped: dict[str, int] | None = None
) -> tuple[Job, ...]:
    """The file's jobs; CPU-only rows are counted in ``skipped`` (by reason)."""
    bad = bad if bad is not None else BadRows()
    skipped = skipped if skipped is not None else {}
    jobs: list[Job] = []
    seen: dict[str, int] = {}
    for row in csv_rows(text, source, ("name", "submit", "runtime"), bad, known=JOB_FIELDS):
        data: dict[str, object] = {}
        for key, raw in row.values.items():
            value = raw.strip()
            if not value:
                continue
            if key == "models":
                data[key] = tuple(m.strip() for m in value.split("|"))
            elif key == "throughput":
                pairs = [p.split("=", 1) for p in value.split(";") if p.strip()]
                if any(len(p) != 2 for p in pairs):
                    bad.record(row.error(key, "is not MODEL=rate;MODEL=rate"))
                    data = {}
                    break
                data[key] = {m.strip(): r.strip() for m, r in pairs}
            else:
                data[key] = value
        if not data:
            continue
        job = _build(data, source, row.line, "column", bad, seen, skipped)
        if job is not None:
            jobs.append(job)
    return tuple(jobs)


def load_job_jsonl(
    text: str, source: str, bad: BadRows | None = None, skipped: dict[str, int] | None = None
) -> tuple[Job, ...]:
    """The file's jobs, as ``load_job_csv``."""
    bad = bad if bad is not None else BadRows()
    skipped = skipped if skipped is not None else {}
    jobs: list[Job] = []
    seen: dict[str, int] = {}
    offset = 0
    for number, line in enumerate(text.splitlines(keepends=True), start=1):
        start, offset = offset, offset + len(line)
        if not line.strip():
            continue
        try:
            data = parse(line)
        except JsonProblem as error:
            _, column = location(text, start + error.offset)
            bad.record(
                RowError(f"{source} line {number} column {column}: {error.problem}", error.reason)
            )
            continue
        if not isinstance(data, dict):
            bad.record(RowError(f"{source} line {number}: not a JSON object", "not an object"))
            continue
        job = _build(data, source, number, "field", bad, seen, skipped)
        if job is not None:
            jobs.append(job)
    return tuple(jobs)


def job_csv(jobs: Iterable[Job]) -> str:
    """Jobs in this format's CSV form (the inverse of ``load_job_csv``)."""
    lines = [",".join(_CSV_COLUMNS)]
    for job in jobs:
        w = job.workload
        d = w.demand
        cells = {
            "name": w.name,
            "queue": w.queue,
            "submit": str(w.created),
            "runtime": f"{job.work:g}",
            "gpus": "" if d.gpus is None else str(d.gpus),
            "gpu_milli": "" if d.gpu_milli is None else str(d.gpu_milli),
            "mig_profile": d.mig_profile or "",
            "gpu_memory_mib": "" if d.gpu_memory_mib is None else str(d.gpu_memory_mib),
            "pods": str(w.pods),
            "priority": str(w.priority),
            "models": "|".join(d.models),
            "cpu_milli": str(w.cpu_milli),
            "memory_mib": str(w.memory_mib),
            "throughput": ";".join(f"{m}={r:g}" for m, r in job.rates),
        }
        lines.append(",".join(cells[c] for c in _CSV_COLUMNS))
    return "\n".join(lines) + "\n"


_CSV_COLUMNS = (
    "name",
    "queue",
    "submit",
    "runtime",
    "gpus",
    "gpu_milli",
    "mig_profile",
    "gpu_memory_mib",
    "pods",
    "priority",
    "models",
    "cpu_milli",
    "memory_mib",
    "throughput",
)
