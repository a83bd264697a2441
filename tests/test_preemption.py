"""Victim choice (``scheduler/preemption.py``), in particular the ``idle_borrowed_first``
switch: when a queue must preempt, workloads that are idle by GPU metrics and borrowing go
before every other candidate.

Hand cases are worked out from the documented order (lowest priority, most recently
started, smallest first; minimal by inclusion). The property compares the answer with an
oracle: the same cluster with every idle borrowed workload removed.
"""

from __future__ import annotations

import pytest
from builders import node, queue, snapshot, workload
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from scheduler.allocator import decide
from scheduler.model import Snapshot
from scheduler.reasons import Outcome

H100 = "H100-80GB"


def _victims(snap: Snapshot, name: str = "a-job") -> tuple[str, ...]:
    d = decide(snap, use_ilp=False).by_workload()[name]
    assert d.outcome is Outcome.PREEMPT, d.message
    return d.victims


def _borrowers(switch: bool, busy_gpus: int = 4, idle_gpus: int = 4) -> Snapshot:
    # team-b has no H100 quota: both its jobs borrow team-a's. By the default order the busy
    # job (priority 0) goes before the idle one (priority 100).
    return snapshot(
        nodes=[node("h0", H100, 8)],
        queues=[
            queue("team-a", cohort="org").quota(H100, 8).preemption(idle_borrowed_first=switch),
            queue("team-b", cohort="org").quota(H100, 0),
        ],
        workloads=[
            workload("b-busy")
            .gpus(busy_gpus)
            .queue("team-b")
            .running_on("h0", *range(busy_gpus))
            .started(10),
            workload("b-idle")
            .gpus(idle_gpus)
            .queue("team-b")
            .priority(100)
            .running_on("h0", *range(busy_gpus, 8))
            .started(5)
            .idle(),
            workload("a-job").gpus(4).queue("team-a"),
        ],
    )


def test_switch_off_keeps_the_priority_order() -> None:
    assert _victims(_borrowers(switch=False)) == ("b-busy",)


def test_switch_on_takes_the_idle_borrower_first() -> None:
    assert _victims(_borrowers(switch=True)) == ("b-idle",)


def test_idle_borrower_too_small_is_given_back() -> None:
    # 2 idle GPUs cannot make room for 4; the busy job's 6 can, alone: the idle job is
    # evicted first, then given back because it is not needed.
    snap = _borrowers(switch=True, busy_gpus=6, idle_gpus=2)
    assert _victims(snap) == ("b-busy",)


def test_idle_but_not_borrowing_does_not_jump_ahead() -> None:
    # a-low is idle but team-a is within its nominal quota (not borrowing): the switch does
    # not move it; b-busy (lower priority) goes first as without the switch.
    snap = snapshot(
        nodes=[node("h0", H100, 8)],
        queues=[
            queue("team-a", cohort="org").quota(H100, 8).preemption(idle_borrowed_first=True),
            queue("team-b", cohort="org").quota(H100, 0),
        ],
        workloads=[
            workload("a-low")
            .gpus(4)
            .queue("team-a")
            .priority(5)
            .running_on("h0", 0, 1, 2, 3)
            .started(10)
            .idle(),
            workload("b-busy").gpus(4).queue("team-b").running_on("h0", 4, 5, 6, 7).started(10),
            workload("a-job").gpus(4).queue("team-a").priority(10),
        ],
    )
    assert _victims(snap) == ("b-busy",)


