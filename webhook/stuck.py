"""Admitted pods the kube-scheduler cannot place: found, timed, and judged replaceable.

Apportion admits a pod by pinning it to nodes with required node affinity, which cannot
change once the gate is gone (and a gate can never be added back). If the kube-scheduler
then cannot bind it — its node cordoned, drained, not Ready or deleted, or filled by pods
Apportion did not see in time — the pod stays Pending for ever while Apportion counts
its GPUs as held. Only a new pod can be decided afresh, so a stuck workload whose owner
recreates its pods (a Job, a ReplicaSet) is evicted whole; a bare pod is only reported.

Pure bookkeeping, no I/O: the controller feeds the observed pods, the nodes' problems and
the time, and acts on what comes back.

Since when a pod is stuck: the kube-scheduler's ``PodScheduled=False/Unschedulable``
condition keeps the ``lastTransitionTime`` of the status it replaces, and a gated pod
already carried ``PodScheduled=False/SchedulingGated`` from its creation; so the
condition's time is only a lower bound, and the clock starts at the later of it and the
moment this controller first saw the pod admitted and unbound (a restart or a new leader
starts the clock again: never early, at worst one grace period late).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from webhook import keys
from webhook.pods import ManagedPod, controller_owner, epoch_seconds

__all__ = [
    "STUCK_REASON",
    "StuckPod",
    "StuckWatch",
    "StuckWorkload",
    "recovered",
    "reported_stuck",
    "unschedulable",
]

STUCK_REASON = "Stuck"
"""The reason annotation's prefix on a stuck pod Apportion cannot replace."""

_Key = tuple[str, str, str]

MAX_DOUBLINGS = 4
"""A workload replaced and stuck again waits twice as long each time, up to 16 times the
grace (80 minutes at the default 300 s): a cluster view that keeps misleading the webhook
(pods it does not see filling nodes) must not become an eviction every 5 minutes."""


@dataclass(frozen=True, slots=True)
class StuckPod:
    pod: ManagedPod
    node: str
    """The node Apportion pinned it to."""
    stuck_s: float
    """How long it has been unplaceable (0 for a gang mate that is merely unbound)."""
    why: str
    """The kube-scheduler's message, or what is wrong with the node; '' for a mate."""


@dataclass(frozen=True, slots=True)
class StuckWorkload:
    workload: str
    queue: str
    pods: tuple[StuckPod, ...]
    """Every admitted, unbound pod of the workload (all of them go, gangs are all or none)."""
    cause: StuckPod
    """The pod stuck longest when the workload was first found stuck (maybe gone since)."""
    blocker: str = ""
    """Why Apportion cannot replace it ('' when it can)."""


def unschedulable(pod: Mapping[str, Any]) -> tuple[str, int] | None:
    """The kube-scheduler's verdict that it cannot place the pod: (message, since)."""
    for condition in (pod.get("status") or {}).get("conditions") or ():
        if (
            isinstance(condition, dict)
            and condition.get("type") == "PodScheduled"
            and condition.get("status") == "False"
            and condition.get("reason") == "Unschedulable"
        ):
            message = str(condition.get("message") or "the kube-scheduler found no node")
            return message, epoch_seconds(condition.get("lastTransitionTime"))
    return None


def reported_stuck(pod: ManagedPod) -> bool:
    """Does its reason annotation carry the stuck report (``_report_stuck``, once per pod)?"""
    return str(pod.annotations.get(keys.ANNOTATION_REASON, "")).startswith(f"{STUCK_REASON}:")


def recovered(pods: Iterable[ManagedPod]) -> list[ManagedPod]:
    """Pods reported stuck that the kube-scheduler has bound since (their node came back,
    or room was made on it): the report no longer holds."""
    return [p for p in pods if not p.foreign and p.node is not None and reported_stuck(p)]


def _admitted_unbound(pod: ManagedPod) -> bool:
    """Admitted by Apportion (a placement), ungated, not bound and not being deleted."""
    return (
        not pod.foreign
        and pod.placement is not None
        and not pod.gated
        and pod.node is None
        and not pod.terminating
    )


