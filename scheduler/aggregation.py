"""What the ILP (``scheduler.allocator``) is built from, aggregated, without PuLP.

Pending workloads that are interchangeable (``Entry.alike``) form a *class*, whose count
per option is the model's variable; running workloads a pending workload's queue policy
could evict form eviction classes; a GPU model's free capacity is counted as free whole
GPUs per node and free milli, not per GPU. All of it errs on the side of more room, so the
bound the solver proves on the model bounds every decision (why aggregated:
``scheduler.allocator``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from scheduler.catalog import MILLI_PER_GPU
from scheduler.compiled import Alike, Compiled, Entry
from scheduler.demand import Kind, Option
from scheduler.preemption import Running
from scheduler.state import ClusterState

__all__ = [
    "EvictionClass",
    "WorkloadClass",
    "eviction_classes",
    "extra_pods",
    "free_blocks",
    "freeable_node_gpus",
    "workload_classes",
]


@dataclass(slots=True)
class WorkloadClass:
    members: list[Entry]
    options: tuple[Option, ...]
    pods: int
    queue: str
    tier: float


def workload_classes(pending: list[Entry]) -> list[WorkloadClass]:
    """The classes of the pending workloads that have options, members in the cycle's order
    (priority, then age): a count the ILP gives a class goes to its first members."""
    groups: dict[Alike, list[Entry]] = {}
    for entry in sorted(pending, key=lambda e: e.order):
        if entry.options:
            groups.setdefault(entry.alike, []).append(entry)
    return [
        WorkloadClass(
            members,
            members[0].options,
            members[0].workload.pods,
            members[0].workload.queue,
            members[0].tier,
        )
        for members in groups.values()
    ]


def free_blocks(state: ClusterState, model: str) -> tuple[list[int], int, int, int]:
    """Free capacity of ``model``'s non-MIG GPUs, from the pools' indexes: free whole GPUs
    per node, free milli on shared GPUs, free milli in all, and free GPUs on used nodes."""
    blocks: list[int] = []
    used_node_gpus = 0
    shared_milli = 0
    partial_milli = 0
    for pool in state.pools:
        if pool.model != model:
            continue
        for (entirely_free, free), nodes in pool.buckets.items():
            blocks.extend([free] * len(nodes))
            if not entirely_free:
                used_node_gpus += free * len(nodes)
        for free_milli, _, _ in pool.fractions:
            shared_milli += free_milli
            if free_milli < MILLI_PER_GPU:
                partial_milli += free_milli
    # Only shared GPUs can be partly used; every other free GPU is in a bucket.
    total_milli = MILLI_PER_GPU * sum(blocks) + partial_milli
    return blocks, shared_milli, total_milli, used_node_gpus


@dataclass(slots=True)
class EvictionClass:
    """Running workloads that hold the same thing (queue, flavor, device shape, pods)."""

    members: list[Running]
    option: Option
    queue: str
    flavor: str
    pods: int
    amount: int
    gpu_eq: float


def eviction_classes(compiled: Compiled) -> list[EvictionClass]:
    """Running workloads some pending workload's queue policy could evict, grouped.

    A relaxation: who may evict whom is checked per queue, not per preemptor, and the
    room an eviction makes may go to any class. Every eviction the greedy cycle can make is
    allowed here, so the ILP's optimum bounds greedy's objective from above."""
    book = compiled.book
    policies = {q.name: q.preemption for q in compiled.snapshot.queues}
    top: dict[str, int] = {}
    for entry in compiled.pending:
        w = entry.workload
        top[w.queue] = max(top.get(w.queue, w.priority), w.priority)
    reclaimers: dict[str, list[tuple[str, int]]] = {}
    """Per cohort: (queue, priority below which it may reclaim) for queues that may."""
    for queue, priority in top.items():
        reclaim_policy = policies[queue].reclaim_within_cohort
        if reclaim_policy != "Never":
            cohort = book.accounts[queue].cohort or ""
            level = priority if reclaim_policy == "LowerPriority" else 1 << 62
            reclaimers.setdefault(cohort, []).append((queue, level))
    groups: dict[tuple[object, ...], EvictionClass] = {}
    for victim in compiled.running:
        w = victim.workload
        policy = policies[w.queue].within_queue
        own = (
            w.queue in top
            and policy != "Never"
            and (
                top[w.queue] > w.priority
                or (policy == "LowerOrNewerEqualPriority" and top[w.queue] == w.priority)
            )
        )
        cohort = book.accounts[w.queue].cohort or ""
        reclaim = any(
            q != w.queue and level > w.priority for q, level in reclaimers.get(cohort, ())
        )
        if not own and not reclaim:
            continue
        option = victim.allocation.option
        key = (w.queue, victim.flavor, option, w.pods)
        group = groups.get(key)
        if group is None:
            group = groups[key] = EvictionClass(
                [], option, w.queue, victim.flavor, w.pods, victim.amount, victim.gpu_eq
            )
        group.members.append(victim)
    return list(groups.values())


def extra_pods(evictable: list[EvictionClass]) -> Callable[[Option], int]:
    """At most how many more pods of an option evictions could make room for: a freed GPU
    completes at most one block of whole GPUs, a freed share adds its milli plus at most one
    pod's worth of what its GPU had left, a freed slice one pod of its profile."""
    gpus: dict[str, int] = {}
    milli: dict[str, int] = {}
    pieces: dict[str, int] = {}
    slices: dict[str, int] = {}
    for group in evictable:
        option, held = group.option, len(group.members) * group.pods
        model = option.models[0]
        if option.kind is Kind.WHOLE:
            gpus[model] = gpus.get(model, 0) + held * option.per_pod
            milli[model] = milli.get(model, 0) + held * option.per_pod * MILLI_PER_GPU
            pieces[model] = pieces.get(model, 0) + held * option.per_pod
        elif option.kind is Kind.FRACTION:
            gpus[model] = gpus.get(model, 0) + held
            milli[model] = milli.get(model, 0) + held * option.per_pod
            pieces[model] = pieces.get(model, 0) + held
        else:
            profile = option.profile or ""
            slices[profile] = slices.get(profile, 0) + held

    def extra(option: Option) -> int:
        if option.kind is Kind.MIG:
            return slices.get(option.profile or "", 0)
        if option.kind is Kind.WHOLE:
            return sum(gpus.get(m, 0) for m in option.models)
        return sum(milli.get(m, 0) // option.per_pod + pieces.get(m, 0) for m in option.models)

    return extra


def freeable_node_gpus(state: ClusterState, evictable: list[EvictionClass]) -> int:
    """GPUs of the nodes evictions could leave entirely free: evicting one pod may free a
    whole node, so each node (per pool) that hosts an evictable pod counts in full."""
    hosts = {
        (state.gpu_node[g], state.gpu_pool[g])
        for group in evictable
        for victim in group.members
        for pod in victim.allocation.pods
        for g in pod.gpus
        if pod.mig_start is None
    }
    return sum(state.pools[p].node_size.get(n, 0) for n, p in hosts)
