"""What Queue objects show in their status subresource (``kubectl get queues``): usage,
waiting and admitted workloads and weighted share, as of a cycle's snapshot and decision."""

from __future__ import annotations

from scheduler.catalog import MILLI_PER_GPU
from scheduler.compiled import quota_book
from scheduler.crds import QueueStatus
from scheduler.model import Decision, Snapshot
from scheduler.reasons import Outcome
from webhook.cluster import LiveCluster
from webhook.kubeapi import Raw

__all__ = ["queue_statuses"]


def queue_statuses(
    cluster: LiveCluster, objects: dict[str, Raw], snapshot: Snapshot, decision: Decision | None
) -> dict[str, Raw]:
    """The status of each Queue object (``objects``: by name, as watched) that the
    snapshot accounts for, where it is not the one it shows already. Asked once the
    decision's admissions are reserved or refused: a refused one counts as waiting."""
    if not objects:
        return {}
    book = quota_book(snapshot, cluster.catalog)
    models = {m.name for m in cluster.catalog.models}
    admitted: dict[str, int] = {}
    for workload in snapshot.workloads:
        if workload.placement is not None:
            admitted[workload.queue] = admitted.get(workload.queue, 0) + 1
    pending: dict[str, int] = {}
    refused = cluster.refused()  # they wait, gated, for the next decision
    for verdict in decision.workloads if decision is not None else ():
        admits = verdict.outcome is Outcome.ADMIT and verdict.workload not in refused
        counts = admitted if admits else pending
        counts[verdict.queue] = counts.get(verdict.queue, 0) + 1
    statuses: dict[str, Raw] = {}
    for name, obj in objects.items():
        if name not in book.accounts:
            continue
        usage = {
            flavor: amount // (MILLI_PER_GPU if flavor in models else 1)
            for flavor, amount in sorted(book.accounts[name].usage.items())
            if amount
        }
        status = QueueStatus(
            pending_workloads=pending.get(name, 0),
            admitted_workloads=admitted.get(name, 0),
            usage=usage,
            weighted_share=round(book.share(name), 4),
            observed_generation=int((obj.get("metadata") or {}).get("generation") or 0),
        ).model_dump(mode="json")
        if obj.get("status") != status:  # as watched: a new object, or another leader's
            statuses[name] = status
    return statuses
