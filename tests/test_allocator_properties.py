"""Property tests of ``decide`` and ``IncrementalAllocator`` over random small clusters.

Strategy: 1–6 nodes of one GPU model each (H100-80GB, A100-80GB, L40S, T4), some H100/A100
GPUs MIG-partitioned with valid layouts, some T4/L40S GPUs time-sliced; 1–4 queues in 0–2
cohorts with random weights, quotas, borrowing/lending limits and preemption policies;
running workloads made consistent by admitting them with ``decide`` on a snapshot with
nothing running and copying the admitted placements; then pending workloads of every
demand kind. Every property runs on both paths: greedy (``use_ilp=False``) and the ILP
(which may still answer greedy when the ILP realized no better — that is allowed).

The invariants live in ``tests/invariants.py`` and return violation strings, so a failure
names the workload, GPU and numbers. Bugs these properties found are reduced to
regression tests in ``tests/test_allocator.py``. ``APPORTION_PROPERTY_SCALE=10`` runs ten
times the examples for a longer hunt.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import pytest
from builders import mig, node, queue, snapshot, workload
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from invariants import (
    check_age_order,
    check_all,
    check_capacity,
    check_eviction_rights,
    check_guarantees,
    check_mig_layouts,
    check_older_first,
    check_priority_order,
    check_quotas,
    check_reasons_current,
    check_work_conserving,
    final_usage,
    incremental_decision,
)

from scheduler.allocator import decide
from scheduler.catalog import default_catalog
from scheduler.incremental import IncrementalAllocator
from scheduler.mig import layout_problems
from scheduler.model import (
    NODE_NAME_FIELD,
    Decision,
    Demand,
    Eviction,
    Gpu,
    Node,
    NodeSelectorRequirement,
    NodeSelectorTerm,
    PodPlacement,
    Queue,
    Quota,
    RepartitionPlan,
    Snapshot,
    Taint,
    Toleration,
    Workload,
    WorkloadDecision,
)
from scheduler.reasons import Outcome, Reason

CATALOG = default_catalog()
MODELS = ("H100-80GB", "A100-80GB", "L40S", "T4")
MIG_MODELS = ("H100-80GB", "A100-80GB")
SHAREABLE = ("L40S", "T4")
NODE_CPU = (8_000, 16_000, 64_000)
NODE_MEMORY = (32_768, 131_072, 524_288)
POD_CPU = (0, 1_000, 4_000, 12_000, 32_000)
POD_MEMORY = (0, 8_192, 32_768, 200_000)
"""Per-pod requests: some larger than small nodes have (a model may never host them)."""
LAYOUTS = (
    mig("3g.40gb@0", "2g.20gb@4", "1g.10gb@6"),
    mig(*(f"1g.10gb@{i}" for i in range(7))),
    mig("4g.40gb@0", "3g.40gb@4"),
    mig("7g.80gb@0"),
    mig("2g.20gb@0", "2g.20gb@2", "3g.40gb@4"),
    (),
)
PROFILES = ("1g.10gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb")
MEMORY_MIB = (4096, 9984, 12000, 20000, 30000, 45000, 60000, 81920)
PRIORITIES = (0, 10, 100)
NOW = 1000

for _layout in LAYOUTS:
    for _model in MIG_MODELS:
        assert not layout_problems(CATALOG[_model], _layout), _layout


PATHS = {
    "greedy": lambda s: decide(s, use_ilp=False),
    "ilp": lambda s: decide(s, budget_ms=5000),
}
path_param = pytest.mark.parametrize("path", list(PATHS))


def _decide(path: str, snap: Snapshot) -> Decision:
    """Decide on ``path``, recording what the example exercised (--hypothesis-show-statistics)."""
    decision = PATHS[path](snap)
    event(f"answered by {decision.stats.path}")
    outcomes = {d.outcome.name for d in decision.workloads}
    event("outcomes: " + "+".join(sorted(outcomes)))
    if decision.evictions:
        event("evicts")
    if decision.repartitions:
        event("proposes repartitions")
    if any(not g.healthy for n in snap.nodes for g in n.gpus):
        event("has failed GPUs")
    return decision


SCALE = float(os.environ.get("APPORTION_PROPERTY_SCALE", "1"))
"""Multiplies every max_examples, e.g. APPORTION_PROPERTY_SCALE=10 for a long hunt."""


def examples(n: int) -> int:
    return max(1, round(n * SCALE))


SETTINGS = settings(
    max_examples=examples(300),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# ----------------------------------------------------------------------- strategies
@st.composite
def gpu_nodes(draw: st.DrawFn, count: int) -> list[Node]:
    nodes = []
    for n in range(count):
        model = draw(st.sampled_from(MODELS))
        size = draw(st.integers(1, 8))
        gpus = []
        for i in range(size):
            layout = None
            shared = False
            # A pod outside the workloads (not Apportion's) holds some GPUs and slices.
            held = draw(st.integers(0, 7)) == 0
            if model in MIG_MODELS and draw(st.integers(0, 2)) == 0:
                layout = tuple(
                    s.model_copy(update={"held": draw(st.integers(0, 5)) == 0})
                    for s in draw(st.sampled_from(LAYOUTS))
                )
                held = False
            if model in SHAREABLE:
                shared = draw(st.booleans())
            gpus.append(Gpu(index=i, model=model, mig=layout, shared=shared, held=held))
        labels = {"zone": draw(st.sampled_from(("a", "b"))), "rack": str(n)}
        taints = (Taint(key="dedicated", value="ml"),) if draw(st.integers(0, 5)) == 0 else ()
        # Half the nodes report CPU and memory, as kubelets do: small enough to bind.
        host = (
            {
                "cpu_milli": draw(st.sampled_from(NODE_CPU)),
                "memory_mib": draw(st.sampled_from(NODE_MEMORY)),
            }
            if draw(st.booleans())
            else {}
        )
        nodes.append(
            Node(name=f"n{n}", labels=labels, taints=taints, gpus=tuple(gpus), **host)  # type: ignore[arg-type]
        )
    return nodes


@st.composite
def queue_set(draw: st.DrawFn, flavors: list[str]) -> list[Queue]:
    count = draw(st.integers(1, 4))
    cohorts = [None, "c0", "c1"][: 1 + draw(st.integers(0, 2))]
    queues = []
    for i in range(count):
        quota = {}
        for flavor in flavors:
            if draw(st.integers(0, 3)) == 0:
                continue
            top = 7 if flavor.startswith("mig-") else 8
            nominal = draw(st.integers(0, top))
            quota[flavor] = Quota(
                nominal=nominal,
                borrowing_limit=draw(st.none() | st.integers(0, 4)),
                lending_limit=draw(st.none() | st.integers(0, nominal + 1)),
            )
        queues.append(
            Queue(
                name=f"q{i}",
                cohort=draw(st.sampled_from(cohorts)),
                weight=draw(st.sampled_from((0.5, 1.0, 2.0, 3.0))),
                quota=quota,
                preemption={
                    "within_queue": draw(
                        st.sampled_from(("Never", "LowerPriority", "LowerOrNewerEqualPriority"))
                    ),
                    "reclaim_within_cohort": draw(
                        st.sampled_from(("Never", "LowerPriority", "Any"))
                    ),
                },
            )
        )
    return queues


@st.composite
def affinities(draw: st.DrawFn, nodes: Sequence[Node]) -> tuple[NodeSelectorTerm, ...]:
    """Required node affinity over the drawn nodes' labels and names, every operator."""
    on_labels = st.one_of(
        st.builds(
            NodeSelectorRequirement,
            key=st.just("zone"),
            operator=st.sampled_from(("In", "NotIn")),
            values=st.sampled_from((("a",), ("b",), ("a", "b"))),
        ),
        st.builds(
            NodeSelectorRequirement,
            key=st.sampled_from(("zone", "rack", "gpu-type")),
            operator=st.sampled_from(("Exists", "DoesNotExist")),
        ),
        st.builds(
            NodeSelectorRequirement,
            key=st.just("rack"),
            operator=st.sampled_from(("Gt", "Lt")),
            values=st.integers(-1, 6).map(lambda i: (str(i),)),
        ),
    )
    names = [n.name for n in nodes]
    on_name = st.builds(
        NodeSelectorRequirement,
        key=st.just(NODE_NAME_FIELD),
        operator=st.sampled_from(("In", "NotIn")),
        values=st.lists(st.sampled_from(names), min_size=1, max_size=2, unique=True).map(tuple),
    )
    term = st.builds(
        NodeSelectorTerm,
        match_expressions=st.lists(on_labels, max_size=2).map(tuple),
        match_fields=st.lists(on_name, max_size=1).map(tuple),
    )
    return tuple(draw(st.lists(term, min_size=1, max_size=2)))


