"""``IncrementalAllocator.hold``: charging a workload that started on another decision is
the same as compiling a snapshot in which it runs."""

from __future__ import annotations

import pytest
from builders import node, queue, snapshot, workload

from scheduler.incremental import IncrementalAllocator
from scheduler.model import PodPlacement
from scheduler.reasons import Outcome

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
