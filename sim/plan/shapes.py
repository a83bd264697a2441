"""Node shapes and MIG layouts worth trying: other ways to buy and carve a GPU model.

The level grid (``candidates``) only scales the pools a cluster already has. An
*arrangement* of a GPU model says which pools its nodes come in instead:

- **Node shape**: the model's pools as ``N``-GPU nodes (4 or 8), CPU and memory per GPU
  kept, so the same GPUs come in finer (or coarser) steps. A smaller shape is tried only
  when every pod that must run on this model fits it; a larger one only when some pod that
  may use the model needs more GPUs than today's nodes have.
- **MIG layout**: the model's MIG nodes as one layout — all of the profile most asked for
  (``all-1g.10gb``), mig-parted's ``all-balanced``, or a mix packed in proportion to the
  demand's MIG and memory-sized requests (``scheduler.mig.pack_profiles``; every layout
  passes ``layout_problems``) — on ``k`` nodes, ``k`` from the demand: between the fluid
  average and the peak of the MIG compute slices it asks for. Whole-GPU nodes of the model
  still scale with its level. ``whole GPUs only`` turns today's MIG nodes into whole GPUs.

Which layouts are tried comes from the demand (MIG requests, memory-sized requests mapped
to the cheapest profile that holds them, and right-sizing's "would fit" profiles), so the
space stays a few arrangements per model. The search (``search``) tries them around the
best cluster the level grid found.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from scheduler.catalog import GpuModel, MigProfile
from scheduler.mig import cheapest_profile, layout_problems, pack_profiles
from scheduler.model import Gpu, MigSlice, Node
from sim.cluster import Cluster
from sim.job import Job
from sim.plan.candidates import POOL_LABEL, Candidate, Pool, pool_of

__all__ = ["NO_MIG", "TODAY", "Arrangement", "arrangements", "neighbours"]

TODAY = "as today"
NO_MIG = "whole GPUs only (no MIG)"
_SHAPES = (4, 8)
_MIG_CONFIG = "nvidia.com/mig.config"


@dataclass(frozen=True, slots=True)
class Arrangement:
    """One way to hold a GPU model's nodes: pools that scale with its level and pools of a
    fixed size (MIG nodes sized from the demand)."""

    model: str
    name: str
    scaled: tuple[tuple[int, int], ...]
    """(pool index, nodes at level 1)."""
    fixed: tuple[tuple[int, int], ...] = ()
    """(pool index, nodes at any level)."""

    def counts(self, level: float) -> dict[int, int]:
        out = {i: max(0, round(n * level)) for i, n in self.scaled}
        out.update(dict(self.fixed))
        return out


def arrangements(
    cluster: Cluster,
    pools: Sequence[Pool],
    jobs: Sequence[Job],
    hints: Iterable[str] = (),
) -> tuple[tuple[Pool, ...], tuple[Arrangement, ...]]:
    """``pools`` plus the variant pools, and every model's arrangements (``as today``
    first). ``hints``: MIG profiles right-sizing says workloads would fit."""
    catalog = cluster.catalog
    out_pools = list(pools)
    out: list[Arrangement] = []
    hinted = tuple(hints)

    def add(pool: Pool) -> int:
        out_pools.append(pool)
        return len(out_pools) - 1

    for model_name in sorted({p.model for p in pools}):
        model = catalog[model_name]
        mine = [i for i, p in enumerate(pools) if p.model == model_name]
        out.append(Arrangement(model_name, TODAY, tuple((i, pools[i].count) for i in mine)))
        for n in _shapes_worth_trying(model, [pools[i] for i in mine], jobs):
            scaled = []
            for i in mine:
                p = pools[i]
                template = _reshaped(p.nodes[0], n, f"{p.name}-{n}gpu")
                idx = add(pool_of(cluster, f"{p.name}-{n}gpu", template, ()))
                scaled.append((idx, math.ceil(p.count * p.gpus_per_node / n)))
            out.append(Arrangement(model_name, f"{n}-GPU nodes", tuple(scaled)))
        if not model.mig_capable:
            continue
        whole = [i for i in mine if not any(g.mig is not None for g in pools[i].nodes[0].gpus)]
        partitioned = [i for i in mine if i not in whole]
        base = next((pools[i] for i in whole if not pools[i].nodes[0].gpus[0].shared), None)
        base = base or pools[mine[0]]
        if partitioned:
            moved = sum(pools[i].count for i in partitioned)
            same = [i for i in whole if pools[i].gpus_per_node == base.gpus_per_node]
            if same:
                scaled = [(i, pools[i].count + moved * (i == same[0])) for i in whole]
            else:
                template = _layout(base.nodes[0], None, f"{model_name.lower()}-whole", "")
                idx = add(pool_of(cluster, f"{model_name.lower()}-whole", template, ()))
                scaled = [(i, pools[i].count) for i in whole] + [(idx, moved)]
            out.append(Arrangement(model_name, NO_MIG, tuple(scaled)))
        wanted = _mig_demand(model, jobs, hinted)
        if not wanted.seconds:
            continue
        keep = tuple((i, pools[i].count) for i in whole)
        today = sum(pools[i].count for i in partitioned)
        for label, layout in _layouts(model, wanted):
            name = f"{model_name.lower()}-mig-{label}"
            template = _layout(base.nodes[0], layout, name, label)
            idx = add(pool_of(cluster, name, template, ()))
            per_node = sum(_compute(model, s.profile) for s in layout) * base.gpus_per_node
            for k in _node_counts(wanted, per_node, today):
                out.append(
                    Arrangement(
                        model_name,
                        f"{k} MIG node{'s' if k > 1 else ''}, {label}",
                        keep,
                        ((idx, k),),
                    )
                )
    return tuple(out_pools), tuple(out)


def _shapes_worth_trying(model: GpuModel, pools: Sequence[Pool], jobs: Sequence[Job]) -> list[int]:
    now = {p.gpus_per_node for p in pools}
    must = may = 0  # largest pod that must / may run on this model
    for job in jobs:
        d = job.workload.demand
        if d.gpus is None:
            continue
        models = set(d.models)
        if not models or model.name in models or any(a in models for a in model.aliases):
            may = max(may, d.gpus)
            if len(models) == 1:
                must = max(must, d.gpus)
    out = []
    for n in _SHAPES:
        if n in now:
            continue
        smaller = n < min(now) and must <= n
        larger = n > max(now) and may > max(now)
        if smaller or larger:
            out.append(n)
    return out


def _reshaped(node: Node, n: int, pool: str) -> Node:
    g = len(node.gpus)
    first = node.gpus[0]
    labels = {k: v for k, v in node.labels.items() if k != "node.kubernetes.io/instance-type"}
    labels[POOL_LABEL] = pool
    labels["nvidia.com/gpu.count"] = str(n)
    return node.model_copy(
        update={
            "gpus": tuple(first.model_copy(update={"index": i}) for i in range(n)),
            "cpu_milli": None if node.cpu_milli is None else node.cpu_milli * n // g,
            "memory_mib": None if node.memory_mib is None else node.memory_mib * n // g,
            "labels": labels,
        }
    )


def _layout(node: Node, layout: tuple[MigSlice, ...] | None, pool: str, label: str) -> Node:
    labels = {k: v for k, v in node.labels.items() if k != _MIG_CONFIG}
    labels[POOL_LABEL] = pool
    if layout is not None:
        labels[_MIG_CONFIG] = label
    gpus = tuple(Gpu(index=g.index, model=g.model, mig=layout, shared=False) for g in node.gpus)
    return node.model_copy(update={"gpus": gpus, "labels": labels})


@dataclass(frozen=True, slots=True)
class _MigDemand:
    seconds: dict[str, float]
    """Per profile: instance-seconds the demand asks for on this model."""
    peak_slices: int
    """Most compute slices asked for at once, if every job started on arrival."""
    mean_slices: float
    """Compute slice-seconds over the demand's span: the fluid average."""


