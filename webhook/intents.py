"""Admissions made before their pods are observed ("intents"): the webhook's answer at
creation, and the controller's reservation of its own.

The webhook answers "admit" or "wait" a few milliseconds before the API server stores the
pod; the controller reserves its admissions before it patches their pods. Each is kept by
workload name until the watch shows its pods admitted (or present, for a "wait"), until
one of them is deleted, or until its time to live passes without them. ``LiveCluster``
keeps that dict under its lock: every function here expects its caller to hold the lock.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from scheduler.incremental import IncrementalAllocator
from scheduler.model import PodPlacement, Queue, Workload, WorkloadDecision
from scheduler.reasons import QUOTA_REASONS, Outcome, Reason
from scheduler.state import PlacementError
from webhook.observed import replacements_of
from webhook.podindex import PodIndex
from webhook.pods import ManagedPod
from webhook.snapshots import sharing

__all__ = [
    "PLACE_TAKEN",
    "QUOTA_TAKEN",
    "Intent",
    "Refusal",
    "already_admitted",
    "answer",
    "end_with",
    "expire",
    "hold",
    "placed_by",
    "retire_if_observed",
]

PLACE_TAKEN = "PlaceTaken"
"""An admission the controller reserves no longer stands as decided: its devices, or its
nodes' CPU or memory, are not free (given to another since the decision, or still held by
a victim of the decision's evictions), or its pods or queue are gone, or it is admitted."""

