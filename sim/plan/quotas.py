"""Quota search: nominal quotas per queue that meet the goals on the recommended cluster.

A split says, per quota flavor, what share of the cluster's capacity each queue is
guaranteed (``candidates.scale_quotas`` turns shares into whole nominals that add up to
the capacity). Strategies, each simulated on the same cluster:

- ``scaled``: today's nominals scaled to the cluster (what the sweep already simulated).
- ``demand``: in proportion to the GPU-hours each queue's jobs ask for, per flavor (a job
  that may use several flavors counts on each in proportion to its capacity).
- ``use``: 80 % by what each queue ran on each flavor in the sweep's replay, 20 % by
  today's split, so a queue that ran nothing there keeps a foothold it can reclaim.
- ``weights``: in proportion to the queues' fair-share weights.
- ``slo``: the best split so far, with half again of the binding queue's share (the queue
  whose own value of the worst goal is furthest past the target) taken from the others in
  proportion to the quota they left unused.

The chosen split meets every goal with the fewest GPU-hours borrowed (a split close to use
means less reclaiming); when none meets every goal, the one closest to meeting them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sim.cluster import Cluster
from sim.job import Job
from sim.plan.candidates import Candidate, Pool, build_cluster
from sim.plan.evaluate import EvalTask
from sim.plan.fluid import allowed
from sim.plan.slo import Slo, goal_ratios

__all__ = ["STRATEGIES", "demand_shares", "search_quotas"]

STRATEGIES = ("scaled", "demand", "use", "weights", "slo")
_DESCRIBE = {
    "scaled": "today's nominals scaled to the cluster",
    "demand": "by each queue's demanded GPU-hours per flavor",
    "use": "80 % by use in the replay, 20 % by today's split",
    "weights": "by queue weight",
    "slo": "the best split, shifted to the queue whose goal binds",
}

_QUEUE_FIELDS = ("nominal_gpus", "gpu_hours", "borrowed_gpu_hours", "unused_quota_gpu_hours")

Shares = dict[str, dict[str, float]]
Evaluate = Callable[[list[EvalTask]], list[dict[str, Any]]]


def demand_shares(cluster: Cluster, jobs: Sequence[Job]) -> Shares:
    """Per flavor and queue, the GPU-seconds (MIG: instance-seconds) the jobs ask for."""
    capacity = cluster.capacity()
    mig = {f: c for f, c in capacity.items() if f.startswith("mig-")}
    models = {f: c for f, c in capacity.items() if not f.startswith("mig-")}
    out: Shares = {}
    for job in jobs:
        options = {
            r: units
            for r, units in allowed(job, models, mig, cluster.catalog).items()
            if capacity.get(r, 0)
        }
        room = sum(capacity[r] for r in options)
        for r, units in options.items():
            rate = job.default_rate if r.startswith("mig-") else job.rate_on((r,))
            seconds = units * job.work / rate * capacity[r] / room
            queue = out.setdefault(r, {})
            queue[job.workload.queue] = queue.get(job.workload.queue, 0.0) + seconds
    return out


def _use_shares(cluster: Cluster, evaluation: dict[str, Any]) -> Shares:
    used: Shares = {}
    for queue, flavors in evaluation["queues"]["_flavor_gpu_hours"].items():
        for flavor, hours in flavors.items():
            used.setdefault(flavor, {})[queue] = hours
    out: Shares = {}
    for flavor, by_queue in used.items():
        now = {q.name: float(q.quota[flavor].nominal) for q in cluster.snapshot.queues
               if flavor in q.quota}  # fmt: skip
        total_used = sum(by_queue.values())
        total_now = sum(now.values()) or 1.0
        if total_used <= 0:
            continue
        out[flavor] = {
            q: 0.8 * by_queue.get(q, 0.0) / total_used + 0.2 * now.get(q, 0.0) / total_now
            for q in sorted(set(now) | set(by_queue))
        }
    return out


def _weight_shares(cluster: Cluster) -> Shares:
    weights = {q.name: float(q.weight) for q in cluster.snapshot.queues}
    return {flavor: dict(weights) for flavor in cluster.capacity()}


def _nominals(cluster: Cluster) -> Shares:
    return {
        flavor: {q.name: float(q.quota[flavor].nominal) for q in cluster.snapshot.queues
                 if flavor in q.quota}
        for flavor in cluster.capacity()
    }  # fmt: skip


def _slo_shares(
    start: Shares, evaluation: dict[str, Any], slos: Sequence[Slo], wants: Shares
) -> tuple[Shares, str] | None:
    """``start`` with more for the queue that binds the worst goal, or None."""
    ratios = [
        (ratio, i)
        for i, (slo, ratio) in enumerate(zip(slos, goal_ratios(slos, evaluation), strict=True))
        if slo.metric != "utilization"
    ]
    if not ratios:
        return None
    _, worst = max(ratios)
    per_queue = {q: v for q, v in evaluation["slo_by_queue"][worst].items() if v is not None}
    if not per_queue:
        return None
    slo = slos[worst]
    queue = max(per_queue, key=lambda q: (slo.ratio(per_queue[q]), q))
    unused = {
        q: v["unused_quota_gpu_hours"]
        for q, v in evaluation["queues"].items()
        if not q.startswith("_")
    }
    out: Shares = {}
    for flavor, shares in start.items():
        shares = dict(shares)
        total = sum(shares.values())
        if total <= 0 or not wants.get(flavor, {}).get(queue):
            out[flavor] = shares
            continue
        give = min(0.5 * max(shares.get(queue, 0.0), total / max(1, len(shares))), total / 2)
        donors = {q: unused.get(q, 0.0) + 1e-9 for q in shares if q != queue and shares[q] > 0}
        pool = sum(donors.values())
        if pool <= 0:
            out[flavor] = shares
            continue
        for q, d in donors.items():
            shares[q] = max(0.0, shares[q] - give * d / pool)
        shares[queue] = shares.get(queue, 0.0) + total - sum(shares.values())
        out[flavor] = shares
    return out, queue


def _summary(
    name: str, cluster: Cluster, evaluation: dict[str, Any], slos: Sequence[Slo], note: str = ""
) -> dict[str, Any]:
    queues = {q: v for q, v in evaluation["queues"].items() if not q.startswith("_")}
    ratios = goal_ratios(slos, evaluation)
    return {
        "strategy": name,
        "describe": _DESCRIBE[name] + (f" ({note})" if note else ""),
        "nominal": {
            q.name: {f: quota.nominal for f, quota in sorted(q.quota.items())}
            for q in cluster.snapshot.queues
        },
        "slo_values": evaluation["slo_values"],
        "slo_met": evaluation["slo_met"],
        "slo_never_started": evaluation["slo_never_started"],
        "worst_ratio": max(ratios, default=0.0) if all(r < 1e300 for r in ratios) else None,
        "queues": {q: {k: v[k] for k in _QUEUE_FIELDS} for q, v in sorted(queues.items())},
        "borrowed_gpu_hours": round(sum(v["borrowed_gpu_hours"] for v in queues.values()), 3),
    }


def _rank(s: dict[str, Any]) -> tuple[bool, float, float, int]:
    met = all(s["slo_met"])
    worst = s["worst_ratio"] if s["worst_ratio"] is not None else float("inf")
    return (not met, 0.0 if met else worst, s["borrowed_gpu_hours"],
            STRATEGIES.index(s["strategy"]))  # fmt: skip


def search_quotas(
    cluster: Cluster,
    pools: Sequence[Pool],
    row: dict[str, Any],
    jobs: Sequence[Job],
    slos: Sequence[Slo],
    task: Callable[[str, Cluster], EvalTask],
    run: Evaluate,
    simulations: int = 4,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Simulate up to ``simulations`` splits on the candidate in ``row`` (its sweep
    evaluation is the ``scaled`` split) and choose one. ``task`` makes an evaluation
    task for a cluster; ``run`` evaluates a batch (in a process pool); ``progress`` is
    told (simulated, planned) before and after each batch."""
    candidate = Candidate(tuple(row["counts"]))
    scaled = build_cluster(cluster, pools, candidate)
    wants = demand_shares(scaled, jobs)
    tried = [_summary("scaled", scaled, row["evaluation"], slos)]
    evaluations = {"scaled": row["evaluation"]}
    first = [
        ("demand", wants),
        ("use", _use_shares(scaled, row["evaluation"])),
        ("weights", _weight_shares(scaled)),
    ][: max(1, simulations - 1)]
    clusters = {name: build_cluster(cluster, pools, candidate, shares) for name, shares in first}
    planned = len(first) + int(simulations > len(first))
    if progress:
        progress(0, planned)
    results = run([task(f"quota-{name}", c) for name, c in clusters.items()])
    if progress:
        progress(len(first), planned)
    for (name, _), ev in zip(first, results, strict=True):
        evaluations[name] = ev
        tried.append(_summary(name, clusters[name], ev, slos))
    if simulations > len(first):
        best = min(tried, key=_rank)
        name = best["strategy"]
        start = _nominals(scaled) if name == "scaled" else dict(first)[name]
        shifted = _slo_shares(start, evaluations[name], slos, wants)
        if shifted is not None:
            shares, queue = shifted
            c = build_cluster(cluster, pools, candidate, shares)
            (ev,) = run([task("quota-slo", c)])
            if progress:
                progress(planned, planned)
            tried.append(_summary("slo", c, ev, slos, f"from {name}, to {queue}"))
    chosen = min(tried, key=_rank)
    return {
        "candidate": row["key"],
        "strategies": tried,
        "chosen": chosen["strategy"],
    }
