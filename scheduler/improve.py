"""After the cycle: guarantees the cycle could not honour, bought back from this cycle's borrowing.

Under the cycle's (Kueue's) rules a pending workload that fits only partly within its
queue's unused nominal quota is a borrowing workload: it may not reclaim, and it waits while
smaller borrowers of its cohort empty the lendable pool. Its unused nominal quota is the
objective's most valuable tier (``GUARANTEE`` per GPU-eq), borrowing the least valuable,
so the cycle leaves value behind. This phase tries one kind of move, best gain first:
admit such a workload by taking back admissions of this same cycle (nothing has started:
free to undo) from cohort mates that borrow, cheapest loss first. A move is kept only if
the objective (``scheduler.objective``, the same terms) strictly increases. Nothing running
is evicted here; what was taken back is offered the room left again afterwards.

Rules kept: a workload is taken back only while its queue borrows the flavor it holds, and
no queue is left below its nominal quota (it would reclaim what the move gave);
no move may leave a higher priority waiting where a lower one of its queue holds room it
would fit in. Quota and placement are checked by the cycle itself (``Cycle.try_option``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from scheduler.compiled import Compiled, Entry
from scheduler.demand import Option
from scheduler.greedy import Cycle, offer_freed_room
from scheduler.making_room import readmit, unadmit
from scheduler.objective import KEEP_WHOLE, PRIORITY, account_value
from scheduler.preemption import Running, find_victims
from scheduler.quota import QuotaBook, format_amount
from scheduler.reasons import Outcome, Reason
from scheduler.state import Allocation
from scheduler.verdicts import Verdict, admit_message

__all__ = ["MAX_ATTEMPTS", "MAX_MISSES", "improve"]

MAX_ATTEMPTS = 400
"""Moves tried per decision at most, whatever the time left: each costs a few trial
placements, so the phase stays a small part of a cycle even on the largest clusters."""

MAX_MISSES = 30
"""Moves that fail in a row before the phase stops: candidates come best gain first, and
where this many fail, the rest rarely succeed (on benchmarks/ (b), no two of its 13 kept
moves are more than 23 attempts apart). Without it a decision where nothing can be bought
back (most of them) would spend all its attempts, which a simulation feels thousands of
times over."""

Account = tuple[str, str]


class _Ledger:
    """GPU-eq admitted per (queue, flavor): the objective's terms a move changes."""

    def __init__(self, cycle: Cycle, compiled: Compiled) -> None:
        self.headroom = compiled.headroom
        self.widths = compiled.widths
        self.amounts: dict[Account, float] = {}
        for verdict in cycle.outcomes.values():
            if verdict.option is not None and verdict.outcome is not Outcome.PENDING:
                key = (verdict.entry.workload.queue, verdict.option.flavor)
                self.amounts[key] = self.amounts.get(key, 0.0) + verdict.entry.size

    def delta(self, changes: dict[Account, float]) -> float:
        """Change of the accounts' value if each admitted amount changed by ``changes``."""
        total = 0.0
        for key, change in changes.items():
            now = self.amounts.get(key, 0.0)
            room, width = self.headroom.get(key, 0.0), self.widths.get(key, 1.0)
            total += account_value(now + change, room, width) - account_value(now, room, width)
        return total

    def apply(self, changes: dict[Account, float]) -> None:
        for key, change in changes.items():
            self.amounts[key] = self.amounts.get(key, 0.0) + change


def improve(
    cycle: Cycle,
    compiled: Compiled,
    keep_going: Callable[[], bool] = lambda: True,
    attempts: int = MAX_ATTEMPTS,
) -> int:
    """Run the phase on a cycle that has run; returns the moves kept. ``keep_going`` is
    asked before every attempt (the allocator's deadline)."""
    if not keep_going():
        return 0
    ledger = _Ledger(cycle, compiled)
    taken_for: dict[str, str] = {}
    """Workload taken back → why, for its message once the room was offered again."""
    kept = misses = 0
    for _, entry, option in _candidates(cycle, ledger, compiled):
        if attempts <= 0 or misses >= MAX_MISSES or not keep_going():
            break
        if cycle.outcomes[entry.workload.name].outcome is not Outcome.PENDING:
            continue  # admitted on another option already
        attempts -= 1
        if _move(cycle, ledger, entry, option, taken_for):
            kept += 1
            misses = 0
        else:
            misses += 1
    if kept:
        offer_freed_room(cycle)
        for name, why in taken_for.items():
            verdict = cycle.outcomes[name]
            if verdict.outcome is Outcome.PENDING and why not in verdict.note:
                note = f"{verdict.note}; {why}" if verdict.note else why
                cycle.outcomes[name] = replace(verdict, note=note)
    return kept


