"""What a replay measures, recorded as the engine runs and summarized as plain JSON data.

Integrals (GPU-seconds used, lost, reserved-but-idle) are exact: the engine calls
``advance`` before it changes what is measured, and the state is constant in between. A
tick or a stale event that changes nothing calls nothing, so a run's measured span ends at
its last change (or at the horizon). Curves
(utilization, fairness, fragmentation, queue length) are sampled on a fixed grid of
simulated times. Percentiles are nearest-rank (the value at rank ⌈p·n⌉), so a test can
compute them by hand.

Fairness: at each sample, the *weighted fair share* of each queue that has work (running
or waiting) is the weighted max-min (water-filling) division of the healthy GPU capacity,
capped at what the queue asks for. Jain's index is taken over allocation ÷ fair share;
the deviation is Σ|allocation − fair share| ÷ capacity (0 = exactly fair).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from scheduler.catalog import MILLI_PER_GPU
from sim.cluster import Cluster
from sim.fragmentation import fragmentation, mix_of
from sim.job import Job
from sim.occupancy import Occupancy
from sim.policy import JobState, Phase

if TYPE_CHECKING:
    from sim.engine import Simulation

__all__ = ["Recorder", "fair_shares", "jain", "percentiles"]

PERCENTILES = (50, 95, 99)


def percentiles(values: Sequence[float]) -> dict[str, float]:
    """Nearest-rank p50/p95/p99, mean and count."""
    if not values:
        return {"count": 0}
    v = sorted(values)
    n = len(v)
    out: dict[str, float] = {"count": n, "mean": _r(sum(v) / n)}
    for p in PERCENTILES:
        out[f"p{p}"] = _r(v[max(0, math.ceil(p / 100 * n) - 1)])
    return out


def fair_shares(
    capacity: float, demand: dict[str, float], weight: dict[str, float]
) -> dict[str, float]:
    """Weighted max-min division of ``capacity`` among queues, each capped at its demand."""
    share = {q: 0.0 for q in demand}
    active = {q for q, d in demand.items() if d > 0}
    left = capacity
    while active and left > 1e-9:
        total_w = sum(weight[q] for q in active)
        step = min((demand[q] - share[q]) / weight[q] for q in active)
        step = min(step, left / total_w)
        for q in list(active):
            share[q] += step * weight[q]
            if demand[q] - share[q] <= 1e-9:
                active.discard(q)
        left -= step * total_w
    return share


def jain(values: Sequence[float]) -> float:
    """Jain's fairness index: 1 when all equal, 1/n when one gets everything."""
    if not values:
        return 1.0
    s = sum(values)
    sq = sum(x * x for x in values)
    return 1.0 if sq == 0 else (s * s) / (len(values) * sq)


def _r(x: float) -> float:
    return round(float(x), 6)


