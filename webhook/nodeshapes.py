"""What one node of each GPU model can ever hold: what "can this pod ever fit" checks need.

A cluster has few node shapes, so each answer is a handful of numbers per model, worked out
again only when the nodes change.
"""

from __future__ import annotations

from collections.abc import Iterable

from scheduler.model import Node

__all__ = ["NodeShapes"]

HostShape = tuple[int | None, int | None]
"""A node's allocatable (CPU milli, memory MiB), None where it does not say."""


class NodeShapes:
    """The answers for the nodes as they are, until ``forget``. ``LiveCluster`` keeps one
    under its lock: every method expects its caller to hold it."""

    def __init__(self) -> None:
        self._largest: dict[str, int] | None = None
        self._hosts: dict[str, frozenset[HostShape]] | None = None

    def forget(self) -> None:
        """The nodes changed."""
        self._largest = None
        self._hosts = None

    def largest(self, nodes: Iterable[Node]) -> dict[str, int]:
        """Per GPU model present: the most whole GPUs one node has (0 for all-MIG models)."""
        if self._largest is None:
            largest: dict[str, int] = {}
            for node in nodes:
                for model in {g.model for g in node.gpus}:
                    whole = sum(1 for g in node.gpus if g.model == model and g.mig is None)
                    largest[model] = max(largest.get(model, 0), whole)
            self._largest = largest
        return self._largest

    def hosts(self, nodes: Iterable[Node]) -> dict[str, frozenset[HostShape]]:
        """Per GPU model present: the (CPU milli, memory MiB) its nodes have allocatable."""
        if self._hosts is None:
            shapes: dict[str, set[HostShape]] = {}
            for node in nodes:
                shape = (node.cpu_milli, node.memory_mib)
                for model in {g.model for g in node.gpus}:
                    shapes.setdefault(model, set()).add(shape)
            self._hosts = {m: frozenset(s) for m, s in shapes.items()}
        return self._hosts
