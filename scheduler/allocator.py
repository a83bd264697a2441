"""The global decision: an aggregated ILP in PuLP/HiGHS, realized and checked by the greedy cycle.

Why aggregated: one binary per (workload, GPU) is 50,000+ variables at 10,000 GPUs and
takes seconds to solve. Pending workloads that are interchangeable (same queue, priority,
pods, options, CPU/memory and node constraints) form a *class*, and the model only asks
how many of each class to admit on each option — integers, a few thousand at most.
Capacity is aggregated per GPU model (milli-GPU, whole GPUs per block size) and per MIG
profile, with each class bounded by what its eligible nodes can host; quotas, borrowing
and lending limits are exact. The objective is ``scheduler.objective``, linearized.

The ILP's answer is then *realized* by the greedy cycle (placement down to GPU index and
MIG slice, in fair-share and priority order, hinted workloads first): aggregation is a
relaxation, and realization is where every hard constraint is enforced. Both answers are
scored with the same objective; the better one is returned, so the ILP never makes a
decision worse than greedy, and the Decision says which path answered.

This is the only module that imports PuLP.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pulp

from scheduler.catalog import MILLI_PER_GPU
from scheduler.compiled import Compiled, Entry, compile_snapshot
from scheduler.decision import to_decision
from scheduler.demand import Kind, Option
from scheduler.greedy import CycleResult, run_cycle
from scheduler.model import Decision, Snapshot, SolverStats
from scheduler.objective import GUARANTEE, KEEP_WHOLE, PRIORITY, SEGMENTS, borrow_slope
from scheduler.reasons import Outcome
from scheduler.state import ClusterState

__all__ = ["decide"]

OPTION_RANK_PENALTY = 0.01
"""Per GPU-eq and rank: among equal outcomes prefer the workload's earlier options."""


@dataclass(slots=True)
class _Class:
    members: list[Entry]
    options: tuple[Option, ...]
    pods: int
    queue: str
    tier: float


def _class_key(entry: Entry) -> tuple[object, ...]:
    w = entry.workload
    return (
        w.queue,
        w.priority,
        entry.options,
        w.pods,
        w.cpu_milli,
        w.memory_mib,
        tuple(sorted(w.node_selector.items())),
        w.tolerations,
    )


def _classes(pending: list[Entry]) -> list[_Class]:
    groups: dict[tuple[object, ...], list[Entry]] = {}
    for entry in sorted(pending, key=lambda e: e.order):
        if entry.options:
            groups.setdefault(_class_key(entry), []).append(entry)
    return [
        _Class(
            members,
            members[0].options,
            members[0].workload.pods,
            members[0].workload.queue,
            members[0].tier,
        )
        for members in groups.values()
    ]


