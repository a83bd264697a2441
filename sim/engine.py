"""The discrete-event engine: a virtual clock, an event heap, and one policy.

The recorder measures the state held since the last change just before each change (an
arrival, a start or stop, a node's health, a running job's utilization), so a tick or a
stale completion that changes nothing measures nothing, and a run ends at its last
completion (at the horizon if that leaves work unfinished).

Events are ordered by (time, priority, sequence number), SimPy's rule, so the same trace,
settings and seed give the same run, byte for byte. At equal times completions come
first (their capacity is free for what arrives at that instant), then recoveries,
outages, metric changes, arrivals, the scheduling tick, and last the drawing of more
random failures. After all events of one instant are applied the policy is called (every
instant with ``interval`` = 0, and also every ``Policy.tick_s`` seconds while work waits
for a policy that asks; otherwise at 0, ``interval``, 2 × ``interval``, … simulated
seconds while work waits, the same grid for every policy), and its evictions and starts
are applied and checked against the cluster's occupancy.

A preempted or killed job goes back to the queue and keeps only the work done up to its
last checkpoint (every ``checkpoint_s`` seconds of running; 0 = it restarts from zero).
A job's speed is its rate on the GPU models it got (``Job.rate_on``). Random node
failures (``Failures``) are drawn as the run goes, over its whole length.
"""

from __future__ import annotations

import hashlib
import heapq
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from enum import IntEnum
from typing import cast

from scheduler import collector
from scheduler.catalog import MILLI_PER_GPU
from scheduler.model import Gpu, Node
from sim.cluster import Cluster
from sim.events import MAX_OUTAGES, Outage, Utilization, random_outages
from sim.job import Job
from sim.metrics import Recorder
from sim.occupancy import Occupancy, SimulationError
from sim.policy import Actions, Context, JobState, Phase, Policy

__all__ = ["EngineSettings", "Failures", "Simulation", "run"]


class _Kind(IntEnum):
    COMPLETE = 0
    RECOVER = 1
    OUTAGE = 2
    METRIC = 3
    ARRIVE = 4
    TICK = 5
    FAILURES = 6
    """Draw the next window of random failures."""


# Enum members the event loop reads, as module globals: ``_Kind.ARRIVE`` goes through the
# enum's metaclass and costs several times a global's read, and the loop reads a handful
# per event.
_ARRIVE, _COMPLETE, _TICK = _Kind.ARRIVE, _Kind.COMPLETE, _Kind.TICK
_WAITING, _RUNNING, _DONE = Phase.WAITING, Phase.RUNNING, Phase.DONE
_COMPLETE_ORDER = int(_Kind.COMPLETE)
_PROGRESS_EVERY_S = 0.25


@dataclass(frozen=True, slots=True)
class EngineSettings:
    interval: int = 0
    """Call the policy every this many simulated seconds, and only then, whatever its own
    ``tick_s``; 0 = after every event instant (and every ``tick_s`` while work waits)."""
    checkpoint_s: int = 0
    """A preempted job keeps the work up to its last checkpoint; 0 = no checkpoints."""
    horizon: int | None = None
    """Stop at this simulated time: a run with work left then ends there (jobs still waiting
    or running are reported); one that finishes before ends at its last completion."""
    samples: int = 200
    """About this many points on the utilization/fairness/fragmentation curves (up to ten
    times as many on a run far longer than its trace suggests, thinned beyond that)."""


@dataclass(frozen=True, slots=True)
class Failures:
    """Random node failures: each node fails after an exponential time with mean ``mtbf_s``
    and is back ``mttr_s`` later (``sim.events.random_outages``), over the whole run.

    How long the run lasts is known only at its end, so they are drawn as it goes, a window
    at a time: the trace's arrival span, or one failure and repair if longer, each window
    with a seed of its own derived from ``seed``. Failures only kill running jobs, so a
    window is drawn only while one runs; with none running the next is drawn at the next
    start (exponential gaps have no memory). Work that can never run thus leaves the run
    to end. Work killed over and over for ever would not: without a horizon, a job that
    must run far longer than the time between failures to finish or reach a checkpoint is
    refused up front, and a run that draws ``MAX_OUTAGES`` failures stops with an error."""

    mtbf_s: float
    mttr_s: int
    seed: int


