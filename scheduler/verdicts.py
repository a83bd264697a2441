"""What the cycle decides for each workload, and the words it says why in.

Apart from the cycle (``scheduler.greedy``) because more than the cycle writes them: making
room (``scheduler.making_room``), the improvement phase (``scheduler.improve``) and the
settling at the end (``scheduler.settle``) fill and word verdicts alike. Most refusals are
dropped unread, so a refusal carries its message as a function (``Failure``), to call before
the state changes. Each message gives the numbers behind its reason (quota used of nominal,
room left, largest block) so a person can act on it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from scheduler.compiled import Entry
from scheduler.demand import Kind, Option
from scheduler.model import Queue, Workload
from scheduler.preemption import Running
from scheduler.quota import QuotaBook, format_amount
from scheduler.reasons import Outcome, Reason
from scheduler.state import Allocation, ClusterState

__all__ = [
    "Failure",
    "Verdict",
    "admit_message",
    "capacity_message",
    "describe",
    "describe_demand",
    "eviction_reason",
    "for_another",
    "most_telling",
    "never_reclaims",
    "placed",
]

Failure = tuple[Reason, Callable[[], str]]
"""Why an option was refused, and its message on demand."""


@dataclass(slots=True)
class Verdict:
    """What the cycle decided for one pending workload."""

    entry: Entry
    outcome: Outcome
    reason: Reason
    message: str
    option: Option | None = None
    allocation: Allocation | None = None
    victims: list[Running] = field(default_factory=list)
    note: str = ""
    """What happened to it earlier in this decision (taken back, the room it made given to
    others): kept when ``message``, the why in numbers, is written again at the end."""

    @property
    def text(self) -> str:
        return (
            f"{self.message}; {self.note}"
            if self.message and self.note
            else self.message or self.note
        )


def admit_message(
    book: QuotaBook,
    state: ClusterState,
    entry: Entry,
    option: Option,
    allocation: Allocation,
    borrowing: bool,
) -> str:
    w = entry.workload
    used = book.usage(w.queue, option.flavor)
    nominal = book.nominal(w.queue, option.flavor)
    quota = (
        f"queue {w.queue} {format_amount(option.flavor, used)}/"
        f"{format_amount(option.flavor, nominal)} {option.flavor}"
    )
    tail = (
        f", borrowing {format_amount(option.flavor, used - nominal)} from its cohort"
        if borrowing
        else ""
    )
    return f"admitted on {w.pods}× {placed(state, option, allocation)}; {quota}{tail}"


def placed(state: ClusterState, option: Option, allocation: Allocation) -> str:
    """``option`` as admitted: a MIG profile several models have, on the one it got."""
    if option.kind is not Kind.MIG or len(option.models) < 2:
        return describe(option)
    models = sorted({state.gpu_model[g] for pod in allocation.pods for g in pod.gpus})
    return f"MIG {option.profile} on {'/'.join(models)}"


def capacity_message(state: ClusterState, w: Workload, option: Option, pools: Sequence[int]) -> str:
    # Devices counted on the nodes the workload may use: with a node filter (its node
    # affinity), those of its pools it allows.
    nodes = state.node_filter(w)
    if nodes is None:
        room = state.capacity_bound(option, pools)
    else:
        room = state.hosted_room(option, 0, 0, pools, nodes)
    block = state.max_block(option, pools, nodes)
    unit = {
        Kind.WHOLE: "free GPUs on one node",
        Kind.FRACTION: "free milli-GPU on one GPU",
        Kind.MIG: "free slice",
    }[option.kind]
    where = "" if nodes is None else " on the nodes its node selector and affinity allow"
    message = (
        f"needs {w.pods}× {describe(option)}; room for {room} such pod(s) now{where} "
        f"(largest block: {block} {unit})"
    )
    if room >= w.pods:
        # The devices are there: what is missing is CPU or memory on their nodes.
        hosted = state.hosted_room(option, w.cpu_milli, w.memory_mib, pools, nodes)
        message = (
            f"needs {w.pods}× {describe(option)} with {w.cpu_milli / 1000:g} CPU and "
            f"{w.memory_mib / 1024:g} GiB memory per pod; the free GPUs{where} would take "
            f"{room} such pod(s), but the CPU and memory left on their nodes host only "
            f"{hosted}"
        )
    return message


def never_reclaims(queue: Queue, book: QuotaBook, w: Workload, flavor: str, amount: int) -> str:
    """For a workload refused within its nominal quota (its cohort mates borrow it): that
    its queue's policy never takes that back, or only from lower priorities, when so; else
    nothing."""
    policy = queue.preemption.reclaim_within_cohort
    if queue.cohort is None or policy == "Any" or not book.within_nominal(w.queue, flavor, amount):
        return ""
    if policy == "LowerPriority":
        return (
            f"; queue {w.queue} reclaims what it lends only from priorities below {w.priority} "
            "(reclaimWithinCohort: LowerPriority)"
        )
    return f"; queue {w.queue} never reclaims what it lends (reclaimWithinCohort: Never)"


def eviction_reason(
    book: QuotaBook, victim: Running, w: Workload, option: Option, amount: int
) -> tuple[Reason, str]:
    """Why ``victim`` is evicted for ``w`` (``amount``: what w was charged, if admitted).
    w's name sits where ``for_another`` finds it to name another."""
    if victim.workload.queue == w.queue:
        rank = (
            f"priority {w.priority} > {victim.workload.priority}"
            if w.priority > victim.workload.priority
            else f"the same priority {w.priority}, created earlier"  # LowerOrNewerEqual
        )
        return Reason.PREEMPTED_PRIORITY, f"preempted by {w.name} ({rank}) in queue {w.queue}"
    nominal = book.nominal(w.queue, option.flavor)
    used = book.usage(w.queue, option.flavor) - amount
    return Reason.PREEMPTED_RECLAIM, (
        f"queue {victim.workload.queue} borrows {victim.flavor}; queue {w.queue} "
        f"reclaims its nominal quota ({format_amount(option.flavor, used)}/"
        f"{format_amount(option.flavor, nominal)} used) for {w.name}"
    )


