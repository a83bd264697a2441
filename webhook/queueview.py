"""Queue visibility: who waits, in which position, why, and for about how long.

Served at ``/queues`` and printed by ``apportion queue``. Positions and reasons are the
controller's last global decision (an admission of it that no longer stood when the
controller reserved it says so until the next); the wait estimate is the position divided
by the queue's admission rate over the last hour — honest about being a rate, and absent
when the queue admitted nothing recently.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from scheduler.model import Queue
from webhook.cluster import LiveCluster
from webhook.gangs import GANG_MIXED
from webhook.observed import GANG_RUNNING, PodGroup, queue_refusals, waits_for_running
from webhook.pods import ManagedPod, held_back

__all__ = [
    "PENDING",
    "QUEUE_CLOSED",
    "QUEUE_UNKNOWN",
    "QueueView",
    "Waiting",
    "queue_view",
    "waiting_reason",
    "waiting_workloads",
]


STANDALONE = "no controller runs here (standalone): a gated pod is never released"
PENDING = "Pending"
"""The reason a waiting workload the controller decides shows until its next decision."""
QUEUE_UNKNOWN = "QueueUnknown"
QUEUE_CLOSED = "QueueClosed"


@dataclass(frozen=True, slots=True)
class Waiting:
    """A workload with gated pods, as the queue view shows it."""

    workload: str
    queue: str
    namespace: str
    pods: int
    pods_present: int
    priority: int
    created: int
    reason: str
    message: str


def waiting_workloads(cluster: LiveCluster) -> list[Waiting]:
    """Workloads with pods waiting, complete gangs and incomplete ones alike, with the
    reason they wait that the cluster itself shows (the controller's decision aside)."""
    groups, queues = cluster.groups_and_queues()
    out = []
    for name, group in sorted(groups.items()):
        if group.admitted:
            continue
        first, size, priority = _shape(group)
        reason, message = waiting_reason(group, queues)
        out.append(
            Waiting(
                workload=name,
                queue=first.queue,
                namespace=first.namespace,
                pods=size,
                pods_present=len(group.pods),
                priority=priority,
                created=first.created,
                reason=reason,
                message=message,
            )
        )
    return out


def waiting_reason(group: PodGroup, queues: dict[str, Queue]) -> tuple[str, str]:
    """Why a group with pods waiting waits as the cluster itself shows it, the first that
    holds of: its gang's members ask differently, its queue is gone or does not take it,
    its gang is incomplete, another controller's gates hold it, the workload it belongs to
    still runs; else it waits for the controller's next decision (``PENDING``)."""
    pods = group.pods
    first, size, priority = _shape(group)
    queue = queues.get(first.queue)
    if group.mixed is not None:
        return GANG_MIXED, group.mixed
    if queue is None:
        return QUEUE_UNKNOWN, f"queue {first.queue!r} does not exist; create it or relabel"
    if refusals := queue_refusals(queue, first.namespace, priority):
        return QUEUE_CLOSED, "; ".join(refusals)
    if len(pods) < size:
        return "GangIncomplete", f"{len(pods)} of {size} pods exist; the gang waits for all"
    if gates := sorted({g for p in pods for g in p.other_gates}):
        return "OtherGates", held_back(gates)
    if (running := waits_for_running(group)) is not None:
        return GANG_RUNNING, running
    return PENDING, "waiting for the controller's next decision"


def _shape(group: PodGroup) -> tuple[ManagedPod, int, int]:
    """The group's first pod, its size (a gang's, or its replacements'), its priority."""
    pods = group.pods
    first = min(pods, key=lambda p: (p.created, p.name))
    size = max(first.gang_size, len(pods)) if group.places is None else len(pods)
    return first, size, max(p.priority for p in pods)


@dataclass(frozen=True, slots=True)
class QueueView:
    """Every queue's waiting workloads, worked out once (``queue_view``: 0.15–0.3 s at
    20,000 pods) and served for one queue or all (``of``) as often as asked."""

    queues: dict[str, list[dict[str, Any]]]
    """Per queue with workloads waiting: its rows, in queue order."""
    known: tuple[str, ...]
    """The queues' names."""
    repartitions: tuple[dict[str, Any], ...]
    """The last global decision's MIG repartition proposals, as served."""

    def of(self, queue: str | None) -> dict[str, Any]:
        """``{"queues": {name: [workload, …]}, "repartitions": [plan, …]}`` for one
        queue, or all (None): the waiting workloads in queue order, and the MIG
        repartitions that would admit some of them. A ``queue`` that no queue is named and
        nothing waits in adds ``unknown_queue``, a message."""
        if queue is None:
            return {"queues": self.queues, "repartitions": list(self.repartitions)}
        rows = self.queues.get(queue)
        if rows is None and queue not in self.known:
            # A typo: not "0 waiting" (a deleted queue's pods are listed above).
            return {
                "queues": {},
                "repartitions": [],
                "unknown_queue": f"no queue {queue!r} (queues: {', '.join(self.known) or 'none'})",
            }
        listed = {row["workload"] for row in rows or ()}
        plans = [plan for plan in self.repartitions if listed.intersection(plan["admits"])]
        return {"queues": {queue: rows or []}, "repartitions": plans}


def queue_view(cluster: LiveCluster, controlled: bool = True) -> QueueView:
    """Every queue's view (``QueueView.of``); the cluster's lock is held only to copy what
    it reads. ``controlled``: a controller releases gated pods (not standalone): else no
    wait is estimated, and a pod waiting for the controller is told none will come."""
    waiting = waiting_workloads(cluster)
    decisions = cluster.last_decisions()
    refused = cluster.refused()
    now = cluster.now()
    out: dict[str, list[dict[str, Any]]] = {}
    for item in waiting:
        decision = decisions.get(item.workload)
        refusal = refused.get(item.workload)
        if refusal is not None:  # admitted by the last decision, refused when reserved
            reason, message = refusal.reason, refusal.waiting_message
        elif decision is not None:
            reason, message = decision.reason.value, decision.message
        else:
            reason, message = item.reason, item.message
            if not controlled and reason == PENDING:
                message = STANDALONE
        out.setdefault(item.queue, []).append(
            {
                "workload": item.workload,
                "namespace": item.namespace,
                "pods": item.pods,
                "pods_present": item.pods_present,
                "priority": item.priority,
                # Unknown, not 57 years, for a pod without a creation time (a review a
                # script sent to a standalone server; the API server always sets one).
                "waiting_s": max(0, int(now) - item.created) if item.created else None,
                "position": decision.position if decision is not None else None,
                "reason": reason,
                "message": message,
            }
        )
    for name, items in out.items():
        items.sort(key=lambda i: (i["position"] is None, i["position"] or 0, -i["priority"]))
        rate = cluster.admissions.per_s(name) if controlled else 0.0
        for rank, row in enumerate(items, start=1):
            row["position"] = row["position"] or rank
            row["estimated_wait_s"] = round(row["position"] / rate) if rate > 0 else None
    plans = tuple(plan.model_dump(mode="json") for plan in cluster.last_repartitions())
    return QueueView(out, tuple(cluster.queue_names()), plans)
