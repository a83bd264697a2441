"""Settling a cycle's verdicts once its passes and the improvement phase are done.

Verdicts are written as the cycle goes, and what comes later overtakes them: a take-back
or the room a placement needs can leave an older workload waiting while a newer one alike
is admitted, and admissions, take-backs and evictions after a refusal change the numbers
its reason gave. Both are set right once, on the state the decision ends with, before it is
scored (``greedy.run_cycle``): alike workloads trade places, older first, then every reason
for waiting is written again. Apart from the cycle (``scheduler.greedy``) because they run
once, after it, and nothing in its passes depends on them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from scheduler.compiled import Alike, Entry, InAnyOrder
from scheduler.reasons import Outcome, Reason
from scheduler.state import Allocation
from scheduler.verdicts import Verdict, for_another, most_telling

if TYPE_CHECKING:
    from scheduler.greedy import Cycle

__all__ = ["older_alike_first", "settle_reasons"]


def older_alike_first(cycle: Cycle) -> None:
    """Of alike workloads (``Entry.alike``, options in any order), admit the older ones.

    A take-back or the room a placement needs can leave an older workload waiting while
    a newer one alike holds its place: on one node's GPUs a 7-GPU gang needs, the
    improvement phase takes back the seven there, and the eighth, newest, stays on
    another node. Nothing admitted in this cycle has started and alike workloads fit
    each other's places exactly, so they trade: the older takes the newer's admission
    (design §3.3: priority, then age) and nothing else changes: not capacity, quota,
    nor the objective. An admission that evicted goes with its victims, now evicted for
    the older: alike, it has the same rights to evict, and more by age. With the ILP's
    hints a newer one whose throughput puts its options in another order was admitted
    first, and the older, alike but for that order, waited."""
    key_of = InAnyOrder()
    waiting: dict[Alike, list[Verdict]] = {}
    for verdict in cycle.outcomes.values():
        if verdict.outcome is Outcome.PENDING and verdict.entry.options:
            waiting.setdefault(key_of(verdict.entry), []).append(verdict)
    if not waiting:
        return
    admitted: dict[Alike, list[Verdict]] = {}
    for verdict in cycle.outcomes.values():
        if verdict.outcome is not Outcome.PENDING:
            key = key_of(verdict.entry)
            if key in waiting:
                admitted.setdefault(key, []).append(verdict)
    for key, newer in admitted.items():
        older = waiting[key]
        older.sort(key=lambda v: v.entry.order)
        newer.sort(key=lambda v: v.entry.order, reverse=True)
        for old, new in zip(older, newer, strict=False):
            if old.entry.order > new.entry.order:
                break
            o, n = old.entry.workload.name, new.entry.workload.name
            cycle.outcomes[o] = Verdict(
                old.entry,
                new.outcome,
                new.reason,
                new.message,
                new.option,
                new.allocation,
                new.victims,
                note=f"in the place of {n}, alike and newer in its queue",
            )
            for victim in new.victims:
                at = cycle.eviction_at[id(victim)]
                _, _, why, text = cycle.evictions[at]
                cycle.evictions[at] = (victim, o, why, for_another(why, text, n, o))
            cycle.outcomes[n] = Verdict(
                new.entry,
                Outcome.PENDING,
                old.reason,
                old.message,
                note=f"its place went to {o}, alike and older in its queue",
            )


def settle_reasons(cycle: Cycle) -> None:
    """Write every waiting workload's reason again on the state the decision ends with.

    A reason is written when the cycle leaves a workload waiting. Admissions later in
    the cycle take room and quota, and take-backs, evictions and the improvement phase
    give some back, so it could read "queue m at 8/2" for a queue that ends at 3/2, or
    "room for 1 such pod" where none is left (on benchmarks/ (b), over a tenth of the
    reasons were behind). Each option is tried again, as the cycle tried it; what
    happened on the way stays in the verdict's note."""
    # Nothing changes the state meanwhile, so workloads alike (``Entry.alike``) fail
    # alike: on benchmarks/ (d) the 695 waiting workloads come in 21 such shapes
    # (settling them: 45 ms, now 6 ms).
    told: dict[Alike, tuple[Reason, str] | None] = {}
    for name, verdict in cycle.outcomes.items():
        entry = verdict.entry
        if verdict.outcome is not Outcome.PENDING or not entry.options:
            continue
        shape = entry.alike
        if shape not in told:
            told[shape] = _refusal_now(cycle, entry)
        now = told[shape]
        if now is not None and (now[1] != verdict.message or now[0] is not verdict.reason):
            cycle.outcomes[name] = Verdict(
                entry, Outcome.PENDING, now[0], now[1], note=verdict.note
            )


def _refusal_now(cycle: Cycle, entry: Entry) -> tuple[Reason, str] | None:
    """Why ``entry`` is refused on the current state, trying its options as the cycle
    did (within-nominal ones first; for ties the cycle broke by placement, which this
    must not pay for again). None if it fits, which the offers of freed room rule out
    unless they stopped at ``greedy.MAX_OFFERS``: then its reason stays as written."""
    w = entry.workload
    book = cycle.book
    options = entry.options
    if len(options) > 1:
        options = tuple(
            sorted(
                options,
                key=lambda o: not book.within_nominal(w.queue, o.flavor, o.quota_per_pod * w.pods),
            )
        )
    failures: list[tuple[Reason, Callable[[], str], str]] = []
    for option in options:
        result = cycle.try_option(entry, option)
        if isinstance(result, Allocation):
            cycle.state.release(result)
            book.charge(w.queue, option.flavor, -option.quota_per_pod * w.pods)
            return None
        failures.append((*result, option.flavor))
    return most_telling(failures)
