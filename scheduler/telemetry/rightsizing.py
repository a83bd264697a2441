"""Right-sizing data for the planner: per workload class, GPU memory requested against the
memory and time actually used, and the cheapest MIG slice that would have held it.

A class is (queue, flavor): the workloads of one team charged to one GPU model or MIG
profile. Requested memory is what the device offers (a whole GPU's memory, a MIG profile's
usable memory, a share's part of its GPU); used memory is the peak of
``DCGM_FI_DEV_FB_USED`` over the window. On a time-sliced GPU that figure is the whole GPU's,
every tenant's together (facts §3.2), so a share's memory counts only while it is the GPU's
one tenant. The suggestion is the cheapest MIG profile, on a
MIG-capable model the cluster has, whose usable memory holds the largest peak plus headroom
(``scheduler.mig.cheapest_profile``), when it is both smaller and cheaper than the device it
would replace (a slice of a dear model can cost more than a whole cheap GPU): the planner's
input, never an automatic change.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from scheduler.catalog import MILLI_PER_GPU, Catalog, GpuModel
from scheduler.mig import cheapest_profile
from scheduler.model import Snapshot, flavor_of_mig
from scheduler.telemetry.join import JoinedRow
from scheduler.telemetry.settings import TelemetrySettings

__all__ = ["ClassUsage", "assess_rightsizing"]


@dataclass(frozen=True, slots=True)
class ClassUsage:
    queue: str
    flavor: str
    workloads: int
    devices: int
    """Devices with fresh memory figures."""
    requested_mib: int
    """Memory the class's devices offer, per device (the largest)."""
    used_peak_mib: int
    """The largest per-device peak over the window."""
    used_mean_mib: int
    """Mean of the per-device peaks."""
    util_mean_milli: int | None
    """Mean utilization over the window (per-mille), None when not reported."""
    fits: str | None
    """The cheapest MIG profile that holds the peak plus headroom, e.g. ``1g.10gb on
    H100-80GB``; None when none does, or it would not be smaller and cheaper than the
    class's devices."""
    message: str


def _offered(row: JoinedRow, model: GpuModel, milli: int | None) -> tuple[int, float] | None:
    """The device's memory (MiB) and its part of the GPU's price ($/h)."""
    if row.sample.key.is_mig:
        profile = model.mig_profile(row.sample.key.gi_profile)
        if profile is None:
            return None
        share = profile.compute_slices / model.mig_compute_slices
        return profile.usable_memory_mib, model.price_per_hour * share
    if milli is not None:
        share = milli / MILLI_PER_GPU
        return model.memory_mib * milli // MILLI_PER_GPU, model.price_per_hour * share
    return model.memory_mib, model.price_per_hour


def _suggest(
    catalog: Catalog, models: Iterable[str], need_mib: int
) -> tuple[str, int, float] | None:
    best: tuple[float, str, int] | None = None
    for name in sorted(set(models)):
        model = catalog[name]
        profile = cheapest_profile(model, need_mib)
        if profile is None:
            continue
        cost = model.price_per_hour * profile.compute_slices / model.mig_compute_slices
        if best is None or cost < best[0]:
            best = (cost, f"{profile.name} on {model.name}", profile.usable_memory_mib)
    return None if best is None else (best[1], best[2], best[0])


def assess_rightsizing(
    snapshot: Snapshot, rows: Iterable[JoinedRow], settings: TelemetrySettings
) -> tuple[ClassUsage, ...]:
    catalog = snapshot.catalog()
    gpu_model = {(n.name, g.index): catalog[g.model] for n in snapshot.nodes for g in n.gpus}
    present = {m.name for m in gpu_model.values() if m.mig_capable}
    running = {w.name: w for w in snapshot.workloads if w.running}
    milli = {
        (w.name, p.node, g): p.milli
        for w in running.values()
        for p in w.placement or ()
        for g in p.gpus
    }
    tenants: dict[tuple[str, int], set[str]] = {}
    for w_name, node, g in milli:
        tenants.setdefault((node, g), set()).add(w_name)
    # class → (workloads, [(offered MiB, peak, util, offered $/h)])
    classes: dict[tuple[str, str], tuple[set[str], list[tuple[int, int, int | None, float]]]] = {}
    for row in rows:
        w = running.get(row.workload or "")
        s = row.sample
        if w is None or s.sampled_at is None or snapshot.now - s.sampled_at > settings.staleness_s:
            continue
        peak = s.fb_used_peak_mib if s.fb_used_peak_mib is not None else s.fb_used_mib
        where = (row.node, row.gpu)
        offered = _offered(row, gpu_model[where], milli.get((w.name, *where)))
        shared = not s.key.is_mig and len(tenants.get(where, ())) > 1
        if peak is None or offered is None or shared:
            continue
        # Running workloads in snapshot files may leave the flavor to be derived.
        flavor = w.flavor or (
            flavor_of_mig(s.key.gi_profile) if s.key.is_mig else gpu_model[where].name
        )
        names, devices = classes.setdefault((w.queue, flavor), (set(), []))
        names.add(w.name)
        devices.append((offered[0], peak, s.util_milli, offered[1]))
    out = []
    for (queue, flavor), (names, devices) in sorted(classes.items()):
        requested = max(d[0] for d in devices)
        price = max(d[3] for d in devices)
        peak = max(d[1] for d in devices)
        mean = sum(d[1] for d in devices) // len(devices)
        utils = [d[2] for d in devices if d[2] is not None]
        util = sum(utils) // len(utils) if utils else None
        need = peak + peak * settings.rightsizing_headroom_pct // 100
        suggestion = _suggest(catalog, present, need)
        fits = None
        if suggestion is not None and suggestion[1] < requested and suggestion[2] < price:
            fits = suggestion[0]
        message = (
            f"{queue} on {flavor}: {len(names)} workloads, {len(devices)} devices; peak "
            f"{peak:,} MiB (mean {mean:,}) of {requested:,} MiB offered"
        )
        if util is not None:
            message += f", {util / 10:.1f} % busy"
        if fits is not None:
            message += f"; {fits} would hold the peak + {settings.rightsizing_headroom_pct} %"
        out.append(
            ClassUsage(
                queue, flavor, len(names), len(devices), requested, peak, mean, util, fits, message
            )
        )
    return tuple(out)