@st.composite
def demands(draw: st.DrawFn, present: list[str], profiles: list[str]) -> Demand:
    """Mostly demands the cluster can serve: its models and its configured MIG profiles."""

    def pick(choices: Sequence[str], fallback: Sequence[str], max_size: int) -> tuple[str, ...]:
        pool = choices if choices and draw(st.integers(0, 9)) else fallback
        return tuple(draw(st.lists(st.sampled_from(pool), max_size=max_size, unique=True)))

    mig_present = [m for m in present if m in MIG_MODELS]
    shared_present = [m for m in present if m in SHAREABLE]
    kind = draw(st.sampled_from(("gpus", "gpus", "mig", "memory", "milli")))
    if kind == "gpus":
        return Demand(
            gpus=draw(st.sampled_from((1, 1, 2, 2, 3, 4, 8))), models=pick(present, MODELS, 2)
        )
    if kind == "mig":
        profile = draw(st.sampled_from(profiles if profiles and draw(st.booleans()) else PROFILES))
        return Demand(mig_profile=profile, models=pick(mig_present, MIG_MODELS, 1))
    if kind == "memory":
        return Demand(
            gpu_memory_mib=draw(st.sampled_from(MEMORY_MIB)), models=pick(present, MODELS, 2)
        )
    milli = draw(st.integers(1, 9)) * 100
    return Demand(gpu_milli=milli, models=pick(shared_present, SHAREABLE, 1))


