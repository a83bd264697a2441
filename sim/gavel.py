"""Loader for Gavel's job traces (Narayanan et al., OSDI'20) and its throughput table.

A trace is tab-separated, one job per line, in one of two forms:

- 10 fields: job_type, command, working_directory, num_steps_arg, needs_data_dir (0/1),
  total_steps, scale_factor, priority_weight, SLO (−1 = none), arrival_time (s);
- 7 fields (older): job_type, command, num_steps_arg, needs_data_dir, total_steps,
  arrival_time, scale_factor.

The throughput table (JSON) maps a GPU type (``v100``, ``p100``, ``k80``) to
``"(job_type, scale_factor)"`` → ``{"null": steps per second running alone, …}``; a rate
is finite and at least ``MIN_RATE`` (1e-6), else the table is refused at its key.

Mapping to a ``Job``: name ``job-<line>``; queue ``gavel`` (one tenant: the trace has no
users; ``priority_weight`` and ``SLO`` have no quota equivalent and are not read);
arrival = ``arrival_time``; one pod of ``scale_factor`` whole GPUs; work =
``total_steps``, done at the table's rate on the GPU type the job gets — so the same job
is faster on a V100 than on a K80 — and the rates also go into the workload's
``throughput``, so the allocator prefers the faster model; the job may only run on the
GPU types the table measured it on. A job type the table does not list is a bad row.
Replayed on a cluster with only some of those types (``on_cluster``), a job keeps the ones
the cluster has; one measured on none of them is left out and counted.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace

from scheduler.catalog import Catalog
from scheduler.fieldpaths import show
from scheduler.model import Demand, Workload
from sim.job import Job
from sim.jsontext import JsonProblem, parse
from sim.rows import MIN_RATE, TOO_SLOW, BadRows, RowError, csv_rows, location
from sim.trace import Trace

__all__ = [
    "GAVEL_FIELDS",
    "GAVEL_FIELDS_LEGACY",
    "GPU_TYPES",
    "load_gavel_jobs",
    "load_throughputs",
    "on_cluster",
]

GAVEL_FIELDS = (
    "job_type",
    "command",
    "working_directory",
    "num_steps_arg",
    "needs_data_dir",
    "total_steps",
    "scale_factor",
    "priority_weight",
    "SLO",
    "arrival_time",
)
GAVEL_FIELDS_LEGACY = (
    "job_type",
    "command",
    "num_steps_arg",
    "needs_data_dir",
    "total_steps",
    "arrival_time",
    "scale_factor",
)
GPU_TYPES = {"v100": "V100", "p100": "P100", "k80": "K80"}
"""Gavel's GPU type names → model names (custom models in ``sim.models``)."""

Throughputs = Mapping[str, Mapping[tuple[str, int], float]]
_TABLE = "expected Gavel's throughput table, a JSON object keyed by GPU type"


def load_throughputs(text: str, source: str) -> dict[str, dict[tuple[str, int], float]]:
    """Model name → (job_type, scale_factor) → steps per second running alone."""
    if not text.strip():
        raise ValueError(f"{source}: empty, not JSON; {_TABLE}")
    try:
        data = parse(text)
    except JsonProblem as error:
        line, column = location(text, error.offset)
        raise ValueError(f"{source} line {line} column {column}: {error.said}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{source}: expected an object keyed by GPU type")
    out: dict[str, dict[tuple[str, int], float]] = {}
    for gpu_type, jobs in data.items():
        model = GPU_TYPES.get(gpu_type.lower())
        if model is None:
            raise ValueError(
                f"{source}: GPU type {gpu_type!r} is not one of {', '.join(GPU_TYPES)}"
            )
        if not isinstance(jobs, dict):
            raise ValueError(f"{source}: {gpu_type}: expected an object keyed by job")
        table: dict[tuple[str, int], float] = {}
        for key, entry in jobs.items():
            parsed = _key(key)
            rate = entry.get("null") if isinstance(entry, dict) else None
            where = f"{source}: {gpu_type}[{key!r}]"
            if parsed is None or isinstance(rate, bool) or not isinstance(rate, int | float):
                raise ValueError(
                    f'{where}: expected a "(job type, scale)" key and a positive "null" rate'
                )
            table[parsed] = _rate(rate, f"{where}.null")
        out[model] = table
    return out