@dataclass(slots=True)
class _Pending:
    arrived: list[JobState] = field(default_factory=list)
    released: list[JobState] = field(default_factory=list)
    health_changed: bool = False


class Simulation:
    """One run of one policy over one trace on one cluster."""

    def __init__(
        self,
        cluster: Cluster,
        jobs: Sequence[Job],
        policy: Policy,
        settings: EngineSettings = EngineSettings(),
        outages: Sequence[Outage] = (),
        metrics: Sequence[Utilization] = (),
        progress: Callable[[float], None] | None = None,
        failures: Failures | None = None,
    ) -> None:
        self.cluster = cluster
        self.policy = policy
        self.settings = settings
        self.occupancy = Occupancy(cluster.snapshot.nodes, cluster.catalog)
        jobs = [_catalog_rates(job, cluster) for job in jobs]
        self.states = [JobState(job, util=job.gpu_util) for job in jobs]
        self.by_name = {s.name: s for s in self.states}
        if len(self.by_name) != len(self.states):
            raise ValueError("job names must be unique")
        self.pending: dict[str, JobState] = {}
        self.running: dict[str, JobState] = {}
        self.heap: list[tuple[int, int, int, _Kind, object]] = []
        self._seq = 0
        self.now = 0
        self.events = 0
        self._changes = _Pending()
        self._down: dict[str, int] = {}
        """Node → number of outages in progress (overlapping outages nest)."""
        self._nodes_cache: tuple[Node, ...] | None = cluster.snapshot.nodes
        self._progress = progress
        self._finished = 0
        # Arrivals are known up front: a sorted list merged with the heap (same order as
        # pushing them all, a heap of what runs instead of the whole trace).
        self.arrivals: list[tuple[int, int, int, _Kind, object]] = sorted(
            (s.job.submit, int(_Kind.ARRIVE), i, _Kind.ARRIVE, i) for i, s in enumerate(self.states)
        )
        self._next_arrival = 0
        self._seq = len(self.states)
        for o in outages:
            if o.node not in self.occupancy.node_index:
                raise ValueError(f"outage at {o.at}: node {o.node!r} is not in the cluster")
            self._push(o.at, _Kind.OUTAGE, o)
        for m in metrics:
            if m.job not in self.by_name:
                raise ValueError(f"metric at {m.at}: job {m.job!r} is not in the trace")
            self._push(m.at, _Kind.METRIC, m)
        span = max((j.submit for j in jobs), default=0)
        self.recorder = Recorder(cluster, self.occupancy, jobs, settings.samples, span)
        # One calling grid for every policy: with an interval, its grid alone (a policy's
        # own period cannot call it more often than the others); without, every event
        # instant, plus the policy's own period (apportion's periodic decision).
        self._tick_s = settings.interval or policy.tick_s
        self._ticking = self._tick_s > 0
        self._tick_queued = False
        self.outages = 0
        """Outages that began during the run, given or drawn."""
        self._failures = failures
        self._window = (
            0 if failures is None else max(span + 1, math.ceil(failures.mtbf_s + failures.mttr_s))
        )
        self._windows = 0
        self._drawn = 0
        self._failures_paused = False
        if failures is not None:
            self._draw_failures()  # refused before any is drawn if the first window is too many
            if settings.horizon is None:
                _refuse_endless(jobs, settings.checkpoint_s, failures)

    # ------------------------------------------------------------------ heap
    def _push(self, at: int, kind: _Kind, payload: object) -> None:
        heapq.heappush(self.heap, (at, int(kind), self._seq, kind, payload))
        self._seq += 1

    def _draw_failures(self) -> None:
        """The next window of random failures, from now (ValueError past ``MAX_OUTAGES``)."""
        f = self._failures
        assert f is not None
        nodes = [n.name for n in self.cluster.snapshot.nodes]
        seed = _window_seed(f.seed, self._windows)
        drawn = random_outages(nodes, self._window, f.mtbf_s, f.mttr_s, seed)
        self._windows += 1
        self._drawn += len(drawn)
        if self._drawn >= MAX_OUTAGES:
            raise ValueError(
                f"a mean time between failures of {f.mtbf_s / 3600:g} h (--mtbf-hours) makes "
                f"more than {MAX_OUTAGES:,} node failures by {self.now + self._window:,} s, "
                "and the run goes on (each kills and requeues the jobs on its node): give a "
                "longer mean time between failures, --checkpoint or --horizon"
            )
        for o in drawn:
            self._push(self.now + o.at, _Kind.OUTAGE, replace(o, at=self.now + o.at))
        self._push(self.now + self._window, _Kind.FAILURES, None)

    def _queue_tick(self) -> None:
        if self._ticking and not self._tick_queued:
            step = self._tick_s
            self._push((self.now // step + 1) * step, _Kind.TICK, None)
            self._tick_queued = True

    # ------------------------------------------------------------------ loop
    def run(self) -> Recorder:
        """Run to the end (or the horizon).

        What exists when the run starts — the trace's jobs, their states, the compiled
        cluster — lives through it, so it is kept out of the garbage collector's passes
        (``scheduler.collector.frozen_meanwhile``): each full pass would otherwise walk a
        million jobs again, a tenth of a large replay."""
        with collector.frozen_meanwhile():
            return self._run()

    def _run(self) -> Recorder:
        total = max(1, 2 * len(self.states))
        done = 0
        # By the clock, not by event count: a demo run's few thousand events take 20 s, and
        # a report every 4,096 events drew 0 % and then 100 %.
        next_report = 0.0
        horizon = self.settings.horizon
        heap, arrivals = self.heap, self.arrivals
        # After any time: trace times are ints of any size (1 << 63 was taken for an arrival).
        end = (math.inf, 0, 0, _Kind.ARRIVE, None)
        while heap or self._next_arrival < len(arrivals):
            arrival = arrivals[self._next_arrival] if self._next_arrival < len(arrivals) else end
            # ``end`` is only compared: with no arrival left, the heap holds the next event.
            at = cast(int, min(heap[0][0], arrival[0]) if heap else arrival[0])
            if horizon is not None and at > horizon:
                break
            self.now = at
            tick = False
            while True:
                if heap and heap[0] < arrival:  # (time, kind, sequence): sequences are unique
                    if heap[0][0] != at:
                        break
                    _, _, _, kind, payload = heapq.heappop(heap)
                elif arrival[0] == at:
                    _, _, _, kind, payload = arrival
                    self._next_arrival += 1
                    i = self._next_arrival
                    arrival = arrivals[i] if i < len(arrivals) else end
                else:
                    break
                self.events += 1
                if kind is _TICK:
                    self._tick_queued = False
                    tick = True
                else:
                    done += kind is _ARRIVE
                    self._apply(kind, payload)
            acted = False
            # With an interval the policy is called on its grid (0, N, 2N, …) while work
            # waits: by the tick queued for it, or here when work arrives on a grid instant
            # (a queued tick always lies after the instant that queued it).
            if tick or self.settings.interval == 0 or (self.pending and at % self._tick_s == 0):
                acted = self._schedule()
            # Tick while work waits and something can still change: events lie ahead, the
            # last call acted, or no call has seen the latest changes yet (with an interval:
            # a job arriving between ticks). Work that can never run would otherwise tick
            # forever. With nothing waiting, the next arrival is the next scheduling point.
            changes = self._changes
            unseen = bool(changes.arrived or changes.released or changes.health_changed)
            events_ahead = bool(heap) or self._next_arrival < len(arrivals)
            if (
                self._ticking
                and not self._tick_queued
                and self.pending
                and (events_ahead or acted or unseen)
            ):
                self._queue_tick()
            if self._finished == len(self.states):
                break  # the run ends at its last completion: what is left (ticks) is moot
            if self._progress is not None and time.monotonic() >= next_report:
                # Arrivals and completions: the queue drains long after the last arrival.
                self._progress(min(1.0, (done + self._finished) / total))
                next_report = time.monotonic() + _PROGRESS_EVERY_S
        # At its last change; at the horizon if that leaves work unfinished.
        unfinished = self._finished < len(self.states)
        self.recorder.finish(horizon if horizon is not None and unfinished else self.recorder.t)
        if self._progress is not None:
            self._progress(1.0)
        return self.recorder

    def _apply(self, kind: _Kind, payload: object) -> None:
        if kind is _ARRIVE:
            assert isinstance(payload, int)
            self.recorder.advance(self.now)
            s = self.states[payload]
            self.pending[s.name] = s
            self._changes.arrived.append(s)
            self.recorder.on_arrive(s)
        elif kind is _COMPLETE:
            assert isinstance(payload, tuple)
            s, done_run = payload  # the job itself: no lookup among a million names
            if s.phase is _RUNNING and s.run_id == done_run:
                self._finished += 1
                self._stop(s, finished=True)
                self._changes.released.append(s)
        elif kind is _Kind.OUTAGE:
            assert isinstance(payload, Outage)
            self._outage(payload)
        elif kind is _Kind.RECOVER:
            assert isinstance(payload, str)
            self._down[payload] -= 1
            if not self._down[payload]:
                self.recorder.advance(self.now)
                del self._down[payload]
                self.occupancy.set_node_health(payload, True)
                self._nodes_cache = None
                self._changes.health_changed = True
                self.recorder.on_capacity(payload)
        elif kind is _Kind.FAILURES:
            if self.running:
                self._draw_failures()
            else:
                self._failures_paused = True  # drawn again at the next start
        elif kind is _Kind.METRIC:
            assert isinstance(payload, Utilization)
            s = self.by_name[payload.job]
            if s.phase is _RUNNING:
                self.recorder.advance(self.now)
            self.recorder.on_util(s, payload.util)
            s.util = payload.util

    def _outage(self, outage: Outage) -> None:
        self.outages += 1
        node = outage.node
        first = node not in self._down
        self._down[node] = self._down.get(node, 0) + 1
        self._push(outage.at + outage.duration, _Kind.RECOVER, node)
        if not first:
            return
        self.recorder.advance(self.now)
        victims = [s for s in self.running.values() if any(p.node == node for p in s.placement)]
        for s in victims:
            self._stop(s, finished=False, outage=True)
            self._requeue(s)
            self._changes.released.append(s)
            self._changes.arrived.append(s)
        self.occupancy.set_node_health(node, False)
        self._nodes_cache = None
        self._changes.health_changed = True
        self.recorder.on_capacity(node)

    # ------------------------------------------------------------- policy
    def _schedule(self) -> bool:
        """Call the policy and apply its actions; True if it started or evicted anything."""
        changes, self._changes = self._changes, _Pending()
        ctx = Context(
            now=self.now,
            cluster=self.cluster,
            occupancy=self.occupancy,
            pending=self.pending,
            running=self.running,
            arrived=changes.arrived,
            released=changes.released,
            health_changed=changes.health_changed,
            nodes=self.current_nodes,
        )
        actions = self.policy.schedule(ctx)
        self._act(actions)
        return bool(actions.starts or actions.evictions)

    def _act(self, actions: Actions) -> None:
        for name, _reason in actions.evictions:
            s = self.by_name.get(name)
            if s is None or s.phase is not _RUNNING:
                raise SimulationError(f"policy {self.policy.name} evicts {name}, not running")
            self._stop(s, finished=False)
            self._requeue(s)
        for start in actions.starts:
            s = self.by_name.get(start.job)
            if s is None or s.phase is not _WAITING or start.job not in self.pending:
                raise SimulationError(f"policy {self.policy.name} starts {start.job}, not waiting")
            self._start(s, start.placement, start.flavor)

    def current_nodes(self) -> tuple[Node, ...]:
        """Nodes with GPUs of failed nodes marked unhealthy (rebuilt only after a change)."""
        if self._nodes_cache is None:
            nodes = []
            for node in self.cluster.snapshot.nodes:
                if node.name in self._down:
                    gpus = tuple(
                        Gpu.model_construct(
                            **{**g.__dict__, "healthy": False, "health_reason": "node down"}
                        )
                        for g in node.gpus
                    )
                    node = Node.model_construct(**{**node.__dict__, "gpus": gpus})
                nodes.append(node)
            self._nodes_cache = tuple(nodes)
        return self._nodes_cache

    # ---------------------------------------------------------- transitions
    def _start(self, s: JobState, placement: tuple, flavor: str | None) -> None:  # type: ignore[type-arg]
        self.recorder.advance(self.now)
        if self._failures_paused:
            self._failures_paused = False
            self._draw_failures()
        job = s.job
        w = job.workload
        name = w.name
        occ = self.occupancy
        occ.start(w, placement)
        del self.pending[name]
        self.running[name] = s
        now = self.now
        s.phase = _RUNNING
        s.placement = placement
        s.last_placement = placement
        s.flavor = flavor
        s.started = now
        if s.first_start < 0:
            s.first_start = now
        s.run_id += 1
        if job.rates:
            models = frozenset(
                occ.model_names[int(occ.gpu_model[g])] for p in placement for g in occ.gpus_of(p)
            )
            s.rate = job.rate_on(models)
        else:  # the same on every model: no need to look them up
            s.rate = job.default_rate
        milli = 0
        for p in placement:
            if p.mig_start is not None:
                milli += round(occ.mig_layout[occ.gpus_of(p)[0]][p.mig_start] * MILLI_PER_GPU)
            else:
                milli += (p.milli or MILLI_PER_GPU) * len(p.gpus)
        s.gpu_milli = milli
        s.view = None
        at = now + job.seconds_for(job.work - s.done_work, s.rate)
        # ``_push`` spelled out: one per start.
        heapq.heappush(self.heap, (at, _COMPLETE_ORDER, self._seq, _COMPLETE, (s, s.run_id)))
        self._seq += 1
        self.recorder.on_start(s, self)

    def _stop(self, s: JobState, finished: bool, outage: bool = False) -> None:
        self.recorder.advance(self.now)
        w = s.job.workload
        self.occupancy.release(s.placement, w.cpu_milli, w.memory_mib)
        del self.running[s.name]
        ran = self.now - s.started
        kept = ran
        if finished:
            s.phase = _DONE
            s.end = self.now
            s.done_work = s.job.work
        else:
            c = self.settings.checkpoint_s
            kept = (ran // c) * c if c > 0 else 0
            s.done_work = min(s.job.work, s.done_work + kept * s.rate)
            s.lost_gpu_s += (ran - kept) * s.gpu_milli / MILLI_PER_GPU
            s.preemptions += 1
            s.earlier_runs += ((s.started, self.now, s.gpu_milli),)
        self.recorder.on_stop(s, self, finished, outage, (ran - kept) if not finished else 0)
        s.placement = ()
        s.view = None
        s.flavor = None

    def _requeue(self, s: JobState) -> None:
        s.phase = _WAITING
        self.pending[s.name] = s
        self.recorder.on_requeue(s)


def _refuse_endless(jobs: Sequence[Job], checkpoint_s: int, failures: Failures) -> None:
    """ValueError when the longest stretch a job must run unbroken (to its end, or to its
    next checkpoint) would take about ``MAX_OUTAGES`` tries or more even on one node: each
    try ends with a failure, and the run would not end before that many."""
    longest = max((j.seconds_for(j.work, j.default_rate) for j in jobs), default=0)
    stretch = min(longest, checkpoint_s) if checkpoint_s > 0 else longest
    exponent = stretch / failures.mtbf_s  # a stretch is unbroken with chance e^-exponent
    if exponent >= math.log(MAX_OUTAGES):
        between = "between checkpoints" if stretch < longest else "without a checkpoint"
        raise ValueError(
            f"a job runs {stretch:,} s {between}: with a node failure every "
            f"{failures.mtbf_s / 3600:g} h (--mtbf-hours) it would take about "
            f"{math.exp(min(exponent, 700.0)):.1e} tries to get through, each ended by a "
            f"failure, and at most {MAX_OUTAGES:,} are drawn: give a longer mean time between "
            "failures, --checkpoint or --horizon"
        )


def _window_seed(seed: int, window: int) -> int:
    """The seed of a window of random failures: the same for the same run seed and window."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{window}".encode()).digest()[:8], "big")


def _catalog_rates(job: Job, cluster: Cluster) -> Job:
    """Rates keyed by catalog names (a trace may write an alias: ``H100``)."""
    if not job.rates:
        return job
    catalog = cluster.catalog
    rates = tuple(
        sorted(((m.name if (m := catalog.get(name)) else name), rate) for name, rate in job.rates)
    )
    return replace(job, rates=rates)


def run(
    cluster: Cluster,
    jobs: Sequence[Job],
    policy: Policy,
    settings: EngineSettings = EngineSettings(),
    outages: Sequence[Outage] = (),
    metrics: Sequence[Utilization] = (),
    progress: Callable[[float], None] | None = None,
    failures: Failures | None = None,
) -> Simulation:
    """Run to the end (or the horizon) and return the finished simulation."""
    sim = Simulation(cluster, jobs, policy, settings, outages, metrics, progress, failures)
    sim.run()
    return sim
