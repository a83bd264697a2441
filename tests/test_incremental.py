"""``IncrementalAllocator.decide``: its decisions are the values ``model_construct`` builds."""

from __future__ import annotations

from builders import node, queue, snapshot, workload

from scheduler.incremental import IncrementalAllocator
from scheduler.model import WorkloadDecision

A100 = "A100-80GB"


def test_decisions_equal_model_construct_field_for_field() -> None:
    """The allocator builds its decisions without pydantic's constructor: the values,
    the fields set, the defaults and the JSON must be the constructor's."""
    online = IncrementalAllocator(
        snapshot(nodes=[node("n0", A100, 4)], queues=[queue("q").quota(A100, 2)])
    )
    admitted = online.decide(workload("a").gpus(2).queue("q").build())
    waiting = online.decide(workload("b").gpus(4).queue("q").build())
    for got in (admitted, waiting):
        fields_set = {"workload", "queue", "outcome", "reason", "message", "flavor", "placement"}
        expected = WorkloadDecision.model_construct(
            **{name: getattr(got, name) for name in fields_set}
        )
        assert got == expected
        assert got.model_fields_set == expected.model_fields_set
        assert list(got.__dict__) == list(expected.__dict__)
        assert got.model_dump_json() == expected.model_dump_json()
        assert hash(got) == hash(expected)
    assert admitted.placement and admitted.flavor == A100
    assert waiting.placement == () and waiting.flavor is None
