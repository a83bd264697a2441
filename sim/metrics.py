"""What a replay measures, recorded as the engine runs and summarized as plain JSON data.

Integrals (GPU-seconds used, lost, kept, reserved-but-idle) are exact: the engine calls
``advance`` before it changes what is measured, and the state is constant in between. A
tick or a stale event that changes nothing calls nothing, so a run's measured span ends at
its last change (or at the horizon). The means of Jain's index, the fair-share deviation
and fragmentation are integrated the same way, over the whole run (time-weighted, exact).
Curves (utilization, fairness, fragmentation, queue length) are sampled on a grid over the
whole run: a step for about ``samples`` points over the run's length as the trace alone
bounds it (the same for every policy and seed, so their curves line up), doubled — every
other point dropped — whenever a longer run would pass ten times as many. Percentiles are
nearest-rank (the value at rank ⌈p·n⌉), so a test can compute them by hand.

Fairness: at each instant, the *weighted fair share* of each queue that has work (running
or waiting) is the weighted max-min (water-filling) division of the healthy GPU capacity,
capped at what the queue asks for. Jain's index is taken over allocation ÷ fair share;
the deviation is Σ|allocation − fair share| ÷ capacity (0 = exactly fair).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from operator import itemgetter
from typing import TYPE_CHECKING, Any

import numpy as np

from scheduler.catalog import MILLI_PER_GPU
from sim.cluster import Cluster
from sim.fragmentation import TaskMix, fragmentation, mix_of
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
        """``span``: the last arrival (the curves cover at least that long)."""
        self.occupancy = occupancy
        # From the first arrival: a trace's times start at 0, but a filter after loading
        # (Gavel's GPU types) may drop its first jobs, and the empty cluster before the
        # first one kept read as idle capacity.
        self.start = min((j.submit for j in jobs), default=0)
        self.t = self.start
        self.capacity_milli = occupancy.healthy_capacity_milli()
        self.demand_milli = occupancy.demand_milli
        """What a waiting job asks, measured as a running one holds (``Occupancy``)."""
        length = max(span, _trace_length(jobs, occupancy))
        self.step = max(1, math.ceil(length / max(1, samples)))
        self.next_sample = self.start
        self.max_samples = 10 * max(1, samples)
        self.weight = {q.name: q.weight for q in cluster.snapshot.queues}
        self.mix = mix_of(jobs, occupancy.model_names)
        self.fragmentation = _Fragmentation(occupancy, self.mix)
        self.alloc: dict[str, int] = {}
        self.waiting_demand: dict[str, int] = {}
        self.idle_rate = 0.0
        self.waiting = 0
        # integrals, milli-GPU-seconds
        self.used = 0.0
        self.capacity_integral = 0.0
        self.idle_reserved = 0.0
        self.free_while_waiting = 0.0
        # time integrals of Jain's index, the deviation (milli-GPU) and fragmentation
        self.jain_s = 0.0
        self.deviation_s = 0.0
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
        dt = t - self.t
        if dt <= 0:
            return
        if self.next_sample < t:
            self._sample(t)
        used = self.occupancy.allocated_milli
        self.used += used * dt
        self.capacity_integral += self.capacity_milli * dt
        if self.waiting:
            self.idle_reserved += self.idle_rate * dt
            self.free_while_waiting += (self.capacity_milli - used) * dt
            jain_index, deviation = self._fairness()
            self.jain_s += jain_index * dt
            self.deviation_s += deviation * dt
        else:  # every queue has what it asks for: Jain 1, deviation 0
            self.jain_s += dt
        self.fragmentation.held(dt)
        self.t = t

    def on_arrive(self, s: JobState) -> None:
        self._wait(s, +1)

    def on_requeue(self, s: JobState) -> None:
        self._wait(s, +1)

    def on_start(self, s: JobState, sim: Simulation) -> None:
        job = s.job
        q = job.workload.queue
        self.waiting -= 1  # ``_wait`` spelled out: once per start
        self.waiting_demand[q] = self.waiting_demand.get(q, 0) - self.demand_milli(job.workload)
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

    def on_capacity(self, node: str) -> None:
        self.capacity_milli = self.occupancy.healthy_capacity_milli()
        self.fragmentation.health_changed(node)

    def _wait(self, s: JobState, sign: int) -> None:
        self.waiting += sign
        q = s.job.workload.queue
        self.waiting_demand[q] = self.waiting_demand.get(q, 0) + sign * self.demand_milli(
            s.job.workload
        )

    # --------------------------------------------------------------- samples
    def _sample(self, t: int) -> None:
        """The grid's points before ``t``: all of them see the state held until ``t``."""
        cap = self.capacity_milli
        jain_index, deviation = self._fairness()
        point = {
            "utilization": _r(self.occupancy.allocated_milli / cap) if cap else 0.0,
            "jain": _r(jain_index),
            "share_deviation": _r(deviation),
            "fragmentation": _r(self.fragmentation.share()),
            "waiting": self.waiting,
        }
        c = self.curve
        while self.next_sample < t:
            if len(c["t"]) == self.max_samples:  # thinned: the curve covers the whole run
                for values in c.values():
                    del values[1::2]
                self.step *= 2
            c["t"].append(self.next_sample)
            for key, value in point.items():
                c[key].append(value)
            self.next_sample += self.step

    def _fairness(self) -> tuple[float, float]:
        """Jain's index over allocation ÷ fair share, and Σ|allocation − fair share| ÷
        capacity, now."""
        cap = self.capacity_milli
        queues = sorted(set(self.alloc) | set(self.waiting_demand))
        demand = {
            q: float(self.alloc.get(q, 0) + max(0, self.waiting_demand.get(q, 0))) for q in queues
        }
        weight = {q: self.weight.get(q, 1.0) for q in queues}
        fair = fair_shares(float(cap), demand, weight)
        active = [q for q in queues if demand[q] > 0 and fair[q] > 0]
        jain_index = jain([self.alloc.get(q, 0) / fair[q] for q in active])
        deviation = sum(abs(self.alloc.get(q, 0) - fair[q]) for q in queues)
        return jain_index, deviation / cap if cap else 0.0

    def fragmented_share(self) -> float:
        """Share of the free GPU capacity that the trace's typical task cannot use, now
        (the fill experiment changes the occupancy without the callbacks: the occupancy
        itself records the nodes it changed)."""
        return self.fragmentation.share()

    # --------------------------------------------------------------- summary
    def finish(self, t: int) -> None:
        """End the run at ``t`` (at or after the last change)."""
        self.advance(t)
        self.fragmentation.flush()
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
        kept = self.used - self.lost - self.lost_outages
        curve = self.curve
        span = max(0, self.end - self.start)
        return {
            "jobs": len(states),
            "finished": len(finished),
            "unfinished": {
                # Arrived and waiting: a job's phase is 'waiting' before it arrives too.
                "waiting": self.waiting,
                "running": running,
                "not_arrived": len(states) - len(finished) - self.waiting - running,
            },
            "start_s": self.start,
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
            # Allocation a preemption or node failure threw away later lifts utilization
            # but did no work: goodput counts only the work kept.
            "goodput_mean": _r(kept / self.capacity_integral) if self.capacity_integral else 0.0,
            "gpu_hours": {
                "used": _r(self.used * gpu_h),
                "kept": _r(kept * gpu_h),
                "capacity": _r(self.capacity_integral * gpu_h),
                "lost_to_preemption": _r(self.lost * gpu_h),
                "lost_to_outages": _r(self.lost_outages * gpu_h),
                "idle_reserved_while_waiting": _r(self.idle_reserved * gpu_h),
                "free_while_waiting": _r(self.free_while_waiting * gpu_h),
            },
            "preemptions": self.preemptions,
            "outage_kills": self.outage_kills,
            "fairness": {
                "jain_mean": _r(self.jain_s / span) if span else 1.0,
                "share_deviation_mean": _r(self.deviation_s / span) if span else 0.0,
            },
            "fragmentation_mean": _r(self.fragmentation.integral / span) if span else 0.0,
            "curves": curve,
        }


