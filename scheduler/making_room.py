"""Making room inside a cycle for a workload none of whose options fit: take-backs and evictions.

Nothing the cycle admitted has started, so it may take that back: a queue within its
nominal quota takes back what cohort mates borrowed earlier in the cycle, and a higher
priority what a lower one of its queue got, once room freed since may fit it there. Running
workloads are evicted as the queue's preemption policy allows (``scheduler.preemption``
chooses the victims). This is the cycle's step 4, apart from the cycle (``scheduler.greedy``)
because it keeps its own books on the cycle's state: who was evicted for whom, redone when
an admission is taken back; the room made, offered first to what outranks its maker; the
attempts that failed, since a cycle asks thousands of times and finds room rarely. The
improvement phase (``scheduler.improve``) takes back with ``unadmit`` and ``readmit`` too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from scheduler.compiled import Entry
from scheduler.demand import Option
from scheduler.model import PreemptionPolicy, Workload
from scheduler.preemption import (
    Running,
    candidates_for,
    find_victims,
    idle_borrowed_first,
    preference_order,
)
from scheduler.reasons import Outcome, Reason
from scheduler.state import Allocation
from scheduler.verdicts import Verdict, admit_message, eviction_reason, placed

if TYPE_CHECKING:
    from scheduler.greedy import Cycle

__all__ = ["Refused", "make_room", "readmit", "unadmit"]


def make_room(cycle: Cycle, entry: Entry, option: Option) -> Verdict | None:
    """Admit by taking capacity back: first from cohort mates that borrowed it earlier in
    this cycle (nothing has started: free to undo), then by evicting running workloads
    the queue's preemption policy allows. None if neither makes it fit."""
    w = entry.workload
    amount = option.quota_per_pod * w.pods
    reclaim = cycle.book.within_nominal(w.queue, option.flavor, amount)
    policy = cycle.queues[w.queue].preemption
    may_evict = policy.within_queue != "Never" or (
        reclaim and policy.reclaim_within_cohort != "Never"
    )
    # Lower priorities of its own queue admitted earlier in this cycle (nothing has
    # started: free to undo) whenever w did not fit then but may now.
    take_back = cycle.lowest_admitted.get(
        w.queue, w.priority
    ) < w.priority and cycle.freed.since_waiting(w, option)
    if not reclaim and not may_evict and not take_back:
        return None
    pools = cycle.state.eligible_pools(w, option)
    # A demand this one contains (same shape and places, no larger in any dimension)
    # already found no room at this priority in this pass: neither will this one. Asked
    # first: it answers most calls, and more cheaply than never_places.
    memo = (
        w.queue, option.flavor, w.priority, option.kind, pools,
        tuple(sorted(w.node_selector.items())), w.node_affinity,
    )  # fmt: skip
    size = (option.per_pod, w.pods, w.cpu_milli, w.memory_mib)
    failed = cycle.failed_preemption.get(memo)
    if failed is not None and failed.covers(size):
        return None
    if cycle.state.never_places(option, pools, w.cpu_milli, w.memory_mib):
        return None
    if failed is None:
        failed = cycle.failed_preemption[memo] = Refused()
    undo: list[Running] = []
    if take_back:
        undo = [
            r
            for r in cycle.admissions.competing(w.queue, option.flavor, option.models)
            if r.workload.priority < w.priority
        ]
    if reclaim:
        for q in cycle.book.cohort_mates(w.queue):
            if cycle.book.borrowing(q, option.flavor):
                undo += cycle.admissions.competing(q, option.flavor, option.models)
    outcomes = cycle.outcomes
    undo = [
        r
        for r in undo
        if not outcomes[r.workload.name].victims
        or _may_inherit(cycle, w, option, reclaim, policy, r)
    ]
    evictable = _evictable(cycle, w, option, reclaim, policy) if may_evict else []
    if not undo and not evictable:
        failed.add(size)
        return None
    room = find_victims(
        cycle.state,
        cycle.book,
        w.queue,
        undo,
        evictable,
        cycle.fit_check(entry, option, pools),
        (option.flavor, amount),
    )
    if room is None:
        failed.add(size)
        return None
    taken_back, victims = room
    inherited: list[Running] = []
    undone: list[Verdict] = []
    for r in taken_back:
        undone.append(cycle.outcomes[r.workload.name])
        inherited += unadmit(cycle, r, w)
    for victim in victims:  # find_victims evicted them from the state and the book
        cycle.running.remove(victim)
        cycle.evicted.add(id(victim))
    # Room made for w goes first to what outranks it in its own queue and waits.
    outranked_by = _offer_to_higher_priority(cycle, w)
    result = cycle.try_option(entry, option)
    if not isinstance(result, Allocation):
        why, explain = result[0], result[1]()
        if not outranked_by:
            # Nobody used the room: the victims keep running, and what was taken back
            # is admitted again as it was.
            for victim in victims:
                cycle.state.take(victim.allocation)
                cycle.book.charge(victim.workload.queue, victim.flavor, victim.amount)
                cycle.running.add(victim)
                cycle.evicted.discard(id(victim))
            cycle.given_back += 1
            for r, verdict in zip(taken_back, undone, strict=True):
                readmit(cycle, r, verdict)
            return Verdict(entry, Outcome.PENDING, why, explain)
        # The room went to workloads that outrank w: what was evicted, now or for an
        # admission taken back, is evicted for the first of them.
        cycle.note_freed(taken_back + victims)
        _credit_victims(cycle, outranked_by[0], victims, inherited)
        return Verdict(
            entry,
            Outcome.PENDING,
            why,
            explain,
            note=f"the room it made went to higher priority {', '.join(outranked_by)} of its queue",
        )
    allocation = result
    cycle.note_freed(taken_back + victims, (w.queue, allocation, amount))
    cycle.remember(entry, option, allocation)
    # What was evicted for an admission taken back now makes room for w.
    _reassign(cycle, inherited, w, option, amount)
    fresh, victims = victims, victims + inherited
    note = ""
    if taken_back:
        names = ", ".join(r.workload.name for r in taken_back)
        note = f"; took back quota lent in this decision from {names}"
    if not victims:
        return Verdict(
            entry,
            Outcome.ADMIT,
            Reason.ADMITTED,
            admit_message(cycle.book, cycle.state, entry, option, allocation, borrowing=False)
            + note,
            option,
            allocation,
        )
    outcome_reason = Reason.ADMITTED_BY_PRIORITY
    for victim in fresh:
        why, text = eviction_reason(cycle.book, victim, w, option, amount)
        if why is Reason.PREEMPTED_RECLAIM:
            outcome_reason = Reason.ADMITTED_BY_RECLAIM
        _record_eviction(cycle, victim, w.name, why, text)
    names = ", ".join(v.workload.name for v in victims)
    freed = sum(v.gpu_eq for v in victims)
    return Verdict(
        entry,
        Outcome.PREEMPT,
        outcome_reason,
        f"admitted on {w.pods}× {placed(cycle.state, option, allocation)} after evicting "
        f"{len(victims)} workload(s) ({freed:g} GPU-eq): {names}{note}",
        option,
        allocation,
        victims,
    )


