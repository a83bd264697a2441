"""What the controller's informers list and watch (``informer.py``), kept in ``LiveCluster``:
Nodes, GPU pods as ``ManagedPod``s, bound pods asking no GPU as ``HostPod``s, pods that may
carry a stray gate (``strays.py``), Namespaces' labels, Jobs and Queue objects. A relist
replaces a kind whole, a watch event one object; each runs on its informer's thread."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from scheduler.crds import QueueObjectError, queue_from_object
from scheduler.model import Node
from webhook.cluster import LiveCluster
from webhook.hostpods import HostPod, host_pod_of
from webhook.jobs import job_row
from webhook.kubeapi import Raw
from webhook.kubeobjects import node_from_object, node_problem
from webhook.pods import ManagedPod, PodReader, raw_identity
from webhook.strays import StrayGates, may_be_stray

__all__ = ["Watched"]

log = logging.getLogger("apportion.controller")


class Watched:
    """The informers' handlers (``replace_*`` after a list, ``*_event`` per watch event),
    and what the reconcile loop reads of the watched objects beside ``LiveCluster``."""

    def __init__(self, cluster: LiveCluster, strays: StrayGates) -> None:
        self.cluster = cluster
        self.strays = strays
        self.reader = PodReader(cluster.catalog)
        self.node_problems: dict[str, str] = {}
        """Every Node by name: why new work must not land on it, or ''."""
        self.left_out: dict[str, str] = {}
        """GPU Nodes Apportion counts no GPUs of, by name, with why: warned of once each."""
        self.queue_objects: dict[str, Raw] = {}
        """The valid Queue objects by name, as watched (their status included)."""

    def replace_nodes(self, listed: Iterable[Raw]) -> None:
        """In one pass, as ``replace_pods``: a Node object (its images, labels, managed
        fields) is far larger than what is kept of it."""
        nodes: list[Node] = []
        problems: dict[str, str] = {}
        for obj in listed:
            name = str((obj.get("metadata") or {}).get("name", ""))
            node, why = node_from_object(obj, self.cluster.catalog)
            if node is not None:
                nodes.append(node)
            self._leave_out(name, why)
            problems[name] = node_problem(obj)
        self.left_out = {name: why for name, why in self.left_out.items() if name in problems}
        self.node_problems = problems
        self.cluster.replace_nodes(nodes)

    def node_event(self, kind: str, obj: Raw) -> None:
        name = str((obj.get("metadata") or {}).get("name", ""))
        if kind == "DELETED":
            self.node_problems.pop(name, None)
        else:
            self.node_problems[name] = node_problem(obj)
        node, why = node_from_object(obj, self.cluster.catalog)
        self._leave_out(name, "" if kind == "DELETED" else why)
        if kind == "DELETED" or node is None:
            self.cluster.remove_node(name)
        else:
            self.cluster.put_node(node)

    def _leave_out(self, name: str, why: str) -> None:
        """Record why a GPU node's GPUs are not counted (``node_from_object``), with a
        warning the first time: its updates (a label, a heartbeat condition) come often."""
        if not why:
            self.left_out.pop(name, None)
        elif self.left_out.get(name) != why:
            self.left_out[name] = why
            log.warning("%s", why, extra={"node": name})

    def replace_pods(self, listed: Iterable[Raw]) -> None:
        """In one pass: a large cluster's pods are listed page by page, and only what is
        kept of each (``ManagedPod``, ``HostPod``, a possible stray) outlives its page."""
        pods: list[ManagedPod] = []
        host_pods: list[HostPod] = []
        strays: list[Raw] = []
        asked = self.strays.asked()
        answered: list[Raw] = []
        for obj in listed:
            pod = self.reader.observed(obj)
            if pod is not None:
                pods.append(pod)
            elif (host := host_pod_of(obj)) is not None:
                host_pods.append(host)
            if pod is None and may_be_stray(obj):  # a pod read as a GPU pod is no stray
                strays.append(obj)
            if asked and raw_identity(obj) in asked:
                answered.append(obj)
        self.strays.relisted(asked, answered)
        self.cluster.replace_pods(pods, host_pods, strays)

    def pod_event(self, kind: str, obj: Raw) -> None:
        namespace, name, _ = raw_identity(obj)
        self.strays.seen(obj, gone=kind == "DELETED")
        pod = None if kind == "DELETED" else self.reader.observed(obj)
        host = None if kind == "DELETED" or pod is not None else host_pod_of(obj)
        if pod is not None:
            self.cluster.put_pod(pod)
        elif host is not None:
            self.cluster.put_host_pod(host)
        else:
            self.cluster.remove_pod(namespace, name)
        stray = kind != "DELETED" and pod is None and may_be_stray(obj)
        self.cluster.put_stray(namespace, name, obj if stray else None)

    def replace_namespaces(self, items: Iterable[Raw]) -> None:
        self.cluster.replace_namespaces(
            {
                str((o.get("metadata") or {}).get("name", "")): dict(
                    (o.get("metadata") or {}).get("labels") or {}
                )
                for o in items
            }
        )

    def namespace_event(self, kind: str, obj: Raw) -> None:
        metadata = obj.get("metadata") or {}
        name = str(metadata.get("name", ""))
        if kind == "DELETED":
            self.cluster.remove_namespace(name)
        else:
            self.cluster.put_namespace(name, dict(metadata.get("labels") or {}))

    def replace_jobs(self, items: Iterable[Raw]) -> None:
        self.cluster.jobs.replace([job_row(o) for o in items])

    def job_event(self, kind: str, obj: Raw) -> None:
        namespace, name, parallelism, jobset = job_row(obj)
        self.cluster.jobs.put(namespace, name, None if kind == "DELETED" else parallelism, jobset)

    def replace_queue_objects(self, listed: Iterable[Raw]) -> None:
        items = list(listed)
        self.queue_objects = {}
        for obj in items:
            self._remember_queue(obj)
        self._publish_queues()

    def queue_event(self, kind: str, obj: Raw) -> None:
        name = str((obj.get("metadata") or {}).get("name", ""))
        if kind == "DELETED":
            self.queue_objects.pop(name, None)
        else:
            self._remember_queue(obj)
        self._publish_queues()

    def _remember_queue(self, obj: Raw) -> None:
        name = str((obj.get("metadata") or {}).get("name", ""))
        try:
            queue_from_object(obj)
        except QueueObjectError as error:
            # A broken Queue is reported and left out; the others keep working.
            log.error("queue %s is invalid and ignored: %s", name, error)
            self.queue_objects.pop(name, None)
            return
        self.queue_objects[name] = obj

    def _publish_queues(self) -> None:
        queues = [queue_from_object(o) for o in self.queue_objects.values()]
        self.cluster.replace_queues(queues, source="crd")
