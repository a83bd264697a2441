"""One entry point for every trace format: ``load_trace`` → ``Trace`` (jobs + what was skipped).

The format is detected from the path (or given): a directory of PAI tables, ``.jsonl``
(our own JSON Lines), ``.json`` / ``cluster_job_log`` (Philly), ``.csv`` by its header
(openb pod list, Helios ``cluster_log.csv``, our own CSV), and tab-separated ``.trace`` /
``.tsv`` (Gavel, which also needs its throughput table). Any of these files may be
gzipped (``scheduler.textfile``); a ``.gz`` suffix is ignored for the detection.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from scheduler.textfile import read_text
from sim.job import HostPod, Job
from sim.rows import BadRows

__all__ = ["FORMATS", "NeedsThroughputs", "Trace", "TraceError", "detect_format", "load_trace"]

FORMATS = ("openb", "pai", "philly", "helios", "gavel", "csv", "jsonl")


class TraceError(ValueError):
    """The trace cannot be read (message names the file, line and column)."""


class NeedsThroughputs(TraceError):
    """A Gavel trace given without its throughput table (which says how fast each job runs
    per GPU type): a command without a way to give one says what to do instead."""


@dataclass(frozen=True)
class Trace:
    jobs: tuple[Job, ...]
    source: str
    format: str
    bad_rows: dict[str, int] = field(default_factory=dict)
    """Bad rows skipped (``--skip-bad-rows``), per reason."""
    skipped: dict[str, int] = field(default_factory=dict)
    """Rows left out on purpose (CPU-only jobs, jobs that never ran), per reason."""
    still_running: int = 0
    """Jobs still running when the trace was taken (PAI, Philly), kept and replayed until
    the latest time the trace records."""
    fill_only: tuple[Job | HostPod, ...] = ()
    """Pods the replay leaves out but the fill experiment places, as the FGD paper's
    simulator does with the whole pod list (openb's CPU-only and never-scheduled pods)."""


def _read(path: Path) -> str:
    try:
        return read_text(path)
    except OSError as error:
        raise TraceError(f"cannot read {path}: {error.strerror}") from None


def detect_format(path: Path) -> str:
    if path.is_dir():
        return "pai"
    name = path.name.lower().removesuffix(".gz")
    if name.endswith(".jsonl"):
        return "jsonl"
    if name.endswith(".json") or "cluster_job_log" in name:
        return "philly"
    if name.endswith((".trace", ".tsv")):
        return "gavel"
    text = _read(path)
    if not text.strip():  # else "cannot tell the format from the header"
        raise TraceError(f"{path}: empty: no header row, no job")
    head = text.split("\n", 1)[0]
    if "\t" in head:
        return "gavel"
    columns = {c.strip() for c in head.split(",")}
    if {"num_gpu", "gpu_milli"} <= columns:
        return "openb"
    if {"job_id", "vc", "gpu_num"} <= columns:
        return "helios"
    # Two of our CSV's three required columns: ours with one missing, which its loader names.
    if len({"name", "submit", "runtime"} & columns) >= 2:
        return "csv"
    raise TraceError(
        f"{path} line 1: cannot tell the trace format from the header; give --format "
        f"({', '.join(FORMATS)})"
    )


def load_trace(
    path: str | Path,
    format: str | None = None,
    skip_bad_rows: bool = False,
    throughputs: str | Path | None = None,
) -> Trace:
    """Read a trace; bad rows raise ``TraceError`` unless ``skip_bad_rows``."""
    path = Path(path)
    if not path.exists():
        raise TraceError(f"{path}: no such file or directory")
    fmt = format or detect_format(path)
    if fmt not in FORMATS:
        raise TraceError(f"unknown trace format {fmt!r}; known: {', '.join(FORMATS)}")
    bad = BadRows(skip=skip_bad_rows)
    skipped: dict[str, int] = {}
    fill_only: list[Job | HostPod] = []
    still_running = 0
    source = str(path)
    try:
        if fmt == "openb":
            from sim.openb import load_openb_jobs

            jobs, skipped = load_openb_jobs(_read(path), source, bad, fill_only=fill_only)
        elif fmt == "helios":
            from sim.helios import load_helios_jobs

            jobs, skipped = load_helios_jobs(_read(path), source, bad)
        elif fmt == "philly":
            from sim.philly import load_philly_jobs

            jobs, skipped, still_running = load_philly_jobs(_read(path), source, bad)
        elif fmt == "pai":
            from sim.pai import load_pai_jobs

            if not path.is_dir():
                raise TraceError(
                    f"{path}: a PAI trace is a directory with pai_job_table.csv "
                    "and pai_task_table.csv (and optionally pai_group_tag_table.csv)"
                )
            group = path / "pai_group_tag_table.csv"
            jobs, skipped, still_running = load_pai_jobs(
                _read(path / "pai_job_table.csv"),
                _read(path / "pai_task_table.csv"),
                source,
                _read(group) if group.exists() else "",
                bad,
            )
        elif fmt == "gavel":
            from sim.gavel import load_gavel_jobs, load_throughputs

            if throughputs is None:
                raise NeedsThroughputs(
                    f"{path}: a Gavel trace needs its throughput table (--throughputs FILE): "
                    "job speed per GPU type is what the trace measures work in"
                )
            table = load_throughputs(_read(Path(throughputs)), str(throughputs))
            jobs, skipped = load_gavel_jobs(_read(path), source, table, bad)
        elif fmt == "csv":
            from sim.jobfile import load_job_csv

            jobs = load_job_csv(_read(path), source, bad, skipped)
        else:
            from sim.jobfile import load_job_jsonl

            jobs = load_job_jsonl(_read(path), source, bad, skipped)
    except TraceError:
        raise
    except ValueError as error:
        raise TraceError(str(error)) from None
    if not jobs:
        raise TraceError(_nothing_to_replay(source, bad, skipped))
    ordered = tuple(sorted(jobs, key=lambda j: (j.submit, j.name)))
    origin = ordered[0].submit if ordered else 0
    return Trace(
        _from_zero(ordered, origin),
        source,
        fmt,
        dict(sorted(bad.counts.items())),
        skipped,
        still_running,
        _fill_from_zero(fill_only, origin),
    )


def _nothing_to_replay(source: str, bad: BadRows, skipped: dict[str, int]) -> str:
    left = {**skipped, **{f"bad row: {k}": n for k, n in bad.counts.items()}}
    why = "; ".join(f"{n} {reason}" for reason, n in sorted(left.items()) if n)
    return f"{source}: no job to replay" + (f" (left out: {why})" if why else "")


def _from_zero(jobs: tuple[Job, ...], origin: int) -> tuple[Job, ...]:
    """Arrivals as seconds after ``origin``, the earliest replayed one. Formats that give
    submit times as they are (our CSV/JSONL, openb, Gavel) would otherwise replay an
    export with Unix times from 0: 54 years of an empty cluster in every integral and
    every sampled curve (utilization 0.00 for a full cluster)."""
    if origin == 0:
        return jobs
    return tuple(
        replace(j, workload=j.workload.model_copy(update={"created": j.submit - origin}))
        for j in jobs
    )


def _fill_from_zero(pods: list[Job | HostPod], origin: int) -> tuple[Job | HostPod, ...]:
    """The fill-only pods in arrival order on the replay's clock: a job arriving before
    ``origin`` at 0 (a job's arrival is never negative), a CPU-only pod as it is."""
    out: list[Job | HostPod] = []
    for p in sorted(pods, key=lambda p: (p.submit, p.name)):
        if isinstance(p, HostPod):
            out.append(replace(p, submit=p.submit - origin))
        else:
            out.extend(_from_zero((p,), min(origin, p.submit)))
    return tuple(out)
