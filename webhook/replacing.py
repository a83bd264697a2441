"""Admitted pods the kube-scheduler cannot place (``stuck.py`` finds them): the controller's
actions on them. A workload whose owner recreates its pods is evicted whole, for the webhook
to decide afresh; one nobody would recreate, or any in shadow mode, is only reported
(Event, reason annotation, ``apportion_stuck_pods``).

Many workloads at once (``workers.py``): each stuck workload's calls are one task, its pods
evicted (or reported) one after another; a pod's Event is queued once the call it tells
of is answered. Pods reported stuck that were bound since are told so once those tasks
have ended, as they were after them one call at a time."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from functools import partial
from typing import Any

from kubernetes.client import ApiException

from webhook.cluster import LiveCluster
from webhook.kubeapi import UNANSWERED, KubeApi, failure
from webhook.metrics import Metrics
from webhook.pods import ManagedPod
from webhook.stuck import (
    STUCK_REASON,
    StuckPod,
    StuckWatch,
    StuckWorkload,
    recovered,
    reported_stuck,
)
from webhook.workers import Task, Workers

__all__ = ["StuckReplacer"]

log = logging.getLogger("apportion.controller")


class StuckReplacer:
    """Acts through the controller's own steps (``before_acting`` stops at a lost Lease,
    ``set_reason`` and ``event`` count their failures), so a replacement follows the
    same rules as an admission or a preemption."""

    def __init__(
        self,
        api: KubeApi,
        cluster: LiveCluster,
        metrics: Metrics,
        watch: StuckWatch,
        *,
        evict: bool,
        before_acting: Callable[[], None],
        set_reason: Callable[[ManagedPod, str], bool],
        event: Callable[[dict[str, Any], str, str, str], None],
    ) -> None:
        self.api = api
        self.cluster = cluster
        self.metrics = metrics
        self.watch = watch
        self.evict = evict
        """False in shadow mode: report, never evict."""
        self.before_acting = before_acting
        self.set_reason = set_reason
        self.event = event
        self._unanswered: dict[tuple[str, str, str], tuple[StuckWorkload, StuckPod]] = {}
        """Stuck pods whose eviction got no answer: it may have been made, and a pod being
        deleted is no longer stuck, so the next review would not see its workload again."""
        self._unsure: set[tuple[str, str, str]] = set()
        """Of those, the pods the watch still showed at this review: evicted again, a 404
        (gone) means the first eviction was made."""
        self._lock = threading.Lock()
        """Guards ``_unanswered`` and ``watch`` while a review's tasks run, each its own
        workload's."""

    def review(self, node_problems: dict[str, str], workers: Workers) -> list[StuckWorkload]:
        """Evict stuck workloads whose owners recreate their pods; report the others once,
        and take the report back from those bound since. ``node_problems``: every Node by
        name, why new work must not land on it, or ''."""
        pods = self.cluster.managed_pods()
        self._settle_unanswered(workers, pods)
        found = self.watch.review(pods, node_problems, self.cluster.now())
        reported: dict[str, int] = {}
        tasks: list[Task] = []
        for workload in found:
            if workload.blocker or not self.evict:
                tasks.append(
                    (
                        f"reporting {workload.workload}",
                        partial(self._report_stuck, workers, workload),
                    )
                )
                count = sum(1 for p in workload.pods if p.why)  # the pods it reports
                reported[workload.queue] = reported.get(workload.queue, 0) + count
            else:
                tasks.append(
                    (f"replacing {workload.workload}", partial(self._replace, workers, workload))
                )
        workers.each(tasks)
        workers.each(  # bound after all: the report no longer holds
            (
                f"updating the reason on {pod.namespace}/{pod.name}",
                partial(
                    self.set_reason, pod, f"bound to node {pod.node} after it was reported stuck"
                ),
            )
            for pod in recovered(pods)
        )
        self.metrics.stuck_reported.clear()
        for queue, count in reported.items():
            self.metrics.stuck_reported.labels(queue).set(count)
        return found

    def _replace(self, workers: Workers, workload: StuckWorkload) -> None:
        """Evict the workload's pods one after another (a worker's task)."""
        evicted = 0
        for stuck in workload.pods:
            pod = stuck.pod
            self.before_acting()
            try:
                self.api.evict_pod(pod.namespace, pod.name)
            except (ApiException, *UNANSWERED) as error:
                gone = isinstance(error, ApiException) and error.status == 404
                if gone and pod.identity in self._unsure:
                    # Its unanswered eviction was made: the watch had not shown it leave.
                    evicted += 1
                    self._tell_replaced(workers, workload, stuck)
                    continue
                # 429: a PodDisruptionBudget forbids it now; the next cycle tries again.
                # No answer: the next review sees whether it was made.
                self.metrics.api_failed("evict", error)
                log.warning("replacing %s/%s failed: %s", pod.namespace, pod.name, failure(error))
                if not isinstance(error, ApiException):
                    with self._lock:
                        self._unanswered[pod.identity] = (workload, stuck)
                continue
            evicted += 1
            self._tell_replaced(workers, workload, stuck)
        if evicted == len(workload.pods):
            self._count_replaced(workload)

    def _settle_unanswered(self, workers: Workers, pods: list[ManagedPod]) -> None:
        """Evictions that got no answer, judged by what the watch shows since: a pod being
        deleted or gone was evicted (told now, and its workload counted if none of its
        pods is left); a pod still there was not, and the review finds it stuck again."""
        staying = {p.identity for p in pods if not p.terminating}
        evicted: dict[str, StuckWorkload] = {}
        for identity, (workload, stuck) in self._unanswered.items():
            if identity not in staying:
                self._tell_replaced(workers, workload, stuck)
                evicted[workload.workload] = workload
        self._unsure = {i for i in self._unanswered if i in staying}
        self._unanswered.clear()
        for workload in evicted.values():
            if not any(s.pod.identity in staying for s in workload.pods):
                self._count_replaced(workload)

    def _tell_replaced(self, workers: Workers, workload: StuckWorkload, stuck: StuckPod) -> None:
        cause = stuck if stuck.why else workload.cause
        mate = "" if cause.pod.name == stuck.pod.name else f"its gang mate {cause.pod.name} is "
        message = (
            f"admitted to node {stuck.node}, {mate}unschedulable for {cause.stuck_s:.0f} s: "
            f"{cause.why}; evicted for its owner to create it again and Apportion to "
            "decide afresh"
        )
        workers.later(
            f"the event Replaced on {stuck.pod.name}",
            partial(self.event, stuck.pod.raw or {}, "Replaced", message, "Warning"),
        )

    def _count_replaced(self, workload: StuckWorkload) -> None:
        """Every pod of ``workload`` evicted: its next pods get a doubled grace."""
        worst = workload.cause
        with self._lock:
            self.watch.replaced(workload.workload, self.cluster.now())
        self.metrics.stuck_replaced.labels(workload.queue).inc()
        log.warning(
            "replaced %s: admitted to %s, unschedulable for %.0f s: %s",
            workload.workload,
            worst.node,
            worst.stuck_s,
            worst.why,
            extra={"workload": workload.workload},
        )

    def _report_stuck(self, workers: Workers, workload: StuckWorkload) -> None:
        """One Event and the reason annotation, once: the annotation says it was done (a
        worker's task)."""
        blocker = workload.blocker or "Apportion runs in shadow mode and evicts nothing"
        for stuck in workload.pods:
            raw = stuck.pod.raw or {}
            if not stuck.why or reported_stuck(stuck.pod):
                continue
            message = (
                f"admitted to node {stuck.node}, unschedulable for {stuck.stuck_s:.0f} s: "
                f"{stuck.why}; {blocker}"
            )
            if self.set_reason(stuck.pod, f"{STUCK_REASON}: {message}"):
                workers.later(
                    f"the event {STUCK_REASON} on {stuck.pod.name}",
                    partial(self.event, raw, STUCK_REASON, message, "Warning"),
                )
