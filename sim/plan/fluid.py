"""The fluid bound: can a candidate carry the demand at all, before simulating it?

Two necessary conditions, each cheap next to a simulation:

- **Enough GPU-time per model** (an LP). Jobs are grouped into classes (same resources
  they may use, same speed on each); ``G[c, r]`` is the GPU-seconds class ``c`` needs if
  it all ran on resource ``r`` (a GPU model, at the job's rate there, or a MIG flavor).
  Minimise λ subject to Σ_r x[c, r] = 1 and Σ_c G[c, r] x[c, r] ≤ λ · capacity[r] · H,
  x ≥ 0. The wait SLOs say a share ``f`` of the jobs must start within ``D`` of arriving,
  so that share must finish by H = last arrival + D + its longest run; keeping only the
  smallest ``⌈f · n⌉`` jobs of each goal's scope keeps the test necessary (mean goals and
  JCT goals are not used). λ > 1: no schedule can meet the SLOs.
- **Enough work to keep it busy**: with a utilization goal ``u``, the most GPU-time the
  demand could hold (every job on its slowest allowed resource) must reach ``u`` × the
  candidate's GPUs × the earliest possible end of the replay.

The bound ignores fragmentation, gangs, quotas and queueing, so passing it proves
nothing; failing it proves infeasibility. It is the pruning step the planner reports.
scipy's ``linprog`` (HiGHS) solves the LP: a few hundred variables, about a millisecond.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linprog

from scheduler.catalog import MILLI_PER_GPU, Catalog
from sim.cluster import Cluster
from sim.job import Job
from sim.plan.slo import Slo

__all__ = ["FluidBound", "FluidDemand", "fluid_bound", "fluid_demand"]


@dataclass(frozen=True)
class FluidDemand:
    resources: tuple[str, ...]
    """GPU models (whole GPUs) and MIG flavors (``mig-1g.10gb``)."""
    need: np.ndarray
    """[class, resource] GPU-seconds (instance-seconds for MIG); inf where not allowed."""
    need_upper: float
    """GPU-seconds of the demand on its slowest allowed resources (utilization test)."""
    horizon_s: float
    earliest_end_s: float
    utilization: float | None
    classes: tuple[str, ...]


def _allowed(
    job: Job, cluster_models: dict[str, int], mig: dict[str, int], cat: Catalog
) -> dict[str, float]:
    """Resource → GPU-equivalents the job holds there (MIG: instances)."""
    w = job.workload
    d = w.demand
    models = [cat[m].name for m in d.models if cat.get(m)] or list(cluster_models)
    if d.gpus is not None:
        return {m: float(d.gpus * w.pods) for m in models}
    if d.gpu_milli is not None:
        return {m: d.gpu_milli / MILLI_PER_GPU * w.pods for m in models}
    if d.mig_profile is not None:
        return {f"mig-{d.mig_profile}": float(w.pods)}
    need = d.gpu_memory_mib or 0
    out: dict[str, float] = {}
    for m in models:
        model = cat[m]
        if model.memory_mib >= need:
            out[m] = need / model.memory_mib * w.pods
        for p in model.mig_profiles:
            if p.usable_memory_mib >= need and f"mig-{p.name}" in mig:
                out[f"mig-{p.name}"] = float(w.pods)
    return out


def fluid_demand(jobs: Sequence[Job], cluster: Cluster, slos: Sequence[Slo]) -> FluidDemand:
    """The demand as classes × resources, for the cluster's catalog (any candidate)."""
    cat = cluster.catalog
    capacity = cluster.capacity()
    mig = {f: c for f, c in capacity.items() if f.startswith("mig-")}
    models = {f: c for f, c in capacity.items() if not f.startswith("mig-")}
    # Percentile wait goals only: a mean promises nothing about any one job.
    waits = [s for s in slos if s.metric.endswith("_wait") and not s.metric.startswith("mean")]
    max_wait = max((s.target for s in waits), default=0.0)
    rows: list[tuple[float, float, str, dict[str, float]]] = []
    earliest_end = 0.0
    for job in jobs:
        allowed = _allowed(job, models, mig, cat)
        seconds = {}
        runtime = math.inf
        for r, gpus in allowed.items():
            rate = job.rate_on((r,)) if not r.startswith("mig-") else job.default_rate
            seconds[r] = gpus * job.work / rate
            runtime = min(runtime, job.work / rate)
        if seconds:
            earliest_end = max(earliest_end, job.submit + runtime)
        rows.append(
            (min(seconds.values(), default=0.0), runtime, _class_key(job, seconds), seconds)
        )
    upper = sum(max(s.values(), default=0.0) for *_, s in rows)
    # Per goal, the smallest ⌈p · n⌉ jobs of its scope must start in time (the rest may
    # miss it); the bound keeps the union of those.
    chosen: set[int] = set()
    for slo in waits:
        scope = [
            i for i, j in enumerate(jobs) if slo.selects(j.workload.queue, j.workload.priority)
        ]
        scope.sort(key=lambda i: rows[i][0])
        chosen.update(scope[: math.ceil(int(slo.metric[1:3]) / 100 * len(scope))])
    kept = [rows[i] for i in sorted(chosen)]
    last = max((j.submit for j in jobs), default=0)
    longest = max((r[1] for r in kept if math.isfinite(r[1])), default=0.0)
    resources = tuple(sorted(set(models) | set(mig)))
    index = {r: i for i, r in enumerate(resources)}
    classes: dict[str, np.ndarray] = {}
    for _, _, key, seconds in kept:
        total = classes.setdefault(key, np.zeros(len(resources)))
        for r, gpu_s in seconds.items():
            if r in index:
                total[index[r]] += gpu_s
    need = np.full((len(classes), len(resources)), np.inf)
    for i, (key, total) in enumerate(sorted(classes.items())):
        cols = [index[r] for r in key.split("|")[0].split(",") if r in index]
        need[i, cols] = total[cols]
    util = [s for s in slos if s.metric == "utilization"]
    return FluidDemand(
        resources,
        need,
        upper,
        float(last + max_wait + longest),
        float(earliest_end),
        max((s.target for s in util), default=None),
        tuple(sorted(classes)),
    )