def _candidates(
    cycle: Cycle, ledger: _Ledger, compiled: Compiled
) -> list[tuple[float, Entry, Option]]:
    """Waiting workloads with an option on which part of them would be guaranteed, by what
    admitting them there would earn, best first."""
    found: list[tuple[float, tuple[int, int, str], int, Entry, Option]] = []
    for entry in compiled.pending:
        w = entry.workload
        if cycle.outcomes[w.name].outcome is not Outcome.PENDING:
            continue
        for rank, option in enumerate(entry.options):
            key = (w.queue, option.flavor)
            if ledger.headroom.get(key, 0.0) - ledger.amounts.get(key, 0.0) <= 0.0:
                continue
            gain = ledger.delta({key: entry.size}) + PRIORITY * entry.tier * entry.size
            found.append((-gain, entry.order, rank, entry, option))
    found.sort(key=lambda f: (f[0], f[1], f[2]))
    return [(-gain, entry, option) for gain, _, _, entry, option in found]


def _move(
    cycle: Cycle, ledger: _Ledger, entry: Entry, option: Option, taken_for: dict[str, str]
) -> bool:
    """Admit ``entry`` on ``option`` by taking back cohort mates' borrowing of this cycle, if
    that raises the objective; leaves everything as it was otherwise."""
    w = entry.workload
    state, book = cycle.state, cycle.book
    pools = state.eligible_pools(w, option)
    if state.never_places(option, pools, w.cpu_milli, w.memory_mib):
        return False
    undo = _takeable(cycle, ledger, w.queue, option)
    if not undo:
        return False
    amount = option.quota_per_pod * w.pods
    free_before = state.entirely_free_gpus()
    taken = _take_back(cycle, entry, option, pools, undo)
    if taken is None:
        return False
    undone = [(r, cycle.outcomes[r.workload.name]) for r in taken]
    changes = _changes(cycle, entry, option, taken)
    gain = ledger.delta(changes) + PRIORITY * (
        entry.tier * entry.size - sum(_entry(cycle, r).tier * r.gpu_eq for r in taken)
    )
    if gain > 0.0:
        for r in taken:
            unadmit(cycle, r, w)
        result = cycle.try_option(entry, option)
        if isinstance(result, Allocation):
            gain += KEEP_WHOLE * (state.entirely_free_gpus() - free_before)
            if gain > 0.0:
                placed = cycle.remember(entry, option, result)
                assert placed is not None  # a cycle that preempts remembers its admissions
                if not _overtakes(cycle, entry, placed, taken):
                    _commit(cycle, ledger, entry, option, result, taken, changes, taken_for)
                    return True
                cycle.admissions.remove(placed)
            state.release(result)
            book.charge(w.queue, option.flavor, -amount)
        for r, verdict in undone:
            readmit(cycle, r, verdict)
        return False
    _restore(cycle, taken)
    return False


def _take_back(
    cycle: Cycle, entry: Entry, option: Option, pools: tuple[int, ...], undo: list[Running]
) -> list[Running] | None:
    """The fewest of ``undo`` to take back so that ``entry`` fits on ``option``, left taken
    back from the state and the book; None, with nothing changed, if none do.

    By Kueue's rule first (taken while its queue borrows); its last take may cut into the
    queue's nominal quota, which would undo the move when the room is offered again (the
    queue, within nominal, reclaims it, evicting on the way). Then again, taking each only
    while its queue keeps its nominal quota without it: a larger set, often across more
    queues, but one that stays."""
    state, book = cycle.state, cycle.book
    fits = cycle.fit_check(entry, option, pools)
    quota = (option.flavor, option.quota_per_pod * entry.workload.pods)
    queue = entry.workload.queue
    room = find_victims(state, book, queue, [], undo, fits, quota)
    if room is None:
        return None
    taken = room[1]
    if not _below_nominal(book, taken):
        return taken
    _restore(cycle, taken)
    room = find_victims(state, book, queue, [], undo, fits, quota, keep_nominal=True)
    return None if room is None else room[1]


def _restore(cycle: Cycle, held: list[Running]) -> None:
    """Charge ``held`` to the state and the book again (taken back for a trial only)."""
    for r in held:
        cycle.state.take(r.allocation)
        cycle.book.charge(r.workload.queue, r.flavor, r.amount)


def _below_nominal(book: QuotaBook, taken: list[Running]) -> bool:
    """Does a queue ``taken`` came from now hold less than its nominal quota?"""
    return any(
        book.usage(q, f) < book.nominal(q, f)
        for q, f in {(r.workload.queue, r.flavor) for r in taken}
    )


def _takeable(cycle: Cycle, ledger: _Ledger, queue: str, option: Option) -> list[Running]:
    """Admissions of this cycle a move for ``queue`` may take back, cheapest loss per GPU-eq
    first (within a queue: lowest priority, then the last in the queue's order first): of
    cohort mates that borrow what they hold, admitted without evicting anyone."""
    book = cycle.book
    found: list[tuple[float, int, Running]] = []
    for mate in book.cohort_mates(queue):
        for r in cycle.admissions.competing(mate, option.flavor, option.models):
            if (
                not book.borrowing(mate, r.flavor)
                or cycle.outcomes[r.workload.name].outcome is not Outcome.ADMIT
            ):
                continue
            entry = _entry(cycle, r)
            loss = -ledger.delta({(mate, r.flavor): -r.gpu_eq}) + PRIORITY * entry.tier * r.gpu_eq
            found.append((loss / max(r.gpu_eq, 1e-9), r.workload.priority, r))
    # A queue admits in (created, name) order within a priority: latest first is the
    # reverse, and the sort by loss and priority keeps it (sorts are stable).
    found.sort(key=lambda f: (f[2].workload.created, f[2].workload.name), reverse=True)
    found.sort(key=lambda f: f[:2])
    return [f[2] for f in found]


