"""Resolve a workload's demand into concrete options, best first.

A demand may name whole GPUs, a MIG profile, a GPU-memory need or a fraction; the
allocator only ever deals with *options*: one flavor (what quota is charged), one kind of
device, a per-pod amount and the GPU models that can serve it. A memory need becomes the
cheapest fitting MIG profile or whole GPU on each acceptable model, ordered by cost, so the
allocator's first choice is the cheapest device that does the job.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

from scheduler.catalog import MILLI_PER_GPU, Catalog, GpuModel
from scheduler.mig import fitting_profiles
from scheduler.model import Demand, Workload, flavor_of_mig

__all__ = ["Kind", "Option", "OptionsByDemand", "demand_options", "resolve_options"]


class Kind(IntEnum):
    WHOLE = 0
    MIG = 1
    FRACTION = 2


@dataclass(frozen=True, slots=True)
class Option:
    flavor: str
    kind: Kind
    models: tuple[str, ...]
    """Catalog names of the GPU models that can serve this option."""
    per_pod: int
    """GPUs (WHOLE), instances (MIG, always 1) or milli-GPU (FRACTION) per pod."""
    profile: str | None = None
    cost: float = 0.0
    """$/h per pod: ranks options; the cheapest fitting device comes first."""
    quota_per_pod: int = field(init=False, repr=False, compare=False)
    """Quota charged per pod in the flavor's base unit (milli-GPU or MIG instances); a
    field set once, since every quota check of every admission reads it."""

    def __post_init__(self) -> None:
        per_pod = self.per_pod * MILLI_PER_GPU if self.kind is Kind.WHOLE else self.per_pod
        object.__setattr__(self, "quota_per_pod", per_pod)

    def gpu_equivalents_per_pod(self, catalog: Catalog) -> float:
        """Size in whole-GPU units, for objectives and reports."""
        if self.kind is Kind.WHOLE:
            return float(self.per_pod)
        if self.kind is Kind.FRACTION:
            return self.per_pod / MILLI_PER_GPU
        model = catalog[self.models[0]]
        profile = model.mig_profile(self.profile or "")
        assert profile is not None
        return profile.compute_slices / model.mig_compute_slices


def _acceptable(
    demand: Demand, throughput: dict[str, float], catalog: Catalog, present: tuple[str, ...]
) -> list[GpuModel]:
    """Acceptable models in preference order; 'any' means the cluster's models, cheapest first."""
    if demand.models:
        # Models the cluster does not have cannot serve it; they are not options.
        models = [catalog[n] for n in demand.models if catalog[n].name in present]
    else:
        models = sorted((catalog[name] for name in present), key=lambda m: m.price_per_hour)
    if throughput:
        speed = {catalog[name].name: rate for name, rate in throughput.items()}
        # Fastest first; models without a measured rate keep their order after the rest.
        models = sorted(models, key=lambda m: -speed.get(m.name, 0.0))
    return models


def resolve_options(
    workload: Workload, catalog: Catalog, present: tuple[str, ...]
) -> tuple[Option, ...]:
    """Options for a workload, best first. ``present`` = catalog names of models in the cluster."""
    return demand_options(workload.demand, catalog, present, workload.throughput)


def demand_options(
    demand: Demand,
    catalog: Catalog,
    present: tuple[str, ...],
    throughput: dict[str, float] | None = None,
) -> tuple[Option, ...]:
    """``resolve_options`` of a demand not yet a workload's (a pod's, checked at its door)."""
    models = _acceptable(demand, throughput or {}, catalog, present)
    options: list[Option] = []
    if demand.gpus is not None:
        options = [
            Option(m.name, Kind.WHOLE, (m.name,), demand.gpus, cost=m.price_per_hour * demand.gpus)
            for m in models
        ]
    elif demand.gpu_milli is not None:
        options = [
            Option(
                m.name,
                Kind.FRACTION,
                (m.name,),
                demand.gpu_milli,
                cost=m.price_per_hour * demand.gpu_milli / MILLI_PER_GPU,
            )
            for m in models
        ]
    elif demand.mig_profile is not None:
        serving = tuple(m.name for m in models if m.mig_profile(demand.mig_profile) is not None)
        if serving:
            options = [
                Option(flavor_of_mig(demand.mig_profile), Kind.MIG, serving, 1, demand.mig_profile)
            ]
    elif demand.gpu_memory_mib is not None:
        options = _memory_options(models, demand.gpu_memory_mib)
    return tuple(options)


class OptionsByDemand:
    """Resolved options per kind of demand (and throughput table): the same for every
    workload that asks alike, and shared by them. Thousands of pending workloads in a cycle,
    and the online path's requests, come in a few shapes, and resolving is a good part of an
    online decision's cost."""

    __slots__ = ("_catalog", "_known", "_present")

    def __init__(self, catalog: Catalog, present: tuple[str, ...]) -> None:
        self._catalog = catalog
        self._present = present
        self._known: dict[tuple[object, ...], tuple[Option, ...]] = {}

    def __call__(self, workload: Workload) -> tuple[Option, ...]:
        d = workload.demand
        key: tuple[object, ...] = (d.gpus, d.mig_profile, d.gpu_memory_mib, d.gpu_milli, d.models)
        if workload.throughput:
            key += tuple(sorted(workload.throughput.items()))
        options = self._known.get(key)
        if options is None:
            options = self._known[key] = resolve_options(workload, self._catalog, self._present)
        return options


def _memory_options(models: list[GpuModel], need_mib: int) -> list[Option]:
    """Every MIG profile that holds the need and every whole GPU whose usable memory does
    (an 80 GiB need does not fit an H100's 79.6), cheapest first: the need waits for none
    while a dearer device that holds it is free (an 18 GiB pod once got a whole H100 at
    $4.92/h while 2g.20gb slices at $1.41 were free, because only the smallest profile,
    1g.20gb, was an option)."""
    by_flavor: dict[str, Option] = {}
    for model in models:
        for profile in fitting_profiles(model, need_mib):
            cost = model.price_per_hour * profile.compute_slices / model.mig_compute_slices
            flavor = flavor_of_mig(profile.name)
            known = by_flavor.get(flavor)
            if known is None:
                by_flavor[flavor] = Option(flavor, Kind.MIG, (model.name,), 1, profile.name, cost)
            else:
                by_flavor[flavor] = Option(
                    flavor,
                    Kind.MIG,
                    (*known.models, model.name),
                    1,
                    profile.name,
                    min(cost, known.cost),
                )
        if model.usable_memory_mib >= need_mib:
            by_flavor.setdefault(
                model.name,
                Option(model.name, Kind.WHOLE, (model.name,), 1, cost=model.price_per_hour),
            )
    # Stable: at one price, the smaller profile first (``fitting_profiles``' order).
    return sorted(by_flavor.values(), key=lambda o: (o.cost, o.kind))