@st.composite
def workloads(
    draw: st.DrawFn,
    prefix: str,
    count: int,
    queues: list[Queue],
    nodes: Sequence[Node],
    priorities: Sequence[int] = PRIORITIES,
) -> list[Workload]:
    present = sorted({g.model for n in nodes for g in n.gpus})
    profiles = sorted({s.profile for n in nodes for g in n.gpus for s in g.mig or ()})
    out = []
    for i in range(count):
        extra: dict[str, object] = {}
        if draw(st.integers(0, 5)) == 0:
            extra["node_selector"] = {"zone": draw(st.sampled_from(("a", "b")))}
        if draw(st.integers(0, 3)) == 0:
            extra["tolerations"] = (Toleration(key="dedicated", operator="Exists"),)
        if draw(st.integers(0, 5)) == 0:
            extra["node_affinity"] = draw(affinities(nodes))
        if draw(st.integers(0, 6)) == 0:
            extra["throughput"] = {"H100-80GB": 3.0, "A100-80GB": 1.0}
        if draw(st.integers(0, 2)) == 0:
            extra["cpu_milli"] = draw(st.sampled_from(POD_CPU))
            extra["memory_mib"] = draw(st.sampled_from(POD_MEMORY))
        if draw(st.integers(0, 7)) == 0:
            extra["nominated"] = True  # victims were evicted for it (the controller's mark)
        out.append(
            Workload(
                name=f"{prefix}{i}",
                queue=draw(st.sampled_from([q.name for q in queues])),
                priority=draw(st.sampled_from(priorities)),
                created=draw(st.integers(0, 100)),
                pods=draw(st.sampled_from((1, 1, 1, 2, 3))),
                demand=draw(demands(present, profiles)),
                **extra,  # type: ignore[arg-type]
            )
        )
    return out


def _with_running(base: Snapshot, seeds: list[Workload], started: dict[str, int]) -> Snapshot:
    """Admit ``seeds`` on an empty cluster and record the admitted ones as running."""
    if not seeds:
        return base
    seeded = decide(base.model_copy(update={"workloads": tuple(seeds)}), use_ilp=False)
    by_name = {w.name: w for w in seeds}
    running = [
        by_name[d.workload].model_copy(
            update={"flavor": d.flavor, "placement": d.placement, "started": started[d.workload]}
        )
        for d in seeded.workloads
        if d.outcome is Outcome.ADMIT
    ]
    return base.model_copy(update={"workloads": tuple(running)})


def _mark_unhealthy(draw: st.DrawFn, snap: Snapshot) -> Snapshot:
    """Fail up to two GPUs (XID) after the running workloads were placed — often one that a
    running workload sits on, which the allocator must charge but never offer again."""
    occupied = sorted(
        {(pod.node, g) for w in snap.workloads for pod in w.placement or () for g in pod.gpus}
    )
    every = [(n.name, g.index) for n in snap.nodes for g in n.gpus]
    pool = st.sampled_from(every)
    if occupied:
        pool = st.sampled_from(occupied) | pool
    failed = set(draw(st.lists(pool, max_size=2)))
    nodes = tuple(
        n.model_copy(
            update={
                "gpus": tuple(
                    g.model_copy(update={"healthy": False, "health_reason": "XID 79"})
                    if (n.name, g.index) in failed
                    else g
                    for g in n.gpus
                )
            }
        )
        for n in snap.nodes
    )
    return snap.model_copy(update={"nodes": nodes})


@st.composite
def snapshots(draw: st.DrawFn, max_pending: int = 15) -> Snapshot:
    nodes = draw(gpu_nodes(draw(st.integers(1, 6))))
    models = sorted({g.model for n in nodes for g in n.gpus})
    profiles = sorted({s.profile for n in nodes for g in n.gpus for s in g.mig or ()})
    flavors = models + [f"mig-{p}" for p in profiles]
    queues = draw(queue_set(flavors))
    base = Snapshot(nodes=tuple(nodes), queues=tuple(queues), now=NOW)
    # Running work is mostly low priority, so pending work often has someone to preempt.
    seeds = draw(workloads("r", draw(st.integers(0, 8)), queues, nodes, (0, 0, 10)))
    started = {w.name: draw(st.integers(0, NOW)) for w in seeds}
    snap = _mark_unhealthy(draw, _with_running(base, seeds, started))
    pending = draw(workloads("p", draw(st.integers(1, max_pending)), queues, nodes))
    return snap.model_copy(update={"workloads": snap.workloads + tuple(pending)})