def _evictable(
    cycle: Cycle, w: Workload, option: Option, reclaim: bool, policy: PreemptionPolicy
) -> list[Running]:
    """Running workloads w may evict for ``option`` now, in the order they go. The
    policy's choice is kept per kind of preemptor (a cycle asks thousands of times and
    evicts rarely): evictions since only remove from it, keeping the order; evicted
    workloads given back make it be chosen again. Whether a cohort mate still borrows
    is judged on every call."""
    own = (w.created, w.name) if policy.within_queue == "LowerOrNewerEqualPriority" else None
    key = (w.queue, option.flavor, option.models, reclaim, w.priority, own)
    cached = cycle.candidates.get(key)
    evicted = cycle.evicted
    if cached is None or cached[0] != cycle.given_back:
        queues = (w.queue, *cycle.book.cohort_mates(w.queue)) if reclaim else (w.queue,)
        nearby = [
            victim
            for q in queues
            for victim in cycle.running.competing(q, option.flavor, option.models)
        ]
        found = candidates_for(w, option.flavor, option.models, reclaim, policy, nearby)
        ordered = preference_order(found, w.queue)
        cached = cycle.candidates[key] = (cycle.given_back, len(evicted), ordered)
    elif cached[1] != len(evicted):
        kept = [v for v in cached[2] if id(v) not in evicted]
        cached = cycle.candidates[key] = (cycle.given_back, len(evicted), kept)
    book = cycle.book
    evictable = [
        v
        for v in cached[2]
        if v.workload.queue == w.queue or book.borrowing(v.workload.queue, v.flavor)
    ]
    return idle_borrowed_first(evictable, book) if policy.idle_borrowed_first else evictable


