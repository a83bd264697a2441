"""Apportion's decision core: Snapshot in, Decision out. Pure: no I/O, no clock, no randomness.

``decide`` is the global decision (ILP with a greedy fallback); ``IncrementalAllocator``
answers for one arriving workload in microseconds (the webhook's request path).
"""

from scheduler.allocator import decide
from scheduler.model import Decision, Snapshot, Workload, WorkloadDecision

__all__ = ["Decision", "Snapshot", "Workload", "WorkloadDecision", "decide"]
