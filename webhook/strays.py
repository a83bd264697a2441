"""Pods that carry Apportion's gate but that Apportion never decided ("strays").

A pod created with ``apportion.io/admission`` (a manifest copied from a waiting pod) that
the webhook never saw, or one the webhook gated as it would refuse it (so that it never runs
outside every quota should the validating call fail), has no recorded decision
(``pods.decided_workload``: none, or a copied one naming another namespace), and nobody
else removes that gate: it would wait for ever.
The controller's informer keeps such pods apart (``LiveCluster.put_stray``); at every cycle
the leader settles each one by its namespace's labels of the moment:
- Apportion does not manage it (it asks no GPU, a DaemonSet chooses its node, or its
  namespace did not opt in: ``pods.not_managed``): Apportion's gate, and only it, is
  removed, with an Event ``NotManaged`` saying why.
- In shadow mode (global, or its namespace's ``apportion.io/mode=shadow``) Apportion
  holds no pod: Apportion's gate is removed the same way.
- It is Apportion's (a GPU pod of an opted-in namespace: created before the namespace
  opted in, or past the webhook): it is *adopted*, as Kueue's pod integration makes a
  Workload for a gated pod. The controller records on it what the mutating webhook records
  on a pod that must wait (``Admission.adopt``: queue, workload, gang size, tolerations),
  with an Event ``Adopted``; its next cycle decides it in fair-share order. One the
  validating webhook would refuse (no or an unknown queue, one closed to its namespace,
  a request no node can hold) keeps the gate: released, it would run outside every quota.
  A Warning Event ``Refused`` says why, once per reason (and again after a restart or a
  change of leader); it is adopted once the reason is gone (the queue created, say).
A GPU pod of a namespace not seen yet keeps its gate until its Namespace is seen.

A release or an adoption whose answer was lost may or may not have been made: it is
counted and told once the watch shows it made (``StrayGates.seen``), never if the pod is
deleted first; while the pod still shows as a stray, it is asked again (the patch tests
the pod as seen, so one made already is not made twice).

A pass settles many pods at once (``workers.py``): each pod is judged first, on the
controller's thread, then its one call (a patch, or the Refused Event) is a worker's task;
a pod's NotManaged or Adopted Event is queued once its patch is answered. Settling is a
step of its own, ended (its Events too) before the cycle's decision, so an adopted pod is
told Adopted before it can be told Admitted.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial

from webhook import keys
from webhook.admission import Verdict
from webhook.cluster import LiveCluster
from webhook.kubeapi import Raw
from webhook.metrics import Metrics, StrayOutcome
from webhook.patches import remove_gate, same_pod
from webhook.pods import decided_workload, gate_names, not_managed, raw_identity
from webhook.workers import Task, Workers

__all__ = ["StrayGates", "may_be_stray"]

log = logging.getLogger("apportion.controller")

Identity = tuple[str, str, str]

NOT_MANAGED = "NotManaged"
"""The Event reason on a pod whose gate Apportion removed."""
ADOPTED = "Adopted"
"""The Event reason on a pod the controller took into its queue."""
REFUSED = "Refused"
"""The Warning Event reason on a pod Apportion would refuse, which keeps its gate."""


def may_be_stray(pod: Raw) -> bool:
    """Carries Apportion's gate, is not being deleted, and Apportion never decided it (or
    does not manage it): ``StrayGates.settle`` judges with its namespace's labels then."""
    metadata = pod.get("metadata") or {}
    return (
        keys.GATE in gate_names(pod.get("spec") or {})
        and not metadata.get("deletionTimestamp")
        and not_managed(pod, False) is not None
    )


@dataclass(frozen=True, slots=True)
class _Asked:
    """A release or an adoption asked of the API server: what is counted and told once it
    is made."""

    raw: Raw
    outcome: StrayOutcome
    reason: str
    message: str
    workload: str | None = None
    """An adoption's workload: made once the pod names it."""

    def made_on(self, pod: Raw) -> bool:
        if self.workload is None:
            return keys.GATE not in gate_names(pod.get("spec") or {})
        return decided_workload(pod) == self.workload


