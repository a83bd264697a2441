"""Apportion's cached pods by workload, with each workload's groups and what waits in each
queue kept current as pods come and go.

The webhook answers every admission review under the cache's lock, and a shared cluster
holds tens of thousands of pods. Grouping them all by workload on that path cost 0.18 s per
review at 20,000 pods: a burst of creations waited for the lock. Here
a pod event only marks its workload; that workload's groups, and its place among the
waiting, are worked out again when next asked, from its own pods
(``benchmarks/live_bench.py``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from webhook.observed import PodGroup, groups_of, replaced_gang
from webhook.pods import ManagedPod

__all__ = ["PodIndex"]

Key = tuple[str, str]


class PodIndex:
    """Pods by (namespace, name) and by workload annotation."""

    __slots__ = (
        "_all_groups",
        "_by_node",
        "_foreign",
        "_groups",
        "_members",
        "_stale",
        "_tops",
        "_waiting",
        "pods",
    )

    def __init__(self, pods: Iterable[ManagedPod] = ()) -> None:
        self.pods: dict[Key, ManagedPod] = {}
        """Every cached pod (read-only outside: change it through ``put`` and ``pop``)."""
        self._members: dict[str, dict[Key, ManagedPod]] = {}
        """Per workload annotation: its pods."""
        self._groups: dict[str, dict[str, PodGroup]] = {}
        """Per workload annotation: the groups its pods form (``observed.groups_of``)."""
        self._all_groups: dict[str, PodGroup] = {}
        """Every group by name, ``_groups`` flattened: copied whole under the cache's lock
        for each snapshot, where flattening ``_groups`` took 4 ms at 19,427 groups."""
        self._tops: dict[str, dict[str, int]] = {}
        """Per workload annotation: per queue, the highest priority it waits with."""
        self._waiting: dict[str, Counter[int]] = {}
        """Per queue: how many workloads wait with each priority as their highest."""
        self._stale: set[str] = set()
        """Workloads whose pods changed since their groups and tops were worked out."""
        self._by_node: dict[str, dict[Key, ManagedPod]] = {}
        """Per node: the pods bound to it or placed on it."""
        self._foreign: dict[Key, ManagedPod] = {}
        """The foreign pods (a few among tens of thousands: each snapshot's view reads
        them under the cache's lock)."""
        for pod in pods:
            self.put(pod)

    def get(self, key: Key) -> ManagedPod | None:
        return self.pods.get(key)

    def put(self, pod: ManagedPod) -> None:
        key = (pod.namespace, pod.name)
        before = self.pods.get(key)
        self.pods[key] = pod
        if before is not None:
            if before.workload != pod.workload:
                self._leave(key, before)
            for node in _nodes_of(before):
                self._off_node(node, key)
        self._members.setdefault(pod.workload, {})[key] = pod
        self._stale.add(pod.workload)
        if pod.foreign:
            self._foreign[key] = pod
        elif before is not None and before.foreign:
            del self._foreign[key]
        for node in _nodes_of(pod):
            self._by_node.setdefault(node, {})[key] = pod

    def pop(self, key: Key) -> ManagedPod | None:
        pod = self.pods.pop(key, None)
        if pod is not None:
            self._leave(key, pod)
            if pod.foreign:
                del self._foreign[key]
            for node in _nodes_of(pod):
                self._off_node(node, key)
        return pod

    def foreign(self) -> list[ManagedPod]:
        """The foreign pods: GPU pods of namespaces Apportion does not manage."""
        return list(self._foreign.values())

    def on_node(self, node: str) -> list[ManagedPod]:
        """The pods bound to ``node`` or placed on it."""
        return list(self._by_node.get(node, {}).values())

    def _off_node(self, node: str, key: Key) -> None:
        here = self._by_node.get(node)
        if here is not None and here.pop(key, None) is not None and not here:
            del self._by_node[node]

    def _leave(self, key: Key, pod: ManagedPod) -> None:
        members = self._members.get(pod.workload)
        if members is not None and members.pop(key, None) is not None and not members:
            del self._members[pod.workload]
        self._stale.add(pod.workload)

    def members(self, workload: str) -> list[ManagedPod]:
        """The pods under ``workload``'s annotation."""
        return list(self._members.get(workload, {}).values())

    def groups(self, workload: str) -> dict[str, PodGroup]:
        """The groups of the pods under ``workload``'s annotation but foreign ones: itself,
        and a running gang's replacements apart (``observed.groups_of``). Read-only."""
        if workload in self._stale:
            self._settle(workload)
        return self._groups.get(workload, {})

    def group(self, name: str) -> PodGroup | None:
        """The group the allocator decides as ``name`` (a workload or its replacements)."""
        return self.groups(replaced_gang(name) or name).get(name)

    def all_groups(self) -> dict[str, PodGroup]:
        """Every group, in a dict of the caller's own."""
        self.settle()
        return dict(self._all_groups)

    def highest_waiting(self, queue: str) -> int | None:
        """The highest priority among the workloads waiting in ``queue`` for a decision:
        those whose pods are all gated, of a gang that is not mixed, held back by no other
        gate."""
        self.settle()
        priorities = self._waiting.get(queue)
        return max(priorities) if priorities else None

    def settle(self) -> None:
        """Work out every changed workload's groups and tops now: a relist's new index does
        it before the cache's lock is taken (0.1–0.25 s at 20,000 pods, every workload new),
        not in the first snapshot's view under it."""
        for workload in list(self._stale):
            self._settle(workload)

    def _settle(self, workload: str) -> None:
        self._stale.discard(workload)
        for queue, priority in self._tops.pop(workload, {}).items():
            counts = self._waiting[queue]
            counts[priority] -= 1
            if not counts[priority]:
                del counts[priority]
        members = [p for p in self._members.get(workload, {}).values() if not p.foreign]
        groups = groups_of(workload, members) if members else {}
        for name, group in self._groups.pop(workload, {}).items():
            if name not in groups and self._all_groups.get(name) is group:
                del self._all_groups[name]
        if not groups:
            return
        self._groups[workload] = groups
        self._all_groups.update(groups)
        tops: dict[str, int] = {}
        for group in groups.values():
            for pod in () if group.admitted or group.mixed else group.pods:
                if not pod.other_gates:  # held back by others: it waits for nobody here
                    tops[pod.queue] = max(tops.get(pod.queue, pod.priority), pod.priority)
        if tops:
            self._tops[workload] = tops
            for queue, priority in tops.items():
                self._waiting.setdefault(queue, Counter())[priority] += 1


def _nodes_of(pod: ManagedPod) -> set[str]:
    """The nodes a pod is bound to or placed on (one, as a rule; none while it waits)."""
    nodes = {pod.node} if pod.node is not None else set()
    if pod.placement is not None:
        nodes.add(pod.placement.node)
    return nodes
