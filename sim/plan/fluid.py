"""The fluid bound: can a candidate carry the demand at all, before simulating it?

Three necessary conditions, each cheap next to a simulation:

- **Enough GPU-time per model** (an LP). Jobs are grouped into classes (same resources
  they may use, same speed on each); ``G[c, r]`` is the GPU-seconds class ``c`` needs if
  it all ran on resource ``r`` (a GPU model, at the job's rate there, or a MIG flavor).
  Minimise λ subject to Σ_r x[c, r] = 1 and Σ_c G[c, r] x[c, r] ≤ λ · capacity[r] · H,
  x ≥ 0. The wait SLOs say a share ``f`` of the jobs must start within ``D`` of arriving,
  so those must finish by H = last arrival + D + the longest run of any job in a goal's
  scope. Which jobs is the schedule's choice, so the test keeps, per class, only its
  smallest jobs but the n − ⌈f · n⌉ a goal may miss (those may all be of one class), and
  per class the most any goal needs (one job may serve several goals): the smallest
  ``⌈f · n⌉`` of a scope was not necessary, as larger jobs may use other GPUs or run
  longer (mean goals and JCT goals are not used). λ > 1: no schedule can meet the SLOs.
- **Enough capacity in every time window** (per goal). A job a wait goal keeps must run
  inside [arrival, arrival + D + its slowest run]; for any window [t1, t2], the jobs whose
  whole interval lies inside need their GPU-time (on their cheapest allowed resource)
  within t2 − t1, on the resources they may use. A goal ``p95`` over n jobs may miss
  n − ⌈0.95 n⌉ of them, so each window drops its largest that many. Per resource set S
  (the sets jobs may use, and all of them) the demand's worst window gives a rate in GPUs
  (MIG: instances) that S's capacity must reach: computed once per demand, so each
  candidate's check is a division. This is what makes the bound bite on bursty demands:
  one horizon for the whole replay averages a burst away.
- **Pods that fit some node**: a pod of 8 GPUs cannot run on 4-GPU nodes of its model, so
  node shapes too small for a class take that resource from it.
- **Enough work to keep it busy**: with a utilization goal ``u``, the most GPU-time the
  demand could hold (every job on its slowest allowed resource, a MIG instance as its
  share of the GPU's compute, as the simulator counts it) must reach ``u`` × the
  candidate's GPUs × the shortest its replay can be, from the first arrival (where the
  simulator measures from) to the earliest possible end (the last arrival, and the
  fastest end of each job it can run: one it cannot run ends nothing).

A job another job may evict (a higher priority of its queue, a cohort mate reclaiming,
as the queues' preemption policies allow) can start in time and finish late, and its
evicted runs are GPU-time the demand does not count: the wait tests leave such jobs out,
and the utilization test holds only when no job may be evicted.

The bound ignores fragmentation, gangs, quotas and queueing, so passing it proves
nothing; failing it proves infeasibility. It is the pruning step the planner reports.
scipy's ``linprog`` (HiGHS) solves the LP: a few hundred variables, about a millisecond.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from scheduler.catalog import MILLI_PER_GPU, Catalog
from scheduler.model import PreemptionPolicy, Queue
from sim.cluster import Cluster
from sim.job import Job
from sim.plan.slo import Slo

__all__ = ["FluidBound", "FluidDemand", "Window", "allowed", "fluid_bound", "fluid_demand"]

_WINDOW_EDGES = 48
"""Window starts and ends per goal (quantiles of arrivals and deadlines): any window is a
valid test, so fewer only loosens the bound; 48 × 48 keeps a demand's windows ≈ 0.1 s."""


_REPORT_EVERY = 10_000
"""Jobs between two ``progress`` reports."""


@dataclass(frozen=True, slots=True)
class Window:
    """A window test: the jobs a goal keeps inside [start, end] need ``rate`` GPUs
    (instances for MIG) on average from ``resources`` during it."""

    goal: str
    resources: tuple[str, ...]
    start_s: float
    end_s: float
    rate: float