# ------------------------------------------------------------------------- property
@st.composite
def borrowed_clusters(draw: st.DrawFn) -> Snapshot:
    """1–3 nodes of 8 H100s filled (or partly) by team-b/team-c jobs that borrow everything
    (nominal 0), some idle; team-a (all the nominal quota, switch on) wants one pod."""
    nodes = draw(st.integers(1, 3))
    jobs = []
    for n in range(nodes):
        gpu = 0
        while gpu < 8:
            size = draw(st.sampled_from([s for s in (1, 2, 4) if gpu + s <= 8]))
            if draw(st.integers(0, 9)) > 0:  # mostly occupied
                job = (
                    workload(f"j{n}-{gpu}")
                    .gpus(size)
                    .queue(draw(st.sampled_from(["team-b", "team-c"])))
                    .priority(draw(st.sampled_from([0, 100])))
                    .running_on(f"h{n}", *range(gpu, gpu + size))
                    .started(draw(st.integers(0, 50)))
                    .idle(draw(st.booleans()))
                )
                jobs.append(job)
            gpu += size
    want = draw(st.sampled_from([1, 2, 4, 8]))
    return snapshot(
        nodes=[node(f"h{n}", H100, 8) for n in range(nodes)],
        queues=[
            queue("team-a", cohort="org")
            .quota(H100, 8 * nodes)
            .preemption(idle_borrowed_first=True),
            queue("team-b", cohort="org").quota(H100, 0),
            queue("team-c", cohort="org").quota(H100, 0),
        ],
        workloads=[*jobs, workload("a-job").gpus(want).queue("team-a").priority(50)],
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(snap=borrowed_clusters())
def test_busy_borrower_never_evicted_when_idle_ones_suffice(snap: Snapshot) -> None:
    d = decide(snap, use_ilp=False).by_workload()["a-job"]
    idle = {w.name for w in snap.workloads if w.idle}
    busy_victims = [v for v in d.victims if v not in idle]
    without_idle = snap.model_copy(
        update={"workloads": tuple(w for w in snap.workloads if w.name not in idle)}
    )
    idle_suffice = decide(without_idle, use_ilp=False).by_workload()["a-job"].outcome
    event(f"outcome {d.outcome.name}, idle alone suffice: {idle_suffice is Outcome.ADMIT}")
    if idle_suffice is Outcome.ADMIT:
        # Evicting idle borrowers alone makes room: no busy borrower may be a victim.
        assert d.outcome is not Outcome.PENDING
        assert busy_victims == [], (d.victims, sorted(idle))


@settings(max_examples=200, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=0, max_value=5), max_size=60),
    need=st.integers(min_value=1, max_value=120),
    cap=st.integers(min_value=0, max_value=40),
    already=st.integers(min_value=0, max_value=3),
)
def test_evicting_by_doubling_finds_the_prefix_one_at_a_time_finds(
    sizes: list[int], need: int, cap: int, already: int
) -> None:
    """``_evict_until`` against the one-at-a-time scan it replaces: the same victims, in the
    same order, with eligibility that depends on what was evicted before (as a reclaim
    victim's does: eligible only while its queue still borrows), and far fewer checks."""
    from scheduler.preemption import _evict_until

    items = list(range(len(sizes)))
    evicted: set[int] = set()
    first_group = [i for i in items if i % 2 == 0]

    def eligible(i: int) -> bool:
        # Odd items always; even ones only while fewer than ``cap`` units of them are out.
        return i % 2 == 1 or sum(sizes[j] for j in evicted if j in first_group) < cap

    def evict(i: int) -> None:
        assert i not in evicted
        evicted.add(i)

    def restore(i: int) -> None:
        evicted.remove(i)

    checks = 0

    def fits() -> bool:
        nonlocal checks
        checks += 1
        return sum(sizes[i] for i in evicted) >= need

    # The scan one at a time, on its own copy of the state.
    expected: list[int] = []
    for i in items:
        if eligible(i):
            evicted.add(i)
            expected.append(i)
            if fits():
                break
    found = fits()
    evicted.clear()
    checks = 0
    removed = [-1 - k for k in range(already)]  # earlier removals stay untouched
    assert _evict_until(items, eligible, evict, restore, removed, fits) is found
    assert removed == [-1 - k for k in range(already)] + expected
    assert evicted == set(expected)
    assert checks <= 2 * max(1, len(items)).bit_length() + 1


@settings(max_examples=200, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=0, max_value=5), max_size=60),
    slack=st.integers(min_value=0, max_value=150),
)
def test_giving_back_by_doubling_stops_where_one_at_a_time_stops(
    sizes: list[int], slack: int
) -> None:
    """``_give_back`` against giving back one at a time until one is needed: the same run
    given back, the rest still out, and a few checks rather than one per workload."""
    from scheduler.preemption import _give_back

    items = list(range(len(sizes)))
    out = set(items)
    need = max(0, sum(sizes) - slack)  # what must stay out; it fits with everything out

    checks = 0

    def fits() -> bool:
        nonlocal checks
        checks += 1
        return sum(sizes[i] for i in out) >= need

    expected = 0
    for i in items:
        out.discard(i)
        if not fits():
            break
        expected += 1
    out = set(items)
    checks = 0

    def restore(i: int) -> None:
        out.remove(i)

    def evict(i: int) -> None:
        assert i not in out
        out.add(i)

    assert _give_back(items, evict, restore, fits) == expected
    assert out == set(items[expected:])
    assert checks <= 2 * max(1, len(items)).bit_length() + 1


