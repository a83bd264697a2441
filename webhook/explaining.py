"""Why a waiting pod waits, written on it (``keys.ANNOTATION_REASON``) by the controller:
the reason its workload's verdict gives, or for a workload no decision names the queue
view's (``queueview.waiting_reason``); a running workload's new pods told by an Event too.
A waiting pod that says it was admitted (a gang's admission recorded in part, then decided
otherwise) is told it waits, its record undone. Many workloads at once (``workers.py``),
each workload's pods one after another."""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import partial

from webhook import keys
from webhook.cluster import LiveCluster
from webhook.gangs import GANG_MIXED
from webhook.kubeapi import Raw
from webhook.observed import GANG_RUNNING
from webhook.patches import remove_metadata, set_metadata
from webhook.pods import ANNOTATION_PLACEMENT, ManagedPod
from webhook.queueview import PENDING, QUEUE_CLOSED, QUEUE_UNKNOWN, waiting_reason
from webhook.workers import Task, Workers

__all__ = ["REASON_REFRESH_S", "Explainer"]

Identity = tuple[str, str, str]

_UNDECIDED = frozenset({GANG_MIXED, QUEUE_UNKNOWN, QUEUE_CLOSED, GANG_RUNNING})
"""The reasons of waiting workloads no decision names that the controller writes on their
pods (the webhook wrote the others at creation)."""

REASON_REFRESH_S = 60.0
"""A waiting pod's reason whose numbers alone changed is written again at most this often.
On benchmarks/ (b), 1,227 of 1,570 workloads waiting in two cycles a few admissions apart
had new numbers under the same reason: a patch each, every cycle."""


class Explainer:
    """Acts through the controller's own steps (``patch`` stops at a lost Lease and counts
    its failures, ``tell`` queues an Event behind the call it tells of)."""

    def __init__(
        self,
        cluster: LiveCluster,
        *,
        patch: Callable[[ManagedPod, list[Raw], str], bool],
        tell: Callable[[Workers, Raw, str, str], None],
    ) -> None:
        self.cluster = cluster
        self.patch = patch
        self.tell = tell
        self._reason_written: dict[Identity, float] = {}
        """When this controller last wrote each waiting pod's reason (``explain``)."""
        self._lock = threading.Lock()
        """Guards ``_reason_written``: a cycle's workers write it at once, each its own
        workload's pods."""

    def undecided(self, workers: Workers) -> list[Task]:
        """Workloads no decision names say why on their pods, as the queue view shows it
        (``queueview.waiting_reason``), or these would keep an older reason: gangs whose
        members ask differently (``gangs.mixed``), a queue gone or no longer taking them,
        and a running workload's new pods (``observed.waits_for_running``), told by an
        Event too: a pod copied from a running one in its namespace waits so for as long
        as that runs. So do the pods of any other workload no decision names that say
        they were admitted (a gang whose admission was recorded in part, then a member
        deleted: ``GangIncomplete``)."""
        groups, queues = self.cluster.groups_and_queues()
        tasks: list[Task] = []
        for name, group in groups.items():
            if group.admitted:
                continue
            reason, message = waiting_reason(group, queues)
            if reason in _UNDECIDED or (
                reason != PENDING and any(_claims_admission(p) for p in group.pods)
            ):
                tell = reason == GANG_RUNNING
                explain = partial(self.explain, workers, reason, message, group.pods, tell=tell)
                tasks.append((f"updating the reason on {name}", explain))
        return tasks

    def keep_only(self, present: set[Identity]) -> None:
        """Forget when the reasons of pods no longer seen were written."""
        with self._lock:
            self._reason_written = {i: t for i, t in self._reason_written.items() if i in present}

    def explain(
        self,
        workers: Workers,
        reason: str,
        message: str,
        members: list[ManagedPod],
        tell: bool = False,
    ) -> None:
        """Keep the waiting pods' reason annotation current: at once where the reason
        changes, but where only its numbers do (queue usage, room left: on a busy cluster
        most waiting pods' numbers change every cycle, a patch each) at most every
        ``REASON_REFRESH_S``; ``apportion queue`` shows the numbers of the moment. With
        ``tell``, an Event too where the reason is new, once: the annotations record that
        the pod was told, across restarts and leaders (``keys.ANNOTATION_TOLD``: not a
        copy of a pod that was told, which carries its reason).

        A pod that says it was admitted (``_claims_admission``) is told at once, its
        decision ``pending`` again and its placement gone: a gang's admission recorded on
        some members, then cut short, is decided again, and may wait."""
        text = f"{reason}: {message}"
        now = self.cluster.now()
        for pod in members:
            raw = pod.raw or {}
            annotations = pod.annotations
            uid = pod.identity[2]
            told = not tell or annotations.get(keys.ANNOTATION_TOLD) == uid
            current = str(annotations.get(keys.ANNOTATION_REASON))
            same_reason = told and current.startswith(f"{reason}: ")
            claims = _claims_admission(pod)
            with self._lock:
                written = self._reason_written.get(pod.identity)
            if not claims and (
                (told and current == text)
                or (same_reason and written is not None and now - written < REASON_REFRESH_S)
            ):
                continue
            if not self.set_reason(pod, text, told_uid=uid if tell else None, waits=claims):
                continue
            with self._lock:
                self._reason_written[pod.identity] = now
            if tell and not same_reason:
                self.tell(workers, raw, reason, message)

    def set_reason(
        self, pod: ManagedPod, text: str, told_uid: str | None = None, waits: bool = False
    ) -> bool:
        """Write the pod's reason annotation (and ``told_uid``: that the pod is told it;
        ``waits``: its decision ``pending``, its placement removed); False (logged) if the
        API refused."""
        raw = pod.raw or {}
        values = {keys.ANNOTATION_REASON: text}
        if told_uid is not None:
            values[keys.ANNOTATION_TOLD] = told_uid
        if waits:
            values[keys.ANNOTATION_DECISION] = "pending"
        patch = set_metadata(raw, "annotations", values)
        if waits:
            patch += remove_metadata(raw, "annotations", [ANNOTATION_PLACEMENT])
        return self.patch(pod, patch, "updating the reason on")


def _claims_admission(pod: ManagedPod) -> bool:
    """Whether a waiting pod says it was admitted: its decision ``admitted``, or a
    placement, which only an admission records (``admitting.py``)."""
    return pod.placement is not None or pod.annotations.get(keys.ANNOTATION_DECISION) == "admitted"
