"""Baselines that differ from Apportion in *which* job goes next: ``fifo`` and ``drf``.

Both ignore quotas (every job is mapped into one queue that owns the cluster) and place
through the core's online path, so the comparison isolates the ordering rule. Both leave
aside the jobs the cluster can never run, even empty (``Cluster.never_fitting``, which the
replay's header counts): waiting for capacity that never comes, such a job would block
every job behind it for the whole run.

- ``fifo``: strict first come, first served across the whole cluster: the oldest waiting
  job that could ever run must start before any younger one (head-of-line blocking, no
  backfill).
- ``drf``: Dominant Resource Fairness (Ghodsi et al., NSDI'11) across tenants (the trace's
  queues): repeatedly offer the head of the tenant with the lowest dominant share — its
  largest share of any resource (GPUs of each model, slices of each MIG profile, CPU,
  memory), divided by its weight —
  skipping a tenant for the rest of the round once its head does not fit.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence

from scheduler.catalog import MILLI_PER_GPU
from scheduler.model import PodPlacement, Workload
from sim.cluster import Cluster
from sim.job import Job
from sim.occupancy import UNTRACKED
from sim.policies.online import CoreMirror, ShapeMemo, quota_amount
from sim.policy import Actions, Context, JobState

__all__ = ["DrfPolicy", "FifoPolicy"]


def _arrival(s: JobState) -> tuple[int, str]:
    return (s.job.workload.created, s.job.workload.name)


def _never_fitting(cluster: Cluster, jobs: Sequence[Job]) -> frozenset[str]:
    """Names of the jobs the cluster can never run, even empty."""
    return frozenset(j.name for j in cluster.never_fitting(jobs))


class FifoPolicy:
    name = "fifo"
    tie_rule = "arrival time, then name; placement by the core's best-fit (lowest node index)"
    tick_s = 0

    def __init__(self, cluster: Cluster, jobs: Sequence[Job]) -> None:
        self.mirror = CoreMirror(cluster, one_queue=True)
        self.never = _never_fitting(cluster, jobs)

    def schedule(self, ctx: Context) -> Actions:
        freed = self.mirror.follow(ctx)
        if not freed and not ctx.arrived:
            return Actions()
        actions = Actions()
        for s in sorted(ctx.pending.values(), key=_arrival):
            if s.name in self.never:
                continue
            start = self.mirror.admit(s)
            if start is None:
                break
            actions.starts.append(start)
        return actions


class DrfPolicy:
    name = "drf"
    tie_rule = (
        "lowest weighted dominant share, then tenant name; within a tenant priority, age, "
        "name; placement by the core's best-fit (lowest node index)"
    )
    tick_s = 0

    def __init__(self, cluster: Cluster, jobs: Sequence[Job]) -> None:
        self.mirror = CoreMirror(cluster, one_queue=True)
        self.never = _never_fitting(cluster, jobs)
        self.memo = ShapeMemo()
        self.weight = {q.name: q.weight for q in cluster.snapshot.queues}
        nodes = cluster.snapshot.nodes
        # In the quota book's units (``quota_amount``): milli-GPU, or MIG instances.
        self.capacity: dict[str, float] = {
            f: float(c if f.startswith("mig-") else c * MILLI_PER_GPU)
            for f, c in cluster.capacity().items()
        }
        cpu = [n.cpu_milli for n in nodes if n.cpu_milli is not None]
        mem = [n.memory_mib for n in nodes if n.memory_mib is not None]
        self.capacity["cpu"] = float(sum(cpu)) if cpu else float(UNTRACKED)
        self.capacity["memory"] = float(sum(mem)) if mem else float(UNTRACKED)

    def _usage(self, ctx: Context) -> dict[str, dict[str, float]]:
        usage: dict[str, dict[str, float]] = {}
        for s in ctx.running.values():
            self._charge(usage, s.job.workload, s.flavor, s.placement)
        return usage

    @staticmethod
    def _charge(
        usage: dict[str, dict[str, float]],
        w: Workload,
        flavor: str | None,
        placement: tuple[PodPlacement, ...],
    ) -> dict[str, float]:
        """Add what a job holds to its tenant's usage (the same for a job running and one
        started in this call); the tenant's usage."""
        u = usage.setdefault(w.queue, {})
        if flavor is not None:
            u[flavor] = u.get(flavor, 0.0) + quota_amount(flavor, placement)
        u["cpu"] = u.get("cpu", 0.0) + w.cpu_milli * w.pods
        u["memory"] = u.get("memory", 0.0) + w.memory_mib * w.pods
        return u

    def _share(self, u: dict[str, float], queue: str) -> float:
        dominant = max((v / self.capacity.get(k, 1.0) for k, v in u.items()), default=0.0)
        return dominant / self.weight.get(queue, 1.0)

    def schedule(self, ctx: Context) -> Actions:
        if self.mirror.follow(ctx):
            self.memo.clear()
        elif not ctx.arrived:
            return Actions()
        usage = self._usage(ctx)
        waiting: dict[str, list[JobState]] = {}
        for s in sorted(
            ctx.pending.values(),
            key=lambda s: (-s.job.workload.priority, s.job.workload.created, s.name),
        ):
            if s.name not in self.never:
                waiting.setdefault(s.job.workload.queue, []).append(s)
        heads = {q: 0 for q in waiting}
        heap = [(self._share(usage.get(q, {}), q), q) for q in waiting]
        heapq.heapify(heap)
        actions = Actions()
        while heap:
            _, q = heapq.heappop(heap)
            jobs = waiting[q]
            while heads[q] < len(jobs) and self.memo.known_to_fail(
                self.mirror.workload(jobs[heads[q]].job.workload)
            ):
                heads[q] += 1
            if heads[q] >= len(jobs):
                continue
            s = jobs[heads[q]]
            start = self.mirror.admit(s)
            if start is None:
                self.memo.add(self.mirror.workload(s.job.workload))
                continue  # this tenant's head waits: skip the tenant for this round
            actions.starts.append(start)
            heads[q] += 1
            u = self._charge(usage, s.job.workload, start.flavor, start.placement)
            if heads[q] < len(jobs):
                heapq.heappush(heap, (self._share(u, q), q))
        return actions
