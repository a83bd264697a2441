"""Loader for SenseTime's Helios traces (Hu et al., SC'21): ``cluster_log.csv`` and the
per-virtual-cluster GPU table ``cluster_gpu_number.csv``.

Mapping of a ``cluster_log.csv`` row to a ``Job``:

- queue = ``vc`` (the virtual cluster: Helios' tenant); priority 0 (the trace has none);
- arrival = ``submit_time`` in seconds after the earliest submission in the file;
- work = ``duration`` seconds (what it ran for, at rate 1.0 on any GPU);
- demand = ``gpu_num`` GPUs over ``node_num`` nodes: a gang of ``node_num`` pods of
  ``gpu_num / node_num`` GPUs each (a row that does not divide evenly is a bad row);
  ``cpu_num / node_num`` cores per pod. Jobs with ``gpu_num`` 0 (CPU-only) or a zero
  ``duration`` (cancelled before starting) are skipped and counted, not errors.
- ``state``, ``start_time``, ``end_time`` and ``queue`` record what Helios did, not what
  was asked, and are not read.

``cluster_gpu_number.csv`` gives each VC's GPUs per day: ``helios_queues`` turns one
day into queues whose nominal quota is that VC's GPUs, all in one cohort so idle VCs lend
to busy ones — real per-tenant quotas for fair-share experiments.
"""

from __future__ import annotations

from datetime import datetime

from scheduler.model import Demand, Queue, Quota, Workload
from sim.job import Job, from_origin
from sim.rows import BadRows, Row, RowError, csv_rows

__all__ = ["HELIOS_COHORT", "LOG_COLUMNS", "helios_queues", "load_helios_jobs"]

LOG_COLUMNS = (
    "job_id",
    "user",
    "vc",
    "gpu_num",
    "cpu_num",
    "node_num",
    "state",
    "submit_time",
    "start_time",
    "end_time",
    "duration",
    "queue",
)
HELIOS_COHORT = "helios"
_TIME = "%Y-%m-%d %H:%M:%S"
_EPOCH = datetime(1970, 1, 1)
"""Naive trace times are read as they are: no time zone, no daylight saving."""


def _time(row: Row, column: str) -> datetime:
    raw = row.values[column].strip()
    try:
        return datetime.strptime(raw, _TIME)
    except ValueError:
        raise row.error(column, "is not a time like 2020-04-01 08:00:00") from None


def load_helios_jobs(
    text: str, source: str, bad: BadRows | None = None
) -> tuple[tuple[Job, ...], dict[str, int]]:
    """Jobs, and counts of rows skipped on purpose (CPU-only, zero duration)."""
    bad = bad if bad is not None else BadRows()
    parsed: list[tuple[datetime, Workload, int]] = []
    skipped = {"cpu-only job": 0, "zero duration": 0}
    seen: dict[str, int] = {}
    for row in csv_rows(text, source, LOG_COLUMNS, bad):
        try:
            name = row.text("job_id")
            if name in seen:
                raise row.error("job_id", f"repeats the job on line {seen[name]}")
            gpus = row.count("gpu_num")
            nodes = row.count("node_num")
            cpu_milli = row.amount("cpu_num", scale=1000, unit="cores")
            submit = _time(row, "submit_time")
            duration = row.count("duration", time=True)
            vc = row.text("vc")
            if gpus == 0:
                skipped["cpu-only job"] += 1
                continue
            if duration == 0:
                skipped["zero duration"] += 1
                continue
            if nodes == 0:
                raise row.error("node_num", "is 0 for a job with GPUs")
            if gpus % nodes:
                raise row.error("gpu_num", f"does not divide evenly over node_num {nodes}")
            per_pod = row.pod_gpus("gpu_num", gpus // nodes)
        except RowError as error:
            bad.record(error)
            continue
        seen[name] = row.line
        workload = Workload(
            name=name,
            queue=vc,
            created=0,
            pods=nodes,
            demand=Demand(gpus=per_pod),
            cpu_milli=cpu_milli // nodes,
        )
        parsed.append((submit, workload, duration))
    return from_origin(((t - _EPOCH).total_seconds(), w, d) for t, w, d in parsed), skipped


def helios_queues(
    text: str, source: str, flavor: str, date: str | None = None
) -> tuple[Queue, ...]:
    """One queue per VC with that day's GPUs as nominal quota of ``flavor`` (default:
    the first day in the file), all in one cohort; the ``total`` column is not a VC."""
    rows = list(csv_rows(text, source, ("date",)))
    if not rows:
        raise ValueError(f"{source}: no days in the VC table")
    if date is None:
        row = rows[0]
    else:
        found = [r for r in rows if r.values["date"].strip() == date]
        if not found:
            days = f"{rows[0].values['date']} … {rows[-1].values['date']}"
            raise ValueError(f"{source}: no row for date {date!r} (the table covers {days})")
        row = found[0]
    queues = []
    for column in row.values:
        if column in ("date", "total"):
            continue
        gpus = row.count(column)
        queues.append(Queue(name=column, cohort=HELIOS_COHORT, quota={flavor: Quota(nominal=gpus)}))
    return tuple(queues)
