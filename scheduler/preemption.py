"""Choosing victims: the fewest, lowest-priority, most recently started workloads that make room.

Candidates come from the preemptor's queue policy (Kueue's withinClusterQueue and
reclaimWithinCohort). With the policy's ``idle_borrowed_first`` switch, workloads that are
idle by GPU metrics and borrowing go before every other candidate. We remove candidates in
preference order until the preemptor fits, then try to give each one back, latest removed
first, keeping only those without which it still would not fit — so the set is minimal by
inclusion, as in Kueue. Every check is a take/release on the live state, never a copy.
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

    def competes_for(self, flavor: str, models: Sequence[str]) -> bool:
        """Does it hold quota of ``flavor`` or GPUs of one of ``models``: could removing it
        make room for a workload that wants them?"""
        return self.flavor == flavor or not self.models.isdisjoint(models)


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
    found = []
    for victim in running:
        w = victim.workload
        if not victim.competes_for(flavor, models):
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


def _idle_borrowed_first(book: QuotaBook) -> Callable[[Running], tuple[object, ...]]:
    def key(victim: Running) -> tuple[object, ...]:
        w = victim.workload
        idle_borrowed = w.idle and book.borrowing(w.queue, victim.flavor)
        return (not idle_borrowed, *_order(victim))

    return key


def find_victims(
    state: ClusterState,
    book: QuotaBook,
    preemptor_queue: str,
    undo: Sequence[Running],
    candidates: Sequence[Running],
    fits: Callable[[], bool],
    idle_borrowed_first: bool = False,
) -> tuple[list[Running], list[Running]] | None:
    """What to take back and whom to evict so that ``fits()`` holds; None if impossible.
    Leaves the state unchanged.

    ``undo`` (admissions of this cycle: nothing started, free to undo) goes first, lowest
    priority first and never minimized, so a lower priority never stays while a higher one
    of its queue goes. Then running ``candidates`` in preference order, and the evicted set
    is made minimal by inclusion: every victim not needed is given back. With
    ``idle_borrowed_first``, idle borrowing candidates (judged before any eviction) lead the
    order, so when they alone make room no other workload is evicted."""
    removed: list[Running] = []

    def evict(victim: Running) -> None:
        state.release(victim.allocation)
        book.charge(victim.workload.queue, victim.flavor, -victim.amount)

    def restore(victim: Running) -> None:
        state.take(victim.allocation)
        book.charge(victim.workload.queue, victim.flavor, victim.amount)

    def restore_all() -> None:
        for victim in reversed(removed):
            restore(victim)

    def eligible(victim: Running) -> bool:
        # A reclaim victim stays eligible only while its queue still borrows the flavor.
        return victim.workload.queue == preemptor_queue or book.borrowing(
            victim.workload.queue, victim.flavor
        )

    for victim in sorted(undo, key=_order):
        if eligible(victim):
            evict(victim)
            removed.append(victim)
            if fits():
                restore_all()
                return removed, []
    taken_back = len(removed)
    order = _idle_borrowed_first(book) if idle_borrowed_first else _order
    for victim in sorted(candidates, key=order):
        if not eligible(victim):
            continue
        evict(victim)
        removed.append(victim)
        if fits():
            break
    else:
        restore_all()
        return None
    evicted = removed[taken_back:]
    # Give back every evicted workload that is not needed, latest removed first.
    needed: list[Running] = []
    for victim in reversed(evicted[:-1]):
        restore(victim)
        if not fits():
            evict(victim)
            needed.append(victim)
    needed.append(evicted[-1])
    # Admissions of this cycle taken back are given back too when the evictions alone make
    # room, highest priority first; the first one that is needed stops it, so a lower
    # priority is never kept while a higher one goes.
    kept = 0
    for victim in reversed(removed[:taken_back]):
        restore(victim)
        if not fits():
            evict(victim)
            break
        kept += 1
    taken = removed[: taken_back - kept]
    for victim in needed:
        restore(victim)
    for victim in taken:
        restore(victim)
    return taken, sorted(needed, key=_order)