def _class_key(job: Job, seconds: dict[str, float]) -> str:
    return (
        ",".join(sorted(seconds))
        + "|"
        + ",".join(f"{v / job.work:.6g}" for _, v in sorted(seconds.items()))
    )


@dataclass(frozen=True, slots=True)
class FluidBound:
    load: float
    """λ: the least peak share of any resource's GPU-time the demand needs (> 1: prune)."""
    busy_max: float | None
    """The most utilization the demand could produce (None without a utilization goal)."""
    reason: str
    """Why it is pruned, for people; empty when it passes."""

    @property
    def pruned(self) -> bool:
        return bool(self.reason)


def fluid_bound(demand: FluidDemand, capacity: dict[str, int], gpus: int) -> FluidBound:
    """The bound for a candidate with this capacity per flavor and ``gpus`` GPUs in all."""
    cap = np.array([capacity.get(r, 0) for r in demand.resources], dtype=float)
    load = _min_load(demand.need, cap * demand.horizon_s) if len(demand.need) else 0.0
    reason = ""
    if load > 1.0 + 1e-9:
        tight = _tightest(demand, cap)
        reason = (
            f"fluid bound: the jobs the wait goals cover need {load:.2f}× the GPU-time "
            f"{tight} can give by {demand.horizon_s / 3600:.1f} h"
        )
    busy = None
    if demand.utilization is not None:
        denominator = gpus * max(1.0, demand.earliest_end_s)
        busy = demand.need_upper / denominator if denominator else math.inf
        if busy < demand.utilization and not reason:
            reason = (
                f"fluid bound: the demand can keep at most {busy:.0%} of these GPUs busy "
                f"(goal {demand.utilization:.0%})"
            )
    return FluidBound(load, busy, reason)


def _min_load(need: np.ndarray, cap: np.ndarray) -> float:
    """min λ s.t. each class is fully assigned and resource loads ≤ λ · cap."""
    n_c, n_r = need.shape
    pairs = [
        (c, r) for c in range(n_c) for r in range(n_r) if np.isfinite(need[c, r]) and cap[r] > 0
    ]
    covered = {c for c, _ in pairs}
    if len(covered) < n_c:
        return math.inf
    nv = len(pairs) + 1
    cost = np.zeros(nv)
    cost[-1] = 1.0
    a_eq = np.zeros((n_c, nv))
    a_ub = np.zeros((n_r, nv))
    for k, (c, r) in enumerate(pairs):
        a_eq[c, k] = 1.0
        a_ub[r, k] = need[c, r] / cap[r]
    a_ub[:, -1] = -1.0
    result = linprog(
        cost, A_ub=a_ub, b_ub=np.zeros(n_r), A_eq=a_eq, b_eq=np.ones(n_c), method="highs"
    )
    return float(result.fun) if result.status == 0 else math.inf


def _tightest(demand: FluidDemand, cap: np.ndarray) -> str:
    """The resources whose own classes alone overload them (a readable 'which GPUs')."""
    names = []
    for r, name in enumerate(demand.resources):
        only = [
            c
            for c in range(len(demand.need))
            if np.isfinite(demand.need[c, r]) and np.isfinite(demand.need[c]).sum() == 1
        ]
        if only and demand.need[only, r].sum() > cap[r] * demand.horizon_s:
            names.append(name)
    return ", ".join(names) if names else "the candidate's GPUs together"