def _natural(key: str) -> tuple[int, float | str]:
    try:
        return (0, float(key))
    except ValueError:
        return (1, key)


def _trace_length(jobs: Sequence[Job], occupancy: Occupancy) -> int:
    """How long a run of these jobs lasts at least, as the trace alone tells: its longest
    job from its arrival, and all its GPU-time over the cluster's capacity."""
    longest = 0
    work = 0
    for job in jobs:
        seconds = job.seconds_for(job.work, job.default_rate)
        longest = max(longest, job.submit + seconds)
        work += occupancy.demand_milli(job.workload) * seconds
    return max(longest, work // max(1, occupancy.healthy_capacity_milli()))


class _Fragmentation:
    """The share of free GPU capacity the trace's typical task cannot use (the FGD paper's
    measure, ``sim.fragmentation``), kept per node and integrated over time.

    Measuring the whole cluster at each change would cost a numpy pass over every node per
    event. Instead a node is measured again only after it changed (``Occupancy.
    changed_nodes``): when the state that follows is first held, its free milli per GPU are
    read from the occupancy's own list (``Occupancy.free_milli``, one ``itemgetter`` call
    per node: no numpy per event) with its free CPU and memory, and these readings are
    measured thousands at a time (a few numpy calls), each span held adding the share the
    readings before it give × its seconds."""

    def __init__(self, occupancy: Occupancy, mix: TaskMix) -> None:
        self.occupancy = occupancy
        self.mix = mix
        nodes = len(occupancy.node_names)
        self.frag = np.zeros(nodes)
        """Fragmented milli-GPU per node, as last measured."""
        self.free = np.zeros(nodes, dtype=np.int64)
        """Usable free milli-GPU per node, as last measured."""
        self.frag_sum = 0.0
        self.free_sum = 0
        self.integral = 0.0
        """Share × seconds held."""
        self.usable = occupancy.gpu_healthy & ~occupancy.gpu_mig
        self.slot_gpu = np.maximum(occupancy.node_gpus, 0)
        """Global GPU id per node and slot (GPU 0 in the slots that pad short nodes)."""
        self._read = [itemgetter(*row) for row in self.slot_gpu.tolist()]
        """Per node: its slots' free milli out of ``Occupancy.free_milli`` (a tuple; a
        plain int when nodes have one slot)."""
        self.dirty = occupancy.changed_nodes
        """The occupancy's own record of the nodes it changed, emptied when they are read;
        every node at first."""
        self.dirty.update(range(nodes))
        self._nodes: list[int] = []
        self._milli: list[int] = []
        self._cpu: list[int] = []
        self._mem: list[int] = []
        """Free milli in the GPU slots (``slot_gpu``'s width per node, flat), CPU and
        memory of the nodes in ``_nodes``, read when changed, not yet measured: flat lists
        of numbers, each an array in one call."""
        self._add_milli = self._milli.extend if self.slot_gpu.shape[1] > 1 else self._milli.append
        self._upto: list[int] = []
        self._seconds: list[int] = []
        """Per span held, not yet integrated: the readings before it, and its seconds."""

    def health_changed(self, node: str) -> None:
        occ = self.occupancy
        self.flush()  # the readings so far are of GPUs usable or not as before
        self.usable = occ.gpu_healthy & ~occ.gpu_mig
        self.dirty.add(occ.node_index[node])

    def held(self, seconds: int) -> None:
        """The current state was held for ``seconds``."""
        if self.dirty:
            self._read_changed()
        self._upto.append(len(self._nodes))
        self._seconds.append(seconds)
        if len(self._upto) >= _BATCH or len(self._nodes) >= _BATCH:
            self.flush()

    def share(self) -> float:
        """The share now."""
        if self.dirty:
            self._read_changed()
        self.flush()
        return max(0.0, self.frag_sum) / self.free_sum if self.free_sum > 0 else 0.0

    def _read_changed(self) -> None:
        """Read the changed nodes' free milli per GPU slot, CPU and memory (masked when
        measured)."""
        occ = self.occupancy
        free, cpu, mem, read = occ.free_milli, occ.free_cpu, occ.free_mem, self._read
        add_milli = self._add_milli
        for n in self.dirty:
            add_milli(read[n](free))
            self._cpu.append(cpu[n])
            self._mem.append(mem[n])
        self._nodes.extend(self.dirty)
        self.dirty.clear()

    def flush(self) -> None:
        """Measure the readings and integrate the spans held, in order."""
        if not self._upto and not self._nodes:
            return
        frag_sum, free_sum = np.array([self.frag_sum]), np.array([self.free_sum])
        if self._nodes:
            occ = self.occupancy
            nodes = np.array(self._nodes, dtype=np.intp)
            free_milli = np.array(self._milli, dtype=np.int64).reshape(len(nodes), -1)
            free_cpu = np.array(self._cpu, dtype=np.int64)
            free_mem = np.array(self._mem, dtype=np.int64)
            # As ``Occupancy.usable_free``: failed and MIG GPUs count 0; -1 pads short nodes.
            slots = np.where(
                occ.node_gpus[nodes] < 0,
                -1,
                np.where(self.usable[self.slot_gpu[nodes]], free_milli, 0),
            )
            frag = fragmentation(slots, free_cpu, free_mem, occ.node_model[nodes], self.mix)
            free = np.maximum(slots, 0).sum(axis=1)
            # Each reading replaces its node's value before it: the previous reading of the
            # same node in this batch, or the value kept from before. The sums after each
            # reading are then cumulative sums of the differences.
            order = np.argsort(nodes, kind="stable")
            ranked = nodes[order]
            same = np.zeros(len(nodes), dtype=bool)  # as the reading ranked before it
            same[1:] = ranked[1:] == ranked[:-1]
            before = np.empty(len(nodes), dtype=np.intp)
            before[order] = np.where(same, np.roll(order, 1), -1)
            had = before >= 0
            old_frag = np.where(had, frag[before], self.frag[nodes])
            old_free = np.where(had, free[before], self.free[nodes])
            frag_sum = np.concatenate((frag_sum, frag_sum[0] + np.cumsum(frag - old_frag)))
            free_sum = np.concatenate((free_sum, free_sum[0] + np.cumsum(free - old_free)))
            last = order[np.append(~same[1:], True)]  # each node's last reading
            self.frag[nodes[last]] = frag[last]
            self.free[nodes[last]] = free[last]
        if self._upto:
            upto = np.array(self._upto, dtype=np.intp)
            seconds = np.array(self._seconds, dtype=np.float64)  # times may pass 2**63
            held = free_sum[upto]
            share = np.maximum(frag_sum[upto], 0.0) / np.maximum(held, 1)
            self.integral += float(np.dot(np.where(held > 0, share, 0.0), seconds))
        # Summed afresh: running sums of floats would drift over a million changes.
        self.frag_sum, self.free_sum = float(self.frag.sum()), int(self.free.sum())
        for pending in (self._nodes, self._milli, self._cpu, self._mem, self._upto, self._seconds):
            pending.clear()


_BATCH = 4096
"""Node readings or spans held before they are measured together."""