class StuckWatch:
    """Remembers since when each admitted pod is unbound, each pinned node bad, and which
    workloads are being replaced: once judged stuck, a workload's remaining admitted pods
    go too (a mate a PodDisruptionBudget held back, or one the scheduler has not judged),
    so no half of a gang is left pinned beside its recreated other half."""

    def __init__(self, after_s: float) -> None:
        self.after_s = after_s
        self._admitted: dict[_Key, float] = {}
        self._bad_node: dict[_Key, float] = {}
        self._replacing: dict[str, StuckPod] = {}
        self._replaced: dict[str, tuple[int, float]] = {}
        """Workload → (times replaced, when last): its grace doubles each time, until one
        of its pods is bound (it ran) or it is gone for the longest grace."""

    def grace_s(self, workload: str) -> float:
        """How long ``workload``'s pods may stay unplaced before it is stuck."""
        times = self._replaced.get(workload, (0, 0.0))[0]
        return self.after_s * (1 << min(times, MAX_DOUBLINGS))

    def replaced(self, workload: str, now: float) -> None:
        """The controller evicted all of ``workload``'s pods for their owner to recreate:
        the pods that come next are timed afresh, against a doubled grace."""
        self._replaced[workload] = (self._replaced.get(workload, (0, 0.0))[0] + 1, now)
        self._replacing.pop(workload, None)

    def review(
        self, pods: Iterable[ManagedPod], node_problems: Mapping[str, str], now: float
    ) -> list[StuckWorkload]:
        """Workloads with a pod unplaceable for ``after_s`` or longer, by name.

        ``node_problems``: every Node in the cluster by name, with why new work must not
        land on it ('' when nothing is wrong); a node absent from it no longer exists.
        """
        if self.after_s <= 0:
            self._admitted.clear()
            self._bad_node.clear()
            self._replacing.clear()
            self._replaced.clear()
            return []
        grouped: dict[str, list[ManagedPod]] = {}
        for pod in pods:
            if not pod.foreign:
                grouped.setdefault(pod.workload, []).append(pod)
        admitted: dict[_Key, float] = {}
        bad_node: dict[_Key, float] = {}
        replacing: dict[str, StuckPod] = {}
        found: list[StuckWorkload] = []
        longest = self.after_s * (1 << MAX_DOUBLINGS)
        for name, (_, when) in list(self._replaced.items()):
            ran = any(p.node is not None for p in grouped.get(name, ()))
            if ran or (name not in grouped and now - when > longest):
                del self._replaced[name]
        for name in sorted(grouped):
            members = sorted(grouped[name], key=lambda p: p.name)
            unbound = [p for p in members if _admitted_unbound(p)]
            timed: list[StuckPod] = []
            for pod in unbound:
                key = pod.identity
                admitted[key] = self._admitted.get(key, now)
                assert pod.placement is not None
                node = pod.placement.node
                problem = node_problems.get(node, "node no longer exists")
                stuck_s, why = 0.0, []
                verdict = unschedulable(pod.raw or {})
                if verdict is not None:
                    message, since = verdict
                    stuck_s = now - max(admitted[key], since)
                    why.append(message)
                if problem:
                    bad_node[key] = self._bad_node.get(key, now)
                    stuck_s = max(stuck_s, now - bad_node[key])
                    why.append(f"{node}: {problem}")
                timed.append(StuckPod(pod, node, stuck_s, "; ".join(why)))
            grace = self.grace_s(name)
            stuck = [p for p in timed if p.why and p.stuck_s >= grace]
            cause = self._replacing.get(name)
            if cause is None and stuck:
                cause = max(stuck, key=lambda p: (p.stuck_s, p.pod.name))
            if cause is None or not timed:
                continue
            blocker = _blocker(members, unbound)
            if not blocker:
                replacing[name] = cause
            found.append(StuckWorkload(name, members[0].queue, tuple(timed), cause, blocker))
        self._admitted, self._bad_node, self._replacing = admitted, bad_node, replacing
        return found


def _blocker(members: list[ManagedPod], unbound: list[ManagedPod]) -> str:
    """Why evicting the unbound pods would not give the workload a fresh decision."""
    bound = [p.name for p in members if p.node is not None]
    if bound:
        return (
            f"pods {', '.join(bound)} of this gang are already on their nodes and Apportion "
            "never stops pods that are bound: delete the whole workload (its Job, or its "
            "pods) and create it again to be decided afresh"
        )
    bare = [p.name for p in unbound if controller_owner(_owners(p)) is None]
    if bare:
        return (
            f"no controller owns {', '.join(bare)} (no Job, ReplicaSet or other owner would "
            "create it again), so Apportion does not evict it: delete it and create it again "
            "to be decided afresh"
        )
    return ""


def _owners(pod: ManagedPod) -> object:
    return ((pod.raw or {}).get("metadata") or {}).get("ownerReferences")
