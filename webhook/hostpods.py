"""Pods that ask no GPU but still take CPU and memory from the node they are bound to.

A data loader, a monitoring agent, a DaemonSet pod or a notebook sidecar on a GPU node
holds CPU and memory the kube-scheduler counts; if Apportion thought them free it could pin
a GPU pod to a node the kube-scheduler then cannot fit it on (the pod stays Pending).
Clusters have tens of thousands of such pods, so each is kept as three fields (node, CPU
milli, memory MiB), never the pod object, and the per-node sums are kept as they change so
a snapshot costs one subtraction per node.

Every bound pod with requests is kept, whatever its node: a pod event can arrive before
its node's (the Pod and Node informers list concurrently at startup), and a node becomes
a GPU node only once its device plugin reports GPUs, after its DaemonSet pods have landed.
What is on nodes Apportion does not track is kept but subtracted nowhere. That costs about
280 bytes a pod (14 MB for 50,000 pods, measured with tracemalloc).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from scheduler.model import Node
from webhook.observed import without_host
from webhook.quantities import pod_requests

__all__ = ["HostPod", "HostPods", "host_pod_of"]

PodKey = tuple[str, str]


@dataclass(frozen=True, slots=True)
class HostPod:
    """What a bound pod outside Apportion's GPU bookkeeping holds of its node."""

    namespace: str
    name: str
    node: str
    cpu_milli: int
    memory_mib: int

    @property
    def key(self) -> PodKey:
        return self.namespace, self.name


def host_pod_of(pod: dict[str, Any]) -> HostPod | None:
    """The CPU and memory a bound, non-terminal pod requests (``quantities.pod_requests``:
    what cannot be read counts as nothing); None when it holds nothing — not bound yet,
    Succeeded or Failed, or no requests at all. Call it for pods ``PodReader.observed``
    does not account for, so no pod is counted twice."""
    spec = pod.get("spec")
    if not isinstance(spec, dict):
        return None
    node = spec.get("nodeName")
    if not isinstance(node, str) or not node:
        return None
    status = pod.get("status")
    if isinstance(status, dict) and status.get("phase") in ("Succeeded", "Failed"):
        return None
    cpu_milli, memory_mib = pod_requests(spec)
    if not cpu_milli and not memory_mib:
        return None
    metadata = pod.get("metadata")
    metadata = metadata if isinstance(metadata, dict) else {}
    return HostPod(
        # Thousands of pods share a few hundred node and namespace names: one copy each.
        namespace=sys.intern(str(metadata.get("namespace") or "")),
        name=str(metadata.get("name") or ""),
        node=sys.intern(node),
        cpu_milli=cpu_milli,
        memory_mib=memory_mib,
    )


Moved = dict[str, tuple[int, int]]
"""Per node whose sums changed: by how much (CPU milli, memory MiB; negative when less)."""


class HostPods:
    """The host pods by key, and their CPU and memory summed per node.

    ``put``, ``remove`` and ``replace`` return how the sums moved, per node whose sums
    changed, so the caller follows only a tracked node's change: status-only updates
    (most pod events) and pods on CPU-only nodes change nothing.
    """

    def __init__(self) -> None:
        self._pods: dict[PodKey, HostPod] = {}
        self._sums: dict[str, tuple[int, int]] = {}

    def __len__(self) -> int:
        return len(self._pods)

    def put(self, pod: HostPod) -> Moved:
        before = self._pods.get(pod.key)
        if before == pod:
            return {}
        self._pods[pod.key] = pod
        moved: Moved = {}
        if before is not None:
            _add_to(moved, before, -1)
        _add_to(moved, pod, 1)
        return self._apply(moved)

    def remove(self, key: PodKey) -> Moved:
        before = self._pods.pop(key, None)
        if before is None:
            return {}
        moved: Moved = {}
        _add_to(moved, before, -1)
        return self._apply(moved)

    def replace(self, pods: Iterable[HostPod]) -> Moved:
        """A full relist: the host pods are now exactly these."""
        moved: Moved = {}
        for pod in self._pods.values():
            _add_to(moved, pod, -1)
        self._pods = {p.key: p for p in pods}
        for pod in self._pods.values():
            _add_to(moved, pod, 1)
        return self._apply(moved)

    def held(self, node: str) -> tuple[int, int]:
        """CPU milli and memory MiB the host pods on ``node`` request."""
        return self._sums.get(node, (0, 0))

    def less_held(self, nodes: dict[str, Node]) -> dict[str, Node]:
        """The nodes with what their host pods request taken out of allocatable."""
        touched = {n: self._sums[n] for n in nodes.keys() & self._sums.keys()}
        if not touched:
            return nodes
        result = dict(nodes)
        for name, (cpu, memory) in touched.items():
            result[name] = without_host(nodes[name], cpu, memory)
        return result

    def _apply(self, moved: Moved) -> Moved:
        """Add ``moved`` to the sums; it, without the nodes whose sums did not change."""
        for node, (cpu, memory) in list(moved.items()):
            if not cpu and not memory:
                del moved[node]
                continue
            was_cpu, was_memory = self._sums.get(node, (0, 0))
            if was_cpu + cpu or was_memory + memory:
                self._sums[node] = (was_cpu + cpu, was_memory + memory)
            else:
                self._sums.pop(node, None)
        return moved


def _add_to(moved: Moved, pod: HostPod, sign: int) -> None:
    cpu, memory = moved.get(pod.node, (0, 0))
    moved[pod.node] = (cpu + sign * pod.cpu_milli, memory + sign * pod.memory_mib)
