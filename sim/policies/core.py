"""Apportion itself, as production runs it: ``greedy`` and ``apportion``.

``greedy`` is the core's online path alone (the webhook's ``IncrementalAllocator``):
each arrival is admitted if quota and placement allow, and when capacity frees the
waiting workloads are offered it again, higher priority then older first. No preemption.

``apportion`` adds the controller (design.md §4): the same online path for arrivals, and
a global ``scheduler.decide`` — the ILP with its greedy fallback, fair-share order,
reclaim and preemption — over everything waiting, at most every ``tick_s`` simulated
seconds while something waits and something changed. ``apportion-greedy`` is the same
controller with the ILP switched off (``decide(use_ilp=False)``).

The decision's solver budget is wall-clock time; a simulation that must be reproducible
passes a clock that does not advance (the default here), so the ILP is cut only by its
optimality gap and HiGHS's own time limit, never by how busy the machine is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from scheduler.allocator import decide
from scheduler.model import Snapshot
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
        "arrivals: core best-fit (as greedy); every tick: scheduler.decide — fair-share order, "
        "priority, age, name; ILP answer realized by the greedy cycle, lowest node index on ties"
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
        self.last_global = -(1 << 62)
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
        # A global decision can only help if capacity changed or new work is left waiting.
        self.changed |= bool(ctx.released or ctx.health_changed)
        due = ctx.now - self.last_global >= self.tick_s
        if ctx.pending and self.changed and due:
            return self._global(ctx)
        # Between global decisions: the webhook's online path for what just arrived.
        starts = []
        for s in _in_queue_order(ctx.arrived):
            w = s.job.workload
            start = None if self.memo.known_to_fail(w) else self.mirror.admit(s)
            if start is None:
                self.memo.add(w)
                self.changed = True
            else:
                starts.append(start)
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

    def _global(self, ctx: Context) -> Actions:
        # On the engine's tick grid: a decision made between ticks (at a release) must not
        # make the next tick look early, or, with no event left, nothing ever decides again.
        self.last_global = ctx.now - ctx.now % self.tick_s if self.tick_s else ctx.now
        self.changed = False
        snap = self.cluster.snapshot
        running = []
        for s in ctx.running.values():
            assert s.running is not None
            running.append(s.running)
        snapshot = Snapshot.model_construct(
            gpu_models=snap.gpu_models,
            nodes=ctx.nodes(),
            queues=snap.queues,
            workloads=(*running, *(s.job.workload for s in ctx.pending.values())),
            now=ctx.now,
            prices=snap.prices,
        )
        decision = decide(
            snapshot, budget_ms=self.budget_ms, use_ilp=self.use_ilp, clock=self.clock
        )
        self.decisions += 1
        self.ilp_answers += decision.stats.path == "ilp"
        actions = Actions(
            evictions=[(e.workload, e.reason.value) for e in decision.evictions],
        )
        for d in decision.workloads:
            if d.outcome in (Outcome.ADMIT, Outcome.PREEMPT) and d.placement:
                actions.starts.append(Start(d.workload, d.placement, d.flavor))
        self.stale = bool(actions.starts or actions.evictions)
        self.applied = ([name for name, _ in actions.evictions], [a.job for a in actions.starts])
        return actions
