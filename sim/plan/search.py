"""Which candidates to simulate, in parallel, within a budget of simulations.

1. Enumerate the grid (``candidates``) and drop what the fluid bound proves infeasible.
2. Simulate the current cluster (the 'if nothing changes' answer).
3. Bisect on cost: simulate the undecided candidate at the middle of the cost range
   (``PROBES`` per step however many workers there are, so neither the steps nor the
   answer depend on the machine); a candidate that misses a goal rules out every
   candidate it dominates (no more nodes anywhere), one that meets them all rules out
   everything costlier. Repeat until nothing cheaper than the best is undecided or
   the budget is spent.
   A quarter of the budget is kept for step 4 when other shapes are given.
4. Other node shapes and MIG layouts (``shapes``): the best cluster so far (or the one
   closest to meeting the goals) with one GPU model's nodes arranged another way, at each
   level no higher than its own (and midway between levels); bisect those as in 3, and
   repeat from the new best (three rounds at most).
5. Spot-check the inference of 3 on the two costliest candidates cheaper than the best
   that were inferred to miss.
6. Spend what is left of the budget on costlier candidates spread over the cost range:
   the cost-vs-SLO Pareto front.

The inference in 3 assumes more nodes never make an SLO worse; the simulator does not
promise it (a policy can make worse choices with more room), so 5 checks it where it
matters most, the record lists every simulated pair that breaks it
(``monotonicity.violations``), and the report says which answers were simulated and
which inferred. With ``--shard i/N`` a process takes every
N-th surviving candidate (by cost) and searches only those; ``merge`` joins the shards.

With a ``Journal``, each evaluation is kept as it completes and one the journal already
holds is not simulated again: the search takes the same steps, so it gives the same record.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from sim.cluster import Cluster
from sim.job import Job
from sim.plan.candidates import Candidate, Pool, build_cluster, candidate_grid
from sim.plan.evaluate import EvalTask, evaluate
from sim.plan.fluid import FluidBound, FluidDemand, fluid_bound, fluid_demand
from sim.plan.journal import Journal
from sim.plan.shapes import Arrangement, neighbours
from sim.plan.slo import Slo, goal_ratios
from sim.policies import PolicyOptions
from sim.pool import WorkerPool, executor

__all__ = [
    "PROBES",
    "SearchSettings",
    "candidate_bound",
    "evaluate_all",
    "search",
    "violations",
]

PROBES = 1
"""Candidates each bisection step simulates. Not the number of workers: the same inputs must
give the same answer on any machine. One: on the demo plan, 1 to 4 probes per step answered
$1,150, $1,425, $1,344 and $1,281 an hour for the same 24 simulations, as each step then
learns from every simulation before it."""


@dataclass(frozen=True)
class SearchSettings:
    levels: tuple[float, ...] = (0.75, 1.0, 1.25, 1.5)
    """Scale factors per GPU model applied to the current node pools."""
    max_simulations: int = 24
    """Simulations per process (per shard), the current cluster included."""
    workers: int = 2
    """Processes that simulate: how soon the answer comes, never which answer."""
    policy: str = "apportion"
    seed: int = 0
    options: PolicyOptions = field(default_factory=PolicyOptions)
    shard: tuple[int, int] = (0, 1)
    budget_per_hour: float | None = None
    look_ahead: bool = True
    """Let idle workers simulate what the next bisection step may ask for (False: the
    benchmark's baseline). Changes the wall time, never the answer."""


Progress = Callable[[int, int], None]
UnderWay = Callable[[str, float], None]
"""A simulation's label and the share of it done, as its worker reports it."""


def search(
    cluster: Cluster,
    pools: Sequence[Pool],
    jobs: Sequence[Job],
    slos: Sequence[Slo],
    settings: SearchSettings,
    progress: Progress | None = None,
    today: Sequence[Job] | None = None,
    options: Sequence[Arrangement] = (),
    journal: Journal | None = None,
    under_way: UnderWay | None = None,
    bounding: Progress | None = None,
) -> dict[str, Any]:
    """The sweep's record: every candidate with its cost, bound and (if run) evaluation.
    ``options``: other node shapes and MIG layouts per GPU model (``shapes``), tried
    around the best cluster the level grid finds; ``journal``: evaluations kept so far,
    and where to keep new ones; ``under_way``: how far each simulation running is;
    ``bounding``: how far the fluid bound's pass over the demand is (before the first
    simulation)."""
    base = sum(1 for p in pools if p.count)
    current = Candidate(
        tuple(p.count for p in pools), tuple((p.model, 1.0) for p in pools), base=base
    )
    grid = candidate_grid(pools, settings.levels)
    if current.counts not in {c.counts for c in grid}:
        grid.append(current)
    flavors = sorted({f for p in pools for f in p.node_capacity})
    demand = fluid_demand(jobs, cluster, slos, flavors, bounding)
    rows: dict[str, dict[str, Any]] = {}

    def add(cand: Candidate) -> None:
        bound = candidate_bound(demand, pools, cand)
        rows[cand.key()] = {
            "key": cand.key(),
            "counts": list(cand.counts),
            "levels": dict(cand.levels),
            "shapes": dict(cand.shapes),
            "nodes": [
                [p.name, p.describe, c] for p, c in zip(pools, cand.counts, strict=True) if c
            ],
            "gpus": cand.gpus_by_model(pools),
            "cost_per_hour": round(cand.cost_per_hour(pools), 4),
            "fluid_load": round(bound.load, 4) if bound.load < 1e9 else None,
            "pruned": bound.reason,
            "current": cand.counts == current.counts,
            "status": "pruned" if bound.pruned else "undecided",
            "evaluation": None,
        }

    for cand in grid:
        add(cand)
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
    budget = settings.max_simulations
    # Shapes and layouts get a quarter of the budget (at least one simulation).
    reserve = max(1, budget // 4) if options and budget > 1 else 0
    done = 0
    spot_checked: list[str] = []
    if progress:
        progress(done, budget)
    ahead_of = _Ahead()
    with executor(settings.workers, under_way) as pool:

        def task(c: Candidate) -> EvalTask:
            return EvalTask(
                c.key(),
                build_cluster(cluster, pools, c),
                tuple(jobs),
                tuple(slos),
                settings.policy,
                settings.seed,
                settings.options,
            )

        def run(batch: list[Candidate], ahead: Callable[[], list[Candidate]] | None = None) -> None:
            """Simulate ``batch``; meanwhile, workers it leaves idle simulate what ``ahead``
            says the next step may ask for."""
            nonlocal done
            futures = [ahead_of.take(c.key()) or _launch(pool, task(c), journal) for c in batch]
            ahead_of.drop_queued()
            idle = settings.workers - len(batch) - ahead_of.running(today_future)
            if ahead is not None and idle > 0 and settings.look_ahead:
                for c in ahead()[:idle]:
                    ahead_of.launch(c.key(), _launch(pool, task(c), journal))
            timed = [f.result() for f in futures]
            seconds.extend(t for _, t in timed)
            for cand, (ev, _) in zip(batch, timed, strict=True):
                _record(rows, cand, ev, mine)
            done += len(batch)
            if progress:
                progress(done, budget)

        def bisect(limit: int, first: list[Candidate], among: list[Candidate]) -> None:
            while limit - done > 0:
                want = min(PROBES, limit - done) - len(first)
                probes = _pick([c for c in among if c not in first], rows, want)
                batch = first + probes
                first = []
                if not batch:
                    return

                def ahead(batch: list[Candidate] = batch) -> list[Candidate]:
                    left = limit - done - len(batch)
                    if left <= 0:
                        return []
                    return _next_picks(batch, rows, mine, among, min(PROBES, left))

                run(batch, ahead)

        if index == 0 and today is not None:
            # The current cluster under today's demand: what 'nothing changes' changes from.
            today_task = EvalTask(
                "today",
                build_cluster(cluster, pools, current),
                tuple(today),
                tuple(slos),
                settings.policy,
                settings.seed,
                settings.options,
            )
            today_future: Future[Timed] | None = _launch(pool, today_task, journal)
        else:
            today_future = None
        # The current cluster goes with the first probes (it may also be pruned).
        bisect(budget - reserve, [current] if index == 0 else [], mine)
        # Nothing met the goals: simulate the largest candidate, pruned or not, so the
        # 'closest option' is the most the grid can do, not just what was tried.
        largest = max(mine, key=lambda c: (sum(c.counts), c.counts), default=None)
        if (
            largest is not None
            and budget - done > 0
            and not any(rows[c.key()]["status"] == "meets" for c in mine)
            and rows[largest.key()]["evaluation"] is None
        ):
            run([largest])
        # Other node shapes and MIG layouts, one GPU model at a time around the best so
        # far (coordinate descent: a round starts from the previous round's best).
        for _ in range(3 if options else 0):
            ref = _reference(mine, rows, slos)
            if ref is None or budget - done <= 0:
                break
            met = rows[ref.key()]["status"] == "meets"
            unique = {c.key(): c for c in neighbours(ref, pools, options, settings.levels, met)}
            fresh = [c for k, c in unique.items() if k not in rows]
            if not fresh:
                break
            best = _best_cost(mine, rows)
            for cand in fresh:
                add(cand)
                row = rows[cand.key()]
                if row["status"] == "undecided" and row["cost_per_hour"] > best:
                    row["status"] = "costlier"
                mine.append(cand)
            before = done
            # Only the new arrangements: the grid's own leftovers had their share.
            bisect(budget, [], fresh)
            if done == before:
                break
        # Spot-check the dominance inference: the costliest candidates cheaper than the
        # best that were inferred to miss (more nodes never hurting is an assumption).
        best = _best_cost(mine, rows)
        inferred = sorted(
            (
                c
                for c in mine
                if rows[c.key()]["status"] == "misses (inferred)"
                and rows[c.key()]["cost_per_hour"] < best
            ),
            key=lambda c: -rows[c.key()]["cost_per_hour"],
        )
        check = inferred[: min(2, max(0, budget - done))]
        if check:
            spot_checked = [c.key() for c in check]
            run(check)
        # The Pareto front: costlier candidates spread over the range.
        left = budget - done
        if left > 0:
            rest = [c for c in mine if rows[c.key()]["status"] in ("undecided", "costlier")]
            spread = _spread(rest, left)
            for start in range(0, len(spread), max(1, settings.workers)):
                run(spread[start : start + settings.workers])
        if today_future is not None:
            extra["today"] = today_future.result()[0]
        ahead_of.abandon(pool)
    return {
        "candidates": sorted(rows.values(), key=lambda r: (r["cost_per_hour"], r["counts"])),
        "simulations": done,
        "simulation_wall_s": [round(t, 3) for t in seconds],
        "shard": [index, count],
        "pools": [
            {"name": p.name, "model": p.model, "describe": p.describe, "today": p.count}
            for p in pools
        ],
        "fluid": {
            "horizon_s": demand.horizon_s,
            "classes": len(demand.classes),
            "resources": list(demand.resources),
            "windows": len(demand.windows),
        },
        "monotonicity": {
            "spot_checked": spot_checked,
            "violations": violations([rows[c.key()] for c in mine]),
        },
        "ahead": {"simulated": ahead_of.launched, "used": ahead_of.used},
        **extra,
    }


def candidate_bound(demand: FluidDemand, pools: Sequence[Pool], cand: Candidate) -> FluidBound:
    """The fluid bound of ``cand``: its capacity, GPUs and, per GPU model, its largest
    node in use (the pods that fit no node)."""
    largest: dict[str, int] = {}
    for c, p in zip(cand.counts, pools, strict=True):
        if c:
            largest[p.model] = max(largest.get(p.model, 0), p.gpus_per_node)
    return fluid_bound(demand, cand.capacity(pools), cand.gpus(pools), largest)


def _best_cost(mine: list[Candidate], rows: dict[str, Any]) -> float:
    return min(
        (rows[c.key()]["cost_per_hour"] for c in mine if rows[c.key()]["status"] == "meets"),
        default=math.inf,
    )


def _reference(
    mine: list[Candidate], rows: dict[str, Any], slos: Sequence[Slo]
) -> Candidate | None:
    """The cheapest candidate that meets every goal, else the simulated one closest to
    meeting them (smallest worst goal ratio, then cost)."""
    simulated = [c for c in mine if rows[c.key()]["evaluation"] is not None]
    if not simulated:
        return None

    def rank(c: Candidate) -> tuple[bool, float, float]:
        row = rows[c.key()]
        worst = max(goal_ratios(slos, row["evaluation"]), default=0.0)
        return (row["status"] != "meets", worst if row["status"] != "meets" else 0.0,
                row["cost_per_hour"])  # fmt: skip

    return min(simulated, key=rank)


def violations(rows: Sequence[dict[str, Any]]) -> list[list[str]]:
    """Simulated pairs (keys) where more nodes in every pool missed a goal the smaller
    cluster met: where 'more nodes never hurt' is false."""
    simulated = [r for r in rows if r["evaluation"] is not None]
    return [
        [big["key"], small["key"]]
        for big in simulated
        if big["status"] == "misses"
        for small in simulated
        if small["status"] == "meets"
        and all(a >= b for a, b in zip(big["counts"], small["counts"], strict=True))
    ]


Timed = tuple[dict[str, Any], float]


def _timed(task: EvalTask) -> Timed:
    """The evaluation and how long it took in its worker (kept apart from the record's
    measurements, which must not depend on the machine)."""
    started = time.perf_counter()
    return evaluate(task), time.perf_counter() - started


def _launch(pool: Any, task: EvalTask, journal: Journal | None) -> Future[Timed]:
    """``task``'s evaluation: from the journal, else simulated in ``pool`` and journaled
    the moment it completes (not when the batch does)."""
    if journal is not None:
        journal.check()
    kept = journal.kept(task) if journal is not None else None
    if kept is not None:
        done: Future[Timed] = Future()
        done.set_result(kept)
        return done
    future: Future[Timed] = pool.submit(_timed, task)
    if journal is not None:

        def keep(f: Future[Timed]) -> None:
            if not f.cancelled() and f.exception() is None:
                journal.keep(task, *f.result())

        future.add_done_callback(keep)
    return future


def _record(
    rows: dict[str, Any], cand: Candidate, ev: dict[str, Any], mine: list[Candidate]
) -> None:
    rows[cand.key()]["evaluation"] = ev
    _conclude(rows, cand, all(ev["slo_met"]), mine)


def _conclude(rows: dict[str, Any], cand: Candidate, ok: bool, mine: list[Candidate]) -> None:
    """``cand`` meets every goal (``ok``) or misses one: what that rules out."""
    row = rows[cand.key()]
    row["status"] = "meets" if ok else "misses"
    for other in mine:
        r = rows[other.key()]
        if r["status"] != "undecided":
            continue
        if ok and r["cost_per_hour"] > row["cost_per_hour"]:
            r["status"] = "costlier"
        elif not ok and cand.dominates(other):
            r["status"] = "misses (inferred)"


def _pick(mine: list[Candidate], rows: dict[str, Any], n: int) -> list[Candidate]:
    """Undecided candidates at evenly spaced cost quantiles (bisection with ``n`` probes)."""
    open_ = [c for c in mine if rows[c.key()]["status"] == "undecided"]
    if not open_ or n <= 0:
        return []
    n = min(n, len(open_))
    picks = [open_[(i + 1) * len(open_) // (n + 1)] for i in range(n)]
    return list(dict.fromkeys(picks))


def _next_picks(
    batch: list[Candidate],
    rows: dict[str, Any],
    mine: list[Candidate],
    among: list[Candidate],
    want: int,
) -> list[Candidate]:
    """What the next bisection step picks, for each way ``batch`` may turn out (every
    candidate missing first, as a miss rules out less and leaves the longer search), in
    that order without repeats: the candidates worth simulating before they are asked for."""
    picks: list[Candidate] = []
    for outcome in itertools.product((False, True), repeat=len(batch)):
        trial = {k: {"status": r["status"], "cost_per_hour": r["cost_per_hour"]}
                 for k, r in rows.items()}  # fmt: skip
        for cand, ok in zip(batch, outcome, strict=True):
            _conclude(trial, cand, ok, mine)
        picks += _pick(among, trial, want)
    return [c for c in dict.fromkeys(picks) if c not in batch]


class _Ahead:
    """Simulations started before the search asks for them, on workers a bisection step
    leaves idle. A step picks its candidates as if none had been started, so the answer is
    the same with any number of workers; only the wall time changes."""

    def __init__(self) -> None:
        self._futures: dict[str, Future[Timed]] = {}
        self.launched = 0
        self.used = 0

    def launch(self, key: str, future: Future[Timed]) -> None:
        if key not in self._futures:
            self._futures[key] = future
            self.launched += 1

    def take(self, key: str) -> Future[Timed] | None:
        future = self._futures.pop(key, None)
        self.used += future is not None
        return future

    def drop_queued(self) -> None:
        """Cancel what has not started: the step it was for went the other way."""
        for key, future in list(self._futures.items()):
            if future.cancel():
                del self._futures[key]
                self.launched -= 1

    def running(self, *others: Future[Timed] | None) -> int:
        busy = [*self._futures.values(), *(f for f in others if f is not None)]
        return sum(1 for f in busy if not f.done())

    def abandon(self, pool: Any) -> None:
        """The search is over: stop what still runs rather than wait for answers nobody
        will read (the journal keeps those that finished)."""
        self.drop_queued()
        if any(not f.done() for f in self._futures.values()) and isinstance(pool, WorkerPool):
            pool.stop_workers()


def _spread(rest: list[Candidate], n: int) -> list[Candidate]:
    if len(rest) <= n:
        return rest
    return [rest[round(i * (len(rest) - 1) / max(1, n - 1))] for i in range(n)]


def evaluate_all(
    tasks: list[EvalTask],
    workers: int,
    journal: Journal | None = None,
    under_way: UnderWay | None = None,
) -> list[dict[str, Any]]:
    """Evaluate ``tasks`` in a pool of ``workers`` processes (in this one for 1), through
    ``journal`` and telling ``under_way`` as ``search`` does."""
    with executor(min(workers, len(tasks)), under_way) as pool:
        futures = [_launch(pool, t, journal) for t in tasks]
        return [f.result()[0] for f in futures]
