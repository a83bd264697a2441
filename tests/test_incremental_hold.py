"""``IncrementalAllocator.hold``: charging a workload that started on another decision is
the same as compiling a snapshot in which it runs; one whose placement is no longer free
is refused whole. ``hold_decided``: an admission decided on an older state is refused, with
its reason, where the queue's quota or the node's CPU or memory no longer allows it."""

from __future__ import annotations

from typing import Any

import pytest
from builders import mig, node, queue, snapshot, workload

from scheduler.incremental import IncrementalAllocator, Overtaken
from scheduler.model import PodPlacement
from scheduler.reasons import Outcome, Reason
from scheduler.state import PlacementError

A100 = "A100-80GB"
H100 = "H100-80GB"


def test_hold_equals_a_rebuild_and_releases() -> None:
    nodes = [node("n0", A100, 4, shared=[3]), node("n1", A100, 4)]
    queues = [queue("q").quota(A100, 8)]
    started = workload("started").gpus(2).queue("q").build()
    running = started.model_copy(
        update={
            "placement": (PodPlacement(node="n1", gpus=(0, 1)),),
            "flavor": A100,
            "started": 5,
        }
    )
    online = IncrementalAllocator(snapshot(nodes=nodes, queues=queues))
    online.hold(running)
    rebuilt = IncrementalAllocator(snapshot(nodes=nodes, queues=queues, workloads=[running]))
    arrival = workload("next").gpus(3).queue("q").build()
    assert online.decide(arrival) == rebuilt.decide(arrival)
    assert online.release("started")
    assert not online.release("started")
    assert online.decide(workload("big").gpus(4).queue("q").build()).outcome is Outcome.ADMIT


def test_hold_twice_is_an_error() -> None:
    running = (
        workload("w")
        .gpus(1)
        .queue("q")
        .build()
        .model_copy(
            update={
                "placement": (PodPlacement(node="n0", gpus=(0,)),),
                "flavor": A100,
                "started": 1,
            }
        )
    )
    online = IncrementalAllocator(
        snapshot(nodes=[node("n0", A100, 2)], queues=[queue("q").quota(A100, 2)])
    )
    online.hold(running)
    with pytest.raises(ValueError, match="already admitted"):
        online.hold(running)


def _held(online: IncrementalAllocator) -> tuple[object, ...]:
    """Everything a charge changes: GPU shares, MIG slices, CPU, memory, quota."""
    state, book = online._compiled.state, online._compiled.book
    slices = [[s for s, (_, taken) in (m or {}).items() if taken] for m in state.gpu_mig]
    usage = {q: dict(a.usage) for q, a in book.accounts.items()}
    return list(state.gpu_free_milli), slices, list(state.free_cpu), list(state.free_mem), usage


@pytest.mark.parametrize(
    ("ask", "placement"),
    [
        # The gang's first pod is free, its second lands on the GPU another holds.
        ("gpus", ((0,), (2,))),
        # Both pods on one GPU: each free alone, not together.
        ("gpus", ((1,), (1,))),
        ("mig", ((3, 1), (3, 0))),
    ],
    ids=["a-gpu-taken", "one-gpu-twice", "a-slice-taken"],
)
def test_a_hold_that_clashes_charges_nothing(
    ask: str, placement: tuple[tuple[int, ...], ...]
) -> None:
    # Was: the pods before the clash stayed charged (devices, CPU, memory), and a driver
    # had to throw the allocator away to check a global decision against it.
    layout = mig(*(f"1g.10gb@{i}" for i in range(7)))
    nodes = [node("n0", A100, 4, mig_layouts={3: layout}, cpu_milli=8000, memory_mib=65536)]
    queues = [queue("q").quota(A100, 4).quota("mig-1g.10gb", 7)]
    holder = workload("holder").queue("q").resources(1000, 1024)
    holder = (
        holder.gpus(1).running_on("n0", 2)
        if ask == "gpus"
        else holder.mig("1g.10gb").running_on("n0", 3, mig_start=0)
    )
    online = IncrementalAllocator(snapshot(nodes=nodes, queues=queues, workloads=[holder]))
    before = _held(online)
    gang = workload("gang").queue("q").resources(2000, 4096)
    gang = gang.gpus(1) if ask == "gpus" else gang.mig("1g.10gb")
    for pod in placement:
        if ask == "gpus":
            gang = gang.running_on("n0", *pod)
        else:
            gang = gang.running_on("n0", pod[0], mig_start=pod[1])
    with pytest.raises(PlacementError):
        online.hold(gang.build())
    assert _held(online) == before
    assert not online.holds("gang")


# -- hold_decided: a global decision's admission, taken on an older state ----------------------


