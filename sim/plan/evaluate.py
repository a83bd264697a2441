"""One candidate through the simulator: the numbers the SLOs, plots and advice need.

Runs in a worker process (``search``), so its input and output are plain, picklable
values. A job that never started could not: the replay ends when no event is left. Its
wait ranks above every started job's, as an endless wait would, so a goal misses where its
percentile (or mean) rests on such a job, however short the wait it had when the replay
ended (a gang arriving last, too large for the cluster, "waited 0 s", and a cluster that
never ran it met p99). That wait is still what the value shows, to rank options by.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from scheduler.catalog import MILLI_PER_GPU
from scheduler.model import flavor_of_mig
from sim.cluster import Cluster
from sim.engine import EngineSettings, run
from sim.job import Job
from sim.plan.slo import Slo, nearest_rank, percentile
from sim.policies import PolicyOptions, make_policy
from sim.policy import Phase
from sim.pool import report

__all__ = ["EvalTask", "evaluate", "slo_values"]

_BINS = 48


@dataclass(frozen=True)
class EvalTask:
    label: str
    cluster: Cluster
    jobs: tuple[Job, ...]
    slos: tuple[Slo, ...]
    policy: str = "apportion"
    seed: int = 0
    options: PolicyOptions = field(default_factory=PolicyOptions)


Wait = tuple[str, int, float, float, bool]
"""(queue, priority, wait_s, jct_s, never started) of one job."""


def slo_values(
    slos: Sequence[Slo], waits: Sequence[Wait], utilization: float
) -> tuple[list[float | None], list[int]]:
    """Each SLO's measured value, and the jobs in its scope that never started where that
    value rests on them (else 0: a p95 is met with 1 % of jobs never started)."""
    values: list[float | None] = []
    never: list[int] = []
    for slo in slos:
        if slo.metric == "utilization":
            values.append(utilization)
            never.append(0)
            continue
        stat, quantity = slo.metric.split("_")
        rows = sorted(
            (row[4], row[2] if quantity == "wait" else row[3])
            for row in waits
            if slo.selects(row[0], row[1])
        )  # the jobs that never started last, as endless waits would be
        stranded = sum(unstarted for unstarted, _ in rows)
        if not rows:
            values.append(None)
            never.append(0)
        elif stat == "mean":
            values.append(sum(v for _, v in rows) / len(rows))
            never.append(stranded)
        else:
            unstarted, value = rows[nearest_rank(len(rows), stat)]
            values.append(float(value))
            never.append(stranded if unstarted else 0)
    return values, never


def evaluate(task: EvalTask) -> dict[str, Any]:
    """Simulate ``task.cluster`` and measure it (JSON-ready; no wall-clock times)."""
    policy = make_policy(task.policy, task.cluster, task.jobs, task.seed, task.options)
    # How far it is, for the progress line: one simulation of a long demand takes minutes.
    progress = partial(report, task.label)
    sim = run(task.cluster, task.jobs, policy, EngineSettings(samples=_BINS * 2), progress=progress)
    summary = sim.recorder.summary(sim)
    end = max(1, summary["end_s"])
    waits: list[Wait] = []
    for s in sim.states:
        w = s.job.workload
        started = s.first_start if s.first_start >= 0 else end
        finished = s.end if s.phase is Phase.DONE else end
        waits.append(
            (w.queue, w.priority, float(started - w.created), float(finished - w.created),
             s.first_start < 0)
        )  # fmt: skip
    values, never_started = slo_values(task.slos, waits, summary["utilization_mean"])
    queues = sorted({q.name for q in task.cluster.snapshot.queues})
    # Each goal per queue (None: no job of the queue in its scope): which queue binds.
    by_queue = [
        {q: slo_values([slo], [w for w in waits if w[0] == q], 0.0)[0][0] for q in queues}
        if slo.metric != "utilization"
        else {}
        for slo in task.slos
    ]
    return {
        "label": task.label,
        "slo_values": values,
        "slo_met": [
            slo.met(v) and not n for slo, v, n in zip(task.slos, values, never_started, strict=True)
        ],
        "slo_never_started": never_started,
        "slo_by_queue": by_queue,
        "summary": {k: v for k, v in summary.items() if k != "curves"},
        "curves": {
            k: summary["curves"][k] for k in ("t", "utilization", "jain", "share_deviation")
        },
        "queues": _per_queue(sim, task.cluster, queues, end),
    }


def _per_queue(sim: Any, cluster: Cluster, queues: list[str], end: int) -> dict[str, Any]:
    """Per queue: p95 wait by arrival bin, GPUs held over time, borrowing and lending."""
    step = max(1, -(-end // _BINS))
    held = {q: [0.0] * _BINS for q in queues}
    waits: dict[str, list[list[float]]] = {q: [[] for _ in range(_BINS)] for q in queues}
    for s in sim.states:
        w = s.job.workload
        if w.queue not in held:
            continue
        started = s.first_start if s.first_start >= 0 else end
        waits[w.queue][min(_BINS - 1, w.created // step)].append(float(started - w.created))
        runs = s.earlier_runs
        if s.phase is not Phase.WAITING:  # not waiting again after a preemption
            runs += ((s.started, s.end if s.phase is Phase.DONE else end, s.gpu_milli),)
        for first, stop, milli in runs:
            gpus = milli / MILLI_PER_GPU
            for b in range(first // step, min(_BINS - 1, max(0, stop - 1) // step) + 1):
                lo, hi = max(first, b * step), min(stop, (b + 1) * step)
                if hi > lo:
                    held[w.queue][b] += gpus * (hi - lo) / step
    nominal = {
        q.name: sum(quota.nominal for f, quota in q.quota.items() if not f.startswith("mig-"))
        for q in cluster.snapshot.queues
    }
    out: dict[str, Any] = {}
    for q in queues:
        series = held[q]
        hours = step / 3600
        out[q] = {
            "nominal_gpus": nominal.get(q, 0),
            "gpus_held": [round(v, 3) for v in series],
            "wait_p95_by_arrival": [percentile(v, "p95") for v in waits[q]],
            "gpu_hours": round(sum(series) * hours, 3),
            "borrowed_gpu_hours": round(
                sum(max(0.0, v - nominal.get(q, 0)) for v in series) * hours, 3
            ),
            "unused_quota_gpu_hours": round(
                sum(max(0.0, nominal.get(q, 0) - v) for v in series) * hours, 3
            ),
        }
    out["_bin_s"] = step
    out["_flavor_gpu_hours"] = _flavor_hours(sim, cluster, end)
    return out


def _flavor_hours(sim: Any, cluster: Cluster, end: int) -> dict[str, dict[str, float]]:
    """Per queue and quota flavor, GPU-hours (MIG: instance-hours) of its last run — what
    quota advice splits. The flavor comes from where the job last ran (the engine clears
    ``flavor`` when a job stops)."""
    catalog = cluster.catalog
    gpus = {(n.name, g.index): g for n in cluster.snapshot.nodes for g in n.gpus}
    out: dict[str, dict[str, float]] = {}
    for s in sim.states:
        if s.first_start < 0 or not s.last_placement:
            continue
        first = s.last_placement[0]
        gpu = gpus.get((first.node, first.gpus[0]))
        if gpu is None:
            continue
        if first.mig_start is not None and gpu.mig:
            profile = next((m.profile for m in gpu.mig if m.start == first.mig_start), None)
            flavor = flavor_of_mig(profile) if profile else catalog[gpu.model].name
            amount = float(len(s.last_placement))
        else:
            flavor = catalog[gpu.model].name
            amount = s.gpu_milli / MILLI_PER_GPU
        if s.phase is Phase.WAITING:
            continue  # preempted and waiting again: its last run is not in the record
        stop = s.end if s.phase is Phase.DONE else end
        hours = amount * max(0, stop - s.started) / 3600
        queue = out.setdefault(s.job.workload.queue, {})
        queue[flavor] = round(queue.get(flavor, 0.0) + hours, 3)
    return out
