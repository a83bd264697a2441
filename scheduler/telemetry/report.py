"""One refresh's worth of GPU metrics, judged: ``assess`` turns samples into a report
(health, idleness, right-sizing, freshness) and ``TelemetryReport.apply`` puts it on a
snapshot.

Metrics never block a decision. Missing, stale or partial metrics only mean fewer facts:
GPUs without fresh samples are decided on allocation data alone (no new health events,
never idle), earlier health events still run out their quiet period, and the snapshot's
``MetricsNote`` — copied into the decision — says which case it was and how old the data is.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from scheduler.model import MetricsNote, Snapshot
from scheduler.telemetry.health import HealthState, HealthVerdict, apply_health, assess_health
from scheduler.telemetry.idleness import IdleReport, assess_idleness, mark_idle
from scheduler.telemetry.join import JoinedRow, join_samples
from scheduler.telemetry.promql import SampleBatch
from scheduler.telemetry.rightsizing import ClassUsage, assess_rightsizing
from scheduler.telemetry.samples import DeviceSample
from scheduler.telemetry.settings import TelemetrySettings

__all__ = ["TelemetryReport", "assess"]


@dataclass(frozen=True, slots=True)
class TelemetryReport:
    note: MetricsNote
    unhealthy: tuple[HealthVerdict, ...]
    idle: IdleReport
    rightsizing: tuple[ClassUsage, ...]
    health_state: HealthState
    """Pass to the next ``assess``: it is how events age out across refreshes."""
    uuids: Mapping[str, tuple[str, int]]
    """GPU UUID → (node, index) learned so far; pass to the next ``assess``."""
    devices: tuple[JoinedRow, ...]
    """Every sample row placed on a snapshot GPU (per-GPU gauges: temperature, power, …)."""
    gpus_total: int
    gpus_fresh: int
    """Snapshot GPUs with at least one fresh sample."""
    age_s: int | None
    """Age of the newest sample, seconds (None: no samples)."""
    oldest_fresh_age_s: int | None
    """Age of the oldest sample still within the staleness limit."""
    unknown: tuple[str, ...] = ()
    """Rows for GPUs the snapshot does not have: ignored (export the count)."""
    unmatched_pods: tuple[str, ...] = ()
    malformed: tuple[str, ...] = ()
    failed_queries: Mapping[str, str] = field(default_factory=dict)
    indices_name_devices: bool = True
    """As the settings it was judged with said (``TelemetrySettings``)."""

    def apply(self, snapshot: Snapshot) -> Snapshot:
        """The snapshot with unhealthy GPUs out, idle workloads marked, and the note."""
        healthy = apply_health(snapshot, self.unhealthy, self.indices_name_devices)
        marked = mark_idle(healthy, self.idle.names())
        return marked.model_copy(update={"metrics": self.note})


def _failures(failed: Mapping[str, str]) -> str:
    """The failed queries, and why the first failed: an operator reading "partial" learns
    what to mend (a timeout, a broken export's negative reading) without the logs."""
    first = min(failed)
    return f"queries failed: {', '.join(sorted(failed))} ({first}: {failed[first]})"


def _note(status: str, age: int | None, message: str) -> MetricsNote:
    return MetricsNote.model_validate({"status": status, "age_s": age, "message": message})


def assess(
    snapshot: Snapshot,
    samples: SampleBatch | Iterable[DeviceSample],
    settings: TelemetrySettings,
    state: HealthState | None = None,
    *,
    known_uuids: Mapping[str, tuple[str, int]] | None = None,
    pod_owner: Mapping[tuple[str, str], str] | None = None,
    failed_queries: Mapping[str, str] | None = None,
    fetch_error: str | None = None,
) -> TelemetryReport:
    """Judge one refresh at ``snapshot.now``. ``fetch_error`` says why there are no samples
    at all (Prometheus down, timed out); ``failed_queries`` names the queries that failed
    (query name → error) when others answered."""
    batch = samples if isinstance(samples, SampleBatch) else SampleBatch(tuple(samples))
    now = snapshot.now
    joined = join_samples(
        snapshot, batch.samples, known_uuids, pod_owner, settings.indices_name_devices
    )
    failed = dict(failed_queries or {})
    unhealthy, next_state = assess_health(
        joined.rows, state or HealthState(), now, settings, xid_answered="xid" not in failed
    )
    idle = assess_idleness(snapshot, joined.rows, settings)
    sizing = assess_rightsizing(snapshot, joined.rows, settings)
    total = sum(len(n.gpus) for n in snapshot.nodes)
    times = [r.sample.sampled_at for r in joined.rows if r.sample.sampled_at is not None]
    fresh_times = [t for t in times if now - t <= settings.staleness_s]
    fresh_gpus = {
        (r.node, r.gpu)
        for r in joined.rows
        if r.sample.sampled_at is not None and now - r.sample.sampled_at <= settings.staleness_s
    }
    age = max(0, now - max(times)) if times else None
    oldest = max(0, now - min(fresh_times)) if fresh_times else None
    fallback = "decided on allocation data alone"
    if fetch_error is not None or not times:
        why = fetch_error or "no dcgm-exporter series for any snapshot GPU"
        if fetch_error is None and failed:
            why += f"; {_failures(failed)}"
        note = _note("missing", age, f"no GPU metrics ({why}); {fallback}")
    elif not fresh_gpus:
        note = _note(
            "stale",
            age,
            f"GPU metrics stale: newest sample {age} s old (limit {settings.staleness_s} s); "
            f"{fallback}",
        )
    elif len(fresh_gpus) < total or failed:
        parts = [f"fresh GPU metrics for {len(fresh_gpus):,}/{total:,} GPUs (newest {age} s old)"]
        if len(fresh_gpus) < total:
            parts.append(f"{total - len(fresh_gpus):,} GPUs {fallback}")
        if failed:
            parts.append(_failures(failed))
        note = _note("partial", age, "; ".join(parts))
    else:
        note = _note("fresh", age, f"fresh GPU metrics for all {total:,} GPUs (newest {age} s old)")
    return TelemetryReport(
        note=note,
        unhealthy=tuple(unhealthy),
        idle=idle,
        rightsizing=sizing,
        health_state=next_state,
        uuids=joined.uuids,
        devices=tuple(joined.rows),
        gpus_total=total,
        gpus_fresh=len(fresh_gpus),
        age_s=age,
        oldest_fresh_age_s=oldest,
        unknown=tuple(joined.unknown),
        unmatched_pods=tuple(joined.unmatched_pods),
        malformed=batch.malformed,
        failed_queries=failed,
        indices_name_devices=settings.indices_name_devices,
    )
