"""Apportion itself, as production runs it: ``greedy`` and ``apportion``.

``greedy`` is the core's online path alone (the webhook's ``IncrementalAllocator``):
each arrival is admitted if quota and placement allow, and when capacity frees the
waiting workloads are offered it again, higher priority then older first. No preemption.

``apportion`` adds the controller (design.md §4): the same online path for arrivals first,
as the webhook admits at creation, then, while something waits, a global
``scheduler.decide`` — the ILP with its greedy fallback, fair-share order, reclaim and
preemption — over everything waiting, at every call that follows a change (an arrival,
a release, a node's health, its own last decision's starts and evictions), as the
controller decides after every change. The engine also calls it every ``tick_s``
simulated seconds while work waits (the controller's periodic tick), so a decision that
acted is followed by another even when no event comes. ``apportion-greedy`` is the same
controller with the ILP switched off (``decide(use_ilp=False)``).

The decision's solver budget is wall-clock time; a simulation that must be reproducible
passes a clock that does not advance (the default here), so the ILP is cut only by its
optimality gap and HiGHS's own time limit, never by how busy the machine is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from scheduler.allocator import decide
from scheduler.model import Snapshot, Workload
from scheduler.reasons import Outcome
from sim.cluster import Cluster
from sim.policies.online import CoreMirror, ShapeMemo
from sim.policy import Actions, Context, JobState, Start

__all__ = ["ApportionPolicy", "GreedyPolicy", "frozen_clock"]


def frozen_clock() -> float:
    """A clock that never moves: the decision budget never runs out mid-build."""
    return 0.0


def _queue_order(s: JobState) -> tuple[int, int, str]:
    w = s.job.workload
    return (-w.priority, w.created, w.name)


def _in_queue_order(states: Iterable[JobState]) -> list[JobState]:
    """Higher priority, then older, then by name (most calls have one job or none: nothing
    to sort)."""
    jobs = list(states)
    return sorted(jobs, key=_queue_order) if len(jobs) > 1 else jobs


class GreedyPolicy:
    name = "greedy"
    tie_rule = (
        "core best-fit: used nodes before whole free nodes, smallest remainder, then lowest "
        "node index; shared GPUs by least free milli; waiting work offered by priority, age, name"
    )
    tick_s = 0

    def __init__(self, cluster: Cluster) -> None:
        self.mirror = CoreMirror(cluster)
        self.memo = ShapeMemo()

    def schedule(self, ctx: Context) -> Actions:
        if self.mirror.follow(ctx):
            self.memo.clear()
            candidates = _in_queue_order(ctx.pending.values())
        else:
            candidates = _in_queue_order(ctx.arrived)
        return Actions(starts=self._offer(candidates))

    def _offer(self, candidates: list[JobState]) -> list[Start]:
        starts = []
        memo, mirror = self.memo, self.mirror
        for s in candidates:
            w = s.job.workload
            if memo.known_to_fail(w):
                continue
            start = mirror.admit(s)
            if start is None:
                memo.add(w)
            else:
                starts.append(start)
        return starts


class ApportionPolicy:
    tie_rule = (
        "arrivals: core best-fit (as greedy); then after every change: scheduler.decide — "
        "fair-share order, priority, age, name; ILP answer realized by the greedy cycle, "
        "lowest node index on ties"
    )

    def __init__(
        self,
        cluster: Cluster,
        use_ilp: bool = True,
        tick_s: int = 30,
        budget_ms: float = 2000.0,
        clock: Callable[[], float] = frozen_clock,
    ) -> None:
        self.name = "apportion" if use_ilp else "apportion-greedy"
        self.use_ilp = use_ilp
        self.tick_s = tick_s
        self.budget_ms = budget_ms
        self.clock = clock
        self.cluster = cluster
        self.mirror = CoreMirror(cluster)
        self.memo = ShapeMemo()
        self.changed = True
        self.stale = False
        self.decisions = 0
        self.ilp_answers = 0
        self.applied: tuple[list[str], list[str]] = ([], [])
        """The last global decision's evictions and starts, for ``_catch_up``."""

    def schedule(self, ctx: Context) -> Actions:
        if self.stale:
            self._catch_up(ctx)
            self.stale = False
            self.memo.clear()
        elif self.mirror.follow(ctx):
            self.memo.clear()
        # As the controller: a global decision after every change (the debounce collapses a
        # burst into one; the engine applies all of an instant's events before calling),
        # and none without one: the core reads no clock, so it would repeat the last.
        self.changed |= bool(ctx.arrived or ctx.released or ctx.health_changed)
        # First the webhook's online path, at creation, for what just arrived.
        starts = []
        for s in _in_queue_order(ctx.arrived):
            w = s.job.workload
            start = None if self.memo.known_to_fail(w) else self.mirror.admit(s)
            if start is None:
                self.memo.add(w)
            else:
                starts.append(start)
        if self.changed and len(ctx.pending) > len(starts):
            return self._global(ctx, starts)
        return Actions(starts=starts)

    def _catch_up(self, ctx: Context) -> None:
        """Bring the online allocator in step with the last global decision: give back
        what it evicted, charge what it started (still running now), then follow the
        engine — the same state a rebuild from scratch would give, without recompiling."""
        if ctx.health_changed:
            self.mirror.rebuild(ctx)
            return
        evicted, started = self.applied
        for name in evicted:
            self.mirror.release(name)
        for name in started:
            s = ctx.running.get(name)
            if s is not None and s.running is not None:
                self.mirror.hold(s.running)
        self.mirror.follow(ctx)

    def _global(self, ctx: Context, admitted: list[Start]) -> Actions:
        """``scheduler.decide`` over everything waiting, with what the online path just
        ``admitted`` running: the controller sees the webhook's admissions made."""
        snap = self.cluster.snapshot
        running = []
        for s in ctx.running.values():
            assert s.running is not None
            running.append(s.running)
        online = {a.job: a for a in admitted}
        for a in admitted:
            w = ctx.pending[a.job].job.workload
            running.append(
                Workload.model_construct(
                    **{
                        **w.__dict__,
                        "placement": a.placement,
                        "flavor": a.flavor,
                        "started": ctx.now,
                    }
                )
            )
        waiting = (s.job.workload for s in ctx.pending.values() if s.name not in online)
        snapshot = Snapshot.model_construct(
            gpu_models=snap.gpu_models,
            nodes=ctx.nodes(),
            queues=snap.queues,
            workloads=(*running, *waiting),
            now=ctx.now,
            prices=snap.prices,
        )
        decision = decide(
            snapshot, budget_ms=self.budget_ms, use_ilp=self.use_ilp, clock=self.clock
        )
        self.decisions += 1
        self.ilp_answers += decision.stats.path == "ilp"
        actions = Actions()
        evicted = []
        for e in decision.evictions:
            evicted.append(e.workload)
            # Evicting what the webhook admitted this instant: it is simply not started.
            if online.pop(e.workload, None) is None:
                actions.evictions.append((e.workload, e.reason.value))
        actions.starts.extend(online.values())
        started = []
        for d in decision.workloads:
            if d.outcome in (Outcome.ADMIT, Outcome.PREEMPT) and d.placement:
                actions.starts.append(Start(d.workload, d.placement, d.flavor))
                started.append(d.workload)
        self.stale = bool(started or evicted)
        # Its own admissions and evictions are changes too: the controller decides again.
        self.changed = self.stale
        self.applied = (evicted, started)
        return actions