class Recorder:
    def __init__(
        self, cluster: Cluster, occupancy: Occupancy, jobs: Sequence[Job], samples: int, span: int
    ) -> None:
        self.occupancy = occupancy
        self.t = 0
        self.step = max(1, math.ceil(max(1, span) / max(1, samples)))
        self.next_sample = 0
        self.max_samples = 10 * max(1, samples)
        self.weight = {q.name: q.weight for q in cluster.snapshot.queues}
        self.mix = mix_of(jobs, occupancy.model_names)
        self.capacity_milli = occupancy.healthy_capacity_milli()
        self.alloc: dict[str, int] = {}
        self.waiting_demand: dict[str, int] = {}
        self.idle_rate = 0.0
        self.waiting = 0
        # integrals, milli-GPU-seconds
        self.used = 0.0
        self.capacity_integral = 0.0
        self.idle_reserved = 0.0
        self.free_while_waiting = 0.0
        self.lost = 0.0
        """Work the policy's evictions threw away (since the last checkpoint)."""
        self.lost_outages = 0.0
        """Work outage kills threw away: not the policy's doing, so kept apart."""
        self.preemptions = 0
        self.outage_kills = 0
        self.curve: dict[str, list[float]] = {
            "t": [],
            "utilization": [],
            "jain": [],
            "share_deviation": [],
            "fragmentation": [],
            "waiting": [],
        }
        self.jct: dict[tuple[str, str], list[int]] = {}
        self.delay: dict[tuple[str, str], list[int]] = {}
        self._finished: dict[tuple[str, int], tuple[list[int], list[int]]] = {}
        """(queue, priority) → its JCT and delay lists (found once, not per finished job)."""
        self.end = 0

    # ------------------------------------------------------------- callbacks
    def advance(self, t: int) -> None:
        """Integrate the state held since the last change up to ``t``."""
        if t == self.t:
            return
        while self.next_sample < t and len(self.curve["t"]) < self.max_samples:
            self._sample(self.next_sample)
            self.next_sample += self.step
        dt = t - self.t
        if dt > 0:
            used = self.occupancy.allocated_milli
            self.used += used * dt
            self.capacity_integral += self.capacity_milli * dt
            if self.waiting:
                self.idle_reserved += self.idle_rate * dt
                self.free_while_waiting += (self.capacity_milli - used) * dt
        self.t = t

    def on_arrive(self, s: JobState) -> None:
        self._wait(s, +1)

    def on_requeue(self, s: JobState) -> None:
        self._wait(s, +1)

    def on_start(self, s: JobState, sim: Simulation) -> None:
        job = s.job
        q = job.workload.queue
        self.waiting -= 1  # ``_wait`` spelled out: once per start
        self.waiting_demand[q] = self.waiting_demand.get(q, 0) - _demand_milli(job)
        milli = s.gpu_milli
        self.alloc[q] = self.alloc.get(q, 0) + milli
        self.idle_rate += milli * (1.0 - (s.util if s.util is not None else 1.0))

    def on_stop(
        self, s: JobState, sim: Simulation, finished: bool, outage: bool, lost_s: int
    ) -> None:
        w = s.job.workload
        q = w.queue
        self.alloc[q] -= s.gpu_milli
        self.idle_rate -= s.gpu_milli * (1.0 - (s.util if s.util is not None else 1.0))
        if finished:
            lists = self._finished.get((q, w.priority))
            if lists is None:
                key = (q, str(w.priority))
                lists = self._finished[(q, w.priority)] = (
                    self.jct.setdefault(key, []),
                    self.delay.setdefault(key, []),
                )
            lists[0].append(s.end - w.created)
            lists[1].append(s.first_start - w.created)
        elif outage:
            self.lost_outages += lost_s * s.gpu_milli
            self.outage_kills += 1
        else:
            self.lost += lost_s * s.gpu_milli
            self.preemptions += 1

    def on_util(self, s: JobState, util: float) -> None:
        if s.phase is Phase.RUNNING:
            old = 1.0 - (s.util if s.util is not None else 1.0)
            self.idle_rate += s.gpu_milli * ((1.0 - util) - old)

    def on_capacity(self, sim: Simulation) -> None:
        self.capacity_milli = self.occupancy.healthy_capacity_milli()

    def _wait(self, s: JobState, sign: int) -> None:
        self.waiting += sign
        q = s.job.workload.queue
        self.waiting_demand[q] = self.waiting_demand.get(q, 0) + sign * _demand_milli(s.job)

    # --------------------------------------------------------------- samples
    def _sample(self, t: int) -> None:
        occ = self.occupancy
        c = self.curve
        c["t"].append(t)
        cap = self.capacity_milli
        c["utilization"].append(_r(occ.allocated_milli / cap) if cap else 0.0)
        c["waiting"].append(self.waiting)
        queues = sorted(set(self.alloc) | set(self.waiting_demand))
        demand = {
            q: float(self.alloc.get(q, 0) + max(0, self.waiting_demand.get(q, 0))) for q in queues
        }
        weight = {q: self.weight.get(q, 1.0) for q in queues}
        fair = fair_shares(float(cap), demand, weight)
        active = [q for q in queues if demand[q] > 0 and fair[q] > 0]
        c["jain"].append(_r(jain([self.alloc.get(q, 0) / fair[q] for q in active])))
        dev = sum(abs(self.alloc.get(q, 0) - fair[q]) for q in queues)
        c["share_deviation"].append(_r(dev / cap) if cap else 0.0)
        c["fragmentation"].append(_r(self.fragmented_share()))

    def fragmented_share(self) -> float:
        """Share of the free GPU capacity that the trace's typical task cannot use."""
        occ = self.occupancy
        free = occ.usable_free()
        slots = np.where(occ.node_gpus >= 0, free[np.maximum(occ.node_gpus, 0)], -1)
        frag = fragmentation(slots, occ.free_cpu, occ.free_mem, occ.node_model, self.mix)
        total = float(np.maximum(slots, 0).sum())
        return float(frag.sum()) / total if total else 0.0

    # --------------------------------------------------------------- summary
    def finish(self, t: int) -> None:
        """End the run at ``t`` (at or after the last change)."""
        self.advance(t)
        self.end = t

    def summary(self, sim: Simulation) -> dict[str, Any]:
        states = sim.states
        finished = [s for s in states if s.phase is Phase.DONE]
        running = sum(s.phase is Phase.RUNNING for s in states)
        all_jct = [v for vs in self.jct.values() for v in vs]
        all_delay = [v for vs in self.delay.values() for v in vs]

        def grouped(data: dict[tuple[str, str], list[int]], index: int) -> dict[str, Any]:
            out: dict[str, list[int]] = {}
            for key, vs in data.items():
                out.setdefault(key[index], []).extend(vs)
            return {k: percentiles(out[k]) for k in sorted(out, key=_natural)}

        gpu_h = 1.0 / (MILLI_PER_GPU * 3600.0)
        curve = self.curve
        return {
            "jobs": len(states),
            "finished": len(finished),
            "unfinished": {
                # Arrived and waiting: a job's phase is 'waiting' before it arrives too.
                "waiting": self.waiting,
                "running": running,
                "not_arrived": len(states) - len(finished) - self.waiting - running,
            },
            "end_s": self.end,
            "jct_s": {
                "all": percentiles(all_jct),
                "by_queue": grouped(self.jct, 0),
                "by_priority": grouped(self.jct, 1),
            },
            "queueing_delay_s": {
                "all": percentiles(all_delay),
                "by_queue": grouped(self.delay, 0),
                "by_priority": grouped(self.delay, 1),
            },
            "utilization_mean": _r(self.used / self.capacity_integral)
            if self.capacity_integral
            else 0.0,
            "gpu_hours": {
                "used": _r(self.used * gpu_h),
                "capacity": _r(self.capacity_integral * gpu_h),
                "lost_to_preemption": _r(self.lost * gpu_h),
                "lost_to_outages": _r(self.lost_outages * gpu_h),
                "idle_reserved_while_waiting": _r(self.idle_reserved * gpu_h),
                "free_while_waiting": _r(self.free_while_waiting * gpu_h),
            },
            "preemptions": self.preemptions,
            "outage_kills": self.outage_kills,
            "fairness": {
                "jain_mean": _mean(curve["jain"]),
                "share_deviation_mean": _mean(curve["share_deviation"]),
            },
            "fragmentation_mean": _mean(curve["fragmentation"]),
            "curves": curve,
        }


def _mean(values: Sequence[float]) -> float:
    return _r(sum(values) / len(values)) if values else 0.0


def _natural(key: str) -> tuple[int, float | str]:
    try:
        return (0, float(key))
    except ValueError:
        return (1, key)


def _demand_milli(job: Job) -> int:
    d = job.workload.demand
    pods = job.workload.pods
    if d.gpus is not None:
        return d.gpus * MILLI_PER_GPU * pods
    if d.gpu_milli is not None:
        return d.gpu_milli * pods
    return MILLI_PER_GPU * pods  # MIG or memory-based: at most one GPU per pod
