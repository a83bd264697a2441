"""``IncrementalAllocator.hold``: charging a workload that started on another decision is
the same as compiling a snapshot in which it runs; one whose placement is no longer free
is refused whole."""

from __future__ import annotations

import pytest
from builders import mig, node, queue, snapshot, workload

from scheduler.incremental import IncrementalAllocator
from scheduler.model import PodPlacement
from scheduler.reasons import Outcome
from scheduler.state import PlacementError

A100 = "A100-80GB"


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