def _may_inherit(
    cycle: Cycle, w: Workload, option: Option, reclaim: bool, policy: PreemptionPolicy, r: Running
) -> bool:
    """May w take back admission r, which evicted? What r evicted stays evicted, now for
    w, so w's own policy must allow each of those evictions, judged as if they still ran:
    a queue that may not reclaim must not end up with a cohort mate's workload evicted
    for it."""
    victims = cycle.outcomes[r.workload.name].victims
    # An admission of w's own queue reclaimed with the queue's right: w, which outranks
    # it there, takes its room as it would take room the reclaim freed
    # (``_offer_to_higher_priority``).
    own = r.workload.queue == w.queue
    allowed = candidates_for(w, option.flavor, option.models, reclaim or own, policy, victims)
    book = cycle.book
    return len(allowed) == len(victims) and all(
        v.workload.queue == w.queue
        or book.usage(v.workload.queue, v.flavor) + v.amount
        > book.nominal(v.workload.queue, v.flavor)
        for v in victims
    )


def _offer_to_higher_priority(cycle: Cycle, w: Workload) -> list[str]:
    """Admit waiting workloads of w's queue with a higher priority that fit now.

    Not one whose borrowing a cohort mate's guarantee took back in this cycle, to borrow
    again: its room would be reclaimed anew, and the mate's higher priorities would take
    that room in turn — two queues handing the same GPUs back and forth until the passes
    run out, leaving a workload within its nominal quota waiting."""
    admitted = []
    for entry in cycle.waiting.get(w.queue, ()):
        h = entry.workload
        verdict = cycle.outcomes.get(h.name)
        if h.priority <= w.priority or verdict is None or verdict.outcome is not Outcome.PENDING:
            continue
        for option in entry.options:
            if h.name in cycle.reclaimed and not cycle.book.within_nominal(
                h.queue, option.flavor, option.quota_per_pod * h.pods
            ):
                continue
            result = cycle.try_option(entry, option)
            if isinstance(result, Allocation):
                cycle.remember(entry, option, result)
                borrowing = cycle.book.borrowing(h.queue, option.flavor)
                cycle.record(
                    Verdict(
                        entry,
                        Outcome.ADMIT,
                        Reason.ADMITTED_BORROWING if borrowing else Reason.ADMITTED,
                        admit_message(cycle.book, cycle.state, entry, option, result, borrowing),
                        option,
                        result,
                    )
                )
                admitted.append(h.name)
                break
    return admitted