def _rate(rate: float, where: str) -> float:
    """Steps per second, finite and at least MIN_RATE: NaN passed 'rate <= 0' and failed
    mid-run naming nothing, and 1e-320 made a job's time infinite (an OverflowError)."""
    try:
        value = float(rate)
    except OverflowError:  # an integer of hundreds of digits
        value = math.inf
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{where}: {show(rate)} is not a finite positive rate")
    if value < MIN_RATE:
        raise ValueError(f"{where}: {show(rate)} {TOO_SLOW}")
    return value


def _key(key: str) -> tuple[str, int] | None:
    """``"('ResNet-18 (batch size 16)', 1)"`` → ("ResNet-18 (batch size 16)", 1)."""
    text = key.strip()
    if not (text.startswith("(") and text.endswith(")")):
        return None
    body, _, scale = text[1:-1].rpartition(",")
    name = body.strip().strip("'\"")
    try:
        return name, int(scale.strip())
    except ValueError:
        return None


def load_gavel_jobs(
    text: str, source: str, throughputs: Throughputs, bad: BadRows | None = None
) -> tuple[tuple[Job, ...], dict[str, int]]:
    """Jobs, and the count of jobs of no steps (skipped on purpose, as other formats skip
    zero-duration jobs)."""
    bad = bad if bad is not None else BadRows()
    skipped = {"zero steps": 0}
    first = next((line for line in text.splitlines() if line.strip()), "")
    fields = first.count("\t") + 1
    if fields not in (7, 10):
        raise ValueError(
            f"{source} line 1: {fields} tab-separated fields; a Gavel trace has 10 "
            "(or 7 in the older form)"
        )
    names = GAVEL_FIELDS if fields == 10 else GAVEL_FIELDS_LEGACY
    jobs: list[Job] = []
    for row in csv_rows(text, source, names, bad, names, delimiter="\t"):
        try:
            job_type = row.text("job_type")
            steps = row.count("total_steps", time=True)
            scale = row.count("scale_factor")
            arrival = row.number("arrival_time", time=True)
            if scale == 0:
                raise row.error("scale_factor", "is 0")
            row.pod_gpus("scale_factor", scale)
            if arrival < 0:
                raise row.error("arrival_time", "is negative")
            rates = {
                model: table[(job_type, scale)]
                for model, table in throughputs.items()
                if (job_type, scale) in table
            }
            if not rates:
                raise row.error(
                    "job_type", f"with scale_factor {scale} is not in the throughput table"
                )
        except RowError as error:
            bad.record(error)
            continue
        if steps == 0:
            skipped["zero steps"] += 1
            continue
        workload = Workload(
            name=f"job-{row.line:06d}",
            queue="gavel",
            created=int(arrival),
            # Only the GPU types the table measured: elsewhere the job's speed is unknown.
            demand=Demand(gpus=scale, models=tuple(sorted(rates, key=lambda m: -rates[m]))),
            throughput=rates,
        )
        jobs.append(Job(workload, float(steps), tuple(sorted(rates.items()))))
    return tuple(jobs), skipped


def on_cluster(trace: Trace, catalog: Catalog) -> tuple[Trace, list[str]]:
    """The trace with each job's GPU types cut to those ``catalog`` knows, and the types cut.
    Gavel's table measures every job on K80, P100 and V100, and a cluster has some of them:
    the others are no choice there, not a typo to refuse the trace for (``Cluster.
    check_models``). A job measured on none of the cluster's types is left out."""
    cut: set[str] = set()
    jobs: list[Job] = []
    none = 0
    for job in trace.jobs:
        w = job.workload
        known = tuple(m for m in w.demand.models if catalog.get(m) is not None)
        cut.update(m for m in w.demand.models if m not in known)
        if not known:
            none += 1
            continue
        if len(known) < len(w.demand.models):
            demand = w.demand.model_copy(update={"models": known})
            throughput = {m: r for m, r in w.throughput.items() if m in known}
            w = w.model_copy(update={"demand": demand, "throughput": throughput})
            job = replace(job, workload=w, rates=tuple(r for r in job.rates if r[0] in known))
        jobs.append(job)
    skipped = dict(trace.skipped)
    if none:
        skipped["measured on no GPU type of the cluster"] = none
    return replace(trace, jobs=tuple(jobs), skipped=skipped), sorted(cut)
