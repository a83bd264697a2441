"""A Kueue-like baseline: one head per queue per cycle, fair-sharing order, borrowing and
reclaim — Kueue's admission rules, placed by the core's online path.

Per scheduling point, cycles run back to back until every queue's waiting jobs have been
offered once (Kueue's BestEffortFIFO: an inadmissible head steps aside until the cluster
changes). In a cycle each queue offers its head (priority, then age); heads go in order
of their queue's dominant resource share (DRS: the largest share, over flavors, of usage
above nominal quota divided by what the cohort lends, divided by the queue's weight),
lowest first. A head is admitted if its quota (nominal, borrowing and lending limits in
the cohort — the same book the core keeps) and placement allow.

A head that does not fit may preempt, as Kueue does: *reclaim* — if its queue stays within
its nominal quota, running jobs of cohort mates that borrow that flavor (any priority with
``reclaim_within_cohort: Any``, lower only with ``LowerPriority``) — and *within the queue*
lower-priority jobs (``within_queue: LowerPriority``). Candidates go lowest priority, then
most recently started first, until the head fits; no minimization pass.
"""

from __future__ import annotations

from scheduler.catalog import MILLI_PER_GPU
from scheduler.demand import Option, resolve_options
from scheduler.incremental import IncrementalAllocator
from scheduler.model import Snapshot, Workload
from scheduler.reasons import Outcome
from sim.cluster import Cluster
from sim.policies.online import CoreMirror, ShapeMemo, quota_amount
from sim.policy import Actions, Context, JobState, Start

__all__ = ["KueuePolicy"]

MAX_VICTIM_TRIALS = 3
"""Placement trials per preemption attempt (each compiles the cluster once)."""


def _amount(s: JobState) -> int:
    """Quota a running job is charged, in its flavor's base unit."""
    return quota_amount(s.flavor, s.placement)


