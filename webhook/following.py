"""Changes the webhook's live allocator follows in place, as a rebuild would have them,
instead of being rebuilt under the lock the webhook's answers wait for: a build of the
running workloads, a walk over every pod group, and a new allocator from it, 0.05 s at
20,000 pods ((b)'s cluster, ``benchmarks/live_bench.py``), and 0.2–0.3 s for the first
after a relist, which works out every group and makes every running workload anew.

Foreign GPU pods and pods asking no GPU come and go on GPU nodes, and Apportion's own pods
end, all the time.
Each function that changes the allocator says whether it followed (True) or the allocator
must be rebuilt (False; what it changed by then goes with it). They read the pods, nodes
and intents ``LiveCluster`` guards with its lock, and change its allocator: every caller
holds that lock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from scheduler.incremental import IncrementalAllocator
from scheduler.model import Node, PodPlacement, Queue, Workload
from scheduler.state import PlacementError
from webhook.hostpods import Moved
from webhook.intents import Intents
from webhook.kubeobjects import Ledgers
from webhook.observed import ForeignHold, foreign_hold, workload_of
from webhook.podindex import PodIndex
from webhook.pods import ManagedPod

__all__ = [
    "Held",
    "as_placed",
    "capacity_view",
    "follow_foreign",
    "follow_host",
    "follow_node",
    "foreign_on",
    "gave_back",
    "held_by",
    "rejoin",
]

Held = tuple[tuple[str, tuple[tuple[tuple[str, str], tuple[object, ...]], ...]], ...]
"""Per admitted group: its name, and each pod's key and ``_holding``."""


def capacity_view(pod: ManagedPod) -> tuple[object, ...]:
    """What of a pod the allocator's holdings depend on: a pod changed in nothing else (its
    status, its labels) changes nothing it holds."""
    return (pod.gated, pod.node, pod.placement, pod.workload, pod.demand, pod.extra_slices)


def held_by(index: PodIndex, workloads: Iterable[str]) -> Held:
    """What the pods of ``workloads`` hold, as the incremental allocator sees it: their
    admitted groups' pods (a waiting group holds nothing)."""
    return tuple(
        (name, tuple(((p.namespace, p.name), _holding(p)) for p in group.pods))
        for workload in sorted(workloads)
        for name, group in index.groups(workload).items()
        if group.admitted
    )


def _holding(pod: ManagedPod) -> tuple[object, ...]:
    """What a pod of an admitted group holds (``observed.workload_of``): where it runs or is
    placed. Not its gate, nor its binding where placed: the controller releasing a gang's
    members, the kube-scheduler binding an admitted pod, change nothing it holds."""
    node = pod.node or (pod.placement.node if pod.placement else None)
    return (node, pod.placement, pod.demand, pod.extra_slices)


def foreign_on(
    nodes: dict[str, Node], index: PodIndex, names: Iterable[str | None]
) -> dict[str, ForeignHold]:
    """What the foreign pods bound to each of these tracked nodes hold now."""
    return {
        node: foreign_hold(
            nodes[node], [p for p in index.on_node(node) if p.foreign and p.node == node]
        )
        for node in names
        if node is not None and node in nodes
    }


def follow_foreign(
    allocator: IncrementalAllocator,
    was: dict[str, ForeignHold],
    nodes: dict[str, Node],
    index: PodIndex,
    intents: Intents,
) -> bool:
    """Foreign pods came to these nodes or left them (``was``: what they held before):
    the live allocator takes or gives back the difference in place, as a rebuild would
    have it. A rebuild still when a device they now hold is not free there, or one they
    gave back is where Apportion's pods are recorded or may be placed anew (a build placed
    those around the foreign pods' devices)."""
    for node, before in was.items():
        after = foreign_on(nodes, index, [node])[node]
        gone_whole, gone_slices = before.whole - after.whole, before.slices - after.slices
        if (
            (gone_whole or gone_slices)
            and _apportion_near(index, intents, node, gone_whole, gone_slices)
        ) or not allocator.take_held(
            node, after.whole - before.whole, after.slices - before.slices
        ):
            return False
        allocator.give_back_held(node, gone_whole, gone_slices)
        allocator.hold_outside(
            node, after.cpu_milli - before.cpu_milli, after.memory_mib - before.memory_mib
        )
    return True


