"""Queue visibility: who waits, in which position, why, and for about how long.

Served at ``/queues`` and printed by ``apportion queue``. Positions and reasons are the
controller's last global decision; the wait estimate is the position divided by the
queue's admission rate over the last hour — honest about being a rate, and absent when
the queue admitted nothing recently.
"""

from __future__ import annotations

from typing import Any

from webhook.cluster import LiveCluster

__all__ = ["pending_view"]


STANDALONE = "no controller runs here (standalone): a gated pod is never released"


def pending_view(
    cluster: LiveCluster, queue: str | None = None, controlled: bool = True
) -> dict[str, Any]:
    """``{"queues": {name: [workload, …]}, "repartitions": [plan, …]}``: the waiting
    workloads in queue order, and the MIG repartitions that would admit some of them.
    ``controlled``: a controller releases gated pods (not standalone): else no wait is
    estimated, and a pod waiting for the controller is told none will come."""
    waiting = cluster.waiting()
    decisions = cluster.last_decisions()
    now = cluster.now()
    out: dict[str, list[dict[str, Any]]] = {}
    for item in waiting:
        if queue is not None and item.queue != queue:
            continue
        decision = decisions.get(item.workload)
        if decision is not None:
            reason, message = decision.reason.value, decision.message
        else:
            reason, message = item.reason, item.message
            if not controlled and reason == "Pending":
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
        rate = cluster.admission_rate_per_s(name) if controlled else 0.0
        for rank, row in enumerate(items, start=1):
            row["position"] = row["position"] or rank
            row["estimated_wait_s"] = round(row["position"] / rate) if rate > 0 else None
    if queue is not None and queue not in out:
        out[queue] = []
    listed = {row["workload"] for items in out.values() for row in items}
    plans = [
        plan.model_dump(mode="json")
        for plan in cluster.last_repartitions()
        if queue is None or listed.intersection(plan.admits)
    ]
    return {"queues": out, "repartitions": plans}