@st.composite
def guarantee_snapshots(draw: st.DrawFn) -> Snapshot:
    """Whole-GPU demands of one model, no selectors or taints, no MIG, no failed GPUs;
    reclaim "Any" and within-queue "LowerPriority"; nominal quotas never exceed the
    cluster's GPUs of a model, so guarantees do not compete for the same GPUs."""
    nodes = []
    for n in range(draw(st.integers(1, 4))):
        model = draw(st.sampled_from(MIG_MODELS))
        nodes.append(node(f"n{n}", model, draw(st.integers(1, 8))))
    sizes: dict[str, int] = {}
    for n_ in nodes:
        sizes[n_.gpus[0].model] = sizes.get(n_.gpus[0].model, 0) + len(n_.gpus)
    queues = []
    left = dict(sizes)
    for i in range(draw(st.integers(2, 4))):
        q = queue(f"q{i}", cohort=draw(st.sampled_from(("c", "c", "c", None))))
        q.weight(draw(st.sampled_from((1.0, 2.0))))
        for model in sorted(sizes):
            if draw(st.booleans()):
                nominal = draw(st.integers(0, left[model]))
                left[model] -= nominal
                q.quota(
                    model,
                    nominal,
                    borrowing_limit=draw(st.none() | st.integers(0, 8)),
                    lending_limit=draw(st.none() | st.integers(0, nominal)),
                )
        queues.append(q.build())
    base = snapshot(nodes=nodes, queues=queues, now=NOW)

    def whole(prefix: str, count: int) -> list[Workload]:
        return [
            Workload(
                name=f"{prefix}{i}",
                queue=draw(st.sampled_from([q.name for q in queues])),
                priority=draw(st.sampled_from(PRIORITIES)),
                created=draw(st.integers(0, 100)),
                pods=draw(st.sampled_from((1, 1, 2))),
                demand=Demand(
                    gpus=draw(st.sampled_from((1, 1, 2, 4, 8))),
                    models=(draw(st.sampled_from(sorted(sizes))),),
                ),
            )
            for i in range(count)
        ]

    seeds = whole("r", draw(st.integers(0, 6)))
    started = {w.name: draw(st.integers(0, NOW)) for w in seeds}
    snap = _with_running(base, seeds, started)
    pending = whole("p", draw(st.integers(1, 8)))
    return snap.model_copy(update={"workloads": snap.workloads + tuple(pending)})


@st.composite
def takeback_snapshots(draw: st.DrawFn) -> Snapshot:
    """Where the improvement phase (scheduler/improve.py) has moves to make: one cohort of
    one model; a queue with a little unused nominal quota and gangs larger than it (they
    borrow, so they may not reclaim), cohort mates with many small borrowers that empty the
    lendable pool first in the cycle, and an idle queue that only lends."""
    model = draw(st.sampled_from(MIG_MODELS))
    nodes = [node(f"n{n}", model, 8) for n in range(draw(st.integers(2, 5)))]
    total = 8 * len(nodes)
    needy = draw(st.integers(1, 6))
    queues = [queue("needy", cohort="c").quota(model, needy).build()]
    for i in range(draw(st.integers(1, 3))):
        q = queue(f"mate{i}", cohort="c").quota(
            model,
            draw(st.integers(2, 8)),
            borrowing_limit=draw(st.none() | st.integers(4, total)),
        )
        queues.append(q.weight(draw(st.sampled_from((0.5, 1.0, 2.0)))).build())
    queues.append(queue("lender", cohort="c").quota(model, draw(st.integers(2, 16))).build())
    base = snapshot(nodes=nodes, queues=queues, now=NOW)

    def one_model(name: str, queue_name: str, gpus: int, pods: int) -> Workload:
        return Workload(
            name=name,
            queue=queue_name,
            priority=draw(st.sampled_from(PRIORITIES)),
            created=draw(st.integers(0, 100)),
            pods=pods,
            demand=Demand(gpus=gpus, models=(model,)),
        )

    mates = [q.name for q in queues[1:-1]]
    seeds = [
        one_model(f"r{i}", draw(st.sampled_from(mates)), 1, 1)
        for i in range(draw(st.integers(0, 6)))
    ]
    snap = _with_running(base, seeds, {w.name: draw(st.integers(0, NOW)) for w in seeds})
    gangs = [
        one_model(f"g{i}", "needy", draw(st.integers(needy + 1, 8)), draw(st.sampled_from((1, 2))))
        for i in range(draw(st.integers(1, 3)))
    ]
    small = [
        one_model(f"s{i:02d}", draw(st.sampled_from(mates)), draw(st.sampled_from((1, 1, 2))), 1)
        for i in range(draw(st.integers(8, 24)))
    ]
    return snap.model_copy(update={"workloads": snap.workloads + tuple(gangs + small)})


