"""The evictions a global decision makes, carried out: each victim evicted through the
Eviction API (PodDisruptionBudgets apply), told with an Event and counted once, and the
workload it makes room for nominated to that room.

A victim holds its devices while it terminates (its grace period), and every decision
meanwhile names it again: it is evicted, told and counted once. An eviction that got no
answer may have been carried out, and its victim may end before the next cycle (a process
that exits at SIGTERM ends while the call times out): it is counted and its beneficiary
nominated at once, and the pod is told once seen leaving or gone, as ``replacing.py``
judges its own. One that was not made is made by a later cycle, not counted again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
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


@dataclass(frozen=True, slots=True)
class _Untold:
    """A pod evicted, or maybe evicted (no answer), not yet told: the eviction got no
    answer, or the cycle stopped."""

    pod: ManagedPod
    eviction: Eviction
    counted: bool
    """Its workload's eviction was counted and its beneficiary nominated already."""


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
        self._untold: dict[Identity, _Untold] = {}
        """Seen leaving or gone in a later cycle, these pods are that eviction's."""

    def carry_out(self, evictions: Iterable[Eviction], pods: dict[str, list[ManagedPod]]) -> None:
        """Evict the decision's victims (``pods``: by workload); count the evictions that
        start now (or may have: no answer) and nominate the workloads they make room for;
        tell the pods evicted earlier once seen leaving or gone. A workload still waiting
        for victims that terminate is nominated again where its nomination is missing (the
        API refused that patch) or has run out (a PodDisruptionBudget held a victim back)."""
        evictions = list(evictions)
        started = self._settle_gone({p.identity for group in pods.values() for p in group})
        started += [e for e in evictions if self._evict(e, pods)]
        nominate: set[str] = set()
        for eviction in started:
            self.metrics.preemptions.labels(eviction.queue).inc()
            nominate.add(eviction.beneficiary)
        now = self.cluster.now()
        for eviction in evictions:
            leaving = any(p.terminating for p in pods.get(eviction.workload, []))
            members = pods.get(eviction.beneficiary, [])
            if leaving and any(p.nominated_until <= now for p in members):
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

    def _settle_gone(self, present: set[Identity]) -> list[Eviction]:
        """Told now, the pods not yet told that are gone: their eviction was made. Returns
        those not counted yet (the cycle stopped before), of workloads none of whose pods
        is left untold (those are told, and it counted, when seen leaving)."""
        gone = [u for identity, u in self._untold.items() if identity not in present]
        self._untold = {i: u for i, u in self._untold.items() if i in present}
        untold = {u.eviction.workload for u in self._untold.values()}
        started: dict[str, Eviction] = {}
        for u in gone:
            self._tell(u.pod, u.eviction)
            if not u.counted and u.eviction.workload not in untold:
                started[u.eviction.workload] = u.eviction
        return list(started.values())

    def _evict(self, eviction: Eviction, pods: dict[str, list[ManagedPod]]) -> bool:
        """Evict the workload's pods that are not already leaving; True if its eviction
        starts now."""
        members = pods.get(eviction.workload, [])
        earlier = {
            p.identity: self._untold.pop(p.identity) for p in members if p.identity in self._untold
        }
        ours = [p for p in members if p.terminating and p.identity in earlier]
        # Started before: in an earlier cycle, or by another leader.
        counted = any(u.counted for u in earlier.values()) or any(
            p.terminating and p not in ours for p in members
        )
        unanswered: list[ManagedPod] = []
        try:
            for pod in members:
                if pod.terminating:
                    continue
                try:
                    self.before_acting()
                    self.api.evict_pod(pod.namespace, pod.name)
                except (ApiException, *UNANSWERED) as error:
                    # 429: a PodDisruptionBudget forbids it now; the next cycle tries again.
                    self.metrics.api_failed("evict", error)
                    log.warning(
                        "evicting %s/%s failed: %s", pod.namespace, pod.name, failure(error)
                    )
                    if not isinstance(error, ApiException):
                        unanswered.append(pod)
                    continue
                ours.append(pod)
        except NotLeading:
            self._remember(ours + unanswered, eviction, counted)
            raise
        starts = bool(ours or unanswered) and not counted
        self._remember(unanswered, eviction, counted or starts)
        for pod in ours:
            self._tell(pod, eviction)
        return starts

    def _remember(self, pods: list[ManagedPod], eviction: Eviction, counted: bool) -> None:
        for pod in pods:
            self._untold[pod.identity] = _Untold(pod, eviction, counted)

    def _tell(self, pod: ManagedPod, eviction: Eviction) -> None:
        message = f"{eviction.message} (for {eviction.beneficiary})"
        self.event(pod.raw or {}, "Preempted", message, "Warning")
