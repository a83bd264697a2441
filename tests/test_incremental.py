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


def test_built_models_equal_model_construct() -> None:
    """``built`` (used for every decision and idle MIG layout of a global decision too)
    gives what ``model_construct`` gives, with some fields left to their defaults or all
    of them set."""
    from scheduler.model import MigSlice, PodPlacement, built
    from scheduler.reasons import Outcome, Reason

    cases = [
        (MigSlice, {"profile": "3g.40gb", "start": 4}),
        (
            WorkloadDecision,
            {"workload": "w", "queue": "q", "outcome": Outcome.PENDING,
             "reason": Reason.NO_CAPACITY, "message": "waits", "position": 3},
        ),
        (
            WorkloadDecision,
            {"workload": "w", "queue": "q", "outcome": Outcome.PREEMPT,
             "reason": Reason.ADMITTED_BY_PRIORITY, "message": "in", "flavor": A100,
             "placement": (PodPlacement(node="n0", gpus=(0, 1)),), "position": None,
             "victims": ("v",)},
        ),
    ]  # fmt: skip
    for cls, values in cases:
        got, expected = built(cls, values), cls.model_construct(**values)
        assert got == expected
        assert got.model_fields_set == expected.model_fields_set == set(values)
        assert list(got.__dict__.items()) == list(expected.__dict__.items())
        assert got.model_dump_json() == expected.model_dump_json()
        assert hash(got) == hash(expected)
