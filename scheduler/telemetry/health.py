"""GPU health from DCGM: fatal XIDs, new double-bit ECC errors and row-remap failures take a
GPU out of capacity; it comes back once a quiet period has passed without another.

dcgm-exporter's XID series holds the *last* XID code (facts §3.1), not a count, so an event
is the series changing to a fatal code (or showing one the first time we see it): a code
that stays put is the same old event and ages out. The same code twice in a row between two
refreshes cannot be told apart — a limit of the gauge. A double-bit ECC event is the volatile
counter rising; a row-remap failure is a condition, renewed at every sample that reports it.
What was seen last is a value (``HealthState``) the caller threads from refresh to refresh;
after a restart, a fatal code already showing counts as new, so such a GPU sits out one
quiet period — the safe side.

Only fresh samples create events; stale ones are ignored, and the quiet period runs on the
snapshot's clock regardless, so a GPU is never kept out by metrics that stopped arriving.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from scheduler.model import Snapshot
from scheduler.telemetry.join import JoinedRow
from scheduler.telemetry.settings import TelemetrySettings

__all__ = ["HealthEvent", "HealthState", "HealthVerdict", "apply_health", "assess_health"]

RowId = tuple[str, int, int | None, str]
"""(node, GPU index, GPU-instance ID, profile): one XID series."""


@dataclass(frozen=True, slots=True)
class HealthEvent:
    at: int
    """When it was seen (sample time, seconds)."""
    reason: str


@dataclass(frozen=True, slots=True)
class HealthState:
    """What health remembers between refreshes; start from ``HealthState()``."""

    last_xid: Mapping[RowId, int] = field(default_factory=dict)
    last_dbe: Mapping[tuple[str, int], int] = field(default_factory=dict)
    events: Mapping[tuple[str, int], HealthEvent] = field(default_factory=dict)
    """The latest fatal event per GPU (node, index)."""


@dataclass(frozen=True, slots=True)
class HealthVerdict:
    node: str
    gpu: int
    since: int
    """Time of the latest fatal event."""
    until: int
    """When the GPU comes back if nothing else happens (since + quiet period)."""
    reason: str
    """Human reason shown in decisions, annotations and /metrics, e.g. "XID 79 at ..."."""


def assess_health(
    rows: Iterable[JoinedRow],
    state: HealthState,
    now: int,
    settings: TelemetrySettings,
    xid_answered: bool = True,
) -> tuple[list[HealthVerdict], HealthState]:
    """Unhealthy GPUs at ``now`` and the state for the next refresh.

    A fresh row without an XID, when the XID query answered, is a device whose exporter
    writes no XID series now (DCGM 4.5 reports none until an XID, and none again after a
    reset): its last code is forgotten, so the same code showing again is a new event, not
    the old one. A failed XID query forgets nothing: every GPU showing an old fatal code
    would be taken out again when it answers."""
    last_xid = dict(state.last_xid)
    last_dbe = dict(state.last_dbe)
    events = dict(state.events)

    def event(gpu: tuple[str, int], at: int, reason: str) -> None:
        known = events.get(gpu)
        if known is None or at >= known.at:
            events[gpu] = HealthEvent(at, reason)

    for row in rows:
        s = row.sample
        at = s.sampled_at
        if at is None or now - at > settings.staleness_s:
            continue
        gpu = (row.node, row.gpu)
        rid: RowId = (row.node, row.gpu, s.key.gi_id, s.key.gi_profile)
        if s.xid is None and xid_answered:
            last_xid.pop(rid, None)
        elif s.xid is not None:
            before = last_xid.get(rid)
            last_xid[rid] = s.xid
            if s.xid in settings.fatal_xids and before != s.xid:
                on = f" on MIG {s.key.gi_profile} (GI {s.key.gi_id})" if s.key.is_mig else ""
                event(gpu, at, f"XID {s.xid}{on}")
        if s.dbe_volatile is not None and not s.key.is_mig:
            before_dbe = last_dbe.get(gpu, 0)
            last_dbe[gpu] = s.dbe_volatile
            if s.dbe_volatile > before_dbe:
                event(gpu, at, f"double-bit ECC errors ({s.dbe_volatile} since the driver loaded)")
        if s.row_remap_failure:
            event(gpu, at, "row remapping failed")
    verdicts = []
    for (node, index), e in sorted(events.items()):
        until = e.at + settings.quiet_period_s
        if now < until:
            verdicts.append(
                HealthVerdict(
                    node,
                    index,
                    e.at,
                    until,
                    f"{e.reason} at t={e.at}; back after {settings.quiet_period_s} s quiet "
                    f"(t={until})",
                )
            )
    # Forget events that have aged out: the state stays as large as the trouble.
    kept = {g: e for g, e in events.items() if now < e.at + settings.quiet_period_s}
    return verdicts, HealthState(last_xid, last_dbe, kept)


def apply_health(
    snapshot: Snapshot, verdicts: Iterable[HealthVerdict], indices_name_devices: bool = True
) -> Snapshot:
    """The snapshot with these GPUs unhealthy (and their reasons). GPUs the snapshot already
    marks unhealthy stay so: metrics only ever take capacity out, never put it back.

    Unless ``indices_name_devices`` (``TelemetrySettings``), a node's GPUs are only counted:
    the GPU its device plugin withholds and the one DCGM names broken are most likely the
    same device (both follow the driver's XIDs) at two different indices, so metrics take
    out only as many more of a kind (whole GPUs, MIG GPUs) as they name beyond those out."""
    bad = {(v.node, v.gpu): v.reason for v in verdicts}
    if not indices_name_devices:
        bad = _beyond_those_out(snapshot, bad)
    if not bad:
        return snapshot
    nodes = []
    for n in snapshot.nodes:
        gpus = tuple(
            g.model_copy(update={"healthy": False, "health_reason": bad[(n.name, g.index)]})
            if g.healthy and (n.name, g.index) in bad
            else g
            for g in n.gpus
        )
        nodes.append(n if gpus == n.gpus else n.model_copy(update={"gpus": gpus}))
    return snapshot.model_copy(update={"nodes": tuple(nodes)})


def _beyond_those_out(
    snapshot: Snapshot, bad: dict[tuple[str, int], str]
) -> dict[tuple[str, int], str]:
    """Of the GPUs metrics name, those to take out when a node's indices only count them:
    per node and kind, as many healthy ones as they name beyond the GPUs already out."""
    named_nodes = {node for node, _ in bad}
    out: dict[tuple[str, int], str] = {}
    for node in snapshot.nodes:
        if node.name not in named_nodes:
            continue
        for mig in (False, True):
            gpus = [g for g in node.gpus if (g.mig is not None) == mig]
            named = [g for g in gpus if (node.name, g.index) in bad]
            more = len(named) - sum(not g.healthy for g in gpus)
            for gpu in [g for g in named if g.healthy][: max(0, more)]:
                out[(node.name, gpu.index)] = bad[(node.name, gpu.index)]
    return out
