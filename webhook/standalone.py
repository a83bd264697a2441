"""Standalone mode: the cluster from a file instead of the Kubernetes API.

For demos and tests. The file is a snapshot file (the format ``apportion decide`` reads:
nodes or node_pools, queues, optional running workloads) with an optional
``namespaces:`` mapping of namespace → labels, which opts namespaces in exactly as the
labels on real Namespace objects do (``scheduler.loading`` reads both)::

    namespaces:
      team-a: {apportion.io/enabled: "true", apportion.io/default-queue: team-a}
"""

from __future__ import annotations

from pathlib import Path

from scheduler.loading import Namespaces, SnapshotError, load_cluster_text
from scheduler.model import Snapshot
from scheduler.textfile import read_text
from webhook.cluster import LiveCluster

__all__ = ["load_cluster_file", "seed_cluster"]


def load_cluster_file(path: Path) -> tuple[Snapshot, Namespaces]:
    """The snapshot and namespace labels of a cluster file; SnapshotError naming the field."""
    source = str(path)
    try:
        text = read_text(path)
    except OSError as error:
        raise SnapshotError([f"{source}: cannot read: {error.strerror}"], source) from None
    return load_cluster_text(text, source)


def seed_cluster(cluster: LiveCluster, snapshot: Snapshot, namespaces: Namespaces) -> None:
    """Load a standalone cluster: nodes, queues, namespaces, and what already runs."""
    cluster.replace_nodes(snapshot.nodes)
    cluster.replace_queues(snapshot.queues)
    for name, labels in namespaces.items():
        cluster.put_namespace(name, labels)
    for workload in snapshot.workloads:
        if workload.placement is not None:
            cluster.seed_running(workload)