def _report(snap: Snapshot, decision: Decision, problems: list[str]) -> str:
    return (
        "\n".join(problems)
        + f"\n--- decision ({decision.stats.path}):\n"
        + "\n".join(
            f"{d.workload}: {d.outcome.name} {d.reason.value} {d.flavor} {d.placement} {d.message}"
            for d in decision.workloads
        )
        + f"\nevictions: {[(e.workload, e.beneficiary) for e in decision.evictions]}"
        + f"\nsnapshot: {snap.model_dump_json(exclude_defaults=True)}"
    )


def _assert_none(snap: Snapshot, decision: Decision, problems: list[str]) -> None:
    assert not problems, _report(snap, decision, problems)


# ----------------------------------------------------------------------- properties
@path_param
@SETTINGS
@given(snap=snapshots())
def test_capacity_never_exceeded(path: str, snap: Snapshot) -> None:
    """1. Devices used at most once, fractions ≤ 1000m on shared GPUs, slices exist, gangs whole."""
    decision = _decide(path, snap)
    _assert_none(snap, decision, check_capacity(snap, decision))


@path_param
@SETTINGS
@given(snap=snapshots())
def test_mig_layouts_valid(path: str, snap: Snapshot) -> None:
    """2. Snapshot layouts and proposed repartitions are valid, for idle healthy GPUs."""
    decision = _decide(path, snap)
    _assert_none(snap, decision, check_mig_layouts(snap, decision))


@path_param
@SETTINGS
@given(snap=snapshots())
def test_quotas_respected(path: str, snap: Snapshot) -> None:
    """3. Borrowing limits per queue, nominal when standalone, lendable pool per cohort."""
    decision = _decide(path, snap)
    _assert_none(snap, decision, check_quotas(snap, final_usage(snap, decision)))


@path_param
@settings(SETTINGS, max_examples=examples(400))
@given(snap=guarantee_snapshots())
def test_guarantees(path: str, snap: Snapshot) -> None:
    """4. Within its nominal quota, a workload that fits (reclaiming borrowers) is admitted,
    and what it reclaims its policy allows (property 10's check)."""
    decision = _decide(path, snap)
    event("evicts" if decision.evictions else "no eviction")
    _assert_none(
        snap, decision, [*check_guarantees(snap, decision), *check_eviction_rights(snap, decision)]
    )


@path_param
@SETTINGS
@given(snap=snapshots())
def test_work_conserving(path: str, snap: Snapshot) -> None:
    """5. No pending workload fits in the capacity and quota left free; those refused by
    quota say what their queue uses after the decision."""
    decision = _decide(path, snap)
    _assert_none(
        snap,
        decision,
        [*check_work_conserving(snap, decision), *check_reasons_current(snap, decision)],
    )


@path_param
@SETTINGS
@given(snap=snapshots())
def test_priority_within_queue(path: str, snap: Snapshot) -> None:
    """6. No lower priority admitted where a waiting higher priority of its queue would fit,
    nor a newer one where an older one of the same priority would fit, nor a newer one
    where an older one alike waits (that one also where it would need the same evictions)."""
    decision = _decide(path, snap)
    problems = [
        *check_priority_order(snap, decision),
        *check_older_first(snap, decision),
        *check_age_order(snap, decision),
    ]
    _assert_none(snap, decision, problems)


@path_param
@SETTINGS
@given(snap=snapshots())
def test_evictions_within_policy(path: str, snap: Snapshot) -> None:
    """10. Every eviction is one its beneficiary's queue policy allows: its own queue's lower
    priority (or newer equal, where allowed), or a borrowing cohort mate's when it reclaims
    its nominal quota, and only what holds what it needs."""
    decision = _decide(path, snap)
    event("evicts" if decision.evictions else "no eviction")
    _assert_none(snap, decision, check_eviction_rights(snap, decision))


TOOK_BACK = "within its queue's unused nominal quota: took back"
"""In the message of a workload the improvement phase admitted."""


@path_param
@settings(SETTINGS, max_examples=examples(120))
@given(snap=takeback_snapshots())
def test_improvement_phase_keeps_every_invariant(path: str, snap: Snapshot) -> None:
    """6b. Moves that take back this cycle's borrowing for a queue's unused nominal quota
    keep capacity, quotas, guarantees, work conservation and priority order (on the ILP
    path the phase runs on both cycles, greedy's and the realization's)."""
    decision = _decide(path, snap)
    event("moves kept" if any(TOOK_BACK in d.message for d in decision.workloads) else "no move")
    _assert_none(
        snap,
        decision,
        [
            *check_all(snap, decision),
            *check_quotas(snap, final_usage(snap, decision)),
            *check_eviction_rights(snap, decision),
            *check_guarantees(snap, decision),
            *check_work_conserving(snap, decision),
            *check_priority_order(snap, decision),
            *check_age_order(snap, decision),
            *check_reasons_current(snap, decision),
        ],
    )


