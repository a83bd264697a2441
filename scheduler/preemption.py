"""Choosing victims: the fewest, lowest-priority, most recently started workloads that make room.

Candidates come from the preemptor's queue policy (Kueue's withinClusterQueue and
reclaimWithinCohort). With the policy's ``idle_borrowed_first`` switch, workloads that are
idle by GPU metrics and borrowing go before every other candidate. We remove candidates in
preference order until the preemptor fits, then try to give each one back, latest removed
first, keeping only those without which it still would not fit — so the set is minimal by
inclusion, as in Kueue. Every check is a take/release on the live state, never a copy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from operator import attrgetter

from scheduler.model import PreemptionPolicy, Workload
from scheduler.quota import QuotaBook
from scheduler.state import Allocation, ClusterState

__all__ = ["Running", "candidates_for", "find_victims", "idle_borrowed_first", "preference_order"]


@dataclass(slots=True)
class Running:
    workload: Workload
    allocation: Allocation
    flavor: str
    amount: int
    """Quota charged, in the flavor's base unit."""
    gpu_eq: float
    models: frozenset[str]
    rank: tuple[int, int, float, str] = field(init=False, repr=False, compare=False)
    """Its place among one queue's candidates (lowest priority, most recently started,
    smallest; ``preference_order``): a field set once, since a cycle sorts candidates by it
    tens of thousands of times."""

    def __post_init__(self) -> None:
        w = self.workload
        started = w.started if w.started is not None else 0
        self.rank = (w.priority, -started, self.gpu_eq, w.name)

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
) -> list[Running]:
    """Running workloads the preemptor's policy allows it to evict for this flavor, from
    ``running``: those of its queue and, when it reclaims, of its cohort mates — which
    qualify only while their queue borrows what they hold. That last condition changes as
    the cycle admits and evicts, so it is left to ``find_victims`` (and the caller may keep
    the list while the running set stays the same)."""
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
        elif reclaim:
            if policy.reclaim_within_cohort == "Never":
                continue
            if policy.reclaim_within_cohort == "LowerPriority" and w.priority >= preemptor.priority:
                continue
            found.append(victim)
    return found


_order = attrgetter("rank")


def preference_order(candidates: Iterable[Running], preemptor_queue: str) -> list[Running]:
    """Victims in the order they go, Kueue's: cohort mates' (borrowing what they hold)
    before the preemptor's own queue's, so that a reclaim takes back lent quota before its
    queue loses a lower priority of its own; then lowest priority, most recently started,
    smallest."""
    return sorted(candidates, key=lambda v: (v.workload.queue == preemptor_queue, v.rank))


def idle_borrowed_first(candidates: Sequence[Running], book: QuotaBook) -> list[Running]:
    """``candidates`` (in preference order) with the idle ones whose queue borrows first,
    judged now, before any eviction."""
    return sorted(
        candidates,
        key=lambda v: not (v.workload.idle and book.borrowing(v.workload.queue, v.flavor)),
    )


def find_victims(
    state: ClusterState,
    book: QuotaBook,
    preemptor_queue: str,
    undo: Sequence[Running],
    candidates: Sequence[Running],
    fits: Callable[[], bool],
    quota: tuple[str, int],
    keep_nominal: bool = False,
) -> tuple[list[Running], list[Running]] | None:
    """What to take back and whom to evict so that ``fits()`` holds, left taken back and
    evicted in the state and the book (the caller records them); None, with the state
    unchanged, if impossible.

    ``undo`` (admissions of this cycle: nothing started, free to undo) goes first, in
    ``_undo_order``, and is never minimized, so a lower priority never stays while a higher
    one of its queue goes. Then running ``candidates``, in the order given (``preference_order``,
    or ``idle_borrowed_first``: when idle borrowers alone make room, no other workload is
    evicted), and the evicted set is made minimal by inclusion: every victim not needed is
    given back. ``quota``: the preemptor's (flavor, amount), which ``fits()`` also checks.

    A cohort mate's workload may go while its queue borrows what it holds (Kueue's rule:
    the last one taken may cut into the queue's nominal quota); with ``keep_nominal``, only
    while its queue keeps at least its nominal quota without it."""
    if not _quota_may_allow(book, preemptor_queue, *quota, (*undo, *candidates)):
        return None
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
        queue = victim.workload.queue
        if queue == preemptor_queue:
            return True
        if keep_nominal:
            return book.usage(queue, victim.flavor) - victim.amount >= book.nominal(
                queue, victim.flavor
            )
        return book.borrowing(queue, victim.flavor)

    if _evict_until(_undo_order(undo), eligible, evict, restore, removed, fits):
        return removed, []
    taken_back = len(removed)
    if not _evict_until(candidates, eligible, evict, restore, removed, fits):
        restore_all()
        return None
    evicted = removed[taken_back:]
    # Give back every evicted workload that is not needed, latest removed first: each
    # longest run that can go back at once, then the one that cannot stays evicted.
    needed: list[Running] = []
    rest = evicted[-2::-1]
    at = 0
    while at < len(rest):
        at += _give_back(rest[at:], evict, restore, fits)
        if at < len(rest):
            needed.append(rest[at])
            at += 1
    needed.append(evicted[-1])
    # Admissions of this cycle taken back are given back too when the evictions alone make
    # room, highest priority first; the first one that is needed stops it, so a lower
    # priority is never kept while a higher one goes.
    # (With nothing taken back, ``removed[-1::-1]`` would be the evicted: none to give.)
    kept = _give_back(removed[taken_back - 1 :: -1], evict, restore, fits) if taken_back else 0
    return removed[: taken_back - kept], sorted(needed, key=_order)