def test_a_gangs_preemption_says_how_many_pods_it_admits() -> None:
    """Its admission said "admitted on 3× 1 …", its preemption "admitted on 1 …"."""
    snap = snapshot(
        nodes=[node("h0", H100, 8)],
        queues=[
            queue("team-a", cohort="org").quota(H100, 8),
            queue("team-b", cohort="org").quota(H100, 0),
        ],
        workloads=[
            workload("b-1").gpus(4).queue("team-b").running_on("h0", 0, 1, 2, 3).started(10),
            workload("b-2").gpus(2).queue("team-b").running_on("h0", 4, 5).started(20),
            workload("a-job").gpus(1).pods(3).queue("team-a"),
        ],
    )
    d = decide(snap, use_ilp=False).by_workload()["a-job"]
    assert (d.outcome, d.victims) == (Outcome.PREEMPT, ("b-2",))
    assert d.message.startswith(
        "admitted on 3× 1 H100-80GB GPU after evicting 1 workload(s) (2 GPU-eq): b-2"
    ), d.message


@pytest.mark.parametrize("use_ilp", [False, True], ids=["greedy", "ilp"])
def test_a_reclaim_takes_back_lent_quota_before_its_own_queues_lower_priority(
    use_ilp: bool,
) -> None:
    """Kueue's order: cohort mates' workloads before the preemptor's own queue's. Was:
    a-low went (lowest priority first), leaving team-a at 2/4 while team-b went on
    borrowing 2 of its quota, and a-low to reclaim them at the next decision."""
    snap = snapshot(
        nodes=[node("h0", H100, 4)],
        queues=[
            queue("team-a", cohort="org")
            .quota(H100, 4)
            .preemption(within_queue="LowerPriority", reclaim_within_cohort="Any"),
            queue("team-b", cohort="org").quota(H100, 0),
        ],
        workloads=[
            workload("a-low").gpus(2).queue("team-a").running_on("h0", 0, 1).started(10),
            workload("b-1").gpus(2).queue("team-b").priority(5).running_on("h0", 2, 3).started(20),
            workload("a-high").gpus(2).queue("team-a").priority(10).created(30),
        ],
    )
    d = decide(snap, use_ilp=use_ilp).by_workload()["a-high"]
    assert (d.outcome, d.victims) == (Outcome.PREEMPT, ("b-1",)), d.message


def _q1_reclaims_from(p11_queue: str) -> Snapshot:
    """One shared L40S; q1 (nominal 1) reclaims 400m for p5 from two borrowers of priority
    10 admitted earlier in the same decision: q2's older p7 (300m) and ``p11_queue``'s
    newer p11 (400m)."""
    return Snapshot.model_validate(
        {
            "nodes": [{"name": "n1", "gpus": [{"index": 0, "model": "L40S", "shared": True}]}],
            "queues": [
                {"name": "q1", "cohort": "c0", "quota": {"L40S": {"nominal": 1}}},
                *({"name": q, "cohort": "c0", "quota": {}} for q in sorted({"q2", p11_queue})),
            ],
            "workloads": [
                # Fits nowhere (an empty node-affinity term matches no node): q1's p5 is
                # tried after the borrowers are admitted, and reclaims what they borrow.
                {"name": "p9", "queue": "q1", "demand": {"gpus": 1}, "node_affinity": [{}]},
                {"name": "p5", "queue": "q1", "created": 1, "pods": 2,
                 "demand": {"gpu_milli": 200}, "nominated": True},
                {"name": "p7", "queue": "q2", "priority": 10, "demand": {"gpu_milli": 300},
                 "nominated": True},
                {"name": "p11", "queue": p11_queue, "priority": 10, "created": 1,
                 "demand": {"gpu_milli": 400}, "nominated": True},
            ],
        }
    )  # fmt: skip


def test_a_take_back_leaves_the_older_of_a_queue_in_its_place_whatever_the_sizes() -> None:
    """Was (found by the age-order property): q1 reclaiming its nominal quota took back q2's
    older 300m (the smaller) and left its newer 400m admitted, where the older fitted.
    Within a queue and priority the newest goes first."""
    snap = _q1_reclaims_from("q2")
    outcomes = {d.workload: d for d in decide(snap, use_ilp=False).workloads}
    assert {name: d.outcome for name, d in outcomes.items()} == {
        "p9": Outcome.PENDING,
        "p5": Outcome.ADMIT,
        "p7": Outcome.ADMIT,
        "p11": Outcome.PENDING,
    }
    assert outcomes["p5"].message.endswith("took back quota lent in this decision from p11")


