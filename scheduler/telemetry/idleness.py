"""Allocated but idle: workloads whose every device stayed under the idle threshold for the
whole window, reported per queue and workload, and marked on the snapshot so preemption
can take idle borrowed capacity first (``PreemptionPolicy.idle_borrowed_first``).

Utilization is the window average of ``DCGM_FI_PROF_GR_ENGINE_ACTIVE`` (per MIG instance
too), else ``DCGM_FI_DEV_GPU_UTIL`` (whole GPUs only); framebuffer use is never an activity
signal: a loaded, idle model keeps its memory (facts §3.4). A workload is idle only when
it has run for the whole window and every one of its devices has fresh metrics under the
threshold; a device without metrics makes it "unknown", never idle.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from scheduler.model import Snapshot
from scheduler.telemetry.join import JoinedRow
from scheduler.telemetry.settings import TelemetrySettings

__all__ = ["IdleReport", "IdleWorkload", "assess_idleness", "mark_idle"]


@dataclass(frozen=True, slots=True)
class IdleWorkload:
    workload: str
    queue: str
    devices: tuple[str, ...]
    """Its devices, e.g. ``gpu-a/3``, ``gpu-a/2 mig 3g.40gb@4``, or ``gpu-a/2 mig 1g.10gb GI 13``
    where the slice's start cannot be told."""
    util_milli: int
    """The busiest of its devices, per-mille over the window."""


@dataclass(frozen=True, slots=True)
class IdleReport:
    workloads: tuple[IdleWorkload, ...]
    per_queue: Mapping[str, int]
    """Idle devices (GPUs or MIG instances) per queue."""
    unknown: tuple[str, ...]
    """Running workloads (past the window) with a device lacking fresh utilization."""
    window_s: int
    threshold_milli: int

    def names(self) -> frozenset[str]:
        return frozenset(w.workload for w in self.workloads)


def _device(row: JoinedRow) -> str:
    """A name per device: a MIG slice whose start cannot be told (a workload holding two
    slices of its profile on the GPU) is named by its GPU instance, so the two stay two."""
    key = row.sample.key
    if not key.is_mig:
        return f"{row.node}/{row.gpu}"
    if row.mig_start is None:
        return f"{row.node}/{row.gpu} mig {key.gi_profile} GI {key.gi_id}"
    return f"{row.node}/{row.gpu} mig {key.gi_profile}@{row.mig_start}"


def assess_idleness(
    snapshot: Snapshot, rows: Iterable[JoinedRow], settings: TelemetrySettings
) -> IdleReport:
    now = snapshot.now
    util: dict[str, list[tuple[str, int | None]]] = {}
    for row in rows:
        if row.workload is None:
            continue
        s = row.sample
        fresh = s.sampled_at is not None and now - s.sampled_at <= settings.staleness_s
        util.setdefault(row.workload, []).append((_device(row), s.util_milli if fresh else None))
    idle = []
    unknown = []
    per_queue: dict[str, int] = {}
    for w in snapshot.workloads:
        if not w.running or w.started is None or now - w.started < settings.idle_window_s:
            continue
        devices = util.get(w.name, [])
        # Every pod's device must report: a gang with a silent member is not known idle.
        expected = sum(len(p.gpus) for p in w.placement or ())
        values = [u for _, u in devices]
        names = sorted({d for d, _ in devices})
        if len(names) < expected or any(u is None for u in values) or not values:
            unknown.append(w.name)
            continue
        busiest = max(u for u in values if u is not None)
        if busiest >= settings.idle_threshold_milli:
            continue
        idle.append(IdleWorkload(w.name, w.queue, tuple(names), busiest))
        per_queue[w.queue] = per_queue.get(w.queue, 0) + len(names)
    return IdleReport(
        tuple(idle),
        dict(sorted(per_queue.items())),
        tuple(unknown),
        settings.idle_window_s,
        settings.idle_threshold_milli,
    )


def mark_idle(snapshot: Snapshot, idle: Iterable[str]) -> Snapshot:
    """The snapshot with these running workloads marked idle and every other one not."""
    names = frozenset(idle)
    if not names and not any(w.idle for w in snapshot.workloads):
        return snapshot
    workloads = tuple(
        w
        if w.idle == (w.name in names and w.running)
        else w.model_copy(update={"idle": w.name in names and w.running})
        for w in snapshot.workloads
    )
    return snapshot.model_copy(update={"workloads": workloads})