class KueuePolicy:
    name = "kueue"
    tie_rule = (
        "heads by lowest DRS, then priority, age, name; placement by the core's best-fit "
        "(lowest node index)"
    )
    tick_s = 0

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.mirror = CoreMirror(cluster)
        self.memo = ShapeMemo()
        self.queues = {q.name: q for q in cluster.snapshot.queues}
        self.model_flavors = frozenset(m.name for m in cluster.catalog.models)
        self.present = tuple(
            dict.fromkeys(
                cluster.catalog[g.model].name for n in cluster.snapshot.nodes for g in n.gpus
            )
        )
        self.nominal: dict[tuple[str, str], int] = {}
        self.lendable: dict[tuple[str, str], int] = {}
        for q in cluster.snapshot.queues:
            for flavor, quota in q.quota.items():
                unit = MILLI_PER_GPU if flavor in self.model_flavors else 1
                self.nominal[(q.name, flavor)] = quota.nominal * unit
                lend = quota.nominal if quota.lending_limit is None else quota.lending_limit
                key = (q.cohort or q.name, flavor)
                self.lendable[key] = self.lendable.get(key, 0) + min(lend, quota.nominal) * unit
        self._options: dict[str, tuple[Option, ...]] = {}
        self._starts: dict[str, Start] = {}
        """Starts decided in the current call, in order."""

    # -------------------------------------------------------------- shares
    def _drs(self, usage: dict[tuple[str, str], int], queue: str) -> float:
        q = self.queues[queue]
        dominant = 0.0
        for (name, flavor), used in usage.items():
            if name != queue:
                continue
            above = used - self.nominal.get((queue, flavor), 0)
            if above > 0:
                lend = self.lendable.get((q.cohort or queue, flavor), 0)
                dominant = max(dominant, above / lend if lend else float(above))
        return dominant / q.weight

    def schedule(self, ctx: Context) -> Actions:
        if self.mirror.follow(ctx):
            self.memo.clear()
            candidates = list(ctx.pending.values())
        else:
            candidates = list(ctx.arrived)
        if not candidates:
            return Actions()
        usage: dict[tuple[str, str], int] = {}
        for s in ctx.running.values():
            if s.flavor is not None:
                key = (s.job.workload.queue, s.flavor)
                usage[key] = usage.get(key, 0) + _amount(s)
        per_queue: dict[str, list[JobState]] = {}
        for s in sorted(
            candidates, key=lambda s: (-s.job.workload.priority, s.job.workload.created, s.name)
        ):
            per_queue.setdefault(s.job.workload.queue, []).append(s)
        actions = Actions()
        evicted: set[str] = set()
        self._starts = {}
        no_room: set[tuple[str, int]] = set()
        cursor = {q: 0 for q in per_queue}
        while True:
            heads = [per_queue[q][cursor[q]] for q in per_queue if cursor[q] < len(per_queue[q])]
            if not heads:
                break
            heads.sort(
                key=lambda s: (
                    self._drs(usage, s.job.workload.queue),
                    -s.job.workload.priority,
                    s.job.workload.created,
                    s.name,
                )
            )
            for s in heads:
                cursor[s.job.workload.queue] += 1
                w = s.job.workload
                if self.memo.known_to_fail(w):
                    continue
                start = self.mirror.admit(s)
                if start is None and (w.queue, w.priority) not in no_room:
                    start = self._preempt(ctx, s, usage, actions, evicted)
                    if start is None:
                        # Kueue computes preemption targets per head; one failed search per
                        # queue and priority in a scheduling point stands for the rest.
                        no_room.add((w.queue, w.priority))
                if start is None:
                    self.memo.add(w)
                    continue
                actions.starts.append(start)
                self._starts[start.job] = start
                if start.flavor is not None:
                    key = (w.queue, start.flavor)
                    usage[key] = usage.get(key, 0) + quota_amount(start.flavor, start.placement)
        return actions

    # ---------------------------------------------------------- preemption
    def _preempt(
        self,
        ctx: Context,
        s: JobState,
        usage: dict[tuple[str, str], int],
        actions: Actions,
        evicted: set[str],
    ) -> Start | None:
        w = s.job.workload
        queue = self.queues[w.queue]
        policy = queue.preemption
        options = self._options.get(w.name)
        if options is None:
            options = resolve_options(w, self.cluster.catalog, self.present)
            self._options[w.name] = options
        option = next((o for o in options if self.nominal.get((w.queue, o.flavor), 0) > 0), None)
        if option is None:
            return None
        need = option.quota_per_pod * w.pods
        within = (
            usage.get((w.queue, option.flavor), 0) + need <= self.nominal[(w.queue, option.flavor)]
        )
        candidates: list[JobState] = []
        for r in ctx.running.values():
            if r.name in evicted or r.flavor != option.flavor:
                continue
            rw = r.job.workload
            if rw.queue == w.queue:
                if policy.within_queue != "Never" and rw.priority < w.priority:
                    candidates.append(r)
            elif (
                within
                and policy.reclaim_within_cohort != "Never"
                and queue.cohort is not None
                and self.queues[rw.queue].cohort == queue.cohort
                and usage.get((rw.queue, option.flavor), 0)
                > self.nominal.get((rw.queue, option.flavor), 0)
                and (policy.reclaim_within_cohort == "Any" or rw.priority < w.priority)
            ):
                candidates.append(r)
        if not candidates:
            return None
        candidates.sort(key=lambda r: (r.job.workload.priority, -r.started, r.name))
        victims: list[JobState] = []
        trials = 0
        for r in candidates:
            victims.append(r)
            freed = sum(_amount(v) for v in victims)
            if freed < need and len(victims) < len(candidates):
                continue
            trials += 1
            start = self._trial(ctx, s, victims, evicted)
            if start is not None:
                for v in victims:
                    evicted.add(v.name)
                    actions.evictions.append((v.name, "kueue preemption"))
                    key = (v.job.workload.queue, v.flavor or "")
                    usage[key] = usage.get(key, 0) - _amount(v)
                return start
            if trials >= MAX_VICTIM_TRIALS:
                break
        return None

    def _trial(
        self, ctx: Context, s: JobState, victims: list[JobState], evicted: set[str]
    ) -> Start | None:
        """Would ``s`` be admitted with these victims gone? On success the mirror becomes
        that world: victims released, this call's earlier starts kept where they are."""
        gone = evicted | {v.name for v in victims}
        kept = [r.running for r in ctx.running.values() if r.name not in gone]
        for start in self._starts.values():
            w = ctx.pending[start.job].job.workload
            kept.append(
                Workload.model_construct(
                    **{
                        **w.__dict__,
                        "placement": start.placement,
                        "flavor": start.flavor,
                        "started": ctx.now,
                    }
                )
            )
        snap = self.mirror.cluster.snapshot
        trial = IncrementalAllocator(
            Snapshot.model_construct(
                gpu_models=snap.gpu_models,
                nodes=ctx.nodes(),
                queues=snap.queues,
                workloads=tuple(k for k in kept if k is not None),
                now=ctx.now,
                prices=snap.prices,
            )
        )
        d = trial.decide(s.job.workload)
        if d.outcome is not Outcome.ADMIT:
            return None
        self.mirror.allocator = trial
        return Start(s.name, d.placement, d.flavor)