@dataclass(frozen=True)
class FluidDemand:
    resources: tuple[str, ...]
    """GPU models (whole GPUs) and MIG flavors (``mig-1g.10gb``)."""
    need: np.ndarray
    """[class, resource] GPU-seconds (instance-seconds for MIG); inf where not allowed."""
    need_upper: float
    """GPU-seconds of the demand on its slowest allowed resources (utilization test)."""
    horizon_s: float
    last_arrival_s: float
    ends: tuple[tuple[frozenset[str], int, float], ...]
    """Per kind of job (the resources it may use, whole GPUs per pod): the latest arrival
    plus fastest run among them. A candidate's replay lasts at least until the last
    arrival and the end of every job it can run (``_earliest_end``): a job it cannot run
    (no node of a model it may use, or none large enough) ends nothing."""
    utilization: float | None
    classes: tuple[str, ...]
    pod_gpus: tuple[int, ...] = ()
    """Per class: whole GPUs one pod needs on one node (0: a share or a MIG slice)."""
    windows: tuple[Window, ...] = ()
    first_arrival_s: float = 0.0
    """Where a replay's utilization is measured from (``sim.metrics.Recorder``)."""


def allowed(
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


def fluid_demand(
    jobs: Sequence[Job],
    cluster: Cluster,
    slos: Sequence[Slo],
    flavors: Sequence[str] = (),
    progress: Callable[[int, int], None] | None = None,
) -> FluidDemand:
    """The demand as classes × resources, for the cluster's catalog (any candidate);
    ``flavors``: quota flavors candidates may have that the cluster lacks (a new MIG
    layout's profiles); ``progress(done, total)``: how far it is, in job passes (a year
    of a demand is hundreds of thousands of jobs: tens of seconds)."""
    cat = cluster.catalog
    capacity = {**{f: 1 for f in flavors}, **cluster.capacity()}
    mig = {f: c for f, c in capacity.items() if f.startswith("mig-")}
    models = {f: c for f, c in capacity.items() if not f.startswith("mig-")}
    # Percentile wait goals only: a mean promises nothing about any one job.
    waits = [s for s in slos if s.metric.endswith("_wait") and not s.metric.startswith("mean")]
    max_wait = max((s.target for s in waits), default=0.0)
    rows: list[tuple[float, float, str, dict[str, float]]] = []
    ends: dict[tuple[frozenset[str], int], float] = {}
    upper = 0.0
    passes = len(jobs) * (1 + 2 * len(waits))  # the jobs, then per goal its scope and windows
    for n, job in enumerate(jobs):
        if progress is not None and n % _REPORT_EVERY == 0:
            progress(n, passes)
        allowed_ = allowed(job, models, mig, cat)
        seconds = {}
        runtime = math.inf
        slowest = 0.0
        held = 0.0
        for r, gpus in allowed_.items():
            rate = job.rate_on((r,)) if not r.startswith("mig-") else job.default_rate
            seconds[r] = gpus * job.work / rate
            runtime = min(runtime, job.work / rate)
            slowest = max(slowest, job.work / rate)
            held = max(held, _held(job, r, gpus, cat) * job.work / rate)
        if seconds:
            kind = (frozenset(seconds), job.workload.demand.gpus or 0)
            ends[kind] = max(ends.get(kind, 0.0), job.submit + runtime)
        upper += held
        rows.append(
            (min(seconds.values(), default=0.0), slowest, _class_key(job, seconds), seconds)
        )
    evictable = _evictable(jobs, cluster.snapshot.queues)
    # Per class, how many of its jobs some goal needs in time (see _kept), among the jobs
    # of any goal's scope that nothing may evict.
    wanted: dict[str, int] = {}
    members: dict[str, list[int]] = {}
    for g, slo in enumerate(waits):
        if progress is not None:
            progress(len(jobs) * (1 + g), passes)
        scope = [
            i for i, j in enumerate(jobs) if slo.selects(j.workload.queue, j.workload.priority)
        ]
        drop = len(scope) - math.ceil(int(slo.metric[1:3]) / 100 * len(scope))
        per_class: dict[str, list[int]] = {}
        for i in scope:
            if not evictable[i]:
                per_class.setdefault(rows[i][2], []).append(i)
        for key, of_class in per_class.items():
            wanted[key] = max(wanted.get(key, 0), len(of_class) - drop)
            members.setdefault(key, []).extend(of_class)
    kept = [rows[i] for i in _kept(rows, wanted, members)]
    last = max((j.submit for j in jobs), default=0)
    # Any of them may be the ones that start in time, the longest too.
    longest = max(
        (rows[i][1] for group in members.values() for i in group if math.isfinite(rows[i][1])),
        default=0.0,
    )
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
    windows: list[Window] = []
    columns = _Columns.of(jobs, rows, set(resources), evictable) if waits else None
    for g, slo in enumerate(waits):
        if progress is not None:
            progress(len(jobs) * (1 + len(waits) + g), passes)
        assert columns is not None
        windows += [w for w in _windows(slo, jobs, columns) if w.rate > 0]
    if progress is not None:
        progress(passes, passes)
    # An evicted run holds GPUs for work done again later: utilization past the demand's
    # own GPU-time, so the utilization test holds only where nothing may be evicted.
    util = [s for s in slos if s.metric == "utilization" and not evictable.any()]
    return FluidDemand(
        resources,
        need,
        upper,
        float(last + max_wait + longest),
        float(last),
        tuple((kind, pod, end) for (kind, pod), end in sorted(ends.items(), key=_by_names)),
        max((s.target for s in util), default=None),
        tuple(sorted(classes)),
        tuple(int(k.rsplit("|", 1)[1]) for k in sorted(classes)),
        tuple(windows),
        float(min((j.submit for j in jobs), default=0)),
    )


def _by_names(item: tuple[tuple[frozenset[str], int], float]) -> tuple[list[str], int]:
    (resources, pod_gpus), _ = item
    return sorted(resources), pod_gpus


def _earliest_end(
    demand: FluidDemand, capacity: dict[str, int], largest_node: dict[str, int] | None
) -> float:
    """The earliest a candidate's replay can end: its last arrival, and the fastest end of
    each job it can run. Was every job's: where an A100-only job cannot run, the replay
    ended when it arrived, and the test pruned a cluster busier than it said."""

    def runs(resources: frozenset[str], pod_gpus: int) -> bool:
        return any(
            capacity.get(r, 0) > 0
            and (largest_node is None or r.startswith("mig-") or largest_node.get(r, 0) >= pod_gpus)
            for r in resources
        )

    return max(
        [demand.last_arrival_s]
        + [end for resources, pod_gpus, end in demand.ends if runs(resources, pod_gpus)]
    )


def _kept(
    rows: Sequence[tuple[float, float, str, dict[str, float]]],
    wanted: dict[str, int],
    members: dict[str, list[int]],
) -> list[int]:
    """The jobs the LP keeps: per class, its ``wanted`` smallest. A goal over n jobs may
    miss n − ⌈p · n⌉ of them, all of one class as well, so from each class it needs all
    its jobs in scope but that many; which ones is the schedule's choice, so the smallest
    of the class (not of the scope: a larger job may use other GPUs, run longer, or serve
    two goals at once). The class keeps the most any goal needs, not their sum: one job
    may count for several goals."""
    kept: list[int] = []
    for key, group in members.items():
        kept += sorted(set(group), key=lambda i: rows[i][0])[: max(0, wanted[key])]
    return sorted(kept)


def _evictable(jobs: Sequence[Job], queues: Sequence[Queue]) -> np.ndarray:
    """Per job, whether another job of the demand may evict it under its queues'
    preemption policies (within its queue, or reclaiming in its cohort as if its queue
    borrowed: quotas are each candidate's). Such a job can start in time and still finish
    late, so the wait tests leave it out: it may meet a goal and need no GPU-time for it."""
    by_name = {q.name: q for q in queues}
    top: dict[str, int] = {}
    oldest: dict[tuple[str, int], tuple[int, str]] = {}
    for job in jobs:
        w = job.workload
        top[w.queue] = max(top.get(w.queue, w.priority), w.priority)
        key = (w.queue, w.priority)
        oldest[key] = min(oldest.get(key, (w.created, w.name)), (w.created, w.name))
    # Per queue: whether a cohort mate with jobs may reclaim from it at any priority, and
    # the highest priority of the mates that reclaim only from lower priorities.
    reclaim_any: dict[str, bool] = {}
    reclaim_above: dict[str, int | None] = {}
    for name in top:
        queue = by_name.get(name)
        mates = [
            by_name[m]
            for m in top
            if m != name and queue is not None and queue.cohort is not None
            and m in by_name and by_name[m].cohort == queue.cohort
        ]  # fmt: skip
        reclaim_any[name] = any(m.preemption.reclaim_within_cohort == "Any" for m in mates)
        reclaim_above[name] = max(
            (top[m.name] for m in mates if m.preemption.reclaim_within_cohort == "LowerPriority"),
            default=None,
        )
    out = np.zeros(len(jobs), dtype=bool)
    for n, job in enumerate(jobs):
        w = job.workload
        queue = by_name.get(w.queue)
        within = (queue.preemption if queue is not None else PreemptionPolicy()).within_queue
        above = reclaim_above[w.queue]
        out[n] = (
            (within != "Never" and top[w.queue] > w.priority)
            or (
                within == "LowerOrNewerEqualPriority"
                and oldest[(w.queue, w.priority)] < (w.created, w.name)
            )
            or reclaim_any[w.queue]
            or (above is not None and above > w.priority)
        )
    return out


def _held(job: Job, resource: str, units: float, cat: Catalog) -> float:
    """The most GPUs the job holds on ``resource`` as utilization counts them: a MIG
    instance as its share of the GPU's compute slices, a memory-sized pod on a whole GPU
    as that GPU (utilization side: an upper bound)."""
    d = job.workload.demand
    if resource.startswith("mig-"):
        profile = resource[4:]
        shares = [
            p.compute_slices / m.mig_compute_slices
            for m in cat.models
            for p in m.mig_profiles
            if p.name == profile
        ]
        return max(shares, default=1.0) * job.workload.pods
    if d.gpu_memory_mib is not None:
        return float(job.workload.pods)
    return units


def _class_key(job: Job, seconds: dict[str, float]) -> str:
    d = job.workload.demand
    return (
        ",".join(sorted(seconds))
        + "|"
        + ",".join(f"{v / job.work:.6g}" for _, v in sorted(seconds.items()))
        + f"|{d.gpus or 0}"
    )


@dataclass(frozen=True)
class _Columns:
    """What the window tests read of every job, as arrays (built once for all goals: a
    year of a demand is a million jobs, and reading them job by job per goal was most of
    the windows' time)."""

    submit: np.ndarray
    slowest: np.ndarray
    """Run time on the slowest resource it may use."""
    smallest: np.ndarray
    """GPU-seconds on the cheapest resource it may use."""
    usable: np.ndarray
    """Whether it may use any resource at all."""
    evictable: np.ndarray
    """Whether another job may evict it (``_evictable``)."""
    kind: np.ndarray
    """Index in ``sets`` of the resources it may use."""
    sets: tuple[frozenset[str], ...]

    @classmethod
    def of(
        cls,
        jobs: Sequence[Job],
        rows: Sequence[tuple[float, float, str, dict[str, float]]],
        resources: set[str],
        evictable: np.ndarray,
    ) -> _Columns:
        kinds: dict[frozenset[str], int] = {}
        by_key: dict[str, int] = {}
        kind = np.empty(len(rows), dtype=np.int64)
        for n, (_, _, key, seconds) in enumerate(rows):
            k = by_key.get(key)
            if k is None:  # one per class: the class key names the resources it may use
                group = frozenset(r for r in seconds if r in resources)
                k = by_key[key] = kinds.setdefault(group, len(kinds))
            kind[n] = k
        return cls(
            np.array([j.submit for j in jobs], dtype=float),
            np.array([r[1] for r in rows], dtype=float),
            np.array([r[0] for r in rows], dtype=float),
            np.array([bool(r[3]) for r in rows], dtype=bool),
            evictable,
            kind,
            tuple(kinds),
        )


def _windows(slo: Slo, jobs: Sequence[Job], columns: _Columns) -> list[Window]:
    """The goal's worst window per resource set (see the module docstring)."""
    picked = np.fromiter(
        (slo.selects(j.workload.queue, j.workload.priority) for j in jobs), bool, len(jobs)
    )
    scope = np.flatnonzero(picked & columns.usable)
    if not len(scope):
        return []
    drop = len(scope) - math.ceil(int(slo.metric[1:3]) / 100 * len(scope))
    # A job that may be evicted may meet the goal at no cost in GPU-time: it is in no
    # window, and the goal may still miss `drop` of the others.
    scope = scope[~columns.evictable[scope]]
    if not len(scope):
        return []
    # Largest first, so 'drop the window's m largest' is 'skip its first m' (ties in
    # the trace's order).
    scope = scope[np.argsort(-columns.smallest[scope], kind="stable")]
    arrive = columns.submit[scope]
    due = arrive + slo.target + columns.slowest[scope]
    need = columns.smallest[scope]
    kind = columns.kind[scope]
    sets = [columns.sets[k] for k in np.unique(kind)]
    starts = np.unique(np.quantile(arrive, np.linspace(0, 1, _WINDOW_EDGES)))
    ends = np.unique(np.quantile(due, np.linspace(0, 1, _WINDOW_EDGES)))
    # Window [starts[i], ends[k]] holds job j iff i < after[j] and k >= before[j].
    after_all = np.searchsorted(starts, arrive, side="right")
    before_all = np.searchsorted(ends, due, side="left")
    length = ends[None, :] - starts[:, None]
    ok = length > 0
    out = []
    for group in sorted(set(sets) | {frozenset().union(*sets)}, key=sorted):
        if not group:
            continue
        inside = [k for k, s in enumerate(columns.sets) if s <= group]
        member = np.isin(kind, inside)
        count, total, first = _inside(
            after_all[member], before_all[member], need[member], len(starts), len(ends), drop
        )
        # The window's jobs but its `drop` largest (none when it holds no more than those).
        kept = np.where(count > drop, total - first, 0.0)
        rate = np.where(ok, kept / np.where(ok, length, 1.0), 0.0)
        best = (0.0, 0.0, 0.0)
        for i, t1 in enumerate(starts):
            if not ok[i].any():
                continue
            k = int(np.argmax(rate[i]))
            if rate[i, k] > best[0]:
                best = (float(rate[i, k]), float(t1), float(ends[k]))
        out.append(Window(slo.text, tuple(sorted(group)), best[1], best[2], best[0]))
    return out


_BLOCK = 512
"""Jobs per block of ``_inside``'s running counts: a window's `drop`-th job is found by
its block's count, then among that block's jobs alone."""


def _inside(
    after: np.ndarray, before: np.ndarray, need: np.ndarray, n_starts: int, n_ends: int, drop: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per window (start i, end k): how many of the jobs (in order) lie inside, their need,
    and the need of the first ``drop`` of them (the largest: the ones a percentile goal may
    miss). A job lies inside when ``i < after`` and ``k >= before``.

    Counted per block of ``_BLOCK`` jobs, as running 2-D sums over (after, before) cells:
    each window's `drop`-th job is in the first block whose running count reaches ``drop``,
    and only that block is looked at job by job. Masking every job for every window (what
    this replaced) took 40 s for a year of the demo's demand (600,000 jobs)."""
    n = len(after)
    blocks = max(1, -(-n // _BLOCK))
    cells = (n_starts + 1) * (n_ends + 1)
    index = (np.arange(n) // _BLOCK) * cells + after * (n_ends + 1) + before
    shape = (blocks, n_starts + 1, n_ends + 1)
    hist = np.bincount(index, minlength=blocks * cells).reshape(shape)
    mass = np.bincount(index, weights=need, minlength=blocks * cells).reshape(shape)

    def windows(h: np.ndarray) -> np.ndarray:
        h = np.cumsum(h[:, ::-1, :], axis=1)[:, ::-1, :]  # after >= a
        return np.cumsum(h, axis=2)[:, 1:, :n_ends]  # after > i, before <= k

    counts = np.cumsum(windows(hist), axis=0)  # [b, i, k]: in blocks 0..b
    sums = np.cumsum(windows(mass), axis=0)
    first = np.zeros((n_starts, n_ends))
    if drop:
        for i, k in zip(*np.nonzero(counts[-1] > drop), strict=True):
            b = int(np.searchsorted(counts[:, i, k], drop))  # the block of the drop-th job
            taken = int(counts[b - 1, i, k]) if b else 0
            lo, hi = b * _BLOCK, (b + 1) * _BLOCK
            inside = (after[lo:hi] > i) & (before[lo:hi] <= k)
            first[i, k] = (sums[b - 1, i, k] if b else 0.0) + need[lo:hi][inside][
                : drop - taken
            ].sum()
    return counts[-1], sums[-1], first


@dataclass(frozen=True, slots=True)
class FluidBound:
    load: float
    """λ: the least peak share of any resource's GPU-time the demand needs (> 1: prune),
    or the worst window's share when larger; when it is at most 1 it may be an upper
    bound (the LP is skipped when a simple assignment already fits)."""
    busy_max: float | None
    """The most utilization the demand could produce (None without a utilization goal)."""
    reason: str
    """Why it is pruned, for people; empty when it passes."""

    @property
    def pruned(self) -> bool:
        return bool(self.reason)


def fluid_bound(
    demand: FluidDemand,
    capacity: dict[str, int],
    gpus: int,
    largest_node: dict[str, int] | None = None,
) -> FluidBound:
    """The bound for a candidate with this capacity per flavor and ``gpus`` GPUs in all;
    ``largest_node``: per GPU model, the most whole GPUs one of its nodes has (None: pods
    fit anywhere)."""
    cap = np.array([capacity.get(r, 0) for r in demand.resources], dtype=float)
    need = demand.need
    if largest_node is not None and len(need):
        need = need.copy()
        for r, name in enumerate(demand.resources):
            if not name.startswith("mig-"):
                room = largest_node.get(name, 0)
                need[[g > room for g in demand.pod_gpus], r] = np.inf
    load = 0.0
    if len(need):
        # Each class spread over its resources by capacity is one feasible assignment:
        # when it fits, so does the best one, and the LP (most of this function's time)
        # can be skipped.
        load = _spread_load(need, cap * demand.horizon_s)
        if load > 1.0:
            load = _min_load(need, cap * demand.horizon_s)
    reason = ""
    if (
        math.isinf(load)
        and need is not demand.need
        and math.isfinite(_min_load(demand.need, cap * demand.horizon_s))
    ):
        there = cap > 0
        stuck = [
            g
            for g, row, full in zip(demand.pod_gpus, need, demand.need, strict=True)
            if not np.isfinite(row[there]).any() and np.isfinite(full[there]).any()
        ]
        reason = f"fluid bound: pods of {max(stuck)} GPUs fit no node of a model they may use"
    elif load > 1.0 + 1e-9:
        tight = _tightest(demand, cap)
        reason = (
            f"fluid bound: the jobs the wait goals cover need {load:.2f}× the GPU-time "
            f"{tight} can give by {demand.horizon_s / 3600:.1f} h"
        )
    index = {r: i for i, r in enumerate(demand.resources)}
    for w in demand.windows:
        room = sum(cap[index[r]] for r in w.resources)
        ratio = w.rate / room if room > 0 else math.inf
        if ratio > load:
            load = ratio
            if ratio > 1.0 + 1e-9:
                reason = (
                    f"fluid bound: the jobs {w.goal} covers that arrive in "
                    f"{w.start_s / 3600:.1f}–{w.end_s / 3600:.1f} h need {_times(ratio)} "
                    f"what {', '.join(w.resources)} can give in that window"
                )
    busy = None
    if demand.utilization is not None:
        span = _earliest_end(demand, capacity, largest_node) - demand.first_arrival_s
        denominator = gpus * max(1.0, span)
        busy = demand.need_upper / denominator if denominator else math.inf
        if busy < demand.utilization and not reason:
            reason = (
                f"fluid bound: the demand can keep at most {busy:.0%} of these GPUs busy "
                f"(goal {demand.utilization:.0%})"
            )
    return FluidBound(load, busy, reason)


def _times(ratio: float) -> str:
    return "more than" if math.isinf(ratio) else f"{ratio:.2f}×"


def _spread_load(need: np.ndarray, cap: np.ndarray) -> float:
    """λ of the assignment that spreads each class over its resources by capacity: an
    upper bound on the least λ (inf when a class has no resource)."""
    usable = np.isfinite(need) & (cap > 0)
    room = np.where(usable, cap, 0.0)
    total = room.sum(axis=1, keepdims=True)
    if (total <= 0).any():
        return math.inf
    work = np.where(usable, need, 0.0) * room / total
    safe = np.where(cap > 0, cap, 1.0)
    return float((work.sum(axis=0) / safe).max())


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
    # Here, not at the top: scipy.optimize is a third of a second that every `apportion`
    # command paid, `apportion plan` registering with them all.
    from scipy.optimize import linprog

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
