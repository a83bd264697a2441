"""The FGD paper's "fill" experiment: how much of the cluster a policy can allocate.

Protocol (Weng et al., ATC'23; the repository's trace README): shuffle the pods with a
seed, append pods drawn uniformly with replacement until the summed GPU request would
pass 130 % of the cluster's GPU capacity, then place them one at a time in that order —
no departures, no queue, no retries, no preemption; a pod that fits nowhere is dropped.
The pods are all of the trace's, CPU-only ones too (``HostPod``: the paper's simulator
draws from its whole pod list, which for openb's default list is 1,088 CPU-only pods of
8,152): they ask no GPU, so they add nothing to the arrived request, but the CPU and
memory they take can leave a node's free GPUs unusable.
After every pod the arrived request (failed pods included) and the allocated GPU milli
are recorded, both as % of capacity. The headline is the unallocated GPU % (100 −
allocated) when 100 % has arrived, linearly interpolated between the two pods around it,
and at the end (130 %).

Apportion runs here through the core's online entry point (``IncrementalAllocator``,
fragmentation-aware: it learns the workload mix from the pods it has been asked about,
and counts a hole on a shared GPU partly as what those pods would leave of it),
one pod at a time with no look-ahead, exactly as the baselines do; its queue owns the
whole cluster, so only placement can refuse a pod. Apportion does not place pods asking
no GPU (the kube-scheduler does; the webhook holds what they take, ``hold_outside``): in
its runs they go where best-fit would put them, as a kube-scheduler scoring by most
allocated would. Each baseline places them by its own rule for a request of no GPUs.
FGD's target workload leaves them out: as the paper counts them (every free GPU a
fragment for a task asking none), they add the same to every node's growth.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

import numpy as np

from scheduler.model import PodPlacement, Workload
from scheduler.reasons import Outcome
from sim.cluster import Cluster
from sim.fragmentation import TaskMix, mix_of
from sim.job import HostPod, Job
from sim.metrics import Recorder
from sim.occupancy import Occupancy
from sim.policies.fgd import FgdPlacer
from sim.policies.online import CoreMirror
from sim.policies.placement import PLACERS, BestFitPlacer, Placer

__all__ = [
    "FILL_POLICIES",
    "FillResult",
    "OnlinePlacer",
    "fill",
    "fill_stream",
    "interpolate",
]

GRID = tuple(range(0, 131))
"""Arrived-% points the curves are reported at."""


class FillPlacer(Protocol):
    name: str
    tie_rule: str

    def place(self, occ: Occupancy, job: Job) -> tuple[PodPlacement, ...] | None: ...

    def host_node(self, occ: Occupancy, pod: HostPod) -> int | None: ...


class OnlinePlacer:
    """The core's online path as a fill policy: ``IncrementalAllocator.decide`` per pod,
    fragmentation-aware (``scheduler.fragmentation``)."""

    tie_rule = (
        "core, fragmentation-aware: least growth of expected fragmentation against the mix "
        "of pods seen so far (no look-ahead; a hole counts partly as what the shared pods "
        "seen would leave of it), then used nodes before whole free nodes, smallest "
        "remainder, lowest node index, lowest GPU index; pods asking no GPU where best-fit "
        "puts them (the kube-scheduler places those)"
    )

    def __init__(self, cluster: Cluster, name: str = "apportion") -> None:
        self.name = name
        self.mirror = CoreMirror(cluster, one_queue=True)
        snap = self.mirror.cluster.snapshot
        from scheduler.incremental import IncrementalAllocator

        self.mirror.allocator = IncrementalAllocator(snap, fragmentation_aware=True)
        self.hosts = BestFitPlacer()

    def place(self, occ: Occupancy, job: Job) -> tuple[PodPlacement, ...] | None:
        assert self.mirror.allocator is not None
        d = self.mirror.allocator.decide(self.mirror.workload(job.workload))
        return d.placement if d.outcome is Outcome.ADMIT else None

    def host_node(self, occ: Occupancy, pod: HostPod) -> int | None:
        """Best-fit's node; the allocator holds what the pod takes there, as the webhook's
        live cluster does for a CPU-only pod bound to a GPU node."""
        assert self.mirror.allocator is not None
        n = self.hosts.host_node(occ, pod.cpu_milli, pod.memory_mib)
        if n is not None:
            self.mirror.allocator.hold_outside(occ.node_names[n], pod.cpu_milli, pod.memory_mib)
        return n


def _placer(name: str) -> Callable[[Cluster, int, TaskMix], FillPlacer]:
    def make(cluster: Cluster, seed: int, mix: TaskMix) -> FillPlacer:
        placer: Placer = PLACERS[name](seed)
        if isinstance(placer, FgdPlacer):
            placer.mix = mix
        return _Committing(placer)

    return make


class _Committing:
    """A baseline placer that also records what it placed (gpu-clustering remembers)."""

    def __init__(self, placer: Placer) -> None:
        self.placer = placer
        self.name = placer.name
        self.tie_rule = placer.tie_rule

    def place(self, occ: Occupancy, job: Job) -> tuple[PodPlacement, ...] | None:
        placement = self.placer.place(occ, job)
        if placement is not None:
            self.placer.placed(job, placement, occ)
        return placement

    def host_node(self, occ: Occupancy, pod: HostPod) -> int | None:
        return self.placer.host_node(occ, pod.cpu_milli, pod.memory_mib)


FILL_POLICIES: dict[str, Callable[[Cluster, int, TaskMix], FillPlacer]] = {
    "apportion": lambda cluster, seed, mix: OnlinePlacer(cluster),
    **{
        name: _placer(name)
        for name in ("random", "best-fit", "dot-product", "gpu-packing", "gpu-clustering", "fgd")
    },
}


@dataclass(frozen=True)
class FillResult:
    policy: str
    seed: int
    tie_rule: str
    pods: int
    cpu_only_pods: int
    """Of ``pods``, those asking no GPU."""
    dropped: int
    """Pods that fit nowhere, CPU-only ones included."""
    arrived_pct: list[float]
    """On ``GRID``."""
    allocated_pct: list[float]
    fragmentation_pct: list[float]
    """Fragmented share of the free GPU capacity (FGD's measure, the trace's task mix)."""
    unallocated_at_100: float
    unallocated_at_130: float

    def to_json(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "seed": self.seed,
            "tie_rule": self.tie_rule,
            "pods": self.pods,
            "cpu_only_pods": self.cpu_only_pods,
            "dropped": self.dropped,
            "unallocated_pct_at_100": self.unallocated_at_100,
            "unallocated_pct_at_130": self.unallocated_at_130,
            "curves": {
                "arrived_pct": self.arrived_pct,
                "allocated_pct": self.allocated_pct,
                "fragmentation_pct": self.fragmentation_pct,
            },
        }


def _request_milli(occ: Occupancy, pod: Job | HostPod) -> int:
    """A pod's GPU request (``Occupancy.demand_milli``); none for a pod asking no GPU."""
    return 0 if isinstance(pod, HostPod) else occ.demand_milli(pod.workload)