def _undo_order(undo: Sequence[Running]) -> list[Running]:
    """Admissions of this cycle in the order they are taken back: lowest priority, then the
    smallest (the least work undone); but within a queue and priority always the last in
    its queue's order first (a queue admits in (created, name) order within a priority), so
    the older keeps its place whatever the sizes (design §3.3): taking back an older 300m
    before a newer 400m left the older waiting where it would fit in the newer's place.
    Nothing of them has started: ``preference_order`` cannot tell them apart."""
    newest_first = sorted(undo, key=_age, reverse=True)
    ordered = sorted(newest_first, key=_undo_rank)  # stable: latest first within
    # Each queue and priority keeps the places the sizes gave it, filled newest first.
    by_group: dict[tuple[str, int], list[Running]] = {}
    for r in newest_first:
        by_group.setdefault((r.workload.queue, r.workload.priority), []).append(r)
    if len(by_group) == len(ordered):
        return ordered
    turns = {group: iter(members) for group, members in by_group.items()}
    return [next(turns[r.workload.queue, r.workload.priority]) for r in ordered]


_age = attrgetter("workload.created", "workload.name")
_undo_rank = attrgetter("workload.priority", "gpu_eq")
"""Sort keys of ``_undo_order``, read in C: a cycle sorts tens of thousands of admissions."""


def _quota_may_allow(
    book: QuotaBook, queue: str, flavor: str, amount: int, removable: Sequence[Running]
) -> bool:
    """Would the quota allow ``amount`` more if every removable workload were gone?

    When not, no subset of them makes room either (quota only loosens as usage goes), and
    arithmetic on the book says so without a single trial placement: on a 32,000-GPU cycle
    nine in ten preemptions that fail, fail here. Only what they hold of ``flavor`` counts:
    the check reads nothing of other flavors."""
    held: dict[str, int] = {}
    for victim in removable:
        if victim.flavor == flavor:
            owner = victim.workload.queue
            held[owner] = held.get(owner, 0) + victim.amount
    for owner, total in held.items():
        book.charge(owner, flavor, -total)
    allowed = book.check(queue, flavor, amount).ok
    for owner, total in held.items():
        book.charge(owner, flavor, total)
    return allowed


def _give_back(
    removed: Sequence[Running],
    evict: Callable[[Running], None],
    restore: Callable[[Running], None],
    fits: Callable[[], bool],
) -> int:
    """Give back the longest run of ``removed``, in the order given, after which ``fits()``
    still holds (it holds now); returns its length, with that run given back.

    The same as giving back one at a time until one is needed, since room only shrinks
    with each; found by doubling then halving, as in ``_evict_until``. Most victims found
    in preference order are not needed (they hold GPUs the preemptor cannot use), and most
    admissions taken back are given back: one at a time, that asked ``fits()`` thousands
    of times a cycle."""
    given = 0

    def go_to(count: int) -> None:
        nonlocal given
        while given < count:
            restore(removed[given])
            given += 1
        while given > count:
            given -= 1
            evict(removed[given])

    low, probe, count = 0, 1, len(removed)
    high = 0
    while low < count:
        high = min(probe, count)
        go_to(high)
        if not fits():
            break
        low, probe = high, probe * 2
    else:
        return count
    # low fits, high does not: the longest run lies in [low, high).
    while high - low > 1:
        middle = (low + high) // 2
        go_to(middle)
        if fits():
            low = middle
        else:
            high = middle
    go_to(low)
    return low


def _evict_until(
    ordered: Sequence[Running],
    eligible: Callable[[Running], bool],
    evict: Callable[[Running], None],
    restore: Callable[[Running], None],
    removed: list[Running],
    fits: Callable[[], bool],
) -> bool:
    """Evict the shortest prefix of ``ordered`` (skipping what is not eligible when its turn
    comes) after which ``fits()``, appending to ``removed``; False, with all of it evicted,
    if no prefix does.

    The same set as evicting one at a time and asking after each, since room only grows
    with every eviction; but the prefix is found by doubling and then halving, so a
    preemptor among thousands of candidates asks ``fits()`` (a trial placement) a few dozen
    times, not thousands. Going back restores the latest evictions in reverse, so replaying
    a stretch decides eligibility exactly as the first time."""
    marks = [len(removed)]
    """marks[i]: len(removed) once the first i candidates were considered."""

    def go_to(position: int) -> None:
        while len(marks) - 1 > position:
            marks.pop()
            while len(removed) > marks[-1]:
                restore(removed.pop())
        for victim in ordered[len(marks) - 1 : position]:
            if eligible(victim):
                evict(victim)
                removed.append(victim)
            marks.append(len(removed))

    low, probe, count = 0, 1, len(ordered)
    while True:
        high = min(probe, count)
        go_to(high)
        if marks[high] > marks[low] and fits():
            break
        if high == count:
            return False
        low, probe = high, probe * 2
    # The shortest prefix lies in (low, high]; low does not fit, high does.
    while high - low > 1:
        middle = (low + high) // 2
        go_to(middle)
        if marks[middle] > marks[low] and fits():
            high = middle
        else:
            low = middle
    go_to(high)
    return True
