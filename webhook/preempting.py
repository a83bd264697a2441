"""The evictions a global decision makes, carried out: each victim evicted through the
Eviction API (PodDisruptionBudgets apply), told with an Event and counted once, and the
workload it makes room for nominated to that room.

A victim holds its devices while it terminates (its grace period), and every decision
meanwhile names it again: it is evicted, told and counted once. A gang victim whose pods
a PodDisruptionBudget lets go one at a time is counted once, in the cycle its first pod
goes. An eviction that got no answer may have been carried out, and its victim may end
before the next cycle (a process that exits at SIGTERM ends while the call times out):
its beneficiary is nominated at once, and the eviction is told and counted once its
victim is seen leaving or gone (or a repeated eviction answers 404). One whose victim is
still seen running, not leaving, ``LOST_EVICTION_S`` later was not made: never counted,
its victim not told, and made by a later cycle if a decision still needs it.
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

__all__ = ["LOST_EVICTION_S", "NOMINATION_S", "Preemptor"]

log = logging.getLogger("apportion.controller")

NOMINATION_S = 600
"""How long a workload whose victims were evicted goes first to the room they free: their
grace period (30 s by default), or longer when a PodDisruptionBudget holds one back."""

LOST_EVICTION_S = 60.0
"""How long after an eviction that got no answer its victim may still be seen running, not
leaving, before that eviction counts as not made: the watch shows a made one's
``deletionTimestamp`` within a second or so, and a watch gone silent is given up, and the
pods listed again, well within this."""

Identity = tuple[str, str, str]


@dataclass(frozen=True, slots=True)
class _Asked:
    """A victim whose eviction is not told yet: it got no answer (``made`` False: it may
    not have been made), or the cycle stopped before."""

    pod: ManagedPod
    eviction: Eviction
    made: bool
    at: float
    """When it was asked (the cluster's clock)."""


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
        self._asked: dict[Identity, _Asked] = {}
        """Seen leaving or gone in a later cycle, these pods are that eviction's: told, and
        its victim counted."""
        self._counted: set[Identity] = set()
        """The pods of victims whose eviction was counted, while they are seen (or asked):
        evicting the ones left counts nothing more."""

    def carry_out(self, evictions: Iterable[Eviction], pods: dict[str, list[ManagedPod]]) -> None:
        """Evict the decision's victims (``pods``: by workload); count the evictions that
        start now and nominate the workloads they make room for (at once where one got no
        answer); tell and count the pods evicted earlier once seen leaving or gone. A
        workload still waiting for victims that terminate is nominated again where its
        nomination is missing (the API refused that patch) or has run out (a
        PodDisruptionBudget held a victim back)."""
        evictions = list(evictions)
        now = self.cluster.now()
        nominate: set[str] = set()
        for eviction, identities in self._settle_asked(pods, now):
            if self._count(eviction, identities, pods):
                nominate.add(eviction.beneficiary)
        present = {p.identity for group in pods.values() for p in group}
        self._counted &= present | self._asked.keys()
        for eviction in evictions:
            made, unanswered = self._evict(eviction, pods, now)
            if made and self._count(eviction, made, pods):
                nominate.add(eviction.beneficiary)
            if unanswered:  # its victim may end before the next cycle
                nominate.add(eviction.beneficiary)
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

    def _settle_asked(
        self, pods: dict[str, list[ManagedPod]], now: float
    ) -> list[tuple[Eviction, set[Identity]]]:
        """Told now, the pods not yet told that are seen leaving or gone: their eviction
        was made. Returns those evictions with their pods, to be counted; forgets those
        whose victim is still seen running ``LOST_EVICTION_S`` after it got no answer."""
        seen = {p.identity: p for group in pods.values() for p in group}
        made: dict[str, tuple[Eviction, set[Identity]]] = {}
        for identity, asked in list(self._asked.items()):
            pod = seen.get(identity)
            if pod is None or pod.terminating:
                del self._asked[identity]
                self._tell(asked.pod, asked.eviction)
                workload = asked.eviction.workload
                made.setdefault(workload, (asked.eviction, set()))[1].add(identity)
            elif not asked.made and now - asked.at > LOST_EVICTION_S:
                del self._asked[identity]
                log.info(
                    "the eviction of %s/%s got no answer and was not made: it still runs",
                    pod.namespace,
                    pod.name,
                )
        return list(made.values())

    def _count(
        self, eviction: Eviction, identities: set[Identity], pods: dict[str, list[ManagedPod]]
    ) -> bool:
        """Count the victim's eviction, made for ``identities``, unless counted already;
        True if counted now."""
        workload = eviction.workload
        related = identities | {p.identity for p in pods.get(workload, [])}
        related |= {i for i, a in self._asked.items() if a.eviction.workload == workload}
        counted = bool(related & self._counted)
        self._counted |= related
        if not counted:
            self.metrics.preemptions.labels(eviction.queue).inc()
        return not counted

    def _evict(
        self, eviction: Eviction, pods: dict[str, list[ManagedPod]], now: float
    ) -> tuple[set[Identity], bool]:
        """Evict the workload's pods that are not already leaving. Returns the pods whose
        eviction was made now (answered, or gone after one that got no answer: 404), told,
        and whether one got no answer."""
        members = pods.get(eviction.workload, [])
        if any(p.terminating for p in members):
            # Started before: counted by this replica, or by another leader.
            self._counted.update(p.identity for p in members)
        made: list[ManagedPod] = []
        unanswered = False
        try:
            for pod in members:
                if pod.terminating:
                    continue
                self.before_acting()
                asked = self._asked.pop(pod.identity, None)
                try:
                    self.api.evict_pod(pod.namespace, pod.name)
                except (ApiException, *UNANSWERED) as error:
                    if (
                        isinstance(error, ApiException)
                        and error.status == 404
                        and asked is not None
                    ):
                        made.append(pod)  # the watch had not shown it leave yet
                        continue
                    # 429: a PodDisruptionBudget forbids it now; the next cycle tries again.
                    self.metrics.api_failed("evict", error)
                    log.warning(
                        "evicting %s/%s failed: %s", pod.namespace, pod.name, failure(error)
                    )
                    if not isinstance(error, ApiException):
                        asked, unanswered = _Asked(pod, eviction, made=False, at=now), True
                    if asked is not None:
                        self._asked[pod.identity] = asked
                    continue
                made.append(pod)
        except NotLeading:
            for pod in made:
                self._asked[pod.identity] = _Asked(pod, eviction, made=True, at=now)
            raise
        for pod in made:
            self._tell(pod, eviction)
        return {p.identity for p in made}, unanswered

    def _tell(self, pod: ManagedPod, eviction: Eviction) -> None:
        message = f"{eviction.message} (for {eviction.beneficiary})"
        self.event(pod.raw or {}, "Preempted", message, "Warning")