class _WarmHiGHS(pulp.HiGHS):  # type: ignore[misc]
    """PuLP's HiGHS with a warm start (the greedy answer) and the MIP gap read back."""

    def __init__(self, start: dict[str, float], **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.start = start
        self.mip_gap: float | None = None
        self.model_status = ""

    def callSolver(self, lp: pulp.LpProblem) -> None:
        import highspy

        highs = lp.solverModel
        if self.start:
            solution = highspy.HighsSolution()
            values = [0.0] * highs.getNumCol()
            for var in lp.variables():
                values[var.index] = self.start.get(var.name, 0.0)
            solution.col_value = values
            solution.value_valid = True
            highs.setSolution(solution)
        highs.run()
        info = highs.getInfo()
        self.mip_gap = float(info.mip_gap) if info.mip_gap < 1e30 else None
        self.model_status = highs.modelStatusToString(highs.getModelStatus())


@dataclass(slots=True)
class _Solved:
    hints: dict[str, int]
    status: str
    gap_pct: float | None
    variables: int
    classes: int


def _free_blocks(state: ClusterState, model: str) -> tuple[list[int], int, int, int]:
    """Free capacity of ``model``'s non-MIG GPUs, from the pools' indexes: free whole GPUs
    per node, free milli on shared GPUs, free milli in all, and free GPUs on used nodes."""
    blocks: list[int] = []
    used_node_gpus = 0
    shared_milli = 0
    partial_milli = 0
    for pool in state.pools:
        if pool.model != model:
            continue
        for (entirely_free, free), nodes in pool.buckets.items():
            blocks.extend([free] * len(nodes))
            if not entirely_free:
                used_node_gpus += free * len(nodes)
        for free_milli, _, _ in pool.fractions:
            shared_milli += free_milli
            if free_milli < MILLI_PER_GPU:
                partial_milli += free_milli
    # Only shared GPUs can be partly used; every other free GPU is in a bucket.
    total_milli = MILLI_PER_GPU * sum(blocks) + partial_milli
    return blocks, shared_milli, total_milli, used_node_gpus


MIP_GAP = 0.005
"""Stop at a proven 0.5 % optimality gap: the last fraction of a percent costs seconds at
10,000 GPUs and changes little once realized."""

MIN_SOLVE_S = 0.02
"""Below this much solver time the ILP cannot improve on greedy: skip it."""


def _solve_ilp(
    compiled: Compiled, greedy: CycleResult, time_left: Callable[[], float]
) -> _Solved | None:
    """Build and solve the class ILP; ``time_left()`` is the solver's share of the budget,
    read after the model is built so building counts against the budget too."""
    state, book = compiled.state, compiled.book
    classes = _classes(compiled.pending)
    if not classes:
        return None
    problem = pulp.LpProblem("apportion", pulp.LpMaximize)
    x: dict[tuple[int, int], pulp.LpVariable] = {}
    objective: list[tuple[pulp.LpVariable, float]] = []
    # Per-model / per-profile / per-account usage terms: (var, coefficient).
    milli_terms: dict[str, list[tuple[pulp.LpVariable, float]]] = {}
    frac_terms: dict[str, list[tuple[pulp.LpVariable, float]]] = {}
    whole_terms: dict[tuple[str, int], list[tuple[pulp.LpVariable, float]]] = {}
    mig_terms: dict[str, list[tuple[pulp.LpVariable, float]]] = {}
    quota_terms: dict[tuple[str, str], list[tuple[pulp.LpVariable, float]]] = {}
    gpu_terms: dict[tuple[str, str], list[tuple[pulp.LpVariable, float]]] = {}
    for ci, cls in enumerate(classes):
        n = len(cls.members)
        w = cls.members[0].workload
        for oi, option in enumerate(cls.options):
            amount = option.quota_per_pod * cls.pods
            if not book.check(cls.queue, option.flavor, amount).ok:
                continue
            pools = state.eligible_pools(w, option)
            upper = min(n, state.capacity_bound(option, pools) // cls.pods) if pools else 0
            if upper <= 0:
                continue
            var = problem.add_variable(f"x_{ci}_{oi}", 0, upper, cat=pulp.LpInteger)
            x[(ci, oi)] = var
            gpu_eq = cls.members[0].size
            objective.append(
                (var, PRIORITY * cls.tier * gpu_eq - OPTION_RANK_PENALTY * oi * gpu_eq)
            )
            quota_terms.setdefault((cls.queue, option.flavor), []).append((var, amount))
            gpu_terms.setdefault((cls.queue, option.flavor), []).append((var, gpu_eq))
            model = option.models[0]
            if option.kind is Kind.WHOLE:
                milli_terms.setdefault(model, []).append(
                    (var, cls.pods * option.per_pod * MILLI_PER_GPU)
                )
                whole_terms.setdefault((model, option.per_pod), []).append((var, cls.pods))
            elif option.kind is Kind.FRACTION:
                milli_terms.setdefault(model, []).append((var, cls.pods * option.per_pod))
                frac_terms.setdefault(model, []).append((var, cls.pods * option.per_pod))
            else:
                mig_terms.setdefault(option.profile or "", []).append((var, cls.pods))
        members = [x[(ci, oi)] for oi in range(len(cls.options)) if (ci, oi) in x]
        if len(members) > 1:
            problem += pulp.lpSum(members) <= n, f"class_{ci}"
    if not x:
        return None

    def affine(terms: list[tuple[pulp.LpVariable, float]]) -> pulp.LpAffineExpression:
        return pulp.LpAffineExpression(terms)

    # Capacity, aggregated per model and block size, per MIG profile.
    start: dict[str, float] = {}
    fragment_vars: list[pulp.LpVariable] = []
    for model, terms in milli_terms.items():
        blocks, shared_milli, total_milli, used_node_gpus = _free_blocks(state, model)
        problem += affine(terms) <= total_milli, f"milli_{model}"
        if model in frac_terms:
            problem += affine(frac_terms[model]) <= shared_milli, f"shared_{model}"
        sizes = sorted({k for (m, k) in whole_terms if m == model})
        for k in sizes:
            problem += (
                affine(whole_terms[(model, k)]) <= sum(b // k for b in blocks),
                f"pods_{model}_{k}",
            )
            big = [
                t
                for kk in sizes
                if kk >= k
                for var, pods in whole_terms[(model, kk)]
                for t in [(var, pods * kk)]
            ]
            problem += affine(big) <= sum(b for b in blocks if b >= k), f"gpus_{model}_{k}"
        whole = [(var, pods * k) for k in sizes for var, pods in whole_terms[(model, k)]]
        if whole:
            # GPUs taken from entirely free nodes beyond what used nodes can absorb.
            spill = problem.add_variable(f"spill_{model}", 0)
            problem += spill >= affine(whole) - used_node_gpus, f"spill_{model}"
            fragment_vars.append(spill)
    for profile, terms in mig_terms.items():
        free = sum(len(pool.mig_free.get(profile, ())) for pool in state.pools)
        problem += affine(terms) <= free, f"mig_{profile}"

    # Quotas: borrowing limits per queue, lendable pool per cohort.
    drawn_terms: dict[tuple[str, str], list[tuple[pulp.LpVariable, float]]] = {}
    for (queue, flavor), terms in quota_terms.items():
        account = book.accounts[queue]
        used = account.usage.get(flavor, 0)
        nominal = account.nominal.get(flavor, 0)
        limit = account.borrow_limit.get(flavor)
        if limit is not None and limit < (1 << 61):
            problem += affine(terms) <= nominal + limit - used, f"borrow_{queue}_{flavor}"
        assert account.cohort is not None
        r = problem.add_variable(f"draw_{queue}_{flavor}", 0)
        kept = account.kept.get(flavor, 0)
        problem += r >= affine(terms) + (used - kept), f"drawdef_{queue}_{flavor}"
        drawn_terms.setdefault((account.cohort, flavor), []).append((r, 1.0))
    for (cohort, flavor), terms in drawn_terms.items():
        fixed = sum(
            max(0, acc.usage.get(flavor, 0) - acc.kept.get(flavor, 0))
            for q, acc in book.accounts.items()
            if acc.cohort == cohort and (q, flavor) not in quota_terms
        )
        lendable = book.lendable.get((cohort, flavor), 0)
        problem += affine(terms) <= lendable - fixed, f"cohort_{cohort}_{flavor}"

    # Utility: guarantee, then concave weighted borrowing (scheduler.objective).
    for key, terms in gpu_terms.items():
        queue, flavor = key
        g = problem.add_variable(f"g_{queue}_{flavor}", 0, compiled.headroom.get(key, 0.0))
        segments = []
        width = compiled.widths.get(key, 1.0)
        for j in range(SEGMENTS):
            seg = problem.add_variable(
                f"b_{queue}_{flavor}_{j}", 0, None if j == SEGMENTS - 1 else width
            )
            segments.append(seg)
            objective.append((seg, borrow_slope(j)))
        objective.append((g, GUARANTEE))
        problem += (affine(terms) == pulp.lpSum([g, *segments]), f"util_{queue}_{flavor}")
    for spill in fragment_vars:
        objective.append((spill, -KEEP_WHOLE))
    problem += affine(objective)

    # Warm start: greedy's admissions that needed no preemption.
    counts: dict[tuple[int, int], int] = {}
    class_of = {e.workload.name: (ci, cls) for ci, cls in enumerate(classes) for e in cls.members}
    for name, verdict in greedy.outcomes.items():
        if verdict.outcome is Outcome.ADMIT and verdict.option is not None and name in class_of:
            ci, cls = class_of[name]
            oi = cls.options.index(verdict.option)
            counts[(ci, oi)] = counts.get((ci, oi), 0) + 1
    start = {var.name: float(counts.get(key, 0)) for key, var in x.items()}

    solve_s = time_left()
    if solve_s < MIN_SOLVE_S:
        return _Solved(
            {}, "budget spent building the ILP", None, len(problem.variables()), len(classes)
        )
    solver = _WarmHiGHS(start, msg=False, timeLimit=solve_s, threads=1, gapRel=MIP_GAP)
    problem.solve(solver)
    status = solver.model_status or pulp.LpStatus[problem.status]
    if problem.sol_status not in (pulp.LpSolutionOptimal, pulp.LpSolutionIntegerFeasible):
        return _Solved({}, status, None, len(problem.variables()), len(classes))
    hints: dict[str, int] = {}
    for ci, cls in enumerate(classes):
        waiting = iter(cls.members)
        for oi in range(len(cls.options)):
            var = x.get((ci, oi))
            if var is None:
                continue
            for _ in range(round(var.value() or 0)):
                entry = next(waiting, None)
                if entry is not None:
                    hints[entry.workload.name] = oi
    gap = None if solver.mip_gap is None else 100.0 * solver.mip_gap
    return _Solved(hints, status, gap, len(problem.variables()), len(classes))


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while a decision runs.

    A decision allocates hundreds of thousands of short-lived objects and frees them in
    order; the collector's generation-2 passes over a large heap then cost 15–40 % of the
    wall time on a 10,000-GPU snapshot (measured: 494–695 ms vs 411–432 ms). Reference
    counting still frees everything; the collector is restored as the caller had it."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def decide(
    snapshot: Snapshot,
    *,
    budget_ms: float = 1000.0,
    use_ilp: bool = True,
    clock: Callable[[], float] = time.perf_counter,
) -> Decision:
    """A global decision for every pending workload in the snapshot.

    The greedy cycle always runs first (warm start and fallback). The ILP then gets what
    is left of ``budget_ms`` after reserving time to realize its answer; if it finds no
    solution in time, or its realized answer scores lower, greedy's answer is returned.
    """
    with _collector_paused():
        return _decide(snapshot, budget_ms, use_ilp, clock)


def _decide(
    snapshot: Snapshot, budget_ms: float, use_ilp: bool, clock: Callable[[], float]
) -> Decision:
    started = clock()
    catalog = snapshot.catalog()
    compiled = compile_snapshot(snapshot, catalog)
    greedy = run_cycle(compiled)
    greedy_s = clock() - started

    def stats(path: str, status: str, objective: float, **extra: object) -> SolverStats:
        return SolverStats(
            path=path,
            status=status,
            objective=round(objective, 6),
            greedy_objective=round(greedy.objective, 6),
            wall_ms=round((clock() - started) * 1000.0, 3),
            budget_ms=budget_ms,
            **extra,
        )

    if not use_ilp or not compiled.pending:
        return to_decision(compiled, greedy, stats("greedy", "greedy only", greedy.objective))
    # Realizing the ILP's answer costs about one more greedy cycle: keep that in reserve.
    deadline = started + budget_ms / 1000.0 - 1.2 * greedy_s

    def time_left() -> float:
        return deadline - clock()

    if time_left() < MIN_SOLVE_S + greedy_s / 4:
        return to_decision(
            compiled, greedy, stats("greedy", "budget spent before the ILP", greedy.objective)
        )
    fresh = compile_snapshot(snapshot, catalog)
    solved = _solve_ilp(fresh, greedy, time_left)
    if solved is None:
        return to_decision(
            compiled, greedy, stats("greedy", "nothing to optimize", greedy.objective)
        )
    if not solved.hints and solved.gap_pct is None:
        return to_decision(
            compiled,
            greedy,
            stats(
                "greedy",
                f"ILP: {solved.status}",
                greedy.objective,
                workload_classes=solved.classes,
                variables=solved.variables,
            ),
        )
    realized = run_cycle(fresh, solved.hints)
    extra = {
        "gap_pct": solved.gap_pct,
        "workload_classes": solved.classes,
        "variables": solved.variables,
    }
    if realized.objective >= greedy.objective:
        return to_decision(
            fresh, realized, stats("ilp", solved.status, realized.objective, **extra)
        )
    return to_decision(
        compiled,
        greedy,
        stats("greedy", f"ILP ({solved.status}) realized lower", greedy.objective, **extra),
    )
