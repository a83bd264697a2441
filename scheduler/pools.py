"""Pools of alike nodes, bucketed by free whole GPUs: the index behind best-fit placement.

Nodes with the same GPU model, pool labels and taints form a pool. A pool keeps its nodes
in buckets keyed (entirely free?, free whole GPUs), and the non-empty buckets as bits of
one integer, ordered like the fragmentation rule — used nodes before entirely free ones
("never break a whole node while a used one can take the pod"), then the smallest
remainder — so the best-fit bucket for a pod is the lowest set bit it fits in.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cache

from scheduler.model import Taint, Toleration

__all__ = ["NodeSet", "Pool", "bucket_at", "tolerated", "usable_bits"]


class NodeSet:
    """Nodes with the same free capacity, lowest id first whatever the history.

    A set plus a lazily cleaned heap: add, discard and "first" are O(log n), so the node a
    pod lands on depends only on the current free state — undoing a placement and asking
    again gives the same answer."""

    __slots__ = ("_heap", "members")

    def __init__(self) -> None:
        self.members: set[int] = set()
        self._heap: list[int] = []

    def add(self, node: int) -> None:
        if node not in self.members:
            self.members.add(node)
            heapq.heappush(self._heap, node)

    def discard(self, node: int) -> None:
        self.members.discard(node)
        if len(self._heap) > 2 * len(self.members) + 16:
            self._heap = sorted(self.members)

    def first(self) -> int | None:
        heap = self._heap
        while heap and heap[0] not in self.members:
            heapq.heappop(heap)
        return heap[0] if heap else None

    def __len__(self) -> int:
        return len(self.members)

    def __iter__(self) -> Iterator[int]:
        return iter(sorted(self.members))


@dataclass(slots=True)
class Pool:
    model: str
    labels: dict[str, str]
    taints: tuple[Taint, ...]
    nodes: list[int] = field(default_factory=list)
    node_size: dict[int, int] = field(default_factory=dict)
    """Healthy non-MIG GPUs of this model per node (its size when entirely free)."""
    whole_free: dict[int, int] = field(default_factory=dict)
    buckets: dict[tuple[bool, int], NodeSet] = field(default_factory=dict)
    """(node entirely free?, free whole GPUs) → the nodes in that state."""
    occupied: int = 0
    """The non-empty buckets as bits (``_bit``): the placement search visits only those."""
    max_size: int = 0
    fractions: list[tuple[int, int, int]] = field(default_factory=list)
    """Sorted (free milli, node, gpu) of shared GPUs with free capacity."""
    mig_free: dict[str, list[tuple[int, int, int]]] = field(default_factory=dict)
    """Profile → sorted free instances (node, gpu, start)."""
    time_shared: bool = False
    """Has a healthy time-shared GPU outside MIG: where a fraction could ever land."""

    def fill_buckets(self) -> None:
        """Bucket every node by its free whole GPUs, once its GPUs are counted: all of them,
        but those held outside the workloads (``Gpu.held``)."""
        self.max_size = max(self.node_size.values(), default=0)
        for n in self.nodes:
            size, free = self.node_size[n], self.whole_free[n]
            if free:
                bucket = (free == size, free)
                self.buckets.setdefault(bucket, NodeSet()).add(n)
                self.occupied |= _bit(bucket, self.max_size)

    def move(self, n: int, delta: int) -> None:
        """Node ``n`` gained (or lost) ``delta`` free whole GPUs: change its bucket."""
        free = self.whole_free[n]
        size = self.node_size[n]
        if free:
            bucket = (free == size, free)
            nodes = self.buckets[bucket]
            nodes.discard(n)
            if not nodes.members:
                self.occupied &= ~_bit(bucket, self.max_size)
        free += delta
        self.whole_free[n] = free
        if free:
            bucket = (free == size, free)
            target = self.buckets.get(bucket)
            if target is None:  # not setdefault: it would build a NodeSet on every move
                target = self.buckets[bucket] = NodeSet()
            target.add(n)
            self.occupied |= _bit(bucket, self.max_size)


def _bit(bucket: tuple[bool, int], max_size: int) -> int:
    """A bucket's bit in ``Pool.occupied``: used nodes' buckets below entirely free ones,
    fewer free GPUs lower — ascending bits are the fragmentation rule's search order."""
    entirely_free, free = bucket
    return 1 << (free + (max_size + 1) * entirely_free)


def bucket_at(i: int, max_size: int) -> tuple[bool, int]:
    """The bucket of bit number ``i`` (the inverse of ``_bit``)."""
    row = max_size + 1
    return (True, i - row) if i >= row else (False, i)


@cache
def usable_bits(k: int, max_size: int) -> int:
    """The bits of every bucket a pod of ``k`` whole GPUs fits in."""
    row = (1 << (max_size + 1)) - (1 << k) if k <= max_size else 0
    return row | (row << (max_size + 1))


def tolerated(taints: tuple[Taint, ...], tolerations: Sequence[Toleration]) -> bool:
    for taint in taints:
        if taint.effect == "PreferNoSchedule":
            continue
        if not any(t.tolerates(taint) for t in tolerations):
            return False
    return True