@pytest.mark.parametrize(
    ("queues", "meanwhile", "decided", "reason", "message"),
    [
        (
            [queue("q").quota(A100, 4)],
            workload("meanwhile").gpus(3).queue("q"),
            workload("decided").gpus(2).queue("q").running_on("n1", 0, 1),
            Reason.QUOTA_EXHAUSTED,
            "queue q at nominal A100-80GB quota 3/4; needs 2",
        ),
        (
            [queue("q", "lab").quota(A100, 2, borrowing_limit=1), queue("r", "lab").quota(A100, 6)],
            workload("meanwhile").gpus(2).queue("q"),
            workload("decided").gpus(2).queue("q").running_on("n1", 0, 1),
            Reason.BORROWING_LIMIT,
            "queue q at 2/2 A100-80GB (borrowing limit 1); needs 2",
        ),
        (
            [queue("q", "lab").quota(A100, 2), queue("r", "lab").quota(A100, 6, lending_limit=1)],
            workload("meanwhile").gpus(3).queue("q"),
            workload("decided").gpus(1).queue("q").running_on("n1", 0),
            Reason.COHORT_EXHAUSTED,
            "queue q at 3/2 A100-80GB; cohort lab lends 0 more; needs 1",
        ),
        (
            [queue("q").quota(A100, 8)],
            workload("meanwhile").gpus(3).queue("q").resources(6000, 1024).selector(host="n1"),
            workload("decided").gpus(1).queue("q").resources(3000, 1024).running_on("n1", 3),
            Reason.NO_CAPACITY,
            "node n1 has 2 CPU free; its 1 pod(s) there ask 3 CPU",
        ),
        (
            [queue("q").quota(A100, 8)],
            workload("meanwhile").gpus(1).queue("q").resources(0, 40960).selector(host="n1"),
            workload("decided")
            .gpus(1)
            .queue("q")
            .resources(2000, 8192)
            .pods(2)
            .running_on("n1", 2)
            .running_on("n1", 3),
            Reason.NO_CAPACITY,
            "node n1 has 8 GiB memory free; its 2 pod(s) there ask 16 GiB",
        ),
    ],
    ids=["quota", "borrowing-limit", "cohort-lending", "cpu", "memory"],
)
def test_a_decided_admission_that_no_longer_fits_is_refused_with_why_charging_nothing(
    queues: list[Any],
    meanwhile: Any,
    decided: Any,
    reason: Reason,
    message: str,
) -> None:
    # Was: held wherever its devices were free: the webhook's admissions at creation while
    # the decision was taken could have used the queue's quota (or the cohort's lendable
    # room, or the node's CPU and memory), and the controller's pushed past them.
    nodes = [
        node("n0", A100, 4, cpu_milli=8000, memory_mib=49152),
        node("n1", A100, 4, labels={"host": "n1"}, cpu_milli=8000, memory_mib=49152),
    ]
    online = IncrementalAllocator(snapshot(nodes=nodes, queues=queues))
    admitted = online.decide(meanwhile.build())
    assert admitted.outcome is Outcome.ADMIT
    assert not {(p.node, g) for p in admitted.placement for g in p.gpus} & {
        (p.node, g) for p in decided.build().placement or () for g in p.gpus
    }  # its devices are free: only quota or the node's CPU or memory stand in the way
    before = _held(online)
    assert online.hold_decided(decided.flavor(A100).build()) == Overtaken(reason, message)
    assert _held(online) == before
    assert not online.holds("decided")
    # Decided on the state as it is (the admission at creation gone), it is held.
    assert online.release("meanwhile")
    assert online.hold_decided(decided.flavor(A100).build()) is None
    rebuilt = IncrementalAllocator(
        snapshot(nodes=nodes, queues=queues, workloads=[decided.flavor(A100)])
    )
    assert _held(online) == _held(rebuilt)


def test_a_decided_admission_on_devices_no_longer_free_raises_as_hold_does() -> None:
    nodes = [node("n0", A100, 2)]
    online = IncrementalAllocator(snapshot(nodes=nodes, queues=[queue("q").quota(A100, 2)]))
    assert online.decide(workload("meanwhile").gpus(1).queue("q").build()).placement == (
        PodPlacement(node="n0", gpus=(0,)),
    )
    before = _held(online)
    with pytest.raises(PlacementError):
        online.hold_decided(workload("decided").gpus(1).queue("q").running_on("n0", 0).build())
    assert _held(online) == before


def test_a_decided_admission_on_a_gpu_out_of_service_since_is_refused() -> None:
    # Was: held there, as running pods' are kept on a GPU that fails under them; a new one
    # must not be sent to it (an XID since the decision, or its device plugin gone).
    nodes = [node("n0", A100, 2, unhealthy=[1])]
    online = IncrementalAllocator(snapshot(nodes=nodes, queues=[queue("q").quota(A100, 2)]))
    before = _held(online)
    decided = workload("decided").gpus(1).queue("q").flavor(A100).running_on("n0", 1).build()
    assert online.hold_decided(decided) == Overtaken(
        Reason.NO_CAPACITY, "GPU 1 on node n0 is out of service"
    )
    assert _held(online) == before
    assert not online.holds("decided")


# -- take_held: devices held by pods outside the workloads ---------------------------------------


def test_take_held_refuses_a_mig_slice_a_workload_holds() -> None:
    """r runs on slice @0 of h0's GPU 0: a foreign pod cannot be said to hold it too. False,
    nothing taken, and the other slice (@4) still goes to the next 3g.40gb request."""
    nodes = [node("h0", H100, 1, mig_layouts={0: mig("3g.40gb@0", "3g.40gb@4")})]
    queues = [queue("q").quota("mig-3g.40gb", 2)]
    r = workload("r").mig("3g.40gb").queue("q").running_on("h0", 0, mig_start=0)
    online = IncrementalAllocator(snapshot(nodes=nodes, queues=queues, workloads=[r]))
    before = _held(online)
    assert online.take_held("h0", [], [(0, 0)]) is False
    assert _held(online) == before
    d = online.decide(workload("next").mig("3g.40gb").queue("q").build())
    assert (d.outcome, d.placement) == (
        Outcome.ADMIT,
        (PodPlacement(node="h0", gpus=(0,), mig_start=4),),
    )
