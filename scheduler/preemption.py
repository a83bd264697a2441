"""Choosing victims: the fewest, lowest-priority, most recently started workloads that make room.

Candidates come from the preemptor's queue policy (Kueue's withinClusterQueue and
reclaimWithinCohort). We remove candidates in preference order until the preemptor fits,
then try to give each one back, latest removed first, keeping only those without which it
still would not fit — so the set is minimal by inclusion, as in Kueue. Every check is a
take/release on the live state, never a copy.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from scheduler.model import PreemptionPolicy, Workload
from scheduler.quota import QuotaBook
from scheduler.state import Allocation, ClusterState

__all__ = ["Running", "candidates_for", "find_victims"]


@dataclass(slots=True)
class Running:
    workload: Workload
    allocation: Allocation
    flavor: str
    amount: int
    """Quota charged, in the flavor's base unit."""
    gpu_eq: float
    models: frozenset[str]


def candidates_for(
    preemptor: Workload,
    flavor: str,
    models: Sequence[str],
    reclaim: bool,
    policy: PreemptionPolicy,
    running: Sequence[Running],
    book: QuotaBook,
) -> list[Running]:
    """Running workloads the preemptor's policy allows it to evict for this flavor."""
    wanted = set(models)
    found = []
    for victim in running:
        w = victim.workload
        if victim.flavor != flavor and not (victim.models & wanted):
            continue
        if w.queue == preemptor.queue:
            if policy.within_queue == "Never":
                continue
            lower = w.priority < preemptor.priority
            newer_equal = w.priority == preemptor.priority and (w.created, w.name) > (
                preemptor.created,
                preemptor.name,
            )
            if lower or (policy.within_queue == "LowerOrNewerEqualPriority" and newer_equal):
                found.append(victim)
        elif reclaim and book.same_cohort(w.queue, preemptor.queue):
            if policy.reclaim_within_cohort == "Never":
                continue
            if policy.reclaim_within_cohort == "LowerPriority" and w.priority >= preemptor.priority:
                continue
            if book.borrowing(w.queue, victim.flavor):
                found.append(victim)
    return found


def _order(victim: Running) -> tuple[int, int, float, str]:
    started = victim.workload.started if victim.workload.started is not None else 0
    return (victim.workload.priority, -started, victim.gpu_eq, victim.workload.name)


def find_victims(
    state: ClusterState,
    book: QuotaBook,
    preemptor_queue: str,
    candidates: Sequence[Running],
    fits: Callable[[], bool],
) -> list[Running] | None:
    """A minimal victim set after which ``fits()`` holds, or None. Leaves state unchanged."""
    removed: list[Running] = []

    def evict(victim: Running) -> None:
        state.release(victim.allocation)
        book.charge(victim.workload.queue, victim.flavor, -victim.amount)

    def restore(victim: Running) -> None:
        state.take(victim.allocation)
        book.charge(victim.workload.queue, victim.flavor, victim.amount)

    for victim in sorted(candidates, key=_order):
        reclaiming = victim.workload.queue != preemptor_queue
        if reclaiming and not book.borrowing(victim.workload.queue, victim.flavor):
            continue  # earlier victims already brought its queue back within nominal
        evict(victim)
        removed.append(victim)
        if fits():
            break
    else:
        for victim in reversed(removed):
            restore(victim)
        return None
    # Give back every victim that is not needed, latest removed first.
    needed: list[Running] = []
    for victim in reversed(removed[:-1]):
        restore(victim)
        if not fits():
            evict(victim)
            needed.append(victim)
    needed.append(removed[-1])
    for victim in needed:
        restore(victim)
    return sorted(needed, key=_order)
