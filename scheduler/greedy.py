"""One scheduling cycle, greedy: the fallback answer, the ILP's warm start and its realizer.

The recipe (Kueue's cycle, with fair sharing):
  1. compile the snapshot (``scheduler.compiled``): state, quota book, running charged;
  2. queue pending workloads per queue by priority, then age;
  3. repeatedly take the head of the queue that is first in fair-share order — heads that
     fit within their queue's nominal quota first, then the lowest weighted share after
     admission — and admit it on its first option that passes quota and placement;
  4. a head that does not fit may preempt (reclaim within the cohort, or lower priority
     in its own queue) when its queue's policy allows (``scheduler.making_room``);
     otherwise it waits with reasons (``scheduler.verdicts``);
  5. rank what is left and explain each (``scheduler.decision``).
Skipping a head that does not fit (rather than blocking its queue) is what makes the
cycle work-conserving; taking queue heads in priority order is what keeps a lower
priority from overtaking a higher one that fits.

With ``hints`` (from the ILP) the workloads the ILP chose go first, on their hinted options,
together with anything of their queue ahead of them in queue order (a higher priority, or
an older one of theirs: the ILP may not reorder a queue); then the rest, in the same
fair-share order.
"""

from __future__ import annotations

import heapq
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from operator import attrgetter

from scheduler.compiled import Alike, Compiled, Entry
from scheduler.demand import Kind, Option
from scheduler.freed import FreedRoom, Watch
from scheduler.holdings import Holdings
from scheduler.making_room import Refused, make_room
from scheduler.model import Workload
from scheduler.objective import Admitted, evaluate
from scheduler.preemption import Running
from scheduler.reasons import Outcome, Reason
from scheduler.settle import older_alike_first, settle_reasons
from scheduler.state import Allocation
from scheduler.verdicts import (
    Failure,
    Verdict,
    admit_message,
    capacity_message,
    describe,
    describe_demand,
    most_telling,
    never_reclaims,
)

__all__ = ["Cycle", "CycleResult", "offer_freed_room", "run_cycle"]

_in_queue_order = attrgetter("queue_order")
"""A pass's order without hints (``Entry.queue_order``): read in C, no call per entry."""

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

    Its steps (``try_option``, ``remember``, ``record``, ``fit_check``, ``note_freed``) are
    public because making room (``scheduler.making_room``) and the improvement phase
    (``scheduler.improve``) build on them and on its state, so a preemption or a move is
    checked and recorded exactly as the cycle's own admissions are.
    """

    def __init__(self, compiled: Compiled, preempt: bool = True) -> None:
        self.preempt = preempt
        self.state = compiled.state
        self.book = compiled.book
        self.queues = {q.name: q for q in compiled.snapshot.queues}
        self.outcomes: dict[str, Verdict] = {}
        self.evictions: list[tuple[Running, str, Reason, str]] = []
        self.eviction_at: dict[int, int] = {}
        """Each victim's position in ``evictions``, by its id (``making_room._reassign``
        rewrites it)."""
        self.running = Holdings()
        for victim in compiled.running:
            self.running.add(victim)
        self.evicted: set[int] = set()
        """Running workloads this cycle evicted, by id (``compiled.running`` keeps them)."""
        self.given_back = 0
        """How often evicted workloads were given back (room made that nobody used)."""
        self.candidates: dict[tuple[object, ...], tuple[int, int, list[Running]]] = {}
        """Per kind of preemptor: the running workloads its policy may evict, in order, with
        ``given_back`` and the size of ``evicted`` when it was made
        (``making_room._evictable``)."""
        self.failed_preemption: dict[tuple[object, ...], Refused] = {}
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
        (``making_room._offer_to_higher_priority`` does not hand them room to borrow
        again)."""
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
        """One pass over ``entries``, each queue's in its order (priority, then age), heads
        in fair-share order. With ILP hints, a hinted workload takes its hinted option."""
        per_queue: dict[str, deque[Entry]] = {}
        for entry in sorted(entries, key=_in_queue_order):
            line = per_queue.get(entry.workload.queue)
            if line is None:  # not setdefault: it would build a deque for every entry
                line = per_queue[entry.workload.queue] = deque()
            line.append(entry)
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
        reason's numbers are written again at the end (``scheduler.settle``)."""
        w = entry.workload
        # What of its own an attempt reads: whether the room it watches was freed since it
        # was left waiting, where a lower priority of its queue was admitted in this cycle
        # (``make_room`` takes those back only then).
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
                verdict = make_room(self, entry, option)
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

        borrows = [
            not self.book.within_nominal(w.queue, o.flavor, o.quota_per_pod * pods) for o in options
        ]
        groups = Counter(zip(borrows, runs, strict=True))

        def key(i: int) -> tuple[bool, int, tuple[int, int, int], int]:
            # Tightness breaks ties within a group (same quota side, same run) only: its
            # placement search is paid where it can change the order, for a third of the
            # options on benchmarks/ (c).
            snug = (0, 0, 0)
            if groups[(borrows[i], runs[i])] > 1:
                o = options[i]
                pools = self.state.eligible_pools(w, o)
                nodes = self.state.node_filter(w)
                snug = self.state.tightness(o, w.cpu_milli, w.memory_mib, pools, nodes)
            return (borrows[i], runs[i], snug, i)

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

    def note_freed(
        self, released: list[Running], reuse: tuple[str, Allocation, int] | None = None
    ) -> None:
        """``FreedRoom.note``; room left over is offered to what waits (``run_cycle``)."""
        if self.freed.note(released, reuse):
            self.capacity_changed = True

    def fit_check(self, entry: Entry, option: Option, pools: tuple[int, ...]) -> Callable[[], bool]:
        """A check that the workload would pass quota and placement now (leaves no trace)."""
        w = entry.workload
        amount = option.quota_per_pod * w.pods
        nodes = self.state.node_filter(w)

        def fits() -> bool:
            ok = self.book.check(w.queue, option.flavor, amount).ok
            return ok and self.state.can_place(option, w, pools, nodes)

        return fits


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
        cycle.run(compiled.in_queue_order, None)  # sorting it again is a pass over it
    else:
        first, rest = _hinted_first(compiled.pending, hints)
        cycle.run(first, hints)
        cycle.run(rest, None)
    offer_freed_room(cycle)
    if improve is not None:
        improve(cycle)
    older_alike_first(cycle)
    settle_reasons(cycle)
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
    (which the model does not know), together with every workload of the same queue ahead
    of one of them in queue order, so that no higher priority, nor an older workload of the
    same priority, is overtaken (the model pays per GPU: it chose a newer 2-GPU workload
    over an older 1-GPU one that fitted)."""
    last: dict[str, tuple[str, int, int, str]] = {}
    for entry in pending:
        if entry.workload.name in hints or entry.workload.nominated:
            queue, order = entry.workload.queue, entry.queue_order
            if queue not in last or order > last[queue]:
                last[queue] = order
    first: list[Entry] = []
    rest: list[Entry] = []
    for entry in pending:
        w = entry.workload
        ahead = w.queue in last and entry.queue_order < last[w.queue]
        (first if w.name in hints or w.nominated or ahead else rest).append(entry)
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
