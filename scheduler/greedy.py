"""One scheduling cycle, greedy: the fallback answer, the ILP's warm start and its realizer.

The recipe (Kueue's cycle, with fair sharing):
  1. compile the snapshot (``scheduler.compiled``): state, quota book, running charged;
  2. queue pending workloads per queue by priority, then age;
  3. repeatedly take the head of the queue that is first in fair-share order — heads that
     fit within their queue's nominal quota first, then the lowest weighted share after
     admission — and admit it on its first option that passes quota and placement;
  4. a head that does not fit may preempt (reclaim within the cohort, or lower priority
     in its own queue) when its queue's policy allows; otherwise it waits with reasons;
  5. rank what is left and explain each (``scheduler.decision``).
Skipping a head that does not fit (rather than blocking its queue) is what makes the
cycle work-conserving; taking queue heads in priority order is what keeps a lower
priority from overtaking a higher one that fits.

With ``hints`` (from the ILP) the workloads the ILP chose go first, on their hinted options,
together with anything of their queue that outranks them; then the rest, in the same
fair-share order.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from scheduler.compiled import Alike, Compiled, Entry
from scheduler.demand import Kind, Option
from scheduler.freed import FreedRoom, Watch
from scheduler.holdings import Holdings
from scheduler.model import PreemptionPolicy, Workload
from scheduler.objective import Admitted, evaluate
from scheduler.preemption import (
    Running,
    candidates_for,
    find_victims,
    idle_borrowed_first,
    preference_order,
)
from scheduler.reasons import Outcome, Reason
from scheduler.state import Allocation
from scheduler.verdicts import (
    Failure,
    Verdict,
    admit_message,
    capacity_message,
    describe,
    describe_demand,
    eviction_reason,
    for_another,
    most_telling,
    never_reclaims,
    placed,
)

__all__ = ["Cycle", "CycleResult", "offer_freed_room", "run_cycle"]

_Refusals = dict[tuple[Alike, tuple[bool, ...]], tuple[int, Verdict, Watch]]
"""A pass's refusals by shape and what of its own an attempt read: ``frees`` then, the
verdict and what it watches (``Cycle._admit_unless_refused_alike``)."""


@dataclass(slots=True)
class CycleResult:
    outcomes: dict[str, Verdict]
    evictions: list[tuple[Running, str, Reason, str]]
    objective: float = 0.0


class Cycle:
    """Admission against one compiled snapshot; the incremental path reuses it per arrival.

    Its steps (``try_option``, ``remember``, ``record``, ``unadmit``/``readmit``,
    ``fit_check``, ``note_freed``) are public because the improvement phase
    (``scheduler.improve``) builds its moves from them, so a move is checked and recorded
    exactly as the cycle's own admissions are; it words them as the cycle does
    (``scheduler.verdicts``).
    """

    def __init__(self, compiled: Compiled, preempt: bool = True) -> None:
        self.preempt = preempt
        self.state = compiled.state
        self.book = compiled.book
        self.queues = {q.name: q for q in compiled.snapshot.queues}
        self.outcomes: dict[str, Verdict] = {}
        self.evictions: list[tuple[Running, str, Reason, str]] = []
        self.eviction_at: dict[int, int] = {}
        """Each victim's position in ``evictions``, by its id (``_reassign`` rewrites it)."""
        self.running = Holdings()
        for victim in compiled.running:
            self.running.add(victim)
        self.evicted: set[int] = set()
        """Running workloads this cycle evicted, by id (``compiled.running`` keeps them)."""
        self.given_back = 0
        """How often evicted workloads were given back (room made that nobody used)."""
        self.candidates: dict[tuple[object, ...], tuple[int, int, list[Running]]] = {}
        """Per kind of preemptor: the running workloads its policy may evict, in order, with
        ``given_back`` and the size of ``evicted`` when it was made (see ``_evictable``)."""
        self.failed_preemption: dict[tuple[object, ...], _Refused] = {}
        """Per (queue, flavor, priority, shape, places): sizes that found no room to preempt
        in this pass (cleared when a pass offers freed room again)."""
        self.waiting: dict[str, list[Entry]] = {}
        """Workloads this cycle left waiting, per queue, in the order they were decided."""
        self.admissions = Holdings()
        """Admissions of this cycle: a queue within its nominal quota may take back what a
        borrower got earlier in the same cycle (nothing has started yet)."""
        self.lowest_admitted: dict[str, int] = {}
        """Lowest priority admitted in this cycle per queue (a bound: never raised)."""
        self.freed = FreedRoom(compiled.book, compiled.state.gpu_model, compiled.state.node_gpus)
        """Room freed in this cycle, and what each workload left waiting watches."""
        self.reclaimed: set[str] = set()
        """Workloads of this cycle whose borrowed room a cohort mate's guarantee took back
        (``_offer_to_higher_priority`` does not hand them room to borrow again)."""
        self.capacity_changed = False
        """Set when a preemption or a take-back may have made room for work already left
        waiting: the cycle then offers it the capacity again (work conservation)."""

    # -- step 3: fair-share order over queue heads
    def _key(self, entry: Entry) -> tuple[int, float]:
        """Fair-share rank of a queue head. Its guarantee is measured on its first option that
        fits within the queue's nominal quota (rank 0), else on the first option the queue has
        any quota for, else on its first option (rank 1, by share after admission). A
        nominated head (``Workload.nominated``) goes before all (rank -1)."""
        w = entry.workload
        if not entry.options:
            return (0, 0.0)
        if w.nominated:
            return (-1, 0.0)
        for option in entry.options:
            amount = option.quota_per_pod * w.pods
            if self.book.within_nominal(w.queue, option.flavor, amount):
                return (0, self.book.share(w.queue, option.flavor, amount))
        home = next(
            (o for o in entry.options if self.book.nominal(w.queue, o.flavor) > 0),
            entry.options[0],
        )
        amount = home.quota_per_pod * w.pods
        return (1, self.book.share(w.queue, home.flavor, amount))

    def run(self, entries: Sequence[Entry], hints: dict[str, int] | None) -> None:
        """One pass over ``entries``. With ILP hints, hinted workloads go first among those of
        the same queue and priority — never ahead of a higher priority."""
        chosen = hints or {}

        def order(e: Entry) -> tuple[str, int, bool, int, str]:
            w = e.workload
            return (w.queue, -w.priority, w.name not in chosen, w.created, w.name)

        per_queue: dict[str, deque[Entry]] = {}
        for entry in sorted(entries, key=order):
            per_queue.setdefault(entry.workload.queue, deque()).append(entry)
        heap = [(*self._key(d[0]), q) for q, d in per_queue.items()]
        heapq.heapify(heap)
        refused: _Refusals = {}
        while heap:
            _, _, queue = heapq.heappop(heap)
            entries_left = per_queue[queue]
            entry = entries_left.popleft()
            if hints is None:
                self._admit_unless_refused_alike(entry, refused)
            else:
                self.admit_or_explain(entry, hints.get(entry.workload.name))
            if entries_left:
                heapq.heappush(heap, (*self._key(entries_left[0]), queue))

    def _admit_unless_refused_alike(self, entry: Entry, refused: _Refusals) -> Verdict:
        """``admit_or_explain``, unless a workload alike (``Entry.alike``) was refused
        earlier in this pass and nothing was freed since: admissions since only took room
        and quota, and the preemptions it tried are remembered as failed
        (``failed_preemption``), so this one would be refused alike. On benchmarks/ (c)
        most of the 20,000 workloads are refused, most in a shape refused before. Its
        reason's numbers are written again at the end (``settle_reasons``)."""
        w = entry.workload
        # What of its own an attempt reads: whether the room it watches was freed since it
        # was left waiting, where a lower priority of its queue was admitted in this cycle
        # (``_make_room`` takes those back only then).
        history = (
            tuple(self.freed.since_waiting(w, option) for option in entry.options)
            if self.lowest_admitted.get(w.queue, w.priority) < w.priority
            else ()
        )
        key = (entry.alike, history)
        earlier = refused.get(key)
        if earlier is not None and earlier[0] == self.freed.frees:
            _, first, watch = earlier
            own = {
                id(mine): watch[id(theirs)]
                for mine, theirs in zip(entry.options, first.entry.options, strict=True)
                if id(theirs) in watch
            }
            return self.record(Verdict(entry, Outcome.PENDING, first.reason, first.message), own)
        frees = self.freed.frees
        verdict = self.admit_or_explain(entry)
        if verdict.outcome is Outcome.PENDING and self.freed.frees == frees:
            # (Not when its own preemption freed room for others: some may be left.)
            watched = self.freed.waited_at[w.name][1] if self.preempt else {}
            refused[key] = (frees, verdict, watched)
        return verdict

    # -- steps 3–4 for one workload
    def admit_or_explain(self, entry: Entry, hint: int | None = None) -> Verdict:
        w = entry.workload
        options = list(entry.options)
        if hint is not None and 0 <= hint < len(options):
            options.insert(0, options.pop(hint))
        else:
            options = self._preference_order(w, options)
        if not options:
            return self.record(
                Verdict(
                    entry,
                    Outcome.PENDING,
                    Reason.NEVER_FITS,
                    f"no GPU model in the cluster can serve {describe_demand(w)}",
                )
            )
        failures: list[tuple[Reason, Callable[[], str], str]] = []
        watch: Watch = {}
        for option in options:
            result = self.try_option(entry, option)
            if isinstance(result, Allocation):
                self.remember(entry, option, result)
                borrowing = self.book.borrowing(w.queue, option.flavor)
                reason = Reason.ADMITTED_BORROWING if borrowing else Reason.ADMITTED
                return self.record(
                    Verdict(
                        entry,
                        Outcome.ADMIT,
                        reason,
                        admit_message(self.book, self.state, entry, option, result, borrowing),
                        option,
                        result,
                    )
                )
            failures.append((*result, option.flavor))
            watch[id(option)] = self.freed.watch(w, option, result[0])
        if self.preempt:
            for option in options:
                verdict = self._make_room(entry, option)
                if verdict is not None:
                    return self.record(verdict)
        reason, message = most_telling(failures)
        return self.record(Verdict(entry, Outcome.PENDING, reason, message), watch)

    def _preference_order(self, w: Workload, options: list[Option]) -> list[Option]:
        """Options within the queue's nominal quota before those that would borrow; within
        that, the workload's own order (cheapest first, or fastest first with throughput),
        except that among options that cost the same and carry no speed preference the
        tightest fit goes first: equally good, so the least fragmenting (design §3.5)."""
        if len(options) < 2:
            return options  # nothing to order (most workloads on a one-model cluster)
        pods = w.pods
        run = 0
        runs: list[int] = []
        for i, o in enumerate(options):
            if i and (w.throughput or o.cost != options[i - 1].cost):
                run += 1
            runs.append(run)
        tied = len(set(runs)) < len(options)
        if not tied:
            # Every option its own run, in the workload's order: within-nominal ones first,
            # each part in that order (the sort below would say the same, at a key per option).
            within: list[Option] = []
            borrow: list[Option] = []
            for o in options:
                nominal = self.book.within_nominal(w.queue, o.flavor, o.quota_per_pod * pods)
                (within if nominal else borrow).append(o)
            return within + borrow

        def key(i: int) -> tuple[bool, int, tuple[int, int, int], int]:
            o = options[i]
            borrow = not self.book.within_nominal(w.queue, o.flavor, o.quota_per_pod * pods)
            snug = (0, 0, 0)
            if tied:
                pools = self.state.eligible_pools(w, o)
                nodes = self.state.node_filter(w)
                snug = self.state.tightness(o, w.cpu_milli, w.memory_mib, pools, nodes)
            return (borrow, runs[i], snug, i)

        return [options[i] for i in sorted(range(len(options)), key=key)]

    def record(self, verdict: Verdict, watch: Watch | None = None) -> Verdict:
        # What waits is remembered for the cycle's later passes; the incremental path has
        # none and must not accumulate it.
        name = verdict.entry.workload.name
        if verdict.outcome is Outcome.PENDING and self.preempt:
            self.waiting.setdefault(verdict.entry.workload.queue, []).append(verdict.entry)
            self.freed.waits(verdict.entry, watch or {})
            earlier = self.outcomes.get(name)
            if earlier is not None and earlier.note and not verdict.note:
                # Offered again and still waiting: what happened to it stays told.
                verdict.note = earlier.note
        self.outcomes[name] = verdict
        return verdict

    def try_option(self, entry: Entry, option: Option) -> Allocation | Failure:
        """Admit on ``option`` if quota and placement allow. A failure's message is built on
        demand (most are dropped); call it before the state changes."""
        w = entry.workload
        amount = option.quota_per_pod * w.pods
        check = self.book.check(w.queue, option.flavor, amount)
        if not check.ok:
            return (
                check.reason,
                lambda: (
                    check.message
                    + never_reclaims(self.queues[w.queue], self.book, w, option.flavor, amount)
                ),
            )
        pools = self.state.eligible_pools(w, option)
        nodes = self.state.node_filter(w)
        if not pools or (nodes is not None and not self.state.hosts_any(pools, nodes)):
            return (
                Reason.NO_MATCHING_NODES,
                lambda: (
                    f"no {'/'.join(option.models)} nodes match the node selector, node affinity "
                    "and tolerations"
                ),
            )
        allocation = self.state.place(option, w.pods, w.cpu_milli, w.memory_mib, pools, nodes)
        if allocation is None:
            allowed = "" if nodes is None else " its node selector and affinity allow"
            if self.state.never_fits(option, pools, nodes):
                if option.kind is Kind.MIG:
                    # Layouts are the administrator's to change: never, until they do.
                    return (
                        Reason.NEVER_FITS,
                        lambda: (
                            f"no {'/'.join(option.models)} GPU"
                            f"{' on a node' + allowed if allowed else ''} has a "
                            f"{option.profile} slice in its MIG layout"
                        ),
                    )
                return (
                    Reason.NEVER_FITS,
                    lambda: f"no node{allowed} can ever host one pod of {describe(option)}",
                )
            if self.state.never_hosts(pools, w.cpu_milli, w.memory_mib, nodes):
                return (
                    Reason.NEVER_FITS,
                    lambda: (
                        f"no {'/'.join(option.models)} node{allowed} has "
                        f"{w.cpu_milli / 1000:g} CPU and {w.memory_mib / 1024:g} GiB memory "
                        "for one pod"
                    ),
                )
            return (Reason.NO_CAPACITY, lambda: capacity_message(self.state, w, option, pools))
        self.book.charge(w.queue, option.flavor, amount)
        return allocation

    def remember(self, entry: Entry, option: Option, allocation: Allocation) -> Running | None:
        """Record an admission of this cycle (what a take-back may undo); returns it."""
        if not self.preempt:
            return None  # the incremental path never undoes what it admitted
        w = entry.workload
        if len(option.models) == 1:
            models = frozenset(option.models)  # it can only have got GPUs of that model
        else:
            models = frozenset(self.state.gpu_model[g] for pod in allocation.pods for g in pod.gpus)
        admitted = Running(
            w, allocation, option.flavor, option.quota_per_pod * w.pods, entry.size, models
        )
        self.admissions.add(admitted)
        self.lowest_admitted[w.queue] = min(
            self.lowest_admitted.get(w.queue, w.priority), w.priority
        )
        return admitted

    def _make_room(self, entry: Entry, option: Option) -> Verdict | None:
        """Admit by taking capacity back: first from cohort mates that borrowed it earlier in
        this cycle (nothing has started: free to undo), then by evicting running workloads
        the queue's preemption policy allows. None if neither makes it fit."""
        w = entry.workload
        amount = option.quota_per_pod * w.pods
        reclaim = self.book.within_nominal(w.queue, option.flavor, amount)
        policy = self.queues[w.queue].preemption
        may_evict = policy.within_queue != "Never" or (
            reclaim and policy.reclaim_within_cohort != "Never"
        )
        # Lower priorities of its own queue admitted earlier in this cycle (nothing has
        # started: free to undo) whenever w did not fit then but may now.
        take_back = self.lowest_admitted.get(
            w.queue, w.priority
        ) < w.priority and self.freed.since_waiting(w, option)
        if not reclaim and not may_evict and not take_back:
            return None
        pools = self.state.eligible_pools(w, option)
        if self.state.never_places(option, pools, w.cpu_milli, w.memory_mib):
            return None
        # A demand this one contains (same shape and places, no larger in any dimension)
        # already found no room at this priority in this pass: neither will this one.
        memo = (
            w.queue, option.flavor, w.priority, option.kind, pools,
            tuple(sorted(w.node_selector.items())), w.node_affinity,
        )  # fmt: skip
        size = (option.per_pod, w.pods, w.cpu_milli, w.memory_mib)
        failed = self.failed_preemption.get(memo)
        if failed is None:
            failed = self.failed_preemption[memo] = _Refused()
        elif failed.covers(size):
            return None
        undo: list[Running] = []
        if take_back:
            undo = [
                r
                for r in self.admissions.competing(w.queue, option.flavor, option.models)
                if r.workload.priority < w.priority
            ]
        if reclaim:
            for q in self.book.cohort_mates(w.queue):
                if self.book.borrowing(q, option.flavor):
                    undo += self.admissions.competing(q, option.flavor, option.models)
        outcomes = self.outcomes
        undo = [
            r
            for r in undo
            if not outcomes[r.workload.name].victims
            or self._may_inherit(w, option, reclaim, policy, r)
        ]
        evictable = self._evictable(w, option, reclaim, policy) if may_evict else []
        if not undo and not evictable:
            failed.add(size)
            return None
        room = find_victims(
            self.state,
            self.book,
            w.queue,
            undo,
            evictable,
            self.fit_check(entry, option, pools),
            (option.flavor, amount),
        )
        if room is None:
            failed.add(size)
            return None
        taken_back, victims = room
        inherited: list[Running] = []
        undone: list[Verdict] = []
        for r in taken_back:
            undone.append(self.outcomes[r.workload.name])
            inherited += self.unadmit(r, w)
        for victim in victims:  # find_victims evicted them from the state and the book
            self.running.remove(victim)
            self.evicted.add(id(victim))
        # Room made for w goes first to what outranks it in its own queue and waits.
        outranked_by = self._offer_to_higher_priority(w)
        result = self.try_option(entry, option)
        if not isinstance(result, Allocation):
            why, explain = result[0], result[1]()
            if not outranked_by:
                # Nobody used the room: the victims keep running, and what was taken back
                # is admitted again as it was.
                for victim in victims:
                    self.state.take(victim.allocation)
                    self.book.charge(victim.workload.queue, victim.flavor, victim.amount)
                    self.running.add(victim)
                    self.evicted.discard(id(victim))
                self.given_back += 1
                for r, verdict in zip(taken_back, undone, strict=True):
                    self.readmit(r, verdict)
                return Verdict(entry, Outcome.PENDING, why, explain)
            # The room went to workloads that outrank w: what was evicted, now or for an
            # admission taken back, is evicted for the first of them.
            self.note_freed(taken_back + victims)
            self._credit_victims(outranked_by[0], victims, inherited)
            return Verdict(
                entry,
                Outcome.PENDING,
                why,
                explain,
                note=f"the room it made went to higher priority {', '.join(outranked_by)} "
                "of its queue",
            )
        allocation = result
        self.note_freed(taken_back + victims, (w.queue, allocation, amount))
        self.remember(entry, option, allocation)
        # What was evicted for an admission taken back now makes room for w.
        self._reassign(inherited, w, option, amount)
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
                admit_message(self.book, self.state, entry, option, allocation, borrowing=False)
                + note,
                option,
                allocation,
            )
        outcome_reason = Reason.ADMITTED_BY_PRIORITY
        for victim in fresh:
            why, text = eviction_reason(self.book, victim, w, option, amount)
            if why is Reason.PREEMPTED_RECLAIM:
                outcome_reason = Reason.ADMITTED_BY_RECLAIM
            self._record_eviction(victim, w.name, why, text)
        names = ", ".join(v.workload.name for v in victims)
        freed = sum(v.gpu_eq for v in victims)
        return Verdict(
            entry,
            Outcome.PREEMPT,
            outcome_reason,
            f"admitted on {placed(self.state, option, allocation)} after evicting {len(victims)} "
            f"workload(s) ({freed:g} GPU-eq): {names}{note}",
            option,
            allocation,
            victims,
        )

    def _evictable(
        self, w: Workload, option: Option, reclaim: bool, policy: PreemptionPolicy
    ) -> list[Running]:
        """Running workloads w may evict for ``option`` now, in the order they go. The
        policy's choice is kept per kind of preemptor (a cycle asks thousands of times and
        evicts rarely): evictions since only remove from it, keeping the order; evicted
        workloads given back make it be chosen again. Whether a cohort mate still borrows
        is judged on every call."""
        own = (w.created, w.name) if policy.within_queue == "LowerOrNewerEqualPriority" else None
        key = (w.queue, option.flavor, option.models, reclaim, w.priority, own)
        cached = self.candidates.get(key)
        evicted = self.evicted
        if cached is None or cached[0] != self.given_back:
            queues = (w.queue, *self.book.cohort_mates(w.queue)) if reclaim else (w.queue,)
            nearby = [
                victim
                for q in queues
                for victim in self.running.competing(q, option.flavor, option.models)
            ]
            found = candidates_for(w, option.flavor, option.models, reclaim, policy, nearby)
            cached = self.candidates[key] = (self.given_back, len(evicted), preference_order(found))
        elif cached[1] != len(evicted):
            kept = [v for v in cached[2] if id(v) not in evicted]
            cached = self.candidates[key] = (self.given_back, len(evicted), kept)
        book = self.book
        evictable = [
            v
            for v in cached[2]
            if v.workload.queue == w.queue or book.borrowing(v.workload.queue, v.flavor)
        ]
        return idle_borrowed_first(evictable, book) if policy.idle_borrowed_first else evictable

    def _may_inherit(
        self, w: Workload, option: Option, reclaim: bool, policy: PreemptionPolicy, r: Running
    ) -> bool:
        """May w take back admission r, which evicted? What r evicted stays evicted, now for
        w, so w's own policy must allow each of those evictions, judged as if they still ran:
        a queue that may not reclaim must not end up with a cohort mate's workload evicted
        for it."""
        victims = self.outcomes[r.workload.name].victims
        # An admission of w's own queue reclaimed with the queue's right: w, which outranks
        # it there, takes its room as it would take room the reclaim freed
        # (``_offer_to_higher_priority``).
        own = r.workload.queue == w.queue
        allowed = candidates_for(w, option.flavor, option.models, reclaim or own, policy, victims)
        book = self.book
        return len(allowed) == len(victims) and all(
            v.workload.queue == w.queue
            or book.usage(v.workload.queue, v.flavor) + v.amount
            > book.nominal(v.workload.queue, v.flavor)
            for v in victims
        )

    def _offer_to_higher_priority(self, w: Workload) -> list[str]:
        """Admit waiting workloads of w's queue with a higher priority that fit now.

        Not one whose borrowing a cohort mate's guarantee took back in this cycle, to borrow
        again: its room would be reclaimed anew, and the mate's higher priorities would take
        that room in turn — two queues handing the same GPUs back and forth until the passes
        run out, leaving a workload within its nominal quota waiting."""
        admitted = []
        for entry in self.waiting.get(w.queue, ()):
            h = entry.workload
            verdict = self.outcomes.get(h.name)
            if (
                h.priority <= w.priority
                or verdict is None
                or verdict.outcome is not Outcome.PENDING
            ):
                continue
            for option in entry.options:
                if h.name in self.reclaimed and not self.book.within_nominal(
                    h.queue, option.flavor, option.quota_per_pod * h.pods
                ):
                    continue
                result = self.try_option(entry, option)
                if isinstance(result, Allocation):
                    self.remember(entry, option, result)
                    borrowing = self.book.borrowing(h.queue, option.flavor)
                    self.record(
                        Verdict(
                            entry,
                            Outcome.ADMIT,
                            Reason.ADMITTED_BORROWING if borrowing else Reason.ADMITTED,
                            admit_message(self.book, self.state, entry, option, result, borrowing),
                            option,
                            result,
                        )
                    )
                    admitted.append(h.name)
                    break
        return admitted

    def note_freed(
        self, released: list[Running], reuse: tuple[str, Allocation, int] | None = None
    ) -> None:
        """``FreedRoom.note``; room left over is offered to what waits (``run_cycle``)."""
        if self.freed.note(released, reuse):
            self.capacity_changed = True

    def _credit_victims(self, name: str, victims: list[Running], inherited: list[Running]) -> None:
        """Record ``victims`` (evicted now) and ``inherited`` (evicted earlier for an admission
        since taken back) as evicted for ``name``, admitted in this cycle with the room."""
        verdict = self.outcomes[name]
        assert verdict.option is not None and verdict.allocation is not None
        h = verdict.entry.workload
        amount = verdict.option.quota_per_pod * h.pods
        self._reassign(inherited, h, verdict.option, amount)
        for victim in victims:
            why, text = eviction_reason(self.book, victim, h, verdict.option, amount)
            self._record_eviction(victim, name, why, text)
        everyone = victims + inherited
        if everyone:
            names = ", ".join(v.workload.name for v in everyone)
            self.outcomes[name] = Verdict(
                verdict.entry,
                Outcome.PREEMPT,
                Reason.ADMITTED_BY_PRIORITY,
                f"{verdict.message}; room made by evicting {len(everyone)} workload(s) "
                f"({sum(v.gpu_eq for v in everyone):g} GPU-eq): {names}",
                verdict.option,
                verdict.allocation,
                everyone,
            )

    def _reassign(self, inherited: list[Running], w: Workload, option: Option, amount: int) -> None:
        """Evictions made for an admission since taken back are now for ``w``."""
        for victim in inherited:
            why, text = eviction_reason(self.book, victim, w, option, amount)
            self.evictions[self.eviction_at[id(victim)]] = (victim, w.name, why, text)

    def _record_eviction(self, victim: Running, name: str, why: Reason, text: str) -> None:
        self.eviction_at[id(victim)] = len(self.evictions)
        self.evictions.append((victim, name, why, text))

    def readmit(self, r: Running, verdict: Verdict) -> None:
        """Give back an admission of this cycle that ``unadmit`` took, as it was."""
        self.state.take(r.allocation)
        self.book.charge(r.workload.queue, r.flavor, r.amount)
        self.admissions.add(r)
        self.outcomes[r.workload.name] = verdict

    def unadmit(self, r: Running, beneficiary: Workload) -> list[Running]:
        """Undo an admission of this cycle that ``find_victims`` took back from the state
        and the book; the workload waits again (and is retried). Returns what was evicted
        to admit it: those stay evicted, for the beneficiary."""
        self.admissions.remove(r)
        previous = self.outcomes[r.workload.name]
        self.freed.forget(previous.entry)
        self.capacity_changed = True
        if r.workload.queue == beneficiary.queue:
            reason = Reason.NO_CAPACITY
            message = (
                f"its place went to {beneficiary.name} (priority {beneficiary.priority} > "
                f"{r.workload.priority}) of queue {beneficiary.queue}"
            )
        else:
            self.reclaimed.add(r.workload.name)
            reason = Reason.COHORT_EXHAUSTED
            message = (
                f"borrowed {r.flavor} taken back by {beneficiary.name}: queue "
                f"{beneficiary.queue} is within its nominal quota"
            )
        self.outcomes[r.workload.name] = Verdict(
            previous.entry, Outcome.PENDING, reason, "", note=message
        )
        return list(previous.victims)

    def fit_check(self, entry: Entry, option: Option, pools: tuple[int, ...]) -> Callable[[], bool]:
        """A check that the workload would pass quota and placement now (leaves no trace)."""
        w = entry.workload
        amount = option.quota_per_pod * w.pods
        nodes = self.state.node_filter(w)

        def fits() -> bool:
            if not self.book.check(w.queue, option.flavor, amount).ok:
                return False
            trial = self.state.place(option, w.pods, w.cpu_milli, w.memory_mib, pools, nodes)
            if trial is None:
                return False
            self.state.release(trial)
            return True

        return fits

    def older_alike_first(self) -> None:
        """Of alike workloads (``Entry.alike``), admit the older ones.

        A take-back or the room a placement needs can leave an older workload waiting while
        a newer one alike holds its place: on one node's GPUs a 7-GPU gang needs, the
        improvement phase takes back the seven there, and the eighth, newest, stays on
        another node. Nothing admitted in this cycle has started and alike workloads fit
        each other's places exactly, so they trade: the older takes the newer's admission
        (design §3.3: priority, then age) and nothing else changes: not capacity, quota,
        nor the objective. An admission that evicted goes with its victims, now evicted for
        the older: alike, it has the same rights to evict, and more by age."""
        waiting: dict[Alike, list[Verdict]] = {}
        for verdict in self.outcomes.values():
            if verdict.outcome is Outcome.PENDING and verdict.entry.options:
                waiting.setdefault(verdict.entry.alike, []).append(verdict)
        if not waiting:
            return
        admitted: dict[Alike, list[Verdict]] = {}
        for verdict in self.outcomes.values():
            if verdict.outcome is not Outcome.PENDING:
                key = verdict.entry.alike
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
                self.outcomes[o] = Verdict(
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
                    at = self.eviction_at[id(victim)]
                    _, _, why, text = self.evictions[at]
                    self.evictions[at] = (victim, o, why, for_another(why, text, n, o))
                self.outcomes[n] = Verdict(
                    new.entry,
                    Outcome.PENDING,
                    old.reason,
                    old.message,
                    note=f"its place went to {o}, alike and older in its queue",
                )

    # -- messages
    def settle_reasons(self) -> None:
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
        for name, verdict in self.outcomes.items():
            entry = verdict.entry
            if verdict.outcome is not Outcome.PENDING or not entry.options:
                continue
            shape = entry.alike
            if shape not in told:
                told[shape] = self._refusal_now(entry)
            now = told[shape]
            if now is not None and (now[1] != verdict.message or now[0] is not verdict.reason):
                self.outcomes[name] = Verdict(
                    entry, Outcome.PENDING, now[0], now[1], note=verdict.note
                )

    def _refusal_now(self, entry: Entry) -> tuple[Reason, str] | None:
        """Why ``entry`` is refused on the current state, trying its options as the cycle
        did (within-nominal ones first; for ties the cycle broke by placement, which this
        must not pay for again). None if it fits, which the offers of freed room rule out
        unless they stopped at ``MAX_OFFERS``: then its reason stays as written."""
        w = entry.workload
        book = self.book
        options = entry.options
        if len(options) > 1:
            options = tuple(
                sorted(
                    options,
                    key=lambda o: (
                        not book.within_nominal(w.queue, o.flavor, o.quota_per_pod * w.pods)
                    ),
                )
            )
        failures: list[tuple[Reason, Callable[[], str], str]] = []
        for option in options:
            result = self.try_option(entry, option)
            if isinstance(result, Allocation):
                self.state.release(result)
                book.charge(w.queue, option.flavor, -option.quota_per_pod * w.pods)
                return None
            failures.append((*result, option.flavor))
        return most_telling(failures)


Size = tuple[int, int, int, int]
"""A demand's size for the preemption memo: (per pod, pods, CPU milli, memory MiB)."""


class _Refused:
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


MAX_OFFERS = 100
"""Passes of ``offer_freed_room`` at most (benchmarks/ (c) needs 6)."""


def run_cycle(
    compiled: Compiled,
    hints: dict[str, int] | None = None,
    improve: Callable[[Cycle], object] | None = None,
) -> CycleResult:
    """Run steps 3–4. ``hints``: workload → option index chosen by the ILP; ``improve``: a
    phase run on the finished cycle before it is scored (``scheduler.improve``)."""
    cycle = Cycle(compiled)
    if hints is None:
        cycle.run(compiled.pending, None)
    else:
        first, rest = _hinted_first(compiled.pending, hints)
        cycle.run(first, hints)
        cycle.run(rest, None)
    offer_freed_room(cycle)
    if improve is not None:
        improve(cycle)
    cycle.older_alike_first()
    cycle.settle_reasons()
    result = CycleResult(cycle.outcomes, cycle.evictions)
    result.objective = objective_of(compiled, result)
    return result


def offer_freed_room(cycle: Cycle) -> None:
    """Offer room freed by preemptions or take-backs to what still waits, pass after pass
    while a pass admits something: one admission's preemptions or take-backs free room for
    another (on benchmarks/ (c) the last of 6 passes still admits 367; stopping after 3, as
    this once did, left 196 workloads waiting that fitted). ``MAX_OFFERS`` only guards
    against a cycle of take-backs, which the cycle's rules should already rule out."""
    for _ in range(MAX_OFFERS):
        # In any order: a pass orders what it is given.
        if not cycle.capacity_changed:
            break
        outcomes = cycle.outcomes
        waiting = [
            e for e in cycle.freed.woken() if outcomes[e.workload.name].outcome is Outcome.PENDING
        ]
        if not waiting:
            break
        cycle.capacity_changed = False
        cycle.failed_preemption.clear()
        before = len(waiting)
        cycle.run(waiting, None)
        if (
            sum(cycle.outcomes[e.workload.name].outcome is Outcome.PENDING for e in waiting)
            == before
        ):
            break


def _hinted_first(
    pending: Sequence[Entry], hints: dict[str, int]
) -> tuple[list[Entry], list[Entry]]:
    """Split for realizing an ILP answer: the workloads it chose go first, and nominated ones
    (which the model does not know), together with any workload of the same queue that
    outranks one of them, so no priority is overtaken."""
    lowest: dict[str, int] = {}
    for entry in pending:
        if entry.workload.name in hints or entry.workload.nominated:
            queue, priority = entry.workload.queue, entry.workload.priority
            lowest[queue] = min(lowest.get(queue, priority), priority)
    first: list[Entry] = []
    rest: list[Entry] = []
    for entry in pending:
        w = entry.workload
        outranks = w.queue in lowest and w.priority > lowest[w.queue]
        (first if w.name in hints or w.nominated or outranks else rest).append(entry)
    return first, rest


def objective_of(compiled: Compiled, result: CycleResult) -> float:
    admitted = [
        Admitted(
            o.entry.workload.queue,
            o.option.flavor,
            o.entry.size,
            o.entry.tier,
        )
        for o in result.outcomes.values()
        if o.option is not None and o.outcome is not Outcome.PENDING
    ]
    evicted = sum(victim.gpu_eq for victim, *_ in result.evictions)
    return evaluate(
        admitted,
        compiled.headroom,
        compiled.widths,
        evicted,
        compiled.state.entirely_free_gpus(),
    )