def _entry(cycle: Cycle, r: Running) -> Entry:
    return cycle.outcomes[r.workload.name].entry


def _changes(
    cycle: Cycle, entry: Entry, option: Option, taken: list[Running]
) -> dict[Account, float]:
    changes = {(entry.workload.queue, option.flavor): entry.size}
    for r in taken:
        key = (r.workload.queue, r.flavor)
        changes[key] = changes.get(key, 0.0) - r.gpu_eq
    return changes


def _overtakes(cycle: Cycle, entry: Entry, placed: Running, taken: list[Running]) -> bool:
    """Would the move leave a higher priority waiting where a lower one of its queue holds
    room it would fit in: the admitted workload (``placed``) over its queue's waiting higher
    priorities, or one taken back over what its queue keeps of this cycle's admissions?"""
    w = entry.workload
    for h in cycle.waiting.get(w.queue, ()):
        if h.workload.priority > w.priority and _fits_in_place(cycle, h, placed):
            return True
    for r in taken:
        back = _entry(cycle, r)
        places = {
            id(place): place
            for o in back.options
            for place in cycle.admissions.competing(r.workload.queue, o.flavor, o.models)
        }
        for place in places.values():
            if place.workload.priority < r.workload.priority and _fits_in_place(cycle, back, place):
                return True
    return False


def _fits_in_place(cycle: Cycle, entry: Entry, place: Running) -> bool:
    """Would waiting ``entry`` fit, on the flavor ``place`` holds, if ``place`` were not
    admitted?"""
    if cycle.outcomes[entry.workload.name].outcome is not Outcome.PENDING:
        return False
    options = [o for o in entry.options if o.flavor == place.flavor]
    if not options:
        return False
    state, book = cycle.state, cycle.book
    state.release(place.allocation)
    book.charge(place.workload.queue, place.flavor, -place.amount)
    try:
        for option in options:
            pools = state.eligible_pools(entry.workload, option)
            if pools and cycle.fit_check(entry, option, pools)():
                return True
        return False
    finally:
        _restore(cycle, [place])


def _commit(
    cycle: Cycle,
    ledger: _Ledger,
    entry: Entry,
    option: Option,
    allocation: Allocation,
    taken: list[Running],
    changes: dict[Account, float],
    taken_for: dict[str, str],
) -> None:
    """Record the move: the admission with its reasons, and why each was taken back."""
    w = entry.workload
    book = cycle.book
    amount = option.quota_per_pod * w.pods
    cycle.note_freed(taken, (w.queue, allocation, amount))
    ledger.apply(changes)
    key = (w.queue, option.flavor)
    guaranteed = min(
        entry.size, max(0.0, ledger.headroom.get(key, 0.0) - (ledger.amounts[key] - entry.size))
    )
    borrowing = book.borrowing(w.queue, option.flavor)
    names = ", ".join(r.workload.name for r in taken)
    lent = sum(r.gpu_eq for r in taken)
    cycle.record(
        Verdict(
            entry,
            Outcome.ADMIT,
            Reason.ADMITTED_BORROWING if borrowing else Reason.ADMITTED,
            f"{admit_message(book, cycle.state, entry, option, allocation, borrowing)}; "
            f"{guaranteed:g} of its {entry.size:g} GPU-eq are within its queue's unused "
            f"nominal quota: took back {lent:g} GPU-eq lent in this decision to borrowing "
            f"cohort mates ({names})",
            option,
            allocation,
        )
    )
    returned: dict[tuple[str, str], int] = {}
    for r in taken:
        key = (r.workload.queue, r.flavor)
        returned[key] = returned.get(key, 0) + r.amount
    for r in taken:
        queue, flavor = r.workload.queue, r.flavor
        used, nominal = book.usage(queue, flavor), book.nominal(queue, flavor)
        borrowed = used + returned[(queue, flavor)] - nominal
        why = (
            f"admitted earlier in this decision, taken back for {w.name}: queue {queue} "
            f"borrowed {format_amount(flavor, borrowed)} {flavor} of its cohort, and queue "
            f"{w.queue} gets {guaranteed:g} GPU-eq of its unused nominal quota with {w.name} "
            f"(queue {queue} now at {format_amount(flavor, used)}/"
            f"{format_amount(flavor, nominal)} {flavor})"
        )
        taken_for[r.workload.name] = why
        previous = cycle.outcomes[r.workload.name]
        cycle.outcomes[r.workload.name] = Verdict(
            previous.entry, Outcome.PENDING, Reason.COHORT_EXHAUSTED, "", note=why
        )
