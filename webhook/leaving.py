"""Standalone mode, where no watch says when a pod is gone: the pods a DELETE was accepted
for, each gone once its grace period ends (``LiveCluster.pod_leaving``), that period read
from the DELETE's review (``grace_period_s``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Leaving", "grace_period_s"]

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


DEFAULT_GRACE_S = 30
"""Kubernetes' default ``terminationGracePeriodSeconds``."""


def grace_period_s(pod: Mapping[str, Any], options: Mapping[str, Any] | None) -> int:
    """How long a pod a DELETE was accepted for may still run (seconds), as that DELETE's
    review says it: 0 for a pod that never ran (not bound) or has ended (Succeeded,
    Failed); else the DeleteOptions' ``gracePeriodSeconds``, which the API server settles
    before it calls the webhook (the pod's own grace, 0 for a force delete and for the
    kubelet's last delete once the containers stopped); else the grace of a deletion under
    way; else the pod's ``terminationGracePeriodSeconds``; else Kubernetes' 30 s."""
    spec = pod.get("spec")
    spec = spec if isinstance(spec, Mapping) else {}
    status = pod.get("status")
    phase = status.get("phase") if isinstance(status, Mapping) else None
    if not spec.get("nodeName") or phase in ("Succeeded", "Failed"):
        return 0
    metadata = pod.get("metadata")
    metadata = metadata if isinstance(metadata, Mapping) else {}
    for value in (
        (options or {}).get("gracePeriodSeconds"),
        metadata.get("deletionGracePeriodSeconds"),
        spec.get("terminationGracePeriodSeconds"),
    ):
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return DEFAULT_GRACE_S