class StrayGates:
    """Acts through the controller's own steps (``patch`` stops at a lost Lease and counts
    its failures, ``event``), as an admission does; counts what it settled
    (``apportion_strays_settled_total``). A pass stops at the first patch or Refused
    Event it would start without the Lease (``before_acting``): the next leader tells
    those pods itself."""

    def __init__(
        self,
        cluster: LiveCluster,
        metrics: Metrics,
        *,
        adopt: Callable[[Raw], Verdict],
        patch: Callable[[str, str, list[Raw], str], bool | None],
        event: Callable[[Raw, str, str, str], None],
        before_acting: Callable[[], None],
        shadow: bool = False,
    ) -> None:
        """``patch`` answers True (made), False (refused) or None (no answer: it may have
        been made); ``before_acting`` raises ``NotLeading`` once this replica may no longer
        hold the Lease; ``shadow``: Apportion runs in shadow mode (``AdmissionSettings.mode``)."""
        self.cluster = cluster
        self.metrics = metrics
        self.shadow = shadow
        self.adopt = adopt
        self.patch = patch
        self.event = event
        self.before_acting = before_acting
        self._settled: set[Identity] = set()
        """Pods released or adopted, until the watch shows them so."""
        self._told: dict[Identity, str] = {}
        """Pods refused, and what they were told."""
        self._lock = threading.Lock()
        self._asked: dict[Identity, _Asked] = {}
        """Releases and adoptions asked and not answered yet, or whose answer was lost:
        the pod informer's thread (``seen``) notes whether the watch shows them made."""
        self._made: dict[Identity, bool] = {}
        """Of those, what the watch showed: made, or the pod deleted before."""

    def seen(self, pod: Raw, *, gone: bool = False) -> None:
        """The watch's word on a pod (``gone``: deleted), taken before the cluster's view
        of it changes: for one whose release or adoption is unanswered, whether it was
        made. A cheap look for every other pod."""
        if not self._asked:
            return
        identity = raw_identity(pod)
        with self._lock:
            asked = self._asked.get(identity)
            if asked is None or self._made.get(identity):
                return
            if asked.made_on(pod):
                self._made[identity] = True
            elif gone or (pod.get("metadata") or {}).get("deletionTimestamp"):
                self._made[identity] = False

    def asked(self) -> frozenset[Identity]:
        """The pods whose release or adoption is asked: what a relist must look for."""
        with self._lock:
            return frozenset(self._asked)

    def relisted(self, asked: frozenset[Identity], pods: Iterable[Raw]) -> None:
        """``seen`` for a relist, which looked for the pods ``asked`` (taken before it
        began) and found ``pods`` of them: those it did not find are gone."""
        listed = {raw_identity(pod): pod for pod in pods}
        for identity in asked:
            pod = listed.get(identity)
            if pod is not None:
                self.seen(pod)
            else:
                with self._lock:
                    if identity in self._asked:  # not judged since the relist began
                        self._made.setdefault(identity, False)

    def settle(self, workers: Workers) -> None:
        """Release the strays Apportion does not manage and adopt the others, many pods at
        once (``workers``)."""
        strays = self.cluster.strays()
        present = {raw_identity(raw) for raw in strays}
        self._judge_unanswered(present, workers)
        self._settled &= present
        self._told = {pod: told for pod, told in self._told.items() if pod in present}
        tasks: list[Task] = []
        for raw in strays:
            identity = raw_identity(raw)
            if identity in self._settled:
                continue
            policy = self.cluster.known_policy(identity[0])
            why = not_managed(raw, None if policy is None else policy.enabled)
            if why is None and policy is not None:
                why = self._shadow(identity[0], policy.shadow)
            if why is not None:
                tasks.append(self._release(workers, raw, identity, why))
            elif policy is not None and (task := self._adopt(workers, raw, identity)):
                tasks.append(task)  # opted in: Apportion's to decide
        workers.each(tasks)

    def tell_made(self) -> None:
        """Count and tell now the unanswered releases and adoptions the watch showed made:
        a cycle calls it once its snapshot is taken, before it admits a pod adopted so, whose
        Adopted Event must come before its Admitted one (the watch notes a pod here before
        the cache has it): told at once, not queued, and each only once the Lease is
        checked (a lost one stops the cycle, ``NotLeading``)."""
        self._judge_unanswered({raw_identity(raw) for raw in self.cluster.strays()}, None)

    def _judge_unanswered(self, present: set[Identity], workers: Workers | None) -> None:
        """Count and tell the unanswered releases and adoptions the watch showed made; forget
        those of pods it showed deleted first, or no longer strays otherwise."""
        with self._lock:
            judged = [
                (identity, asked, self._made.pop(identity, False))
                for identity, asked in self._asked.items()
                if identity in self._made or identity not in present
            ]
            for identity, _, _ in judged:
                del self._asked[identity]
        made = [asked for _, asked, was_made in judged if was_made]
        for asked in made:
            self._count(asked)
        for asked in made:
            self._tell(asked, workers)

    def _shadow(self, namespace: str, namespace_shadow: bool) -> str | None:
        """Why a pod of an opted-in namespace is not held, in shadow mode: there its pods
        run as if Apportion were not there (the webhook gates none), so adopted, it would
        be held by a mode that only records."""
        if self.shadow:
            return "Apportion runs in shadow mode: it only records what it would do"
        if namespace_shadow:
            return (
                f"its namespace {namespace} is in shadow mode: Apportion only records what it "
                "would do"
            )
        return None

    def _release(self, workers: Workers, raw: Raw, identity: Identity, why: str) -> Task:
        message = (
            f"Apportion does not manage this pod ({why}); its scheduling gate {keys.GATE} "
            "is removed"
        )
        # Not one created since under its name, which its webhook may have decided.
        ungate = same_pod(raw) + remove_gate(raw)
        asked = _Asked(raw, "released", NOT_MANAGED, message)
        doing = "removing the gate of"
        return _task(doing, identity, partial(self._ask, workers, identity, ungate, doing, asked))

    def _adopt(self, workers: Workers, raw: Raw, identity: Identity) -> Task | None:
        """The adoption's patch, or the Event telling why the pod keeps its gate, as a
        task; None if that was told already."""
        verdict = self.adopt(raw)
        never = f"Apportion's webhook never decided this pod, which carries its gate {keys.GATE}"
        if not verdict.answer.allowed:
            message = (
                f"{never}, and would refuse it: {verdict.answer.message}. It keeps that gate, "
                "so that it never runs outside Apportion's quotas: it joins its queue once "
                "that is fixed, or delete it and create it again"
            )
            if self._told.get(identity) == message:
                return None
            return _task("telling", identity, partial(self._refuse, raw, identity, message))
        # Made twice (a lost answer), it would append the tolerations and AND the node
        # affinity twice.
        adoption = same_pod(raw, unchanged=True) + list(verdict.answer.patch)
        message = (
            f"{never}: it waits in its queue as workload {verdict.workload}, decided in "
            "fair-share order"
        )
        asked = _Asked(raw, "adopted", ADOPTED, message, verdict.workload)
        return _task(
            "adopting", identity, partial(self._ask, workers, identity, adoption, "adopting", asked)
        )

    def _refuse(self, raw: Raw, identity: Identity, message: str) -> None:
        """Tell the pod why it keeps the gate (a worker's task)."""
        namespace, name, _ = identity
        # No Event before it checks the Lease: told without it, the pod would be told again
        # by the next leader.
        self.before_acting()
        with self._lock:
            self._told[identity] = message
        self.metrics.strays_settled.labels("refused").inc()
        log.warning("%s/%s: %s", namespace, name, message)
        self.event(raw, REFUSED, message, "Warning")

    def _ask(
        self, workers: Workers, identity: Identity, patch: list[Raw], doing: str, asked: _Asked
    ) -> None:
        """Patch the pod (a worker's task); count and tell it once made. Noted as asked
        before the patch is sent: the watch may show it made before its answer comes, or
        instead of it."""
        namespace, name, _ = identity
        with self._lock:
            earlier = self._asked.get(identity)
            self._asked[identity] = asked
        answer: bool | None = False
        try:
            answer = self.patch(namespace, name, patch, doing)
        finally:
            if answer is not None:
                with self._lock:
                    # Refused, an earlier ask whose answer was lost may still have been
                    # made (and the patch refused for testing the pod as it was seen).
                    if answer or earlier is None:
                        del self._asked[identity]
                        self._made.pop(identity, None)
                    else:
                        self._asked[identity] = earlier
        if answer:
            with self._lock:
                self._settled.add(identity)
            self._count(asked)
            self._tell(asked, workers)

    def _count(self, asked: _Asked) -> None:
        """A release or adoption made: counted, logged, and a released pod no longer
        Apportion's to decide."""
        namespace, name, _ = raw_identity(asked.raw)
        self.metrics.strays_settled.labels(asked.outcome).inc()
        if asked.workload is None:
            self.cluster.remove_pod(namespace, name)  # not Apportion's to decide
        log.info("%s/%s: %s", namespace, name, asked.message)

    def _tell(self, asked: _Asked, workers: Workers | None) -> None:
        """Its Event, queued behind the calls under way (``workers``), or made at once
        (None) once the Lease is checked: a replica that may no longer lead writes
        nothing more."""
        tell = partial(self.event, asked.raw, asked.reason, asked.message, "Normal")
        if workers is not None:
            namespace, name, _ = raw_identity(asked.raw)
            workers.later(f"the event {asked.reason} on {namespace}/{name}", tell)
            return
        self.before_acting()
        tell()


def _task(doing: str, identity: Identity, call: Callable[[], object]) -> Task:
    namespace, name, _ = identity
    return f"{doing} {namespace}/{name}", call
