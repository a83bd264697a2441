"""A global decision's admissions carried out: each reserved in the live cluster
(``LiveCluster.reserve``: one whose place the webhook gave away since the decision waits,
told why, for the next), then recorded on its pods and their gates removed, one JSONPatch
per pod adding node affinity where the decision placed it. Many workloads at once
(``workers.py``), each workload's pods one after another; an Admitted Event is queued once
the patch it tells of is answered."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from functools import partial

from scheduler.model import PodPlacement, Workload, WorkloadDecision
from webhook import keys
from webhook.cluster import LiveCluster
from webhook.kubeapi import Raw
from webhook.leader import NotLeading
from webhook.patches import admit_gated, node_expressions, set_metadata
from webhook.pods import ANNOTATION_PLACEMENT, ManagedPod, format_placement
from webhook.workers import Task, Workers

__all__ = ["Admitter"]

log = logging.getLogger("apportion.controller")


class Admitter:
    """Acts through the controller's own steps (``patch`` and ``patch_answered`` stop at a
    lost Lease and count their failures, ``explain`` writes why a refused admission's
    pods wait, ``tell`` queues an Event behind the call it tells of)."""

    def __init__(
        self,
        cluster: LiveCluster,
        *,
        patch: Callable[[ManagedPod, list[Raw], str], bool],
        patch_answered: Callable[[str, str, list[Raw], str], bool | None],
        explain: Callable[[Workers, str, str, list[ManagedPod]], None],
        tell: Callable[[Workers, Raw, str, str], None],
    ) -> None:
        """``patch_answered`` answers True (made), False (refused) or None (no answer: it
        may have been made)."""
        self.cluster = cluster
        self.patch = patch
        self.patch_answered = patch_answered
        self.explain = explain
        self.tell = tell
        self._released: set[tuple[str, str, str]] = set()
        """Pods whose gate this controller removed, until the watch shows it gone."""
        self._lock = threading.Lock()
        """Guards ``_released``: a cycle's workers write it at once, each its own
        workload's pods."""

    def admit(
        self,
        workers: Workers,
        workload: Workload,
        verdict: WorkloadDecision,
        members: list[ManagedPod],
    ) -> None:
        """Reserve the admission in the live cluster, record it on the pods, then remove
        their gates.

        Reserved first: the decision was taken on a snapshot while the webhook went on
        admitting pods at creation, and the devices must go to one of them, never both. One
        no longer free is not patched at all, and decided again in the next cycle.
        A pod's gate cannot be put back, so a gang's members get their placements first,
        still gated: an error or a restart between two members' patches then leaves a
        gang either not admitted at all or admitted on record, which the next cycle
        completes (``complete_admissions``), never half released.
        """
        if len(verdict.placement) != len(members):
            return
        refusal = self.cluster.reserve(
            workload.model_copy(
                update={
                    "placement": verdict.placement,
                    "flavor": verdict.flavor,
                    "started": int(self.cluster.now()),
                }
            )
        )
        if refusal is not None:
            message = refusal.waiting_message
            log.info("%s %s", verdict.workload, message, extra={"workload": verdict.workload})
            self.explain(workers, refusal.reason, message, members)
            return
        placed = list(zip(members, verdict.placement, strict=True))
        for i, (pod, placement) in enumerate(placed):
            raw = pod.raw or {}
            patch = set_metadata(
                raw,
                "annotations",
                {
                    keys.ANNOTATION_WORKLOAD: pod.workload,
                    keys.ANNOTATION_DECISION: "admitted",
                    keys.ANNOTATION_REASON: f"{verdict.reason.value}: {verdict.message}",
                    ANNOTATION_PLACEMENT: format_placement(placement),
                },
            )
            if len(members) == 1:  # one patch, all or nothing
                patch = admit_gated(raw, self._expressions(placement)) + patch
            if not patch:
                continue
            try:
                made = self.patch_answered(pod.namespace, pod.name, patch, "admitting")
            except NotLeading:
                self.cluster.forget(workload.name)  # not sent: its record is not whole
                raise
            if made is not True:
                # Short of a whole record, it is not admitted (``observed.groups_of``), and
                # holds nothing: unless the last patch, unanswered, may have completed it
                # (the watch will tell, or the reservation expires).
                if i < len(placed) - 1 or made is False:
                    self.cluster.forget(workload.name)
                return
        self.cluster.admissions.record(workload.queue)
        log.info("admitted %s", verdict.workload, extra={"workload": verdict.workload})
        if len(members) == 1:
            self.tell(workers, members[0].raw or {}, "Admitted", verdict.message)
            return
        for pod, placement in placed:
            self._release(workers, pod, placement, verdict.message)

    def complete_admissions(self, workers: Workers) -> list[Task]:
        """Per admitted gang whose members still carry gates (an admission an API error or
        a restart cut short), a task removing them where their recorded placements say."""
        groups = self.cluster.groups()
        with self._lock:
            # Released but not yet seen so by the watch: nothing to do again.
            self._released &= {p.identity for g in groups.values() for p in g.pods if p.gated}
            released = set(self._released)
        tasks: list[Task] = []
        for name, group in groups.items():
            left = [
                (pod, pod.placement)
                for pod in (group.pods if group.admitted else ())
                if pod.gated and pod.placement is not None and pod.identity not in released
            ]
            if left:
                tasks.append(
                    (
                        f"completing the admission of {name}",
                        partial(self._release_all, workers, left),
                    )
                )
        return tasks

    def _release_all(self, workers: Workers, pods: list[tuple[ManagedPod, PodPlacement]]) -> None:
        for pod, placement in pods:
            self._release(workers, pod, placement, "admitted where recorded earlier")

    def _release(
        self, workers: Workers, pod: ManagedPod, placement: PodPlacement, message: str
    ) -> None:
        raw = pod.raw or {}
        if self.patch(pod, admit_gated(raw, self._expressions(placement)), "releasing"):
            with self._lock:
                self._released.add(pod.identity)
            self.tell(workers, raw, "Admitted", message)

    def _expressions(self, placement: PodPlacement) -> list[Raw]:
        node = self.cluster.nodes.get(placement.node)
        if node is None:  # gone since the decision: pin by name, the scheduler will wait
            return [{"key": keys.NODE_HOSTNAME, "operator": "In", "values": [placement.node]}]
        return node_expressions([node])
