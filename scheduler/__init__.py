"""Apportion's decision core: Snapshot in, Decision out. Pure: no I/O, no clock, no randomness.

``decide`` is the global decision (ILP with a greedy fallback); ``IncrementalAllocator``
answers for one arriving workload in microseconds (the webhook's request path).

Its names load on first use: importing the package alone (as the ``apportion`` command
does before it can handle Ctrl-C) costs nothing, where the allocator's imports (numpy,
PuLP) take a third of a second.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from scheduler.allocator import decide
    from scheduler.model import Decision, Snapshot, Workload, WorkloadDecision

__all__ = ["Decision", "Snapshot", "Workload", "WorkloadDecision", "decide"]

_HOMES = {
    "decide": "scheduler.allocator",
    "Decision": "scheduler.model",
    "Snapshot": "scheduler.model",
    "Workload": "scheduler.model",
    "WorkloadDecision": "scheduler.model",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'scheduler' has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