@pytest.mark.parametrize("use_ilp", [False, True], ids=["greedy", "ilp"])
def test_a_take_back_across_queues_takes_the_smallest_of_a_priority_first(use_ilp: bool) -> None:
    """The same two borrowers in two queues: age orders only within a queue, so the take-
    back order's size rule holds between them: q2's older 300m (the least work undone)
    goes, q3's newer 400m stays (guards the size in ``_undo_rank``: by age alone, the
    newer 400m went)."""
    snap = _q1_reclaims_from("q3")
    outcomes = {d.workload: d for d in decide(snap, use_ilp=use_ilp).workloads}
    assert {name: d.outcome for name, d in outcomes.items()} == {
        "p9": Outcome.PENDING,
        "p5": Outcome.ADMIT,
        "p7": Outcome.PENDING,
        "p11": Outcome.ADMIT,
    }
    assert outcomes["p5"].message.endswith("took back quota lent in this decision from p7")


# ------------------------------------------------ policy boundaries (mutation audit)
def _waits_evicting_nothing(snap: Snapshot, use_ilp: bool) -> None:
    decision = decide(snap, use_ilp=use_ilp)
    d = decision.by_workload()["a-job"]
    assert (d.outcome, d.victims, decision.evictions) == (Outcome.PENDING, (), ()), d.message


@pytest.mark.parametrize("use_ilp", [False, True], ids=["greedy", "ilp"])
def test_lower_priority_reclaim_spares_an_equal_priority_borrower(use_ilp: bool) -> None:
    """reclaim_within_cohort=LowerPriority takes back only from strictly lower priorities:
    b-1 borrows all of team-a's GPUs at a-job's own priority, so a-job waits and nothing
    is evicted (guards ``>=`` in ``candidates_for``)."""
    snap = snapshot(
        nodes=[node("h0", H100, 4)],
        queues=[
            queue("team-a", cohort="org")
            .quota(H100, 4)
            .preemption(reclaim_within_cohort="LowerPriority"),
            queue("team-b", cohort="org").quota(H100, 0),
        ],
        workloads=[
            workload("b-1").gpus(4).queue("team-b").running_on("h0", 0, 1, 2, 3).started(10),
            workload("a-job").gpus(2).queue("team-a"),
        ],
    )
    _waits_evicting_nothing(snap, use_ilp)


@pytest.mark.parametrize("use_ilp", [False, True], ids=["greedy", "ilp"])
def test_a_reclaim_never_takes_a_cohort_mate_below_its_nominal_quota(use_ilp: bool) -> None:
    """team-b runs 4 GPUs on its nominal 2: b-1 or b-2 alone may go (team-b borrows what
    it holds), but not both, and a-job needs all 4: it waits, nothing is evicted (guards
    ``book.borrowing`` in ``find_victims``)."""
    snap = snapshot(
        nodes=[node("h0", H100, 4)],
        queues=[
            queue("team-a", cohort="org").quota(H100, 4),
            queue("team-b", cohort="org").quota(H100, 2),
        ],
        workloads=[
            workload("b-1").gpus(2).queue("team-b").running_on("h0", 0, 1).started(10),
            workload("b-2").gpus(2).queue("team-b").running_on("h0", 2, 3).started(20),
            workload("a-job").gpus(4).queue("team-a").priority(10),
        ],
    )
    _waits_evicting_nothing(snap, use_ilp)


@pytest.mark.parametrize("use_ilp", [False, True], ids=["greedy", "ilp"])
def test_within_queue_never_spares_its_own_queue_while_reclaiming(use_ilp: bool) -> None:
    """within_queue=Never holds when the queue also reclaims from its cohort: a-low (same
    queue, lower priority) stays; only the borrower b-1 may go, and its 2 GPUs are not the
    4 a-job needs, so a-job waits (guards the ``Never`` check in ``candidates_for``)."""
    snap = snapshot(
        nodes=[node("h0", H100, 4)],
        queues=[
            queue("team-a", cohort="org").quota(H100, 8).preemption(within_queue="Never"),
            queue("team-b", cohort="org").quota(H100, 0),
        ],
        workloads=[
            workload("a-low").gpus(2).queue("team-a").running_on("h0", 0, 1).started(10),
            workload("b-1").gpus(2).queue("team-b").running_on("h0", 2, 3).started(20),
            workload("a-job").gpus(4).queue("team-a").priority(10),
        ],
    )
    _waits_evicting_nothing(snap, use_ilp)
