"""Standalone mode, where no watch says when a pod is gone: the pods a DELETE was accepted
for, each gone once its grace period ends (``LiveCluster.pod_leaving``)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Leaving"]

PodUid = tuple[str, str, str]
"""(namespace, name, uid): two pods under one name each end on their own."""


@dataclass(frozen=True, slots=True)
class _Left:
    workload: str | None
    until: float


class Leaving:
    """The pods being deleted, until their grace period ends. ``LiveCluster`` keeps one
    under its lock: every method expects its caller to hold it."""

    def __init__(self) -> None:
        self._pods: dict[PodUid, _Left] = {}

    def accepted(self, pod: PodUid, workload: str | None, until: float) -> None:
        """A DELETE of ``pod`` (of ``workload``, if known) was accepted: gone at ``until``,
        or sooner if an earlier one said so (a grace period is shortened, never lengthened)."""
        before = self._pods.get(pod)
        if before is not None:
            until = min(until, before.until)
        self._pods[pod] = _Left(workload, until)

    def gone(self, now: float) -> list[tuple[PodUid, str | None]]:
        """The pods whose grace period ended by ``now``, with their workloads: forgotten
        here."""
        gone = [(pod, left.workload) for pod, left in self._pods.items() if left.until <= now]
        for pod, _ in gone:
            del self._pods[pod]
        return gone