def for_another(why: Reason, text: str, was: str, now: str) -> str:
    """An eviction's text (``eviction_reason``) naming ``now`` as the beneficiary in place
    of ``was``, alike (same queue and priority): the numbers stay as they were when the
    victim was chosen."""
    if why is Reason.PREEMPTED_RECLAIM:
        return text.removesuffix(f" for {was}") + f" for {now}"
    return text.replace(f"preempted by {was} (", f"preempted by {now} (", 1)


def describe(option: Option) -> str:
    if option.kind is Kind.WHOLE:
        return f"{option.per_pod} {option.flavor} GPU{'s' if option.per_pod > 1 else ''}"
    if option.kind is Kind.FRACTION:
        return f"{option.per_pod}m of a {option.flavor} GPU"
    return f"MIG {option.profile} on {'/'.join(option.models)}"


def describe_demand(w: Workload) -> str:
    d = w.demand
    if d.gpus is not None:
        what = f"{d.gpus} GPU(s)"
    elif d.mig_profile is not None:
        what = f"MIG {d.mig_profile}"
    elif d.gpu_memory_mib is not None:
        what = f"{d.gpu_memory_mib} MiB of GPU memory"
    else:
        what = f"{d.gpu_milli}m of a GPU"
    models = f" of {', '.join(d.models)}" if d.models else ""
    return what + models


_TELLING = {
    Reason.NO_CAPACITY: 0,
    Reason.COHORT_EXHAUSTED: 1,
    Reason.QUOTA_EXHAUSTED: 2,
    Reason.BORROWING_LIMIT: 3,
    Reason.NO_MATCHING_NODES: 4,
    Reason.NO_QUOTA: 5,
    Reason.NEVER_FITS: 6,
}


def most_telling(failures: Sequence[tuple[Reason, Callable[[], str], str]]) -> tuple[Reason, str]:
    """The failure closest to success (capacity, then quota, then impossibilities), and
    which other options were tried — each (reason, message, flavor)."""
    ranked = failures
    if len(failures) > 1:
        ranked = sorted(failures, key=lambda f: _TELLING.get(f[0], 9))
    reason, explain, _ = ranked[0]
    message = explain()
    others = [f"{flavor} ({why})" for why, _, flavor in ranked[1:]]
    if others:
        message += "; also tried " + ", ".join(others)
    return reason, message
