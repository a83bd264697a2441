"""Which candidates to simulate, in parallel, within a budget of simulations.

1. Enumerate the grid (``candidates``) and drop what the fluid bound proves infeasible.
2. Simulate the current cluster (the 'if nothing changes' answer).
3. Bisect on cost: simulate the undecided candidate at the middle of the cost range
   (one per worker, spread over the range); a candidate that misses a goal rules out
   every candidate it dominates (no more nodes anywhere), one that meets them all rules
   out everything costlier. Repeat until nothing cheaper than the best is undecided or
   the budget is spent.
4. Spend what is left of the budget on costlier candidates spread over the cost range:
   the cost-vs-SLO Pareto front.

The inference in 3 assumes more nodes never make an SLO worse; the simulator does not
promise it (a policy can make worse choices with more room), so the report says which
answers were simulated and which inferred. With ``--shard i/N`` a process takes every
N-th surviving candidate (by cost) and searches only those; ``merge`` joins the shards.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from sim.cluster import Cluster
from sim.job import Job
from sim.plan.candidates import Candidate, Pool, build_cluster, candidate_grid
from sim.plan.evaluate import EvalTask, evaluate
from sim.plan.fluid import fluid_bound, fluid_demand
from sim.plan.slo import Slo
from sim.policies import PolicyOptions

__all__ = ["SearchSettings", "search"]


@dataclass(frozen=True)
class SearchSettings:
    levels: tuple[float, ...] = (0.75, 1.0, 1.25, 1.5)
    """Scale factors per GPU model applied to the current node pools."""
    max_simulations: int = 24
    """Simulations per process (per shard), the current cluster included."""
    workers: int = 2
    policy: str = "apportion"
    seed: int = 0
    options: PolicyOptions = field(default_factory=PolicyOptions)
    shard: tuple[int, int] = (0, 1)
    budget_per_hour: float | None = None


Progress = Callable[[int, int], None]


def search(
    cluster: Cluster,
    pools: Sequence[Pool],
    jobs: Sequence[Job],
    slos: Sequence[Slo],
    settings: SearchSettings,
    progress: Progress | None = None,
    today: Sequence[Job] | None = None,
) -> dict[str, Any]:
    """The sweep's record: every candidate with its cost, bound and (if run) evaluation."""
    current = Candidate(tuple(p.count for p in pools), tuple((p.model, 1.0) for p in pools))
    grid = candidate_grid(pools, settings.levels)
    if current.counts not in {c.counts for c in grid}:
        grid.append(current)
    demand = fluid_demand(jobs, cluster, slos)
    rows: dict[str, dict[str, Any]] = {}
    for cand in grid:
        bound = fluid_bound(demand, cand.capacity(pools), cand.gpus(pools))
        rows[cand.key()] = {
            "key": cand.key(),
            "counts": list(cand.counts),
            "levels": dict(cand.levels),
            "gpus": cand.gpus_by_model(pools),
            "cost_per_hour": round(cand.cost_per_hour(pools), 4),
            "fluid_load": round(bound.load, 4) if bound.load < 1e9 else None,
            "pruned": bound.reason,
            "current": cand.counts == current.counts,
            "status": "pruned" if bound.pruned else "undecided",
            "evaluation": None,
        }
    index, count = settings.shard
    alive = sorted(
        (c for c in grid if not rows[c.key()]["pruned"] or c.counts == current.counts),
        key=lambda c: (rows[c.key()]["cost_per_hour"], c.counts),
    )
    mine = [c for i, c in enumerate(alive) if i % count == index]
    if index == count - 1:
        # The last shard also owns the largest candidate (for 'closest option').
        mine.append(max(grid, key=lambda c: (sum(c.counts), c.counts)))
        mine = list(dict.fromkeys(mine))
    if index == 0 and current not in mine:
        mine.append(current)
    extra: dict[str, Any] = {}
    seconds: list[float] = []
    with _executor(settings.workers) as pool:

        def run(batch: list[Candidate], labels: list[str] | None = None) -> list[dict[str, Any]]:
            tasks = [
                EvalTask(
                    (labels or [c.key() for c in batch])[i],
                    build_cluster(cluster, pools, c),
                    tuple(jobs),
                    tuple(slos),
                    settings.policy,
                    settings.seed,
                    settings.options,
                )
                for i, c in enumerate(batch)
            ]
            timed = list(pool.map(_timed, tasks))
            seconds.extend(t for _, t in timed)
            return [ev for ev, _ in timed]

        done = 0
        budget = settings.max_simulations
        first = [current] if index == 0 else []
        if index == 0 and today is not None:
            # The current cluster under today's demand: what 'nothing changes' changes from.
            task = EvalTask(
                "today",
                build_cluster(cluster, pools, current),
                tuple(today),
                tuple(slos),
                settings.policy,
                settings.seed,
                settings.options,
            )
            future = pool.submit(evaluate, task)
        else:
            future = None
        while budget - done > 0:
            # The current cluster goes with the first probes (it may also be pruned).
            want = min(settings.workers, budget - done) - len(first)
            probes = _pick([c for c in mine if c not in first], rows, settings.workers, want)
            batch = first + probes
            first = []
            if not batch:
                break
            for cand, ev in zip(batch, run(batch), strict=True):
                _record(rows, cand, ev, mine)
            done += len(batch)
            if progress:
                progress(done, budget)
        # Nothing met the goals: simulate the largest candidate, pruned or not, so the
        # 'closest option' is the most the grid can do, not just what was tried.
        largest = max(mine, key=lambda c: (sum(c.counts), c.counts), default=None)
        if (
            largest is not None
            and budget - done > 0
            and not any(rows[c.key()]["status"] == "meets" for c in mine)
            and rows[largest.key()]["evaluation"] is None
        ):
            (ev,) = run([largest])
            _record(rows, largest, ev, mine)
            done += 1
        # The Pareto front: costlier candidates spread over the range.
        left = budget - done
        if left > 0:
            rest = [c for c in mine if rows[c.key()]["status"] in ("undecided", "costlier")]
            spread = _spread(rest, left)
            for start in range(0, len(spread), max(1, settings.workers)):
                batch = spread[start : start + settings.workers]
                for cand, ev in zip(batch, run(batch), strict=True):
                    _record(rows, cand, ev, mine)
                done += len(batch)
                if progress:
                    progress(done, budget)
        if future is not None:
            extra["today"] = future.result()
    return {
        "candidates": sorted(rows.values(), key=lambda r: (r["cost_per_hour"], r["counts"])),
        "simulations": done,
        "simulation_wall_s": [round(t, 3) for t in seconds],
        "shard": [index, count],
        "fluid": {
            "horizon_s": demand.horizon_s,
            "classes": len(demand.classes),
            "resources": list(demand.resources),
        },
        **extra,
    }