def fill_stream(
    jobs: Sequence[Job | HostPod], occ: Occupancy, seed: int, target: float = 1.3
) -> list[Job | HostPod]:
    """The shuffled pods plus uniform draws with replacement up to ``target`` × the
    cluster's capacity, each pod's request its ``Occupancy.demand_milli`` (none for a
    ``HostPod``). Repeated pods get a ``#k`` suffix so every name is unique."""
    rng = random.Random(seed)
    order = list(jobs)
    rng.shuffle(order)
    limit = target * occ.healthy_capacity_milli()
    out: list[Job | HostPod] = []
    total = 0
    for job in order:
        need = _request_milli(occ, job)
        if total + need > limit:
            return out
        out.append(job)
        total += need
    seen: dict[str, int] = {}
    while order:
        job = order[rng.randrange(len(order))]
        need = _request_milli(occ, job)
        if total + need > limit:
            break
        k = seen.get(job.name, 0) + 1
        seen[job.name] = k
        out.append(_renamed(job, f"{job.name}#{k}"))
        total += need
    return out


def _renamed(job: Job | HostPod, name: str) -> Job | HostPod:
    if isinstance(job, HostPod):
        return replace(job, name=name)
    w = Workload.model_construct(**{**job.workload.__dict__, "name": name})
    return Job(w, job.work, job.rates, job.default_rate, job.gpu_util)


