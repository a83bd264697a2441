"""The core's online path kept in step with the engine: one ``IncrementalAllocator``.

Policies that admit one workload at a time (greedy, fifo, kueue, drf, and apportion
between its global decisions) all place through the production allocator — the same quota
checks and the same best-fit rule — so they differ only in *which* workload they offer
next. The mirror is rebuilt from the engine's state when node health changes or after a
global decision, and otherwise follows it by releasing what finished.

Policies without quotas (fifo, drf) map every workload into one queue that owns the
whole cluster, so only placement can refuse them.
"""

from __future__ import annotations

from collections.abc import Iterable

from scheduler.catalog import MILLI_PER_GPU
from scheduler.incremental import IncrementalAllocator
from scheduler.model import PodPlacement, Snapshot, Workload, WorkloadDecision
from scheduler.reasons import QUOTA_REASONS, Outcome
from sim.cluster import Cluster
from sim.job import Job
from sim.policy import Context, JobState, Start

__all__ = ["ONE_QUEUE", "CoreMirror", "ShapeMemo", "never_admitted", "quota_amount", "shape_of"]

ONE_QUEUE = "all"
"""The queue every workload is mapped to by policies that ignore quotas."""


def quota_amount(flavor: str | None, placement: tuple[PodPlacement, ...]) -> int:
    """What a placement holds of its flavor, in the quota book's base unit: instances for
    a MIG flavor, milli-GPU for a GPU model (``scheduler.quota``)."""
    if flavor is not None and flavor.startswith("mig-"):
        return len(placement)
    return sum((p.milli or MILLI_PER_GPU) * len(p.gpus) for p in placement)


def shape_of(w: Workload) -> tuple[object, ...]:
    """What decides whether the online allocator can admit a workload: two workloads of the
    same shape fit or fail together against the same state."""
    return (
        w.queue,
        w.demand,
        w.pods,
        w.cpu_milli,
        w.memory_mib,
        tuple(sorted(w.node_selector.items())),
        w.tolerations,
        tuple(sorted(w.throughput.items())),
    )


class ShapeMemo:
    """Shapes that failed since capacity was last freed: they fail again (capacity only
    shrank), so a scan over a long queue costs one attempt per shape."""

    def __init__(self) -> None:
        self.failed: set[tuple[object, ...]] = set()

    def clear(self) -> None:
        self.failed.clear()

    def known_to_fail(self, w: Workload) -> bool:
        return bool(self.failed) and shape_of(w) in self.failed

    def add(self, w: Workload) -> None:
        self.failed.add(shape_of(w))


class CoreMirror:
    """An ``IncrementalAllocator`` holding exactly what the engine runs."""

    def __init__(self, cluster: Cluster, one_queue: bool = False) -> None:
        self.one_queue = one_queue
        if one_queue:
            bare = Cluster(cluster.snapshot.model_copy(update={"queues": ()}), cluster.source)
            cluster = bare.with_queues([ONE_QUEUE])
        self.cluster = cluster
        self._mapped: dict[str, Workload] = {}
        self.allocator: IncrementalAllocator | None = None

    def workload(self, w: Workload) -> Workload:
        """The workload as this mirror's allocator sees it (queue mapped if need be)."""
        if not self.one_queue:
            return w
        mapped = self._mapped.get(w.name)
        if mapped is None:
            mapped = Workload.model_construct(**{**w.__dict__, "queue": ONE_QUEUE})
            self._mapped[w.name] = mapped
        return mapped

    def rebuild(self, ctx: Context, running: Iterable[JobState] | None = None) -> None:
        states = ctx.running.values() if running is None else running
        workloads = []
        for s in states:
            assert s.running is not None
            w = s.running
            if self.one_queue:
                w = Workload.model_construct(**{**w.__dict__, "queue": ONE_QUEUE})
            workloads.append(w)
        snap = self.cluster.snapshot
        self.allocator = IncrementalAllocator(
            Snapshot.model_construct(
                gpu_models=snap.gpu_models,
                nodes=ctx.nodes(),
                queues=snap.queues,
                workloads=tuple(workloads),
                now=ctx.now,
                prices=snap.prices,
            )
        )

    def follow(self, ctx: Context) -> bool:
        """Catch up with the engine; True when capacity was freed since the last call."""
        if self.allocator is None or ctx.health_changed:
            self.rebuild(ctx)
            return True
        for s in ctx.released:
            self.allocator.release(s.name)
        return bool(ctx.released)

    def decide(self, s: JobState) -> WorkloadDecision:
        assert self.allocator is not None
        return self.allocator.decide(self.workload(s.job.workload))

    def admit(self, s: JobState) -> Start | None:
        """Admit now through the core's online path, or None (nothing charged)."""
        assert self.allocator is not None
        w = s.job.workload
        d = self.allocator.decide(self.workload(w))
        if d.outcome is Outcome.ADMIT:
            return Start(s.name, d.placement, d.flavor)
        return None

    def release(self, name: str) -> None:
        assert self.allocator is not None
        self.allocator.release(name)

    def hold(self, running: Workload) -> None:
        """Charge a workload the engine started on someone else's decision."""
        assert self.allocator is not None
        if self.one_queue:
            running = Workload.model_construct(**{**running.__dict__, "queue": ONE_QUEUE})
        self.allocator.hold(running)


def never_admitted(
    cluster: Cluster, jobs: Iterable[Job], never_fit: Iterable[Job] = ()
) -> list[tuple[Job, WorkloadDecision]]:
    """Jobs (other than ``never_fit``) their queues' quotas can never admit, each with the
    core's decision saying why: on the empty cluster its online path refuses them for quota
    (a gang larger than its cohort's quota, a flavor its queue has none of), and usage only
    adds to an empty book. The policies that keep quotas leave them waiting for the run."""
    snap = cluster.snapshot
    allocator = IncrementalAllocator(
        Snapshot.model_construct(
            gpu_models=snap.gpu_models,
            nodes=snap.nodes,
            queues=snap.queues,
            workloads=(),
            now=0,
            prices=snap.prices,
        )
    )
    skip = {j.name for j in never_fit}
    refused: dict[tuple[object, ...], WorkloadDecision | None] = {}
    found = []
    for job in jobs:
        w = job.workload
        key = shape_of(w)
        if key not in refused:
            d = allocator.decide(w)
            if d.outcome is Outcome.ADMIT:
                allocator.release(w.name)  # the cluster stays empty for the next shape
            refused[key] = d if d.reason in QUOTA_REASONS else None
        decision = refused[key]
        if decision is not None and job.name not in skip:
            found.append((job, decision))
    return found