def _apportion_near(
    index: PodIndex,
    intents: Intents,
    node: str,
    whole: frozenset[int],
    slices: frozenset[tuple[int, int]],
) -> bool:
    """Whether Apportion's pods or admissions on ``node`` are recorded on any of these
    devices, or run there with none recorded (a build gives them the lowest free)."""

    def on(placement: PodPlacement) -> bool:
        if placement.node != node:
            return False
        if placement.mig_start is not None:
            return (placement.gpus[0], placement.mig_start) in slices
        return not whole.isdisjoint(placement.gpus)

    for pod in index.on_node(node):
        if pod.foreign:
            continue
        if pod.placement is None:
            if pod.node == node:  # bound there, none recorded
                return True
        elif on(pod.placement):
            return True
    return any(on(p) for intent in intents.values() for p in intent.workload.placement or ())


def follow_node(allocator: IncrementalAllocator | None, before: Node, after: Node) -> bool:
    """A node changed in its labels or its allocatable CPU and memory alone (GPU feature
    discovery's passes, a MIG or driver state label, a team's own labels, a kubelet's
    reservations): the live allocator follows in place, as a rebuild would compile it. Not
    where its GPUs or taints changed (a cordon, a drain, a MIG reconfiguration): they move
    to other pools, or out of service, and a build decides that."""
    if _devices_and_taints(before) != _devices_and_taints(after):
        return False
    return allocator is None or (
        allocator.relabel(after.name, after.labels)
        and allocator.resize(after.name, after.cpu_milli, after.memory_mib)
    )


def _devices_and_taints(node: Node) -> tuple[object, ...]:
    return (node.gpus, node.taints, node.cpu_held_milli, node.memory_held_mib)


def follow_host(allocator: IncrementalAllocator | None, tracked: Moved) -> bool:
    """What host pods hold on these tracked nodes moved: the live allocator follows in
    place, as a rebuild would have it. CPU-only pods come and go on GPU nodes all the
    time."""
    return allocator is None or all(
        allocator.hold_outside(node, *held) for node, held in tracked.items()
    )


def gave_back(
    allocator: IncrementalAllocator | None,
    held: Held,
    after: Held,
    placed: Callable[[str], Workload | None],
) -> bool:
    """Whether the live allocator is as ``after`` says without a rebuild: nothing held
    changed, or a workload's pods ended (the common case: pods finish all the time) and
    the allocator gave their devices back — all of a workload's, or a gang's member's
    while the rest run on where recorded (``placed``: ``as_placed``). A gang of 64 ending
    one pod at a time between the webhook's answers cost 64 rebuilds."""
    if held == after:
        return True
    if len(held) != 1 or len(after) > 1:
        return False
    name, pods = held[0]
    if after and (after[0][0] != name or not set(after[0][1]) < set(pods)):
        return False
    if allocator is None:
        return True
    rest = placed(name) if after else None
    if after and rest is None:
        return False
    if not allocator.release(name):
        return False
    if rest is None:
        return True
    try:
        allocator.hold(rest)
    except PlacementError:
        return False
    return True


def rejoin(
    allocator: IncrementalAllocator, gang: str, replacements: str, whole: Workload | None
) -> bool:
    """The gang's replacements, admitted apart, are all seen among its members: the
    live allocator holds them under their own name, and would keep holding them when a
    change to the gang gives back what it holds under the gang's (``gave_back``). From
    now on it holds the gang whole (``whole``: ``as_placed``), as a rebuild does."""
    if whole is None or not allocator.release(replacements) or not allocator.release(gang):
        return False
    try:
        allocator.hold(whole)
    except PlacementError:
        return False
    return True


def as_placed(
    name: str, index: PodIndex, queues: dict[str, Queue], nodes: dict[str, Node], now: float
) -> Workload | None:
    """The running workload ``name`` as a build would make it of its pods, where every
    one of them runs or is to run where its placement records: a pod bound elsewhere, or
    never placed by Apportion, is placed by the build among the devices left."""
    group = index.group(name)
    if group is None or not group.admitted:
        return None
    pod = group.pods[0]
    if pod.queue not in queues or any(
        p.placement is None or p.node not in (None, p.placement.node) for p in group.pods
    ):
        return None
    return workload_of(name, group, Ledgers(nodes), now)
