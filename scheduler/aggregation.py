"""What the ILP (``scheduler.allocator``) is built from, aggregated, without PuLP.

One variable per (workload, GPU) is 50,000+ variables at 10,000 GPUs; instead pending
workloads that are interchangeable (same queue, priority, pods, options, CPU/memory and
node constraints: ``Entry.alike``) form a *class*, and the model only counts how many of
each class to admit on each option.
"""

from __future__ import annotations

from dataclasses import dataclass

from scheduler.compiled import Alike, Entry
from scheduler.demand import Option

__all__ = ["WorkloadClass", "workload_classes"]


@dataclass(slots=True)
class WorkloadClass:
    members: list[Entry]
    options: tuple[Option, ...]
    pods: int
    queue: str
    tier: float


def workload_classes(pending: list[Entry]) -> list[WorkloadClass]:
    """The classes of the pending workloads that have options, members in the cycle's order
    (priority, then age): a count the ILP gives a class goes to its first members."""
    groups: dict[Alike, list[Entry]] = {}
    for entry in sorted(pending, key=lambda e: e.order):
        if entry.options:
            groups.setdefault(entry.alike, []).append(entry)
    return [
        WorkloadClass(
            members,
            members[0].options,
            members[0].workload.pods,
            members[0].workload.queue,
            members[0].tier,
        )
        for members in groups.values()
    ]
