"""Right-sizing data for the planner: per workload class, GPU memory requested against the
memory and time actually used, and the cheapest MIG slice that would have held it.

A class is (queue, flavor): the workloads of one team charged to one GPU model or MIG
profile. Requested memory is what the device offers (a whole GPU's memory, a MIG profile's
usable memory, a share's part of its GPU); used memory is the peak of
``DCGM_FI_DEV_FB_USED`` over the window. On a time-sliced GPU that figure is the whole GPU's,
every tenant's together (facts §3.2), so a share's memory counts only while it is the GPU's
one tenant. The suggestion is the cheapest MIG profile, on a MIG-capable model the cluster
has, whose usable memory holds the largest peak plus headroom and whose compute holds the
busiest device's (its busy time times the device's throughput, plus the same headroom), when
it is both smaller and cheaper than the device it would replace (a slice of a dear model can
cost more than a whole cheap GPU): the planner's input, never an automatic change. Memory
alone is not enough: an H100 busy 88 % of the time using 8 GB was told a seventh of an A100
would hold it, a slice with a twentieth of the compute it used. Where a device reports no
busy time, the suggestion holds memory only, and says so.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from scheduler.catalog import MILLI_PER_GPU, Catalog, GpuModel
from scheduler.mig import fitting_profiles
from scheduler.model import Snapshot, flavor_of_mig
from scheduler.telemetry.join import JoinedRow
from scheduler.telemetry.settings import TelemetrySettings

__all__ = ["ClassUsage", "assess_rightsizing"]

_Device = tuple[int, int, int | None, float, float | None]
"""A device of a class: memory offered (MiB), peak used (MiB), busy per-mille, its $/h, and
the compute it kept busy (A100 = 1.0; None when its busy time is not reported)."""


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
    """The cheapest MIG profile that holds the peak plus headroom, and the busiest device's
    compute plus headroom, e.g. ``1g.10gb on H100-80GB``; None when none does, or it would
    not be smaller and cheaper than the class's devices."""
    message: str


def _offered(row: JoinedRow, model: GpuModel, milli: int | None) -> tuple[int, float, float] | None:
    """The device's memory (MiB), its part of the GPU's price ($/h), and the compute its busy
    time is a fraction of (A100 = 1.0): a MIG instance's own engines (GR_ENGINE_ACTIVE is
    per instance), a share's whole GPU (one tenant's busy time is the GPU's)."""
    if row.sample.key.is_mig:
        profile = model.mig_profile(row.sample.key.gi_profile)
        if profile is None:
            return None
        share = profile.compute_slices / model.mig_compute_slices
        return (
            profile.usable_memory_mib,
            model.price_per_hour * share,
            model.relative_throughput * share,
        )
    if milli is not None:
        share = milli / MILLI_PER_GPU
        memory = model.memory_mib * milli // MILLI_PER_GPU
        return memory, model.price_per_hour * share, model.relative_throughput
    return model.memory_mib, model.price_per_hour, model.relative_throughput


def _suggest(
    catalog: Catalog, models: Iterable[str], need_mib: int, need_compute: float
) -> tuple[str, int, float] | None:
    """The cheapest profile that holds ``need_mib`` and ``need_compute`` (A100 = 1.0): its
    name on its model, usable memory and $/h."""
    best: tuple[float, str, int] | None = None
    for name in sorted(set(models)):
        model = catalog[name]
        for profile in fitting_profiles(model, need_mib):  # smallest first
            share = profile.compute_slices / model.mig_compute_slices
            if model.relative_throughput * share >= need_compute:
                cost = model.price_per_hour * share
                if best is None or cost < best[0]:
                    best = (cost, f"{profile.name} on {model.name}", profile.usable_memory_mib)
                break
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
    classes: dict[tuple[str, str], tuple[set[str], list[_Device]]] = {}
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
        busy = None if s.util_milli is None else s.util_milli / 1000 * offered[2]
        devices.append((offered[0], peak, s.util_milli, offered[1], busy))
    out = []
    for (queue, flavor), (names, devices) in sorted(classes.items()):
        requested = max(d[0] for d in devices)
        price = max(d[3] for d in devices)
        peak = max(d[1] for d in devices)
        mean = sum(d[1] for d in devices) // len(devices)
        utils = [d[2] for d in devices if d[2] is not None]
        util = sum(utils) // len(utils) if utils else None
        headroom = settings.rightsizing_headroom_pct
        need = peak + peak * headroom // 100
        # The busiest device that reports its busy time sets the compute to hold: a device
        # that does not report cannot take away what the others show (90 % busy beside a
        # silent device once read as "memory only" and suggested a 1g.10gb slice).
        kept_busy = [d[4] for d in devices if d[4] is not None]
        compute = max(kept_busy) * (1 + headroom / 100) if kept_busy else 0.0  # else memory only
        fits = _smaller_and_cheaper(_suggest(catalog, present, need, compute), requested, price)
        message = (
            f"{queue} on {flavor}: {len(names)} workloads, {len(devices)} devices; peak "
            f"{peak:,} MiB (mean {mean:,}) of {requested:,} MiB offered"
        )
        if util is not None:
            message += f", {util / 10:.1f} % busy"
        if fits is not None:
            message += f"; {fits} would hold the peak + {headroom} %"
            if not kept_busy:
                message += " (memory only: busy time not reported)"
            else:
                message += f" and its compute at its busy time + {headroom} %"
                if len(kept_busy) < len(devices):
                    message += f" (reported by {len(kept_busy)} of {len(devices)} devices)"
        elif compute:
            memory_only = _smaller_and_cheaper(
                _suggest(catalog, present, need, 0.0), requested, price
            )
            if memory_only is not None:
                message += f"; {memory_only} would hold its memory but not its compute"
        out.append(
            ClassUsage(
                queue, flavor, len(names), len(devices), requested, peak, mean, util, fits, message
            )
        )
    return tuple(out)


def _smaller_and_cheaper(
    suggestion: tuple[str, int, float] | None, requested_mib: int, price: float
) -> str | None:
    """The suggestion's name when it is smaller and cheaper than the devices it replaces."""
    if suggestion is None or suggestion[1] >= requested_mib or suggestion[2] >= price:
        return None
    return suggestion[0]
