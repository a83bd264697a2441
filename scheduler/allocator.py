"""The global decision: an aggregated ILP in PuLP/HiGHS, realized and checked by the greedy cycle.

Why aggregated: one binary per (workload, GPU) is 50,000+ variables at 10,000 GPUs and
takes seconds to solve. Pending workloads that are interchangeable (same queue, priority,
pods, options, CPU/memory and node constraints) form a *class*, and the model only asks
how many of each class to admit on each option — integers, a few thousand at most.
Capacity is aggregated per GPU model (milli-GPU, whole GPUs per block size) and per MIG
profile, with each class bounded by what its eligible nodes can host; quotas, borrowing
and lending limits are exact. Running workloads that a pending workload's queue policy
could evict form eviction classes, their counts continuous (a relaxation: cheaper to
solve, and the bound still holds). The objective is ``scheduler.objective``, linearized.

The model is a relaxation of the cycle (capacity per model and block size, eviction rights
per queue), so the bound HiGHS proves on it bounds every decision: the Decision's gap is
the returned answer's distance to it, whichever path answered.

The ILP's answer is then *realized* by the greedy cycle (placement down to GPU index and
MIG slice, in fair-share and queue order, hinted workloads first with what is ahead of
them in their queue): aggregation is a relaxation, and realization is where every hard
constraint is enforced. Both answers are scored with the same objective; the ILP's is
returned only when strictly better (on a tie greedy's, whose fair-share order the model's
objective does not always decide), so the ILP never makes a decision worse than greedy,
and the Decision says which path answered.

This is the only module that imports PuLP.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import pulp

from scheduler import collector
from scheduler.aggregation import (
    eviction_classes,
    extra_pods,
    free_blocks,
    freeable_node_gpus,
    workload_classes,
)
from scheduler.catalog import MILLI_PER_GPU
from scheduler.compiled import Compiled, compile_snapshot
from scheduler.decision import to_decision
from scheduler.demand import Kind
from scheduler.greedy import Cycle, CycleResult, run_cycle
from scheduler.improve import improve
from scheduler.model import Decision, Snapshot, SolverStats
from scheduler.objective import GUARANTEE, KEEP_WHOLE, MOVE, PRIORITY, SEGMENTS, borrow_slope
from scheduler.reasons import Outcome

__all__ = ["decide"]

IMPROVE_SHARE = 0.6
"""The improvement phase after greedy's cycle (``scheduler.improve``) may run until this
share of the budget is spent: on the largest clusters the cycle alone takes more, and the
phase is skipped, so the decision stays within its budget."""

OPTION_RANK_PENALTY = 1e-4
"""Per GPU-eq and rank: among equal outcomes prefer the workload's earlier options. Small,
so it cannot move the objective bound by more than a hundredth of a percent."""


class _WarmHiGHS(pulp.HiGHS):  # type: ignore[misc]
    """PuLP's HiGHS with a warm start (the greedy answer) and the proven bound read back."""

    def __init__(self, start: dict[str, float], **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.start = start
        self.dual_bound: float | None = None
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
        # PuLP hands HiGHS a maximization as the minimization of the negated objective.
        sign = -1.0 if lp.sense == pulp.LpMaximize else 1.0
        bound = float(info.mip_dual_bound)
        self.dual_bound = sign * bound if abs(bound) < 1e30 else None
        self.model_status = highs.modelStatusToString(highs.getModelStatus())


@dataclass(slots=True)
class _Solved:
    hints: dict[str, int]
    status: str
    bound: float | None
    """Proven upper bound on the objective of any decision (``scheduler.objective``)."""
    variables: int
    classes: int


MIP_GAP = 0.005
"""Stop at a proven 0.5 % optimality gap: the last fraction of a percent costs seconds at
10,000 GPUs and changes little once realized."""

BUILD_SHARE = 0.5
"""Compiling the snapshot again and building the model take about this share of the greedy
cycle's time (measured on benchmarks/: 0.4 on (a), 0.7 on (b), 0.25 on (d)): with less time
left, the ILP would mostly be built only to be given up."""

MIN_SOLVE_S = 0.02
"""Below this much solver time the ILP cannot improve on greedy: skip it."""


def _solve_ilp(
    compiled: Compiled, greedy: CycleResult, time_left: Callable[[], float]
) -> _Solved | None:
    """Build and solve the class ILP; ``time_left()`` is the solver's share of the budget,
    read after the model is built so building counts against the budget too."""
    state, book = compiled.state, compiled.book
    classes = workload_classes(compiled.pending)
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
    evictable = eviction_classes(compiled)
    # Evictions may free quota of their flavors and devices of their models: a class's
    # bounds from today's free quota and capacity then grow by at most what they free.
    freeable_flavors = {group.flavor for group in evictable}
    extra = extra_pods(evictable)
    for ci, cls in enumerate(classes):
        n = len(cls.members)
        w = cls.members[0].workload
        for oi, option in enumerate(cls.options):
            amount = option.quota_per_pod * cls.pods
            if (
                option.flavor not in freeable_flavors
                and not book.check(cls.queue, option.flavor, amount).ok
            ):
                continue
            pools = state.eligible_pools(w, option)
            if not pools or state.never_hosts(pools, w.cpu_milli, w.memory_mib):
                continue
            room = state.capacity_bound(option, pools) + extra(option)
            upper = min(n, room // cls.pods)
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

    # Evictions: each frees what its workloads hold, at MOVE per GPU-equivalent. Only
    # devices and quota that pending classes compete for are worth a variable.
    e: dict[int, pulp.LpVariable] = {}
    milli_freed: dict[str, list[tuple[pulp.LpVariable, float]]] = {}
    shared_freed: dict[str, list[tuple[pulp.LpVariable, float]]] = {}
    whole_freed: dict[str, list[tuple[pulp.LpVariable, int, int]]] = {}
    """Per model: (variable, GPUs per pod, pods) of whole-GPU groups."""
    mig_freed: dict[str, list[tuple[pulp.LpVariable, float]]] = {}
    quota_freed: dict[tuple[str, str], list[tuple[pulp.LpVariable, float]]] = {}
    for gi, group in enumerate(evictable):
        option, model = group.option, group.option.models[0]
        if option.kind is Kind.MIG:
            wanted = (option.profile or "") in mig_terms
        else:
            wanted = model in milli_terms
        if not wanted:
            continue
        var = problem.add_variable(f"e_{gi}", 0, len(group.members))
        e[gi] = var
        objective.append((var, -MOVE * group.gpu_eq))
        quota_freed.setdefault((group.queue, group.flavor), []).append((var, group.amount))
        if option.kind is Kind.WHOLE:
            milli_freed.setdefault(model, []).append(
                (var, group.pods * option.per_pod * MILLI_PER_GPU)
            )
            whole_freed.setdefault(model, []).append((var, option.per_pod, group.pods))
            # Whole GPUs may sit on time-shared GPUs: evicting them frees shared milli.
            on_shared = max(
                sum(state.gpu_shared[g] for pod in v.allocation.pods for g in pod.gpus)
                for v in group.members
            )
            if on_shared:
                shared_freed.setdefault(model, []).append((var, on_shared * MILLI_PER_GPU))
        elif option.kind is Kind.FRACTION:
            milli_freed.setdefault(model, []).append((var, group.pods * option.per_pod))
            shared_freed.setdefault(model, []).append((var, group.pods * option.per_pod))
            # A fraction may be all that was left on its GPU: each pod may free one.
            whole_freed.setdefault(model, []).append((var, 1, group.pods))
        else:
            mig_freed.setdefault(option.profile or "", []).append((var, group.pods))

    def minus(terms: list[tuple[pulp.LpVariable, float]]) -> list[tuple[pulp.LpVariable, float]]:
        return [(var, -coef) for var, coef in terms]

    # Capacity, aggregated per model and block size, per MIG profile.
    start: dict[str, float] = {}
    fragment_vars: list[pulp.LpVariable] = []
    for model, terms in milli_terms.items():
        blocks, shared_milli, total_milli, used_node_gpus = free_blocks(state, model)
        freed = milli_freed.get(model, [])
        problem += affine(terms + minus(freed)) <= total_milli, f"milli_{model}"
        if model in frac_terms:
            fractions = frac_terms[model] + minus(shared_freed.get(model, []))
            problem += affine(fractions) <= shared_milli, f"shared_{model}"
        node_size = max((p.max_size for p in state.pools if p.model == model), default=0)
        sizes = sorted({k for (m, k) in whole_terms if m == model})
        for k in sizes:
            # An evicted pod of p GPUs adds at most ceil(p / k) free blocks of k GPUs, and
            # at most p + k - 1 GPUs (its own and the node's rest) to blocks of k or more.
            more_pods = [
                (v, -math.ceil(p / k) * pods * 1.0) for v, p, pods in whole_freed.get(model, [])
            ]
            more_gpus = [
                (v, -min(node_size, p + k - 1) * pods * 1.0)
                for v, p, pods in whole_freed.get(model, [])
            ]
            problem += (
                affine(whole_terms[(model, k)] + more_pods) <= sum(b // k for b in blocks),
                f"pods_{model}_{k}",
            )
            big = [
                t
                for kk in sizes
                if kk >= k
                for var, pods in whole_terms[(model, kk)]
                for t in [(var, pods * kk)]
            ]
            problem += (
                affine(big + more_gpus) <= sum(b for b in blocks if b >= k),
                f"gpus_{model}_{k}",
            )
        whole = [(var, pods * k) for k in sizes for var, pods in whole_terms[(model, k)]]
        if whole:
            # GPUs taken from entirely free nodes beyond what used nodes can absorb (GPUs
            # freed by evictions count as absorbable: optimistic, as a bound must be).
            spill = problem.add_variable(f"spill_{model}", 0)
            absorbed = [(v, p * pods * 1.0) for v, p, pods in whole_freed.get(model, [])]
            problem += (
                spill >= affine(whole + minus(absorbed)) - used_node_gpus,
                f"spill_{model}",
            )
            fragment_vars.append(spill)
    for profile, terms in mig_terms.items():
        free = sum(len(pool.mig_free.get(profile, ())) for pool in state.pools)
        problem += affine(terms + minus(mig_freed.get(profile, []))) <= free, f"mig_{profile}"

    # Quotas: borrowing limits per queue, lendable pool per cohort.
    drawn_terms: dict[tuple[str, str], list[tuple[pulp.LpVariable, float]]] = {}
    # In insertion order, not a set's: a set of strings iterates in an order that changes
    # with each process's hash seed, and so would the model's rows and HiGHS's answer.
    for queue, flavor in dict.fromkeys([*quota_terms, *quota_freed]):
        terms = quota_terms.get((queue, flavor), []) + minus(quota_freed.get((queue, flavor), []))
        account = book.accounts[queue]
        used = account.usage.get(flavor, 0)
        nominal = account.nominal.get(flavor, 0)
        limit = account.borrow_limit.get(flavor)
        if limit is not None and limit < (1 << 61) and (queue, flavor) in quota_terms:
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
            if acc.cohort == cohort
            and (q, flavor) not in quota_terms
            and (q, flavor) not in quota_freed
        )
        lendable = book.lendable(cohort, flavor)
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

    # Warm start: greedy's answer, admissions and evictions.
    counts: dict[tuple[int, int], int] = {}
    class_of = {e.workload.name: (ci, cls) for ci, cls in enumerate(classes) for e in cls.members}
    for name, verdict in greedy.outcomes.items():
        if verdict.outcome is not Outcome.PENDING and verdict.option is not None:
            ci, cls = class_of[name]
            oi = cls.options.index(verdict.option)
            counts[(ci, oi)] = counts.get((ci, oi), 0) + 1
    start = {var.name: float(counts.get(key, 0)) for key, var in x.items()}
    group_of = {v.workload.name: gi for gi, g in enumerate(evictable) for v in g.members}
    evicted: dict[int, int] = {}
    for victim, *_ in greedy.evictions:
        gi = group_of.get(victim.workload.name, -1)
        evicted[gi] = evicted.get(gi, 0) + 1
    start |= {var.name: float(evicted.get(gi, 0)) for gi, var in e.items()}
    # What the objective may hold beyond the model's terms: the rank penalty of what the
    # model could admit (a class with no variable admits nothing: a gang of 100,000 pods
    # must not inflate the bound), and whole free nodes (the model counts only GPUs taken
    # from them; evictions may free more).
    admissible: dict[int, tuple[int, int]] = {}
    """Class → (the latest option rank it may be admitted on, how many it may admit)."""
    for (ci, oi), var in x.items():
        rank, count = admissible.get(ci, (0, 0))
        admissible[ci] = (max(rank, oi), count + int(var.upBound))
    slack = OPTION_RANK_PENALTY * sum(
        rank * min(count, len(classes[ci].members)) * classes[ci].members[0].size
        for ci, (rank, count) in admissible.items()
    ) + KEEP_WHOLE * (state.entirely_free_gpus() + freeable_node_gpus(state, evictable))

    solve_s = time_left()
    if solve_s < MIN_SOLVE_S:
        return _Solved(
            {}, "budget spent building the ILP", None, len(problem.variables()), len(classes)
        )
    status, dual_bound = _solve(problem, start, time_left)
    bound = None if dual_bound is None else dual_bound + slack
    if problem.sol_status not in (pulp.LpSolutionOptimal, pulp.LpSolutionIntegerFeasible):
        return _Solved({}, status, bound, len(problem.variables()), len(classes))
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
    return _Solved(hints, status, bound, len(problem.variables()), len(classes))


def _solve(
    problem: pulp.LpProblem, start: dict[str, float], time_left: Callable[[], float]
) -> tuple[str, float | None]:
    """Solve with HiGHS, or with the CBC binary PuLP bundles where HiGHS is not installed
    (no highspy wheel for the platform) or fails: the ILP is an improvement on greedy's
    answer, and a solver's failure must not become the decision's. The status, and the
    proven bound on the model's objective where the solver reports one (HiGHS does)."""
    highs = _WarmHiGHS(start, msg=False, timeLimit=time_left(), threads=1, gapRel=MIP_GAP)
    if highs.available():
        try:
            problem.solve(highs)
            return highs.model_status or pulp.LpStatus[problem.status], highs.dual_bound
        except Exception as error:  # whatever the solver raised, greedy's answer stands
            why = f"HiGHS failed: {type(error).__name__}: {error}"
    else:
        why = "HiGHS is not installed"
    solve_s = time_left()
    if solve_s < MIN_SOLVE_S:
        return f"{why}; no time left for CBC", None
    for var in problem.variables():
        var.setInitialValue(start.get(var.name, 0.0))
    cbc = pulp.PULP_CBC_CMD(msg=False, timeLimit=solve_s, threads=1, gapRel=MIP_GAP, warmStart=True)
    try:
        problem.solve(cbc)
    except pulp.PulpSolverError as error:
        return f"{why}; CBC failed: {error}", None
    return f"CBC: {pulp.LpStatus[problem.status]} ({why})", None


def _gap_pct(bound: float | None, objective: float) -> float | None:
    """How far the answer may be from the best possible, in % of the proven bound: 0 when
    the answer reaches it (also where nothing can be admitted, a bound of 0); none where a
    share of a non-positive bound means nothing."""
    if bound is None:
        return None
    if objective >= bound - 1e-9:
        return 0.0
    if bound <= 0:
        return None
    return round(100.0 * (bound - objective) / bound, 4)


def decide(
    snapshot: Snapshot,
    *,
    budget_ms: float = 1000.0,
    use_ilp: bool = True,
    clock: Callable[[], float] = time.perf_counter,
    improve_phase: bool = True,
) -> Decision:
    """A global decision for every pending workload in the snapshot.

    The greedy cycle always runs first (warm start and fallback). The ILP then gets what
    is left of ``budget_ms`` after reserving time to realize its answer; if it finds no
    solution in time, or its realized answer scores no higher, greedy's answer is returned.
    ``improve_phase``: run ``scheduler.improve`` on both cycles while the budget allows (off,
    the answer does not depend on the clock when ``use_ilp`` is off).
    """
    with collector.paused():
        return _decide(snapshot, budget_ms, use_ilp, clock, improve_phase)


def _decide(
    snapshot: Snapshot,
    budget_ms: float,
    use_ilp: bool,
    clock: Callable[[], float],
    improve_phase: bool,
) -> Decision:
    started = clock()
    catalog = snapshot.catalog()
    compiled = compile_snapshot(snapshot, catalog)

    def improved(compiled: Compiled, until: float) -> Callable[[Cycle], int] | None:
        if not improve_phase:
            return None
        return lambda cycle: improve(cycle, compiled, lambda: clock() < until)

    phase_end = started + IMPROVE_SHARE * budget_ms / 1000.0
    greedy = run_cycle(compiled, improve=improved(compiled, phase_end))
    greedy_s = clock() - started

    def answer(
        used: Compiled, result: CycleResult, path: str, status: str, **extra: object
    ) -> Decision:
        """``result`` as the Decision, timed to the end: building it is part of the time
        the decision took (a fifth of it at 20,000 pending workloads)."""
        stats = SolverStats(
            path=path,
            status=status,
            objective=round(result.objective, 6),
            greedy_objective=round(greedy.objective, 6),
            wall_ms=0.0,
            budget_ms=budget_ms,
            **extra,
        )
        decision = to_decision(used, result, stats)
        wall_ms = round((clock() - started) * 1000.0, 3)
        return decision.model_copy(update={"stats": stats.model_copy(update={"wall_ms": wall_ms})})

    if not compiled.pending:
        return answer(compiled, greedy, "greedy", "nothing pending")
    if not use_ilp:
        return answer(compiled, greedy, "greedy", "greedy only")
    # Realizing the ILP's answer costs about one more greedy cycle: keep that in reserve.
    deadline = started + budget_ms / 1000.0 - 1.2 * greedy_s

    def time_left() -> float:
        return deadline - clock()

    if time_left() < MIN_SOLVE_S + BUILD_SHARE * greedy_s:
        return answer(compiled, greedy, "greedy", "budget spent before the ILP")
    fresh = compile_snapshot(snapshot, catalog)
    solved = _solve_ilp(fresh, greedy, time_left)
    if solved is None:
        return answer(compiled, greedy, "greedy", "nothing to optimize")
    extra: dict[str, object] = {
        "workload_classes": solved.classes,
        "variables": solved.variables,
        "bound": None if solved.bound is None else round(solved.bound, 6),
    }
    if not solved.hints:
        extra["gap_pct"] = _gap_pct(solved.bound, greedy.objective)
        return answer(compiled, greedy, "greedy", f"ILP: {solved.status}", **extra)
    realized = run_cycle(fresh, solved.hints, improve=improved(fresh, deadline + greedy_s))
    # Greedy's answer on a tie: it shares spare capacity by Kueue's fair-share order, which
    # the model's concave utility leaves undecided while queues borrow little of what the
    # cohort lends (10 spare GPUs split 10:0 or 5:5 between equal queues score the same).
    if realized.objective > greedy.objective:
        extra["gap_pct"] = _gap_pct(solved.bound, realized.objective)
        return answer(fresh, realized, "ilp", solved.status, **extra)
    extra["gap_pct"] = _gap_pct(solved.bound, greedy.objective)
    return answer(compiled, greedy, "greedy", f"ILP ({solved.status}) realized no better", **extra)