def _mig_demand(model: GpuModel, jobs: Sequence[Job], hints: Sequence[str]) -> _MigDemand:
    seconds: dict[str, float] = {}
    events: list[tuple[float, int]] = []
    start, end = math.inf, 0.0
    for job in jobs:
        d = job.workload.demand
        models = set(d.models)
        if models and model.name not in models and not any(a in models for a in model.aliases):
            continue
        profile: MigProfile | None = None
        if d.mig_profile is not None:
            profile = model.mig_profile(d.mig_profile)
        elif d.gpu_memory_mib is not None:
            profile = cheapest_profile(model, d.gpu_memory_mib)
        if profile is None:
            continue
        run = job.work / job.default_rate
        seconds[profile.name] = seconds.get(profile.name, 0.0) + run * job.workload.pods
        slices = profile.compute_slices * job.workload.pods
        events += [(job.submit, slices), (job.submit + run, -slices)]
        start, end = min(start, job.submit), max(end, job.submit + run)
    for name in hints:
        profile = model.mig_profile(name)
        if profile is not None and profile.name not in seconds:
            seconds[profile.name] = 1.0
    peak = now = 0
    for _, delta in sorted(events, key=lambda e: (e[0], e[1])):
        now += delta
        peak = max(peak, now)
    total = sum(_compute(model, p) * s for p, s in seconds.items())
    span = end - start if end > start else 1.0
    return _MigDemand(seconds, peak, total / span)


