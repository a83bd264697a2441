"""The evictions a global decision makes, carried out: each victim evicted through the
Eviction API (PodDisruptionBudgets apply), told with an Event and counted once, and the
workload it makes room for nominated to that room.

A victim holds its devices while it terminates (its grace period), and every decision
meanwhile names it again: it is evicted, told and counted once. An eviction that got no
answer may have been carried out: the pod seen leaving in a later cycle is then this
eviction's, told and counted there.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from kubernetes.client import ApiException

from scheduler.model import Eviction
from webhook import keys
from webhook.cluster import LiveCluster
from webhook.kubeapi import UNANSWERED, KubeApi, failure
from webhook.leader import NotLeading
from webhook.metrics import Metrics
from webhook.patches import set_metadata
from webhook.pods import ManagedPod, rfc3339

__all__ = ["NOMINATION_S", "Preemptor"]

log = logging.getLogger("apportion.controller")

NOMINATION_S = 600
"""How long a workload whose victims were evicted goes first to the room they free: their
grace period (30 s by default), or longer when a PodDisruptionBudget holds one back."""

Identity = tuple[str, str, str]


class Preemptor:
    """Acts through the controller's own steps (``before_acting`` stops at a lost Lease,
    ``patch`` and ``event`` count their failures), as an admission does."""

    def __init__(
        self,
        api: KubeApi,
        cluster: LiveCluster,
        metrics: Metrics,
        *,
        before_acting: Callable[[], None],
        patch: Callable[[ManagedPod, list[dict[str, Any]], str], bool],
        event: Callable[[dict[str, Any], str, str, str], None],
    ) -> None:
        self.api = api
        self.cluster = cluster
        self.metrics = metrics
        self.before_acting = before_acting
        self.patch = patch
        self.event = event
        self._untold: set[Identity] = set()
        """Pods evicted but not yet told and counted (the eviction got no answer, or the
        cycle stopped): seen leaving in a later cycle, they are that eviction's."""

    def carry_out(self, evictions: Iterable[Eviction], pods: dict[str, list[ManagedPod]]) -> None:
        """Evict the decision's victims (``pods``: by workload), then nominate the workloads
        whose victims' eviction starts now."""
        self._untold &= {p.identity for group in pods.values() for p in group}
        nominate: set[str] = set()
        for eviction in evictions:
            if self._evict(eviction.workload, eviction.beneficiary, eviction.message, pods):
                self.metrics.preemptions.labels(eviction.queue).inc()
                nominate.add(eviction.beneficiary)
        for name in sorted(nominate):
            self._nominate(pods.get(name, []))

    def _nominate(self, members: list[ManagedPod]) -> None:
        """Record on the pods of a workload victims are now evicted for that it goes first
        to the room they free (``Workload.nominated``), so a restart keeps it too: in the
        cycle after the victims are gone, another queue's head that ranks alike would take
        the room and leave it to preempt again."""
        stamp = rfc3339(self.cluster.now() + NOMINATION_S)
        for pod in members:
            patch = set_metadata(pod.raw or {}, "annotations", {keys.ANNOTATION_NOMINATED: stamp})
            if patch:
                self.patch(pod, patch, "nominating")

    def _evict(
        self, workload: str, beneficiary: str, message: str, pods: dict[str, list[ManagedPod]]
    ) -> bool:
        """Evict the workload's pods that are not already leaving; True if its eviction
        starts now."""
        members = pods.get(workload, [])
        ours = [p for p in members if p.terminating and p.identity in self._untold]
        self._untold -= {p.identity for p in ours}
        leaving = any(p.terminating and p not in ours for p in members)
        for pod in members:
            if pod.terminating:
                continue
            try:
                self.before_acting()
                self.api.evict_pod(pod.namespace, pod.name)
            except (ApiException, *UNANSWERED) as error:
                # 429: a PodDisruptionBudget forbids it now; the next cycle tries again.
                self.metrics.api_failed("evict", error)
                log.warning("evicting %s/%s failed: %s", pod.namespace, pod.name, failure(error))
                if not isinstance(error, ApiException):
                    self._untold.add(pod.identity)
                continue
            except NotLeading:
                self._untold |= {p.identity for p in ours}
                raise
            ours.append(pod)
        for pod in ours:
            self.event(pod.raw or {}, "Preempted", f"{message} (for {beneficiary})", "Warning")
        return bool(ours) and not leaving