@settings(SETTINGS, max_examples=examples(300))
@given(snap=takeback_snapshots())
def test_improvement_phase_only_raises_the_objective(snap: Snapshot) -> None:
    """6c. A cycle with the phase never scores below the same cycle without it, and above
    it whenever a move was kept. (Greedy's path only: the ILP's answer also depends on its
    warm start, which the phase changes.)"""
    without = decide(snap, use_ilp=False, improve_phase=False)
    decision = decide(snap, use_ilp=False)
    moved = [d.workload for d in decision.workloads if TOOK_BACK in d.message]
    event("moves kept" if moved else "no move")
    assert decision.stats.objective >= without.stats.objective - 1e-6, (
        decision.stats,
        without.stats,
    )
    if moved:
        assert decision.stats.objective > without.stats.objective, moved


def _comparable(decision: Decision) -> dict[str, object]:
    dump = decision.model_dump()
    stats = dict(dump["stats"])
    stats.pop("wall_ms")
    dump["stats"] = stats
    return dump


@path_param
@settings(SETTINGS, max_examples=examples(150))
@given(snap=snapshots())
def test_deterministic(path: str, snap: Snapshot) -> None:
    """7. The same snapshot gives the same Decision (but for wall time)."""
    assert _comparable(PATHS[path](snap)) == _comparable(PATHS[path](snap))


@SETTINGS
@given(snap=snapshots())
def test_ilp_never_worse_than_greedy(snap: Snapshot) -> None:
    """8. The ILP call's objective is at least greedy's."""
    stats = decide(snap, budget_ms=5000).stats
    assert stats.objective >= stats.greedy_objective - 1e-6, stats


@SETTINGS
@given(snap=snapshots())
def test_ilp_bound_holds(snap: Snapshot) -> None:
    """8b. The ILP is a relaxation of the cycle: its proven bound is at least the objective
    of both answers, so the reported gap is never negative."""
    stats = decide(snap, budget_ms=5000).stats
    event("bound proven" if stats.bound is not None else "no bound")
    if stats.bound is not None:
        assert stats.bound >= max(stats.objective, stats.greedy_objective) - 1e-6, stats
        assert stats.gap_pct is not None or stats.bound <= 0, stats
        assert stats.gap_pct is None or stats.gap_pct >= -1e-6, stats


@SETTINGS
@given(snap=snapshots())
def test_incremental(snap: Snapshot) -> None:
    """9. One-by-one admission keeps capacity and quotas; release restores capacity."""
    allocator = IncrementalAllocator(snap)
    pending = [w for w in snap.workloads if not w.running]
    answers = [allocator.decide(w) for w in pending]
    as_decision = incremental_decision(answers)
    problems = check_all(snap, as_decision)
    problems += [
        f"{d.workload}: incremental path answered {d.outcome.name} (never preempts)"
        for d in answers
        if d.outcome is Outcome.PREEMPT
    ]
    _assert_none(snap, as_decision, problems)
    # Undo the admissions newest first: each re-decision faces the state it first saw.
    by_name = {w.name: w for w in pending}
    for answer in reversed([a for a in answers if a.outcome is Outcome.ADMIT]):
        assert allocator.release(answer.workload)
        again = allocator.decide(by_name[answer.workload])
        assert (again.outcome, again.flavor, again.placement) == (
            answer.outcome,
            answer.flavor,
            answer.placement,
        ), f"{answer.workload}: first {answer.placement}, after release {again.placement}"
        assert allocator.release(answer.workload)
    assert not allocator.release("no-such-workload")
    # With everything released, a fresh allocator answers the same for the first arrival.
    assert allocator.decide(pending[0]) == IncrementalAllocator(snap).decide(pending[0])


# ------------------------------------------------- the checkers catch what they claim
def _admit(name: str, queue_name: str, flavor: str, *pods: PodPlacement) -> WorkloadDecision:
    return WorkloadDecision(
        workload=name,
        queue=queue_name,
        outcome=Outcome.ADMIT,
        reason=Reason.ADMITTED,
        message="",
        flavor=flavor,
        placement=pods,
    )


def _pending(name: str, queue_name: str) -> WorkloadDecision:
    return WorkloadDecision(
        workload=name,
        queue=queue_name,
        outcome=Outcome.PENDING,
        reason=Reason.NO_CAPACITY,
        message="",
    )


CHECKED = snapshot(
    nodes=[
        node("h0", "H100-80GB", 2, mig_layouts={1: mig("3g.40gb@0", "3g.40gb@4")}),
        node("t0", "T4", 2, shared=[0]),
    ],
    queues=[queue("q").quota("H100-80GB", 1).quota("T4", 2).quota("mig-3g.40gb", 2)],
    workloads=[
        workload("r").gpus(1).queue("q").running_on("h0", 0).flavor("H100-80GB"),
        workload("a").gpus(1).queue("q"),
        workload("b").milli(600, "T4").queue("q"),
        workload("c").milli(600, "T4").queue("q"),
    ],
)