QUOTA_TAKEN = "QuotaTaken"
"""An admission the controller reserves would take its queue past its quota (nominal and
borrowing limit) or its cohort past what its members lend: admissions since the decision
used what it counted on, or a victim of the decision's evictions still holds it."""


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why ``LiveCluster.reserve`` held nothing: a reason (``PLACE_TAKEN``, ``QUOTA_TAKEN``)
    and a message with the numbers, as the waiting pods say it."""

    reason: str
    message: str

    @property
    def waiting_message(self) -> str:
        """What its waiting pods say, and the queue view until the next decision."""
        return f"not admitted as decided: {self.message}; it is decided again in the next cycle"


@dataclass(slots=True)
class Intent:
    workload: Workload
    expires: float
    seen: bool = False
    """Its pods were observed when it was made (the controller's admissions): a list
    without them means they are gone, not late."""


def answer(
    workload: Workload, allocator: IncrementalAllocator, index: PodIndex
) -> WorkloadDecision:
    """The webhook's answer at creation: the live allocator's decision (charged to it if
    it admits), unless the controller's next cycle is to decide ``workload``."""
    if allocator.holds(workload.name):
        # The name of a pod observed holding GPUs: one recreated under its name (a
        # StatefulSet's) before the old one is seen gone, or a create (dry run) of a
        # pod that exists. Not an allocator failure: it waits for the old one.
        return _left_to_the_controller(
            workload,
            f"a pod named {workload.name} still holds its GPUs (being deleted, or this "
            "one already exists); the controller decides this one once it is gone",
        )
    ahead = index.highest_waiting(workload.queue)
    if ahead is not None and ahead > workload.priority:
        # Not past a higher priority of its own queue: the controller's next cycle
        # orders them (and may preempt for the one ahead).
        return _left_to_the_controller(
            workload,
            f"queue {workload.queue} has waiting work of priority {ahead} > "
            f"{workload.priority}; the controller decides the order",
        )
    return allocator.decide(workload)


def _left_to_the_controller(workload: Workload, message: str) -> WorkloadDecision:
    """Not decided at creation: the pod waits, gated, for the controller's next cycle."""
    return WorkloadDecision(
        workload=workload.name,
        queue=workload.queue,
        outcome=Outcome.PENDING,
        reason=Reason.NOT_SELECTED,
        message=message,
    )


def already_admitted(admitted: Workload) -> WorkloadDecision:
    """The answer to a retried create (the API server timed out on us and called again)
    of a pod of ``admitted``: the same answer, not a second admission."""
    return WorkloadDecision(
        workload=admitted.name,
        queue=admitted.queue,
        outcome=Outcome.ADMIT,
        reason=Reason.ADMITTED,
        message="already admitted by an earlier call for this pod",
        flavor=admitted.flavor,
        placement=admitted.placement,
    )


def expire(intents: dict[str, Intent], now: float) -> list[Intent]:
    """Drop the intents whose time to live passed by ``now`` without their pods (the create
    failed later in admission, e.g. another webhook denied it): those dropped."""
    expired = [name for name, i in intents.items() if i.expires <= now]
    return [intents.pop(name) for name in expired]


def retire_if_observed(intents: dict[str, Intent], index: PodIndex, workload: str) -> None:
    """An intent ends when its pods are observed: all admitted, or (waiting) present;
    or when the pods it was made for are no longer there, or (a gang's replacements)
    no longer apart from the gang's running members."""
    intent = intents.get(workload)
    if intent is None:
        return
    group = index.group(workload)
    if intent.workload.placement is None:
        if group is not None:
            del intents[workload]
    elif (intent.seen and group is None) or (
        group is not None and len(group.pods) >= intent.workload.pods and group.admitted
    ):
        del intents[workload]


def placed_by(intents: dict[str, Intent], pod: ManagedPod) -> str | None:
    """The intent, its workload's or its gang's replacements', that placed ``pod`` where
    it shows up (its recorded placement one of the intent's, bound there or not yet), if
    one did."""
    for name in (pod.workload, replacements_of(pod.workload)):
        intent = intents.get(name)
        if intent is not None and _same_place(intent, pod):
            return name
    return None


def _same_place(intent: Intent, pod: ManagedPod) -> bool:
    placement = intent.workload.placement or ()
    return (
        pod.placement is not None
        and pod.placement in placement
        and (pod.node in (None, pod.placement.node))
    )


def end_with(intents: dict[str, Intent], index: PodIndex, workload: str) -> bool:
    """A pod of ``workload`` is gone (``index`` without it): whether an intent ended with
    it, and with it what the live allocator holds for that intent."""
    # An admission not yet seen whole ends here: its pod is gone, not late.
    ended = intents.pop(workload, None) is not None
    # A gang's replacements admitted but not yet seen end with their pods, or with
    # the gang's last running member: what the allocator holds for them too.
    replacements = replacements_of(workload)
    standing = replacements in intents
    retire_if_observed(intents, index, replacements)
    return ended or (standing and replacements not in intents)


def hold(
    workload: Workload,
    *,
    intents: dict[str, Intent],
    queues: dict[str, Queue],
    index: PodIndex,
    allocator: Callable[[], IncrementalAllocator],
) -> Refusal | None:
    """Charge the controller's admission ``workload`` to the live allocator (built by
    ``allocator`` once its pods are known to wait) where it was placed, if it still fits
    there (``IncrementalAllocator.hold_decided``): None once done, else why not, with
    nothing charged."""
    if workload.queue not in queues:
        return Refusal(PLACE_TAKEN, f"queue {workload.queue} no longer exists")
    group = index.group(workload.name)
    if group is None:
        return Refusal(PLACE_TAKEN, "its pods no longer wait")
    intent = intents.get(workload.name)
    live = allocator()
    if (
        group.admitted
        or live.holds(workload.name)
        or (intent is not None and intent.workload.placement is not None)
    ):
        return Refusal(PLACE_TAKEN, "it is admitted already")
    try:
        overtaken = live.hold_decided(workload)
    except PlacementError as error:
        holders = sharing(workload.placement or (), _holdings(intents, index, workload.name))
        if holders:
            return Refusal(
                PLACE_TAKEN,
                f"its place was taken since the decision, by {', '.join(holders)}",
            )
        return Refusal(PLACE_TAKEN, f"its place is no longer free ({error})")
    if overtaken is None:
        return None
    if overtaken.reason in QUOTA_REASONS:
        return Refusal(QUOTA_TAKEN, f"its quota is no longer free: {overtaken.message}")
    return Refusal(PLACE_TAKEN, f"its place is no longer free: {overtaken.message}")


def _holdings(
    intents: dict[str, Intent], index: PodIndex, besides: str
) -> list[tuple[str, tuple[PodPlacement, ...]]]:
    """Where Apportion placed what holds devices, by workload (but ``besides``):
    admissions not yet seen whole, and admitted pods' recorded placements."""
    held = [
        (name, i.workload.placement)
        for name, i in intents.items()
        if i.workload.placement is not None and name != besides
    ]
    held += [
        (name, tuple(p.placement for p in group.pods if p.placement is not None))
        for name, group in index.all_groups().items()
        if group.admitted and name != besides
    ]
    return held