def _compute(model: GpuModel, profile: str) -> int:
    """Compute slices of one of ``model``'s profiles (names come from its own catalog)."""
    found = model.mig_profile(profile)
    assert found is not None
    return found.compute_slices


def _plain(model: GpuModel, compute: int) -> MigProfile | None:
    """The smallest plain (no ``+me``) profile with this many compute slices."""
    fits = [p for p in model.mig_profiles if p.compute_slices == compute and "+" not in p.name]
    return min(fits, key=lambda p: (p.memory_slices, p.name), default=None)


def _layouts(model: GpuModel, wanted: _MigDemand) -> list[tuple[str, tuple[MigSlice, ...]]]:
    """The layouts worth trying for this demand, each valid (``layout_problems``)."""
    out: list[tuple[str, tuple[MigSlice, ...]]] = []
    # The two profiles asked for most, each filling the GPU.
    for top in sorted(wanted.seconds, key=lambda p: (-wanted.seconds[p], p))[:2]:
        profile = model.mig_profile(top)
        assert profile is not None
        for k in range(profile.max_count, 0, -1):
            most = pack_profiles(model, [profile] * k)
            if most is not None:
                out.append((f"all-{top}", most))
                break
    parts = [_plain(model, 1), _plain(model, 1), _plain(model, 2), _plain(model, 3)]
    if all(p is not None for p in parts):
        balanced = pack_profiles(model, [p for p in parts if p is not None])
        if balanced is not None:
            out.append(("all-balanced", balanced))
    mix = _demand_mix(model, wanted.seconds)
    if mix is not None:
        out.append(("demand-mix", mix))
    unique: list[tuple[str, tuple[MigSlice, ...]]] = []
    for label, layout in out:
        if not layout_problems(model, layout) and all(layout != u for _, u in unique):
            unique.append((label, layout))
    return unique


def _demand_mix(model: GpuModel, seconds: dict[str, float]) -> tuple[MigSlice, ...] | None:
    """Profiles added one at a time to the one most behind its share of the demand's
    compute-slice-seconds, while the layout still packs."""
    weight = {p: s * _compute(model, p) for p, s in seconds.items()}
    total = sum(weight.values())
    chosen: list[MigProfile] = []
    layout: tuple[MigSlice, ...] | None = None
    blocked: set[str] = set()
    while True:
        used = sum(p.compute_slices for p in chosen) or 1

        def behind(name: str, used: int = used) -> float:
            have = sum(p.compute_slices for p in chosen if p.name == name)
            return weight[name] / total - have / used

        options = sorted((p for p in weight if p not in blocked), key=lambda p: (-behind(p), p))
        if not options:
            return layout
        pick = model.mig_profile(options[0])
        assert pick is not None
        trial = pack_profiles(model, [*chosen, pick])
        if trial is None:
            blocked.add(pick.name)
            continue
        chosen.append(pick)
        layout = trial


def _node_counts(wanted: _MigDemand, per_node: int, today: int) -> list[int]:
    """MIG node counts worth trying: from the fluid average to the peak, three at most,
    plus today's count."""
    low = max(1, math.ceil(wanted.mean_slices / per_node))
    high = max(low, math.ceil(wanted.peak_slices / per_node))
    counts = {low, (low + high) // 2, high}
    if today:
        counts.add(today)
    return sorted(counts)


def neighbours(
    ref: Candidate,
    pools: Sequence[Pool],
    options: Sequence[Arrangement],
    levels: Sequence[float],
    cheaper_only: bool,
) -> list[Candidate]:
    """Candidates one GPU model away from ``ref``: each of its arrangements at each level
    (and midway between levels, for finer steps); with ``cheaper_only`` no level above
    ``ref``'s for that model."""
    level_of = dict(ref.levels)
    shape_of = dict(ref.shapes)
    ladder = sorted(set(levels))
    steps = sorted(set(ladder) | {(a + b) / 2 for a, b in itertools.pairwise(ladder)})
    out = []
    for arr in options:
        now = level_of.get(arr.model, 1.0)
        for level in steps:
            if cheaper_only and level > now + 1e-9:
                continue
            counts = [
                0 if p.model == arr.model else c for p, c in zip(pools, ref.counts, strict=True)
            ]
            for i, n in arr.counts(level).items():
                counts[i] = n
            if not any(counts):
                continue
            shapes = {k: v for k, v in shape_of.items() if k != arr.model}
            if arr.name != TODAY:
                shapes[arr.model] = arr.name
            out.append(
                Candidate(
                    tuple(counts),
                    tuple(sorted({**level_of, arr.model: level}.items())),
                    tuple(sorted(shapes.items())),
                    ref.base,
                )
            )
    return out