def test_checkers_flag_double_use_and_oversubscribed_fractions() -> None:
    bad = incremental_decision(
        [
            _admit("a", "q", "H100-80GB", PodPlacement(node="h0", gpus=(0,))),
            _admit("b", "q", "T4", PodPlacement(node="t0", gpus=(0,), milli=600)),
            _admit("c", "q", "T4", PodPlacement(node="t0", gpus=(0,), milli=600)),
        ]
    )
    problems = check_capacity(CHECKED, bad)
    assert "h0 GPU 0 used whole by ['r', 'a']" in problems
    assert "t0 GPU 0 fractions sum to 1200m: [('b', 600), ('c', 600)]" in problems
    assert check_quotas(CHECKED, final_usage(CHECKED, bad)) == [
        "queue q uses 2 H100-80GB after the decision; standalone, nominal 1"
    ]


def test_checkers_flag_wrong_devices_and_broken_gangs() -> None:
    bad = incremental_decision(
        [
            _admit("a", "q", "H100-80GB", PodPlacement(node="h0", gpus=(1,))),
            _admit("b", "q", "T4", PodPlacement(node="t0", gpus=(1,), milli=600)),
            _admit("c", "q", "T4"),
        ]
    )
    problems = check_capacity(CHECKED, bad)
    assert "a pod 0 on h0 GPUs [1]: GPU 1 is MIG-partitioned, used whole" in problems
    assert "b pod 0 on t0 GPUs [1]: fraction 600m on unshared GPU 1" in problems
    assert "c ADMIT with 0 pod placements; workload has 1 pods" in problems


def test_checkers_flag_waste_and_bad_layouts() -> None:
    idle = incremental_decision([_pending("a", "q"), _pending("b", "q"), _pending("c", "q")])
    # a fits on the free T4 (its H100 quota is used up by r); b or c on the shared T4.
    assert [p.split(" (")[0] for p in check_work_conserving(CHECKED, idle)] == ["a", "b", "c"]
    overlapping = idle.model_copy(
        update={
            "repartitions": (
                RepartitionPlan(
                    node="h0",
                    gpu=1,
                    current=mig("3g.40gb@0", "3g.40gb@4"),
                    proposed=mig("4g.40gb@0", "3g.40gb@0"),
                    admits=(),
                    benefit_gpus=0.0,
                    message="",
                ),
            )
        }
    )
    [problem] = check_mig_layouts(CHECKED, overlapping)
    assert "overlaps" in problem


def test_checkers_flag_a_reason_behind_the_decision() -> None:
    # q's nominal 1 H100 is held by r: a waits on quota, and must say so in those numbers.
    snap = snapshot(
        nodes=[node("h0", "H100-80GB", 2)],
        queues=[queue("q").quota("H100-80GB", 1)],
        workloads=[
            workload("r").gpus(1).queue("q").running_on("h0", 0),
            workload("a").gpus(1).queue("q"),
        ],
    )
    decision = decide(snap, use_ilp=False)
    [a] = decision.workloads
    assert a.message == "queue q at nominal H100-80GB quota 1/1; needs 1"
    assert check_reasons_current(snap, decision) == []
    behind = a.model_copy(update={"message": "queue q at nominal H100-80GB quota 0/1; needs 1"})
    stale = decision.model_copy(update={"workloads": (behind,)})
    assert check_reasons_current(snap, stale) == [
        "a waits with 'queue q at nominal H100-80GB quota 0/1; needs 1', but queue q uses "
        "1 H100-80GB after the decision"
    ]


def test_checkers_flag_room_behind_the_decision() -> None:
    # r holds one of h0's two H100s and a the other: b, with quota to spare, waits for room.
    snap = snapshot(
        nodes=[node("h0", "H100-80GB", 2)],
        queues=[queue("q").quota("H100-80GB", 4)],
        workloads=[
            workload("r").gpus(1).queue("q").running_on("h0", 0),
            workload("a").gpus(1).queue("q").priority(1),
            workload("b").gpus(1).queue("q"),
        ],
    )
    decision = decide(snap, use_ilp=False)
    b = next(d for d in decision.workloads if d.workload == "b")
    assert b.message.startswith("needs 1× 1 H100-80GB GPU; room for 0 such pod(s) now")
    assert check_reasons_current(snap, decision) == []
    behind = b.model_copy(update={"message": b.message.replace("room for 0", "room for 1")})
    stale = decision.model_copy(
        update={"workloads": tuple(behind if d is b else d for d in decision.workloads)}
    )
    [problem] = check_reasons_current(snap, stale)
    assert problem.startswith("b waits with 'needs 1× 1 H100-80GB GPU; room for 1 such pod(s)")
    assert problem.endswith("but the free devices take 0 of its pods after the decision")


