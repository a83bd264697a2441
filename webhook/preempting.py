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

Many victims are evicted at once (``workers.py``), as admissions are made, each victim's
pods one after another. What that keeps of the order one call at a time had:
- a beneficiary is nominated only once every eviction of the cycle is answered (whether it
  is nominated depends on its victims' answers), and before the cycle's admissions and
  waiting pods' reasons start (``Controller._reconcile``): its pods are never patched
  before its victims' evictions are answered;
- a victim is told (Event ``Preempted``) only once its eviction is answered, queued behind
  it (``Workers.later``);
- a lost Lease stops the evictions not started and every nomination; evictions made until
  then are counted, and told by a later cycle once seen leaving (``_asked``).

A victim of several pods cannot be evicted at once: a replica may die (or lose the Lease)
between two of its pods' evictions, and a PodDisruptionBudget may let them go one at a
time. Left so, a gang whose member ended runs on (its owner replaces the member), and
the next decision sees a smaller workload and may evict another in its place. So before
the first of its pods is evicted, each of its pods to evict is marked
(``keys.ANNOTATION_EVICTED_FOR``: for whom, why, until ``NOMINATION_S`` from now; its
reason annotation the decision's message, which the rest of its pods are told with, by
whichever replica evicts them), every mark answered before any eviction (one refused or
unanswered: none of that victim's pods is evicted this cycle). A running workload one of
whose pods carries an unexpired mark, for a workload that still waits, is a victim in
progress (``under_way``), whoever started it: every cycle evicts the rest of it, whatever
the decision, and the decision sees it as gone (``Controller._reconcile``). A one-pod
victim goes whole or not at all: no mark.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from kubernetes.client import ApiException

from scheduler.model import Eviction, Workload
from webhook import keys
from webhook.cluster import LiveCluster
from webhook.kubeapi import UNANSWERED, KubeApi, failure
from webhook.metrics import Metrics
from webhook.patches import set_metadata
from webhook.pods import EvictionMark, ManagedPod, rfc3339
from webhook.workers import Workers

__all__ = ["LOST_EVICTION_S", "NOMINATION_S", "Preemptor", "told", "under_way"]

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


@dataclass(slots=True)
class _Evicted:
    """What one victim's eviction task did this cycle: written by that task only."""

    made: set[Identity] = field(default_factory=set)
    """Its pods whose eviction was made now (noted in ``_asked`` until told)."""
    unanswered: bool = False
    """Whether one of its pods' evictions got no answer."""


def told(eviction: Eviction) -> str:
    """What a victim is told, on its pods' reason (a victim of several pods, with its
    mark) and in its Event alike: why, with the numbers of the decision that chose it, and
    for whom (the core's message names the beneficiary), as an admission's reason reads."""
    return f"{eviction.reason.value}: {eviction.message}"


def under_way(pods: dict[str, list[ManagedPod]], now: float) -> list[Eviction]:
    """The victims in progress among the workloads (``pods``: by the name the decision
    names them): running, one of their pods marked (``keys.ANNOTATION_EVICTED_FOR``) until
    after ``now``, for a workload whose pods all still wait. Each with the mark that ends
    last, and the message its pod's reason records (``told``: the decision that chose it
    may have been another replica's). Expired marks, marks on a workload no longer running
    and marks for a workload admitted or gone are moot."""
    found = []
    for name, members in sorted(pods.items()):
        if not members or any(p.gated for p in members):
            continue
        marked = [
            (p.evicted_for, p) for p in members if p.evicted_for and p.evicted_for.until > now
        ]
        if not marked:
            continue
        mark, pod = max(marked, key=lambda m: (m[0].until, m[0].beneficiary))
        beneficiary = pods.get(mark.beneficiary)
        if not beneficiary or not all(p.gated for p in beneficiary):
            continue
        reason = str(pod.annotations.get(keys.ANNOTATION_REASON, ""))
        message = reason.removeprefix(f"{mark.reason.value}: ")
        if message == reason:  # a mark made before its reason was recorded beside it
            message = (
                f"evicted for {mark.beneficiary} with the rest of its workload, whose "
                "eviction started earlier"
            )
        found.append(
            Eviction(
                workload=name,
                queue=members[0].queue,
                beneficiary=mark.beneficiary,
                reason=mark.reason,
                message=message,
            )
        )
    return found


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
        self._lock = threading.Lock()
        """Guards ``_asked`` while a cycle's eviction tasks run, each its own victim's pods."""
        self._counted: set[Identity] = set()
        """The pods of victims whose eviction was counted, while they are seen (or asked):
        evicting the ones left counts nothing more."""
        self._nominated: dict[str, int] = {}
        """The workloads this replica nominated, until when, while the watch does not show
        it on their pods (``unseen_nominations``)."""

    def carry_out(
        self,
        workers: Workers,
        evictions: Iterable[Eviction],
        pods: dict[str, list[ManagedPod]],
    ) -> None:
        """Evict the decision's victims (``pods``: by workload), many at once; count the
        evictions that start now and nominate the workloads they make room for (at once
        where one got no answer), once every eviction is answered; tell and count the pods
        evicted earlier once seen leaving or gone. A workload still waiting for victims
        that terminate is nominated again where its nomination is missing (the API refused
        that patch) or has run out (a PodDisruptionBudget held a victim back)."""
        evictions = list(evictions)
        now = self.cluster.now()
        nominate: set[str] = set()
        for eviction, identities in self._settle_asked(workers, pods, now):
            if self._count(eviction, identities, pods):
                nominate.add(eviction.beneficiary)
        present = {p.identity for group in pods.values() for p in group}
        self._counted &= present | self._asked.keys()
        for eviction in evictions:
            members = pods.get(eviction.workload, [])
            if any(p.terminating for p in members):
                # Started before: counted by this replica, or by another leader.
                self._counted.update(p.identity for p in members)
        evicted = [(eviction, _Evicted()) for eviction in evictions]
        try:
            workers.each(
                (
                    f"evicting {eviction.workload}",
                    partial(self._evict, eviction, pods.get(eviction.workload, []), now, outcome),
                )
                for eviction, outcome in evicted
            )
        finally:
            # Counted even where the Lease was lost meanwhile: those evictions were made.
            for eviction, outcome in evicted:
                if outcome.made and self._count(eviction, outcome.made, pods):
                    nominate.add(eviction.beneficiary)
        for eviction, outcome in evicted:
            for identity in sorted(outcome.made):
                self._tell(workers, self._asked.pop(identity).pod, eviction)
            if outcome.unanswered:  # its victim may end before the next cycle
                nominate.add(eviction.beneficiary)
        for eviction in evictions:
            leaving = any(p.terminating for p in pods.get(eviction.workload, []))
            members = pods.get(eviction.beneficiary, [])
            if leaving and any(p.nominated_until <= now for p in members):
                nominate.add(eviction.beneficiary)
        workers.each(
            (f"nominating {name}", partial(self._nominate, name, pods.get(name, [])))
            for name in sorted(nominate)
        )

    def _nominate(self, name: str, members: list[ManagedPod]) -> None:
        """Record on the pods of a workload victims are now evicted for that it goes first
        to the room they free (``Workload.nominated``), so a restart keeps it too: in the
        cycle after the victims are gone, another queue's head that ranks alike would take
        the room and leave it to preempt again. Kept here too, until the watch shows it
        (``unseen_nominations``)."""
        until = int(self.cluster.now()) + NOMINATION_S
        made = False
        for pod in members:
            values = {keys.ANNOTATION_NOMINATED: rfc3339(until)}
            patch = set_metadata(pod.raw or {}, "annotations", values)
            made |= bool(patch) and self.patch(pod, patch, "nominating")
        if made:
            with self._lock:
                self._nominated[name] = until

    def unseen_nominations(self, workloads: Iterable[Workload], now: float) -> set[str]:
        """The waiting ``workloads`` this replica nominated that their pods, as the watch
        shows them, do not say are nominated yet. A victim that ends at once (gone while
        its eviction's answer was lost) is seen gone before its beneficiary's nomination,
        patched after that answer: a cycle between the two gave its room to another
        queue's head ranking alike. Those seen nominated, no longer waiting, or run out are
        forgotten."""
        waiting = {w.name for w in workloads if w.placement is None and not w.nominated}
        with self._lock:
            self._nominated = {
                name: until
                for name, until in self._nominated.items()
                if name in waiting and until > now
            }
            return set(self._nominated)

    def _settle_asked(
        self, workers: Workers, pods: dict[str, list[ManagedPod]], now: float
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
                self._tell(workers, asked.pod, asked.eviction)
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
        self, eviction: Eviction, members: list[ManagedPod], now: float, outcome: _Evicted
    ) -> None:
        """Evict the victim's pods that are not already leaving, one after another (a
        worker's task). ``outcome`` gets those whose eviction was made now (answered, or
        gone after one that got no answer: 404), noted as asked until ``carry_out`` tells
        them, and whether one got no answer. A victim of several pods is marked first, each
        pod to evict (``_mark``): if one mark is not made, none is evicted."""
        if not self._mark(eviction, members, now):
            return
        for pod in members:
            if pod.terminating:
                continue
            self.before_acting()
            with self._lock:
                asked = self._asked.pop(pod.identity, None)
            try:
                self.api.evict_pod(pod.namespace, pod.name)
            except (ApiException, *UNANSWERED) as error:
                gone = isinstance(error, ApiException) and error.status == 404
                if not (gone and asked is not None):  # else: the watch had not shown it leave
                    # 429: a PodDisruptionBudget forbids it now; the next cycle tries again.
                    self.metrics.api_failed("evict", error)
                    log.warning(
                        "evicting %s/%s failed: %s", pod.namespace, pod.name, failure(error)
                    )
                    if not isinstance(error, ApiException):
                        asked, outcome.unanswered = _Asked(pod, eviction, made=False, at=now), True
                    if asked is not None:
                        with self._lock:
                            self._asked[pod.identity] = asked
                    continue
            with self._lock:
                self._asked[pod.identity] = _Asked(pod, eviction, made=True, at=now)
            outcome.made.add(pod.identity)

    def _mark(self, eviction: Eviction, members: list[ManagedPod], now: float) -> bool:
        """Mark the pods of a victim of several pods that are not leaving yet as evicted for
        its beneficiary (``keys.ANNOTATION_EVICTED_FOR``), their reason saying why
        (``told``), where they do not say so already for more than half of
        ``NOMINATION_S``; True once every mark is made. So a victim a PodDisruptionBudget
        holds back keeps its mark as long as its eviction goes on (a mark run out would let
        the decision pick another victim in its place). A one-pod victim is not marked: it
        cannot be left half evicted."""
        if len(members) < 2:
            return True
        mark = EvictionMark(eviction.beneficiary, eviction.reason, int(now) + NOMINATION_S)
        for pod in members:
            current = pod.evicted_for
            if pod.terminating or (
                current is not None
                and current.beneficiary == mark.beneficiary
                and current.until > now + NOMINATION_S / 2
            ):
                continue
            annotations = {
                keys.ANNOTATION_EVICTED_FOR: mark.text(),
                keys.ANNOTATION_REASON: told(eviction),
            }
            patch = set_metadata(pod.raw or {}, "annotations", annotations)
            if patch and not self.patch(pod, patch, "marking for eviction"):
                return False
        return True

    def _tell(self, workers: Workers, pod: ManagedPod, eviction: Eviction) -> None:
        """The Event ``Preempted`` (``told``), left to the cycle's workers behind the
        eviction it tells of (``Workers.later``)."""
        workers.later(
            f"the event Preempted on {pod.name}",
            partial(self.event, pod.raw or {}, "Preempted", told(eviction), "Warning"),
        )