def interpolate(xs: Sequence[float], ys: Sequence[float], at: float) -> float:
    """y at x = ``at`` on a non-decreasing polyline (clamped at the ends)."""
    return float(np.interp(at, xs, ys))


def fill(
    cluster: Cluster,
    jobs: Sequence[Job],
    policy: str,
    seed: int,
    progress: Callable[[float], None] | None = None,
    fill_only: Sequence[Job | HostPod] = (),
) -> FillResult:
    """Run the fill protocol once for one policy and seed; ``fill_only`` (``Trace``'s: pods
    a replay leaves out, CPU-only ones among them) join ``jobs`` in arrival order before
    the shuffle."""
    if policy not in FILL_POLICIES:
        raise ValueError(f"unknown fill policy {policy!r}; known: {', '.join(FILL_POLICIES)}")
    occ = Occupancy(cluster.snapshot.nodes, cluster.catalog)
    capacity = occ.healthy_capacity_milli()
    # Merged, each keeping its own order: without fill-only pods, the jobs' order as given.
    pods = list(heapq.merge(jobs, fill_only, key=lambda p: (p.submit, p.name)))
    gpu_pods = [p for p in pods if isinstance(p, Job)]
    mix = mix_of(gpu_pods, occ.model_names)
    placer = FILL_POLICIES[policy](cluster, seed, mix)
    stream = fill_stream(pods, occ, seed)
    recorder = Recorder(cluster, occ, gpu_pods, 1, 1)
    arrived = 0
    xs: list[float] = [0.0]
    ys: list[float] = [0.0]
    frag_at: list[float] = []
    next_grid = 0
    dropped = 0
    for i, job in enumerate(stream):
        while next_grid < len(GRID) and 100.0 * arrived / capacity >= GRID[next_grid]:
            frag_at.append(round(100.0 * recorder.fragmented_share(), 4))
            next_grid += 1
        if isinstance(job, HostPod):
            n = placer.host_node(occ, job)
            if n is None:
                dropped += 1
            else:
                occ.take_host(job.name, n, job.cpu_milli, job.memory_mib)
            continue
        arrived += occ.demand_milli(job.workload)
        placement = placer.place(occ, job)
        if placement is None:
            dropped += 1
        else:
            occ.start(job.workload, placement)
        xs.append(100.0 * arrived / capacity)
        ys.append(100.0 * occ.allocated_milli / capacity)
        if progress is not None and i % 512 == 0:
            progress(i / len(stream))
    while next_grid < len(GRID):
        frag_at.append(round(100.0 * recorder.fragmented_share(), 4))
        next_grid += 1
    if progress is not None:
        # The end, as a replay reports it: the progress line then says the run finished
        # and stops listing it (it stayed "under way" at 98-99 % until the last run ended).
        progress(1.0)
    grid_alloc = [round(interpolate(xs, ys, g), 4) for g in GRID]
    return FillResult(
        policy=policy,
        seed=seed,
        tie_rule=placer.tie_rule,
        pods=len(stream),
        cpu_only_pods=sum(isinstance(p, HostPod) for p in stream),
        dropped=dropped,
        arrived_pct=[float(g) for g in GRID],
        allocated_pct=grid_alloc,
        fragmentation_pct=frag_at,
        unallocated_at_100=round(100.0 - interpolate(xs, ys, 100.0), 4),
        unallocated_at_130=round(100.0 - ys[-1], 4),
    )