def test_checkers_flag_a_newer_alike_admitted_while_an_older_waits() -> None:
    snap = snapshot(
        nodes=[node("h0", "H100-80GB", 1)],
        queues=[queue("q").quota("H100-80GB", 1)],
        workloads=[
            workload("old").gpus(1).queue("q").created(1),
            workload("new").gpus(1).queue("q").created(2),
        ],
    )
    decision = decide(snap, use_ilp=False)
    assert [d.outcome for d in decision.workloads] == [Outcome.ADMIT, Outcome.PENDING]
    assert check_age_order(snap, decision) == []
    old, new = decision.workloads
    swapped = decision.model_copy(
        update={
            "workloads": (
                old.model_copy(update={"outcome": Outcome.PENDING, "placement": ()}),
                new.model_copy(update={"outcome": Outcome.ADMIT, "placement": old.placement}),
            )
        }
    )
    assert check_age_order(snap, swapped) == [
        "new (created 2) admitted in queue q while old (created 1), alike, waits"
    ]


def test_checkers_flag_a_newer_admitted_where_an_older_of_another_shape_would_fit() -> None:
    snap = snapshot(
        nodes=[node("t0", "T4", 1, shared=True)],
        queues=[queue("q").quota("T4", 1)],
        workloads=[
            workload("old").milli(300, "T4").queue("q").created(1),
            workload("new").milli(800, "T4").queue("q").created(2),
        ],
    )
    decision = decide(snap, use_ilp=False)
    assert [d.outcome for d in decision.workloads] == [Outcome.ADMIT, Outcome.PENDING]
    assert check_older_first(snap, decision) == []
    old, new = decision.workloads
    (place,) = old.placement
    swapped = decision.model_copy(
        update={
            "workloads": (
                old.model_copy(update={"outcome": Outcome.PENDING, "placement": ()}),
                new.model_copy(
                    update={
                        "outcome": Outcome.ADMIT,
                        "flavor": "T4",
                        "placement": (place.model_copy(update={"milli": 800}),),
                    }
                ),
            )
        }
    )
    assert check_older_first(snap, swapped) == [
        "new (created 2) admitted on T4 in queue q while old (created 1, 1× {'gpu_milli': 300, "
        "'models': ('T4',)}), "
        "older, waits and would fit there"
    ]


def test_checkers_flag_evictions_the_policy_forbids() -> None:
    # q never preempts within itself; mate p reclaims only lower priorities; nothing borrows.
    snap = snapshot(
        nodes=[node("h0", "H100-80GB", 4)],
        queues=[
            queue("q").cohort("c").quota("H100-80GB", 2).preemption(within_queue="Never"),
            queue("p")
            .cohort("c")
            .quota("H100-80GB", 2)
            .preemption(reclaim_within_cohort="LowerPriority"),
        ],
        workloads=[
            workload("rq").gpus(1).queue("q").priority(5).running_on("h0", 0),
            workload("rp").gpus(1).queue("p").running_on("h0", 1),
            workload("a").gpus(1).queue("q").priority(9),
            workload("b").gpus(1).queue("p").priority(5),
        ],
    )

    def preempt(name: str, queue_name: str, gpus: tuple[int, ...], victim: str) -> Decision:
        verdict = WorkloadDecision(
            workload=name,
            queue=queue_name,
            outcome=Outcome.PREEMPT,
            reason=Reason.ADMITTED_BY_PRIORITY,
            message="",
            flavor="H100-80GB",
            placement=(PodPlacement(node="h0", gpus=gpus),),
            victims=(victim,),
        )
        victim_queue = next(w.queue for w in snap.workloads if w.name == victim)
        eviction = Eviction(
            workload=victim,
            queue=victim_queue,
            beneficiary=name,
            reason=Reason.PREEMPTED_PRIORITY,
            message="",
        )
        return incremental_decision([verdict]).model_copy(update={"evictions": (eviction,)})

    assert check_eviction_rights(snap, preempt("a", "q", (0,), "rq")) == [
        "rq (queue q, priority 5) evicted for a (queue q, priority 9): within_queue is Never"
    ]
    [lower, borrows] = check_eviction_rights(snap, preempt("b", "p", (0,), "rq"))
    assert lower.endswith(": reclaim_within_cohort LowerPriority does not allow it")
    assert borrows.endswith(": queue q never borrows H100-80GB (at most 2 of nominal 2)")
    assert check_eviction_rights(snap, preempt("b", "p", (1,), "rp")) == []
    # With p's nominal quota all used by rp, nothing of p could have reclaimed.
    full = Queue(name="p", cohort="c", quota={"H100-80GB": Quota(nominal=1)})
    held = snap.model_copy(update={"queues": (snap.queues[0], full)})
    problems = check_eviction_rights(held, preempt("b", "p", (0,), "rq"))
    assert "reclaims, but no pending workload of queue p fits within its unused nominal quota" in (
        "".join(problems)
    ), problems