def _credit_victims(
    cycle: Cycle, name: str, victims: list[Running], inherited: list[Running]
) -> None:
    """Record ``victims`` (evicted now) and ``inherited`` (evicted earlier for an admission
    since taken back) as evicted for ``name``, admitted in this cycle with the room."""
    verdict = cycle.outcomes[name]
    assert verdict.option is not None and verdict.allocation is not None
    h = verdict.entry.workload
    amount = verdict.option.quota_per_pod * h.pods
    _reassign(cycle, inherited, h, verdict.option, amount)
    for victim in victims:
        why, text = eviction_reason(cycle.book, victim, h, verdict.option, amount)
        _record_eviction(cycle, victim, name, why, text)
    everyone = victims + inherited
    if everyone:
        names = ", ".join(v.workload.name for v in everyone)
        cycle.outcomes[name] = Verdict(
            verdict.entry,
            Outcome.PREEMPT,
            Reason.ADMITTED_BY_PRIORITY,
            f"{verdict.message}; room made by evicting {len(everyone)} workload(s) "
            f"({sum(v.gpu_eq for v in everyone):g} GPU-eq): {names}",
            verdict.option,
            verdict.allocation,
            everyone,
        )


def _reassign(
    cycle: Cycle, inherited: list[Running], w: Workload, option: Option, amount: int
) -> None:
    """Evictions made for an admission since taken back are now for ``w``."""
    for victim in inherited:
        why, text = eviction_reason(cycle.book, victim, w, option, amount)
        cycle.evictions[cycle.eviction_at[id(victim)]] = (victim, w.name, why, text)


def _record_eviction(cycle: Cycle, victim: Running, name: str, why: Reason, text: str) -> None:
    cycle.eviction_at[id(victim)] = len(cycle.evictions)
    cycle.evictions.append((victim, name, why, text))


def readmit(cycle: Cycle, r: Running, verdict: Verdict) -> None:
    """Give back an admission of this cycle that ``unadmit`` took, as it was."""
    cycle.state.take(r.allocation)
    cycle.book.charge(r.workload.queue, r.flavor, r.amount)
    cycle.admissions.add(r)
    cycle.outcomes[r.workload.name] = verdict


def unadmit(cycle: Cycle, r: Running, beneficiary: Workload) -> list[Running]:
    """Undo an admission of this cycle that ``find_victims`` took back from the state
    and the book; the workload waits again (and is retried). Returns what was evicted
    to admit it: those stay evicted, for the beneficiary."""
    cycle.admissions.remove(r)
    previous = cycle.outcomes[r.workload.name]
    cycle.freed.forget(previous.entry)
    cycle.capacity_changed = True
    if r.workload.queue == beneficiary.queue:
        reason = Reason.NO_CAPACITY
        message = (
            f"its place went to {beneficiary.name} (priority {beneficiary.priority} > "
            f"{r.workload.priority}) of queue {beneficiary.queue}"
        )
    else:
        cycle.reclaimed.add(r.workload.name)
        reason = Reason.COHORT_EXHAUSTED
        message = (
            f"borrowed {r.flavor} taken back by {beneficiary.name}: queue "
            f"{beneficiary.queue} is within its nominal quota"
        )
    cycle.outcomes[r.workload.name] = Verdict(
        previous.entry, Outcome.PENDING, reason, "", note=message
    )
    return list(previous.victims)


Size = tuple[int, int, int, int]
"""A demand's size for the preemption memo: (per pod, pods, CPU milli, memory MiB)."""


class Refused:
    """Sizes of one demand kind that found no room to preempt in this pass: any demand at
    least as large in every dimension finds none either."""

    __slots__ = ("minimal", "seen")

    def __init__(self) -> None:
        self.minimal: list[Size] = []
        """Only the smallest failures rule out larger demands: the list stays short."""
        self.seen: set[Size] = set()
        """Every size known to fail: most demands repeat one exactly."""

    def covers(self, size: Size) -> bool:
        if size in self.seen:
            return True
        if any(_within(f, size) for f in self.minimal):
            self.seen.add(size)
            return True
        return False

    def add(self, size: Size) -> None:
        self.minimal = [f for f in self.minimal if not _within(size, f)]
        self.minimal.append(size)
        self.seen.add(size)


def _within(small: Size, large: Size) -> bool:
    """Is ``small`` no larger than ``large`` in every dimension? (Spelled out: the memo
    asks it thousands of times per cycle.)"""
    return (
        small[0] <= large[0]
        and small[1] <= large[1]
        and small[2] <= large[2]
        and small[3] <= large[3]
    )