def _timed(task: EvalTask) -> tuple[dict[str, Any], float]:
    """The evaluation and how long it took in its worker (kept apart from the record's
    measurements, which must not depend on the machine)."""
    started = time.perf_counter()
    return evaluate(task), time.perf_counter() - started


class _Inline:
    """One worker: evaluate in this process (tests, and one-core machines)."""

    def __enter__(self) -> _Inline:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def map(self, fn: Callable[[EvalTask], dict[str, Any]], tasks: list[EvalTask]) -> Any:
        return map(fn, tasks)

    def submit(self, fn: Callable[[EvalTask], dict[str, Any]], task: EvalTask) -> Any:
        result = fn(task)

        class _Done:
            def result(self) -> dict[str, Any]:
                return result

        return _Done()


def _executor(workers: int) -> Any:
    return _Inline() if workers <= 1 else ProcessPoolExecutor(max_workers=workers)


def _record(
    rows: dict[str, Any], cand: Candidate, ev: dict[str, Any], mine: list[Candidate]
) -> None:
    row = rows[cand.key()]
    row["evaluation"] = ev
    ok = all(ev["slo_met"])
    row["status"] = "meets" if ok else "misses"
    for other in mine:
        r = rows[other.key()]
        if r["status"] != "undecided":
            continue
        if ok and r["cost_per_hour"] > row["cost_per_hour"]:
            r["status"] = "costlier"
        elif not ok and cand.dominates(other):
            r["status"] = "misses (inferred)"


def _pick(mine: list[Candidate], rows: dict[str, Any], workers: int, n: int) -> list[Candidate]:
    """Undecided candidates at evenly spaced cost quantiles (bisection with ``n`` probes)."""
    open_ = [c for c in mine if rows[c.key()]["status"] == "undecided"]
    if not open_ or n <= 0:
        return []
    n = min(n, len(open_))
    picks = [open_[(i + 1) * len(open_) // (n + 1)] for i in range(n)]
    return list(dict.fromkeys(picks))


def _spread(rest: list[Candidate], n: int) -> list[Candidate]:
    if len(rest) <= n:
        return rest
    return [rest[round(i * (len(rest) - 1) / max(1, n - 1))] for i in range(n)]


def default_workers() -> int:
    return max(1, min(len(os.sched_getaffinity(0)), 8))
