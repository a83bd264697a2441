"""Standalone mode: the cluster from a file instead of the Kubernetes API.

For demos and tests. The file is a snapshot file (the format ``apportion decide`` reads:
nodes or node_pools, queues, optional running workloads) plus an optional
``namespaces:`` mapping of namespace → labels, which opts namespaces in exactly as the
labels on real Namespace objects do::

    namespaces:
      team-a: {apportion.io/enabled: "true", apportion.io/default-queue: team-a}
"""

from __future__ import annotations

from pathlib import Path

from scheduler.loading import SnapshotError, parse_document, snapshot_from_data
from scheduler.model import Snapshot
from scheduler.textfile import read_text
from webhook.cluster import LiveCluster

__all__ = ["StandaloneCluster", "load_cluster_file", "seed_cluster"]

StandaloneCluster = tuple[Snapshot, dict[str, dict[str, str]]]


def load_cluster_file(path: Path) -> StandaloneCluster:
    """The snapshot and namespace labels of a cluster file; SnapshotError naming the field."""
    source = str(path)
    try:
        text = read_text(path)
    except OSError as error:
        raise SnapshotError([f"{source}: cannot read: {error.strerror}"], source) from None
    data = parse_document(text, source)
    namespaces: dict[str, dict[str, str]] = {}
    if isinstance(data, dict) and "namespaces" in data:
        raw = data.pop("namespaces")
        if not isinstance(raw, dict):
            raise SnapshotError([f"{source}: namespaces: must map a namespace to its labels"])
        for name, labels in raw.items():
            if not isinstance(labels, dict):
                raise SnapshotError(
                    [f"{source}: namespaces.{name}: must be a mapping of labels, not {labels!r}"]
                )
            namespaces[str(name)] = {str(k): str(v) for k, v in labels.items()}
    return snapshot_from_data(data, source), namespaces


def seed_cluster(
    cluster: LiveCluster, snapshot: Snapshot, namespaces: dict[str, dict[str, str]]
) -> None:
    """Load a standalone cluster: nodes, queues, namespaces, and what already runs."""
    cluster.replace_nodes(snapshot.nodes)
    cluster.replace_queues(snapshot.queues)
    for name, labels in namespaces.items():
        cluster.put_namespace(name, labels)
    for workload in snapshot.workloads:
        if workload.placement is not None:
            cluster.seed_running(workload)
